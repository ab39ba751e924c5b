import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import {
  serverAndBrowser, openApp, register, openChat, send, seeMessage, screenshots,
  signInNewDevice,
} from "./harness.mjs";

const world = serverAndBrowser({ before, after });

test("a second browser is linked, approved from the first, and reads new messages", async () => {
  const first = await openApp(world.browser, world.server.url);
  const bob = await openApp(world.browser, world.server.url);
  await register(first.page, "alice");
  await register(bob.page, "bob");
  await openChat(bob.page, "alice");
  await send(bob.page, "before the new device");
  await first.page.getByRole("button", { name: /^bob/ }).click();
  await seeMessage(first.page, "before the new device");

  const second = await openApp(world.browser, world.server.url);
  const code = await signInNewDevice(second.page, "alice");
  assert.match(code, /^[A-Z0-9-]{10,}$/);
  await second.page.screenshot({ path: path.join(screenshots, "link-code.png") });
  // A wrong code approves nothing.
  await first.page.getByRole("button", { name: "Devices" }).click();
  const dialog = first.page.getByRole("dialog", { name: "Your devices" });
  await dialog.getByLabel("Approve a new device: the code it shows").fill("AAAAA-BBBBB-CCCCC-DDDDD");
  await dialog.getByRole("button", { name: "Approve" }).click();
  await first.page.getByText(/no device waiting for approval/).waitFor({ timeout: 10_000 });
  await dialog.getByLabel("Approve a new device: the code it shows").fill(code);
  await dialog.getByRole("button", { name: "Approve" }).click();
  await first.page.getByText(/The new device is approved/).waitFor({ timeout: 30_000 });
  await dialog.locator(".devices li").nth(1).waitFor({ timeout: 10_000 });
  await first.page.screenshot({ path: path.join(screenshots, "devices.png") });
  assert.equal(await dialog.locator(".devices li").count(), 2);
  await dialog.getByRole("button", { name: "Close" }).click();

  // The second browser becomes a full device of alice and joins her conversations.
  await second.page.getByLabel("Signed in as").filter({ hasText: "alice" }).waitFor({ timeout: 60_000 });
  await second.page.getByRole("button", { name: /^bob/ }).waitFor({ timeout: 60_000 });
  // The conversation shows with the history from the first browser (marked "history") as
  // soon as that arrives; the first browser adds this one to it a moment later.
  await second.page.locator(".conversation .tag").waitFor({ state: "detached", timeout: 60_000 });
  await send(bob.page, "after the new device");
  await second.page.getByRole("button", { name: /^bob/ }).click();
  await seeMessage(second.page, "after the new device", 60_000);
  // The history the first browser sent is there too, before it.
  await seeMessage(second.page, "before the new device");
  assert.deepEqual(await second.page.locator(".message .text").allInnerTexts(),
    ["before the new device", "after the new device"]);
  await seeMessage(first.page, "after the new device");
  // What the second device sends reaches bob, and alice's first device.
  await send(second.page, "from alice's second browser");
  await seeMessage(bob.page, "from alice's second browser");
  await seeMessage(first.page, "from alice's second browser");
});

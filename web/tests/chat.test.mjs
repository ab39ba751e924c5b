import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import {
  serverAndBrowser, openApp, register, openChat, send, seeMessage, screenshots,
} from "./harness.mjs";

const world = serverAndBrowser({ before, after });

test("two browser users register and chat both ways", async () => {
  const alice = await openApp(world.browser, world.server.url);
  const bob = await openApp(world.browser, world.server.url);
  await alice.page.screenshot({ path: path.join(screenshots, "welcome.png") });
  await register(alice.page, "alice");
  await register(bob.page, "bob");

  await openChat(alice.page, "bob");
  await send(alice.page, "hello bob");
  await seeMessage(alice.page, "hello bob");
  await alice.page.locator('.message[data-state="sent"]').first().waitFor({ timeout: 30_000 });

  // bob sees the conversation with one unread message, opens it and answers.
  const row = bob.page.getByRole("button", { name: /^alice, 1 unread$/ });
  await row.waitFor({ timeout: 30_000 });
  await bob.page.screenshot({ path: path.join(screenshots, "unread.png") });
  await row.click();
  await seeMessage(bob.page, "hello bob");
  // alice is a stranger to bob: a message request, until bob accepts.
  const request = bob.page.getByRole("region", { name: "Message request" });
  await request.waitFor({ timeout: 10_000 });
  await bob.page.screenshot({ path: path.join(screenshots, "request.png") });
  await request.getByRole("button", { name: "Accept" }).click();
  await request.waitFor({ state: "detached", timeout: 10_000 });
  await send(bob.page, "hi alice\nsecond line");
  await seeMessage(alice.page, "second line");
  const text = await alice.page.locator(".message .text", { hasText: "second line" }).innerText();
  assert.equal(text, "hi alice\nsecond line", "Shift+Enter-free text keeps its new line");
  // bob has the chat open: alice's next message comes back read, and bob's typing shows.
  await send(alice.page, "are you there?");
  await seeMessage(bob.page, "are you there?");
  await alice.page.locator('.message[data-state="read"]', { hasText: "are you there?" }).waitFor({ timeout: 30_000 });
  await bob.page.getByLabel("Message", { exact: true }).fill("typing a long answer");
  await alice.page.getByText("bob is typing…").waitFor({ timeout: 30_000 });
  await alice.page.screenshot({ path: path.join(screenshots, "chat-desktop.png") });
  await alice.page.setViewportSize({ width: 360, height: 720 });
  await alice.page.screenshot({ path: path.join(screenshots, "chat-360.png") });

  // bob steps back to his list: his device still stores alice's next message and says so
  // (delivered), and it turns read when he opens the chat.
  await bob.page.setViewportSize({ width: 360, height: 720 });
  await bob.page.getByRole("button", { name: "Back to conversations" }).click();
  await send(alice.page, "for later");
  const later = alice.page.locator(".message", { hasText: "for later" });
  await later.and(alice.page.locator('[data-state="delivered"]')).waitFor({ timeout: 30_000 });
  await bob.page.getByRole("button", { name: /^alice/ }).click();
  await later.and(alice.page.locator('[data-state="read"]')).waitFor({ timeout: 30_000 });

  // Each message shows once on each side.
  assert.equal(await alice.page.locator(".message").count(), 4);
  assert.equal(await bob.page.locator(".message").count(), 4);
});

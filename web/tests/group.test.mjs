import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  serverAndBrowser, openApp, register, openChat, send, seeMessage, screenshots, cli,
} from "./harness.mjs";

const world = serverAndBrowser({ before, after });

test("a group of two browsers and one CLI user: messages interoperate, safety numbers match", async () => {
  const carol = mkdtempSync(path.join(tmpdir(), "nightjar-cli-carol-"));
  await cli(carol, ["register", "--server", world.server.url, "carol"]);
  const alice = await openApp(world.browser, world.server.url);
  const bob = await openApp(world.browser, world.server.url);
  await register(alice.page, "alice");
  await register(bob.page, "bob");
  await cli(carol, ["accept", "alice"]);

  // alice makes the group in the browser.
  await alice.page.getByText("New group").click();
  await alice.page.getByLabel("Group name").fill("trio");
  await alice.page.getByLabel("Members (usernames, comma-separated)").fill("bob, carol");
  await alice.page.getByRole("button", { name: "Create group" }).click();
  await alice.page.getByRole("heading", { name: "trio" }).waitFor({ timeout: 30_000 });
  await send(alice.page, "hello trio from the web");
  await alice.page.locator('.message[data-state="sent"]').first().waitFor({ timeout: 30_000 });

  // carol, in the terminal, reads it and answers.
  const synced = await cli(carol, ["sync", "--json"]);
  const rows = synced.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  assert.ok(rows.some((r) => r.text === "hello trio from the web" && r.from === "alice" && r.group === "trio"),
    `carol's sync: ${synced}`);
  await cli(carol, ["send", "--group", "trio", "hello from the terminal"]);

  await seeMessage(alice.page, "hello from the terminal");
  await bob.page.getByRole("button", { name: /trio/ }).click();
  await seeMessage(bob.page, "hello trio from the web");
  await seeMessage(bob.page, "hello from the terminal");
  await bob.page.getByRole("region", { name: "Message request" }).waitFor({ state: "detached", timeout: 1_000 }).catch(() => {});
  await send(bob.page, "and from bob's browser");
  await seeMessage(alice.page, "and from bob's browser");
  const later = await cli(carol, ["sync", "--json"]);
  assert.ok(later.includes("and from bob's browser"), later);

  // The members panel shows all three.
  await alice.page.getByRole("button", { name: "Members" }).click();
  const members = alice.page.getByRole("region", { name: "Group members" });
  for (const name of ["alice", "bob", "carol"]) {
    await members.getByText(name, { exact: false }).first().waitFor();
  }
  await alice.page.screenshot({ path: path.join(screenshots, "group.png") });

  // bob leaves: the group disappears from his list, and alice's members panel loses him.
  await bob.page.getByRole("button", { name: "Members" }).click();
  await bob.page.getByRole("button", { name: "Leave group" }).click();
  await bob.page.getByRole("button", { name: /trio/ }).waitFor({ state: "detached", timeout: 30_000 });
  await send(alice.page, "bob has gone");
  await members.getByText("bob").waitFor({ state: "detached", timeout: 30_000 });
  const carolSees = await cli(carol, ["sync", "--json"]);
  assert.ok(carolSees.includes("bob has gone"), carolSees);

  // Safety numbers: alice's browser and carol's terminal show the same 60 digits.
  await openChat(alice.page, "carol");
  await alice.page.getByRole("button", { name: "Safety number" }).click();
  const webDigits = (await alice.page.getByLabel("Safety number", { exact: true }).innerText()).replace(/\s+/g, "");
  await alice.page.screenshot({ path: path.join(screenshots, "safety-number.png") });
  const printed = await cli(carol, ["safety-number", "alice"]);
  const cliDigits = printed.split("\n")[1].replace(/\s+/g, "");
  assert.match(webDigits, /^\d{60}$/);
  assert.equal(webDigits, cliDigits);
  await alice.page.getByRole("button", { name: "Mark as verified" }).click();
  await alice.page.getByText("✓ Verified").waitFor({ timeout: 10_000 });
});

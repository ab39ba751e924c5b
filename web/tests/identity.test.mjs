import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  startServer, launchBrowser, openApp, register, openChat, send, seeMessage, screenshots, cli,
} from "./harness.mjs";

// A malicious operator: it rewrites bob's account in the real server's database with the
// identity key and device list bob has on a second server. Its directory then publishes the
// substituted key, so every client sees a proven key change (and bob's own devices, and
// auditors, see it in the directory): the swap is visible, never silent.
let real;
let other;
let browser;

/** Puts the impostor's key and list in for bob, and makes the directory publish them. */
function substituteBob() {
  const script = "import sqlite3,sys;" +
    "o=sqlite3.connect(sys.argv[1]).execute(\"select identity_key, device_list from accounts where username='bob'\").fetchone();" +
    "db=sqlite3.connect(sys.argv[2],timeout=30);" +
    "db.execute(\"update accounts set identity_key=?, device_list=?, kt_published_version=0 where username='bob'\",o);" +
    "db.commit()";
  execFileSync("python3", ["-c", script, path.join(other.data, "nightjar.db"), path.join(real.data, "nightjar.db")]);
}

before(async () => {
  real = await startServer();
  other = await startServer();
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await real?.stop();
  await other?.stop();
});

test("a swapped identity key is refused and shown as a warning", async () => {
  const impostor = mkdtempSync(path.join(tmpdir(), "nightjar-cli-impostor-"));
  await cli(impostor, ["register", "--server", other.url, "bob"]);
  const alice = await openApp(browser, real.url);
  const bob = await openApp(browser, real.url);
  await register(alice.page, "alice");
  await register(bob.page, "bob");
  await openChat(alice.page, "bob");
  await send(alice.page, "hello bob");
  await bob.page.getByRole("button", { name: /^alice/ }).click();
  await seeMessage(bob.page, "hello bob");

  // The operator swaps bob's key; alice starts a group with him.
  substituteBob();
  await alice.page.getByText("New group").click();
  await alice.page.getByLabel("Group name").fill("plans");
  await alice.page.getByLabel("Members (usernames, comma-separated)").fill("bob");
  await alice.page.getByRole("button", { name: "Create group" }).click();
  await alice.page.getByText(/The safety number with bob changed/).first().waitFor({ timeout: 30_000 });
  assert.equal(await alice.page.getByRole("button", { name: /plans/ }).count(), 0, "no group with the swapped key");

  // The 1:1 chat with bob carries the warning, and the numbers to compare.
  await alice.page.getByRole("button", { name: /^bob/ }).click();
  const warning = alice.page.getByRole("alert").filter({ hasText: "The safety number with bob changed." });
  await warning.waitFor({ timeout: 10_000 });
  await alice.page.screenshot({ path: path.join(screenshots, "identity-changed.png") });
  // Nothing goes to bob until alice has compared the numbers.
  await send(alice.page, "is this really you?");
  await alice.page.getByText("the identity key of bob changed").first().waitFor({ timeout: 10_000 });
  assert.equal(await alice.page.locator(".message", { hasText: "is this really you?" }).count(), 0);
  await warning.getByRole("button", { name: "Compare safety numbers" }).click();
  await alice.page.getByText(/Their new identity key would give/).waitFor({ timeout: 10_000 });
});

test("the browser walks the directory's epochs and finds each append-only", async () => {
  const profiles = mkdtempSync(path.join(tmpdir(), "nightjar-cli-epochs-"));
  await cli(path.join(profiles, "frank"), ["register", "--server", real.url, "frank"]);
  const erin = await openApp(browser, real.url);
  await register(erin.page, "erin");
  // erin verifies a root when she looks frank up, and a newer one for gina, who registers
  // after it: the epochs in between are for her device to check.
  await openChat(erin.page, "frank");
  await send(erin.page, "hello frank");
  await erin.page.locator('.message[data-state="sent"]').first().waitFor({ timeout: 30_000 });
  await cli(path.join(profiles, "gina"), ["register", "--server", real.url, "gina"]);
  await openChat(erin.page, "gina");
  await send(erin.page, "hello gina");
  await erin.page.locator('.message[data-state="sent"]', { hasText: "hello gina" }).waitFor({ timeout: 30_000 });

  // A reload syncs: the wasm client fetches the epochs after its first root and checks their
  // append-only proofs; an honest directory raises no alarm.
  const walked = erin.page.waitForResponse(
    (r) => r.url().includes("/v1/kt/epochs?") && r.status() === 200, { timeout: 30_000 });
  await erin.page.reload();
  const page = await (await walked).json();
  assert.ok(page.epochs.length >= 1, JSON.stringify(page));
  await erin.page.getByRole("button", { name: /^gina/ }).waitFor({ timeout: 30_000 });
  await erin.page.waitForTimeout(1_000);
  assert.equal(await erin.page.getByText(/Key transparency alarm/).count(), 0);
});

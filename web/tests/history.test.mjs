// History on a new device, between the command line and the browser: a CLI device approves a
// new browser device, which shows the earlier messages; a browser device approves a new CLI
// device, whose `nightjar history` lists them; with the browser's setting off, none go.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  sleep, serverAndBrowser, openApp, register, openChat, send, seeMessage, cli, nightjarBin,
  signInNewDevice, screenshots,
} from "./harness.mjs";

const world = serverAndBrowser({ before, after });

/** Where the screenshot of the browser that got its history goes. */
const SCREENSHOT = process.env.NIGHTJAR_HISTORY_SCREENSHOT ?? "/var/tmp/web-history.png";


/** A fresh CLI profile registered as `username`. */
async function cliAccount(username) {
  const profile = mkdtempSync(path.join(tmpdir(), `nightjar-cli-${username}-`));
  await cli(profile, ["register", "--server", world.server.url, username]);
  return profile;
}

/** `nightjar login` of a new CLI device of `username`, left waiting for approval: resolves
 * `code` with the code it prints, and `done` with its output once it exits (approved, and
 * its history fetched). */
function waitingCliDevice(username) {
  const profile = mkdtempSync(path.join(tmpdir(), `nightjar-cli-${username}-new-`));
  const child = spawn(
    nightjarBin,
    ["--profile", profile, "login", "--server", world.server.url, username, "--timeout", "90"],
    {
      env: { ...process.env, NIGHTJAR_PASSWORD: "correct horse battery", NIGHTJAR_KEYRING: "off" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  let err = "";
  child.stderr.on("data", (chunk) => { err += chunk; });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  const code = new Promise((resolve, reject) => {
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/approval code: (\S+)/);
      if (m) resolve(m[1]);
    });
    exited.then((status) => reject(new Error(`login exited ${status} before a code: ${out}${err}`)));
  });
  const done = exited.then((status) => {
    if (status !== 0) throw new Error(`login exited ${status}: ${out}${err}`);
    return { out, err };
  });
  return { profile, code, done };
}

/** The rows `nightjar history --json` prints. */
async function history(profile) {
  const printed = await cli(profile, ["history", "--json"]);
  return printed.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** Approves the device showing `code` from the browser's Devices panel. */
async function approveInBrowser(page, code) {
  await page.getByRole("button", { name: "Devices" }).click();
  const dialog = page.getByRole("dialog", { name: "Your devices" });
  await dialog.getByLabel("Approve a new device: the code it shows").fill(code);
  await dialog.getByRole("button", { name: "Approve" }).click();
  return dialog;
}

/** A browser account with a 1:1 chat with a CLI account: one message each way. */
async function browserWithChat(name, peer) {
  const peerProfile = await cliAccount(peer);
  const web = await openApp(world.browser, world.server.url);
  await register(web.page, name);
  await cli(peerProfile, ["accept", name]);
  await openChat(web.page, peer);
  await send(web.page, `hello ${peer}, from ${name}'s browser`);
  await web.page.locator('.message[data-state="sent"]').first().waitFor({ timeout: 30_000 });
  await cli(peerProfile, ["sync"]);
  await cli(peerProfile, ["send", name, `hello ${name}, from ${peer}'s terminal`]);
  await seeMessage(web.page, `hello ${name}, from ${peer}'s terminal`);
  return { web, peerProfile };
}

/** Two CLI accounts who wrote to each other, three messages: `me` and `peer` (profiles),
 * and `earlier`, the texts in order. */
async function cliPairWithHistory(name, peerName) {
  const me = await cliAccount(name);
  const peer = await cliAccount(peerName);
  await cli(me, ["accept", peerName]);
  await cli(peer, ["accept", name]);
  const earlier = [`earlier: from ${name}'s terminal`, `earlier: ${peerName} answers`, `earlier: ${name} again`];
  await cli(me, ["send", peerName, earlier[0]]);
  await cli(peer, ["sync"]);
  await cli(peer, ["send", name, earlier[1]]);
  await cli(me, ["sync"]);
  await cli(me, ["send", peerName, earlier[2]]);
  await cli(peer, ["sync"]);
  return { me, peer, earlier };
}

/** A promise and the function that resolves it. */
function gate() {
  let open;
  const opened = new Promise((resolve) => { open = resolve; });
  return { opened, open };
}

test("a CLI device approves a new browser device: its history shows before the browser joins", async () => {
  const { me: alice, peer: bob, earlier: EARLIER } = await cliPairWithHistory("alice", "bob");
  const web = await openApp(world.browser, world.server.url);
  // The browser's key packages wait until the terminal's `approve` gave up waiting for them,
  // so the history comes before any device of alice adds the browser to the conversation.
  const keyPackages = gate();
  await web.page.route("**/v1/key-packages", async (route) => {
    if (route.request().method() === "POST") await keyPackages.opened;
    await route.continue();
  });
  // The archive's blob waits a moment on its way, so that its progress shows.
  await web.page.route("**/v1/blobs/*", async (route) => {
    await sleep(1_500);
    await route.continue();
  });
  const code = await signInNewDevice(web.page, "alice");
  const approved = await cli(alice, ["approve", code]);
  assert.match(approved, /it gets the last 90 days of history/, approved);
  assert.match(approved, /joins your conversations once it is online/, approved);
  keyPackages.open();

  await web.page.locator(".history-transfer", { hasText: /Fetching history… \d+ %/ })
    .waitFor({ timeout: 60_000 });
  await web.page.getByText("Your history from your other device is here: 3 messages in 1 conversation.")
    .waitFor({ timeout: 60_000 });
  await web.page.locator(".history-transfer").waitFor({ state: "detached", timeout: 10_000 });
  await web.page.unroute("**/v1/blobs/*");

  // The conversation with bob is listed (marked as history), not unread, and shows the
  // earlier messages in order, each on its side; it cannot be written to yet.
  const bobs = web.page.getByRole("button", { name: /^bob/ });
  await bobs.waitFor({ timeout: 30_000 });
  assert.equal(await bobs.getAttribute("aria-label"), "bob");
  await bobs.locator(".tag", { hasText: "history" }).waitFor();
  await bobs.click();
  await seeMessage(web.page, EARLIER[2]);
  assert.deepEqual(await web.page.locator(".message .text").allInnerTexts(), EARLIER);
  assert.deepEqual(await web.page.locator(".message.mine .text").allInnerTexts(), [EARLIER[0], EARLIER[2]]);
  await web.page.getByRole("note").filter({ hasText: "once one of your devices adds this browser" }).waitFor();
  assert.equal(await web.page.getByLabel("Message", { exact: true }).isVisible(), false);
  // Starting a chat with bob opens that conversation, not a second one.
  await web.page.getByLabel("Start a chat with username").fill("bob");
  await web.page.getByRole("button", { name: "Start chat" }).click();
  await web.page.getByRole("heading", { name: "bob" }).waitFor();
  await web.page.locator(".notices li").first().waitFor({ state: "detached", timeout: 15_000 });
  assert.equal(await web.page.getByRole("button", { name: /^bob/ }).count(), 1);
  await web.page.screenshot({ path: SCREENSHOT });

  // alice's terminal syncs and adds the browser: the same conversation becomes writable.
  await cli(alice, ["sync"]);
  await web.page.getByLabel("Message", { exact: true }).waitFor({ timeout: 60_000 });
  await web.page.locator(".conversation .tag").waitFor({ state: "detached", timeout: 10_000 });
  await cli(bob, ["send", "alice", "after the approval, from bob"]);
  await seeMessage(web.page, "after the approval, from bob", 60_000);
  await send(web.page, "from alice's new browser");
  await web.page.locator('.message.mine[data-state="sent"]', { hasText: "from alice's new browser" })
    .waitFor({ timeout: 30_000 });
  const bobSees = await cli(bob, ["sync", "--json"]);
  assert.ok(bobSees.includes("from alice's new browser"), bobSees);
  assert.equal(await web.page.getByRole("button", { name: /^bob/ }).count(), 1);
  assert.deepEqual(await web.page.locator(".message .text").allInnerTexts(),
    [...EARLIER, "after the approval, from bob", "from alice's new browser"]);
  await web.page.screenshot({ path: path.join(screenshots, "history-joined.png") });

  // A reload keeps it all, and fetches nothing again.
  await web.page.reload();
  await web.page.getByRole("button", { name: /^bob/ }).click({ timeout: 90_000 });
  await seeMessage(web.page, "from alice's new browser");
  assert.deepEqual(await web.page.locator(".message .text").allInnerTexts(),
    [...EARLIER, "after the approval, from bob", "from alice's new browser"]);
  await web.context.close();
});

test("a browser added to the conversation before its history came shows it in order, once", async () => {
  const { me: gina, peer: hank, earlier } = await cliPairWithHistory("gina", "hank");
  const web = await openApp(world.browser, world.server.url);
  // The archive waits until the terminal added the browser and hank wrote again.
  const blob = gate();
  await web.page.route("**/v1/blobs/*", async (route) => {
    await blob.opened;
    await route.continue();
  });
  const code = await signInNewDevice(web.page, "gina");
  const approved = await cli(gina, ["approve", code]);
  assert.match(approved, /the new device is in all your conversations/, approved);
  await cli(hank, ["send", "gina", "after the approval, from hank"]);
  await web.page.getByRole("button", { name: /^hank/ }).click({ timeout: 60_000 });
  await seeMessage(web.page, "after the approval, from hank", 60_000);
  blob.open();
  await web.page.getByText("Your history from your other device is here: 3 messages in 1 conversation.")
    .waitFor({ timeout: 60_000 });
  await seeMessage(web.page, earlier[0]);
  // Stored after hank's new message, shown before it; one conversation, nothing unread.
  assert.deepEqual(await web.page.locator(".message .text").allInnerTexts(),
    [...earlier, "after the approval, from hank"]);
  assert.equal(await web.page.getByRole("button", { name: /^hank/ }).count(), 1);
  assert.equal(await web.page.getByRole("button", { name: /^hank/ }).getAttribute("aria-label"), "hank");
  await web.context.close();
});

test("history that cannot come yet comes at the next start; history gone is given up", async () => {
  const { me: ivan, earlier } = await cliPairWithHistory("ivan", "judy");

  // The server fails (503) on every try of this start: the pointer stays for the next one.
  const web = await openApp(world.browser, world.server.url);
  await web.page.route("**/v1/blobs/*", (route) => route.fulfill({ status: 503, body: "" }));
  await cli(ivan, ["approve", await signInNewDevice(web.page, "ivan")]);
  await web.page.getByText(/The history from your other device could not be fetched yet/)
    .waitFor({ timeout: 60_000 });
  await web.page.unroute("**/v1/blobs/*");
  await web.page.reload();
  await web.page.getByText("Your history from your other device is here: 3 messages in 1 conversation.")
    .waitFor({ timeout: 90_000 });
  await web.page.getByRole("button", { name: /^judy/ }).click();
  await seeMessage(web.page, earlier[1]);

  // Another new browser of ivan's: its blob is gone (404). Given up with a notice, and not
  // tried again at the next start.
  const other = await openApp(world.browser, world.server.url);
  let asked = 0;
  await other.page.route("**/v1/blobs/*", (route) => {
    asked += 1;
    return route.fulfill({ status: 404, body: "" });
  });
  await cli(ivan, ["approve", await signInNewDevice(other.page, "ivan")]);
  await other.page.getByText(/^The history from your other device could not be fetched: the server no longer has it/)
    .waitFor({ timeout: 60_000 });
  assert.equal(asked, 1);
  await other.page.reload();
  await other.page.getByRole("button", { name: /^judy/ }).waitFor({ timeout: 90_000 });
  await sleep(3_000);
  assert.equal(asked, 1, "a history given up is not fetched again");
  await web.context.close();
  await other.context.close();
});

test("a browser device approves a new CLI device, whose history lists the earlier messages", async () => {
  const { web } = await browserWithChat("carol", "dave");
  const carol2 = waitingCliDevice("carol");
  const code = await carol2.code;
  // The upload's part waits a moment, so that its progress shows.
  await web.page.route("**/v1/blobs/*/parts/*", async (route) => {
    await sleep(1_000);
    await route.continue();
  });
  const dialog = await approveInBrowser(web.page, code);
  await dialog.locator(".history-transfer", { hasText: /(Encrypting|Sending) history… \d+ %/ })
    .waitFor({ timeout: 30_000 });
  await web.page.screenshot({ path: path.join(screenshots, "history-sending.png") });
  await web.page.getByText(/The new device is approved/).waitFor({ timeout: 60_000 });
  await web.page.unroute("**/v1/blobs/*/parts/*");
  await carol2.done;

  const rows = await history(carol2.profile);
  const sent = rows.find((r) => r.text === "hello dave, from carol's browser");
  const received = rows.find((r) => r.text === "hello carol, from dave's terminal");
  assert.ok(sent && received, JSON.stringify(rows));
  assert.equal(sent.from, "carol");
  assert.equal(received.from, "dave");
  await dialog.getByRole("button", { name: "Close" }).click();
  await web.context.close();
});

test("with the browser's history setting off, a new CLI device gets none", async () => {
  const { web } = await browserWithChat("erin", "frank");
  await web.page.getByRole("button", { name: "Devices" }).click();
  const dialog = web.page.getByRole("dialog", { name: "Your devices" });
  const setting = dialog.getByLabel("History for a new device");
  // The setting is read from the vault after the panel opens; until then the list is empty.
  await web.page.waitForFunction(
    () => document.querySelector("#history-days")?.value === "90", null, { timeout: 10_000 },
  );
  await setting.selectOption({ label: "Off" });
  // The setting is kept: the panel shows it again.
  await dialog.getByRole("button", { name: "Close" }).click();
  await web.page.getByRole("button", { name: "Devices" }).click();
  await web.page.waitForFunction(
    () => document.querySelector("#history-days")?.value === "0", null, { timeout: 10_000 },
  );

  const erin2 = waitingCliDevice("erin");
  const code = await erin2.code;
  await approveInBrowser(web.page, code);
  await web.page.getByText(/The new device is approved/).waitFor({ timeout: 60_000 });
  const { out, err } = await erin2.done;
  assert.ok(!/history from the approving device/.test(out + err), out + err);
  assert.deepEqual(await history(erin2.profile), []);
  await web.context.close();
});

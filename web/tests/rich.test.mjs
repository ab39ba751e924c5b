// Replies, reactions, edits, deletes for everyone, the disappearing timer and the read-receipt
// setting in the browser: between two browser users, and between the command line and the
// browser both ways (the command line's side read from `nightjar sync --json` rows). Nobody
// is offered Edit or Delete on someone else's message. Reporting a message to the operator,
// and a report the reporter tampered with refused.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  cliAndBrowser, pair, until, sleep, serverAndBrowser, send, seeMessage, screenshots, cli,
} from "./harness.mjs";

/** The moderators' token of this file's server (`--moderator-token-file`). */
const MODERATOR_TOKEN = "moderators-of-the-browser-tests";
const tokenFile = path.join(mkdtempSync(path.join(tmpdir(), "nightjar-moderators-")), "token");
writeFileSync(tokenFile, `${MODERATOR_TOKEN}\n`, { mode: 0o600 });

const world = serverAndBrowser({ before, after }, { serverArgs: ["--moderator-token-file", tokenFile] });

/** Where the screenshot of a conversation with a reply, a reaction and an edit goes. */
const SHOT = process.env.NIGHTJAR_RICH_SHOT ?? "/var/tmp/web-rich.png";

/** The message whose own text (not a quote of it) is `text`. */
function message(page, text) {
  const exactly = new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
  return page.locator(".message").filter({ has: page.locator("p.text", { hasText: exactly }) });
}

/** Hovers the message with `text` and presses its action `name` (Reply, React, Edit, Delete). */
async function act(page, text, name) {
  const m = message(page, text);
  await m.hover();
  await m.getByRole("group", { name: "Message actions" })
    .getByRole("button", { name, exact: true }).click();
}

/** The names of the actions the message with `text` offers. */
async function actionsOf(page, text) {
  const m = message(page, text);
  await m.hover();
  const bar = m.getByRole("group", { name: "Message actions" });
  if (await bar.count() === 0) return [];
  return bar.getByRole("button").evaluateAll((bs) => bs.map((b) => b.getAttribute("aria-label")));
}

/** Reacts to the message with `text` with `emoji`, through its picker. */
async function react(page, text, emoji) {
  await act(page, text, "React");
  await message(page, text).getByRole("group", { name: "Pick a reaction" })
    .getByRole("button", { name: `React with ${emoji}` }).click();
}

/** The reaction buttons of the message with `text`, as `emoji count` strings. */
async function reactionsOf(page, text) {
  const group = message(page, text).getByRole("group", { name: "Reactions" });
  if (await group.count() === 0) return [];
  return (await group.getByRole("button").allInnerTexts()).map((t) => t.replace(/\s+/g, " ").trim());
}

/** Turns this browser's read receipts on or off in Settings. */
async function setReadReceipts(page, on) {
  await page.getByText("Settings", { exact: true }).click();
  const box = page.getByLabel(/Send read receipts/);
  if (on) await box.check(); else await box.uncheck();
  await page.getByText("Settings", { exact: true }).click();
}

test("two browser users reply, react and withdraw, edit, delete and set a timer", async () => {
  const [alice, bob] = await pair(world, "alice", "bob");
  await send(alice.page, "lunch at noon?");
  await seeMessage(bob.page, "lunch at noon?");

  // Only one's own messages can be edited or deleted; anyone's can be answered.
  assert.deepEqual(await actionsOf(bob.page, "lunch at noon?"), ["Reply", "React", "Report"]);
  assert.deepEqual(await actionsOf(alice.page, "lunch at noon?"), ["Reply", "React", "Edit", "Delete"]);
  assert.deepEqual(await actionsOf(bob.page, "hi alice"), ["Reply", "React", "Edit", "Delete"]);

  // A reply: the composer says what it answers until it is sent or cancelled.
  await act(bob.page, "lunch at noon?", "Reply");
  const replying = bob.page.locator(".replying");
  await replying.waitFor({ timeout: 5_000 });
  assert.match(await replying.innerText(), /Replying to alice\s+lunch at noon\?/);
  await bob.page.getByRole("button", { name: "Cancel reply" }).click();
  await replying.waitFor({ state: "detached", timeout: 5_000 });
  await act(bob.page, "lunch at noon?", "Reply");
  await replying.waitFor({ timeout: 5_000 });
  // The focus went to the composer: typing and Enter send the reply.
  await bob.page.keyboard.type("yes, see you there");
  await bob.page.keyboard.press("Enter");
  await replying.waitFor({ state: "detached", timeout: 5_000 });
  for (const page of [bob.page, alice.page]) {
    const reply = message(page, "yes, see you there");
    await reply.waitFor({ timeout: 30_000 });
    const quote = reply.getByLabel("In reply to alice");
    await quote.waitFor({ timeout: 10_000 });
    assert.match(await quote.innerText(), /lunch at noon\?/);
  }

  // A reaction reaches the other side; pressing one's own reaction withdraws it.
  await react(alice.page, "yes, see you there", "👍");
  await until(async () => (await reactionsOf(bob.page, "yes, see you there")).join() === "👍 1",
    "bob to see alice's 👍");
  await message(alice.page, "yes, see you there")
    .getByRole("button", { name: "👍 1, including you: withdraw your reaction" }).click();
  await until(async () => (await reactionsOf(bob.page, "yes, see you there")).length === 0,
    "alice's 👍 to be withdrawn on bob's side");
  assert.deepEqual(await reactionsOf(alice.page, "yes, see you there"), []);
  await react(alice.page, "yes, see you there", "❤️");
  // The picker withdraws too.
  await act(alice.page, "yes, see you there", "React");
  await message(alice.page, "yes, see you there").getByRole("button", { name: "Withdraw ❤️" }).waitFor();
  await alice.page.keyboard.press("Escape");
  await message(alice.page, "yes, see you there").getByRole("group", { name: "Pick a reaction" })
    .waitFor({ state: "detached", timeout: 5_000 });

  // With the keyboard alone: bob focuses alice's message, tabs to React, picks 😂.
  await message(bob.page, "lunch at noon?").focus();
  await bob.page.keyboard.press("Tab");
  await bob.page.keyboard.press("Tab");
  assert.equal(await bob.page.evaluate(() => document.activeElement.getAttribute("aria-label")), "React");
  await bob.page.keyboard.press("Enter");
  // The picker opens with its first choice focused.
  await until(async () => (await bob.page.evaluate(() => document.activeElement.getAttribute("aria-label"))) === "React with 👍",
    "the picker's first choice to take the focus");
  await bob.page.keyboard.press("Tab");
  await bob.page.keyboard.press("Tab");
  await bob.page.keyboard.press("Enter");
  await until(async () => (await reactionsOf(alice.page, "lunch at noon?")).join() === "😂 1",
    "alice to see bob's 😂");

  // An edit, inline: the other side shows the new text, marked edited, and the reply
  // quotes it.
  await act(alice.page, "lunch at noon?", "Edit");
  const box = alice.page.getByRole("textbox", { name: "Edit message" });
  assert.equal(await box.inputValue(), "lunch at noon?");
  // Escape leaves it as it was.
  await box.press("Escape");
  await box.waitFor({ state: "detached", timeout: 5_000 });
  await act(alice.page, "lunch at noon?", "Edit");
  await box.fill("lunch at 12:30?");
  await box.press("Enter");
  for (const page of [alice.page, bob.page]) {
    await message(page, "lunch at 12:30?").locator(".edited").waitFor({ timeout: 30_000 });
    await message(page, "yes, see you there").locator(".quote-text", { hasText: "lunch at 12:30?" })
      .waitFor({ timeout: 10_000 });
    assert.equal(await message(page, "lunch at noon?").count(), 0);
  }
  // Still only Reply and React for bob on alice's edited message.
  assert.deepEqual(await actionsOf(bob.page, "lunch at 12:30?"), ["Reply", "React", "Report"]);

  // Delete for everyone, after a confirmation (Cancel keeps it).
  await send(alice.page, "wrong chat, sorry");
  await seeMessage(bob.page, "wrong chat, sorry");
  await act(alice.page, "wrong chat, sorry", "Delete");
  const confirm = alice.page.getByRole("alertdialog", { name: "Delete for everyone?" });
  await confirm.getByRole("button", { name: "Cancel" }).click();
  await confirm.waitFor({ state: "detached", timeout: 5_000 });
  await act(alice.page, "wrong chat, sorry", "Delete");
  await confirm.getByRole("button", { name: "Delete for everyone" }).click();
  for (const page of [alice.page, bob.page]) {
    await page.locator(".message.deleted", { hasText: "This message was deleted." }).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByText("wrong chat, sorry").count(), 0);
    // A deleted message offers nothing.
    assert.equal(await page.locator(".message.deleted").getByRole("button").count(), 0);
  }

  // The disappearing timer, set in alice's header, shows in bob's.
  await alice.page.getByLabel("Disappearing messages").selectOption("3600");
  for (const page of [alice.page, bob.page]) {
    await page.getByText("alice set messages to disappear 1 hour after they are read").waitFor({ timeout: 30_000 });
    await until(async () => (await page.getByLabel("Disappearing messages").inputValue()) === "3600",
      "the header to show the timer");
    assert.equal(await page.locator(".timer.on").count(), 1);
  }

  // The picture: bob's side, with alice's edited message, bob's reply and its reaction, the
  // timer, and the actions of a hovered message. The notices of the new conversation go
  // first, and the actions finish fading in.
  await bob.page.locator(".notices li").first().waitFor({ state: "detached", timeout: 15_000 });
  await message(bob.page, "yes, see you there").hover();
  await sleep(500);
  await bob.page.screenshot({ path: SHOT });
  await bob.page.screenshot({ path: path.join(screenshots, "rich.png") });
  await alice.page.getByLabel("Disappearing messages").selectOption("0");
  await bob.page.getByText("alice turned disappearing messages off").waitFor({ timeout: 30_000 });
  await until(async () => (await bob.page.getByLabel("Disappearing messages").inputValue()) === "0",
    "the header to show the timer off");

  // Read receipts off: bob's device says alice's message arrived, not that he read it.
  await setReadReceipts(bob.page, false);
  await send(alice.page, "read quietly");
  await seeMessage(bob.page, "read quietly");
  const quiet = alice.page.locator(".message", { hasText: "read quietly" });
  await quiet.and(alice.page.locator('[data-state="delivered"]')).waitFor({ timeout: 30_000 });
  await sleep(2_000);
  assert.equal(await quiet.getAttribute("data-state"), "delivered");
  // On again: what is read from now on is reported.
  await setReadReceipts(bob.page, true);
  await send(alice.page, "read loudly");
  await seeMessage(bob.page, "read loudly");
  await alice.page.locator('.message[data-state="read"]', { hasText: "read loudly" }).waitFor({ timeout: 30_000 });
  await alice.context.close();
  await bob.context.close();
});

/** The message id a `nightjar send`/`reply` printed (`... message ID)`). */
function sentId(stdout) {
  const id = stdout.trim().split("message ").pop().replace(/\)$/, "");
  assert.match(id, /^[0-9a-f]{32}$/, stdout);
  return id;
}

/** Runs `nightjar sync --json` until the rows seen so far (`seen`, which it extends) satisfy
 * `done`; returns them. */
async function syncUntil(dir, seen, done, what) {
  await until(async () => {
    const out = await cli(dir, ["sync", "--json"]);
    seen.push(...out.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)));
    return done(seen);
  }, `${what}; the command line's rows: ${JSON.stringify(seen)}`, 60_000);
  return seen;
}

test("the command line and the browser reply, react, edit, delete and set the timer both ways", async () => {
  const { dir: carolDir, browser: dave } = await cliAndBrowser(world, "carol", "dave", "from the browser");
  const rows = [];
  await syncUntil(carolDir, rows, (r) => r.some((m) => m.text === "from the browser"), "dave's message");
  const fromBrowser = rows.find((m) => m.type === "text" && m.text === "from the browser");

  // The command line answers the browser's message: a reply quoting it, a reaction, its
  // withdrawal.
  const answer = sentId(await cli(carolDir, ["reply", fromBrowser.id, "answer from the cli"]));
  const reply = message(dave.page, "answer from the cli");
  await reply.waitFor({ timeout: 30_000 });
  assert.match(await reply.getByLabel("In reply to dave").innerText(), /from the browser/);
  await cli(carolDir, ["react", fromBrowser.id, "😮"]);
  await until(async () => (await reactionsOf(dave.page, "from the browser")).join() === "😮 1",
    "dave to see carol's 😮");
  await cli(carolDir, ["react", fromBrowser.id, "😮", "--remove"]);
  await until(async () => (await reactionsOf(dave.page, "from the browser")).length === 0,
    "carol's 😮 to be withdrawn");

  // The command line edits and deletes its own messages; the browser follows. The browser
  // offers dave no Edit or Delete on carol's messages.
  const typo = sentId(await cli(carolDir, ["send", "dave", "teh cli typo"]));
  await seeMessage(dave.page, "teh cli typo");
  assert.deepEqual(await actionsOf(dave.page, "teh cli typo"), ["Reply", "React", "Report"]);
  await cli(carolDir, ["edit", typo, "the cli, fixed"]);
  await message(dave.page, "the cli, fixed").locator(".edited").waitFor({ timeout: 30_000 });
  assert.equal(await message(dave.page, "teh cli typo").count(), 0);
  assert.deepEqual(await actionsOf(dave.page, "the cli, fixed"), ["Reply", "React", "Report"]);
  const oops = sentId(await cli(carolDir, ["send", "dave", "cli oops"]));
  await seeMessage(dave.page, "cli oops");
  await cli(carolDir, ["delete", oops]);
  await dave.page.locator(".message.deleted", { hasText: "This message was deleted." }).waitFor({ timeout: 30_000 });
  assert.equal(await dave.page.getByText("cli oops").count(), 0);

  // The browser's side: a reply, a reaction and its withdrawal, an edit, a delete and a
  // timer, each seen in the command line's rows.
  await act(dave.page, "the cli, fixed", "Reply");
  await send(dave.page, "reply from the browser");
  await react(dave.page, "answer from the cli", "👍");
  const own = message(dave.page, "answer from the cli")
    .getByRole("button", { name: "👍 1, including you: withdraw your reaction" });
  await own.click();
  await own.waitFor({ state: "detached", timeout: 10_000 });
  await act(dave.page, "from the browser", "Edit");
  const box = dave.page.getByRole("textbox", { name: "Edit message" });
  await box.fill("from the browser, edited");
  await dave.page.getByRole("button", { name: "Save" }).click();
  await message(dave.page, "from the browser, edited").locator(".edited").waitFor({ timeout: 10_000 });
  await send(dave.page, "browser oops");
  await syncUntil(carolDir, rows, (r) => r.some((m) => m.text === "browser oops"), "dave's oops");
  await act(dave.page, "browser oops", "Delete");
  await dave.page.getByRole("alertdialog", { name: "Delete for everyone?" })
    .getByRole("button", { name: "Delete for everyone" }).click();
  await dave.page.getByLabel("Disappearing messages").selectOption("300");
  await dave.page.getByText("dave set messages to disappear 5 minutes after they are read").waitFor({ timeout: 10_000 });

  await syncUntil(carolDir, rows, (r) => r.some((m) => m.type === "timer" && m.from === "dave"),
    "dave's timer");
  const of = (type) => rows.filter((m) => m.type === type && m.from === "dave");
  const replies = of("reply");
  assert.equal(replies.length, 1, JSON.stringify(rows));
  assert.equal(replies[0].reply_to, typo);
  assert.equal(replies[0].text, "reply from the browser");
  const reactions = of("reaction");
  assert.deepEqual(reactions.map((m) => [m.target, m.emoji, m.remove]),
    [[answer, "👍", false], [answer, "👍", true]]);
  const edits = of("edit");
  assert.equal(edits.length, 1, JSON.stringify(rows));
  assert.equal(edits[0].target, fromBrowser.id);
  assert.equal(edits[0].text, "from the browser, edited");
  const gone = rows.find((m) => m.type === "text" && m.text === "browser oops");
  assert.ok(gone, JSON.stringify(rows));
  const deletes = of("delete");
  assert.equal(deletes.length, 1, JSON.stringify(rows));
  assert.equal(deletes[0].target, gone.id);
  const timers = of("timer");
  assert.equal(timers.length, 1, JSON.stringify(rows));
  assert.equal(timers[0].seconds, 300);

  // Read receipts, as the command line's setting: on, carol learns dave read her message;
  // off, only that it reached his browser.
  const loud = sentId(await cli(carolDir, ["send", "dave", "read me"]));
  await seeMessage(dave.page, "read me");
  await syncUntil(carolDir, rows,
    (r) => r.some((m) => m.type === "read" && m.message_ids.includes(loud)), "dave's read receipt");
  await setReadReceipts(dave.page, false);
  const quiet = sentId(await cli(carolDir, ["send", "dave", "read me quietly"]));
  await seeMessage(dave.page, "read me quietly");
  await syncUntil(carolDir, rows,
    (r) => r.some((m) => m.type === "delivered" && m.message_ids.includes(quiet)), "dave's delivery receipt");
  await sleep(2_000);
  await syncUntil(carolDir, rows, () => true, "one more sync");
  assert.ok(!rows.some((m) => m.type === "read" && m.message_ids.includes(quiet)), JSON.stringify(rows));
  await dave.context.close();
});

/** The reports the moderators see, as `GET /v1/moderation/reports` lists them. */
async function moderatorReports() {
  const response = await fetch(`${world.server.url}/v1/moderation/reports`, {
    headers: { authorization: `Bearer ${MODERATOR_TOKEN}` },
  });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()).reports;
}

/** Opens the report form of the message with `text`, types `reason` and sends it. */
async function report(page, text, reason) {
  await act(page, text, "Report");
  const form = page.getByRole("alertdialog", { name: "Report this message?" });
  await form.getByLabel("Reason (optional)").fill(reason);
  await form.getByRole("button", { name: "Report", exact: true }).click();
  await form.waitFor({ state: "detached", timeout: 10_000 });
}

test("a browser user reports a message with its proof; a report the reporter altered is refused", async () => {
  const [erin, frank] = await pair(world, "erin", "frank");
  await send(erin.page, "send me your password");
  await seeMessage(frank.page, "send me your password");
  await send(frank.page, "no");
  await seeMessage(erin.page, "no");
  // One's own messages offer no Report.
  assert.deepEqual(await actionsOf(erin.page, "send me your password"), ["Reply", "React", "Edit", "Delete"]);
  assert.deepEqual(await actionsOf(frank.page, "no"), ["Reply", "React", "Edit", "Delete"]);

  // A hostile reporter tries to pin other words on erin: frank's page rewrites the revealed
  // message on its way out (same length, so only the commitment can tell). The server refuses
  // it, the page says so, and nothing is stored.
  await frank.page.route("**/v1/reports/messages", async (route) => {
    const body = route.request().postDataJSON();
    const message = Buffer.from(body.message, "base64url");
    const at = message.indexOf("password");
    assert.ok(at > 0, "the revealed message holds the text");
    message.write("PIN code", at);
    body.message = message.toString("base64url");
    await route.continue({ postData: JSON.stringify(body) });
  });
  await report(frank.page, "send me your password", "framing erin");
  await frank.page.locator(".notices", { hasText: "The report failed" }).waitFor({ timeout: 30_000 });
  assert.deepEqual(await moderatorReports(), []);

  // The real report: the moderators see exactly what erin sent, proven, with frank's reason.
  await frank.page.unroute("**/v1/reports/messages");
  await report(frank.page, "send me your password", "phishing");
  await frank.page.locator(".notices", { hasText: "Reported erin's message" }).waitFor({ timeout: 30_000 });
  await frank.page.screenshot({ path: path.join(screenshots, "report.png") });
  const reports = await moderatorReports();
  assert.equal(reports.length, 1, JSON.stringify(reports));
  assert.equal(reports[0].reporter, "frank");
  assert.equal(reports[0].sender.username, "erin");
  assert.equal(reports[0].content_type, "text");
  assert.equal(reports[0].text, "send me your password");
  assert.equal(reports[0].reason, "phishing");
  // frank's own message, which erin did not report, is nowhere in what the moderators see.
  assert.ok(!JSON.stringify(reports).includes('"no"'));

  // Escape closes the form without reporting.
  await act(frank.page, "send me your password", "Report");
  await frank.page.getByLabel("Reason (optional)").fill("it asks for my password");
  await frank.page.screenshot({ path: path.join(screenshots, "report-form.png") });
  await frank.page.keyboard.press("Escape");
  await frank.page.getByRole("alertdialog", { name: "Report this message?" })
    .waitFor({ state: "detached", timeout: 5_000 });
  assert.equal((await moderatorReports()).length, 1);
});

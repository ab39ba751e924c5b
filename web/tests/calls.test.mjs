// Calls between two browsers: real WebRTC in Chromium (fake camera and microphone), signalling
// as end-to-end encrypted messages, SFrame in a worker on every frame, and a real coturn relay.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  pair, until, serverAndBrowser, openApp, register, openChat, send, seeMessage, screenshots,
  FAKE_MEDIA, turnFlags, cli,
} from "./harness.mjs";

const world = serverAndBrowser({ before, after }, { serverArgs: turnFlags(), browserArgs: FAKE_MEDIA });

/** A number the call screen shows, e.g. "Frames decoded". */
async function detail(page, name) {
  const text = await page.getByRole("dialog").getByLabel(name, { exact: true }).innerText();
  return Number(text.trim());
}

/** Whether the video element from `peer` shows a picture that is not black. */
async function showsPicture(page, peer) {
  return page.getByLabel(`Video from ${peer}`).evaluate((video) => {
    if (!video.videoWidth) return false;
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const g = canvas.getContext("2d");
    g.drawImage(video, 0, 0);
    const { data } = g.getImageData(0, 0, canvas.width, canvas.height);
    let lit = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 60) lit += 1;
    return lit > (data.length / 4) * 0.05;
  });
}

/** alice calls; bob's browser rings and bob accepts; returns once both are connected. */
async function call(caller, callee, calleeName, callerName, video = true) {
  await caller.page.getByRole("button", { name: video ? "Video call" : "Voice call" }).click();
  const ring = callee.page.getByRole("dialog", { name: `Call with ${callerName}` });
  await ring.getByRole("heading", { name: `Incoming ${video ? "video" : "voice"} call from ${callerName}` })
    .waitFor({ timeout: 30_000 });
  await callee.page.screenshot({ path: path.join(screenshots, "call-incoming.png") });
  await ring.getByRole("button", { name: "Accept" }).click();
  for (const page of [caller.page, callee.page]) {
    await page.getByLabel("Call status").filter({ hasText: /^\d+:\d\d$/ }).waitFor({ timeout: 30_000 });
  }
  await caller.page.getByRole("dialog", { name: `Call with ${calleeName}` }).waitFor();
}

test("a 1:1 video call connects and both sides decode SFrame-encrypted video", async () => {
  const [alice, bob] = await pair(world, "alice", "bob");
  await call(alice, bob, "bob", "alice");
  for (const [me, peer] of [[alice, "bob"], [bob, "alice"]]) {
    await until(async () => (await detail(me.page, "Frames decoded")) > 10, `${peer}'s frames decoding`);
    const first = await detail(me.page, "Frames decoded");
    await until(async () => (await detail(me.page, "Frames decoded")) > first + 10, "the frame count growing");
    await until(() => showsPicture(me.page, peer), `a picture from ${peer}`);
    assert.ok((await detail(me.page, "Frames decrypted")) > 0, "frames went through SFrame");
    // A few frames can be refused while a key change reaches the two ends a moment apart (a
    // device's periodic key update); a call without the right keys refuses dozens a second.
    const refused = await detail(me.page, "Frames refused");
    const decoded = await detail(me.page, "Frames decoded");
    await until(async () => (await detail(me.page, "Frames decoded")) > decoded + 20, "more frames");
    assert.ok((await detail(me.page, "Frames refused")) <= refused + 10, "frames are refused");
  }
  const dialog = alice.page.getByRole("dialog");
  assert.match(await dialog.getByLabel("Encryption").innerText(), /End-to-end encrypted/);
  await alice.page.screenshot({ path: path.join(screenshots, "call-video.png") });
  await alice.page.setViewportSize({ width: 360, height: 740 });
  await alice.page.screenshot({ path: path.join(screenshots, "call-video-360.png") });
  await alice.page.setViewportSize({ width: 1100, height: 720 });
  // Mute and camera off are toggles.
  await dialog.getByRole("button", { name: "Mute" }).click();
  await dialog.getByRole("button", { name: "Unmute" }).waitFor();
  await dialog.getByRole("button", { name: "Camera off" }).click();
  await dialog.getByRole("button", { name: "Camera on" }).waitFor();

  await bob.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
  await alice.page.getByRole("dialog").waitFor({ state: "detached", timeout: 30_000 });
  for (const page of [alice.page, bob.page]) {
    await page.locator(".message .text", { hasText: /^video call, \d+:\d\d$/ }).waitFor({ timeout: 30_000 });
  }
  await alice.context.close();
  await bob.context.close();
});

test("a call that nobody answers is a missed call on the callee's side", async () => {
  const [carol, dave] = await pair(world, "carol", "dave");
  await carol.page.getByRole("button", { name: "Voice call" }).click();
  const ring = dave.page.getByRole("dialog", { name: "Call with carol" });
  await ring.waitFor({ timeout: 30_000 });
  await carol.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
  await ring.waitFor({ state: "detached", timeout: 30_000 });
  await seeMessage(dave.page, "missed voice call");
  await seeMessage(carol.page, "voice call: no answer");
  await carol.context.close();
  await dave.context.close();
});

test("with 'Always relay calls' the call goes through the TURN relay", { skip: turnFlags().length === 0 && "no test TURN relay (scripts/coturn.sh)" }, async () => {
  const [erin, frank] = await pair(world, "erin", "frank");
  await erin.page.getByText("Settings", { exact: true }).click();
  await erin.page.getByLabel(/Always relay calls/).check();
  await call(erin, frank, "frank", "erin");
  await until(async () => (await detail(erin.page, "Frames decoded")) > 10, "frames through the relay");
  await erin.page.getByRole("dialog").getByLabel("Connection", { exact: true })
    .filter({ hasText: "relayed through TURN" }).waitFor({ timeout: 15_000 });
  await until(() => showsPicture(erin.page, "frank"), "a picture through the relay");
  await erin.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
  await erin.context.close();
  await frank.context.close();
});

test("a participant without the epoch's keys gets only frames that fail to decrypt", async () => {
  const [gina, hal] = await pair(world, "gina", "hal");
  // hal's page hands its SFrame worker a wrong base key, as a device outside the epoch would
  // have: everything gina sends must be refused, and nothing reach hal's decoder.
  await hal.page.evaluate(() => {
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (message, ...rest) {
      if (message && message.type === "epoch") {
        message = { ...message, baseKey: new Uint8Array(message.baseKey.length).fill(0x5a) };
      }
      return post.call(this, message, ...rest);
    };
  });
  await call(gina, hal, "hal", "gina");
  await until(async () => (await detail(hal.page, "Frames refused")) > 20, "refused frames");
  await new Promise((r) => setTimeout(r, 2000));
  assert.equal(await detail(hal.page, "Frames decrypted"), 0);
  assert.equal(await detail(hal.page, "Frames decoded"), 0, "no frame reached the decoder");
  await hal.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
  await gina.context.close();
  await hal.context.close();
});

test("a call to a terminal user shows as a missed call in its sync", async () => {
  const ivan = mkdtempSync(path.join(tmpdir(), "nightjar-cli-ivan-"));
  await cli(ivan, ["register", "--server", world.server.url, "ivan"]);
  const judy = await openApp(world.browser, world.server.url);
  await register(judy.page, "judy");
  await cli(ivan, ["accept", "judy"]);
  await openChat(judy.page, "ivan");
  await send(judy.page, "call you?");
  await judy.page.getByRole("button", { name: "Video call" }).click();
  await judy.page.getByLabel("Call status").filter({ hasText: "calling…" }).waitFor({ timeout: 30_000 });
  await judy.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
  await seeMessage(judy.page, "video call: no answer");
  const synced = await cli(ivan, ["sync", "--json"]);
  const rows = synced.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  assert.ok(rows.some((r) => r.type === "call" && r.text === "missed video call" && r.from === "judy" && r.id),
    `ivan's sync: ${synced}`);
  assert.ok(!rows.some((r) => r.type === "call" && r.text !== "missed video call"), "one row per call, no signalling rows");
  await judy.context.close();
});

/** Accepts the message request on `page`'s open conversation, if it shows one. */
async function acceptIfRequest(page) {
  const request = page.getByRole("region", { name: "Message request" });
  if (await request.isVisible()) {
    await request.getByRole("button", { name: "Accept" }).click();
    await request.waitFor({ state: "detached", timeout: 10_000 });
  }
}

/** Waits until `page`'s group call shows a decoding, non-black tile for each of `peers`, and
 * none for `gone`. */
async function seesInGrid(page, peers, gone = []) {
  const grid = page.getByRole("dialog").getByLabel("Participants");
  for (const peer of peers) {
    await until(() => showsPicture(page, peer), `a picture from ${peer}`, 45_000);
  }
  for (const peer of gone) {
    await grid.getByLabel(`Video from ${peer}`).waitFor({ state: "detached", timeout: 30_000 });
  }
  const decoded = await detail(page, "Frames decoded");
  await until(async () => (await detail(page, "Frames decoded")) > decoded + 20, "frames decoding");
  assert.equal(await grid.locator("video").count(), peers.length, "one tile per other participant");
}

test("a group call of four through the SFU: everyone sees everyone, one leaves, one joins", async () => {
  const names = ["kim", "lou", "max", "ned", "oda"];
  const people = {};
  for (const name of names) {
    people[name] = await openApp(world.browser, world.server.url);
    await register(people[name].page, name);
  }
  const { kim, lou, max, ned, oda } = people;
  await kim.page.getByText("New group").click();
  await kim.page.getByLabel("Group name").fill("crew");
  await kim.page.getByLabel("Members (usernames, comma-separated)").fill("lou, max, ned, oda");
  await kim.page.getByRole("button", { name: "Create group" }).click();
  await kim.page.getByRole("heading", { name: "crew" }).waitFor({ timeout: 30_000 });
  await send(kim.page, "hello crew");
  for (const name of ["lou", "max", "ned", "oda"]) {
    const page = people[name].page;
    await page.getByRole("button", { name: /crew/ }).click();
    await seeMessage(page, "hello crew");
    await acceptIfRequest(page);
  }

  // kim starts a video call; lou and max join from the ringing screen.
  await kim.page.getByRole("button", { name: "Video call" }).click();
  for (const p of [lou, max]) {
    const ring = p.page.getByRole("dialog", { name: "Call with crew" });
    await ring.getByRole("heading", { name: "Group video call in crew" }).waitFor({ timeout: 30_000 });
    await ring.getByRole("button", { name: "Join" }).click();
  }
  await seesInGrid(kim.page, ["lou", "max"]);
  await seesInGrid(lou.page, ["kim", "max"]);
  await seesInGrid(max.page, ["kim", "lou"]);
  assert.match(await kim.page.getByRole("dialog").getByLabel("In the call").innerText(), /lou/);
  await kim.page.screenshot({ path: path.join(screenshots, "group-call.png") });
  await kim.page.setViewportSize({ width: 360, height: 740 });
  await kim.page.screenshot({ path: path.join(screenshots, "group-call-360.png") });
  await kim.page.setViewportSize({ width: 1100, height: 720 });

  // max leaves: his tile goes everywhere. ned, who let it ring, joins from the chat's banner.
  await max.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
  await max.page.locator(".message .text", { hasText: /^group video call, \d+:\d\d$/ }).waitFor({ timeout: 30_000 });
  // (The ringing stops by itself after a minute, which a slow machine may have reached.)
  const nedRing = ned.page.getByRole("dialog", { name: "Call with crew" });
  await nedRing.getByRole("button", { name: "Not now" }).click({ timeout: 2_000 }).catch(() => {});
  await nedRing.waitFor({ state: "detached", timeout: 10_000 });
  const banner = ned.page.getByRole("region", { name: "Call in progress" });
  await banner.getByRole("button", { name: "Join call" }).click();
  await seesInGrid(kim.page, ["lou", "ned"], ["max"]);
  await seesInGrid(lou.page, ["kim", "ned"], ["max"]);
  await seesInGrid(ned.page, ["kim", "lou"]);
  for (const p of [kim, lou, ned]) {
    const refused = await detail(p.page, "Frames refused");
    const decrypted = await detail(p.page, "Frames decrypted");
    assert.ok(decrypted > 10 * Math.max(refused, 1), `frames refused: ${refused} of ${decrypted}`);
  }

  // oda, who is not in the call, removes lou from the group: the server cuts lou off the
  // call's media at once (and the removal's new epoch already changed the keys).
  const odaRing = oda.page.getByRole("dialog", { name: "Call with crew" });
  await odaRing.getByRole("button", { name: "Not now" }).click({ timeout: 2_000 }).catch(() => {});
  await odaRing.waitFor({ state: "detached", timeout: 10_000 });
  await oda.page.getByRole("button", { name: "Members" }).click();
  await oda.page.getByRole("button", { name: "Remove lou" }).click();
  await lou.page.getByText("You were removed from the call.").waitFor({ timeout: 30_000 });
  await lou.page.getByRole("dialog").waitFor({ state: "detached", timeout: 30_000 });
  await seesInGrid(kim.page, ["ned"], ["lou"]);
  await seesInGrid(ned.page, ["kim"], ["lou"]);

  // The others hang up: each has one history row; oda, who never joined, missed it.
  for (const p of [kim, ned]) {
    await p.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
    await p.page.locator(".message .text", { hasText: /^group video call, \d+:\d\d$/ }).waitFor({ timeout: 30_000 });
  }
  await seeMessage(oda.page, "missed group video call");
  for (const name of names) await people[name].context.close();
});

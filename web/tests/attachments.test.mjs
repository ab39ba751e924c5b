// Encrypted attachments in the browser: a picture from one browser user to another (its
// progress bar, the thumbnail inline, Download gives back the very bytes), files between
// the command line and the browser both ways, and a file larger than the page would want to
// hold in memory.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  closeSync, createReadStream, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync,
} from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { crc32, deflateSync } from "node:zlib";
import { cliAndBrowser, pair, serverAndBrowser, send, seeMessage, screenshots, cli } from "./harness.mjs";

// Parts of 1 MiB: a 3 MiB picture goes up in several requests, so its progress moves.
const world = serverAndBrowser({ before, after }, { serverArgs: ["--blob-part-bytes", String(1 << 20)] });

/** A PNG of `width` x `height` (RGB, stored uncompressed: about 3 bytes a pixel), a sunset
 * gradient with a sun, so the thumbnail shows something. */
function png(width, height) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "latin1");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bits per sample
  header[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  let state = 0x2545f491;
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0; // no filter
    for (let x = 0; x < width; x++) {
      state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
      const grain = state & 7;
      const sun = (x - width / 2) ** 2 + (y - height * 0.6) ** 2 < (height / 6) ** 2;
      const t = y / height;
      const i = row + 1 + x * 3;
      raw[i] = sun ? 255 : Math.round(245 - 120 * t) + grain;
      raw[i + 1] = sun ? 220 : Math.round(120 + 40 * t) + grain;
      raw[i + 2] = sun ? 120 : Math.round(60 + 140 * t) + grain;
    }
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw, { level: 0 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** `size` bytes that neither compress nor repeat. */
function noise(size, seed) {
  const out = Buffer.alloc(size);
  let state = seed | 1;
  for (let i = 0; i < size; i++) {
    state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
    out[i] = state & 0xff;
  }
  return out;
}

/** Presses Download on the file `name` in `page`; resolves with the saved bytes. With
 * `slow`, the blob's answer waits a moment and the download's progress bar must show. */
async function download(page, name, slow = false) {
  const file = page.getByRole("group", { name: `File: ${name}` });
  if (slow) {
    await page.route("**/v1/blobs/*", async (route) => {
      await new Promise((r) => setTimeout(r, 1_000));
      await route.continue();
    });
  }
  const downloaded = page.waitForEvent("download", { timeout: 60_000 });
  await file.getByRole("button", { name: `Download ${name}` }).click();
  if (slow) {
    await file.getByRole("progressbar", { name: `Downloading ${name}` }).waitFor({ timeout: 10_000 });
  }
  const saved = await downloaded;
  if (slow) await page.unroute("**/v1/blobs/*");
  assert.equal(saved.suggestedFilename(), name);
  const bytes = readFileSync(await saved.path());
  // The page keeps it to save again.
  await file.getByRole("link", { name: `Save ${name}` }).waitFor({ timeout: 10_000 });
  return bytes;
}

test("a browser user sends a picture to another: progress, thumbnail, the same bytes back", async () => {
  const [alice, bob] = await pair(world, "alice", "bob");
  const picture = png(1024, 1024);
  assert.ok(picture.length > 3 << 20, `a ${picture.length}-byte picture`);

  // Each part waits a moment on its way, so the progress bar can be seen.
  await alice.page.route("**/v1/blobs/*/parts/*", async (route) => {
    await new Promise((r) => setTimeout(r, 700));
    await route.continue();
  });
  await alice.page.getByLabel("Attach").setInputFiles({
    name: "sunset.png", mimeType: "image/png", buffer: picture,
  });
  const uploading = alice.page.getByRole("progressbar", { name: "Uploading sunset.png" });
  await uploading.waitFor({ timeout: 60_000 });
  await alice.page.locator(".uploads .transfer", { hasText: /Uploading sunset\.png… [1-9]\d? %/ })
    .waitFor({ timeout: 30_000 });
  await alice.page.screenshot({ path: path.join(screenshots, "attachment-upload.png") });
  await uploading.waitFor({ state: "detached", timeout: 60_000 });
  await alice.page.unroute("**/v1/blobs/*/parts/*");

  // alice's own copy shows at once (the page keeps her file; no download).
  const mine = alice.page.getByRole("group", { name: "File: sunset.png" });
  await mine.getByRole("img", { name: "Picture: sunset.png" }).waitFor({ timeout: 30_000 });
  await mine.getByRole("link", { name: "Save sunset.png" }).waitFor();

  // bob sees the thumbnail before downloading anything.
  const file = bob.page.getByRole("group", { name: "File: sunset.png" });
  await file.waitFor({ timeout: 30_000 });
  const thumb = file.getByRole("img", { name: "Picture: sunset.png" });
  await thumb.waitFor();
  await bob.page.waitForFunction(
    () => [...document.querySelectorAll(".attachment img")].every((i) => i.complete && i.naturalWidth > 0),
    null, { timeout: 10_000 },
  );
  const [width, height, src] = await thumb.evaluate((i) => [i.naturalWidth, i.naturalHeight, i.src]);
  assert.equal(width, 320);
  assert.equal(height, 320);
  assert.match(src, /^blob:/);
  assert.match(await file.innerText(), /3\.0 MB/);

  const bytes = await download(bob.page, "sunset.png", true);
  assert.equal(bytes.length, picture.length);
  assert.ok(bytes.equals(picture), "bob's copy differs from alice's file");
  // The notices of the new conversation go, for a clear picture.
  await bob.page.locator(".notices li").first().waitFor({ state: "detached", timeout: 15_000 });
  await bob.page.screenshot({ path: path.join(screenshots, "attachment.png") });
  await alice.context.close();
  await bob.context.close();
});

test("files between the command line and the browser, both ways", async () => {
  const { dir: carolDir, browser: dave } = await cliAndBrowser(world, "carol", "dave", "hi carol");
  const first = await cli(carolDir, ["sync", "--json"]);
  assert.ok(first.includes("hi carol"), first);

  // The command line sends a picture: the browser shows the CLI's thumbnail and downloads it.
  const chart = png(400, 300);
  const chartPath = path.join(carolDir, "chart.png");
  writeFileSync(chartPath, chart);
  await cli(carolDir, ["send", "dave", "--file", chartPath, "the chart"]);
  const file = dave.page.getByRole("group", { name: "File: chart.png" });
  await file.waitFor({ timeout: 30_000 });
  await seeMessage(dave.page, "the chart");
  await file.getByRole("img", { name: "Picture: chart.png" }).waitFor();
  const fromCli = await download(dave.page, "chart.png");
  assert.ok(fromCli.equals(chart), "the browser's copy differs from the CLI's file");

  // The browser sends a file: `nightjar sync` saves it.
  const data = noise(1536 * 1024 + 7, 99);
  await dave.page.getByLabel("Attach").setInputFiles({
    name: "data.bin", mimeType: "application/octet-stream", buffer: data,
  });
  await dave.page.locator('.message[data-state="sent"]', {
    has: dave.page.getByRole("group", { name: "File: data.bin" }),
  }).waitFor({ timeout: 60_000 });
  const saveDir = mkdtempSync(path.join(tmpdir(), "nightjar-cli-saved-"));
  const synced = await cli(carolDir, ["sync", "--json", "--save-dir", saveDir]);
  const rows = synced.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  const row = rows.find((r) => r.type === "attachment" && r.name === "data.bin");
  assert.ok(row, `carol's sync: ${synced}`);
  assert.equal(row.from, "dave");
  assert.equal(row.size, data.length);
  assert.equal(row.media_type, "application/octet-stream");
  assert.equal(row.file, path.join(saveDir, "data.bin"));
  assert.ok(readFileSync(row.file).equals(data), "the CLI's copy differs from the browser's file");
  await dave.context.close();
});

/** The SHA-256 of the file at `file`, read as a stream. */
async function sha256Of(file) {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk);
  return hash.digest("hex");
}

test("a 300 MiB file from the command line downloads whole in the browser", async () => {
  const { dir: erinDir, browser: frank } = await cliAndBrowser(world, "erin", "frank", "hi erin");

  // Random bytes written a MiB at a time, hashed on the way.
  const big = path.join(erinDir, "big.bin");
  const size = (300 << 20) + 12_345;
  const hash = createHash("sha256");
  const fd = openSync(big, "w");
  for (let left = size; left > 0;) {
    const piece = randomBytes(Math.min(left, 1 << 20));
    hash.update(piece);
    writeSync(fd, piece);
    left -= piece.length;
  }
  closeSync(fd);
  const digest = hash.digest("hex");
  await cli(erinDir, ["send", "frank", "--file", big, "the big one"], world.server.url, 300_000);

  const file = frank.page.getByRole("group", { name: "File: big.bin" });
  await file.waitFor({ timeout: 60_000 });
  const downloaded = frank.page.waitForEvent("download", { timeout: 300_000 });
  await file.getByRole("button", { name: "Download big.bin" }).click();
  await file.getByRole("progressbar", { name: "Downloading big.bin" }).waitFor({ timeout: 30_000 });
  const saved = await downloaded;
  assert.equal(saved.suggestedFilename(), "big.bin");
  assert.equal(await sha256Of(await saved.path()), digest, "the browser's copy differs");
  await frank.context.close();
});

test("an upload cut off resumes: in the page, and after a reload with the file chosen again", async () => {
  const { dir: ivanDir, browser: gina } = await cliAndBrowser(world, "ivan", "gina", "hi ivan");

  // 6 MiB: parts of 1 MiB on this server (the blob's answer says how many). The network lets
  // two through, then fails.
  const data = noise((6 << 20) + 7, 7);
  let parts = 0;
  gina.page.on("response", async (r) => {
    if (r.request().method() === "POST" && new URL(r.url()).pathname === "/v1/blobs") {
      parts = (await r.json()).parts;
    }
  });
  const file = path.join(mkdtempSync(path.join(tmpdir(), "nightjar-upload-")), "data.bin");
  writeFileSync(file, data);
  let through = 0;
  await gina.page.route("**/v1/blobs/*/parts/*", async (route) => {
    if (through < 2) {
      through += 1;
      await route.continue();
    } else {
      await route.abort("connectionreset");
    }
  });
  await gina.page.getByLabel("Attach").setInputFiles(file);
  const stopped = gina.page.getByRole("group", { name: "Stopped upload: data.bin" });
  await stopped.waitFor({ timeout: 60_000 });
  await gina.page.locator(".notices", { hasText: "could not send data.bin" }).waitFor({ timeout: 10_000 });
  assert.match(await stopped.innerText(), /data\.bin \(6\.0 MB\) was not sent: its upload stopped at [1-9]\d %/);
  assert.ok(parts > 2, `${parts} parts`);
  // The page still holds the file: Resume needs no choosing. The network is still down.
  await stopped.getByRole("button", { name: "Resume", exact: true }).click();
  await gina.page.getByRole("progressbar", { name: "Uploading data.bin" }).waitFor({ timeout: 10_000 });
  await stopped.waitFor({ timeout: 60_000 });
  assert.equal(through, 2);

  // A reload loses the file: the chat asks for it again, and refuses another one.
  await gina.page.reload();
  await gina.page.locator(".app").waitFor({ timeout: 90_000 });
  await gina.page.getByRole("button", { name: /^ivan/ }).click();
  await stopped.waitFor({ timeout: 30_000 });
  assert.equal(await stopped.getByRole("button", { name: "Resume", exact: true }).count(), 0);
  await gina.page.screenshot({ path: path.join(screenshots, "upload-stopped.png") });
  const impostor = path.join(mkdtempSync(path.join(tmpdir(), "nightjar-upload-")), "data.bin");
  writeFileSync(impostor, noise(data.length, 8));
  await stopped.getByLabel("Choose data.bin again to resume").setInputFiles(impostor);
  await gina.page.locator(".notices", { hasText: "that is not the file that was being sent" })
    .waitFor({ timeout: 10_000 });

  // The same file: only the parts the server lacks go up, and the message goes out.
  await gina.page.unroute("**/v1/blobs/*/parts/*");
  let resent = 0;
  await gina.page.route("**/v1/blobs/*/parts/*", async (route) => {
    resent += 1;
    await route.continue();
  });
  await stopped.getByLabel("Choose data.bin again to resume").setInputFiles(file);
  await stopped.waitFor({ state: "detached", timeout: 60_000 });
  await gina.page.locator('.message[data-state="sent"]', {
    has: gina.page.getByRole("group", { name: "File: data.bin" }),
  }).waitFor({ timeout: 60_000 });
  assert.equal(resent, parts - 2);

  const saveDir = mkdtempSync(path.join(tmpdir(), "nightjar-cli-saved-"));
  const synced = await cli(ivanDir, ["sync", "--json", "--save-dir", saveDir]);
  const row = synced.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l))
    .find((r) => r.type === "attachment" && r.name === "data.bin");
  assert.ok(row, `ivan's sync: ${synced}`);
  assert.ok(readFileSync(row.file).equals(data), "ivan's copy differs from gina's file");
  await gina.context.close();
});

test("a video gets a thumbnail: a frame the sender's browser decoded", async () => {
  const [kim, lee] = await pair(world, "kim", "lee");
  // A two-second WebM recorded in kim's page: a red square moving over blue.
  const webm = await kim.page.evaluate(async () => {
    const canvas = document.createElement("canvas");
    canvas.width = 640;
    canvas.height = 360;
    const context = canvas.getContext("2d");
    const draw = (t) => {
      context.fillStyle = "#1d4e89";
      context.fillRect(0, 0, 640, 360);
      context.fillStyle = "#e63946";
      context.fillRect(40 + t * 150, 110, 140, 140);
    };
    draw(0);
    const recorder = new MediaRecorder(canvas.captureStream(25), { mimeType: "video/webm;codecs=vp8" });
    const chunks = [];
    recorder.ondataavailable = (e) => chunks.push(e.data);
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
    recorder.start(100);
    const start = performance.now();
    while (performance.now() - start < 2_000) {
      draw((performance.now() - start) / 1_000);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    recorder.stop();
    await stopped;
    const blob = new Blob(chunks, { type: "video/webm" });
    return Array.from(new Uint8Array(await blob.arrayBuffer()));
  });
  assert.ok(webm.length > 1_000, `a ${webm.length}-byte video`);
  await kim.page.getByLabel("Attach").setInputFiles({
    name: "clip.webm", mimeType: "video/webm", buffer: Buffer.from(webm),
  });

  // lee sees the frame before downloading anything: mostly blue, with the red square.
  const file = lee.page.getByRole("group", { name: "File: clip.webm" });
  await file.waitFor({ timeout: 60_000 });
  const frame = file.getByRole("img", { name: "Video: clip.webm" });
  await frame.waitFor({ timeout: 10_000 });
  const share = await frame.evaluate(async (img) => {
    await img.decode();
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(img, 0, 0);
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    let blue = 0;
    let red = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 2] > 100 && data[i] < 80) blue += 1;
      if (data[i] > 170 && data[i + 2] < 120) red += 1;
    }
    const pixels = data.length / 4;
    return { blue: blue / pixels, red: red / pixels, width: canvas.width };
  });
  assert.ok(share.blue > 0.5 && share.red > 0.03, JSON.stringify(share));
  assert.equal(share.width, 320);
  await lee.page.screenshot({ path: path.join(screenshots, "attachment-video.png") });
  const bytes = await download(lee.page, "clip.webm");
  assert.ok(bytes.equals(Buffer.from(webm)), "lee's copy differs from kim's video");
});

// Encrypted attachments in the browser: a picture from one browser user to another (its
// progress bar, the thumbnail inline, Download gives back the very bytes), and files between
// the command line and the browser both ways.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { crc32, deflateSync } from "node:zlib";
import {
  serverAndBrowser, openApp, register, openChat, send, seeMessage, screenshots, cli,
} from "./harness.mjs";

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

/** Two browser accounts that accepted each other, with their chat open. */
async function pair(a, b) {
  const first = await openApp(world.browser, world.server.url);
  const second = await openApp(world.browser, world.server.url);
  await register(first.page, a);
  await register(second.page, b);
  await openChat(first.page, b);
  await send(first.page, `hi ${b}`);
  await second.page.getByRole("button", { name: new RegExp(`^${a}`) }).click();
  const request = second.page.getByRole("region", { name: "Message request" });
  await request.getByRole("button", { name: "Accept" }).click();
  await request.waitFor({ state: "detached", timeout: 10_000 });
  await send(second.page, `hi ${a}`);
  await seeMessage(first.page, `hi ${a}`);
  return [first, second];
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
  const [alice, bob] = await pair("alice", "bob");
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
  const carolDir = mkdtempSync(path.join(tmpdir(), "nightjar-cli-carol-"));
  await cli(carolDir, ["register", "--server", world.server.url, "carol"]);
  const dave = await openApp(world.browser, world.server.url);
  await register(dave.page, "dave");
  await cli(carolDir, ["accept", "dave"]);
  await openChat(dave.page, "carol");
  await send(dave.page, "hi carol");
  await dave.page.locator('.message[data-state="sent"]').first().waitFor({ timeout: 30_000 });
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

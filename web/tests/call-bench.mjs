// Figures for docs/calls.md (not part of the test suite): call set-up time, from the callee's
// Accept to the first decoded video frame on each side, over 20 calls between two browsers;
// and what SFrame costs per frame in the browser's transform worker.
// Usage: eval "$(scripts/coturn.sh)"; node web/tests/call-bench.mjs
//   (web/dist built, the debug `nightjar` binary; CALLS=20 to change the count)
import {
  startServer, launchBrowser, openApp, register, openChat, send, seeMessage, FAKE_MEDIA, turnFlags,
} from "./harness.mjs";

const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const calls = Number(process.env.CALLS ?? 20);

/** Resolves when the page's remote video has a decoded frame; the time (ms, Date.now()). */
async function firstFrame(page) {
  for (;;) {
    const ready = await page.evaluate(() => {
      const v = document.querySelector("video.remote");
      return !!v && v.readyState >= 2 && v.videoWidth > 0;
    });
    if (ready) return Date.now();
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The call media driver's statistics (the same module instance the app uses). */
async function mediaStats(page) {
  return page.evaluate(async () => {
    const entry = performance.getEntriesByType("resource").find((e) => e.name.endsWith("/js/calls.js"));
    const m = await import(entry.name);
    await m.stats();
    await new Promise((r) => setTimeout(r, 300));
    return JSON.parse(await m.stats());
  });
}

const server = await startServer(turnFlags());
const browser = await launchBrowser(FAKE_MEDIA);
try {
  const alice = await openApp(browser, server.url);
  const bob = await openApp(browser, server.url);
  await register(alice.page, "alice");
  await register(bob.page, "bob");
  await openChat(alice.page, "bob");
  await send(alice.page, "hi");
  await bob.page.getByRole("button", { name: /^alice/ }).click();
  await bob.page.getByRole("region", { name: "Message request" }).getByRole("button", { name: "Accept" }).click();
  await send(bob.page, "hi alice");
  await seeMessage(alice.page, "hi alice");

  const setup = [];
  const callerSide = [];
  const calleeSide = [];
  let cost = null;
  for (let i = 0; i < calls; i++) {
    await alice.page.getByRole("button", { name: "Video call" }).click();
    const ring = bob.page.getByRole("dialog", { name: "Call with alice" });
    await ring.getByRole("button", { name: "Accept" }).waitFor({ timeout: 60_000 });
    const t0 = Date.now();
    await ring.getByRole("button", { name: "Accept" }).click();
    const [atCallee, atCaller] = await Promise.all([firstFrame(bob.page), firstFrame(alice.page)]);
    calleeSide.push(atCallee - t0);
    callerSide.push(atCaller - t0);
    setup.push(Math.max(atCallee, atCaller) - t0);
    if (i === calls - 1) {
      await new Promise((r) => setTimeout(r, 15_000));
      cost = await mediaStats(alice.page);
    }
    await alice.page.getByRole("dialog").getByRole("button", { name: "Hang up" }).click();
    await bob.page.getByRole("dialog").waitFor({ state: "detached", timeout: 30_000 });
    await alice.page.getByRole("dialog").waitFor({ state: "detached", timeout: 30_000 });
  }
  console.log(`call set-up, Accept to first decoded frame on both sides: p50 ${percentile(setup, 50)} ms, p90 ${percentile(setup, 90)} ms (${calls} calls)`);
  console.log(`  at the callee: p50 ${percentile(calleeSide, 50)} ms; at the caller: p50 ${percentile(callerSide, 50)} ms`);
  const s = cost.sframe;
  console.log(`SFrame in the worker: encrypt ${(1000 * s.encryptMs / s.encrypted).toFixed(1)} µs/frame (${s.encrypted} frames), decrypt ${(1000 * s.decryptMs / s.decrypted).toFixed(1)} µs/frame (${s.decrypted} frames, ${s.failed} refused), audio and 640x480 VP8 video mixed`);
} finally {
  await browser.close();
  await server.stop();
}

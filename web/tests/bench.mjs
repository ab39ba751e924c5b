// Figures for docs/web.md (not part of the test suite): cold load to interactive, the wasm
// engine's cost per 1 KiB message, send-to-display latency between two browsers over 200
// messages, and the time to render a conversation of 1,000 messages.
// Usage: node web/tests/bench.mjs  (with web/dist built and the debug `nightjar` binary)
import { readFile } from "node:fs/promises";
import { startServer, launchBrowser, openApp, register, openChat, send, seeMessage } from "./harness.mjs";


const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const server = await startServer();
const browser = await launchBrowser();
try {
  // Cold load: a fresh profile, from navigation to the first form being usable.
  const loads = [];
  for (let i = 0; i < 5; i++) {
    const { context, page } = await openApp(browser, server.url);
    await page.getByLabel("Username").waitFor();
    loads.push(await page.evaluate(() => performance.now()));
    await context.close();
  }
  console.log(`cold load to interactive: median ${percentile(loads, 50).toFixed(0)} ms (5 fresh profiles)`);

  const alice = await openApp(browser, server.url);
  const bob = await openApp(browser, server.url);
  await register(alice.page, "alice");
  await register(bob.page, "bob");

  const wasmUs = await alice.page.evaluate(async () => {
    const m = await import("/nightjar_web.js");
    return m.nightjarBenchRoundtrip(300);
  });
  console.log(`wasm: ${wasmUs.toFixed(1)} µs per 1 KiB encrypt + decrypt (300 messages)`);

  const vectors = await readFile(new URL("../../crates/web/bench-data/kt_vectors.json", import.meta.url), "utf8");
  const [lookupUs, historyUs, lookupBytes, historyBytes] = await alice.page.evaluate(async (text) => {
    const m = await import("/nightjar_web.js");
    return Array.from(m.nightjarBenchKtVerify(text, 200));
  }, vectors);
  console.log(`wasm: key transparency lookup proof (${lookupBytes} bytes) ${lookupUs.toFixed(0)} µs, history proof (${historyBytes} bytes) ${historyUs.toFixed(0)} µs (200 each)`);

  await openChat(alice.page, "bob");
  await send(alice.page, "warm-up");
  await bob.page.getByRole("button", { name: /^alice/ }).click();
  await seeMessage(bob.page, "warm-up");
  // bob accepts alice: a stranger may send only a few messages (message requests).
  await bob.page.getByRole("region", { name: "Message request" }).getByRole("button", { name: "Accept" }).click();
  await bob.page.getByRole("region", { name: "Message request" }).waitFor({ state: "detached" });
  const latencies = [];
  for (let i = 0; i < 200; i++) {
    const text = `latency probe ${i}`;
    const started = Date.now();
    await send(alice.page, text);
    await bob.page.locator(".message .text", { hasText: new RegExp(`^${text}$`) }).waitFor({ timeout: 30_000 });
    latencies.push(Date.now() - started);
  }
  console.log(`send to display in the other browser: p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms (200 messages, one at a time)`);

  for (let i = latencies.length + 1; i < 1000; i++) {
    await send(alice.page, `filler ${i}`);
  }
  await bob.page.locator(".message .text", { hasText: "filler 999" }).waitFor({ timeout: 300_000 });
  // Render: back to the list (the narrow layout has a back button), then into the
  // conversation; time from the click until all 1,000 are in the page.
  await bob.page.setViewportSize({ width: 360, height: 720 });
  await bob.page.getByRole("button", { name: "Back to conversations" }).click();
  await bob.page.waitForFunction(() => document.querySelectorAll(".message").length === 0);
  await bob.page.evaluate(() => { window.__renderStart = performance.now(); });
  await bob.page.getByRole("button", { name: /^alice/ }).click();
  await bob.page.waitForFunction(() => document.querySelectorAll(".message").length >= 1000, null, { timeout: 60_000 });
  const renderMs = await bob.page.evaluate(() => performance.now() - window.__renderStart);
  console.log(`render a conversation of ${await bob.page.locator(".message").count()} messages: ${renderMs.toFixed(0)} ms`);
} finally {
  await browser.close();
  await server.stop();
}

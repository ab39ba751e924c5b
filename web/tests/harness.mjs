// Shared test harness: a real `nightjar server` process serving the built web app, and
// Debian's Chromium driven by playwright-core (never a downloaded browser).
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(root, "target");
export const nightjarBin = process.env.NIGHTJAR_BIN ?? path.join(targetDir, "debug", "nightjar");
export const screenshots = path.join(here, "screenshots");
mkdirSync(screenshots, { recursive: true });

/** Starts a server on a free port; resolves with { url, stop }. */
export async function startServer(extra = []) {
  const data = mkdtempSync(path.join(tmpdir(), "nightjar-web-"));
  const child = spawn(
    nightjarBin,
    ["server", "--data-dir", data, "--listen", "127.0.0.1:0", "--metrics-listen", "off",
     "--web-dir", path.join(root, "web", "dist"), ...extra],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_LOG: "warn" } },
  );
  const url = await new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`server did not start: ${seen}`)), 30_000);
    child.stderr.on("data", (chunk) => {
      seen += chunk;
      // The whole address: stderr may arrive cut anywhere, even inside the port number.
      const m = seen.match(/listening on (http:\/\/[0-9.]+:[0-9]+) /);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on("exit", (code) => reject(new Error(`server exited ${code}: ${seen}`)));
    child.on("error", (e) => { clearTimeout(timer); reject(new Error(`cannot run ${nightjarBin}: ${e.message}`)); });
  });
  return {
    url, data,
    stop: () => new Promise((resolve) => { child.on("exit", resolve); child.kill("SIGTERM"); }),
  };
}

/** Debian's Chromium, headless. */
export async function launchBrowser(extra = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage", ...extra],
  });
}

/** Chromium's stand-ins for a camera and a microphone (a moving test picture and a tone),
 * allowed without asking. */
export const FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"];

/** The server flags of the test TURN relay (scripts/coturn.sh), if one was started. */
export function turnFlags() {
  const url = process.env.NIGHTJAR_TEST_TURN_URL;
  const secret = process.env.NIGHTJAR_TEST_TURN_SECRET_FILE;
  return url && secret ? ["--turn-url", url, "--turn-secret-file", secret] : [];
}

/** A new browser profile (its own IndexedDB) at the app. */
export async function openApp(browser, url, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e.message));
  if (process.env.NIGHTJAR_WEB_DEBUG) {
    page.on("console", (m) => console.error("page:", m.text()));
    page.on("response", (r) => { if (r.status() >= 400) console.error("http:", r.status(), r.url()); });
    page.on("requestfailed", (r) => console.error("failed:", r.url(), r.failure()?.errorText));
  }
  await page.goto(url);
  // The wasm module compiles before anything shows; on a busy machine that takes a while.
  await page.locator(".app").waitFor({ timeout: 90_000 });
  return { context, page };
}

/** Registers `username` in `page`. */
export async function register(page, username, password = "correct horse battery") {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.getByLabel("Signed in as").filter({ hasText: username }).waitFor({ timeout: 60_000 });
  await page.getByText("online", { exact: true }).waitFor({ timeout: 30_000 });
}

/** Signs in as an existing account in `page`: a new device, which shows its approval code. */
export async function signInNewDevice(page, username, password = "correct horse battery") {
  await page.getByRole("tab", { name: "I have an account" }).click();
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  const code = page.getByLabel("Approval code");
  await code.waitFor({ timeout: 60_000 });
  return (await code.innerText()).trim();
}

/** Opens (or starts) the 1:1 chat with `peer`. */
export async function openChat(page, peer) {
  await page.getByLabel("Start a chat with username").fill(peer);
  await page.getByRole("button", { name: "Start chat" }).click();
  try {
    await page.getByRole("heading", { name: peer }).waitFor({ timeout: 30_000 });
  } catch (e) {
    // Say what the app said instead (a refusal shows as a notice).
    const notices = await page.locator(".notices").innerText().catch(() => "");
    throw new Error(`${e.message}\nthe app's notices: ${notices}`);
  }
}

/** Types and sends `text` with Enter. */
export async function send(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

/** Waits until the chat shows a message with `text`. */
export async function seeMessage(page, text, timeout = 30_000) {
  await page.locator(".message .text", { hasText: text }).first().waitFor({ timeout });
}

/** Runs the `nightjar` command line with its own profile; resolves with stdout. It must be
 * done within `timeout` ms. */
export async function cli(profile, args, serverUrl, timeout = 60_000) {
  const { execFile } = await import("node:child_process");
  return new Promise((resolve, reject) => {
    execFile(
      nightjarBin,
      ["--profile", profile, ...args],
      {
        env: { ...process.env, NIGHTJAR_PASSWORD: "correct horse battery", NIGHTJAR_KEYRING: "off" },
        timeout,
      },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`nightjar ${args.join(" ")}: ${stderr || error.message}`));
        else resolve(stdout);
      },
    );
  });
}

/**
 * A server and a browser for the tests of one file, started before them and stopped after;
 * `world.server` and `world.browser` are set once `before` ran.
 */
export function serverAndBrowser({ before, after }, options = {}) {
  const world = {};
  before(async () => {
    world.server = await startServer(options.serverArgs ?? []);
    world.browser = await launchBrowser(options.browserArgs ?? []);
  });
  after(async () => {
    await world.browser?.close();
    await world.server?.stop();
  });
  return world;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` holds (polling), or fails saying `what`. */
export async function until(check, what, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/**
 * Two new browser accounts `a` and `b` on `world`'s server that accepted each other (a wrote
 * first, b accepted and answered), with their chat open; resolves with their `{ context, page }`.
 */
export async function pair(world, a, b) {
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

/**
 * A command-line user `cliName` (a new profile directory) and a new browser user `browserName`
 * on `world`'s server: the command line accepts the browser user, who opens their chat and
 * sends `first`. Resolves once it is sent, with the profile directory and the browser's
 * `{ context, page }`.
 */
export async function cliAndBrowser(world, cliName, browserName, first) {
  const dir = mkdtempSync(path.join(tmpdir(), `nightjar-cli-${cliName}-`));
  await cli(dir, ["register", "--server", world.server.url, cliName]);
  const browser = await openApp(world.browser, world.server.url);
  await register(browser.page, browserName);
  await cli(dir, ["accept", browserName]);
  await openChat(browser.page, cliName);
  await send(browser.page, first);
  await browser.page.locator('.message[data-state="sent"]').first().waitFor({ timeout: 30_000 });
  return { dir, browser };
}

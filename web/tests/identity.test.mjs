import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { execFileSync } from "node:child_process";
import net from "node:net";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  startServer, launchBrowser, openApp, register, openChat, send, seeMessage, screenshots, cli,
} from "./harness.mjs";

// A malicious server: the real one behind a proxy that, once told to, answers for bob's account
// with a device list signed by another identity key (bob registered on a second server).
let real;
let other;
let proxy;
let browser;
const lie = { on: false };

/** bob's identity key and signed device list as the second server stores them. */
function impostorAccount() {
  const script = "import sqlite3,sys,json;" +
    "r=sqlite3.connect(sys.argv[1]).execute(\"select identity_key, device_list from accounts where username='bob'\").fetchone();" +
    "print(json.dumps([r[0].hex(), r[1].hex()]))";
  const out = execFileSync("python3", ["-c", script, path.join(other.data, "nightjar.db")]).toString();
  const [key, list] = JSON.parse(out);
  return {
    identity_key: Buffer.from(key, "hex").toString("base64url"),
    device_list: Buffer.from(list, "hex").toString("base64url"),
  };
}

function startProxy(target) {
  const upstream = new URL(target);
  const server = http.createServer(async (req, res) => {
    if (lie.on && req.method === "GET" && req.url === "/v1/accounts/bob") {
      // The real answer, with the impostor's key and list put in.
      const answer = await fetch(`${target}/v1/accounts/bob`, { headers: { authorization: req.headers.authorization } });
      const account = await answer.json();
      Object.assign(account, impostorAccount());
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(account));
      return;
    }
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => { res.writeHead(answer.statusCode, answer.headers); answer.pipe(res); },
    );
    forward.on("error", () => { res.writeHead(502); res.end(); });
    req.pipe(forward);
  });
  server.on("upgrade", (req, socket, head) => {
    const up = net.connect(Number(upstream.port), upstream.hostname, () => {
      const headers = Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join("\r\n");
      up.write(`${req.method} ${req.url} HTTP/1.1\r\n${headers}\r\n\r\n`);
      up.write(head);
      socket.pipe(up).pipe(socket);
    });
    up.on("error", () => socket.destroy());
    socket.on("error", () => up.destroy());
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() });
  }));
}

before(async () => {
  real = await startServer();
  other = await startServer();
  proxy = await startProxy(real.url);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  proxy?.close();
  await real?.stop();
  await other?.stop();
});

test("a swapped identity key is refused and shown as a warning", async () => {
  const impostor = mkdtempSync(path.join(tmpdir(), "nightjar-cli-impostor-"));
  await cli(impostor, ["register", "--server", other.url, "bob"]);
  const alice = await openApp(browser, proxy.url);
  const bob = await openApp(browser, proxy.url);
  await register(alice.page, "alice");
  await register(bob.page, "bob");
  await openChat(alice.page, "bob");
  await send(alice.page, "hello bob");
  await bob.page.getByRole("button", { name: /^alice/ }).click();
  await seeMessage(bob.page, "hello bob");

  // The server starts answering for bob with another key; alice starts a group with him.
  lie.on = true;
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

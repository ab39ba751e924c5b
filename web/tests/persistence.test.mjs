import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import {
  serverAndBrowser, openApp, register, openChat, send, seeMessage, screenshots,
} from "./harness.mjs";

const world = serverAndBrowser({ before, after });

/** Everything IndexedDB holds for the app, as the page's own script can read it. */
async function dumpIndexedDb(page) {
  return page.evaluate(async () => {
    const db = await new Promise((resolve, reject) => {
      const r = indexedDB.open("nightjar");
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const read = (store, op, arg) => new Promise((resolve, reject) => {
      const r = db.transaction(store).objectStore(store)[op](arg);
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const values = await read("profile", "getAll");
    const names = await read("profile", "getAllKeys");
    const aes = await read("keys", "get", "aes");
    let exported = "refused";
    try {
      await crypto.subtle.exportKey("raw", aes);
      exported = "exported";
    } catch (e) { /* non-extractable: as it must be */ }
    const latin1 = (v) => Array.from(new Uint8Array(v.buffer ?? v), (b) => String.fromCharCode(b)).join("");
    return {
      count: values.length,
      bytes: values.map(latin1).join("\n"),
      names: names.join("\n"),
      extractable: aes.extractable,
      exported,
    };
  });
}

test("a reload keeps history, and IndexedDB holds no plaintext and no usable key", async () => {
  const alice = await openApp(world.browser, world.server.url);
  const bob = await openApp(world.browser, world.server.url);
  await register(alice.page, "alicevault");
  await register(bob.page, "bobvault");
  await openChat(alice.page, "bobvault");
  const secret = "the eagle lands at midnight";
  await send(alice.page, secret);
  await seeMessage(alice.page, secret);
  await bob.page.getByRole("button", { name: /^alicevault/ }).click();
  await seeMessage(bob.page, secret);

  for (const who of [alice, bob]) {
    await who.page.reload();
    await who.page.getByLabel("Signed in as").waitFor({ timeout: 30_000 });
  }
  await alice.page.getByRole("button", { name: /^bobvault/ }).click();
  await seeMessage(alice.page, secret);
  await bob.page.getByRole("button", { name: /^alicevault/ }).click();
  await seeMessage(bob.page, secret);

  for (const [name, who] of [["alice", alice], ["bob", bob]]) {
    const dump = await dumpIndexedDb(who.page);
    assert.ok(dump.count > 10, `${name}'s profile is stored (${dump.count} entries)`);
    // Names long enough that ciphertext never holds them by chance: a 3-byte name turns up
    // in random bytes about once per 16 MiB, and a profile holds hundreds of kilobytes.
    for (const plain of [secret, "eagle", "alicevault", "bobvault", "web/token"]) {
      assert.ok(!dump.bytes.includes(plain), `${name}'s IndexedDB values contain ${plain}`);
      assert.ok(!dump.names.includes(plain), `${name}'s IndexedDB keys contain ${plain}`);
    }
    assert.equal(dump.extractable, false);
    assert.equal(dump.exported, "refused");
  }

  // After the reload the chat still works both ways.
  await send(bob.page, "still here");
  await seeMessage(alice.page, "still here");
});

test("offline and back: everything is delivered once and in order", async () => {
  const carol = await openApp(world.browser, world.server.url);
  const dave = await openApp(world.browser, world.server.url);
  await register(carol.page, "carol");
  await register(dave.page, "dave");
  await openChat(carol.page, "dave");
  await send(carol.page, "before");
  await dave.page.getByRole("button", { name: /^carol/ }).click();
  await seeMessage(dave.page, "before");

  await carol.context.setOffline(true);
  await carol.page.getByText(/^offline/).waitFor({ timeout: 30_000 });
  for (const n of [1, 2, 3]) {
    await send(carol.page, `queued ${n}`);
  }
  await carol.page.locator('.message[data-state="sending"]').nth(2).waitFor({ timeout: 10_000 });
  await carol.page.screenshot({ path: path.join(screenshots, "offline.png") });
  for (const n of [1, 2]) {
    await send(dave.page, `while away ${n}`);
  }
  await carol.context.setOffline(false);
  await seeMessage(dave.page, "queued 3", 60_000);
  await seeMessage(carol.page, "while away 2", 60_000);
  await carol.page.locator('.message[data-state="sending"]').waitFor({ state: "detached", timeout: 30_000 });

  const texts = async (page) => page.locator(".message .text").allInnerTexts();
  const expected = ["before", "queued 1", "queued 2", "queued 3"];
  const seenByDave = (await texts(dave.page)).filter((t) => !t.startsWith("while away"));
  assert.deepEqual(seenByDave, expected);
  const seenByCarol = (await texts(carol.page)).filter((t) => t.startsWith("while away"));
  assert.deepEqual(seenByCarol, ["while away 1", "while away 2"]);
});

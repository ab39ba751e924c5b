// The SFrame transform of a call (RFC 9605), in a worker as RTCRtpScriptTransform requires:
// every encoded frame the page sends is encrypted here, and every frame it receives is
// decrypted here, by Nightjar's media crate (Rust compiled to wasm, on the `sframe` crate).
// A frame that does not decrypt (no key for its epoch, altered, replayed) is dropped: the
// decoder never sees it. The page hands over the call's keys; the worker keeps counts and the
// time spent per frame, which the page reads for its statistics.
import init, { SframeContext } from "/nightjar_media.js";

const ready = init({ module_or_path: "/nightjar_media_bg.wasm" });
let media = null;
const cost = { type: "stats", encrypted: 0, decrypted: 0, failed: 0, encryptMs: 0, decryptMs: 0 };

async function context() {
  await ready;
  if (!media) media = new SframeContext();
  return media;
}

self.onmessage = async (e) => {
  const m = await context();
  if (e.data.type === "epoch") {
    try {
      m.setEpoch(e.data.epoch, e.data.leafIndex, e.data.baseKey);
    } catch (err) {
      console.warn("call key refused", err);
    }
  } else if (e.data.type === "stats") {
    self.postMessage(cost);
  }
};

function kindOf(frame, kind) {
  if (kind === "audio") return 0;
  return frame.type === "key" ? 1 : 2;
}

self.onrtctransform = async (event) => {
  const m = await context();
  const { side, kind } = event.transformer.options;
  const encrypt = side === "send";
  const { readable, writable } = event.transformer;
  await readable
    .pipeThrough(
      new TransformStream({
        transform(frame, controller) {
          if (frame.data.byteLength === 0) return;
          const t0 = performance.now();
          try {
            const data = new Uint8Array(frame.data);
            const out = encrypt ? m.encrypt(data, kindOf(frame, kind)) : m.decrypt(data, kindOf(frame, kind));
            frame.data = out.buffer;
            controller.enqueue(frame);
            if (encrypt) cost.encrypted += 1;
            else cost.decrypted += 1;
          } catch (_) {
            cost.failed += 1;
          }
          const spent = performance.now() - t0;
          if (encrypt) cost.encryptMs += spent;
          else cost.decryptMs += spent;
        },
      }),
    )
    .pipeTo(writable)
    .catch(() => {});
};

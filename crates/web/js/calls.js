// The call media driver: the browser's WebRTC objects for the one call this page takes part in.
// Nothing here decides anything: the client state machine (Rust) decides who calls whom,
// carries the offer, answer and candidates as end-to-end encrypted messages, and hands over
// the call's SFrame keys. This module only runs the peer connection and puts the SFrame
// transform (sframe-worker.js, Rust compiled to wasm) on every sender and receiver, so that
// what leaves the page is SFrame ciphertext inside DTLS-SRTP.

let current = null;
/// The call screen's video elements (they may exist before the call's media does): the local
/// camera, the other side's video (one-to-one), and the grid of a group call's participants.
const views = { local: null, remote: null, grid: null };
/// A group call's participants' names, by forwarding-unit participant id (decimal device id).
let names = {};

/// Candidates gathered within this long go inside the offer or answer; later ones trickle.
const GATHER_MS = 1500;

/// Shows `stream` in `el` and starts it (a media element plays only once started; the user's
/// click on Call or Accept allows it to start with sound).
function show(el, stream) {
  if (!el || !stream) return;
  if (el.srcObject !== stream) el.srcObject = stream;
  el.play().catch(() => {});
}

function newWorker() {
  return new Worker("/sframe-worker.js", { type: "module", name: "sframe" });
}

function transform(worker, side, kind) {
  return new RTCRtpScriptTransform(worker, { side, kind });
}

/// Waits until ICE gathering completes or `GATHER_MS` passed.
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_MS);
  });
}

/// Prefers VP8 (the SFrame layout keeps VP8's payload header readable) on a video transceiver.
function preferVp8(transceiver) {
  const caps = RTCRtpReceiver.getCapabilities("video");
  if (!caps || !transceiver.setCodecPreferences) return;
  const vp8 = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
  const rest = caps.codecs.filter((c) => /rtx|red|ulpfec/i.test(c.mimeType));
  if (vp8.length) transceiver.setCodecPreferences([...vp8, ...rest]);
}

async function setUp(video, iceJson, listener) {
  hangUp();
  const ice = JSON.parse(iceJson);
  const pc = new RTCPeerConnection({
    iceServers: ice.servers,
    iceTransportPolicy: ice.relay_only ? "relay" : "all",
  });
  const worker = newWorker();
  const remote = new MediaStream();
  const call = { pc, worker, remote, local: null, listener, gathering: true, late: [] };
  current = call;
  worker.onmessage = (e) => {
    if (e.data && e.data.type === "stats") call.sframe = e.data;
  };
  pc.ontrack = (e) => {
    if (!e.receiver.transform) e.receiver.transform = transform(worker, "receive", e.track.kind);
    remote.addTrack(e.track);
    if (current === call) show(views.remote, remote);
  };
  pc.onicecandidate = (e) => {
    if (!e.candidate || !e.candidate.candidate) return;
    if (call.gathering) return; // goes inside the SDP
    listener("candidate", JSON.stringify({
      candidate: e.candidate.candidate,
      sdp_mid: e.candidate.sdpMid,
      sdp_m_line_index: e.candidate.sdpMLineIndex,
    }));
  };
  pc.onconnectionstatechange = () => listener("state", pc.connectionState);
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video });
  if (current !== call) {
    local.getTracks().forEach((t) => t.stop());
    throw new Error("the call ended");
  }
  call.local = local;
  show(views.local, local);
  show(views.remote, remote);
  // addTrack (not addTransceiver): on the callee's side the offer's media sections take
  // these senders over, so the answer sends both ways without another round.
  // The receiving half of each of these transceivers exists now, and Chromium applies a
  // receiver's transform only when it is set before negotiation starts it.
  for (const track of local.getTracks()) {
    const sender = pc.addTrack(track, local);
    sender.transform = transform(worker, "send", track.kind);
    const transceiver = pc.getTransceivers().find((t) => t.sender === sender);
    if (transceiver) transceiver.receiver.transform = transform(worker, "receive", track.kind);
  }
  return call;
}

function preferVp8Everywhere(pc) {
  for (const t of pc.getTransceivers()) {
    if (t.receiver.track && t.receiver.track.kind === "video") preferVp8(t);
  }
}

async function describe(call) {
  await gathered(call.pc);
  call.gathering = false;
  return call.pc.localDescription.sdp;
}

/// Starts an outgoing call: returns the SDP offer (with the candidates gathered so far).
export async function startOutgoing(video, iceJson, listener) {
  const call = await setUp(video, iceJson, listener);
  preferVp8Everywhere(call.pc);
  await call.pc.setLocalDescription(await call.pc.createOffer());
  return describe(call);
}

/// Answers an incoming call's offer: returns the SDP answer.
export async function acceptIncoming(video, iceJson, offer, listener) {
  const call = await setUp(video, iceJson, listener);
  await call.pc.setRemoteDescription({ type: "offer", sdp: offer });
  preferVp8Everywhere(call.pc);
  await call.pc.setLocalDescription(await call.pc.createAnswer());
  for (const c of call.late.splice(0)) await call.pc.addIceCandidate(c).catch(() => {});
  return describe(call);
}

/// The callee's answer, for the caller.
export async function applyAnswer(answer) {
  if (!current) return;
  await current.pc.setRemoteDescription({ type: "answer", sdp: answer });
  for (const c of current.late.splice(0)) await current.pc.addIceCandidate(c).catch(() => {});
}

/// A candidate the other side trickled.
export async function addCandidate(json) {
  if (!current) return;
  const c = JSON.parse(json);
  const init = { candidate: c.candidate, sdpMid: c.sdp_mid, sdpMLineIndex: c.sdp_m_line_index };
  if (!current.pc.remoteDescription) {
    current.late.push(init);
    return;
  }
  await current.pc.addIceCandidate(init).catch(() => {});
}

/// The call's SFrame keys of one epoch, for the worker.
export function setKeys(epoch, leafIndex, baseKey) {
  if (!current) return false;
  current.worker.postMessage({ type: "epoch", epoch, leafIndex, baseKey });
  return true;
}

/// Shows the local and remote video in these elements.
export function attach(localEl, remoteEl) {
  views.local = localEl;
  views.remote = remoteEl;
  if (!current) return;
  show(localEl, current.local);
  show(remoteEl, current.remote);
}

export function setMuted(muted) {
  if (!current || !current.local) return;
  current.local.getAudioTracks().forEach((t) => (t.enabled = !muted));
}

export function setCameraOff(off) {
  if (!current || !current.local) return;
  current.local.getVideoTracks().forEach((t) => (t.enabled = !off));
}

/// The microphones and cameras, as JSON `[{kind, id, label}]`.
export async function devices() {
  const list = await navigator.mediaDevices.enumerateDevices();
  return JSON.stringify(
    list
      .filter((d) => d.kind === "audioinput" || d.kind === "videoinput")
      .map((d) => ({ kind: d.kind === "audioinput" ? "audio" : "video", id: d.deviceId, label: d.label })),
  );
}

/// Switches the microphone or camera without renegotiating.
export async function switchDevice(kind, deviceId) {
  if (!current || !current.local) return;
  const constraints = kind === "audio" ? { audio: { deviceId: { exact: deviceId } } } : { video: { deviceId: { exact: deviceId } } };
  const fresh = await navigator.mediaDevices.getUserMedia(constraints);
  const track = fresh.getTracks()[0];
  const sender = current.pc.getSenders().find((s) => s.track && s.track.kind === kind);
  if (sender) await sender.replaceTrack(track);
  const old = current.local.getTracks().find((t) => t.kind === kind);
  if (old) {
    track.enabled = old.enabled;
    current.local.removeTrack(old);
    old.stop();
  }
  current.local.addTrack(track);
}

/// What the call's statistics say, as JSON: decoded frames, the candidate pair in use, and the
/// SFrame worker's counts and costs.
export async function stats() {
  if (!current) return "null";
  const call = current;
  call.worker.postMessage({ type: "stats" });
  const report = await call.pc.getStats();
  const out = { framesDecoded: 0, framesReceived: 0, bytesReceived: 0, localCandidate: null, remoteCandidate: null };
  let pair = null;
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.framesDecoded += s.framesDecoded || 0;
      out.framesReceived += s.framesReceived || 0;
    }
    if (s.type === "inbound-rtp") out.bytesReceived += s.bytesReceived || 0;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
  });
  if (pair) {
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    out.localCandidate = local ? local.candidateType : null;
    out.remoteCandidate = remote ? remote.candidateType : null;
  }
  out.sframe = call.sframe || null;
  out.connection = call.pc.connectionState;
  return JSON.stringify(out);
}

/// Ends the call's media (the state machine tells the other side).
export function hangUp() {
  const call = current;
  current = null;
  if (!call) return;
  if (call.local) call.local.getTracks().forEach((t) => t.stop());
  if (call.channel) call.channel.close();
  call.pc.close();
  call.worker.terminate();
  if (call.tiles) for (const id of [...call.tiles.keys()]) removeTile(call, id);
}

// ---- Group calls, through the server's forwarding unit (SFU) ----
//
// The page sends its camera and microphone to the SFU and receives everyone else's tracks from
// it, every frame SFrame-encrypted by the worker (the SFU forwards what it cannot read). After
// the join (an HTTP request the Rust side makes with the offer returned here), the SFU and the
// page renegotiate over the "nightjar-sfu" data channel whenever someone joins or leaves: the
// SFU offers, the page answers. The SFU tags each forwarded stream with the publisher's
// participant id, and says which `mid` carries whom in a `tracks` message before each offer.

/// A group call's video: smaller than a one-to-one call's, as a grid shows several at once.
const GROUP_VIDEO = { width: { ideal: 320 }, height: { ideal: 240 }, frameRate: { ideal: 15 } };

function tileFor(call, participant) {
  let tile = call.tiles.get(participant);
  if (tile) return tile;
  const figure = document.createElement("figure");
  figure.className = "tile";
  figure.dataset.participant = participant;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  const caption = document.createElement("figcaption");
  figure.append(video, caption);
  tile = { figure, video, caption, stream: new MediaStream() };
  call.tiles.set(participant, tile);
  label(participant, tile);
  if (views.grid) views.grid.append(figure);
  show(video, tile.stream);
  return tile;
}

function label(participant, tile) {
  const name = names[participant] || "someone";
  tile.caption.textContent = name;
  tile.video.setAttribute("aria-label", `Video from ${name}`);
}

function removeTile(call, participant) {
  const tile = call.tiles.get(participant);
  if (!tile) return;
  call.tiles.delete(participant);
  tile.stream.getTracks().forEach((t) => tile.stream.removeTrack(t));
  tile.figure.remove();
}

/// Applies the SFU's view of who sends what: tiles of participants who left go.
function onTracks(call, tracks) {
  call.mids = new Map(tracks.map((t) => [t.mid, t.participant]));
  const present = new Set(tracks.map((t) => t.participant));
  for (const id of [...call.tiles.keys()]) if (!present.has(id)) removeTile(call, id);
}

async function onSfuMessage(call, text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (_) {
    return;
  }
  if (m.type === "tracks") {
    onTracks(call, m.tracks || []);
  } else if (m.type === "offer") {
    // Renegotiations are handled one at a time, in order.
    call.negotiation = call.negotiation.then(async () => {
      if (current !== call) return;
      await call.pc.setRemoteDescription({ type: "offer", sdp: m.sdp });
      // Receivers the offer created get their transform before the answer starts them.
      for (const t of call.pc.getTransceivers()) {
        if (!t.receiver.transform && t.receiver.track) {
          t.receiver.transform = transform(call.worker, "receive", t.receiver.track.kind);
        }
      }
      await call.pc.setLocalDescription(await call.pc.createAnswer());
      call.channel.send(JSON.stringify({ type: "answer", sdp: call.pc.localDescription.sdp }));
    }).catch((e) => call.listener("error", String(e)));
  } else if (m.type === "speaker") {
    for (const [id, tile] of call.tiles) tile.figure.classList.toggle("speaking", id === m.participant);
  } else if (m.type === "bye") {
    call.listener("state", m.reason === "kicked" ? "kicked" : "closed");
  } else if (m.type === "error") {
    call.listener("error", m.message || "the forwarding unit refused a message");
  }
}

/// Starts the media of a group call: returns the SDP offer for the forwarding unit (the Rust
/// side sends it with the join request and hands the answer to `applySfuAnswer`).
export async function joinGroup(video, iceJson, listener) {
  hangUp();
  const ice = JSON.parse(iceJson);
  const pc = new RTCPeerConnection({
    iceServers: ice.servers,
    iceTransportPolicy: ice.relay_only ? "relay" : "all",
    bundlePolicy: "max-bundle",
  });
  const worker = newWorker();
  const call = {
    pc, worker, listener, local: null, remote: new MediaStream(), late: [], gathering: false,
    group: true, tiles: new Map(), mids: new Map(), negotiation: Promise.resolve(), channel: null,
  };
  current = call;
  worker.onmessage = (e) => {
    if (e.data && e.data.type === "stats") call.sframe = e.data;
  };
  pc.ontrack = (e) => {
    if (!e.receiver.transform) e.receiver.transform = transform(worker, "receive", e.track.kind);
    const participant = (e.streams[0] && e.streams[0].id) || call.mids.get(e.transceiver.mid);
    if (!participant) return;
    const tile = tileFor(call, participant);
    tile.stream.getTracks().filter((t) => t.kind === e.track.kind).forEach((t) => tile.stream.removeTrack(t));
    tile.stream.addTrack(e.track);
    show(tile.video, tile.stream);
  };
  pc.onconnectionstatechange = () => listener("state", pc.connectionState);
  const channel = pc.createDataChannel("nightjar-sfu");
  call.channel = channel;
  channel.onmessage = (e) => onSfuMessage(call, e.data);
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: video ? GROUP_VIDEO : false });
  if (current !== call) {
    local.getTracks().forEach((t) => t.stop());
    throw new Error("the call ended");
  }
  call.local = local;
  show(views.local, local);
  for (const track of local.getTracks()) {
    const t = pc.addTransceiver(track, { direction: "sendonly", streams: [local] });
    t.sender.transform = transform(worker, "send", track.kind);
    if (track.kind === "video") preferVp8(t);
  }
  await pc.setLocalDescription(await pc.createOffer());
  // The SFU takes no trickled candidates: the offer carries what gathering found.
  call.gathering = true;
  await gathered(pc);
  call.gathering = false;
  return pc.localDescription.sdp;
}

/// The forwarding unit's answer to the join.
export async function applySfuAnswer(answer) {
  if (!current || !current.group) return;
  await current.pc.setRemoteDescription({ type: "answer", sdp: answer });
}

/// The names to show on the tiles, as JSON `{participant id: account}`.
export function setNames(json) {
  try {
    names = JSON.parse(json) || {};
  } catch (_) {
    names = {};
  }
  if (current && current.tiles) for (const [id, tile] of current.tiles) label(id, tile);
}

/// Where the group call's tiles go.
export function attachGrid(el) {
  views.grid = el;
  if (!current || !current.tiles || !el) return;
  for (const tile of current.tiles.values()) {
    el.append(tile.figure);
    show(tile.video, tile.stream);
  }
}

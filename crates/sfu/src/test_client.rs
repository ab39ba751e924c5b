//! A native WebRTC client of the SFU, for tests and load tools (feature `test-client`): a str0m
//! `Rtc` on its own UDP socket on 127.0.0.1, driven by a tokio task, that publishes Opus and VP8
//! frames from a [`FrameSource`] (by default random bytes behind a clear VP8 payload header,
//! standing in for SFrame ciphertext), answers the SFU's renegotiations over the
//! `"nightjar-sfu"` data channel, and records what it sent and received.
//!
//! Two ways in:
//! - [`Client::join`] joins an in-process [`Sfu`] directly;
//! - [`offerer`] makes the SDP offer, the caller hands it to the SFU however it likes (the
//!   Nightjar server's `POST /v1/calls/{conversation}/sfu`, say), and [`Offerer::start`] takes
//!   the answer and starts the client.
//!
//! It is not a browser: one host candidate, no ICE restarts, no SFrame of its own (a
//! [`FrameSource`] encrypts if the test wants real SFrame). Errors it cannot hand back (an
//! unreadable SFU message, a renegotiation it could not apply) are kept in
//! [`ClientState::problems`] for the test to look at.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::driver::Sfu;
use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId, TrackKind};
use crate::protocol::{CHANNEL_LABEL, ClientMessage, ServerMessage, TrackInfo};

/// How often a client sends an audio frame by default (Opus, 20 ms).
pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// How often a client sends a video frame by default (25 frames a second).
pub const VIDEO_INTERVAL: Duration = Duration::from_millis(40);
/// Largest datagram read.
const RECV_BUFFER: usize = 2048;

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client's UDP socket could not be opened.
    #[error("client socket: {0}")]
    Io(#[from] io::Error),
    /// The SFU refused the join.
    #[error("the SFU refused the join: {0}")]
    Sfu(#[from] SfuError),
    /// str0m could not make the offer or take the SFU's answer.
    #[error("SDP: {0}")]
    Sdp(String),
}

/// A frame this client published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFrame {
    /// Audio or video.
    pub kind: TrackKind,
    /// The frame as handed to the packetizer.
    pub data: Vec<u8>,
    /// Whether it was a VP8 keyframe.
    pub keyframe: bool,
}

/// A frame this client received from the SFU.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// The m-line it came on.
    pub mid: String,
    /// Whose it is, by the last `tracks` notice.
    pub from: Option<ParticipantId>,
    /// Audio or video.
    pub kind: TrackKind,
    /// The depacketized frame.
    pub data: Vec<u8>,
    /// Whether the depacketizer saw a keyframe.
    pub keyframe: bool,
}

/// What the client saw, shared with the test.
#[derive(Debug, Default)]
pub struct ClientState {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The signalling data channel is open.
    pub channel_open: bool,
    /// Every frame published (only with [`Options::record`]).
    pub sent: Vec<SentFrame>,
    /// Every frame received (only with [`Options::record`]).
    pub received: Vec<ReceivedFrame>,
    /// Frames published so far.
    pub frames_sent: u64,
    /// Frames received so far.
    pub frames_received: u64,
    /// Bytes of frames received so far.
    pub bytes_received: u64,
    /// The tracks of the last `tracks` notice, by mid.
    pub tracks: HashMap<String, TrackInfo>,
    /// Keyframe requests (PLI/FIR) the SFU sent.
    pub keyframe_requests: usize,
    /// Renegotiation offers from the SFU this client answered.
    pub offers: usize,
    /// The active speaker, by the last `speaker` notice.
    pub speaker: Option<ParticipantId>,
    /// Every message the SFU sent on the data channel.
    pub notices: Vec<ServerMessage>,
    /// The reason of the SFU's `bye`, if it said goodbye.
    pub bye: Option<String>,
    /// The connection is gone.
    pub closed: bool,
    /// Things that went wrong on the client's side (unreadable SFU messages, SDP it could not
    /// apply): a test usually wants this empty.
    pub problems: Vec<String>,
}

impl ClientState {
    /// The frames of `kind` received from `who`, in order.
    pub fn received_from(&self, who: ParticipantId, kind: TrackKind) -> Vec<Vec<u8>> {
        self.received
            .iter()
            .filter(|f| f.from == Some(who) && f.kind == kind)
            .map(|f| f.data.clone())
            .collect()
    }

    /// The frames of `kind` this client sent, in order.
    pub fn sent_of(&self, kind: TrackKind) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.data.clone())
            .collect()
    }
}

/// One video frame from a [`FrameSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// The encoded (and, for a Nightjar client, SFrame-encrypted) frame; a VP8 payload header
    /// first, which the SFU reads for the keyframe bit.
    pub data: Vec<u8>,
    /// Whether it is a keyframe.
    pub keyframe: bool,
}

/// Where a client's frames come from.
pub trait FrameSource: Send + 'static {
    /// The next audio frame.
    fn audio(&mut self) -> Vec<u8>;
    /// The next video frame; `keyframe_wanted` when none was sent yet or the SFU asked for one.
    fn video(&mut self, keyframe_wanted: bool) -> VideoFrame;
}

/// Random bytes standing in for SFrame ciphertext: audio frames of 40-120 bytes, video
/// keyframes of 2-4 KB behind [`vp8_keyframe_header`], delta frames of 200-1000 bytes behind
/// [`vp8_delta_header`]. Deterministic per seed.
#[derive(Debug, Clone)]
pub struct RandomFrames {
    state: u64,
}

impl RandomFrames {
    /// A source seeded with `seed` (any value).
    pub fn new(seed: u64) -> Self {
        RandomFrames {
            state: (0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

impl FrameSource for RandomFrames {
    fn audio(&mut self) -> Vec<u8> {
        let len = 40 + (self.next() % 80) as usize;
        self.bytes(len)
    }

    fn video(&mut self, keyframe_wanted: bool) -> VideoFrame {
        let mut data = Vec::new();
        if keyframe_wanted {
            data.extend_from_slice(&vp8_keyframe_header());
            let len = 2000 + (self.next() % 2000) as usize;
            data.extend(self.bytes(len));
        } else {
            data.extend_from_slice(&vp8_delta_header());
            let len = 200 + (self.next() % 800) as usize;
            data.extend(self.bytes(len));
        }
        VideoFrame {
            data,
            keyframe: keyframe_wanted,
        }
    }
}

/// Options of a client.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Publish an audio track.
    pub audio: bool,
    /// Publish a video track.
    pub video: bool,
    /// The RFC 6464 level sent with each audio frame (-127 silence ... 0 loudest).
    pub audio_level: i8,
    /// Time between audio frames.
    pub audio_interval: Duration,
    /// Time between video frames.
    pub video_interval: Duration,
    /// Keep every frame sent and received in [`ClientState`] (off for load: counts only).
    pub record: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            audio: true,
            video: true,
            audio_level: -50,
            audio_interval: AUDIO_INTERVAL,
            video_interval: VIDEO_INTERVAL,
            record: true,
        }
    }
}

enum Command {
    Publish(bool),
    AudioLevel(i8),
    Send(ClientMessage),
}

/// One running client; its task ends when this is dropped or the connection closes.
pub struct Client {
    /// Its participant id.
    pub id: ParticipantId,
    /// Its UDP socket's address.
    pub addr: SocketAddr,
    /// What it saw.
    pub state: Arc<Mutex<ClientState>>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A fresh client-side `Rtc` on a new loopback socket, with its offer: hand [`Offerer::offer`]
/// to the SFU and its answer to [`Offerer::start`].
pub struct Offerer {
    rtc: Rtc,
    socket: std::net::UdpSocket,
    pending: SdpPendingOffer,
    /// The SDP offer.
    pub offer: String,
    audio: Option<Mid>,
    video: Option<Mid>,
    options: Options,
}

impl std::fmt::Debug for Offerer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offerer")
            .field("offer", &self.offer)
            .finish_non_exhaustive()
    }
}

/// A client's offer: its tracks by `options`, and the `"nightjar-sfu"` data channel unless
/// `with_channel` is false (which the SFU refuses).
pub fn offerer(options: Options, with_channel: bool) -> Result<Offerer, ClientError> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = socket.local_addr()?;
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_opus(true)
        .enable_vp8(true)
        .build(Instant::now());
    let candidate = Candidate::host(addr, "udp").map_err(|e| ClientError::Sdp(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let audio = options
        .audio
        .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
    let video = options
        .video
        .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
    if with_channel {
        api.add_channel(CHANNEL_LABEL.to_string());
    }
    let (offer, pending) = api
        .apply()
        .ok_or_else(|| ClientError::Sdp("nothing to offer".into()))?;
    Ok(Offerer {
        rtc,
        socket,
        pending,
        offer: offer.to_sdp_string(),
        audio,
        video,
        options,
    })
}

impl Offerer {
    /// Takes the SFU's answer and starts the client as `id` on the current tokio runtime; it
    /// publishes from `frames` once connected.
    pub fn start(
        self,
        id: ParticipantId,
        answer: &str,
        frames: impl FrameSource,
    ) -> Result<Client, ClientError> {
        let Offerer {
            mut rtc,
            socket,
            pending,
            audio,
            video,
            options,
            ..
        } = self;
        let answer =
            SdpAnswer::from_sdp_string(answer).map_err(|e| ClientError::Sdp(e.to_string()))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ClientError::Sdp(e.to_string()))?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let socket = UdpSocket::from_std(socket)?;
        let state = Arc::new(Mutex::new(ClientState::default()));
        let (commands, rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let task = Task {
            rtc,
            socket,
            addr,
            state: state.clone(),
            commands: rx,
            audio,
            video,
            channel: None,
            pending: None,
            publishing: true,
            connected: false,
            options,
            level: options.audio_level,
            next_audio: now,
            next_video: now,
            audio_time: 0,
            video_time: 0,
            keyframe_wanted: true,
            frames: Box::new(frames),
        };
        tokio::spawn(task.run());
        Ok(Client {
            id,
            addr,
            state,
            commands,
        })
    }
}

impl Client {
    /// Joins `room` of an in-process SFU as `id`, publishing random frames once connected.
    pub async fn join(
        sfu: &Sfu,
        room: RoomId,
        id: ParticipantId,
        options: Options,
    ) -> Result<Client, ClientError> {
        Client::join_with(sfu, room, id, options, RandomFrames::new(id.0)).await
    }

    /// [`Client::join`] with frames from `frames`.
    pub async fn join_with(
        sfu: &Sfu,
        room: RoomId,
        id: ParticipantId,
        options: Options,
        frames: impl FrameSource,
    ) -> Result<Client, ClientError> {
        let o = offerer(options, true)?;
        let answer = sfu.join(room, id, o.offer.clone()).await?;
        o.start(id, &answer, frames)
    }

    /// What the client saw so far.
    pub fn state(&self) -> MutexGuard<'_, ClientState> {
        lock(&self.state)
    }

    /// Starts or stops publishing.
    pub fn publish(&self, on: bool) {
        let _ = self.commands.send(Command::Publish(on));
    }

    /// Changes the audio level sent from now on.
    pub fn set_audio_level(&self, level: i8) {
        let _ = self.commands.send(Command::AudioLevel(level));
    }

    /// Sends a message to the SFU on the data channel.
    pub fn send(&self, message: ClientMessage) {
        let _ = self.commands.send(Command::Send(message));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that `received` is a contiguous run of `sent` (the frames sent while it was
/// listening), byte for byte; returns where the run starts. Panics otherwise (a test helper).
#[allow(clippy::panic)]
pub fn assert_run_of(sent: &[Vec<u8>], received: &[Vec<u8>], what: &str) -> usize {
    let Some(first) = received.first() else {
        panic!("{what}: nothing received");
    };
    let Some(start) = sent.iter().position(|s| s == first) else {
        panic!("{what}: first received frame was never sent");
    };
    for (k, r) in received.iter().enumerate() {
        assert_eq!(
            sent.get(start + k),
            Some(r),
            "{what}: frame {k} differs from what was sent"
        );
    }
    start
}

/// A VP8 keyframe's payload header as a client leaves it readable: frame tag with P=0
/// (keyframe) and show_frame=1, the start code, 640x480.
pub fn vp8_keyframe_header() -> [u8; 10] {
    [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
}

/// A VP8 interframe's payload header: frame tag with P=1, show_frame=1.
pub fn vp8_delta_header() -> [u8; 3] {
    [0x11, 0x02, 0x00]
}

struct Task {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    state: Arc<Mutex<ClientState>>,
    commands: mpsc::UnboundedReceiver<Command>,
    audio: Option<Mid>,
    video: Option<Mid>,
    channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    publishing: bool,
    connected: bool,
    options: Options,
    level: i8,
    next_audio: Instant,
    next_video: Instant,
    audio_time: u64,
    video_time: u64,
    keyframe_wanted: bool,
    frames: Box<dyn FrameSource>,
}

impl Task {
    fn close(&self) {
        lock(&self.state).closed = true;
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(e)) => self.handle_event(e),
                    Err(_) => return self.close(),
                }
            };
            if !self.rtc.is_alive() {
                return self.close();
            }
            let sending = self.publishing && self.connected;
            let mut due = timeout;
            if sending && self.audio.is_some() {
                due = due.min(self.next_audio);
            }
            if sending && self.video.is_some() {
                due = due.min(self.next_video);
            }
            let wait = due.saturating_duration_since(Instant::now());
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    let Some(bytes) = buf.get(..n) else { continue };
                    let Ok(contents) = bytes.try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.addr,
                        contents,
                    });
                    if self.rtc.handle_input(input).is_err() {
                        return self.close();
                    }
                }
                () = tokio::time::sleep(wait) => {
                    let now = Instant::now();
                    if sending && self.audio.is_some() && now >= self.next_audio {
                        self.send_audio(now);
                    } else if sending && self.video.is_some() && now >= self.next_video {
                        self.send_video(now);
                    } else if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                        return self.close();
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Publish(on)) => self.publishing = on,
                    Some(Command::AudioLevel(l)) => self.level = l,
                    Some(Command::Send(m)) => self.write(&m),
                    None => return,
                }
            }
        }
    }

    fn pt(&mut self, mid: Mid, codec: Codec) -> Option<Pt> {
        let writer = self.rtc.writer(mid)?;
        writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    }

    fn sent(&self, kind: TrackKind, data: Vec<u8>, keyframe: bool) {
        let mut st = lock(&self.state);
        st.frames_sent += 1;
        if self.options.record {
            st.sent.push(SentFrame {
                kind,
                data,
                keyframe,
            });
        }
    }

    fn send_audio(&mut self, now: Instant) {
        self.next_audio += self.options.audio_interval;
        let Some(mid) = self.audio else { return };
        let Some(pt) = self.pt(mid, Codec::Opus) else {
            return;
        };
        let data = self.frames.audio();
        let time = MediaTime::new(self.audio_time, Frequency::FORTY_EIGHT_KHZ);
        let step = self.options.audio_interval.as_micros() * 48 / 1000;
        self.audio_time += u64::try_from(step).unwrap_or(960);
        let level = self.level;
        let kept = self.options.record.then(|| data.clone());
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        if writer
            .audio_level(level, level > -60)
            .write(pt, now, time, data)
            .is_ok()
        {
            self.sent(TrackKind::Audio, kept.unwrap_or_default(), false);
        }
    }

    fn send_video(&mut self, now: Instant) {
        self.next_video += self.options.video_interval;
        let Some(mid) = self.video else { return };
        let Some(pt) = self.pt(mid, Codec::Vp8) else {
            return;
        };
        let wanted = std::mem::take(&mut self.keyframe_wanted);
        let VideoFrame { data, keyframe } = self.frames.video(wanted);
        let time = MediaTime::new(self.video_time, Frequency::NINETY_KHZ);
        let step = self.options.video_interval.as_micros() * 90 / 1000;
        self.video_time += u64::try_from(step).unwrap_or(3600);
        let kept = self.options.record.then(|| data.clone());
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        if writer.write(pt, now, time, data).is_ok() {
            self.sent(TrackKind::Video, kept.unwrap_or_default(), keyframe);
        }
    }

    fn write(&mut self, message: &ClientMessage) {
        let Ok(text) = serde_json::to_string(message) else {
            return;
        };
        if let Some(mut ch) = self.channel.and_then(|c| self.rtc.channel(c)) {
            let _ = ch.write(false, text.as_bytes());
        }
    }

    fn problem(&self, what: String) {
        lock(&self.state).problems.push(what);
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                // Media starts now, not in a burst to catch up with the set-up time.
                let now = Instant::now();
                self.next_audio = now;
                self.next_video = now;
                lock(&self.state).connected = true;
            }
            Event::ChannelOpen(cid, label) if label == CHANNEL_LABEL => {
                self.channel = Some(cid);
                lock(&self.state).channel_open = true;
            }
            Event::ChannelData(d) => match serde_json::from_slice::<ServerMessage>(&d.data) {
                Ok(message) => self.handle_message(message),
                Err(_) => self.problem(format!(
                    "unreadable SFU message: {:?}",
                    String::from_utf8_lossy(&d.data)
                )),
            },
            Event::MediaData(d) => {
                let mid = d.mid.to_string();
                let mut st = lock(&self.state);
                st.frames_received += 1;
                st.bytes_received += d.data.len() as u64;
                if !self.options.record {
                    return;
                }
                let info = st.tracks.get(&mid).cloned();
                let kind = match &info {
                    Some(info) => info.kind,
                    None if d.mid == self.video.unwrap_or(Mid::from("none")) => TrackKind::Video,
                    None => TrackKind::Audio,
                };
                st.received.push(ReceivedFrame {
                    mid,
                    from: info.map(|i| i.participant),
                    kind,
                    keyframe: d.is_keyframe(),
                    data: d.data.to_vec(),
                });
            }
            Event::KeyframeRequest(_) => {
                self.keyframe_wanted = true;
                lock(&self.state).keyframe_requests += 1;
            }
            Event::Closed => lock(&self.state).closed = true,
            _ => {}
        }
    }

    fn handle_message(&mut self, message: ServerMessage) {
        lock(&self.state).notices.push(message.clone());
        match message {
            ServerMessage::Offer { sdp } => {
                if self.pending.is_some() {
                    return; // the impolite side: our own offer wins
                }
                let answer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| e.to_string())
                    .and_then(|offer| {
                        self.rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .map_err(|e| e.to_string())
                    });
                match answer {
                    Ok(answer) => {
                        lock(&self.state).offers += 1;
                        self.write(&ClientMessage::Answer {
                            sdp: answer.to_sdp_string(),
                        });
                    }
                    Err(e) => self.problem(format!("the SFU's offer: {e}")),
                }
            }
            ServerMessage::Answer { sdp } => {
                if let Some(pending) = self.pending.take() {
                    let accepted = SdpAnswer::from_sdp_string(&sdp)
                        .map_err(|e| e.to_string())
                        .and_then(|answer| {
                            self.rtc
                                .sdp_api()
                                .accept_answer(pending, answer)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = accepted {
                        self.problem(format!("the SFU's answer: {e}"));
                    }
                }
            }
            ServerMessage::Tracks { tracks } => {
                lock(&self.state).tracks = tracks.into_iter().map(|t| (t.mid.clone(), t)).collect();
            }
            ServerMessage::Speaker { participant } => lock(&self.state).speaker = participant,
            ServerMessage::Bye { reason } => lock(&self.state).bye = Some(reason),
            ServerMessage::Paused { .. } | ServerMessage::Error { .. } => {}
        }
    }
}

//! A native WebRTC client for the SFU's end-to-end tests: a str0m `Rtc` on its own UDP socket
//! on 127.0.0.1, driven by a tokio task, that publishes synthetic Opus and VP8 frames whose
//! payload stands in for SFrame ciphertext (random bytes behind a clear VP8 payload header),
//! answers the SFU's renegotiations over the `"nightjar-sfu"` data channel, and records
//! everything it sent and received for the tests to compare.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nightjar_sfu::protocol::{CHANNEL_LABEL, ClientMessage, ServerMessage, TrackInfo};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuError, TrackKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
pub const VIDEO_INTERVAL: Duration = Duration::from_millis(40);

/// A frame this client published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFrame {
    pub kind: TrackKind,
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// A frame this client received from the SFU.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    pub mid: String,
    /// Whose it is, by the last `tracks` notice.
    pub from: Option<ParticipantId>,
    pub kind: TrackKind,
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// What the client saw, shared with the test.
#[derive(Debug, Default)]
pub struct ClientState {
    pub connected: bool,
    pub channel_open: bool,
    pub sent: Vec<SentFrame>,
    pub received: Vec<ReceivedFrame>,
    pub tracks: HashMap<String, TrackInfo>,
    pub keyframe_requests: usize,
    pub offers: usize,
    pub speaker: Option<ParticipantId>,
    pub notices: Vec<ServerMessage>,
    pub bye: Option<String>,
    pub closed: bool,
}

impl ClientState {
    pub fn received_from(&self, who: ParticipantId, kind: TrackKind) -> Vec<Vec<u8>> {
        self.received
            .iter()
            .filter(|f| f.from == Some(who) && f.kind == kind)
            .map(|f| f.data.clone())
            .collect()
    }

    pub fn sent_of(&self, kind: TrackKind) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| f.data.clone())
            .collect()
    }
}

enum Command {
    Publish(bool),
    AudioLevel(i8),
    Send(ClientMessage),
}

/// Options of a test client.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub audio: bool,
    pub video: bool,
    /// The RFC 6464 level sent with each audio frame (-127 silence ... 0 loudest).
    pub audio_level: i8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            audio: true,
            video: true,
            audio_level: -50,
        }
    }
}

/// One test participant.
pub struct Client {
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ClientState>>,
    commands: mpsc::UnboundedSender<Command>,
}

/// A fresh client-side `Rtc` on a new loopback socket, with its offer.
pub struct Offerer {
    pub rtc: Rtc,
    pub socket: std::net::UdpSocket,
    pub pending: SdpPendingOffer,
    pub offer: String,
    pub audio: Option<Mid>,
    pub video: Option<Mid>,
}

pub fn offerer(options: Options, with_channel: bool) -> Offerer {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_opus(true)
        .enable_vp8(true)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
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
    let (offer, pending) = api.apply().unwrap();
    Offerer {
        rtc,
        socket,
        pending,
        offer: offer.to_sdp_string(),
        audio,
        video,
    }
}

impl Client {
    /// Joins `room` as `id` and starts the client's task; it publishes once connected.
    pub async fn join(
        sfu: &Sfu,
        room: RoomId,
        id: ParticipantId,
        options: Options,
    ) -> Result<Client, SfuError> {
        let mut o = offerer(options, true);
        let answer = sfu.join(room, id, o.offer.clone()).await?;
        o.rtc
            .sdp_api()
            .accept_answer(o.pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        o.socket.set_nonblocking(true).unwrap();
        let addr = o.socket.local_addr().unwrap();
        let socket = UdpSocket::from_std(o.socket).unwrap();
        let state = Arc::new(Mutex::new(ClientState::default()));
        let (commands, rx) = mpsc::unbounded_channel();
        let task = Task {
            id,
            rtc: o.rtc,
            socket,
            addr,
            state: state.clone(),
            commands: rx,
            audio: o.audio,
            video: o.video,
            channel: None,
            pending: None,
            publishing: true,
            level: options.audio_level,
            next_audio: Instant::now(),
            next_video: Instant::now(),
            audio_time: 0,
            video_time: 0,
            force_keyframe: true,
            rng: 0x9e37_79b9_7f4a_7c15 ^ id.0.wrapping_mul(0x2545_f491_4f6c_dd1d),
        };
        tokio::spawn(task.run());
        Ok(Client {
            id,
            addr,
            state,
            commands,
        })
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, ClientState> {
        self.state.lock().unwrap()
    }

    pub fn publish(&self, on: bool) {
        let _ = self.commands.send(Command::Publish(on));
    }

    pub fn set_audio_level(&self, level: i8) {
        let _ = self.commands.send(Command::AudioLevel(level));
    }

    pub fn send(&self, message: ClientMessage) {
        let _ = self.commands.send(Command::Send(message));
    }
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

/// `received` is a contiguous run of `sent` (the frames sent while it was listening), byte for
/// byte; returns where the run starts.
pub fn assert_run_of(sent: &[Vec<u8>], received: &[Vec<u8>], what: &str) -> usize {
    assert!(!received.is_empty(), "{what}: nothing received");
    let start = sent
        .iter()
        .position(|s| *s == received[0])
        .unwrap_or_else(|| panic!("{what}: first received frame was never sent"));
    for (k, r) in received.iter().enumerate() {
        assert_eq!(
            sent.get(start + k),
            Some(r),
            "{what}: frame {k} differs from what was sent"
        );
    }
    start
}

pub fn vp8_keyframe_header() -> [u8; 10] {
    // Frame tag with P=0 (keyframe), show_frame=1; start code; 640x480.
    [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]
}

pub fn vp8_delta_header() -> [u8; 3] {
    // Frame tag with P=1 (interframe), show_frame=1.
    [0x11, 0x02, 0x00]
}

struct Task {
    id: ParticipantId,
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
    level: i8,
    next_audio: Instant,
    next_video: Instant,
    audio_time: u64,
    video_time: u64,
    force_keyframe: bool,
    rng: u64,
}

impl Task {
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Random bytes standing in for SFrame ciphertext.
    fn ciphertext(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.random() as u8).collect()
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(e)) => self.handle_event(e),
                    Err(_) => {
                        self.state.lock().unwrap().closed = true;
                        return;
                    }
                }
            };
            if !self.rtc.is_alive() {
                self.state.lock().unwrap().closed = true;
                return;
            }
            let connected = self.state.lock().unwrap().connected;
            let media_due = if self.publishing && connected {
                let mut at = timeout;
                if self.audio.is_some() {
                    at = at.min(self.next_audio);
                }
                if self.video.is_some() {
                    at = at.min(self.next_video);
                }
                at
            } else {
                timeout
            };
            let wait = media_due.saturating_duration_since(Instant::now());
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let Ok((n, source)) = r else { continue };
                    let Ok(contents) = buf[..n].try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.addr,
                        contents,
                    });
                    if self.rtc.handle_input(input).is_err() {
                        self.state.lock().unwrap().closed = true;
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {
                    let now = Instant::now();
                    if self.publishing && connected && self.audio.is_some() && now >= self.next_audio {
                        self.send_audio(now);
                    } else if self.publishing && connected && self.video.is_some() && now >= self.next_video {
                        self.send_video(now);
                    } else if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                        self.state.lock().unwrap().closed = true;
                        return;
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Publish(on)) => self.publishing = on,
                    Some(Command::AudioLevel(l)) => self.level = l,
                    Some(Command::Send(m)) => self.write(&serde_json::to_string(&m).unwrap()),
                    None => return,
                }
            }
        }
    }

    fn pt(&mut self, mid: Mid, codec: Codec) -> Option<str0m::format::PayloadParams> {
        let writer = self.rtc.writer(mid)?;
        writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .copied()
    }

    fn send_audio(&mut self, now: Instant) {
        self.next_audio += AUDIO_INTERVAL;
        let Some(mid) = self.audio else { return };
        let Some(params) = self.pt(mid, Codec::Opus) else {
            return;
        };
        let len = 40 + (self.random() % 80) as usize;
        let data = self.ciphertext(len);
        let time = MediaTime::new(self.audio_time, str0m::media::Frequency::FORTY_EIGHT_KHZ);
        self.audio_time += 960;
        let level = self.level;
        let writer = self
            .rtc
            .writer(mid)
            .unwrap()
            .audio_level(level, level > -60);
        if writer.write(params.pt(), now, time, data.clone()).is_ok() {
            self.state.lock().unwrap().sent.push(SentFrame {
                kind: TrackKind::Audio,
                data,
                keyframe: false,
            });
        }
    }

    fn send_video(&mut self, now: Instant) {
        self.next_video += VIDEO_INTERVAL;
        let Some(mid) = self.video else { return };
        let Some(params) = self.pt(mid, Codec::Vp8) else {
            return;
        };
        let keyframe = std::mem::take(&mut self.force_keyframe);
        let mut data = Vec::new();
        if keyframe {
            data.extend_from_slice(&vp8_keyframe_header());
            let len = 2000 + (self.random() % 2000) as usize;
            data.extend(self.ciphertext(len));
        } else {
            data.extend_from_slice(&vp8_delta_header());
            let len = 200 + (self.random() % 800) as usize;
            data.extend(self.ciphertext(len));
        }
        let time = MediaTime::new(self.video_time, str0m::media::Frequency::NINETY_KHZ);
        self.video_time += 3600;
        let writer = self.rtc.writer(mid).unwrap();
        if writer.write(params.pt(), now, time, data.clone()).is_ok() {
            self.state.lock().unwrap().sent.push(SentFrame {
                kind: TrackKind::Video,
                data,
                keyframe,
            });
        }
    }

    fn write(&mut self, text: &str) {
        if let Some(mut ch) = self.channel.and_then(|c| self.rtc.channel(c)) {
            let _ = ch.write(false, text.as_bytes());
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connected => self.state.lock().unwrap().connected = true,
            Event::ChannelOpen(cid, label) if label == CHANNEL_LABEL => {
                self.channel = Some(cid);
                self.state.lock().unwrap().channel_open = true;
            }
            Event::ChannelData(d) => {
                let Ok(message) = serde_json::from_slice::<ServerMessage>(&d.data) else {
                    panic!(
                        "unreadable SFU message: {:?}",
                        String::from_utf8_lossy(&d.data)
                    );
                };
                self.handle_message(message);
            }
            Event::MediaData(d) => {
                let mid = d.mid.to_string();
                let mut st = self.state.lock().unwrap();
                let info = st.tracks.get(&mid).cloned();
                let kind = info.as_ref().map(|i| i.kind).unwrap_or(
                    if d.mid == self.video.unwrap_or(Mid::from("none")) {
                        TrackKind::Video
                    } else {
                        TrackKind::Audio
                    },
                );
                st.received.push(ReceivedFrame {
                    mid,
                    from: info.map(|i| i.participant),
                    kind,
                    keyframe: d.is_keyframe(),
                    data: d.data.to_vec(),
                });
            }
            Event::KeyframeRequest(_) => {
                self.force_keyframe = true;
                self.state.lock().unwrap().keyframe_requests += 1;
            }
            Event::Closed => self.state.lock().unwrap().closed = true,
            _ => {}
        }
    }

    fn handle_message(&mut self, message: ServerMessage) {
        self.state.lock().unwrap().notices.push(message.clone());
        match message {
            ServerMessage::Offer { sdp } => {
                if self.pending.is_some() {
                    return; // impolite side: our own offer wins
                }
                let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
                let answer = self.rtc.sdp_api().accept_offer(offer).unwrap();
                self.state.lock().unwrap().offers += 1;
                let reply = ClientMessage::Answer {
                    sdp: answer.to_sdp_string(),
                };
                self.write(&serde_json::to_string(&reply).unwrap());
            }
            ServerMessage::Answer { sdp } => {
                if let Some(pending) = self.pending.take() {
                    let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                    self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                }
            }
            ServerMessage::Tracks { tracks } => {
                self.state.lock().unwrap().tracks =
                    tracks.into_iter().map(|t| (t.mid.clone(), t)).collect();
            }
            ServerMessage::Speaker { participant } => {
                self.state.lock().unwrap().speaker = participant;
            }
            ServerMessage::Bye { reason } => self.state.lock().unwrap().bye = Some(reason),
            ServerMessage::Paused { .. } | ServerMessage::Error { .. } => {}
        }
        let _ = self.id;
    }
}

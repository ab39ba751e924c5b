//! A lean load client: a str0m `Rtc` on its own loopback socket that publishes Opus and VP8
//! frames at realistic rates (or only receives), answers the SFU's renegotiations, and counts
//! what it receives. Unlike the test client it records nothing, so thousands of frames a second
//! cost little.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nightjar_sfu::protocol::{CHANNEL_LABEL, ClientMessage, ServerMessage};
use nightjar_sfu::{ParticipantId, RoomId, Sfu};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// What one client publishes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Media {
    pub(crate) video_bps: u64,
    pub(crate) fps: u32,
    pub(crate) audio_pps: u32,
}

/// Counters shared by every client.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) stop: AtomicBool,
}

struct Client {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    audio: Option<Mid>,
    video: Option<Mid>,
    channel: Option<ChannelId>,
    media: Media,
    counters: Arc<Counters>,
    connected: bool,
    next_audio: Instant,
    next_video: Instant,
    audio_ts: u64,
    video_ts: u64,
    frame_no: u64,
    keyframe: bool,
    payload: Vec<u8>,
}

/// Joins `room` and runs the client until `counters.stop`.
pub(crate) async fn run(
    sfu: Sfu,
    room: RoomId,
    id: ParticipantId,
    publish: Option<Media>,
    counters: Arc<Counters>,
) -> Result<(), String> {
    let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    std_socket
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let addr = std_socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .clear_codecs()
        .enable_opus(true)
        .enable_vp8(true)
        .build(Instant::now());
    let candidate = Candidate::host(addr, "udp").map_err(|e| e.to_string())?;
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    let (audio, video) = match publish {
        Some(_) => (
            Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None)),
            Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None)),
        ),
        None => (None, None),
    };
    api.add_channel(CHANNEL_LABEL.to_string());
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let answer = sfu
        .join(room, id, offer.to_sdp_string())
        .await
        .map_err(|e| e.to_string())?;
    let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    let socket = UdpSocket::from_std(std_socket).map_err(|e| e.to_string())?;
    let now = Instant::now();
    let media = publish.unwrap_or(Media {
        video_bps: 0,
        fps: 1,
        audio_pps: 1,
    });
    let mut client = Client {
        rtc,
        socket,
        addr,
        audio,
        video,
        channel: None,
        media,
        counters,
        connected: false,
        next_audio: now,
        next_video: now,
        audio_ts: 0,
        video_ts: 0,
        frame_no: 0,
        keyframe: true,
        payload: (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    };
    client.run().await
}

impl Client {
    async fn run(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; 2048];
        while !self.counters.stop.load(Ordering::Relaxed) {
            let timeout = loop {
                match self.rtc.poll_output().map_err(|e| e.to_string())? {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Output::Event(e) => self.handle_event(e),
                }
            };
            let publishing = self.connected && self.video.is_some();
            let wake = if publishing {
                timeout.min(self.next_audio).min(self.next_video)
            } else {
                timeout
            };
            let wait = wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
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
                    self.rtc.handle_input(input).map_err(|e| e.to_string())?;
                }
                () = tokio::time::sleep(wait) => {
                    let now = Instant::now();
                    if publishing && now >= self.next_audio {
                        self.send_audio(now);
                    } else if publishing && now >= self.next_video {
                        self.send_video(now);
                    } else {
                        self.rtc.handle_input(Input::Timeout(now)).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn pt(&mut self, mid: Mid, codec: Codec) -> Option<str0m::media::Pt> {
        let writer = self.rtc.writer(mid)?;
        writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    }

    fn send_audio(&mut self, now: Instant) {
        self.next_audio += Duration::from_secs(1) / self.media.audio_pps.max(1);
        let Some(mid) = self.audio else { return };
        let Some(pt) = self.pt(mid, Codec::Opus) else {
            return;
        };
        let start = (self.audio_ts % 1000) as usize;
        let data = self
            .payload
            .get(start..start + 80)
            .unwrap_or_default()
            .to_vec();
        let time = MediaTime::new(self.audio_ts, Frequency::FORTY_EIGHT_KHZ);
        self.audio_ts += 960;
        if let Some(writer) = self.rtc.writer(mid)
            && writer
                .audio_level(-40, true)
                .write(pt, now, time, data)
                .is_ok()
        {
            self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send_video(&mut self, now: Instant) {
        let fps = u64::from(self.media.fps.max(1));
        self.next_video += Duration::from_secs(1) / self.media.fps.max(1);
        let Some(mid) = self.video else { return };
        let Some(pt) = self.pt(mid, Codec::Vp8) else {
            return;
        };
        // A keyframe every two seconds (or on request) at four times the average size.
        let average = (self.media.video_bps / 8 / fps) as usize;
        let keyframe = std::mem::take(&mut self.keyframe) || self.frame_no.is_multiple_of(2 * fps);
        self.frame_no += 1;
        let len = if keyframe {
            average * 4
        } else {
            average * (2 * fps as usize) / (2 * fps as usize + 3)
        };
        let start = (self.frame_no % 1000) as usize;
        let mut data = Vec::with_capacity(len + 10);
        if keyframe {
            data.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]);
        } else {
            data.extend_from_slice(&[0x11, 0x02, 0x00]);
        }
        data.extend_from_slice(self.payload.get(start..start + len).unwrap_or_default());
        let time = MediaTime::new(self.video_ts, Frequency::NINETY_KHZ);
        self.video_ts += 90_000 / fps;
        if let Some(writer) = self.rtc.writer(mid)
            && writer.write(pt, now, time, data).is_ok()
        {
            self.counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.connected = true;
                let now = Instant::now();
                self.next_audio = now;
                self.next_video = now;
                self.counters.connected.fetch_add(1, Ordering::Relaxed);
            }
            Event::ChannelOpen(cid, label) if label == CHANNEL_LABEL => self.channel = Some(cid),
            Event::ChannelData(d) => {
                if let Ok(ServerMessage::Offer { sdp }) = serde_json::from_slice(&d.data) {
                    let Ok(offer) = SdpOffer::from_sdp_string(&sdp) else {
                        return;
                    };
                    let Ok(answer) = self.rtc.sdp_api().accept_offer(offer) else {
                        return;
                    };
                    let reply = ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    };
                    if let (Some(cid), Ok(text)) = (self.channel, serde_json::to_string(&reply))
                        && let Some(mut ch) = self.rtc.channel(cid)
                    {
                        let _ = ch.write(false, text.as_bytes());
                    }
                }
            }
            Event::MediaData(d) => {
                self.counters
                    .frames_received
                    .fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_received
                    .fetch_add(d.data.len() as u64, Ordering::Relaxed);
            }
            Event::KeyframeRequest(_) => self.keyframe = true,
            _ => {}
        }
    }
}

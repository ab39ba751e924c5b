//! Nightjar's selective forwarding unit (SFU) for group calls, on [str0m] (sans-IO WebRTC).
//!
//! Clients encrypt media end to end with SFrame (RFC 9605) *inside* each encoded frame and send
//! it over DTLS-SRTP. The SFU terminates DTLS-SRTP, reads the few clear bytes a forwarding
//! decision needs (the VP8 payload header's keyframe bit — clients leave its 10 bytes on
//! keyframes and 3 on delta frames in the clear —, and the RFC 6464 audio-level header
//! extension), and forwards each frame to the other participants unchanged. It holds no SFrame
//! key and never could decrypt the media.
//!
//! # Shape
//! - [`SfuCore`] is the sans-IO state machine: rooms, participants, one str0m `Rtc` each.
//!   Inputs are [`SfuCore::handle_input`]`(now, datagram | timeout)` and the calls `join`,
//!   `leave`, `kick`; outputs are polled with [`SfuCore::poll_output`] (datagrams, events,
//!   tapped frames); [`SfuCore::timeout`] says when to come back.
//! - [`Sfu`] is the thin tokio driver and the handle the HTTP server uses (`Clone + Send +
//!   Sync`): one UDP socket for every participant, demultiplexed with `Rtc::accepts` (and a
//!   source-address cache), on a thread of its own.
//! - Each `Rtc` is ICE-lite with one host candidate (the socket's address, or `public_addr`),
//!   and negotiates Opus and VP8 only, with bandwidth estimation on.
//!
//! # Joining, and the data-channel protocol
//! The HTTP layer authenticates a device, picks its [`ParticipantId`], and calls
//! [`Sfu::join`]`(room, participant, offer_sdp)` with the client's SDP offer; the answer goes
//! back to the client. The offer carries the client's own tracks (at most one audio and one
//! video, `sendonly` or `sendrecv`; more are ignored) and **must** open a data channel labelled
//! `"nightjar-sfu"`; everything after the join goes over that channel as JSON text messages
//! (types in [`protocol`]):
//!
//! | direction | message | meaning |
//! | --- | --- | --- |
//! | SFU → client | `{"type":"tracks","tracks":[{"mid":"..","participant":"..","kind":"audio"}]}` | every track the SFU sends this client (state, not a delta); sent before each `offer`, so the client can map `mid` → participant |
//! | SFU → client | `{"type":"offer","sdp":".."}` | others' tracks were added or stopped (someone joined, left, started or stopped publishing) |
//! | client → SFU | `{"type":"answer","sdp":".."}` | the answer to it |
//! | client → SFU | `{"type":"offer","sdp":".."}` | the client changes its own tracks; the SFU replies `{"type":"answer","sdp":".."}` |
//! | client → SFU | `{"type":"subscribe","participants":["..",".."]}` | whose **video** to receive (`null` or absent: everyone's, the default); audio always flows |
//! | SFU → client | `{"type":"speaker","participant":".."}` | the room's active speaker changed (`null`: nobody) |
//! | SFU → client | `{"type":"paused","video":true}` | video to this client paused (or resumed, `false`) for lack of bandwidth |
//! | SFU → client | `{"type":"error","message":".."}` | a client message was refused; nothing changed |
//! | SFU → client | `{"type":"bye","reason":"kicked"}` | the SFU is closing the connection (`kicked`, `closed`) |
//!
//! Participant ids are JSON strings of decimal digits. Each forwarded track's `msid` stream id
//! is also the publisher's participant id, so a browser groups a participant's audio and video
//! into one `MediaStream`. Renegotiation follows "perfect negotiation" with the SFU as the
//! polite side: a client that has its own offer outstanding ignores an SFU offer (the SFU
//! abandons it when the client's offer arrives, answers, and offers again).
//!
//! # Stream selection, keyframes, congestion
//! - **Subscription**: a client picks whose video it receives with `subscribe`.
//! - **Active speaker**: the loudest recent speaker by the audio-level extension (smoothed,
//!   with hysteresis) is announced with `speaker`, reported by [`Sfu::active_speaker`] and
//!   [`SfuEvent::ActiveSpeaker`]; with [`SfuConfig::last_n`] each client receives only the
//!   videos of the N most recent speakers among those it subscribed to.
//! - **Keyframes**: a video starts towards a receiver only at a keyframe. When a receiver starts
//!   receiving a video (its track opened, it subscribed, the speaker changed its selection, its
//!   video resumed) the SFU sends the publisher a PLI (FIR if PLI was not negotiated), and it
//!   forwards receivers' PLI/FIR upstream; requests to one publisher are merged to at most one
//!   per [`SfuConfig::keyframe_request_interval`].
//! - **Congestion**: transport-wide congestion control feedback (TWCC) is sent to publishers,
//!   and str0m's bandwidth estimator runs towards every receiver; below
//!   [`SfuConfig::video_pause_below_bps`] a receiver's video is paused (audio always flows) and
//!   resumes, from a keyframe, above twice that.
//!
//! # Leaving
//! [`Sfu::leave`] closes the connection (DTLS close_notify) and [`Sfu::kick`] sends
//! `{"type":"bye","reason":"kicked"}` first; both take effect at once: the participant's tracks
//! are stopped at everyone else by renegotiation, nothing more is sent to it, and its datagrams
//! are dropped. A participant that disconnects (ICE consent lost, DTLS closed, data channel
//! closed) or whose connection does not come up within [`SfuConfig::connect_timeout`] is removed
//! the same way.
//!
//! # The tap
//! [`Sfu::tap`]`(room)` yields a [`TappedFrame`] for every frame published in the room, exactly
//! as the SFU received and forwards it, so an end-to-end test can check the SFU only ever sees
//! SFrame ciphertext. It is always compiled in; while nobody holds a tap of a room the only
//! cost is one `bool` test per frame (no copy).
//!
//! # Crypto backend
//! str0m's pure-Rust backend (`default-features = false, features = ["rust-crypto"]`): DTLS 1.2
//! by `dimpl` with RustCrypto primitives (ECDHE P-256, ECDSA P-256 certificate,
//! AES-128-GCM), and SRTP with `AEAD_AES_128_GCM` or `AES_CM_128_HMAC_SHA1_80`. That is the set
//! Chromium offers (its DTLS certificate is ECDSA P-256 and it proposes both SRTP profiles), so
//! it interoperates, and the build compiles no C (aws-lc-rs would compile AWS-LC; vendored
//! OpenSSL is not allowed here). One self-signed certificate, generated at start, serves every
//! connection.
//!
//! # Limits
//! [`SfuConfig::max_rooms`] and [`SfuConfig::max_participants_per_room`] (16 by default); a join
//! past either fails with an error and changes nothing, as does an offer that is not valid SDP
//! or has no data channel. Datagrams from addresses no participant owns are dropped and
//! counted ([`SfuStats::datagrams_dropped`]).
//!
//! # Test client
//! With the `test-client` feature, the module `test_client` is a native WebRTC client of the
//! SFU (str0m on a loopback socket) that publishes frames from a source of the caller's
//! choosing and records what it receives: the SFU's own tests, the Nightjar server's call
//! tests and the `sfu-load` tool use it.
//!
//! [str0m]: https://docs.rs/str0m

mod config;
mod core;
mod driver;
mod engine;
mod error;
mod ids;
mod output;
mod peer;
pub mod protocol;
mod room;
mod speaker;
mod stats;
#[cfg(feature = "test-client")]
pub mod test_client;
mod tracks;

pub use crate::config::SfuConfig;
pub use crate::core::{SfuCore, SfuInput};
pub use crate::driver::Sfu;
pub use crate::error::SfuError;
pub use crate::ids::{IdParseError, ParticipantId, RoomId, TrackKind};
pub use crate::output::{LeaveReason, SfuEvent, SfuOutput, TappedFrame, Transmit};
pub use crate::stats::SfuStats;

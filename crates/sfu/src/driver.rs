//! The thin tokio driver: one UDP socket, one thread, the [`SfuCore`] behind a mutex, and the
//! cloneable [`Sfu`] handle the HTTP server calls. The driver only moves datagrams and time into
//! the core and outputs out of it; every decision is the core's.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{debug, warn};

use crate::config::SfuConfig;
use crate::core::{SfuCore, SfuInput};
use crate::error::SfuError;
use crate::ids::{ParticipantId, RoomId};
use crate::output::{SfuEvent, SfuOutput, TappedFrame};
use crate::stats::SfuStats;

/// Frames a tap holds before it drops new ones (a slow tap never slows forwarding).
const TAP_CAPACITY: usize = 16_384;
/// Datagrams read in one go, under one lock of the core.
const RECV_BATCH: usize = 64;
/// Largest datagram read; WebRTC stays under the ~1200-byte MTU it negotiates.
const RECV_BUFFER: usize = 2048;

/// Handle to a running SFU: cheap to clone, `Send + Sync`. The SFU stops when the last handle
/// is dropped.
#[derive(Clone)]
pub struct Sfu {
    shared: Arc<Shared>,
    _lifetime: Arc<Lifetime>,
}

struct Shared {
    core: Mutex<SfuCore>,
    wake: Notify,
    stopped: AtomicBool,
    taps: Mutex<HashMap<RoomId, Vec<mpsc::Sender<TappedFrame>>>>,
    events: broadcast::Sender<SfuEvent>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Stops the driver when the last [`Sfu`] handle goes.
struct Lifetime(Arc<Shared>);

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the core half-updated in a way that matters
    // more than stopping every call would; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sfu {
    /// Binds the SFU's UDP socket on `udp` and starts its driver thread, with the default
    /// configuration. `public_addr` is the address clients reach (advertised as the ICE host
    /// candidate); without it the socket's own address is advertised, which then must not be
    /// unspecified (`0.0.0.0`).
    pub fn bind(udp: SocketAddr, public_addr: Option<SocketAddr>) -> io::Result<Sfu> {
        Sfu::bind_with_config(udp, public_addr, SfuConfig::default())
    }

    /// Like [`Sfu::bind`], with a configuration.
    pub fn bind_with_config(
        udp: SocketAddr,
        public_addr: Option<SocketAddr>,
        config: SfuConfig,
    ) -> io::Result<Sfu> {
        let socket = std::net::UdpSocket::bind(udp)?;
        socket.set_nonblocking(true)?;
        let local_addr = socket.local_addr()?;
        let advertised = public_addr.unwrap_or(local_addr);
        if advertised.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the SFU socket is bound to an unspecified address: give the public address",
            ));
        }
        let core = SfuCore::new(config, advertised).map_err(io::Error::other)?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            wake: Notify::new(),
            stopped: AtomicBool::new(false),
            taps: Mutex::new(HashMap::new()),
            events,
            local_addr,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let driven = shared.clone();
        std::thread::Builder::new()
            .name("nightjar-sfu".into())
            .spawn(move || runtime.block_on(drive(driven, socket)))?;
        Ok(Sfu {
            _lifetime: Arc::new(Lifetime(shared.clone())),
            shared,
        })
    }

    /// The address the UDP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address advertised to clients as the ICE host candidate.
    pub fn advertised_addr(&self) -> SocketAddr {
        lock(&self.shared.core).address()
    }

    fn with_core<T>(
        &self,
        f: impl FnOnce(&mut SfuCore, Instant) -> Result<T, SfuError>,
    ) -> Result<T, SfuError> {
        if self.shared.stopped.load(Ordering::SeqCst) {
            return Err(SfuError::Stopped);
        }
        let result = f(&mut lock(&self.shared.core), Instant::now());
        // The call may have produced datagrams (DTLS close, renegotiation): send them now.
        self.shared.wake.notify_one();
        result
    }

    /// Admits `participant` (already authenticated by the caller) to `room` with its SDP offer,
    /// which must open the `"nightjar-sfu"` data channel; returns the SDP answer.
    pub async fn join(
        &self,
        room: RoomId,
        participant: ParticipantId,
        offer_sdp: String,
    ) -> Result<String, SfuError> {
        self.with_core(|core, now| core.join(now, room, participant, &offer_sdp))
    }

    /// Removes `participant` from `room`, closing its connection politely.
    pub fn leave(&self, room: RoomId, participant: ParticipantId) -> Result<(), SfuError> {
        self.with_core(|core, now| core.leave(now, room, participant))
    }

    /// Cuts `participant` off at once: it receives nothing more from the SFU.
    pub fn kick(&self, room: RoomId, participant: ParticipantId) -> Result<(), SfuError> {
        self.with_core(|core, now| core.kick(now, room, participant))
    }

    /// Opens `room` ahead of joins (needed when `open_rooms_on_join` is off).
    pub fn open_room(&self, room: RoomId) -> Result<(), SfuError> {
        self.with_core(|core, _| core.open_room(room))
    }

    /// Closes `room`, disconnecting everyone in it.
    pub fn close_room(&self, room: RoomId) -> Result<(), SfuError> {
        self.with_core(|core, now| core.close_room(now, room))
    }

    /// The room's active speaker, by audio level.
    pub fn active_speaker(&self, room: RoomId) -> Option<ParticipantId> {
        lock(&self.shared.core).active_speaker(room)
    }

    /// The participants of `room`, in joining order.
    pub fn participants(&self, room: RoomId) -> Vec<ParticipantId> {
        lock(&self.shared.core).participants(room)
    }

    /// Load and traffic figures, for metrics and benchmarks.
    pub fn stats(&self) -> SfuStats {
        lock(&self.shared.core).stats()
    }

    /// Membership and speaker events from now on.
    pub fn events(&self) -> broadcast::Receiver<SfuEvent> {
        self.shared.events.subscribe()
    }

    /// A copy of every frame published in `room` from now on, exactly as the SFU forwards it
    /// (for tests). Costs nothing while no tap of the room is held; a tap that falls more than
    /// 16k frames behind loses frames rather than slowing the SFU.
    pub fn tap(&self, room: RoomId) -> mpsc::Receiver<TappedFrame> {
        let (tx, rx) = mpsc::channel(TAP_CAPACITY);
        lock(&self.shared.taps).entry(room).or_default().push(tx);
        lock(&self.shared.core).set_tapped(room, true);
        rx
    }
}

async fn drive(shared: Arc<Shared>, socket: std::net::UdpSocket) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => s,
        Err(e) => {
            warn!("SFU socket unusable: {e}");
            shared.stopped.store(true, Ordering::SeqCst);
            return;
        }
    };
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut batch = Vec::new();
    while !shared.stopped.load(Ordering::SeqCst) {
        let deadline = lock(&shared.core).timeout();
        let wait = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let mut core = lock(&shared.core);
                match received {
                    Ok((n, source)) => {
                        feed(&mut core, source, buf.get(..n).unwrap_or_default());
                        for _ in 1..RECV_BATCH {
                            match socket.try_recv_from(&mut buf) {
                                Ok((n, source)) => {
                                    feed(&mut core, source, buf.get(..n).unwrap_or_default())
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(e) => debug!("SFU socket receive: {e}"),
                }
                collect(&mut core, &mut batch);
            }
            () = tokio::time::sleep(wait) => {
                let mut core = lock(&shared.core);
                let _ = core.handle_input(Instant::now(), SfuInput::Timeout);
                collect(&mut core, &mut batch);
            }
            () = shared.wake.notified() => {
                collect(&mut lock(&shared.core), &mut batch);
            }
        }
        flush(&shared, &socket, &mut batch).await;
    }
}

fn feed(core: &mut SfuCore, source: SocketAddr, contents: &[u8]) {
    // Logged without the source address: the log names no client (docs/privacy.md).
    match core.handle_input(Instant::now(), SfuInput::Datagram { source, contents }) {
        Ok(()) => {}
        Err(SfuError::UnknownSource(_)) => debug!("datagram from an unknown address dropped"),
        Err(SfuError::MalformedDatagram(_)) => debug!("malformed datagram dropped"),
        Err(_) => debug!("datagram dropped"),
    }
}

fn collect(core: &mut SfuCore, batch: &mut Vec<SfuOutput>) {
    while let Some(output) = core.poll_output() {
        batch.push(output);
    }
}

async fn flush(shared: &Shared, socket: &UdpSocket, batch: &mut Vec<SfuOutput>) {
    for output in batch.drain(..) {
        match output {
            SfuOutput::Transmit(t) => match socket.try_send_to(&t.contents, t.destination) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                        debug!("SFU socket send: {e}");
                    }
                }
                Err(e) => debug!("SFU socket send: {e}"),
            },
            SfuOutput::Event(event) => {
                // No subscriber is fine.
                let _ = shared.events.send(event);
            }
            SfuOutput::Tap { room, frame } => {
                let mut taps = lock(&shared.taps);
                let Some(senders) = taps.get_mut(&room) else {
                    continue;
                };
                senders.retain(|tx| {
                    !matches!(
                        tx.try_send(frame.clone()),
                        Err(mpsc::error::TrySendError::Closed(_))
                    )
                });
                if senders.is_empty() {
                    taps.remove(&room);
                    lock(&shared.core).set_tapped(room, false);
                }
            }
        }
    }
}

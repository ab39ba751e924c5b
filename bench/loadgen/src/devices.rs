//! The receiving side: one real authenticated WebSocket (`/v1/stream`) per device.
//!
//! Each device binds its socket to one of several loopback source addresses (127.0.0.2, …)
//! before connecting, so more than 64k connections can reach one server port (a source
//! address has at most ~28k ephemeral ports). It reads every envelope, looks up the stamp,
//! and acknowledges in batches like a client would. A dropped connection is reopened (to the
//! next server when there are several); what the server re-sends then is counted as
//! redelivered, never as received twice.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use nightjar_api::{ClientFrame, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};

use crate::error::{Error, Result};
use crate::payload::Stamp;
use crate::track::{Delivery, Tracker};

/// Most ids acknowledged in one frame (the server takes up to 1000).
const ACK_BATCH: usize = 256;

type Ws = WebSocketStream<TcpStream>;

/// One server, as the devices reach it.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    /// `ws://host:port/v1/stream`.
    ws_url: String,
    /// The resolved address.
    addr: SocketAddr,
}

impl Endpoint {
    /// Resolves the server at `base` (`http://host:port`).
    pub(crate) async fn resolve(base: &str) -> Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| Error::other(format!("{base}: only http:// servers are supported")))?
            .trim_end_matches('/');
        let addr = tokio::net::lookup_host(authority)
            .await?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| Error::other(format!("{base}: no IPv4 address")))?;
        Ok(Self {
            ws_url: format!("ws://{authority}/v1/stream"),
            addr,
        })
    }

    /// Whether source addresses from 127.0.0.0/8 can be used for it.
    pub(crate) fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// The loopback source address number `i` of `count`: 127.0.0.2, 127.0.0.3, …
pub(crate) fn source_address(i: usize, count: usize) -> Option<IpAddr> {
    if count == 0 {
        return None;
    }
    let n = u32::try_from(i % count).ok()? + 2;
    Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n)))
}

/// Settings shared by every device.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Sends are sealed: a sender's own device gets its message back, and ignores it.
    pub(crate) sealed: bool,
    /// Every server; device `i` starts on server `i % len`.
    pub(crate) endpoints: Vec<Endpoint>,
    /// Loopback source addresses to spread sockets over (0 = let the kernel pick).
    pub(crate) source_addrs: usize,
    /// How long a received envelope may wait for its acknowledgement; `None`: never
    /// acknowledge (queues keep everything; measures the server without ack writes).
    pub(crate) ack_delay: Option<Duration>,
    /// The run's bookkeeping.
    pub(crate) tracker: Arc<Tracker>,
    /// Devices whose first connection has sent `drained`.
    pub(crate) ready: AtomicUsize,
    /// Devices connected right now.
    pub(crate) connected: AtomicUsize,
    /// Devices that gave up (their token was refused).
    pub(crate) failed: AtomicUsize,
    /// Limits connection attempts in flight.
    pub(crate) connecting: tokio::sync::Semaphore,
    /// Becomes true when the run ends.
    pub(crate) stop: watch::Receiver<bool>,
}

/// One device to connect.
#[derive(Clone, Debug)]
pub(crate) struct DeviceSpec {
    /// Its index among the run's devices (picks server and source address).
    pub(crate) index: usize,
    /// Session token.
    pub(crate) token: String,
    /// The conversation it belongs to (index in the run's list).
    pub(crate) conversation: usize,
    /// Its member position in that conversation.
    pub(crate) member: usize,
}

async fn open(
    shared: &Shared,
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    token: &str,
) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source.filter(|_| endpoint.is_loopback()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let _permit = shared.connecting.acquire().await;
    let stream = socket.connect(endpoint.addr).await?;
    stream.set_nodelay(true)?;
    let mut request = endpoint.ws_url.as_str().into_client_request()?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::other("token is not a valid header value"))?;
    request.headers_mut().insert("authorization", value);
    // Small buffers: the generator holds as many sockets as the server does.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// Whether a connect error means the token itself is refused (retrying cannot help).
fn refused_token(e: &Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    matches!(e, Error::WebSocket(WsError::Http(r)) if matches!(r.status().as_u16(), 401 | 403))
}

fn error_label(e: &Error) -> String {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        Error::WebSocket(WsError::Http(r)) => format!("connect_http_{}", r.status().as_u16()),
        Error::Io(io) => format!("connect_io_{:?}", io.kind()).to_lowercase(),
        Error::WebSocket(_) => "connect_websocket".into(),
        _ => "connect_other".into(),
    }
}

/// Runs one device until the run stops: connect, receive, acknowledge, reconnect.
pub(crate) async fn run(spec: DeviceSpec, shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut server = spec.index % shared.endpoints.len();
    let source = source_address(spec.index, shared.source_addrs);
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        let endpoint = &shared.endpoints[server];
        let ws = tokio::select! {
            ws = open(&shared, endpoint, source, &spec.token) => ws,
            _ = stop.changed() => return,
        };
        let ws = match ws {
            Ok(ws) => ws,
            Err(e) => {
                shared.tracker.error(&error_label(&e));
                if refused_token(&e) {
                    shared.failed.fetch_add(1, Relaxed);
                    return;
                }
                server = (server + 1) % shared.endpoints.len();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if !first {
            shared.tracker.counters.reconnects.fetch_add(1, Relaxed);
        }
        shared.connected.fetch_add(1, Relaxed);
        let ended = receive(&spec, &shared, ws, &mut seen, &mut first, &mut stop).await;
        shared.connected.fetch_sub(1, Relaxed);
        if ended == Ended::Stopped {
            return;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The run is over.
    Stopped,
    /// The connection broke or the server closed it.
    Dropped,
}

async fn flush(ws: &mut Ws, pending: &mut Vec<u64>, shared: &Shared) -> bool {
    if pending.is_empty() {
        return true;
    }
    let ids = std::mem::take(pending);
    let Ok(text) = serde_json::to_string(&ClientFrame::Ack { ids }) else {
        return false;
    };
    shared.tracker.counters.acks_sent.fetch_add(1, Relaxed);
    ws.send(Message::Text(text.into())).await.is_ok()
}

async fn receive(
    spec: &DeviceSpec,
    shared: &Shared,
    mut ws: Ws,
    seen: &mut HashSet<u64>,
    first: &mut bool,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let tracker = &shared.tracker;
    let mut pending: Vec<u64> = Vec::new();
    let mut deadline = Instant::now();
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            () = tokio::time::sleep_until(deadline), if !pending.is_empty() => {
                if !flush(&mut ws, &mut pending, shared).await {
                    return Ended::Dropped;
                }
                continue;
            }
            _ = stop.changed() => {
                let _ = flush(&mut ws, &mut pending, shared).await;
                let _ = ws.close(None).await;
                return Ended::Stopped;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ended::Dropped,
            Some(Ok(_)) => continue,
        };
        match serde_json::from_str::<ServerFrame>(text.as_str()) {
            Ok(ServerFrame::Envelope { envelope }) => {
                if seen.insert(envelope.id) {
                    match Stamp::read(&envelope.payload.0) {
                        Some(stamp)
                            if stamp.run == tracker.run
                                && shared.sealed
                                && tracker.route(stamp.seq) == (spec.conversation, spec.member) =>
                        {
                            // The sender's own copy of a sealed message.
                            tracker.counters.echoes.fetch_add(1, Relaxed);
                        }
                        Some(stamp) if stamp.run == tracker.run => {
                            if tracker.delivered(stamp.seq, spec.conversation, spec.member)
                                == Delivery::Duplicate
                            {
                                tracker.error("duplicate_delivery");
                            }
                        }
                        _ => {
                            tracker.counters.foreign.fetch_add(1, Relaxed);
                        }
                    }
                } else {
                    tracker.counters.redelivered.fetch_add(1, Relaxed);
                }
                let Some(ack_delay) = shared.ack_delay else {
                    continue;
                };
                if pending.is_empty() {
                    deadline = Instant::now() + ack_delay;
                }
                pending.push(envelope.id);
                if pending.len() >= ACK_BATCH && !flush(&mut ws, &mut pending, shared).await {
                    return Ended::Dropped;
                }
            }
            Ok(ServerFrame::Drained) => {
                if std::mem::take(first) {
                    shared.ready.fetch_add(1, Relaxed);
                }
            }
            Ok(ServerFrame::Error { error }) => {
                tracker.counters.stream_errors.fetch_add(1, Relaxed);
                tracker.error(&format!("stream_{:?}", error.code).to_lowercase());
            }
            Err(_) => tracker.error("stream_unparsable_frame"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn source_addresses_cycle_from_127_0_0_2() {
        assert_eq!(source_address(0, 0), None);
        assert_eq!(source_address(0, 4), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(source_address(5, 4), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(source_address(300, 300), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(
            source_address(299, 300),
            Some("127.0.1.45".parse().unwrap())
        );
    }
}

//! Prometheus metrics and the request middleware that records them and logs one line per
//! request. Logs and labels name the route template (`/v1/accounts/{username}`), never the
//! actual path or query string, so no username ever reaches them.
//!
//! `GET /metrics` is served by [`router`] on a listener of its own (`ServerConfig::
//! metrics_listen`, loopback by default), never on the public one: request counts by route
//! and status, queue depth and connection counts tell an outsider how the server is used.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// Labels of one kind of HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// Labels for counting messages by MLS kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    kind: &'static str,
}

/// Every metric the server exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    messages_accepted: Family<KindLabels, Counter>,
    /// Envelopes handed to devices (pushed on a stream or fetched).
    pub(crate) envelopes_delivered: Counter,
    /// Envelopes acknowledged (and deleted) by devices.
    pub(crate) envelopes_acked: Counter,
    /// Open WebSocket streams.
    pub(crate) websockets: Gauge,
    /// Envelopes waiting in all queues.
    pub(crate) queue_depth: Gauge,
    /// Sends stored per transaction (group commit).
    pub(crate) send_batch_size: Histogram,
    /// Blobs created (attachments).
    pub(crate) blobs_created: Counter,
    /// Blobs deleted because their lifetime (or their upload's) ended.
    pub(crate) blobs_expired: Counter,
    /// Blobs deleted because every recipient device confirmed the download.
    pub(crate) blobs_fetched: Counter,
    /// Blob bytes stored (part uploads, a part sent again counted again).
    pub(crate) blob_bytes_uploaded: Counter,
    /// Blob bytes sent to devices.
    pub(crate) blob_bytes_downloaded: Counter,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("nightjar");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let messages_accepted = Family::<KindLabels, Counter>::default();
        let envelopes_delivered = Counter::default();
        let envelopes_acked = Counter::default();
        let websockets = Gauge::default();
        let queue_depth = Gauge::default();
        // 1 .. 512 sends.
        let send_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let blobs_created = Counter::default();
        let blobs_expired = Counter::default();
        let blobs_fetched = Counter::default();
        let blob_bytes_uploaded = Counter::default();
        let blob_bytes_downloaded = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method, route and status",
            latency.clone(),
        );
        registry.register(
            "messages_accepted",
            "Messages accepted for delivery, by kind",
            messages_accepted.clone(),
        );
        registry.register(
            "envelopes_delivered",
            "Envelopes handed to devices (pushed or fetched)",
            envelopes_delivered.clone(),
        );
        registry.register(
            "envelopes_acked",
            "Envelopes acknowledged and deleted",
            envelopes_acked.clone(),
        );
        registry.register(
            "websocket_connections",
            "Open WebSocket streams",
            websockets.clone(),
        );
        registry.register(
            "queue_depth",
            "Envelopes waiting in device queues",
            queue_depth.clone(),
        );
        registry.register(
            "send_batch_size",
            "Sends stored per database transaction (group commit)",
            send_batch_size.clone(),
        );
        registry.register(
            "blobs_created",
            "Blobs (attachments) created",
            blobs_created.clone(),
        );
        registry.register(
            "blobs_expired",
            "Blobs deleted when their lifetime, or their upload's, ended",
            blobs_expired.clone(),
        );
        registry.register(
            "blobs_fetched",
            "Blobs deleted once every recipient device confirmed the download",
            blobs_fetched.clone(),
        );
        registry.register(
            "blob_bytes_uploaded",
            "Blob bytes stored by part uploads",
            blob_bytes_uploaded.clone(),
        );
        registry.register(
            "blob_bytes_downloaded",
            "Blob bytes sent to devices",
            blob_bytes_downloaded.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            messages_accepted,
            envelopes_delivered,
            envelopes_acked,
            websockets,
            queue_depth,
            send_batch_size,
            blobs_created,
            blobs_expired,
            blobs_fetched,
            blob_bytes_uploaded,
            blob_bytes_downloaded,
        }
    }

    /// Counts an accepted message of `kind` (`application`, `commit`, `proposal`, `welcome`).
    pub(crate) fn accepted(&self, kind: &'static str) {
        self.messages_accepted
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Adds `n` to a gauge (which may go negative briefly; the sweep resets it).
    pub(crate) fn add(gauge: &Gauge, n: u64) {
        gauge.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Subtracts `n` from a gauge.
    pub(crate) fn sub(gauge: &Gauge, n: u64) {
        gauge.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The metrics listener's application: `GET /metrics` in the OpenMetrics text format, and
/// nothing else.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(state)
}

async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Records count and latency of every request and logs it (method, route, status, time).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Only known methods become label values, so junk methods cannot grow the label set.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let labels = RequestLabels {
        method,
        route,
        status,
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    // Debug only: at the default level the log keeps no timeline of requests (the counts and
    // latencies are in the metrics). The route is the template, never the path: no username.
    tracing::debug!(
        method = labels.method,
        route = %labels.route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.accepted("commit");
        Metrics::add(&m.queue_depth, 3);
        let text = m.render();
        for name in [
            "nightjar_messages_accepted_total{kind=\"commit\"} 1",
            "nightjar_queue_depth 3",
            "nightjar_websocket_connections",
            "nightjar_blob_bytes_uploaded_total 0",
            "nightjar_blobs_expired_total 0",
        ] {
            assert!(text.contains(name), "{name} missing in {text}");
        }
    }
}

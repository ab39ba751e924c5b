//! The run's summary: human-readable lines, and one JSON object for scripts (`--json`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::histogram::Histogram;
use crate::load::Schedule;
use crate::setup::SetupReport;
use crate::track::Audit;

/// Quantiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Latency {
    /// Values counted.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_us: u64,
    /// 99th percentile.
    pub(crate) p99_us: u64,
    /// 99.9th percentile.
    pub(crate) p999_us: u64,
    /// Largest.
    pub(crate) max_us: u64,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        Self {
            count: h.count(),
            p50_us: h.quantile(0.50),
            p99_us: h.quantile(0.99),
            p999_us: h.quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Server memory at the phases of the run (sums over `--server-pid`s), in bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Memory {
    /// Before any device connected.
    pub(crate) server_rss_before: Option<u64>,
    /// Once every device was connected and drained.
    pub(crate) server_rss_connected: Option<u64>,
    /// At the end of the hold (idle) or the load.
    pub(crate) server_rss_end: Option<u64>,
    /// (connected − before) / connected devices.
    pub(crate) server_bytes_per_connection: Option<u64>,
    /// The generator's own RSS once connected.
    pub(crate) loadgen_rss_connected: Option<u64>,
    /// Open file descriptors of the server(s) once connected.
    pub(crate) server_fds_connected: Option<usize>,
}

/// The load phase.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Load {
    /// The open-loop schedule.
    pub(crate) schedule: Schedule,
    /// Sends answered 200.
    pub(crate) accepted: u64,
    /// Sends refused.
    pub(crate) refused: u64,
    /// Sends without an answer.
    pub(crate) unknown: u64,
    /// Retries (same idempotency key).
    pub(crate) retries: u64,
    /// Due sends skipped for generator backlog.
    pub(crate) backlog_skipped: u64,
    /// Accepted per second while the schedule ran.
    pub(crate) accepted_per_s: f64,
    /// Envelope deliveries per second while the schedule ran.
    pub(crate) delivered_per_s: f64,
    /// All first deliveries (message × recipient), drain included.
    pub(crate) deliveries: u64,
    /// Seconds after the schedule until the last delivery (or the drain timeout).
    pub(crate) drain_seconds: f64,
    /// Due time → delivery.
    pub(crate) latency: Latency,
    /// Due time → HTTP 200.
    pub(crate) accept_latency: Latency,
    /// Every id checked.
    pub(crate) audit: Audit,
    /// Same message again to a device under another envelope id.
    pub(crate) duplicates: u64,
    /// Same envelope again after a reconnect.
    pub(crate) redelivered: u64,
    /// Delivered to a device that is not a recipient.
    pub(crate) misrouted: u64,
    /// Envelopes that were not this run's (Welcomes, commits, earlier runs).
    pub(crate) foreign: u64,
    /// WebSocket reconnects.
    pub(crate) reconnects: u64,
    /// Ack frames sent.
    pub(crate) acks_sent: u64,
    /// Server CPU seconds during the load (sum over `--server-pid`s).
    pub(crate) server_cpu_s: Option<f64>,
    /// Server CPU microseconds per accepted message.
    pub(crate) server_cpu_us_per_msg: Option<f64>,
    /// Generator CPU seconds during the load.
    pub(crate) loadgen_cpu_s: Option<f64>,
    /// Accepted per second, second by second (schedule and drain).
    pub(crate) accepted_series: Vec<u64>,
    /// Deliveries per second, second by second.
    pub(crate) delivered_series: Vec<u64>,
}

/// Everything a run reports.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Summary {
    /// Free text from `--label`.
    pub(crate) label: String,
    /// Server URLs.
    pub(crate) servers: Vec<String>,
    /// Devices asked for (conversations × group size).
    pub(crate) devices: usize,
    /// Devices whose stream was open and drained.
    pub(crate) connected: usize,
    /// Devices whose token was refused.
    pub(crate) connect_failed: usize,
    /// Seconds to connect them all.
    pub(crate) connect_seconds: f64,
    /// Members per conversation (2 = 1:1).
    pub(crate) group_size: usize,
    /// Conversations used.
    pub(crate) conversations: usize,
    /// Target messages per second (0 = idle).
    pub(crate) rate: f64,
    /// Plaintext bytes per message.
    pub(crate) plaintext_bytes: usize,
    /// Bytes of each MLS payload on the wire (before base64).
    pub(crate) payload_bytes: usize,
    /// The generator's file-descriptor limit.
    pub(crate) fd_limit: u64,
    /// What setup did in this run.
    pub(crate) setup: SetupReport,
    /// Memory.
    pub(crate) memory: Memory,
    /// The load phase, when there was one.
    pub(crate) load: Option<Load>,
    /// Errors by code (send refusals, transport failures, stream errors).
    pub(crate) errors: BTreeMap<String, u64>,
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "n/a".into(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

impl Summary {
    /// Prints the summary for a person, on stderr.
    pub(crate) fn print(&self) {
        eprintln!("== nightjar-loadgen {}", self.label);
        eprintln!(
            "devices {} ({} conversations of {}), connected {} in {:.1} s, refused {}",
            self.devices,
            self.conversations,
            self.group_size,
            self.connected,
            self.connect_seconds,
            self.connect_failed
        );
        if self.setup.registered > 0 {
            eprintln!(
                "setup: {} accounts, {} conversations in {:.1} s",
                self.setup.registered, self.setup.conversations, self.setup.seconds
            );
        }
        let m = &self.memory;
        eprintln!(
            "server RSS: before {}, connected {}, end {}; per connection {}; server fds {}; loadgen RSS {}",
            mib(m.server_rss_before),
            mib(m.server_rss_connected),
            mib(m.server_rss_end),
            m.server_bytes_per_connection
                .map_or_else(|| "n/a".into(), |b| format!("{b} B")),
            m.server_fds_connected
                .map_or_else(|| "n/a".into(), |n| n.to_string()),
            mib(m.loadgen_rss_connected),
        );
        if let Some(l) = &self.load {
            eprintln!(
                "load: target {} msg/s of {} B plaintext ({} B MLS payload) for {:.1} s",
                self.rate, self.plaintext_bytes, self.payload_bytes, l.schedule.seconds
            );
            eprintln!(
                "  accepted {} ({:.0}/s), refused {}, unknown {}, retries {}, skipped for backlog {}",
                l.accepted, l.accepted_per_s, l.refused, l.unknown, l.retries, l.backlog_skipped
            );
            eprintln!(
                "  delivered {} envelopes ({:.0}/s during the schedule), drain {:.1} s",
                l.deliveries, l.delivered_per_s, l.drain_seconds
            );
            eprintln!(
                "  send→delivery p50 {} p99 {} p99.9 {} max {}",
                ms(l.latency.p50_us),
                ms(l.latency.p99_us),
                ms(l.latency.p999_us),
                ms(l.latency.max_us)
            );
            eprintln!(
                "  send→accepted p50 {} p99 {} p99.9 {}",
                ms(l.accept_latency.p50_us),
                ms(l.accept_latency.p99_us),
                ms(l.accept_latency.p999_us)
            );
            let a = &l.audit;
            eprintln!(
                "  ids: complete {}, lost {} ({} deliveries), duplicates {}, redelivered {}, misrouted {}, in flight {}",
                a.complete,
                a.lost_messages,
                a.lost_deliveries,
                l.duplicates,
                l.redelivered,
                l.misrouted,
                a.in_flight
            );
            if let (Some(cpu), Some(per)) = (l.server_cpu_s, l.server_cpu_us_per_msg) {
                eprintln!(
                    "  server CPU {cpu:.1} s ({per:.0} µs per accepted message); loadgen CPU {:.1} s",
                    l.loadgen_cpu_s.unwrap_or(0.0)
                );
            }
        }
        if !self.errors.is_empty() {
            eprintln!("errors: {:?}", self.errors);
        }
    }
}

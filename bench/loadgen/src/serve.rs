//! `nightjar-loadgen serve`: the real server (`nightjar_server::run`) with limits loosened for
//! benchmarking, so setup can register 100k accounts from one address and each device can
//! send faster than a person would. Everything else (storage, durability, delivery) is the
//! production code path, built in release mode with the generator.

use std::net::SocketAddr;
use std::path::PathBuf;

use nightjar_server::{Limits, ServerConfig};

use crate::error::Result;

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Directory for the server's database.
    #[arg(long, value_name = "DIR", default_value = "./nightjar-bench-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Database URL instead of SQLite in the data directory (what the server build supports).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// NATS server that tells nodes sharing a PostgreSQL database about new mail.
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// This node's name in logs and on NATS.
    #[arg(long, value_name = "NAME")]
    node_id: Option<String>,
    /// How long a session read from the database is reused, in ms (0: read on every request;
    /// a same-run baseline for the session cache).
    #[arg(long, value_name = "MS")]
    session_cache_ms: Option<u64>,
    /// Most sends (and, separately, acknowledgements) per transaction (1: no group commit;
    /// a same-run baseline).
    #[arg(long, value_name = "N")]
    max_batch: Option<usize>,
    /// Group-commit writers on PostgreSQL.
    #[arg(long, value_name = "N")]
    writers: Option<usize>,
    /// Keep the production limits (login attempts per address, per-device request rate).
    #[arg(long)]
    production_limits: bool,
    /// Log filter (`RUST_LOG` syntax).
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    log: String,
}

/// Production limits except the ones a load test trips over by design: login and
/// registration attempts per address (every benchmark account comes from loopback) and the
/// per-device request rate (a benchmark device sends far more than a person).
pub(crate) fn bench_limits() -> Limits {
    Limits {
        login_attempts_per_ip: u32::MAX,
        login_attempts_per_account: u32::MAX,
        device_requests_per_second: 1e9,
        device_request_burst: u32::MAX,
        ..Limits::default()
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn serve(args: ServeArgs) -> Result<()> {
    let fds = crate::os::raise_fd_limit()?;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut config = ServerConfig::new(args.data_dir, args.listen);
    config.database_url = args.database_url;
    config.nats_url = args.nats_url;
    config.node_id = args.node_id;
    if let Some(ms) = args.session_cache_ms {
        config.session_cache_ttl = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = args.max_batch {
        config.group_commit.max_batch = n.max(1);
    }
    if let Some(n) = args.writers {
        config.group_commit.writers = n.max(1);
    }
    if !args.production_limits {
        config.limits = bench_limits();
    }
    eprintln!(
        "nightjar-loadgen serve: pid {} listening on {} (file descriptors: {fds}, limits: {})",
        std::process::id(),
        args.listen,
        if args.production_limits {
            "production"
        } else {
            "bench"
        }
    );
    nightjar_server::run(config, nightjar_server::shutdown_signal()).await?;
    Ok(())
}

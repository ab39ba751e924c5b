//! `nightjar-loadgen`: drives real authenticated WebSocket devices and HTTP senders against
//! running Nightjar servers and reports throughput, delivery latency, losses, duplicates and
//! server memory. `nightjar-loadgen serve` runs the real server with benchmark limits.
//!
//! See `bench/README.md` for the scenarios and the system settings they need.

mod api;
mod devices;
mod error;
mod histogram;
mod load;
mod os;
mod payload;
mod report;
mod run;
mod serve;
mod setup;
mod state;
mod track;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator for the Nightjar server.
#[derive(Debug, Parser)]
#[command(name = "nightjar-loadgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect devices and send load to running servers, then report.
    Run(Box<run::RunArgs>),
    /// Run a Nightjar server with limits loosened for benchmarking (until Ctrl-C / SIGTERM).
    Serve(serve::ServeArgs),
}

/// mimalloc, like the `nightjar` binary, so that `serve` is the server as shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nightjar-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Serve(args) => serve::serve(args).await,
        }
    });
    // Device tasks may still be closing; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nightjar-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

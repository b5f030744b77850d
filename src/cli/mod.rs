//! The command-line front end: parse, validate, run the node, report, and
//! map errors to documented exit codes.

pub mod args;
pub mod config;
mod demo;
mod inspect;
mod metrics;
pub mod progress;
mod run;
mod simulate;
pub mod units;

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::node::NodeError;
use args::{Cli, Command};

pub const EXIT_INTERNAL: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NETWORK: u8 = 3;
pub const EXIT_VERIFY: u8 = 4;
pub const EXIT_IO: u8 = 5;
pub const EXIT_INTERRUPTED: u8 = 130;

pub fn exit_code(e: &NodeError) -> u8 {
    match e {
        NodeError::Unreachable { .. } | NodeError::Network(_) => EXIT_NETWORK,
        NodeError::Verification(_) => EXIT_VERIFY,
        NodeError::Storage(_) | NodeError::Build(_) => EXIT_IO,
        NodeError::Interrupted => EXIT_INTERRUPTED,
        NodeError::Other(_) => EXIT_INTERNAL,
    }
}

pub fn main(cli: Cli) -> ExitCode {
    keep_freed_heap();
    init_logging(cli.verbose);
    if let Command::Demo(a) = &cli.command {
        return demo::run(a, cli.quiet);
    }
    if let Command::Simulate(a) = &cli.command {
        return simulate::run(a, cli.quiet);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(cli.threads.map_or_else(default_threads, usize::from));
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    // Everything runs as a task on the worker threads: the engine on the
    // thread that calls `block_on` would be woken from a worker (a futex
    // and a context switch) for every event of every connection.
    let code = rt.block_on(async {
        tokio::spawn(run(cli)).await.unwrap_or_else(|e| {
            eprintln!("error: internal: {e}");
            ExitCode::from(EXIT_INTERNAL)
        })
    });
    // The report is written. Dropping the runtime would wait for every
    // blocking task, and one may still be hashing a large image after
    // Ctrl-C: give short ones (a piece being written, a rename) a moment,
    // not that.
    rt.shutdown_timeout(std::time::Duration::from_secs(3));
    code
}

/// Networking threads: half the cores, at least one. Verification and
/// disk writes run on tokio's blocking threads and want the other half;
/// each QUIC connection is driven by one task, so more workers than
/// connections add only hand-offs. 1 GiB seed to joiner on loopback (2
/// vCPUs, session 12, six alternating rounds): one thread per core
/// 1218-1477 MB/s (median 1367), one each 1459-1653 (median 1518).
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// glibc returns the free top of a heap to the kernel once it passes
/// 128 KiB, and the next allocations fault it in again, zeroed. A joiner
/// frees and allocates a buffer per received datagram batch on several
/// threads, so a 1 GiB join took 40-100 k minor faults, about 9% of its
/// CPU (`perf record`). Keeping up to 64 MiB of free heap per arena cuts
/// that to 6-8 k faults (docs/benchmarks.md, loopback, session 11).
fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's allocator.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,quinn=warn",
        _ => "debug,quinn=info,quinn_proto=info,rustls=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // colours only on a terminal: a log file or a journal gets plain text
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(tty)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> ExitCode {
    let stop = CancellationToken::new();
    let caught = Arc::new(OnceLock::new());
    let signals = tokio::spawn(wait_for_signal(stop.clone(), caught.clone()));
    let code = match &cli.command {
        Command::Seed(a) => run::seed(a, cli.quiet, stop, &caught).await,
        Command::Join(a) => run::join(a, cli.quiet, stop, &caught).await,
        Command::Verify(a) => inspect::verify(a, cli.quiet, stop).await,
        Command::Inspect(a) => inspect::inspect(a, stop).await,
        Command::Demo(_) | Command::Simulate(_) => {
            unreachable!("handled before the runtime starts")
        }
    };
    signals.abort();
    code
}

/// Waits for SIGINT or SIGTERM, notes which in `caught`, and stops the run.
async fn wait_for_signal(stop: CancellationToken, caught: Arc<OnceLock<&'static str>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let _ = caught.set(name);
    stop.cancel();
}

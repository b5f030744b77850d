//! The command-line front end: parse, validate, run the node, report, and
//! map errors to documented exit codes.

pub mod args;
pub mod config;
mod demo;
pub mod progress;
pub mod units;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::node::{self, NodeError, Report};
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
    rt.block_on(async {
        tokio::spawn(run(cli)).await.unwrap_or_else(|e| {
            eprintln!("error: internal: {e}");
            ExitCode::from(EXIT_INTERNAL)
        })
    })
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> ExitCode {
    let stop = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(stop.clone()));
    let (status_tx, status_rx) = watch::channel(Default::default());
    let result = match &cli.command {
        Command::Seed(a) => {
            let cfg = match config::seed(a) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            };
            let ticket_file = a.ticket_file.clone();
            let quiet = cli.quiet;
            let progress = progress::spawn(status_rx, cli.quiet, "seed");
            let mut ticket_err = None;
            let r = node::seed(
                cfg,
                |t, m| {
                    let line = t.encode();
                    println!("{line}");
                    let _ = std::io::stdout().flush();
                    if !quiet {
                        eprintln!(
                            "seeding {} ({} bytes, {} pieces of {}); run on each target host:\n  swarm join {line} DEST_DIR",
                            m.name,
                            m.total_size(),
                            m.piece_count(),
                            progress::human(m.piece_size as f64)
                        );
                    }
                    if let Some(f) = &ticket_file
                        && let Err(e) = write_atomic(f, format!("{line}\n").as_bytes())
                    {
                        ticket_err = Some(e);
                    }
                },
                status_tx,
                stop.clone(),
            )
            .await;
            progress.abort();
            if let Some(e) = ticket_err {
                eprintln!("error: --ticket-file: {e}");
                return ExitCode::from(EXIT_IO);
            }
            // Ctrl-C is how a seed is normally stopped.
            let r = match r {
                Err(NodeError::Interrupted) => Ok(None),
                r => r.map(Some),
            };
            finish(r, a.report.as_deref(), cli.quiet)
        }
        Command::Join(a) => {
            let cfg = match config::join(a) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            };
            let progress = progress::spawn(status_rx, cli.quiet, "join");
            let r = node::join(cfg, status_tx, stop.clone()).await;
            progress.abort();
            finish(r.map(Some), a.report.as_deref(), cli.quiet)
        }
        Command::Demo(_) => unreachable!("handled before the runtime starts"),
    };
    signals.abort();
    result
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn finish(
    r: Result<Option<Report>, NodeError>,
    report_file: Option<&Path>,
    quiet: bool,
) -> ExitCode {
    match r {
        Ok(report) => {
            if let Some(report) = report {
                if !quiet {
                    eprintln!("{}", progress::summary(&report));
                }
                if let Some(f) = report_file {
                    let json = serde_json::to_vec_pretty(&report).expect("report serializes");
                    if let Err(e) = write_atomic(f, &json) {
                        eprintln!("error: --report: {e}");
                        return ExitCode::from(EXIT_IO);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Writes via a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-swarm");
    std::fs::write(&tmp, data)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

async fn wait_for_signal(stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    stop.cancel();
}

//! Running `seed` and `join` from the command line, and the end of every
//! run: the summary, the error, the report and the exit code, whether the
//! run succeeded, failed, or was stopped by SIGINT or SIGTERM.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::args::{JoinArgs, SeedArgs};
use super::{EXIT_IO, EXIT_USAGE, config, exit_code, progress};
use crate::node::{self, NodeError, Report};
use crate::storage::{PrivateFile, StorageError, write_private};
use crate::text::{self, Escaped};

/// Why a run failed.
enum Failure {
    /// Arguments that do not validate (exit 2).
    Usage(String),
    Node(NodeError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) => f.write_str(m),
            Failure::Node(e) => e.fmt(f),
        }
    }
}

fn output_error(what: &'static str, source: std::io::Error) -> NodeError {
    NodeError::Storage(StorageError::Output { what, source })
}

/// `--metrics ADDR`, bound now: a bad address is a usage error, a port
/// in use a network one.
async fn serve_metrics(
    addr: Option<&str>,
    status: &watch::Receiver<node::Status>,
    role: &'static str,
) -> Result<(), Failure> {
    let Some(addr) = addr else { return Ok(()) };
    let addr = super::units::addr("--metrics", addr).map_err(Failure::Usage)?;
    match super::metrics::spawn(addr, status.clone(), role).await {
        Ok(bound) => {
            tracing::info!("metrics at http://{bound}/metrics");
            Ok(())
        }
        Err(e) => Err(Failure::Node(NodeError::Network(format!(
            "--metrics {addr}: cannot listen: {e}"
        )))),
    }
}

/// The temporary of an output file (`what`: its flag), if asked for.
fn output_file(path: Option<&Path>, what: &'static str) -> Result<Option<PrivateFile>, NodeError> {
    path.map(PrivateFile::create)
        .transpose()
        .map_err(|e| output_error(what, e))
}

/// `--report FILE` can be written: checked before anything long, since the
/// report is written only at the end.
fn check_report(path: Option<&Path>) -> Result<(), ExitCode> {
    match path.map(PrivateFile::create) {
        Some(Err(e)) => {
            eprintln!("error: {}", output_error("--report", e));
            Err(ExitCode::from(EXIT_IO))
        }
        _ => Ok(()),
    }
}

pub async fn seed(
    a: &SeedArgs,
    quiet: bool,
    stop: CancellationToken,
    caught: &OnceLock<&'static str>,
) -> ExitCode {
    let report_file = a.report.as_deref();
    let base = Report {
        role: "seed".into(),
        group: a.group.group.clone(),
        ..Default::default()
    };
    if let Err(code) = check_report(report_file) {
        return code;
    }
    let cfg = match config::seed(a) {
        Ok(c) => c,
        Err(e) => return end(base, Err(Failure::Usage(e)), report_file, quiet, caught),
    };
    // The output files' temporaries are created now, before the hashing:
    // a path that cannot be written fails at once, not after it.
    let outputs = output_file(a.ticket_file.as_deref(), "--ticket-file")
        .and_then(|t| output_file(a.manifest_out.as_deref(), "--manifest-out").map(|m| (t, m)));
    let (ticket_file, manifest_file) = match outputs {
        Ok(files) => files,
        Err(e) => return end(base, Err(Failure::Node(e)), report_file, quiet, caught),
    };
    let (status_tx, status_rx) = watch::channel(Default::default());
    if let Err(e) = serve_metrics(a.metrics.as_deref(), &status_rx, "seed").await {
        return end(base, Err(e), report_file, quiet, caught);
    }
    let progress = progress::spawn(status_rx, quiet, "seed");
    let on_ticket = |t: &crate::ticket::Ticket, m: &crate::manifest::Manifest, kept: bool| {
        if let Some(f) = manifest_file {
            f.commit(&m.encode())
                .map_err(|e| output_error("--manifest-out", e))?;
        }
        let line = t.encode();
        // The secret goes to the file if one is named, else to stdout;
        // never to stderr, and not to stdout beside a file: under a
        // service manager or in a pod, stdout is a log that others read.
        let shown = match ticket_file {
            Some(f) => {
                let shown = format!("in {}", text::path(f.path()));
                f.commit(format!("{line}\n").as_bytes())
                    .map_err(|e| output_error("--ticket-file", e))?;
                shown
            }
            None => {
                println!("{line}");
                let _ = std::io::stdout().flush();
                "on stdout".to_string()
            }
        };
        if !quiet && kept {
            eprintln!("seed: unchanged since the last run (--state): not hashed again");
        }
        if !quiet {
            eprintln!(
                "seeding {} ({} bytes, {} pieces of {}); the ticket is {shown}: \
                 run `swarm join TICKET DEST_DIR` on each target host",
                Escaped(&m.name),
                m.total_size(),
                m.piece_count(),
                progress::human(m.piece_size as f64)
            );
        }
        Ok(())
    };
    let (report, r) = node::seed(cfg, on_ticket, status_tx, stop).await;
    progress.finish().await;
    end(report, r.map_err(Failure::Node), report_file, quiet, caught)
}

pub async fn join(
    a: &JoinArgs,
    quiet: bool,
    stop: CancellationToken,
    caught: &OnceLock<&'static str>,
) -> ExitCode {
    let report_file = a.report.as_deref();
    let base = Report {
        role: "join".into(),
        group: a.group.group.clone(),
        ..Default::default()
    };
    if let Err(code) = check_report(report_file) {
        return code;
    }
    let cfg = match config::join(a) {
        Ok(c) => c,
        Err(e) => return end(base, Err(Failure::Usage(e)), report_file, quiet, caught),
    };
    let (status_tx, status_rx) = watch::channel(Default::default());
    if let Err(e) = serve_metrics(a.metrics.as_deref(), &status_rx, "join").await {
        return end(base, Err(e), report_file, quiet, caught);
    }
    let progress = progress::spawn(status_rx, quiet, "join");
    let (report, r) = node::join(cfg, status_tx, stop).await;
    progress.finish().await;
    end(report, r.map_err(Failure::Node), report_file, quiet, caught)
}

/// Completes the report with how the run ended, prints the summary (when
/// the run got as far as a manifest) and the error, writes the report,
/// and returns the exit code: for SIGINT and SIGTERM 0 for a serving seed
/// (its normal way to stop), 130 otherwise.
fn end(
    mut report: Report,
    r: Result<(), Failure>,
    report_file: Option<&Path>,
    quiet: bool,
    caught: &OnceLock<&'static str>,
) -> ExitCode {
    // A signal is how a serving seed is normally stopped (Ctrl-C,
    // `systemctl stop`): that ends it with 0. Anything else interrupted
    // (a join, a seed still hashing) did not finish its work: 130.
    let stopped = report.role == "seed"
        && report.pieces_total > 0
        && matches!(r, Err(Failure::Node(NodeError::Interrupted)));
    let mut code = match &r {
        Ok(()) => 0,
        _ if stopped => 0,
        Err(Failure::Usage(_)) => EXIT_USAGE,
        Err(Failure::Node(e)) => exit_code(e),
    };
    report.exit_code = code;
    match &r {
        Ok(()) => report.ended = "ok".into(),
        Err(Failure::Node(NodeError::Interrupted)) => {
            report.ended = if stopped { "stopped" } else { "interrupted" }.into();
            report.interrupted = true;
            report.signal = caught.get().map(|s| s.to_string());
        }
        Err(e) => {
            report.ended = "failed".into();
            report.error = Some(text::escape(&e.to_string()).into_owned());
        }
    }
    let reached = r.is_ok() || report.pieces_total > 0 || report.output.is_some();
    if !quiet && reached {
        eprintln!("{}", progress::summary(&report, progress::SUMMARY_WIDTH));
    } else if !quiet && report.interrupted {
        eprintln!("{}: {}", report.role, progress::interrupted(&report));
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    if let Some(f) = report_file {
        let json = serde_json::to_vec_pretty(&report).expect("report serializes");
        if let Err(e) = write_private(f, &json) {
            eprintln!("error: {}", output_error("--report", e));
            if code == 0 {
                code = EXIT_IO;
            }
        }
    }
    ExitCode::from(code)
}

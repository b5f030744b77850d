//! Progress output on stderr: a bar on a terminal, a status line every few
//! seconds otherwise (logs, tests), nothing with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::node::{Report, Status};
use crate::text::Escaped;

/// The most often the display is updated.
const REFRESH: Duration = Duration::from_millis(100);

/// The progress display, running until `finish`.
pub struct Progress {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Stops the display and waits until it is gone (the bar cleared from
    /// the terminal), so that what is printed next is not drawn over.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub fn spawn(rx: watch::Receiver<Status>, quiet: bool, label: &'static str) -> Progress {
    let stop = CancellationToken::new();
    let task = tokio::spawn(show(rx, quiet, label, stop.clone()));
    Progress { stop, task }
}

async fn show(
    mut rx: watch::Receiver<Status>,
    quiet: bool,
    label: &'static str,
    stop: CancellationToken,
) {
    if quiet {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} pieces {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix(label);
        b
    });
    let start = Instant::now();
    let mut last_line = Instant::now();
    let mut bridge = None;
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = stop.cancelled() => break,
        }
        let s = rx.borrow_and_update().clone();
        if s.bridge != bridge {
            // a role change is news: say it at once, with the group
            bridge = s.bridge;
            let group = Escaped(&s.group);
            let line = match s.bridge {
                Some((rank, of)) => {
                    format!("{label}: group {group}: bridge {} of {}", rank + 1, of)
                }
                None => format!("{label}: group {group}: no longer a bridge"),
            };
            match &bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        if let Some((done, total)) = s.hashing {
            let line = hashing(done, total, start);
            match &bar {
                Some(b) => b.set_message(line),
                None if last_line.elapsed() >= Duration::from_secs(2) => {
                    last_line = Instant::now();
                    eprintln!("{label}: {line}");
                }
                None => {}
            }
        } else {
            match &bar {
                Some(b) => {
                    b.set_length(s.pieces_total as u64);
                    b.set_position(s.pieces_have as u64);
                    b.set_message(message(&s, start));
                }
                None if last_line.elapsed() >= Duration::from_secs(2) => {
                    last_line = Instant::now();
                    eprintln!(
                        "{label}: {}/{} pieces{}, {}",
                        s.pieces_have,
                        s.pieces_total,
                        if s.complete { " complete" } else { "" },
                        message(&s, start)
                    );
                }
                None => {}
            }
        }
        // The engine publishes after every event; a display needs a
        // few updates a second (at 16 hosts, formatting every one was
        // 0.9% of all CPU).
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// A seed hashing its image: how far, how fast, how long still.
fn hashing(done: u64, total: u64, start: Instant) -> String {
    let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
    let left = if done > 0 && total > done {
        format!(", {:.0}s left", (total - done) as f64 / rate)
    } else {
        String::new()
    };
    format!(
        "hashing {} of {} ({}/s{left})",
        human(done as f64),
        human(total as f64),
        human(rate)
    )
}

/// Group, role, peers and rates since `start`.
fn message(s: &Status, start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    let role = match s.bridge {
        Some((rank, of)) => format!(", bridge {}/{of}", rank + 1),
        None => String::new(),
    };
    let mut m = format!(
        "group {}{role}, peers {} (done {}), in {}/s, out {}/s",
        Escaped(&s.group),
        s.peers,
        s.peers_done,
        human(s.bytes_received as f64 / secs),
        human(s.bytes_served as f64 / secs),
    );
    // where the bytes came from, once there is more than one place
    if s.bytes_from_basis > 0 || s.received_cross_group > 0 {
        m += &format!(
            ", from basis {}, group {}, other groups {}",
            human(s.bytes_from_basis as f64),
            human(s.bytes_received.saturating_sub(s.received_cross_group) as f64),
            human(s.received_cross_group as f64),
        );
    }
    m
}

pub fn human(bytes: f64) -> String {
    bytesize::ByteSize(bytes as u64).display().iec().to_string()
}

/// Columns the summary is wrapped to: a terminal of 80 shows it whole.
pub const SUMMARY_WIDTH: usize = 80;

/// How the run was interrupted, for the summary.
pub fn interrupted(r: &Report) -> String {
    match &r.signal {
        Some(sig) => format!("interrupted by {sig}"),
        None => "interrupted".into(),
    }
}

/// The end-of-run summary: clauses separated by commas, wrapped before
/// `width` columns (continuation lines indented), then the destination on
/// a line of its own, in full and escaped, however long it is.
pub fn summary(r: &Report, width: usize) -> String {
    let secs = r.elapsed_secs.max(1e-3);
    if r.up_to_date {
        return format!(
            "{}: already up to date: {} is the image ({} verified in {:.1}s); nothing fetched",
            r.role,
            r.output.as_deref().unwrap_or("the destination"),
            human(r.bytes_total as f64),
            secs
        );
    }
    let mut clauses = vec![
        format!(
            "{}: {} in {:.1}s",
            r.role,
            human(r.bytes_total as f64),
            r.complete_secs.unwrap_or(r.elapsed_secs)
        ),
        format!(
            "received {} ({}/s)",
            human(r.bytes_received as f64),
            human(r.bytes_received as f64 / r.complete_secs.unwrap_or(secs).max(1e-3))
        ),
        format!("served {}", human(r.bytes_served as f64)),
    ];
    if r.bytes_from_basis > 0 {
        clauses.push(format!(
            "{} from the basis ({} pieces whole)",
            human(r.bytes_from_basis as f64),
            r.pieces_from_basis
        ));
    }
    if r.received_cross_group + r.served_cross_group > 0 {
        clauses.push(format!(
            "across groups received {} and served {}",
            human(r.received_cross_group as f64),
            human(r.served_cross_group as f64)
        ));
    }
    if r.pieces_resumed > 0 {
        clauses.push(format!("{} pieces resumed from disk", r.pieces_resumed));
    }
    if r.pieces_corrupt > 0 {
        clauses.push(format!("{} corrupt pieces rejected", r.pieces_corrupt));
    }
    if r.pieces_changed > 0 {
        clauses.push(format!(
            "{} pieces changed on disk since hashed, not served",
            r.pieces_changed
        ));
    }
    if r.interrupted {
        clauses.push(interrupted(r));
    } else if r.error.is_some() {
        clauses.push("failed".into());
    }
    let mut out = String::new();
    let mut line = String::new();
    for c in clauses {
        if line.is_empty() {
            line = c;
        } else if line.chars().count() + ", ".len() + c.chars().count() < width {
            // (< width: the line may yet end in a comma)
            line += ", ";
            line += &c;
        } else {
            out += &line;
            out += ",\n";
            line = format!("  {c}");
        }
    }
    out += &line;
    if let Some(p) = &r.output {
        out += &format!("\n  -> {p}");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn full_report(output: &str) -> Report {
        Report {
            role: "join".into(),
            bytes_total: 64 << 30,
            bytes_received: 63 << 30,
            bytes_served: 250 << 30,
            received_cross_group: 12 << 30,
            served_cross_group: 1 << 30,
            pieces_resumed: 1024,
            pieces_corrupt: 3,
            elapsed_secs: 1234.5,
            complete_secs: Some(1200.25),
            output: Some(crate::text::path(&PathBuf::from(output))),
            ..Default::default()
        }
    }

    #[test]
    fn the_summary_fits_80_columns_and_keeps_the_whole_destination() {
        let long = format!("/srv/images/{}/db-2026-11-21.img", "x".repeat(120));
        for path in ["/srv/images/db-2026-11-21", long.as_str()] {
            let s = summary(&full_report(path), 80);
            let lines: Vec<&str> = s.lines().collect();
            let last = lines.last().unwrap();
            assert_eq!(*last, format!("  -> {path}"), "{s}");
            for l in &lines[..lines.len() - 1] {
                assert!(
                    l.chars().count() <= 80,
                    "{} columns: {l:?}",
                    l.chars().count()
                );
            }
            for part in [
                "received 63.0 GiB",
                "1024 pieces resumed",
                "3 corrupt pieces",
            ] {
                assert!(s.contains(part), "{part} missing: {s}");
            }
        }
        // a short summary stays on one line, the destination on the next
        let r = Report {
            role: "seed".into(),
            bytes_total: 1 << 20,
            elapsed_secs: 2.0,
            ..Default::default()
        };
        assert_eq!(summary(&r, 80).lines().count(), 1);
    }

    #[test]
    fn the_summary_says_how_the_run_ended_and_escapes_the_destination() {
        let mut r = full_report("/dst/evil\u{1b}[31m\nname");
        r.interrupted = true;
        r.signal = Some("SIGTERM".into());
        let s = summary(&r, 80);
        assert!(s.contains("interrupted by SIGTERM"), "{s}");
        assert!(s.ends_with("  -> /dst/evil\\u{1b}[31m\\nname"), "{s}");
        assert!(!s.contains('\u{1b}'));
    }
}

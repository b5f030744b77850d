//! Progress output on stderr: a bar on a terminal, a status line every few
//! seconds otherwise (logs, tests), nothing with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::node::{Report, Status};

/// The most often the display is updated.
const REFRESH: Duration = Duration::from_millis(100);

pub fn spawn(
    mut rx: watch::Receiver<Status>,
    quiet: bool,
    label: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
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
        while rx.changed().await.is_ok() {
            let s = rx.borrow_and_update().clone();
            if s.bridge != bridge {
                // a role change is news: say it at once, with the group
                bridge = s.bridge;
                let line = match s.bridge {
                    Some((rank, of)) => {
                        format!("{label}: group {}: bridge {} of {}", s.group, rank + 1, of)
                    }
                    None => format!("{label}: group {}: no longer a bridge", s.group),
                };
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
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
            // The engine publishes after every event; a display needs a
            // few updates a second (at 16 hosts, formatting every one was
            // 0.9% of all CPU).
            tokio::time::sleep(REFRESH).await;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    })
}

/// Group, role, peers and rates since `start`.
fn message(s: &Status, start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    let role = match s.bridge {
        Some((rank, of)) => format!(", bridge {}/{of}", rank + 1),
        None => String::new(),
    };
    format!(
        "group {}{role}, peers {} (done {}), in {}/s, out {}/s",
        s.group,
        s.peers,
        s.peers_done,
        human(s.bytes_received as f64 / secs),
        human(s.bytes_served as f64 / secs),
    )
}

pub fn human(bytes: f64) -> String {
    bytesize::ByteSize(bytes as u64).display().iec().to_string()
}

pub fn summary(r: &Report) -> String {
    let secs = r.elapsed_secs.max(1e-3);
    let mut s = format!(
        "{}: {} in {:.1}s, received {} ({}/s), served {}",
        r.role,
        human(r.bytes_total as f64),
        r.complete_secs.unwrap_or(r.elapsed_secs),
        human(r.bytes_received as f64),
        human(r.bytes_received as f64 / r.complete_secs.unwrap_or(secs).max(1e-3)),
        human(r.bytes_served as f64),
    );
    if r.received_cross_group + r.served_cross_group > 0 {
        s += &format!(
            ", across groups received {} and served {}",
            human(r.received_cross_group as f64),
            human(r.served_cross_group as f64)
        );
    }
    if r.pieces_resumed > 0 {
        s += &format!(", {} pieces resumed from disk", r.pieces_resumed);
    }
    if r.pieces_corrupt > 0 {
        s += &format!(", {} corrupt pieces rejected", r.pieces_corrupt);
    }
    if let Some(p) = &r.output {
        s += &format!(" -> {}", p.display());
    }
    s
}

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
        // {wide_msg} is cut to the terminal's width: 80 columns show it
        let template = match label {
            "join" => "{prefix} [{bar:12}] {wide_msg}",
            _ => "{prefix} {wide_msg}",
        };
        b.set_style(
            ProgressStyle::with_template(template)
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_prefix(label);
        b
    });
    let start = Instant::now();
    let mut last_line: Option<Instant> = None;
    let mut bridge = None;
    let mut rates = Rates::default();
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = stop.cancelled() => break,
        }
        let s = rx.borrow_and_update().clone();
        let now = Instant::now();
        rates.push(now, &s);
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
                None => eprintln!("{} {line}", timestamp()),
            }
        }
        let line = match s.hashing {
            Some((done, total)) => hashing(done, total, start),
            None if label == "join" => join_line(&s, &rates, bar.is_some()),
            None => seed_line(&s, &rates),
        };
        match &bar {
            Some(b) => {
                b.set_length(s.pieces_total as u64);
                b.set_position(s.pieces_have as u64);
                b.set_message(line);
            }
            // the first update waits a moment: a join that is done at
            // once prints its summary only
            None if last_line.map_or(now - start >= FIRST_LINE, |t| now - t >= LINE_EVERY) => {
                last_line = Some(now);
                eprintln!("{} {label}: {line}", timestamp());
            }
            None => {}
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

/// How often a line is printed when stderr is not a terminal (a log),
/// and when the first one is.
const LINE_EVERY: Duration = Duration::from_secs(2);
const FIRST_LINE: Duration = LINE_EVERY;
/// Rates are measured over this much of the recent past.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// UTC, to the second, for lines that go to logs.
fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Byte counters sampled over `RATE_WINDOW`: current rates, not averages
/// since the start.
#[derive(Default)]
struct Rates {
    samples: std::collections::VecDeque<(Instant, [u64; 4])>,
}

impl Rates {
    fn push(&mut self, now: Instant, s: &Status) {
        let counts = [
            s.bytes_received,
            s.received_cross_group,
            s.bytes_served,
            s.served_cross_group,
        ];
        self.samples.push_back((now, counts));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now - *t > RATE_WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second received (all, other groups) and served (all,
    /// other groups).
    fn per_sec(&self) -> [f64; 4] {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, a)), Some((t1, b))) if t1 > t0 => {
                let secs = (*t1 - *t0).as_secs_f64();
                std::array::from_fn(|i| b[i].saturating_sub(a[i]) as f64 / secs)
            }
            _ => [0.0; 4],
        }
    }
}

/// A seed hashing its image: how far, how fast, how long still.
fn hashing(done: u64, total: u64, start: Instant) -> String {
    let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
    let left = if done > 0 && total > done {
        format!(", {} left", eta((total - done) as f64 / rate))
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

fn eta(secs: f64) -> String {
    match secs {
        s if !s.is_finite() => "?".into(),
        s if s < 100.0 => format!("{s:.0}s"),
        s if s < 6000.0 => format!("{:.0}m", s / 60.0),
        s => format!("{:.1}h", s / 3600.0),
    }
}

/// A joiner's line: how far, current rates (from its group and from
/// other groups), time left, peers. On a terminal (`short`) the pieces
/// are on the bar and the line is cut to its width.
fn join_line(s: &Status, rates: &Rates, short: bool) -> String {
    let [rx, rx_wan, tx, _] = rates.per_sec();
    let have = if s.pieces_total == 0 {
        0
    } else {
        (s.bytes_total as f64 * s.pieces_have as f64 / s.pieces_total as f64) as u64
    };
    let pct = if s.pieces_total == 0 {
        100.0
    } else {
        100.0 * s.pieces_have as f64 / s.pieces_total as f64
    };
    let left = if s.complete {
        "done".to_string()
    } else if rx > 0.0 {
        format!(
            "ETA {}",
            eta(s.bytes_total.saturating_sub(have) as f64 / rx)
        )
    } else {
        "ETA ?".to_string()
    };
    let wan = if s.received_cross_group > 0 || s.bridge.is_some() {
        format!(" (wan {}/s)", human(rx_wan))
    } else {
        String::new()
    };
    let role = match s.bridge {
        Some((rank, of)) => format!(", bridge {}/{of}", rank + 1),
        None => String::new(),
    };
    if short {
        return format!(
            "{pct:.0}% of {} {}/s{wan} {left} {} peers{role}",
            human(s.bytes_total as f64),
            human(rx),
            s.peers
        );
    }
    let mut m = format!(
        "{}/{} pieces{}, {pct:.0}% of {}, in {}/s (group {}/s, other groups {}/s), out {}/s, {left}, \
         group {}{role}, peers {} (done {})",
        s.pieces_have,
        s.pieces_total,
        if s.complete { " complete" } else { "" },
        human(s.bytes_total as f64),
        human(rx),
        human(rx - rx_wan),
        human(rx_wan),
        human(tx),
        Escaped(&s.group),
        s.peers,
        s.peers_done,
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

/// A seed's line: hosts connected and complete, its upload now.
fn seed_line(s: &Status, rates: &Rates) -> String {
    let [_, _, tx, tx_wan] = rates.per_sec();
    format!(
        "{} hosts connected, {} complete, out {}/s (other groups {}/s), served {}",
        s.peers,
        s.peers_done,
        human(tx),
        human(tx_wan),
        human(s.bytes_served as f64)
    )
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
            "{}: already up to date: {} is the image ({} verified in {:.1}s); \
             nothing fetched, served {}",
            r.role,
            r.output.as_deref().unwrap_or("the destination"),
            human(r.bytes_total as f64),
            r.complete_secs.unwrap_or(secs),
            human(r.bytes_served as f64)
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

    fn status(received: u64, cross: u64, served: u64) -> Status {
        Status {
            pieces_have: 512,
            pieces_total: 2048,
            bytes_total: 2 << 30,
            bytes_received: received,
            received_cross_group: cross,
            bytes_served: served,
            served_cross_group: served / 4,
            peers: 12,
            peers_done: 3,
            group: "dc-east".into(),
            ..Default::default()
        }
    }

    /// Rates are what moved over the last few seconds, not the average
    /// since the start: a host that fetched fast and then stalled shows 0.
    #[test]
    fn rates_are_current_and_the_lines_say_what_an_operator_asks() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        let mib = 1u64 << 20;
        r.push(t0, &status(0, 0, 0));
        r.push(
            t0 + Duration::from_secs(1),
            &status(100 * mib, 20 * mib, 40 * mib),
        );
        let [rx, rx_wan, tx, tx_wan] = r.per_sec();
        assert_eq!(
            (rx, rx_wan, tx, tx_wan),
            (
                100.0 * mib as f64,
                20.0 * mib as f64,
                40.0 * mib as f64,
                10.0 * mib as f64
            )
        );
        // then nothing for longer than the window: the rate falls to 0
        for k in 2..12 {
            r.push(
                t0 + Duration::from_secs(k),
                &status(100 * mib, 20 * mib, 40 * mib),
            );
        }
        assert_eq!(r.per_sec()[0], 0.0);
        let mut r = Rates::default();
        r.push(t0, &status(0, 0, 0));
        r.push(t0 + Duration::from_secs(2), &status(200 * mib, 50 * mib, 0));
        let s = status(200 * mib, 50 * mib, 0);
        let line = join_line(&s, &r, false);
        for part in [
            "512/2048 pieces, 25% of 2.0 GiB",
            "in 100.0 MiB/s (group 75.0 MiB/s, other groups 25.0 MiB/s)",
            "ETA 15s",
            "group dc-east, peers 12 (done 3)",
        ] {
            assert!(line.contains(part), "{part:?} not in {line:?}");
        }
        let short = join_line(&s, &r, true);
        // "join [" + 12 + "] " = 20 columns of bar
        assert_eq!(
            short,
            "25% of 2.0 GiB 100.0 MiB/s (wan 25.0 MiB/s) ETA 15s 12 peers"
        );
        assert!(
            20 + short.chars().count() <= 80,
            "{} columns: {short}",
            short.chars().count()
        );
        assert!(
            short.contains("25% of 2.0 GiB") && short.contains("ETA 15s"),
            "{short}"
        );
        let seed = seed_line(&status(0, 0, 0), &Rates::default());
        assert_eq!(
            seed,
            "12 hosts connected, 3 complete, out 0 B/s (other groups 0 B/s), served 0 B"
        );
        let ts = timestamp();
        assert!(ts.ends_with('Z') && ts.len() == 20 && ts.is_ascii(), "{ts}");
        assert_eq!(eta(f64::INFINITY), "?");
        assert_eq!(eta(5000.0), "83m");
        assert_eq!(eta(7200.0), "2.0h");
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

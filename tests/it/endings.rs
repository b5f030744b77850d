//! Every run ends with a report and a summary (issue 21): success, failure
//! (the error in the report) and SIGINT or SIGTERM, the normal way to stop
//! a seed (exit 0 for a serving seed, 130 for a join, `"interrupted": true`
//! and the signal in the report).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

/// Asserts the report at `path` is a 0600 file that says the run was
/// interrupted by `sig` (a serving seed: stopped, exit 0; else exit 130);
/// returns it.
fn interrupted_report(path: &Path, sig: &str) -> serde_json::Value {
    let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let r = report(path);
    let (ended, code) = match r["role"] == "seed" {
        true => ("stopped", 0),
        false => ("interrupted", 130),
    };
    assert_eq!(r["ended"], ended, "{r}");
    assert_eq!(r["interrupted"], true, "{r}");
    assert_eq!(r["signal"], sig, "{r}");
    assert_eq!(r["exit_code"], code, "{r}");
    assert!(r["error"].is_null(), "{r}");
    r
}

/// Waits until the joiner's status line shows it has started fetching.
fn wait_started(p: &mut Proc) {
    let t = Instant::now();
    while !p.log_text().contains("join: ") {
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!("{} exited with {st}: {}", p.name, p.log_text());
        }
        assert!(t.elapsed() < LIMIT, "{} never started", p.name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn seed_and_join_write_their_reports_when_stopped_by_sigint_or_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = d.join("img.bin");
    random_file(&image, 8 << 20, 12);
    // slow enough that the joiners are still fetching when signalled
    let mut seed = seed(
        d,
        &image,
        &["--piece-size", "256KiB", "--upload-limit", "1MiB/s"],
    );
    for (name, sig, sig_name) in [
        ("j-int", libc::SIGINT, "SIGINT"),
        ("j-term", libc::SIGTERM, "SIGTERM"),
    ] {
        let mut j = join(d, &seed, name, &[]);
        wait_started(&mut j);
        j.signal(sig);
        let st = j.wait(Duration::from_secs(30));
        assert_eq!(st.code(), Some(130), "{name}: {}", j.log_text());
        let r = interrupted_report(&d.join(format!("{name}.json")), sig_name);
        assert_eq!(r["role"], "join");
        assert_eq!(r["pieces_total"], 32, "{r}");
        assert!(r["output"].is_null(), "{r}");
        let log = j.log_text();
        assert!(log.contains(&format!("interrupted by {sig_name}")), "{log}");
    }
    seed.proc.signal(libc::SIGTERM);
    let st = seed.proc.wait(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", seed.proc.log_text());
    let r = interrupted_report(&seed.report, "SIGTERM");
    assert_eq!(r["role"], "seed");
    assert_eq!(r["pieces_total"], 32, "{r}");
    assert!(r["bytes_served"].as_u64().unwrap() > 0, "{r}");
    let log = seed.proc.log_text();
    assert!(log.contains("seed: 8.0 MiB in"), "no summary: {log}");
    assert!(log.contains("interrupted by SIGTERM"), "{log}");

    // SIGINT (Ctrl-C) on a seed that has served nobody
    let d2 = d.join("second");
    fs::create_dir(&d2).unwrap();
    let mut seed = crate::util::seed(&d2, &image, &[]);
    seed.proc.signal(libc::SIGINT);
    let st = seed.proc.wait(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", seed.proc.log_text());
    interrupted_report(&seed.report, "SIGINT");
}

#[test]
fn reports_say_how_a_run_succeeded_or_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = d.join("img.bin");
    random_file(&image, 1 << 20, 13);
    let mut seed = seed(d, &image, &["--until-done", "1"]);
    let mut j = join(d, &seed, "ok", &["--exit-on-complete"]);
    j.wait_ok(LIMIT);
    seed.proc.wait_ok(LIMIT);
    for path in [d.join("ok.json"), seed.report.clone()] {
        let r = report(&path);
        assert_eq!(r["ended"], "ok", "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert_eq!(r["interrupted"], false, "{r}");
        assert!(r["error"].is_null(), "{r}");
    }
    // the seed is gone now: a join fails to reach it (exit 3), and says so
    // in its report as well as on stderr
    let mut j = join(d, &seed, "gone", &["--connect-timeout", "1s"]);
    assert_eq!(j.wait(LIMIT).code(), Some(3), "{}", j.log_text());
    let r = report(&d.join("gone.json"));
    assert_eq!(r["ended"], "failed", "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("could not reach"), "{r}");
    assert!(j.log_text().contains(error), "{}", j.log_text());
}

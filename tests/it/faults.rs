//! Failing hosts: joiners killed and restarted, a seed that leaves early, a
//! stopped process, a full disk, and many joiners at once. Real processes
//! on loopback; the full-disk test mounts a tmpfs and needs root.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use crate::util::*;

/// A seed of `src` with 256 KiB pieces, uploading at most `rate`, that
/// exits on `exit` (e.g. `["--until-done", "5"]`).
fn limited_seed(d: &Path, src: &Path, exit: [&str; 2], rate: &str) -> Seed {
    seed(
        d,
        src,
        &[
            exit[0],
            exit[1],
            "--piece-size",
            "256KiB",
            "--upload-limit",
            rate,
        ],
    )
}

#[test]
fn seed_leaves_once_every_piece_has_a_copy_and_the_rest_finish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    random_file(&src, 16 << 20, 21);
    // the seed uploads at 4 MiB/s and the joiners at 1 MiB/s: when the
    // seed has sent its copy (about 4 s) the joiners have traded about a
    // quarter of what they need, so they finish well after it left
    let mut seed = limited_seed(d, &src, ["--until-copies", "1"], "4MiB/s");
    let names: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
    let mut joiners: Vec<Proc> = names
        .iter()
        .map(|n| join(d, &seed, n, &["--upload-limit", "1MiB/s"]))
        .collect();
    seed.proc.wait_ok(LIMIT);
    let running = joiners
        .iter_mut()
        .filter_map(|j| j.child.try_wait().unwrap().is_none().then_some(()))
        .count();
    assert!(running > 0, "every joiner was done before the seed left");
    for j in &mut joiners {
        j.wait_ok(LIMIT);
    }
    for n in &names {
        assert_same(&src, &d.join(n).join("image.bin"));
    }
    let served = report(&seed.report)["bytes_served"].as_u64().unwrap();
    eprintln!(
        "the seed served {:.2} copies and left with {running} of 6 joiners unfinished",
        served as f64 / (16 << 20) as f64
    );
}

#[test]
fn joiners_killed_at_random_times_restart_and_fetch_only_what_they_lacked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    random_file(&src, 16 << 20, 22);
    // 2 MiB/s uploads: the copy takes several seconds, so kills land early,
    // midway and late
    let limit = ["--upload-limit", "2MiB/s"];
    let mut seed = limited_seed(d, &src, ["--until-done", "5"], limit[1]);
    let names: Vec<String> = (0..5).map(|i| format!("j{i}")).collect();
    let mut joiners: Vec<Proc> = names.iter().map(|n| join(d, &seed, n, &limit)).collect();
    let start = Instant::now();
    let rng_seed: u64 = rand::random();
    eprintln!("kill schedule from rng seed {rng_seed}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(rng_seed);
    // two of the five, each at a random time in the first 4 s
    let mut kills: Vec<(Duration, usize)> = Vec::new();
    let mut victims: Vec<usize> = (0..joiners.len()).collect();
    for _ in 0..2 {
        let v = victims.swap_remove(rng.random_range(0..victims.len()));
        kills.push((Duration::from_millis(rng.random_range(300..4000)), v));
    }
    kills.sort();
    let mut restarted = Vec::new();
    for (at, v) in kills {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let seen = pieces_seen(&joiners[v]);
        if joiners[v].child.try_wait().unwrap().is_some() {
            eprintln!("{} finished before its kill at {at:?}", names[v]);
            continue;
        }
        joiners[v].kill9();
        eprintln!(
            "killed {} at {at:?}, after it printed {seen} pieces",
            names[v]
        );
        joiners[v] = join(d, &seed, &names[v], &limit);
        restarted.push((v, seen));
    }
    for j in &mut joiners {
        j.wait_ok(LIMIT);
    }
    seed.proc.wait_ok(LIMIT);
    for n in &names {
        assert_same(&src, &d.join(n).join("image.bin"));
    }
    for (v, seen) in restarted {
        let r = report(&d.join(format!("{}.json", names[v])));
        let resumed = r["pieces_resumed"].as_u64().unwrap() as usize;
        let fetched = r["pieces_fetched"].as_u64().unwrap() as usize;
        eprintln!("{}: resumed {resumed}, fetched {fetched}", names[v]);
        assert!(
            resumed >= seen,
            "{}: printed {seen} verified pieces before the kill, resumed {resumed}",
            names[v]
        );
        assert_eq!(resumed + fetched, 64, "{}: fetched a held piece", names[v]);
    }
}

#[test]
fn a_stopped_peer_does_not_hold_up_the_others_and_catches_up_when_continued() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    random_file(&src, 16 << 20, 23);
    let limit = ["--upload-limit", "8MiB/s"];
    let mut seed = limited_seed(d, &src, ["--until-done", "4"], limit[1]);
    let names = ["a", "b", "c", "stopped"];
    let mut joiners: Vec<Proc> = names.iter().map(|n| join(d, &seed, n, &limit)).collect();
    wait_for_pieces(&mut joiners[3], 8);
    joiners[3].signal(libc::SIGSTOP);
    let t = Instant::now();
    for j in &mut joiners[..3] {
        j.wait_ok(LIMIT);
    }
    eprintln!(
        "the others finished {:.1} s after the stop",
        t.elapsed().as_secs_f64()
    );
    joiners[3].signal(libc::SIGCONT);
    joiners[3].wait_ok(LIMIT);
    seed.proc.wait_ok(LIMIT);
    for n in names {
        assert_same(&src, &d.join(n).join("image.bin"));
    }
}

#[test]
fn a_full_disk_fails_clearly_keeps_the_partial_copy_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    let size = 12usize << 20;
    random_file(&src, size, 24);
    let disk = Tmpfs::mount(&d.join("disk"), "16m");
    let dest = disk.0.join("dest");
    fs::create_dir(&dest).unwrap();
    let other = disk.0.join("other.bin");
    random_file(&other, 1 << 20, 25);
    let other_bytes = fs::read(&other).unwrap();

    let mut seed = seed(
        d,
        &src,
        &["--piece-size", "256KiB", "--upload-limit", "4MiB/s"],
    );
    let mut cmd = swarm();
    cmd.arg("join").arg(&seed.ticket).arg(&dest).args([
        "--listen",
        "127.0.0.1:0",
        "--exit-on-complete",
    ]);
    let mut j = Proc::spawn(cmd, "full", d);
    wait_for_pieces(&mut j, 8);
    // something else fills the disk while the copy is under way
    let filler = disk.0.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=64"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    let st = j.wait(LIMIT);
    let log = j.log_text();
    assert_eq!(
        st.code(),
        Some(5),
        "expected the I/O exit code; log:\n{log}"
    );
    assert!(
        log.contains("No space left on device"),
        "the error does not say the disk is full:\n{log}"
    );
    assert_eq!(
        fs::read(&other).unwrap(),
        other_bytes,
        "another file changed"
    );
    let left: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        left.len() == 1 && left[0].ends_with(".partial"),
        "expected only the partial copy, found {left:?}"
    );

    // room again: the same command resumes from the verified pieces
    fs::remove_file(&filler).unwrap();
    let mut cmd = swarm();
    cmd.arg("join")
        .arg(&seed.ticket)
        .arg(&dest)
        .args(["--listen", "127.0.0.1:0", "--exit-on-complete", "--report"])
        .arg(d.join("again.json"));
    let mut again = Proc::spawn(cmd, "again", d);
    again.wait_ok(LIMIT);
    assert_same(&src, &dest.join("image.bin"));
    let r = report(&d.join("again.json"));
    assert!(
        r["pieces_resumed"].as_u64().unwrap() >= 8,
        "nothing was resumed: {r}"
    );
    seed.proc.kill9();
    drop(disk);
}

#[test]
fn sixty_four_joiners_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    random_file(&src, 4 << 20, 26);
    let n = 64;
    let mut seed = seed(
        d,
        &src,
        &["--until-done", &n.to_string(), "--piece-size", "64KiB"],
    );
    let names: Vec<String> = (0..n).map(|i| format!("j{i:02}")).collect();
    // one networking thread each: 64 processes share 2 cores
    let mut joiners: Vec<Proc> = names
        .iter()
        .map(|name| join(d, &seed, name, &["--threads", "1"]))
        .collect();
    for j in &mut joiners {
        j.wait_ok(LIMIT * 2);
    }
    seed.proc.wait_ok(LIMIT);
    let mut peak = 0;
    for name in &names {
        assert_same(&src, &d.join(name).join("image.bin"));
        let r = report(&d.join(format!("{name}.json")));
        peak = peak.max(r["peak_rss_bytes"].as_u64().unwrap());
    }
    eprintln!(
        "peak RSS of a joiner: {:.1} MiB",
        peak as f64 / (1 << 20) as f64
    );
    assert!(peak > 0, "no RSS reported");
    // 63 connections each, in a debug build (release: 33 MiB here): the
    // bound catches memory that grows with peers, not a few MiB more
    assert!(peak < 128 << 20, "a joiner peaked at {peak} bytes");
}

#[test]
fn a_late_joiner_starts_from_a_peer_after_the_seed_left() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    random_file(&src, 4 << 20, 27);
    let mut seed = seed(d, &src, &["--until-copies", "2", "--piece-size", "256KiB"]);
    let seed_addr = swarm::ticket::Ticket::parse(&seed.ticket).unwrap().addrs[0];
    // the early joiners stay a while after finishing, serving latecomers
    let early = |name: &str| {
        let dest = d.join(name);
        fs::create_dir_all(&dest).unwrap();
        let mut cmd = swarm();
        cmd.arg("join").arg(&seed.ticket).arg(&dest).args([
            "--listen",
            "127.0.0.1:0",
            "--linger",
            "60s",
            "-v",
        ]);
        Proc::spawn(cmd, name, d)
    };
    let a = early("a");
    let _b = early("b");
    // a's address, from its log ("listening on ADDR" with -v)
    let t = Instant::now();
    let a_addr = loop {
        let found = a
            .log_text()
            .lines()
            .find_map(|l| Some(l.split("listening on ").nth(1)?.trim().to_string()));
        if let Some(addr) = found {
            break addr;
        }
        assert!(t.elapsed() < LIMIT, "a never said where it listens");
        std::thread::sleep(Duration::from_millis(20));
    };
    seed.proc.wait_ok(LIMIT);

    // the ticket alone names only the seed, which is gone
    let late = d.join("late");
    fs::create_dir(&late).unwrap();
    let late_cmd = |extra: &[&str]| {
        let mut cmd = swarm();
        cmd.arg("join")
            .arg(&seed.ticket)
            .arg(&late)
            .args(["--listen", "127.0.0.1:0", "--exit-on-complete"])
            .args(["--connect-timeout", "3s"])
            .args(extra);
        cmd
    };
    let out = run(late_cmd(&[]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&seed_addr.to_string()), "{err}");

    // with --peer it starts from a host that has the copy
    let out = run(late_cmd(&["--peer", &a_addr]), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&src, &late.join("image.bin"));
}

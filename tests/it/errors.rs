//! Bad input gets a clear error and the documented exit code, in bounded
//! time, and nothing is overwritten.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use swarm::ticket::Ticket;

use crate::util::*;

fn stderr_of(cmd: Command, code: i32) -> String {
    let out = run(cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn join_cmd(ticket: &str, dest: &Path, extra: &[&str]) -> Command {
    let mut c = swarm();
    c.args(["join", ticket])
        .arg(dest)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra);
    c
}

#[test]
fn malformed_ticket_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for t in ["swarm1:notbase32!!", "hello", "swarm1:", "swarm1:aaaa"] {
        let err = stderr_of(join_cmd(t, dir.path(), &[]), 2);
        assert!(err.contains("TICKET"), "{err}");
    }
    let err = stderr_of(join_cmd("@/nonexistent/ticket", dir.path(), &[]), 2);
    assert!(err.contains("cannot read"), "{err}");
}

/// `@FILE` reads at most a ticket's worth; `@-` reads standard input (so
/// the secret need not be on a command line).
#[test]
fn ticket_files_are_bounded_and_stdin_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let err = stderr_of(join_cmd("@/dev/zero", dir.path(), &[]), 2);
    assert!(err.contains("TICKET") && err.contains("/dev/zero"), "{err}");
    let (t, port) = unreachable_ticket();
    let mut c = join_cmd("@-", dir.path(), &["--connect-timeout", "1s"]);
    let f = dir.path().join("t");
    fs::write(&f, format!("{}\n", t.encode())).unwrap();
    c.stdin(fs::File::open(&f).unwrap());
    // the ticket was read from stdin: the join tried its address
    let err = stderr_of(c, 3);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn unreachable_seed_fails_in_bounded_time_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let (t, port) = unreachable_ticket();
    let started = Instant::now();
    let err = stderr_of(
        join_cmd(&t.encode(), dir.path(), &["--connect-timeout", "2s"]),
        3,
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

/// `--connect-timeout` is how long a join keeps trying, not the length of
/// one dial: an address that never answers is dialed again until then.
#[test]
fn an_address_that_never_answers_is_dialed_for_the_whole_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = unreachable_ticket();
    let started = Instant::now();
    let err = stderr_of(
        join_cmd(&t.encode(), dir.path(), &["--connect-timeout", "9s"]),
        3,
    );
    let took = started.elapsed();
    // one dial gives up after 5 s; the join must keep trying to 9 s
    assert!(
        took >= Duration::from_millis(8500),
        "gave up after {took:?}: {err}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        err.contains("within 9s") && err.contains("attempts"),
        "{err}"
    );
}

/// A seed that does not answer yet (here: stopped, as if busy) is reached
/// once it does, within the connect timeout.
#[test]
fn a_seed_that_answers_late_is_reached_within_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, 300_000, 7);
    let mut s = seed(dir.path(), &src, &["--until-done", "1"]);
    s.proc.signal(libc::SIGSTOP);
    let mut j = join(dir.path(), &s, "late", &["--connect-timeout", "40s"]);
    std::thread::sleep(Duration::from_secs(7));
    s.proc.signal(libc::SIGCONT);
    j.wait_ok(LIMIT);
    assert_same(&src, &dir.path().join("late/image.bin"));
    s.proc.wait_ok(LIMIT);
}

#[test]
fn wrong_secret_or_manifest_id_is_a_verification_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 1000, 1);
    let s = seed(dir.path(), &src, &[]);
    let good = Ticket::parse(&s.ticket).unwrap();
    let mut bad_secret = good.clone();
    bad_secret.secret[0] ^= 1;
    let mut bad_id = good.clone();
    bad_id.manifest_id.0[0] ^= 1;
    for t in [bad_secret, bad_id] {
        let dest = tempfile::tempdir().unwrap();
        let err = stderr_of(join_cmd(&t.encode(), dest.path(), &[]), 4);
        assert!(err.contains("rejected the ticket"), "{err}");
        assert_eq!(
            fs::read_dir(dest.path()).unwrap().count(),
            0,
            "wrote something"
        );
    }
}

#[test]
fn existing_destination_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, 200_000, 5);
    let mut s = seed(dir.path(), &src, &["--until-done", "1"]);
    let dest = dir.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("image.bin"), b"precious").unwrap();
    let err = stderr_of(join_cmd(&s.ticket, &dest, &[]), 5);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(dest.join("image.bin")).unwrap(), b"precious");
    let out = run(
        join_cmd(&s.ticket, &dest, &["--force", "--linger", "0s"]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&src, &dest.join("image.bin"));
    s.proc.wait_ok(LIMIT);
}

/// A tmpfs mount removed on drop (the test runs as root, as in CI).
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn not_enough_space_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, 4 << 20, 6);
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let _guard = Tmpfs(small.clone());
    let s = seed(dir.path(), &src, &[]);
    let err = stderr_of(join_cmd(&s.ticket, &small, &[]), 5);
    assert!(err.contains("not enough free space"), "{err}");
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0, "wrote something");
}

#[test]
fn bad_arguments_name_the_argument() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    fs::write(&f, b"x").unwrap();
    let long_group = "g".repeat(65);
    let ticket = swarm::ticket::Ticket {
        manifest_id: swarm::manifest::ManifestId([1; 32]),
        secret: [2; 32],
        addrs: vec!["127.0.0.1:9".parse().unwrap()],
    }
    .encode();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["seed", "/nonexistent/path"], "PATH"),
        (
            vec!["seed", f.to_str().unwrap(), "--piece-size", "5000"],
            "--piece-size",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--piece-size", "lots"],
            "--piece-size",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--upload-limit", "0Mbit/s"],
            "--upload-limit",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--listen", "nowhere"],
            "--listen",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--until-done", "0"],
            "--until-done",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--until-copies", "0"],
            "--until-copies",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--until-copies=-1"],
            "--until-copies",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--wan-limit", "fast"],
            "--wan-limit",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--wan-limit", "0"],
            "--wan-limit",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--wan-limit=-5Mbit/s"],
            "--wan-limit",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--bridges", "0"],
            "--bridges",
        ),
        (vec!["seed", f.to_str().unwrap(), "--group", ""], "--group"),
        (
            vec!["seed", f.to_str().unwrap(), "--group", &long_group],
            "--group",
        ),
        (vec!["join", "swarm1:aaaa", "/nonexistent/dir"], "TICKET"),
        (
            vec!["join", &ticket, "/tmp", "--peer", "somewhere"],
            "--peer",
        ),
        (vec!["demo", "--size", "huge"], "--size"),
        (vec!["demo", "--peers", "0"], "--peers"),
        (
            vec!["--threads", "0", "seed", f.to_str().unwrap()],
            "--threads",
        ),
        (
            vec!["seed", f.to_str().unwrap(), "--threads", "many"],
            "--threads",
        ),
    ];
    for (args, needle) in cases {
        let mut c = swarm();
        c.args(&args);
        let err = stderr_of(c, 2);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

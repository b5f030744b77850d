//! Idempotent and checkable runs (issue 23): a join run again over the
//! identical copy ends at once, "already up to date"; `swarm verify`
//! re-hashes a copy and names the first difference; `swarm inspect` shows
//! an image without its secret; a seed's port is bound before it hashes.

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;

fn tree(at: &Path) {
    fs::create_dir_all(at.join("base/1")).unwrap();
    random_file(&at.join("base/1/big"), 3 << 20, 31);
    random_file(&at.join("base/1/small"), 5000, 32);
    fs::write(at.join("PG_VERSION"), b"17\n").unwrap();
    std::os::unix::fs::symlink("base/1/big", at.join("link")).unwrap();
}

fn cmd(args: &[&str]) -> Command {
    let mut c = swarm();
    c.args(args);
    c
}

fn out(c: Command) -> (Option<i32>, String, String) {
    let o: Output = run(c, Duration::from_secs(60));
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(!se.contains("panicked"), "{se}");
    (o.status.code(), so, se)
}

/// Changes one byte of `f` in place, keeping its size and mtime: only a
/// re-hash finds it.
fn flip_byte_keep_mtime(f: &Path, at: usize) {
    let mtime = fs::metadata(f).unwrap().modified().unwrap();
    let mut data = fs::read(f).unwrap();
    data[at] ^= 0xff;
    fs::write(f, &data).unwrap();
    fs::File::options()
        .write(true)
        .open(f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn a_join_run_again_is_up_to_date_and_verify_names_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("db");
    tree(&src);
    let manifest = d.join("db.manifest");
    let mf = manifest.to_str().unwrap().to_string();
    let mut s = seed(d, &src, &["--piece-size", "256KiB", "--manifest-out", &mf]);
    let ticket_arg = format!("@{}", s.ticket_file.display());
    join(d, &s, "a", &[]).wait_ok(LIMIT);
    let copy = d.join("a/db");
    assert_same(&src, &copy);
    // the report names its peers by address too
    let r = report(&d.join("a.json"));
    let seed_id = r["seed_peer_id"].as_str().unwrap();
    let seen = &r["peers"][seed_id];
    assert!(
        seen["addr"].as_str().unwrap().starts_with("127.0.0.1:") && seen["group"] == "default",
        "{r}"
    );

    // again, without --force: nothing fetched, exit 0, said so
    let mut again = join(d, &s, "a", &[]);
    again.wait_ok(LIMIT);
    let r = report(&d.join("a.json"));
    assert_eq!(r["up_to_date"], true, "{r}");
    assert_eq!(r["bytes_received"], 0);
    assert!(
        again.log_text().contains("already up to date"),
        "{}",
        again.log_text()
    );
    assert_same(&src, &copy);
    // it is a complete host like any other: it says Done, so a seed that
    // waits for one completion (--until-done 1) ends
    let s2_dir = d.join("s2");
    fs::create_dir(&s2_dir).unwrap();
    let mut s2 = seed(
        &s2_dir,
        &src,
        &["--piece-size", "256KiB", "--until-done", "1"],
    );
    join(d, &s2, "a", &[]).wait_ok(LIMIT);
    assert_eq!(report(&d.join("a.json"))["up_to_date"], true);
    s2.proc.wait_ok(LIMIT);

    // verify, from the swarm and from the manifest file
    for image in [ticket_arg.as_str(), mf.as_str()] {
        let (code, so, _) = out(cmd(&["verify", image, copy.to_str().unwrap()]));
        assert_eq!(code, Some(0), "{so}");
        assert!(
            so.starts_with("ok: ") && so.contains("is the image"),
            "{so}"
        );
    }

    // one byte in place, same size and mtime: verify names file and piece
    // (PG_VERSION, small, is packed into piece 0; big starts piece 1, so
    // its byte 600,000 is in piece 1 + 600,000 / 256 KiB = 3)
    flip_byte_keep_mtime(&copy.join("base/1/big"), 600_000);
    let (code, so, _) = out(cmd(&["verify", &mf, copy.to_str().unwrap()]));
    assert_eq!(code, Some(4), "{so}");
    assert!(so.contains("base/1/big: content differs (piece 3)"), "{so}");
    // a join without --force keeps it and says why; with --force only the
    // piece that differs is fetched
    let (code, _, se) = out({
        let mut c = cmd(&["join", &ticket_arg, d.join("a").to_str().unwrap()]);
        c.args(["--listen", "127.0.0.1:0"]);
        c
    });
    assert_eq!(code, Some(5), "{se}");
    assert!(
        se.contains("differs from the image") && se.contains("--force"),
        "{se}"
    );
    join(d, &s, "a", &["--force"]).wait_ok(LIMIT);
    let r = report(&d.join("a.json"));
    assert_eq!(r["up_to_date"], false);
    assert!(
        r["bytes_received"].as_u64().unwrap() < 300 << 10,
        "fetched more than the changed piece: {r}"
    );
    assert_same(&src, &copy);

    // metadata: a mode, then a file that is not in the image
    fs::set_permissions(copy.join("PG_VERSION"), fs::Permissions::from_mode(0o600)).unwrap();
    let (code, so, _) = out(cmd(&["verify", &mf, copy.to_str().unwrap()]));
    assert_eq!(code, Some(4), "{so}");
    assert!(
        so.contains("PG_VERSION: mode 0600, the image has 0644"),
        "{so}"
    );
    fs::set_permissions(copy.join("PG_VERSION"), fs::Permissions::from_mode(0o644)).unwrap();
    let base_mtime = fs::metadata(copy.join("base/1"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(copy.join("base/1/stray"), b"").unwrap();
    fs::File::open(copy.join("base/1"))
        .unwrap()
        .set_modified(base_mtime)
        .unwrap();
    let (code, so, _) = out(cmd(&["verify", &mf, copy.to_str().unwrap()]));
    assert_eq!(code, Some(4), "{so}");
    assert!(so.contains("base/1/stray: not in the image"), "{so}");
    s.proc.signal(libc::SIGTERM);
    s.proc.wait(LIMIT);
}

#[test]
fn inspect_shows_the_image_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("db");
    tree(&src);
    let mf = d.join("db.manifest");
    let mut s = seed(
        d,
        &src,
        &[
            "--piece-size",
            "256KiB",
            "--manifest-out",
            mf.to_str().unwrap(),
        ],
    );
    let ticket = swarm::ticket::Ticket::parse(&s.ticket).unwrap();
    let secret = swarm::node::hex(&ticket.secret);
    let id = swarm::node::hex(&ticket.manifest_id.0);
    let ticket_arg = format!("@{}", s.ticket_file.display());

    let (code, so, se) = out(cmd(&["inspect", &s.ticket]));
    assert_eq!(code, Some(0), "{se}");
    assert!(so.contains(&id), "{so}");
    assert!(so.contains(&ticket.addrs[0].to_string()), "{so}");
    assert!(
        so.contains("3 files, 2 directories, 1 symbolic links"),
        "{so}"
    );
    for text in [&so, &se] {
        assert!(
            !text.contains(&secret) && !text.contains(&s.ticket),
            "{text}"
        );
    }

    let (code, so, _) = out(cmd(&["inspect", "--json", &ticket_arg]));
    assert_eq!(code, Some(0));
    let j: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["name"], "db");
    assert_eq!(j["piece_size"], 256 << 10);
    assert_eq!(j["entries"].as_array().unwrap().len(), 6);
    let link = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "link")
        .unwrap();
    assert_eq!(link["target"], "base/1/big");
    assert!(!so.contains(&secret));

    // the manifest file: the same image, no addresses
    let (code, so, _) = out(cmd(&["inspect", "--json", mf.to_str().unwrap()]));
    assert_eq!(code, Some(0));
    let j: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["addrs"].as_array().unwrap().len(), 0);
    s.proc.signal(libc::SIGTERM);
    s.proc.wait(LIMIT);
}

#[test]
fn verify_and_inspect_refuse_bad_input_with_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("f");
    random_file(&src, 100_000, 3);
    let garbage = d.join("garbage");
    fs::write(&garbage, b"not a manifest at all").unwrap();
    let missing = d.join("missing");
    let (g, m, s) = (
        garbage.to_str().unwrap(),
        missing.to_str().unwrap(),
        src.to_str().unwrap(),
    );
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["verify", g, s], 2, "not a swarm manifest"),
        (vec!["inspect", g], 2, "not a swarm manifest"),
        (vec!["inspect", m], 2, "neither a ticket"),
        (
            vec!["inspect", "swarm1:aaaa"],
            2,
            "not a valid swarm ticket",
        ),
        (vec!["inspect", "@/nonexistent/t"], 2, "cannot read"),
        (vec!["verify", g, m], 2, "PATH"),
        (
            vec!["inspect", g, "--connect-timeout", "soon"],
            2,
            "--connect-timeout",
        ),
    ];
    for (args, code, what) in cases {
        let (got, _, se) = out(cmd(&args));
        assert_eq!(got, Some(code), "{args:?}: {se}");
        assert!(se.contains(what), "{args:?}: {se} lacks {what:?}");
    }
    // a ticket whose hosts are gone: the network code, in bounded time
    let (t, _) = unreachable_ticket();
    let (got, _, se) = out(cmd(&["inspect", &t.encode(), "--connect-timeout", "1s"]));
    assert_eq!(got, Some(3), "{se}");
}

/// The seed binds its port before hashing: a port in use fails at once,
/// before any manifest exists (the report has none).
#[test]
fn a_seed_port_in_use_fails_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("f");
    random_file(&src, 1 << 20, 4);
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let rep = d.join("r.json");
    let (code, _, se) = out(cmd(&[
        "seed",
        src.to_str().unwrap(),
        "--listen",
        &addr,
        "--report",
        rep.to_str().unwrap(),
    ]));
    assert_eq!(code, Some(3), "{se}");
    assert!(se.contains(&addr), "{se}");
    let r = report(&rep);
    assert_eq!(r["pieces_total"], 0, "hashed before binding: {r}");
    assert_eq!(r["manifest_id"], "");
    // a --manifest-out that cannot be written fails as early, naming it
    let (code, so, se) = out(cmd(&[
        "seed",
        src.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--manifest-out",
        "/nonexistent/dir/m",
    ]));
    assert_eq!(code, Some(5), "{se}");
    assert!(
        se.contains("--manifest-out") && se.contains("/nonexistent/dir/m"),
        "{se}"
    );
    assert!(so.is_empty(), "a ticket was printed");
}

/// An unprivileged run past net.core.rmem_max/wmem_max gets smaller UDP
/// buffers than swarm asks for: it says so once, naming the sysctls; as
/// root (the FORCE socket options) nothing is capped and nothing said.
#[test]
fn capped_udp_buffers_are_named_once_for_unprivileged_runs() {
    let sysctl = |n: &str| {
        fs::read_to_string(format!("/proc/sys/net/core/{n}"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let capped = sysctl("rmem_max") < 16 << 20 || sysctl("wmem_max") < 16 << 20;
    let ticket = unreachable_ticket().0.encode();
    let args = ["inspect", ticket.as_str(), "--connect-timeout", "1s"];
    // as nobody (the binary lies under root's target dir, readable to all)
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_swarm"))
        .args(args);
    let (code, _, se) = out(c);
    assert_eq!(code, Some(3), "{se}");
    let warned = se.matches("net.core.rmem_max=").count();
    assert_eq!(warned, usize::from(capped), "capped {capped}: {se}");
    let (code, _, se) = out(cmd(&args));
    assert_eq!(code, Some(3), "{se}");
    assert!(!se.contains("net.core.rmem_max="), "root was capped: {se}");
}

/// `swarm seed --state DIR --listen ADDR` on `src`: its ticket and stderr
/// once it has printed the ticket, then stopped (SIGTERM).
fn seed_once(d: &Path, src: &Path, state: &Path, listen: &str) -> (String, String) {
    let tf = d.join("state-ticket");
    let _ = fs::remove_file(&tf);
    let mut c = swarm();
    c.arg("seed")
        .arg(src)
        .args(["--listen", listen, "--state"])
        .arg(state)
        .arg("--ticket-file")
        .arg(&tf);
    let mut p = Proc::spawn(c, "state-seed", d);
    let t = std::time::Instant::now();
    while !tf.exists() {
        assert!(p.child.try_wait().unwrap().is_none(), "{}", p.log_text());
        assert!(t.elapsed() < LIMIT, "no ticket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ticket = fs::read_to_string(&tf).unwrap().trim().to_string();
    p.signal(libc::SIGTERM);
    p.wait(LIMIT);
    (ticket, p.log_text())
}

#[test]
fn a_seed_restarted_with_its_state_keeps_its_ticket_until_the_path_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("db");
    tree(&src);
    // what changed in the second before the hashing is not kept
    let settle = || std::thread::sleep(Duration::from_millis(2100));
    settle();
    let state = d.join("state");
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (first, log) = seed_once(d, &src, &state, &listen);
    assert!(!log.contains("unchanged since the last run"), "{log}");
    let (again, log) = seed_once(d, &src, &state, &listen);
    assert_eq!(first, again, "another ticket for the same path");
    assert!(log.contains("unchanged since the last run"), "{log}");
    // DIR/manifest is a manifest file
    let (code, so, se) = out(cmd(&["inspect", state.join("manifest").to_str().unwrap()]));
    assert_eq!(code, Some(0), "{se}");
    let id = swarm::node::hex(&swarm::ticket::Ticket::parse(&first).unwrap().manifest_id.0);
    assert!(so.contains(&id), "{so}");
    // a file grown: hashed again, a new ticket
    fs::OpenOptions::new()
        .append(true)
        .open(src.join("base/1/small"))
        .unwrap()
        .write_all(b"more")
        .unwrap();
    settle();
    let (changed, log) = seed_once(d, &src, &state, &listen);
    assert_ne!(changed, first);
    assert!(!log.contains("unchanged since the last run"), "{log}");
    // and that one comes back in turn
    let (kept, _) = seed_once(d, &src, &state, &listen);
    assert_eq!(kept, changed);

    // a DIR others may write is refused, naming it
    let open = d.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = swarm();
    c.arg("seed")
        .arg(&src)
        .args(["--listen", "127.0.0.1:0", "--state"])
        .arg(&open);
    let (code, so, se) = out(c);
    assert_eq!(code, Some(5), "{se}");
    assert!(
        se.contains("--state") && se.contains("writable by others"),
        "{se}"
    );
    assert!(so.is_empty(), "a ticket was printed");
}

//! `--advertise`: the address in the ticket and the one peers are told is
//! the advertised one, not the listen address (a host behind NAT or in a
//! pod is reached at an address it does not see on its own interfaces).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use swarm::ticket::Ticket;

use crate::util::*;

/// A UDP port free on all interfaces just now.
fn free_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A seed on `listen`, advertising `advertise`; waits for its ticket.
fn seed_at(dir: &Path, image: &Path, listen: &str, advertise: &str) -> (Proc, Ticket) {
    let ticket_file = dir.join(format!("ticket-{advertise}"));
    let mut cmd = swarm();
    cmd.arg("seed")
        .arg(image)
        .args(["--listen", listen, "--advertise", advertise])
        .arg("--ticket-file")
        .arg(&ticket_file);
    let mut proc = Proc::spawn(cmd, &format!("seed-{advertise}"), dir);
    wait_file(&mut proc, &ticket_file);
    let text = fs::read_to_string(&ticket_file).unwrap();
    (proc, Ticket::parse(text.trim()).unwrap())
}

fn join_cmd(ticket: &Ticket, dest: &Path) -> Command {
    let mut c = swarm();
    c.args(["join", &ticket.encode()])
        .arg(dest)
        .args(["--listen", "127.0.0.1:0", "--exit-on-complete"])
        .args(["--connect-timeout", "3s"]);
    c
}

#[test]
fn the_ticket_names_the_advertised_address_and_joins_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    random_file(&image, 3 << 20, 41);
    // listening everywhere, reached at another loopback address: what a
    // NAT's outside address is to a host behind it
    let port = free_port();
    let outside = format!("127.0.0.9:{port}");
    let (mut seed, ticket) = seed_at(dir.path(), &image, &format!("0.0.0.0:{port}"), &outside);
    assert_eq!(
        ticket.addrs,
        vec![outside.parse().unwrap()],
        "the ticket holds exactly the advertised address"
    );
    let dest = dir.path().join("d");
    fs::create_dir(&dest).unwrap();
    let out = run(join_cmd(&ticket, &dest), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(&image, &dest.join("img"));
    seed.signal(libc::SIGTERM);
    seed.wait_ok(Duration::from_secs(20));
}

#[test]
fn a_wrong_advertised_address_is_what_joins_try_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    random_file(&image, 1 << 20, 42);
    // the seed listens on one port and advertises another nobody serves:
    // the join must dial the advertised one (and so fail, naming it)
    let wrong = format!("127.0.0.1:{}", free_port());
    let (mut seed, ticket) = seed_at(dir.path(), &image, "127.0.0.1:0", &wrong);
    let dest = dir.path().join("d");
    fs::create_dir(&dest).unwrap();
    let out = run(join_cmd(&ticket, &dest), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(&wrong), "{err}");
    assert!(
        fs::read_dir(&dest).unwrap().next().is_none(),
        "nothing written"
    );
    seed.signal(libc::SIGTERM);
    seed.wait_ok(Duration::from_secs(20));
}

#[test]
fn bad_advertise_values_are_usage_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    random_file(&image, 4096, 43);
    for bad in [
        "0.0.0.0:7000",
        "10.0.0.1:0",
        "10.0.0.1",
        "host.example:7000",
        "224.0.0.1:7000",
    ] {
        for sub in ["seed", "join"] {
            let mut c = swarm();
            if sub == "seed" {
                c.arg("seed").arg(&image);
            } else {
                let (t, _) = unreachable_ticket();
                c.args(["join", &t.encode()]).arg(dir.path());
            }
            c.args(["--advertise", bad]);
            let out = run(c, Duration::from_secs(30));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {bad}: {err}");
            assert!(
                err.contains("--advertise") && !err.contains("panicked"),
                "{err}"
            );
        }
    }
}

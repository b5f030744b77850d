//! Before the proof: what an outsider without the ticket can do to a host
//! (hold connections idle, send garbage, offer another protocol version),
//! and what a host tells a listener that holds no secret. Real processes,
//! real QUIC on loopback; the outsiders are test code (`idler.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use swarm::node::auth::{self, Role};
use swarm::ticket::Ticket;
use swarm::wire::PROTOCOL_VERSION;

use crate::idler::{self, Behaviour, Idlers};
use crate::util::*;

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// An honest join's figures, from its report and its process.
struct Timed {
    /// From start until the copy was complete (the report's `complete_secs`).
    complete: f64,
    /// From spawn until exit (the join lingers 0 s).
    wall: f64,
}

fn timed_join(d: &Path, seed: &Seed, name: &str) -> Timed {
    let t = Instant::now();
    let mut j = join(d, seed, name, &["--linger", "0s", "--exit-on-complete"]);
    j.wait_ok(LIMIT);
    let wall = t.elapsed().as_secs_f64();
    let r = report(&d.join(format!("{name}.json")));
    Timed {
        complete: r["complete_secs"].as_f64().unwrap(),
        wall,
    }
}

/// Resident memory of a process we started, from /proc.
fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|k| k.trim().parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

/// CPU seconds (user and system) a process we started has used, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name, which is in parentheses
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here
    (ticks(11) + ticks(12)) / 100.0
}

/// A clean join, then the same join while `attack` runs against the seed:
/// the attacked join must complete, within twice the clean time plus a
/// margin for the attackers' own CPU (they share the 2 cores). Prints both.
async fn join_under_attack(what: &str, attack: impl FnOnce(SocketAddr) -> Idlers) -> Idlers {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    random_file(&src, 32 << 20, 41);
    let seed = seed(&d, &src, &[]);
    let target = Ticket::parse(&seed.ticket).unwrap().addrs[0];
    let (d2, seed) = (d.clone(), Arc::new(seed));
    let s2 = seed.clone();
    let clean = tokio::task::spawn_blocking(move || timed_join(&d2, &s2, "clean"))
        .await
        .unwrap();
    let rss_before = rss_mib(seed.proc.child.id());
    let t = Ticket::parse(&seed.ticket).unwrap();
    let probe_clean = idler::probe(&t, 20).await;

    let pid = seed.proc.child.id();
    let (cpu0, own0) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let idlers = attack(target);
    // past the first wave: every slot has been refused, closed or is held
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss_attacked = rss_mib(pid);
    let (cpu1, own1) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let probe_attacked = idler::probe(&t, 20).await;
    eprintln!(
        "{what}: honest handshakes, clean: {}\n  under attack: {}",
        idler::probe_summary(&probe_clean),
        idler::probe_summary(&probe_attacked)
    );
    let (d2, s2) = (d.clone(), seed.clone());
    let attacked = tokio::task::spawn_blocking(move || timed_join(&d2, &s2, "attacked"))
        .await
        .unwrap();
    assert_same(&src, &d.join("clean/image.bin"));
    assert_same(&src, &d.join("attacked/image.bin"));
    eprintln!(
        "{what}: clean join complete after {:.3} s (exit {:.3} s), under attack {:.3} s \
         (exit {:.3} s): {:.2} x; seed RSS {rss_before:.0} MiB before, {rss_attacked:.0} MiB \
         under attack; CPU in the 4 s before the join: seed {:.2} s, attackers {:.2} s\n  \
         attackers: {}",
        clean.complete,
        clean.wall,
        attacked.complete,
        attacked.wall,
        attacked.complete / clean.complete,
        cpu1 - cpu0,
        own1 - own0,
        idlers.summary()
    );
    // honest handshakes alone, without process start-up: a loaded machine
    // makes some take a few hundred ms; a retry whose connection ID clashed
    // with a live one took 2-4 s (`CID_LEN` in src/node/run.rs)
    let took = |r: &[Result<Duration, String>]| {
        let mut ok: Vec<Duration> = r.iter().map(|x| *x.as_ref().unwrap()).collect();
        ok.sort();
        (ok[ok.len() / 2], ok[ok.len() - 1])
    };
    // Bounds with room for a CI machine running other tests at once: the
    // goal (2 x the clean time) is what the printed figures show
    // (docs/security.md); before protocol 4 these joins and handshakes
    // failed outright.
    let (median, max) = took(&probe_attacked);
    assert!(
        median < Duration::from_millis(1000) && max < Duration::from_millis(5000),
        "{what}: honest handshakes under attack took {median:?} (median), {max:?} at most"
    );
    assert!(
        attacked.complete < 2.0 * clean.complete + 5.0,
        "{what}: the join took {:.3} s under attack, {:.3} s without",
        attacked.complete,
        clean.complete
    );
    idlers
}

/// The host closes an idle outsider's connection within its pre-auth
/// deadline (3 s, with room for a loaded machine), not the 15 s it took
/// before.
fn assert_short_hold(i: &Idlers) {
    let held = i.seen.lock().unwrap().longest_held;
    assert!(
        held < Duration::from_millis(6000),
        "an idle pre-auth connection was held {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_do_not_hold_up_a_join() {
    let i = join_under_attack("1,000 idle connections from 127.0.0.2", |target| {
        idler::start(target, &[lo(2)], 16, 1000, Behaviour::Idle)
    })
    .await;
    assert_short_hold(&i);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_many_addresses_do_not_hold_up_a_join() {
    let sources: Vec<IpAddr> = (2..34).map(lo).collect();
    let i = join_under_attack("256 idle connections from 32 addresses", |target| {
        idler::start(target, &sources, 2, 256, Behaviour::Idle)
    })
    .await;
    assert_short_hold(&i);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_the_proof_does_not_hold_up_a_join() {
    let sources: Vec<IpAddr> = (2..10).map(lo).collect();
    let mut both = Vec::new();
    join_under_attack(
        "1,000 connections sending garbage or partial frames",
        |target| {
            both.push(idler::start(target, &sources, 4, 500, Behaviour::Partial));
            idler::start(target, &sources, 4, 500, Behaviour::Garbage)
        },
    )
    .await;
    assert_short_hold(&both[0]);
    eprintln!("  partial frames: {}", both[0].summary());
}

/// A connection and every byte received on its streams, in order.
type Received = (quinn::Connection, Vec<u8>);

/// A listener that holds no secret, test code acting as the acceptor,
/// records every byte a real `swarm join` sends it: nothing but the
/// dialer's proof, as one 37-byte frame; no manifest id, peer id, group or
/// port. The listener then refuses it as a host would (code 1), and the
/// joiner reports a rejected ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_sends_only_its_proof_to_a_host_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = swarm::node::tls::configs(&Default::default(), Default::default()).unwrap();
    let ep = quinn::Endpoint::server(cfg.server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let t = Ticket {
        manifest_id: swarm::manifest::ManifestId(rand::random()),
        secret: rand::random(),
        addrs: vec![ep.local_addr().unwrap()],
    };
    let got: Arc<Mutex<Vec<Received>>> = Default::default();
    let (g, e) = (got.clone(), ep.clone());
    tokio::spawn(async move {
        while let Some(inc) = e.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let mut bytes = Vec::new();
                let listen = async {
                    loop {
                        tokio::select! {
                            s = conn.accept_bi() => {
                                let Ok((_s, mut r)) = s else { break };
                                let mut buf = [0u8; 4096];
                                while let Ok(Some(n)) = r.read(&mut buf).await {
                                    bytes.extend_from_slice(&buf[..n]);
                                }
                            }
                            s = conn.accept_uni() => {
                                let Ok(mut r) = s else { break };
                                bytes.extend(r.read_to_end(1 << 20).await.unwrap_or_default());
                            }
                            d = conn.read_datagram() => {
                                let Ok(d) = d else { break };
                                bytes.extend_from_slice(&d);
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(2000), listen).await;
                conn.close(1u32.into(), b"auth failed");
                g.lock().unwrap().push((conn, bytes));
            });
        }
    });
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    // the joiner's own port, to look for it in what it sent
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = swarm();
    cmd.arg("join").arg(t.encode()).arg(&dest);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--connect-timeout", "10s"]);
    let out = tokio::task::spawn_blocking(move || run(cmd, LIMIT))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let got = got.lock().unwrap();
    assert!(!got.is_empty(), "the joiner never connected: {err}");
    for (conn, bytes) in got.iter() {
        let proof = auth::proof(conn, &t.secret, Role::Dialer).unwrap();
        let mut want = vec![33, 0, 0, 0, 7];
        want.extend_from_slice(&proof);
        eprintln!("received {} bytes: {bytes:02x?}", bytes.len());
        assert_eq!(
            bytes, &want,
            "the joiner sent more than its proof to a host that proved nothing"
        );
        assert!(!contains(bytes, &t.manifest_id.0), "manifest id leaked");
        assert!(
            !contains(bytes, &port.to_le_bytes()),
            "the joiner's port leaked"
        );
    }
    assert_eq!(out.status.code(), Some(4), "stderr: {err}");
    assert!(err.contains("rejected the ticket"), "{err}");
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A client offering another version's ALPN (older or newer) completes
/// TLS and is closed with the protocol code (2) and a reason naming both
/// versions, not a TLS alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_protocol_version_is_closed_with_the_version_reason() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 1000, 1);
    let s = seed(dir.path(), &src, &[]);
    let t = Ticket::parse(&s.ticket).unwrap();
    for v in [PROTOCOL_VERSION - 1, 1, PROTOCOL_VERSION + 1] {
        let alpn = format!("swarm/{v}");
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(idler::client_config_with_alpn(alpn.as_bytes()));
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            let conn = ep.connect(t.addrs[0], "swarm").unwrap().await?;
            Ok::<_, quinn::ConnectionError>(conn.closed().await)
        })
        .await
        .expect("no close within 10 s");
        match r {
            Ok(quinn::ConnectionError::ApplicationClosed(c)) => {
                let reason = String::from_utf8_lossy(&c.reason).to_string();
                eprintln!("{alpn}: closed with code {} {reason:?}", c.error_code);
                assert_eq!(c.error_code, 2u32.into(), "{alpn}: {reason}");
                assert!(
                    reason.contains(&format!("version {v}"))
                        && reason.contains(&PROTOCOL_VERSION.to_string()),
                    "{alpn}: the reason names not both versions: {reason}"
                );
            }
            other => panic!("{alpn}: expected the protocol close code, got {other:?}"),
        }
    }
}

/// A joiner that reaches a host speaking an older version exits 4 with a
/// message naming both versions, having sent that host nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_names_the_version_of_a_host_that_speaks_another() {
    let dir = tempfile::tempdir().unwrap();
    let old = PROTOCOL_VERSION - 1;
    let ep = quinn::Endpoint::server(
        idler::server_config_with_alpn(format!("swarm/{old}").as_bytes()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let t = Ticket {
        manifest_id: swarm::manifest::ManifestId(rand::random()),
        secret: rand::random(),
        addrs: vec![ep.local_addr().unwrap()],
    };
    let received = Arc::new(Mutex::new(0usize));
    let (r2, e) = (received.clone(), ep.clone());
    tokio::spawn(async move {
        while let Some(inc) = e.accept().await {
            let r2 = r2.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                // an old host waits for the dialer's first frame
                while let Ok((_s, mut r)) = conn.accept_bi().await {
                    let mut buf = [0u8; 4096];
                    while let Ok(Some(n)) = r.read(&mut buf).await {
                        *r2.lock().unwrap() += n;
                    }
                }
            });
        }
    });
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut cmd = swarm();
    cmd.arg("join").arg(t.encode()).arg(&dest).args([
        "--listen",
        "127.0.0.1:0",
        "--connect-timeout",
        "10s",
    ]);
    let out = tokio::task::spawn_blocking(move || run(cmd, LIMIT))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(4), "stderr: {err}");
    assert!(
        err.contains(&format!("version {old}")) && err.contains(&PROTOCOL_VERSION.to_string()),
        "the message names not both versions: {err}"
    );
    assert_eq!(*received.lock().unwrap(), 0, "the joiner sent bytes");
}

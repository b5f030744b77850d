//! Peers that misbehave on the wire are dropped; honest hosts finish.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use swarm::node::auth::{self, Role};
use swarm::node::tls::{self, Tuning};
use swarm::ticket::Ticket;
use swarm::wire::{Hello, Message, PROTOCOL_VERSION};

use crate::util::*;

struct Hostile {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _ep: quinn::Endpoint,
}

/// Connects to `addr` and sends a proof, valid or not.
async fn connect(addr: SocketAddr, t: &Ticket, valid_proof: bool) -> Hostile {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(tls::client_config(&Tuning::default()).unwrap());
    let conn = ep.connect(addr, "swarm").unwrap().await.unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let proof = if valid_proof {
        auth::proof(&conn, &t.secret, Role::Dialer).unwrap()
    } else {
        [7; 32]
    };
    send.write_all(&Message::Proof(proof).encode_frame())
        .await
        .unwrap();
    Hostile {
        conn,
        send,
        recv,
        _ep: ep,
    }
}

async fn closed_with(conn: &quinn::Connection) -> u64 {
    let e = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("peer was not dropped");
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("closed by {other}"),
    }
}

/// Authenticates properly (proofs, then the Hellos), sends `bytes`, and
/// returns the code the peer closes the connection with.
async fn authed_then_send(addr: SocketAddr, t: &Ticket, bytes: &[u8]) -> u64 {
    let mut h = connect(addr, t, true).await;
    assert!(matches!(
        read_frame(&mut h.recv).await,
        Some(Message::Proof(_))
    ));
    assert!(matches!(
        read_frame(&mut h.recv).await,
        Some(Message::Hello(_))
    ));
    tls::open_up(&h.conn, &Tuning::default());
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        manifest_id: t.manifest_id,
        peer_id: rand::random(),
        since: 0,
        group: "default".into(),
        addrs: vec![],
    });
    h.send.write_all(&hello.encode_frame()).await.unwrap();
    let _ = h.send.write_all(bytes).await;
    closed_with(&h.conn).await
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Option<Message> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; Message::frame_len(len).ok()?];
    recv.read_exact(&mut body).await.ok()?;
    Message::decode(&body).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_dropped_and_honest_ones_finish() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    random_file(&src, 8 << 20, 3);
    let seed = seed(&d, &src, &["--until-done", "2", "--piece-size", "256KiB"]);
    let t = Ticket::parse(&seed.ticket).unwrap();
    let addr = t.addrs[0];

    // no valid proof: closed, and nothing about the swarm is sent
    let mut h = connect(addr, &t, false).await;
    assert!(
        read_frame(&mut h.recv).await.is_none(),
        "an unauthenticated peer got a message"
    );
    assert_eq!(
        closed_with(&h.conn).await,
        1,
        "expected the auth close code"
    );

    // valid proof, then an oversized frame length
    let mut oversized = u32::MAX.to_le_bytes().to_vec();
    oversized.extend([0u8; 64]);
    authed_then_send(addr, &t, &oversized).await;

    // valid proof, then a Have for a piece that does not exist
    let code = authed_then_send(addr, &t, &Message::Have(1 << 30).encode_frame()).await;
    assert_eq!(code, 2, "expected the protocol close code");

    // garbage message type
    authed_then_send(addr, &t, &[3, 0, 0, 0, 0xee, 1, 2]).await;

    // honest joiners still finish, with a hostile peer attacking one of them
    let d2 = d.clone();
    let honest = tokio::task::spawn_blocking(move || {
        let mut a = join(&d2, &seed, "a", &[]);
        let mut b = join(&d2, &seed, "b", &[]);
        a.wait_ok(LIMIT);
        b.wait_ok(LIMIT);
        let mut seed = seed;
        seed.proc.wait_ok(LIMIT);
    });
    honest.await.unwrap();
    assert_same(&src, &d.join("a/image.bin"));
    assert_same(&src, &d.join("b/image.bin"));
}

/// Sources that lie, corrupt, stall, trickle or reset: every honest joiner
/// still ends with a verified copy, the corrupting peer is banned after its
/// first bad piece, and a finished joiner does not wait for the hostile
/// peers to finish (they claim every piece, or go quiet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sources_do_not_stop_honest_joiners() {
    use crate::adversary::{self, Mode};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    // More pieces than a joiner has in flight, so its first requests go to
    // distinct pieces, the corrupt peer's among them, and are not endgame
    // duplicates an honest copy could overtake (with 8 MiB every request
    // was one, and in some runs no corrupt piece was ever completed).
    let (size, piece) = (32u64 << 20, 256u64 << 10);
    random_file(&src, size as usize, 11);
    // The seed uploads slowly, so that the corrupt peer's answers (random
    // bytes, sent at once) arrive before any honest copy of the same piece.
    // Without the limit the honest hosts, fast on loopback, sometimes won
    // every race, the corrupt pieces were dropped as late duplicates, never
    // verified, and nobody was banned.
    let seed = slow_seed(&d, &src, "8MiB/s");
    let t = Ticket::parse(&seed.ticket).unwrap();
    let mut adversaries = Vec::new();
    for mode in [
        Mode::Corrupt,
        Mode::Silent,
        Mode::Trickle,
        Mode::Liar,
        Mode::Reset,
        Mode::Mute,
    ] {
        adversaries.push(adversary::start(mode, &t, size, piece).await);
    }
    // The banned peer comes back under a new id as soon as it is closed;
    // the joiners stay up a while after they finish so that a ban late in
    // the download still meets a running host.
    joiners_a_b_c_then_seed_exit(&d, seed, &["--linger", "5s"]).await;

    let mut corrupt = 0;
    for n in ["a", "b", "c"] {
        assert_same(&src, &d.join(n).join("image.bin"));
        let r = report(&d.join(format!("{n}.json")));
        eprintln!(
            "{n}: complete after {:.1} s, {} corrupt pieces",
            r["complete_secs"].as_f64().unwrap(),
            r["pieces_corrupt"]
        );
        corrupt += r["pieces_corrupt"].as_u64().unwrap();
        // bounded: a few request deadlines (11 s for these pieces), not a hang
        assert!(
            r["complete_secs"].as_f64().unwrap() < 60.0,
            "{n} took too long"
        );
    }
    // the comeback's outcome is recorded asynchronously: wait for it
    let t = std::time::Instant::now();
    for a in adversaries.iter().filter(|a| a.mode == Mode::Corrupt) {
        while t.elapsed() < std::time::Duration::from_secs(10) {
            let tried = {
                let seen = a.seen.lock().unwrap();
                seen.comebacks_refused + seen.comebacks_not_refused > 0
            };
            if tried {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    for a in &adversaries {
        let seen = a.seen.lock().unwrap();
        eprintln!(
            "{:?}: {} requests, connections {:?}, comebacks refused {}, not refused {}",
            a.mode,
            seen.requests,
            seen.connections.values().collect::<Vec<_>>(),
            seen.comebacks_refused,
            seen.comebacks_not_refused
        );
    }
    for a in &adversaries {
        let seen = a.seen.lock().unwrap();
        if a.mode != Mode::Mute {
            assert!(
                seen.requests > 0,
                "{:?} was never asked for a piece",
                a.mode
            );
        }
        if a.mode == Mode::Corrupt {
            assert!(
                seen.connections.values().all(|&n| n == 1),
                "a joiner reconnected to the peer that served a corrupt piece"
            );
            assert_eq!(
                seen.comebacks_not_refused, 0,
                "a host took the banned peer back under a new id"
            );
            assert!(seen.comebacks_refused > 0, "the comeback was not tried");
        }
    }
    assert!(corrupt > 0, "no joiner counted the corrupt pieces");
}

/// Deltas against hostile sources: one sends random bytes for every
/// answer; one answers Delta requests with random blocks or with every
/// block said to be zeros, and outboards truthfully. Joiners that hold
/// the old version drop both as corrupt, never write a bad block, and end
/// with the right copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_delta_sources_are_dropped() {
    use crate::adversary::{self, Mode};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (size, piece) = (16u64 << 20, 256u64 << 10);
    let src = d.join("image.bin");
    random_file(&src, size as usize, 21);
    let new = fs::read(&src).unwrap();
    // the old version: every fourth 16 KiB page differs
    let mut old = new.clone();
    for page in old.chunks_mut(16 << 10).step_by(4) {
        page[0] ^= 0xff;
    }
    for n in ["a", "b", "c"] {
        fs::create_dir_all(d.join(n)).unwrap();
        fs::write(d.join(n).join("image.bin"), &old).unwrap();
    }
    let seed = slow_seed(&d, &src, "2MiB/s");
    let t = Ticket::parse(&seed.ticket).unwrap();
    let data = Arc::new(new);
    let bad = [
        adversary::start_with(Mode::Corrupt, &t, size, piece, data.clone()).await,
        adversary::start_with(Mode::BadBlocks, &t, size, piece, data.clone()).await,
    ];
    joiners_a_b_c_then_seed_exit(&d, seed, &["--force", "--linger", "2s"]).await;
    let mut corrupt = 0;
    for n in ["a", "b", "c"] {
        assert_same(&src, &d.join(n).join("image.bin"));
        let r = report(&d.join(format!("{n}.json")));
        corrupt += r["pieces_corrupt"].as_u64().unwrap();
        assert!(r["bytes_from_basis"].as_u64().unwrap() > size / 2, "{r}");
    }
    assert!(corrupt >= 2, "{corrupt} corrupt pieces counted");
    for a in &bad {
        let seen = a.seen.lock().unwrap();
        assert!(seen.requests > 0, "{:?} was never asked", a.mode);
        if a.mode == Mode::BadBlocks {
            assert!(
                seen.blocks_requests > 0,
                "it was asked for no delta's blocks"
            );
            // its bad Delta answers do not make the piece's hash: the
            // joiner asks for the outboard, which shows the lie
            assert!(
                seen.outboard_requests > 0,
                "its Delta answers led to no Outboard request"
            );
        }
        assert!(
            seen.connections.values().all(|&n| n == 1),
            "{:?}: a joiner came back to it",
            a.mode
        );
    }
}

/// The first host a joiner reaches refuses the manifest: the joiner takes it
/// from the next one (here a `--peer` address) instead of giving up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_comes_from_the_next_host_when_the_first_refuses() {
    use crate::adversary::{self, Mode};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    random_file(&src, 2 << 20, 12);
    let seed = seed(&d, &src, &["--piece-size", "256KiB"]);
    let t = Ticket::parse(&seed.ticket).unwrap();
    let liar = adversary::start(Mode::Liar, &t, 2 << 20, 256 << 10).await;
    // a ticket that names only the liar; the seed comes as --peer, and is
    // stopped until the liar has refused, so the order is certain
    let mut via_liar = t.clone();
    via_liar.addrs = vec![liar.addr];
    let pid = seed.proc.child.id() as libc::pid_t;
    // SAFETY: signals to our own child, which has not been waited for.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let dest = d.join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut cmd = swarm();
    cmd.arg("join")
        .arg(via_liar.encode())
        .arg(&dest)
        .args(["--listen", "127.0.0.1:0", "--exit-on-complete", "-v"])
        .arg("--peer")
        .arg(t.addrs[0].to_string());
    let mut j = Proc::spawn(cmd, "join", &d);
    let t0 = std::time::Instant::now();
    while liar.seen.lock().unwrap().manifest_requests == 0 {
        assert!(t0.elapsed() < LIMIT, "the joiner never asked the liar");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let j = tokio::task::spawn_blocking(move || {
        j.wait_ok(LIMIT);
        j
    })
    .await
    .unwrap();
    assert_same(&src, &dest.join("image.bin"));
    assert!(
        j.log_text().contains("trying the other hosts"),
        "no fallback in the log:\n{}",
        j.log_text()
    );
    drop(seed);
}

/// Clients that ask the seed for pieces and never read them (from four
/// sockets under four ids, eight requests at a time each) cannot keep it
/// from serving the honest joiners: a connection gets two requests served
/// at once until it has taken a piece, and a request whose connection has
/// taken no data for a few seconds is given up, well before the requester's
/// own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_do_not_starve_the_seed() {
    use crate::hoarder;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    let (size, piece) = (16u64 << 20, 256u64 << 10);
    random_file(&src, size as usize, 13);
    let seed = seed(&d, &src, &["--until-done", "3", "--piece-size", "256KiB"]);
    let t = Ticket::parse(&seed.ticket).unwrap();
    let (conns, streams) = (4, 8);
    let h = hoarder::start(&t, t.addrs[0], conns, streams, (size / piece) as u32).await;
    // the seed serves the hoarder before any honest joiner arrives
    let t0 = std::time::Instant::now();
    while h.seen.lock().unwrap().most_served.contains(&0) {
        assert!(t0.elapsed() < LIMIT, "the seed never served the hoarder");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // and takes what more it can get
    tokio::time::sleep(Duration::from_secs(3)).await;
    joiners_a_b_c_then_seed_exit(&d, seed, &[]).await;

    for n in ["a", "b", "c"] {
        assert_same(&src, &d.join(n).join("image.bin"));
        let r = report(&d.join(format!("{n}.json")));
        eprintln!(
            "{n}: complete after {:.1} s",
            r["complete_secs"].as_f64().unwrap()
        );
    }
    let seen = h.seen.lock().unwrap();
    let deadline = swarm::node::request_deadline(piece);
    eprintln!(
        "hoarder: {} requests, served at most {:?} at once per connection, \
         {} refused, {} given up after {:?}, {} connections closed (request deadline {deadline:?})",
        seen.requests,
        seen.most_served,
        seen.refused,
        seen.reset_after.len(),
        seen.reset_after,
        seen.closed,
    );
    // 2 at once, and after a stall 1; the hoarder may see one more: the
    // host resets a stalled request and serves the next one at once, and
    // the next one's first byte can arrive before the reset is seen
    assert!(
        seen.most_served.iter().all(|&n| n <= 3),
        "a connection that never took a piece was served {:?} requests at once",
        seen.most_served
    );
    assert!(
        !seen.reset_after.is_empty(),
        "the seed never gave up on a request"
    );
    assert!(
        seen.reset_after
            .iter()
            .all(|&t| t < deadline - Duration::from_secs(2)),
        "the seed held a request nobody read until near its deadline"
    );
}

/// Runs joiners "a", "b" and "c" of `seed` in `dir` to a clean exit, then
/// waits for the seed's (it runs with `--until-done 3`).
async fn joiners_a_b_c_then_seed_exit(dir: &Path, seed: Seed, join_args: &'static [&'static str]) {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut joiners: Vec<Proc> = ["a", "b", "c"]
            .iter()
            .map(|n| join(&d, &seed, n, join_args))
            .collect();
        for j in &mut joiners {
            j.wait_ok(LIMIT);
        }
        let mut seed = seed;
        seed.proc.wait_ok(LIMIT);
    })
    .await
    .unwrap();
}

/// A seed of 256 KiB pieces for three joiners, uploading at most `rate`.
fn slow_seed(d: &Path, src: &Path, rate: &str) -> Seed {
    let args = [
        "--until-done",
        "3",
        "--piece-size",
        "256KiB",
        "--upload-limit",
        rate,
    ];
    seed(d, src, &args)
}

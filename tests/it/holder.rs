//! A ticket holder that abuses what authentication grants: partial requests
//! that would hold serve slots, data nobody asked for that would fill a
//! host's memory, and peer lists of made-up addresses. Each test runs the
//! real binary against attacker connections in test code, and checks that
//! honest hosts still finish, within bounds the test prints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use quinn::Connection;

use crate::adversary::greet;
use crate::util::*;
use swarm::node::tls::{self, Tuning};
use swarm::ticket::Ticket;

/// Authenticated connections to `at`, each from its own socket under its
/// own peer id, claiming no piece.
pub async fn holders(
    t: &Ticket,
    at: SocketAddr,
    n: usize,
    pieces: usize,
) -> Vec<(quinn::Endpoint, Connection)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let cfg = tls::configs(&Tuning::default(), Default::default()).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(cfg.client);
        let addr = ep.local_addr().unwrap();
        let conn = ep.connect(at, "swarm").unwrap().await.unwrap();
        let none: BitVec<u8, Lsb0> = bitvec![u8, Lsb0; 0; pieces];
        greet(t, &conn, &Tuning::default(), rand::random(), addr, none).await;
        out.push((ep, conn));
    }
    out
}

/// On `conn`, keeps `streams` request streams open, each carrying 1 of a
/// request's 5 bytes; when the host ends one, opens another. Counts the
/// streams it opened.
fn partial_requests(conn: &Connection, streams: usize, opened: Arc<AtomicUsize>) {
    for _ in 0..streams {
        let (conn, opened) = (conn.clone(), opened.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut send, mut recv)) = conn.open_bi().await else {
                    return;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                if send.write_all(&[1]).await.is_err() {
                    continue;
                }
                // until the host gives up on it (stops or resets the stream)
                let _ = tokio::time::timeout(Duration::from_secs(60), async {
                    tokio::select! {
                        _ = send.stopped() => {}
                        _ = recv.read_to_end(1 << 20) => {}
                    }
                })
                .await;
            }
        });
    }
}

fn complete_secs(d: &std::path::Path, name: &str) -> f64 {
    report(&d.join(format!("{name}.json")))["complete_secs"]
        .as_f64()
        .unwrap()
}

/// Joins `name` with `--exit-on-complete` and waits for it.
async fn timed_join(d: &std::path::Path, seed: &Seed, name: &str) -> f64 {
    let mut j = join(d, seed, name, &["--exit-on-complete"]);
    let j = tokio::task::spawn_blocking(move || {
        j.wait_ok(LIMIT);
        j
    })
    .await
    .unwrap();
    drop(j);
    complete_secs(d, name)
}

/// Issue 21, item 5: 16 ticket holders that each keep a few request streams
/// open with 1 of the request's 5 bytes took every serve slot (a slot was
/// taken before the request was read, and held for up to 10 s): a 32 MiB
/// join took 46.6 s instead of 0.11 s. A slot is now taken only for a
/// complete request, and a request must be complete within 2 s of its
/// stream opening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_partial_requests_do_not_hold_serve_slots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    let size = 32usize << 20;
    random_file(&src, size, 21);
    let seed = seed(&d, &src, &[]);
    let t = Ticket::parse(&seed.ticket).unwrap();

    let clean = timed_join(&d, &seed, "clean").await;
    assert_same(&src, &d.join("clean/image.bin"));

    let opened = Arc::new(AtomicUsize::new(0));
    let conns = holders(&t, t.addrs[0], 16, size >> 20).await;
    for (_, c) in &conns {
        partial_requests(c, 4, opened.clone());
    }
    // let them take what they can, and the host give up on the first ones
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = Instant::now();
    let attacked = timed_join(&d, &seed, "attacked").await;
    let wall = t0.elapsed();
    assert_same(&src, &d.join("attacked/image.bin"));
    eprintln!(
        "32 MiB join: clean {clean:.2} s, under 16 connections x 4 partial requests \
         {attacked:.2} s (process {:.2} s); {} partial request streams opened",
        wall.as_secs_f64(),
        opened.load(Ordering::Relaxed)
    );
    // the host gave up on the first partial requests within seconds (it
    // held them for 10 s before the fix)
    assert!(
        opened.load(Ordering::Relaxed) > 16 * 4,
        "the host never gave up on a partial request"
    );
    // before the fix: 46.6-59 s (or no manifest within its 10 s at all)
    assert!(
        attacked < 2.0 * clean + 8.0,
        "the attacked join took {attacked:.2} s against {clean:.2} s clean"
    );
    for (ep, c) in &conns {
        c.close(0u32.into(), b"bye");
        ep.close(0u32.into(), b"bye");
    }
}

/// A process's resident memory and its peak (`VmRSS`, `VmHWM`), in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|k| k.trim().parse::<u64>().ok())
            .map_or(0, |k| k << 10)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What a flooding connection does.
#[derive(Default)]
pub struct Flooded {
    /// Bytes written on request streams the flooder opened.
    pub stream_bytes: AtomicUsize,
    pub streams: AtomicUsize,
    pub datagram_bytes: AtomicUsize,
}

/// Authenticates to `at` as a peer holding nothing, then sends what the
/// host never asked for, as fast as it can, until the connection closes:
/// if `partial_frame`, on its control stream the largest frame the host
/// takes but its last byte; part of a request on two streams; on as
/// many other streams as the host allows, bytes that never end; and
/// datagrams.
async fn flood(
    t: &Ticket,
    at: SocketAddr,
    pieces: usize,
    partial_frame: bool,
    seen: Arc<Flooded>,
) -> Connection {
    use swarm::wire::{Message, max_frame_for};
    let cfg = tls::configs(&Tuning::default(), Default::default()).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg.client);
    let addr = ep.local_addr().unwrap();
    let conn = ep.connect(at, "swarm").unwrap().await.unwrap();
    let tuning = Tuning::default();
    let (mut send, recv) =
        crate::adversary::dial(t, &conn, &tuning, "default", rand::random(), addr)
            .await
            .expect("the host took our handshake");
    let mut out = Message::Bitfield(bitvec![u8, Lsb0; 0; pieces]).encode_frame();
    if partial_frame {
        // a Peers frame as large as this swarm allows, never finished
        let n = max_frame_for(pieces);
        out.extend((n as u32).to_le_bytes());
        out.push(4);
        out.extend(vec![0u8; n - 2]);
    }
    tokio::spawn(async move {
        let _ = send.write_all(&out).await;
        let _ = send.stopped().await;
        drop(recv);
    });
    // two streams with part of a request, which held both of a new
    // connection's serve slots and kept the host from reading the others
    partial_requests(&conn, 2, Arc::new(AtomicUsize::new(0)));
    let junk = bytes::Bytes::from(vec![0x5au8; 16 << 10]);
    for _ in 0..254 {
        let (conn, junk, seen) = (conn.clone(), junk.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _r)) = conn.open_bi().await {
                seen.streams.fetch_add(1, Ordering::Relaxed);
                while s.write_chunk(junk.clone()).await.is_ok() {
                    seen.stream_bytes.fetch_add(junk.len(), Ordering::Relaxed);
                }
            }
        });
    }
    let (c, s) = (conn.clone(), seen.clone());
    tokio::spawn(async move {
        let Some(max) = c.max_datagram_size() else {
            return;
        };
        let d = bytes::Bytes::from(vec![0xa5u8; max]);
        while c.send_datagram_wait(d.clone()).await.is_ok() {
            s.datagram_bytes.fetch_add(max, Ordering::Relaxed);
        }
    });
    std::mem::forget(ep); // lives as long as the test process
    conn
}

/// Issue 21, item 6: every authenticated connection had a 32 MiB receive
/// window (8 MiB per stream, 256 streams), and what a peer sent on streams
/// the host had not accepted stayed buffered: 4 connections took a seed
/// from 26 to 171 MiB. Now a peer can make a host buffer only a little
/// beyond what the host itself asked it for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_cannot_fill_a_hosts_memory() {
    const CONNS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    let size = 32usize << 20;
    random_file(&src, size, 22);
    let seed = seed(&d, &src, &["--until-done", "1"]);
    let t = Ticket::parse(&seed.ticket).unwrap();
    let pid = seed.proc.child.id();
    let before = rss(pid).0;

    let seen = Arc::new(Flooded::default());
    let mut conns = Vec::new();
    for i in 0..CONNS {
        conns.push(flood(&t, t.addrs[0], size >> 20, i % 2 == 0, seen.clone()).await);
    }
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        peak = peak.max(rss(pid).0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = conns.iter().filter(|c| c.close_reason().is_none()).count();
    eprintln!(
        "seed RSS after 8 s of flood from {CONNS} connections ({open} still open, {:?}): at most {} MiB",
        conns.iter().find_map(|c| c.close_reason()),
        peak >> 20
    );
    // an honest join completes under the flood
    let mut j = join(&d, &seed, "honest", &["--exit-on-complete"]);
    let mut j = tokio::task::spawn_blocking(move || {
        j.wait_ok(LIMIT);
        j
    });
    let j = loop {
        tokio::select! {
            r = &mut j => break r.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => peak = peak.max(rss(pid).0),
        }
    };
    drop(j);
    assert_same(&src, &d.join("honest/image.bin"));
    let mut seed = seed;
    let st = seed.proc.wait(LIMIT);
    let hwm = report(&seed.report)["peak_rss_bytes"].as_u64().unwrap();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "seed RSS {:.0} MiB before the flood, {:.0} MiB at most while polled, peak {:.0} MiB (its report); \
         {CONNS} connections sent {:.0} MiB on {} streams and {:.0} MiB of datagrams; \
         honest join {:.2} s",
        mib(before),
        mib(peak),
        mib(hwm),
        mib(seen.stream_bytes.load(Ordering::Relaxed) as u64),
        seen.streams.load(Ordering::Relaxed),
        mib(seen.datagram_bytes.load(Ordering::Relaxed) as u64),
        complete_secs(&d, "honest"),
    );
    assert!(st.success(), "the seed exited with {st}");
    assert!(hwm < 256 << 20, "the seed peaked at {:.0} MiB", mib(hwm));
    for c in &conns {
        c.close(0u32.into(), b"bye");
    }
}

/// A UDP relay to `server` for one client: forwards all the client sends,
/// and, once `lossy` is set, one in `keep` of the datagrams the server
/// sends back. Returns the address the client should dial.
async fn lossy_relay(
    server: SocketAddr,
    keep: usize,
    lossy: Arc<std::sync::atomic::AtomicBool>,
) -> SocketAddr {
    use tokio::net::UdpSocket;
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let (f, b, c) = (front.clone(), back.clone(), client.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            let _ = b.send_to(&buf[..n], server).await;
        }
    });
    let at = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        let mut n_seen = 0usize;
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            n_seen += 1;
            let to = *client.lock().unwrap();
            if let Some(to) = to
                && (n_seen.is_multiple_of(keep) || !lossy.load(Ordering::Relaxed))
            {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    at
}

/// Requesters whose acknowledgements lag (behind a relay that drops 9 in
/// 10 of the host's datagrams) while they grant all the credit a host may
/// use: a serve gives its slot back once quinn holds the piece, so each
/// such connection can leave up to its 32 MiB send window of served bytes
/// in the host (docs/security.md: not bounded yet). A guard: measured 108
/// MiB for 12 connections; 70 MiB with slots held until acknowledged,
/// which costs throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_slow_acknowledgements_do_not_fill_send_buffers() {
    const CONNS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    let size = 64usize << 20;
    random_file(&src, size, 24);
    let seed = seed(&d, &src, &["--until-done", "1", "--piece-size", "4MiB"]);
    let t = Ticket::parse(&seed.ticket).unwrap();
    let pid = seed.proc.child.id();
    let pieces = size >> 22;
    let asked = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    let lossy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..CONNS {
        let relay = lossy_relay(t.addrs[0], 10, lossy.clone()).await;
        let cfg = tls::configs(&Tuning::default(), Default::default()).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(cfg.client);
        let addr = ep.local_addr().unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(10), async {
            let conn = ep.connect(relay, "swarm").unwrap().await.unwrap();
            let none: BitVec<u8, Lsb0> = bitvec![u8, Lsb0; 0; pieces];
            greet(&t, &conn, &Tuning::default(), rand::random(), addr, none).await;
            conn
        })
        .await
        .expect("connecting through the relay");
        conn.set_receive_window(quinn::VarInt::from_u32(1 << 30));
        for _ in 0..256 {
            let (conn, asked) = (conn.clone(), asked.clone());
            tokio::spawn(async move {
                while let Ok((mut s, mut r)) = conn.open_bi().await {
                    let piece = rand::random_range(0..pieces as u32);
                    let req = swarm::wire::Request::Piece(piece).encode();
                    if s.write_all(&req).await.is_err() {
                        return;
                    }
                    let _ = s.finish();
                    asked.fetch_add(1, Ordering::Relaxed);
                    // take what arrives, until the host ends the stream
                    let _ = r.read_to_end(usize::MAX).await;
                }
            });
        }
        conns.push((ep, conn));
    }
    // from now on the host's packets mostly get lost: its acknowledgements
    // come late and few, and what it sent stays in its buffers
    lossy.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss(pid).0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open = conns
        .iter()
        .filter(|(_, c)| c.close_reason().is_none())
        .count();
    eprintln!(
        "seed RSS after 10 s of {CONNS} slow connections ({open} open, {} requests): at most {} MiB",
        asked.load(Ordering::Relaxed),
        peak >> 20
    );
    let honest = timed_join(&d, &seed, "honest").await;
    assert_same(&src, &d.join("honest/image.bin"));
    let mut seed = seed;
    let st = seed.proc.wait(LIMIT);
    let hwm = report(&seed.report)["peak_rss_bytes"].as_u64().unwrap();
    eprintln!(
        "honest join {honest:.2} s; the seed peaked at {} MiB",
        hwm >> 20
    );
    assert!(st.success(), "the seed exited with {st}");
    assert!(hwm < 256 << 20, "the seed peaked at {} MiB", hwm >> 20);
    for (ep, c) in &conns {
        c.close(0u32.into(), b"bye");
        ep.close(0u32.into(), b"bye");
    }
}

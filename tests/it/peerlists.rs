//! Issue 21, item 8: a ticket holder fills honest hosts' peer tables with
//! made-up peers whose addresses belong to hosts that run no swarm. The
//! honest hosts must still find each other, and must not send those
//! addresses more than a few handshakes (reflection).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitvec::prelude::*;
use quinn::{Connection, RecvStream, SendStream};

use crate::adversary::{accept, dial, read_frame};
use crate::util::*;
use swarm::node::tls::{self, Tuning};
use swarm::ticket::Ticket;
use swarm::wire::{Message, PeerInfo, REQUEST_LEN};

/// UDP sockets that count the QUIC handshakes sent to them.
#[derive(Default)]
struct Sinks {
    addrs: Vec<SocketAddr>,
    /// Initial packets received.
    initials: AtomicUsize,
    /// Distinct (sender, destination connection ID) of those: handshakes.
    handshakes: Mutex<HashSet<(SocketAddr, Vec<u8>)>>,
}

/// Binds `per_ip` sockets on each of 127.0.0.2..=127.0.0.(1 + ips): hosts
/// that run no swarm.
async fn sinks(ips: u8, per_ip: usize) -> Arc<Sinks> {
    let mut socks = Vec::new();
    for i in 0..ips {
        for _ in 0..per_ip {
            let s = tokio::net::UdpSocket::bind(("127.0.0.".to_string() + &(i + 2).to_string(), 0))
                .await
                .unwrap();
            socks.push(s);
        }
    }
    let sinks = Arc::new(Sinks {
        addrs: socks.iter().map(|s| s.local_addr().unwrap()).collect(),
        ..Sinks::default()
    });
    for s in socks {
        let sinks = sinks.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let p = &buf[..n];
                // long header, QUIC v1, Initial: type bits 00
                if n > 6 && p[0] & 0x80 != 0 && p[1..5] == [0, 0, 0, 1] && p[0] & 0x30 == 0 {
                    let dcid_len = p[5] as usize;
                    if let Some(dcid) = p.get(6..6 + dcid_len) {
                        sinks.initials.fetch_add(1, Ordering::Relaxed);
                        sinks
                            .handshakes
                            .lock()
                            .unwrap()
                            .insert((from, dcid.to_vec()));
                    }
                }
            }
        });
    }
    sinks
}

/// A ticket holder that, on every connection it makes or accepts, claims
/// every piece (and answers every request "missing"), and sends a Peers
/// message of 512 made-up peers every 20 ms, each with 16 sink addresses
/// drawn at random.
struct Flooder {
    listed: Arc<AtomicUsize>,
    ep: quinn::Endpoint,
    _seed: Connection,
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.ep.close(0u32.into(), b"bye");
    }
}

async fn flood(mut send: SendStream, sinks: Vec<SocketAddr>, listed: Arc<AtomicUsize>) {
    loop {
        let list: Vec<PeerInfo> = (0..512)
            .map(|_| PeerInfo {
                id: rand::random(),
                group: "default".into(),
                addrs: (0..16)
                    .map(|_| sinks[rand::random_range(0..sinks.len())])
                    .collect(),
            })
            .collect();
        if send
            .write_all(&Message::Peers(list.into()).encode_frame())
            .await
            .is_err()
        {
            return;
        }
        listed.fetch_add(512, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the Hellos: claim everything, drain the peer's control frames,
/// flood, and refuse every request.
fn after_hello(
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    sinks: Vec<SocketAddr>,
    listed: Arc<AtomicUsize>,
) {
    tokio::spawn(async move {
        if send.write_all(&Message::Done.encode_frame()).await.is_err() {
            return;
        }
        tokio::spawn(async move { while read_frame(&mut recv).await.is_some() {} });
        tokio::spawn(flood(send, sinks, listed));
        while let Ok((mut s, mut r)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut req = [0u8; REQUEST_LEN];
                if r.read_exact(&mut req).await.is_ok() {
                    let _ = s.write_all(&[1]).await; // missing
                    let _ = s.finish();
                    let _ = s.stopped().await;
                }
            });
        }
    });
}

async fn start(t: &Ticket, pieces: usize, sinks: Vec<SocketAddr>) -> Flooder {
    let cfg = tls::configs(&Tuning::default(), Default::default()).unwrap();
    let mut ep = quinn::Endpoint::server(cfg.server, "127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg.client);
    let addr = ep.local_addr().unwrap();
    let id = rand::random();
    let listed = Arc::new(AtomicUsize::new(0));
    let none = move || Message::Bitfield(bitvec![u8, Lsb0; 0; pieces]).encode_frame();

    let seed = ep.connect(t.addrs[0], "swarm").unwrap().await.unwrap();
    let (mut send, recv) = dial(t, &seed, &Tuning::default(), "default", id, addr)
        .await
        .expect("the seed took our handshake");
    send.write_all(&none()).await.unwrap();
    after_hello(seed.clone(), send, recv, sinks.clone(), listed.clone());

    let (acc, t2, l2) = (ep.clone(), t.clone(), listed.clone());
    tokio::spawn(async move {
        while let Some(incoming) = acc.accept().await {
            let (t, sinks, listed) = (t2.clone(), sinks.clone(), l2.clone());
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                if let Some((send, recv, _)) = accept(&t, &conn, "default", id, addr, &none()).await
                {
                    after_hello(conn, send, recv, sinks, listed);
                }
            });
        }
    });
    Flooder {
        listed,
        ep,
        _seed: seed,
    }
}

/// Three joiners and a seed, with a ticket holder connected to all of
/// them that lists thousands of made-up peers a second, each with 16 of
/// 128 addresses on 8 IPs where no swarm runs. The joiners finish, trade
/// with each other, and stay 15 s more under the flood before they exit; the
/// made-up addresses get a few handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_peer_lists_cannot_crowd_out_or_reflect() {
    const SINK_IPS: u8 = 8;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let src = d.join("image.bin");
    let size = 32usize << 20;
    random_file(&src, size, 23);
    let sinks = sinks(SINK_IPS, 16).await;
    // the flooder says Done too: the seed waits for it and the three joiners
    let seed = seed(&d, &src, &["--until-done", "4"]);
    let t = Ticket::parse(&seed.ticket).unwrap();
    let flooder = start(&t, size >> 20, sinks.addrs.clone()).await;
    // the seed hears the lists before anyone joins
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seed_report = seed.report.clone();
    let t0 = std::time::Instant::now();
    let progress = {
        let sinks = sinks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                eprintln!(
                    "after {:.0} s: {} handshakes to made-up addresses",
                    t0.elapsed().as_secs_f64(),
                    sinks.handshakes.lock().unwrap().len()
                );
            }
        })
    };
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || {
        let mut joiners: Vec<Proc> = ["a", "b", "c"]
            .iter()
            .map(|n| join(&d2, &seed, n, &["--linger", "15s"]))
            .collect();
        for j in &mut joiners {
            j.wait_ok(LIMIT);
        }
        let mut seed = seed;
        seed.proc.wait_ok(LIMIT);
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    progress.abort();

    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            report(&d.join(format!("{n}.json")))["peer_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // Each joiner trades with another joiner, in one direction or the other:
    // one that starts late (a loaded CI machine spawns them seconds apart)
    // may find the first already done, and then fetches from it instead.
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        assert_same(&src, &d.join(n).join("image.bin"));
        let r = report(&d.join(format!("{n}.json")));
        let with_joiners = |field: &str| -> u64 {
            ids.iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter_map(|(_, id)| r[field][id].as_u64())
                .sum()
        };
        let (from, to) = (with_joiners("received_from"), with_joiners("served_to"));
        eprintln!(
            "{n}: complete after {:.1} s, exited after {:.1} s, {} MiB from other joiners, \
             {} MiB to them",
            r["complete_secs"].as_f64().unwrap(),
            r["elapsed_secs"].as_f64().unwrap(),
            from >> 20,
            to >> 20
        );
        assert!(from + to > 0, "{n} traded nothing with the other joiners");
    }
    let seed_r = report(&seed_report);
    let handshakes = sinks.handshakes.lock().unwrap().len();
    eprintln!(
        "{} made-up peers listed; {} handshakes ({} Initial packets) to their {} addresses \
         on {SINK_IPS} IPs; the swarm took {:.1} s; the seed served {} MiB",
        flooder.listed.load(Ordering::Relaxed),
        handshakes,
        sinks.initials.load(Ordering::Relaxed),
        sinks.addrs.len(),
        took.as_secs_f64(),
        seed_r["bytes_served"].as_u64().unwrap() >> 20,
    );
    // Each honest host (4) sends at most IP_FAILURES + IP_IN_FLIGHT (4 + 2)
    // hearsay handshakes a minute to an IP where no peer of it runs.
    assert!(took < Duration::from_secs(60));
    assert!(
        handshakes <= 4 * SINK_IPS as usize * 6,
        "{handshakes} handshakes to made-up addresses"
    );
}

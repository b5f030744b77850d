//! A host of another group that does not fetch across groups wants no
//! Haves (`WantHaves`): the real binary holds them, sends its whole
//! bitfield when they are wanted again, and itself asks for none once it is
//! complete. Two listeners of a third group, test code speaking the
//! protocol, watch a real joiner download on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use quinn::Connection;

use swarm::node::tls::{self, Tuning};
use swarm::ticket::Ticket;
use swarm::wire::{Message, PeerId};

use crate::adversary::{accept, dial, read_frame};
use crate::util::*;

const PIECES: usize = 64;

/// What a listener received from the joiner that dialed it.
#[derive(Default)]
struct Heard {
    /// Pieces set in the joiner's first bitfield, and in a later one.
    first_bitfield: Option<usize>,
    later_bitfield: Option<usize>,
    haves: Vec<u32>,
    done: bool,
    /// The joiner's `WantHaves` messages, in order.
    wants: Vec<bool>,
}

struct Listener {
    heard: Arc<Mutex<Heard>>,
    /// The joiner's connection, once it has dialed.
    conn: Arc<Mutex<Option<(Connection, quinn::SendStream)>>>,
    _ep: quinn::Endpoint,
    _seed: Connection,
}

/// Dials the seed as a peer of group "far" (so that the seed advertises it)
/// and records what the joiner that dials it sends; if `mute`, says at
/// once that it wants no Haves.
async fn listener(t: &Ticket, mute: bool) -> Listener {
    let cfg = tls::configs(&Tuning::default(), Default::default()).unwrap();
    let mut ep = quinn::Endpoint::server(cfg.server, "127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg.client);
    let addr: SocketAddr = ep.local_addr().unwrap();
    let id: PeerId = rand::random();
    let none = bitvec![u8, Lsb0; 0; PIECES];

    let seed = ep.connect(t.addrs[0], "swarm").unwrap().await.unwrap();
    let (mut send, mut recv) = dial(t, &seed, &Tuning::default(), "far", id, addr)
        .await
        .expect("the seed refused the handshake");
    send.write_all(&Message::Bitfield(none.clone()).encode_frame())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _send = send;
        while read_frame(&mut recv).await.is_some() {}
    });

    let heard = Arc::new(Mutex::new(Heard::default()));
    let conn = Arc::new(Mutex::new(None));
    let (acc_ep, acc_heard, acc_conn, t) = (ep.clone(), heard.clone(), conn.clone(), t.clone());
    tokio::spawn(async move {
        let incoming = acc_ep.accept().await?;
        let c = incoming.await.ok()?;
        let mut then = Message::Bitfield(none).encode_frame();
        if mute {
            then.extend(Message::WantHaves(false).encode_frame());
        }
        let (send, mut recv, _) = accept(&t, &c, "far", id, addr, &then).await?;
        *acc_conn.lock().unwrap() = Some((c, send));
        while let Some(msg) = read_frame(&mut recv).await {
            let mut h = acc_heard.lock().unwrap();
            match msg {
                Message::Bitfield(b) if h.first_bitfield.is_none() => {
                    h.first_bitfield = Some(b.count_ones())
                }
                Message::Bitfield(b) => h.later_bitfield = Some(b.count_ones()),
                Message::Have(i) => h.haves.push(i),
                Message::Done => h.done = true,
                Message::WantHaves(on) => h.wants.push(on),
                _ => {}
            }
        }
        Some(())
    });
    Listener {
        heard,
        conn,
        _ep: ep,
        _seed: seed,
    }
}

/// Waits until `f` holds for what `l` heard, at most `limit`.
async fn wait_for(l: &Listener, limit: Duration, what: &str, f: impl Fn(&Heard) -> bool) {
    let t = Instant::now();
    while !f(&l.heard.lock().unwrap()) {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haves_go_only_to_peers_that_want_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    random_file(&src, PIECES << 18, 61);
    let seed = seed(
        d,
        &src,
        &[
            "--group",
            "near",
            "--piece-size",
            "256KiB",
            "--until-done",
            "1",
        ],
    );
    let t = Ticket::parse(&seed.ticket).unwrap();
    let quiet = listener(&t, true).await;
    let chatty = listener(&t, false).await;
    // The joiner is alone in its group, so it is the bridge and fetches
    // over its WAN limit: 16 MiB in about 8 s, Haves spread over them.
    let mut j = join(
        d,
        &seed,
        "j",
        &[
            "--group",
            "mid",
            "--wan-limit",
            "16Mbit/s",
            "--linger",
            "60s",
        ],
    );
    let long = Duration::from_secs(60);
    for l in [&quiet, &chatty] {
        wait_for(l, long, "the joiner dials the listener", |h| {
            h.first_bitfield.is_some()
        })
        .await;
    }
    wait_for(&chatty, long, "the joiner completes", |h| h.done).await;
    wait_for(&quiet, Duration::from_secs(5), "Done reaches both", |h| {
        h.done
    })
    .await;
    assert_same(&src, &d.join("j").join("image.bin"));

    {
        let c = chatty.heard.lock().unwrap();
        let announced = c.first_bitfield.unwrap() + c.haves.len();
        assert_eq!(
            announced, PIECES,
            "each piece announced once to a peer that wants them"
        );
        assert!(
            c.haves.len() >= PIECES / 4,
            "most pieces came as Haves ({} of {PIECES})",
            c.haves.len()
        );
        let q = quiet.heard.lock().unwrap();
        eprintln!(
            "wanting: bitfield {:?} + {} Haves; not wanting: {} Haves",
            c.first_bitfield,
            c.haves.len(),
            q.haves.len()
        );
        // one Have may leave before the joiner has read the request
        assert!(
            q.haves.len() <= 1,
            "a peer that wants no Haves got {} of them",
            q.haves.len()
        );
        assert!(q.later_bitfield.is_none(), "no bitfield was asked for yet");
    }

    // complete, the joiner fetches from nobody: it asks both for no Haves
    for l in [&quiet, &chatty] {
        wait_for(
            l,
            Duration::from_secs(5),
            "a complete host wants no Haves",
            |h| h.wants.last() == Some(&false),
        )
        .await;
    }

    // wanted again: the whole bitfield at once
    let (_, mut send) = quiet.conn.lock().unwrap().take().unwrap();
    send.write_all(&Message::WantHaves(true).encode_frame())
        .await
        .unwrap();
    wait_for(
        &quiet,
        Duration::from_secs(5),
        "the bitfield comes again",
        |h| h.later_bitfield.is_some(),
    )
    .await;
    assert_eq!(quiet.heard.lock().unwrap().later_bitfield, Some(PIECES));
    j.kill9();
}

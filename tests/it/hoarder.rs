//! A greedy client, test code only: it holds the ticket, connects to one
//! host from several sockets under as many peer ids, claims no piece, and
//! keeps a number of piece requests open on every connection without ever
//! reading the answers (its receive windows are 16 KiB, so the host's
//! writes block almost at once). Each time the host gives up on a request
//! (resets the stream), it asks again. The tests check that such a client
//! cannot keep the host from serving everyone else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use quinn::Connection;

use crate::adversary::greet;
use swarm::node::tls::{self, Tuning};
use swarm::ticket::Ticket;
use swarm::wire::{Request, Status};

/// What the hoarder saw.
#[derive(Default)]
pub struct Seen {
    /// Piece requests sent.
    pub requests: usize,
    /// Requests the host gave up on (stream reset), and how long after
    /// the request each reset came.
    pub reset_after: Vec<Duration>,
    /// Most of its requests the host was serving at one time, per
    /// connection: a request counts as served from its first byte (the
    /// status) until the host resets or finishes the stream.
    pub most_served: Vec<usize>,
    /// Requests refused ("elsewhere", "missing").
    pub refused: usize,
    /// Connections that the host closed.
    pub closed: usize,
}

pub struct Hoarder {
    pub seen: Arc<Mutex<Seen>>,
    conns: Vec<(quinn::Endpoint, Connection)>,
}

impl Drop for Hoarder {
    fn drop(&mut self) {
        for (ep, c) in &self.conns {
            c.close(0u32.into(), b"bye");
            ep.close(0u32.into(), b"bye");
        }
    }
}

/// Connects `conns` times to `at` and keeps `streams` requests for random
/// pieces of `pieces` open on each connection.
pub async fn start(
    t: &Ticket,
    at: SocketAddr,
    conns: usize,
    streams: usize,
    pieces: u32,
) -> Hoarder {
    let tuning = Tuning {
        stream_window: 16 << 10,
        conn_window: 64 << 10,
        ..Tuning::default()
    };
    let seen = Arc::new(Mutex::new(Seen {
        most_served: vec![0; conns],
        ..Seen::default()
    }));
    let mut out = Vec::new();
    for c in 0..conns {
        let cfg = tls::configs(&tuning, Default::default()).unwrap();
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(cfg.client);
        let addr = ep.local_addr().unwrap();
        let conn = ep.connect(at, "swarm").unwrap().await.unwrap();
        let none: BitVec<u8, Lsb0> = bitvec![u8, Lsb0; 0; pieces as usize];
        greet(t, &conn, &tuning, rand::random(), addr, none).await;
        let served = Arc::new(Mutex::new(0usize));
        for _ in 0..streams {
            tokio::spawn(ask_forever(
                conn.clone(),
                seen.clone(),
                served.clone(),
                c,
                pieces,
            ));
        }
        let (conn2, seen2) = (conn.clone(), seen.clone());
        tokio::spawn(async move {
            if let quinn::ConnectionError::ApplicationClosed(_) = conn2.closed().await {
                seen2.lock().unwrap().closed += 1;
            }
        });
        out.push((ep, conn));
    }
    Hoarder { seen, conns: out }
}

/// One request slot: asks for a random piece, reads nothing but the status
/// byte, waits for the host to give up, and asks again; asks again soon
/// after a refusal.
async fn ask_forever(
    conn: Connection,
    seen: Arc<Mutex<Seen>>,
    served: Arc<Mutex<usize>>,
    c: usize,
    pieces: u32,
) {
    loop {
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            return;
        };
        let piece = rand::random_range(0..pieces);
        if send
            .write_all(&Request::Piece(piece).encode())
            .await
            .is_err()
        {
            return;
        }
        let _ = send.finish();
        let asked = Instant::now();
        seen.lock().unwrap().requests += 1;
        let mut status = [0u8; 1];
        if recv.read_exact(&mut status).await.is_err() {
            continue; // reset before the first byte
        }
        if status[0] != Status::Ok as u8 {
            // refused ("elsewhere", "missing"): ask again soon, as the seed
            // serves a requester that asks again
            seen.lock().unwrap().refused += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        {
            let mut now = served.lock().unwrap();
            *now += 1;
            let most = &mut seen.lock().unwrap().most_served[c];
            *most = (*most).max(*now);
        }
        let end = recv.received_reset().await;
        *served.lock().unwrap() -= 1;
        match end {
            Ok(Some(_)) => seen.lock().unwrap().reset_after.push(asked.elapsed()),
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

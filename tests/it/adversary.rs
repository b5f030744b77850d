//! An adversarial peer, test code only: it holds the ticket, speaks the
//! protocol, gets itself advertised by the seed, claims to hold every piece
//! (but one mode), and then misbehaves as a source in one of several ways. The tests check
//! that honest joiners still end with verified copies in bounded time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitvec::prelude::*;
use quinn::{Connection, RecvStream, SendStream};

use swarm::manifest::blocks;
use swarm::node::auth::{self, Role};
use swarm::node::tls::{self, Tuning};
use swarm::ticket::Ticket;
use swarm::wire::{Hello, Message, PROTOCOL_VERSION, PeerId, REQUEST_LEN, Request};

/// How the adversary answers piece requests (it claims every piece but
/// when `Mute`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers with random bytes of the right length.
    Corrupt,
    /// Accepts the request and never answers.
    Silent,
    /// Answers "ok", then one byte every 100 ms.
    Trickle,
    /// Answers "missing" to every request (its bitfield lied).
    Liar,
    /// Answers "ok" and the first half of the piece, then resets the stream.
    Reset,
    /// Claims no piece, stays connected, and never says Done.
    Mute,
    /// Knows the image (`start_with`): answers an outboard truthfully; a
    /// Delta with random blocks (even pieces) or with every block said to
    /// be zeros (odd pieces); whole pieces with random bytes.
    BadBlocks,
}

/// What an adversary saw, for the test's assertions.
#[derive(Default)]
pub struct Seen {
    /// Authenticated connections per dialing peer id.
    pub connections: HashMap<PeerId, usize>,
    /// Piece requests received.
    pub requests: usize,
    /// Of those, a delta's Blocks and Delta requests.
    pub blocks_requests: usize,
    /// Of those, Outboard requests (`Mode::BadBlocks` counts them).
    pub outboard_requests: usize,
    /// Manifest requests received (always refused).
    pub manifest_requests: usize,
    /// After being dropped for a corrupt piece, the adversary dials that
    /// host again from the same socket under a new peer id: how often the
    /// host refused it (closed with "not accepted"), and how often anything
    /// else happened (kept open, another close, no connection at all).
    pub comebacks_refused: usize,
    pub comebacks_not_refused: usize,
}

pub struct Adversary {
    pub mode: Mode,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    ep: quinn::Endpoint,
    _seed_conn: Connection,
}

impl Drop for Adversary {
    fn drop(&mut self) {
        self.ep.close(0u32.into(), b"bye");
    }
}

/// Where piece `i` of a `size`-byte image in pieces of `piece` bytes ends.
fn piece_len(size: u64, piece: u64, i: u32) -> usize {
    let start = i as u64 * piece;
    (size.saturating_sub(start)).min(piece) as usize
}

pub async fn read_frame(recv: &mut RecvStream) -> Option<Message> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; Message::frame_len(len).ok()?];
    recv.read_exact(&mut body).await.ok()?;
    Message::decode(&body).ok()
}

/// A Hello frame as peer `id` of `group`, listening at `addr`.
pub fn hello_in(group: &str, t: &Ticket, id: PeerId, addr: SocketAddr) -> Vec<u8> {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        manifest_id: t.manifest_id,
        peer_id: id,
        since: 0,
        group: group.into(),
        addrs: vec![addr],
    })
    .encode_frame()
}

/// Our proof frame on `conn` as `role`.
pub fn proof(t: &Ticket, conn: &Connection, role: Role) -> Vec<u8> {
    Message::Proof(auth::proof(conn, &t.secret, role).unwrap()).encode_frame()
}

/// As the dialer of `conn`: sends our proof, takes the host's proof and
/// Hello, lifts the limits per `tuning`, and says Hello as `id` of `group`
/// at `addr`. Returns the control stream, or `None` if the host closed.
pub async fn dial(
    t: &Ticket,
    conn: &Connection,
    tuning: &Tuning,
    group: &str,
    id: PeerId,
    addr: SocketAddr,
) -> Option<(SendStream, RecvStream)> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&proof(t, conn, Role::Dialer)).await.ok()?;
    let Some(Message::Proof(_)) = read_frame(&mut recv).await else {
        return None;
    };
    let Some(Message::Hello(_)) = read_frame(&mut recv).await else {
        return None;
    };
    tls::open_up(conn, tuning);
    send.write_all(&hello_in(group, t, id, addr)).await.ok()?;
    Some((send, recv))
}

/// As the acceptor of `conn`: takes the dialer's proof, lifts the limits,
/// sends our proof and Hello as `id` of `group` at `addr` and `then`, and
/// takes the dialer's Hello.
pub async fn accept(
    t: &Ticket,
    conn: &Connection,
    group: &str,
    id: PeerId,
    addr: SocketAddr,
    then: &[u8],
) -> Option<(SendStream, RecvStream, Hello)> {
    let (mut send, mut recv) = conn.accept_bi().await.ok()?;
    let Some(Message::Proof(_)) = read_frame(&mut recv).await else {
        return None;
    };
    tls::open_up(conn, &Tuning::default());
    let mut out = proof(t, conn, Role::Acceptor);
    out.extend(hello_in(group, t, id, addr));
    out.extend(then);
    send.write_all(&out).await.ok()?;
    let Some(Message::Hello(h)) = read_frame(&mut recv).await else {
        return None;
    };
    Some((send, recv, h))
}

/// As the dialer of `conn`: lifts its limits per `tuning`, says Hello as
/// `id` at `addr`, takes the host's Hello, claims `bits`, and keeps the
/// control stream open.
pub async fn greet(
    t: &Ticket,
    conn: &Connection,
    tuning: &Tuning,
    id: PeerId,
    addr: SocketAddr,
    bits: BitVec<u8, Lsb0>,
) {
    let (mut send, recv) = dial(t, conn, tuning, "default", id, addr)
        .await
        .expect("the host refused the handshake");
    send.write_all(&Message::Bitfield(bits).encode_frame())
        .await
        .unwrap();
    hold_control(send, recv);
}

/// Keeps reading (and ignoring) the peer's control frames, holding the
/// control stream open until the connection closes.
fn hold_control(send: SendStream, mut recv: RecvStream) {
    tokio::spawn(async move {
        let _send = send;
        while read_frame(&mut recv).await.is_some() {}
    });
}

/// Starts an adversary that dials the seed of `t` (so the seed advertises
/// it to every joiner), claims all `pieces`, and serves per `mode`.
pub async fn start(mode: Mode, t: &Ticket, size: u64, piece: u64) -> Adversary {
    start_with(mode, t, size, piece, Arc::new(Vec::new())).await
}

/// `start`, knowing the image's bytes (`Mode::BadBlocks` needs them).
pub async fn start_with(
    mode: Mode,
    t: &Ticket,
    size: u64,
    piece: u64,
    data: Arc<Vec<u8>>,
) -> Adversary {
    let pieces = size.div_ceil(piece) as usize;
    let all: BitVec<u8, Lsb0> = bitvec![u8, Lsb0; u8::from(mode != Mode::Mute); pieces];
    let cfg = tls::configs(&Tuning::default(), Default::default()).unwrap();
    let mut ep = quinn::Endpoint::server(cfg.server, "127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg.client);
    let addr = ep.local_addr().unwrap();
    let id: PeerId = rand::random();
    let seen = Arc::new(Mutex::new(Seen::default()));

    // Dial the seed, lie to it too, and stay connected.
    let seed_conn = ep.connect(t.addrs[0], "swarm").unwrap().await.unwrap();
    greet(t, &seed_conn, &Tuning::default(), id, addr, all.clone()).await;

    let (acc_ep, acc_seen, acc_t) = (ep.clone(), seen.clone(), t.clone());
    tokio::spawn(async move {
        while let Some(incoming) = acc_ep.accept().await {
            let (seen, t, all, data) = (acc_seen.clone(), acc_t.clone(), all.clone(), data.clone());
            let ep = acc_ep.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let then = Message::Bitfield(all).encode_frame();
                let Some((send, recv, h)) = accept(&t, &conn, "default", id, addr, &then).await
                else {
                    return;
                };
                *seen
                    .lock()
                    .unwrap()
                    .connections
                    .entry(h.peer_id)
                    .or_default() += 1;
                hold_control(send, recv);
                if matches!(mode, Mode::Corrupt | Mode::BadBlocks) {
                    let at = h.addrs.first().map(|a| {
                        if a.ip().is_unspecified() {
                            SocketAddr::new(conn.remote_address().ip(), a.port())
                        } else {
                            *a
                        }
                    });
                    let (conn, ep, seen, t) = (conn.clone(), ep.clone(), seen.clone(), t.clone());
                    tokio::spawn(async move {
                        if let (quinn::ConnectionError::ApplicationClosed(c), Some(at)) =
                            (conn.closed().await, at)
                            && c.error_code == 4u32.into()
                        {
                            come_back(&ep, &t, at, addr, &seen).await;
                        }
                    });
                }
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let (conn, seen, data) = (conn.clone(), seen.clone(), data.clone());
                    let at = Image { size, piece, data };
                    tokio::spawn(serve(mode, conn, send, recv, seen, at));
                }
            });
        }
    });
    Adversary {
        mode,
        addr,
        seen,
        ep,
        _seed_conn: seed_conn,
    }
}

/// Dials `at` from the endpoint that was banned, as a new peer id, and
/// records whether the host keeps the connection.
async fn come_back(
    ep: &quinn::Endpoint,
    t: &Ticket,
    at: SocketAddr,
    addr: SocketAddr,
    seen: &Mutex<Seen>,
) {
    let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), async {
        ep.connect(at, "swarm").unwrap().await
    })
    .await
    else {
        seen.lock().unwrap().comebacks_not_refused += 1;
        return;
    };
    let fresh: PeerId = rand::random();
    // refused: closed with the "not accepted" code (3) once the handshake
    // is done; anything else (kept open, or closed for another reason)
    // counts as admitted
    let _control = dial(t, &conn, &Tuning::default(), "default", fresh, addr).await;
    let refused = matches!(
        tokio::time::timeout(Duration::from_secs(3), conn.closed()).await,
        Ok(quinn::ConnectionError::ApplicationClosed(c)) if c.error_code == 3u32.into()
    );
    let mut seen = seen.lock().unwrap();
    if refused {
        seen.comebacks_refused += 1;
    } else {
        seen.comebacks_not_refused += 1;
    }
}

/// The image an adversary claims: a single file of `size` bytes.
struct Image {
    size: u64,
    piece: u64,
    data: Arc<Vec<u8>>,
}

async fn serve(
    mode: Mode,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
    seen: Arc<Mutex<Seen>>,
    img: Image,
) {
    let mut req = vec![0u8; REQUEST_LEN];
    if recv.read_exact(&mut req).await.is_err() {
        return;
    }
    while let Ok(more) = Request::more(&req)
        && more > 0
    {
        let at = req.len();
        req.resize(at + more, 0);
        if recv.read_exact(&mut req[at..]).await.is_err() {
            return;
        }
    }
    let (i, len) = match Request::decode(&req) {
        Ok(
            r @ (Request::Piece(_)
            | Request::Outboard(_)
            | Request::Blocks { .. }
            | Request::Delta { .. }),
        ) => {
            let i = r.piece().unwrap();
            let whole = piece_len(img.size, img.piece, i);
            let len = match &r {
                Request::Outboard(_) => blocks::count(whole as u64) * 32,
                Request::Blocks { wanted, .. } => wanted
                    .iter_ones()
                    .map(|j| blocks::range(j, whole as u64).len())
                    .sum(),
                _ => whole,
            };
            if let (Request::Outboard(_) | Request::Delta { .. }, Mode::BadBlocks) = (&r, mode) {
                // the truth (Outboard): the joiner then asks for blocks;
                // random blocks (Delta): they do not make the piece's
                // hash, and the joiner asks for the outboard
                let start = i as usize * img.piece as usize;
                let mut out = vec![0u8];
                if let Request::Delta { .. } = r {
                    let mut bytes = vec![0u8; whole];
                    if i % 2 == 0 {
                        rand::RngExt::fill(&mut rand::rng(), &mut bytes[..]);
                    }
                    out.extend(swarm::wire::piece::encode_delta(&bytes, |_| true));
                    seen.lock().unwrap().blocks_requests += 1;
                } else {
                    seen.lock().unwrap().outboard_requests += 1;
                    for cv in blocks::cvs(&img.data[start..start + whole]) {
                        out.extend_from_slice(&cv);
                    }
                }
                let _ = send.write_all(&out).await;
                let _ = send.finish();
                seen.lock().unwrap().requests += 1;
                let _ = conn.closed().await;
                return;
            }
            (i, len)
        }
        _ => {
            seen.lock().unwrap().manifest_requests += 1;
            let _ = send.write_all(&[1]).await; // no manifest from us
            let _ = send.finish();
            conn.closed().await;
            return;
        }
    };
    let _ = i;
    seen.lock().unwrap().requests += 1;
    if matches!(req.first(), Some(&4 | &5)) {
        seen.lock().unwrap().blocks_requests += 1;
    }
    match mode {
        Mode::Corrupt | Mode::BadBlocks => {
            let mut bytes = vec![0u8; len];
            rand::RngExt::fill(&mut rand::rng(), &mut bytes[..]);
            let bytes = [vec![0u8], answer(&req, bytes)].concat();
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
            conn.closed().await;
        }
        Mode::Silent => {
            conn.closed().await;
        }
        Mode::Trickle => {
            if send.write_all(&[0]).await.is_err() {
                return;
            }
            for _ in 0..len {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if send.write_all(&[0x5a]).await.is_err() {
                    return;
                }
            }
        }
        Mode::Liar | Mode::Mute => {
            let _ = send.write_all(&[1]).await;
            let _ = send.finish();
            conn.closed().await;
        }
        Mode::Reset => {
            let mut bytes = vec![0u8; len];
            rand::RngExt::fill(&mut rand::rng(), &mut bytes[..]);
            let mut bytes = [vec![0u8], answer(&req, bytes)].concat();
            bytes.truncate(1 + len / 2);
            let _ = send.write_all(&bytes).await;
            let _ = send.reset(0u32.into());
        }
    }
}

/// The bytes of an answer to `req` (a decoded request's raw form) that
/// carry `data`: a whole piece is framed in groups with their masks
/// (`wire::piece`), a Delta's blocks too (every block sent), an outboard
/// or blocks go as they are.
fn answer(req: &[u8], data: Vec<u8>) -> Vec<u8> {
    match Request::decode(req) {
        Ok(Request::Piece(_)) => swarm::wire::piece::encode(&data),
        Ok(Request::Delta { .. }) => swarm::wire::piece::encode_delta(&data, |_| true),
        _ => data,
    }
}

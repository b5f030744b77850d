//! One connection's tasks (once `handshake` has authenticated it): the
//! control-stream reader and writer, and (in `serve`) the server for the peer's request
//! streams. They report to the engine through its bounded event channel and
//! never touch swarm state themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bitvec::prelude::*;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::timeout;

use super::event::Event;
use super::identity::Handshaken;
use crate::core::PeerKey;
use crate::wire::{Message, close};

/// Capacity of each peer's outgoing control-message queue.
pub const CONTROL_QUEUE: usize = 256;
/// How long a closing host waits for its last control messages to arrive.
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// The engine's handle to a running peer.
pub struct PeerHandle {
    pub conn: Connection,
    pub control: mpsc::Sender<Message>,
    /// Whether the peer wants our Haves (its last `WantHaves`; on at
    /// first). The control writer holds its Haves while this is off.
    pub wants_haves: watch::Sender<bool>,
    /// The control writer; it finishes once `control` is dropped.
    pub writer: tokio::task::JoinHandle<()>,
}

/// Starts the tasks of the peer the engine knows as `key` (from
/// `next_key`); returns the engine's handle. `pieces` is the
/// manifest's piece count (it bounds the control frames).
/// A key no connection of this process had.
pub fn next_key() -> PeerKey {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

pub fn start(
    h: Handshaken,
    key: PeerKey,
    events: mpsc::Sender<Event>,
    have: watch::Receiver<Arc<BitVec>>,
    serve_limit: Arc<Semaphore>,
    pieces: usize,
) -> PeerHandle {
    let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
    let (wants_haves, wants) = watch::channel(true);
    let writer = tokio::spawn(control_writer(h.send, rx, have, wants));
    let limit = crate::wire::max_frame_for(pieces);
    tokio::spawn(control_reader(
        key,
        h.conn.clone(),
        h.recv,
        events.clone(),
        limit,
    ));
    tokio::spawn(super::serve::serve_requests(
        key,
        h.conn.clone(),
        events,
        serve_limit,
    ));
    PeerHandle {
        conn: h.conn,
        control: tx,
        wants_haves,
        writer,
    }
}

/// A control frame longer than this takes `FRAME_COST` times its length
/// from `FRAME_BUDGET` until the engine has handled its message.
const BIG_FRAME: usize = 4 << 10;
/// Bytes a decoded message may take per byte of its frame (a Peers entry
/// of 19 bytes decodes to 64).
const FRAME_COST: usize = 4;
/// Memory for large control frames, being read or waiting for the engine,
/// all connections together: however many peers send them, 32 MiB.
const FRAME_BUDGET_BYTES: usize = 32 << 20;
static FRAME_BUDGET: std::sync::LazyLock<Arc<Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(Semaphore::new(FRAME_BUDGET_BYTES)));
/// Once a frame's length has arrived, its body must follow within this.
const FRAME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The peer broke the control stream's rules: close with `close::PROTOCOL`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Violation(String);

/// Reads one control frame of at most `limit` bytes; a large one first
/// takes its share of `FRAME_BUDGET`, which the message carries to the
/// engine.
async fn read_control_frame(
    recv: &mut RecvStream,
    limit: usize,
) -> anyhow::Result<(Message, Option<OwnedSemaphorePermit>)> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let n = Message::frame_len(len)?;
    crate::codec::check_limit("frame length for this swarm", n as u64, limit as u64)?;
    let permit = if n > BIG_FRAME {
        let cost = (n * FRAME_COST).min(FRAME_BUDGET_BYTES) as u32;
        Some(FRAME_BUDGET.clone().acquire_many_owned(cost).await?)
    } else {
        None
    };
    let mut body = vec![0u8; n];
    timeout(FRAME_TIMEOUT, recv.read_exact(&mut body))
        .await
        .map_err(|_| Violation(format!("a frame of {n} bytes took over {FRAME_TIMEOUT:?}")))??;
    Ok((Message::decode(&body)?, permit))
}

async fn control_reader(
    key: PeerKey,
    conn: Connection,
    mut recv: RecvStream,
    events: mpsc::Sender<Event>,
    limit: usize,
) {
    let why = loop {
        match read_control_frame(&mut recv, limit).await {
            Ok((msg, budget)) => {
                if events
                    .send(Event::PeerMsg { key, msg, budget })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                if e.downcast_ref::<crate::codec::DecodeError>().is_some() {
                    conn.close(close::PROTOCOL.into(), b"malformed frame");
                } else if e.downcast_ref::<Violation>().is_some() {
                    conn.close(close::PROTOCOL.into(), b"frame too slow");
                }
                break format!("{e:#}");
            }
        }
    };
    let _ = events.send(Event::PeerDown { key, why }).await;
}

/// Sends our bitfield first, then a Have for every piece we gain (from the
/// engine's watch channel: coalesced, never an unbounded queue), and the
/// messages the engine queues. While the peer wants no Haves (`wants`
/// off), it holds them; when the peer wants them again, it sends the whole
/// bitfield once more instead of the Haves it held.
async fn control_writer(
    mut send: SendStream,
    mut rx: mpsc::Receiver<Message>,
    mut have: watch::Receiver<Arc<BitVec>>,
    mut wants: watch::Receiver<bool>,
) {
    let mut sent: BitVec = have.borrow_and_update().as_ref().clone();
    if send.write_all(&bitfield_frame(&sent)).await.is_err() {
        return;
    }
    let mut muted = false;
    // the handle (and with it the sender) goes away with the peer: then
    // only the queue's end finishes the stream, after what it holds
    let mut wants_open = true;
    loop {
        let frames: Vec<u8> = tokio::select! {
            changed = wants.changed(), if wants_open => {
                if changed.is_err() {
                    wants_open = false;
                    continue;
                }
                let on = *wants.borrow_and_update();
                let unmuted = muted && on;
                muted = !on;
                if unmuted {
                    sent = have.borrow_and_update().as_ref().clone();
                    bitfield_frame(&sent)
                } else {
                    Vec::new()
                }
            }
            changed = have.changed(), if !muted => {
                if changed.is_err() { return; }
                let now = have.borrow_and_update().clone();
                let mut out = Vec::new();
                for i in now.iter_ones() {
                    if !sent[i] {
                        out.extend(Message::Have(i as u32).encode_frame());
                    }
                }
                sent = now.as_ref().clone();
                out
            }
            msg = rx.recv() => match msg {
                Some(m) => m.encode_frame(),
                None => {
                    // the engine is done with this peer: flush and finish
                    let _ = send.finish();
                    let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
                    return;
                }
            },
        };
        if !frames.is_empty() && send.write_all(&frames).await.is_err() {
            return;
        }
    }
}

fn bitfield_frame(have: &BitVec) -> Vec<u8> {
    Message::Bitfield(have.iter().by_vals().collect()).encode_frame()
}

//! Serving one connection's request streams: each stream carries one
//! request; the engine answers it (piece, manifest or refusal) and this
//! module streams the bytes. A request must be whole within
//! `REQUEST_TIMEOUT` of its stream opening, and only a whole request takes
//! a serve slot: a peer that sends part of one holds nothing but the stream. How many of a connection's requests are served
//! at once follows `core::serve::ServeWindow`; a process serves at most
//! `SERVE_TOTAL` at once in all, so the buffers being read stay below
//! `SERVE_TOTAL * SERVE_CHUNK` (16 MiB) however many peers connect, and
//! the pool of free ones below `FREE_MAX * SERVE_CHUNK` (32 MiB). What quinn
//! still holds of finished serves (sent, not yet acknowledged) is bounded
//! only by each connection's send window: with 8 peers on loopback a seed
//! peaked near 100 MiB (docs/benchmarks.md, "Memory with many peers";
//! holding the slot until the piece is acknowledged bounds it by the
//! slots, but cost throughput there). A requester that stops reading is
//! found out by `stall_timeout` and then holds one slot at most.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::time::timeout;

use super::event::{Event, PieceSource, ServeAnswer};
use super::rate::RateLimit;
use crate::core::PeerKey;
use crate::core::serve::{ServeWindow, Served};
use crate::manifest::blocks::BLOCK;
use crate::text::Escaped;
use crate::wire::{self, REQUEST_LEN, Request, Status, close, piece};

mod delta;

/// Most requests of one connection served at once, and in all.
const SERVE_CONCURRENCY: usize = crate::core::serve::PER_CONNECTION;
pub const SERVE_TOTAL: usize = crate::core::serve::TOTAL;
/// How long after a request stream opens its request (5 bytes) must be
/// whole. A peer sends it with the stream's first packet; one that sends
/// part of it holds no serve slot meanwhile (a slot is taken only for a
/// whole request), only the stream, and not for long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Chunk size when streaming a piece from disk: a group of the answer's
/// zero-block framing (`wire::piece`).
const SERVE_CHUNK: usize = piece::GROUP;
/// A serve whose requester takes no byte for `STALL_BASE + STALL_PER_MIB *
/// piece size in MiB` is given up: its flow-control credit is used up and
/// it is not reading. An honest requester reads as the bytes arrive and
/// grants credit for more than a piece (8 MiB per stream), so its writes
/// wait only for the connection's send window, which every
/// acknowledgement frees again. Well below the request deadline (10 s +
/// 4 s per MiB), so a non-reader holds a slot for less than half of it.
const STALL_BASE: Duration = Duration::from_secs(4);
const STALL_PER_MIB: Duration = Duration::from_secs(1);

fn stall_timeout(len: u64) -> Duration {
    STALL_BASE + STALL_PER_MIB.mul_f64(len as f64 / (1 << 20) as f64)
}

/// The piece read from disk does not hash to the manifest's: its file
/// changed after it was hashed (or the disk lost it). The stream is reset
/// before its last chunk, so the requester never holds a bad piece (and
/// does not take this host for a liar), and the engine serves the piece no
/// more.
#[derive(Debug, thiserror::Error)]
#[error("the piece read from disk does not match the manifest")]
pub struct Changed;

/// The requester took no byte for a while.
#[derive(Debug, thiserror::Error)]
#[error("the peer took no data for {0:?}")]
struct Stalled(Duration);

/// One connection's slots: its window and a wake-up when one frees.
struct Slots {
    window: Mutex<ServeWindow>,
    freed: Notify,
}

impl Slots {
    async fn take(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.window.lock().unwrap().try_start() {
                return;
            }
            freed.await;
        }
    }

    fn give_back(&self, how: Served) {
        self.window.lock().unwrap().end(how);
        self.freed.notify_one();
    }
}

pub async fn serve_requests(
    key: PeerKey,
    conn: Connection,
    events: mpsc::Sender<Event>,
    total: Arc<Semaphore>,
) {
    let slots = Arc::new(Slots {
        window: Mutex::new(ServeWindow::new(SERVE_CONCURRENCY)),
        freed: Notify::new(),
    });
    let mut seq: i32 = 0;
    // Every stream the peer opens is read at once (quinn lets it have
    // `tls::STREAMS` open); a slot is taken only once its request is whole.
    while let Ok((send, recv)) = conn.accept_bi().await {
        // First come, first served: quinn sends the highest priority
        // first, so each piece completes (and can be passed on) as early
        // as possible instead of all of them sharing the link and
        // finishing together. The control stream (priority 0) goes first.
        seq = seq.wrapping_add(1) & 0x3fff_ffff;
        let _ = send.set_priority(-seq);
        let (events, slots, total) = (events.clone(), slots.clone(), total.clone());
        tokio::spawn(async move {
            let (send, req) = match read_request(send, recv).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(peer = key, "no request: {e:#}");
                    return;
                }
            };
            slots.take().await;
            let Ok(global) = total.acquire_owned().await else {
                slots.give_back(Served::Other);
                return;
            };
            let how = match serve_one(key, send, req, &events).await {
                Ok(how) => how,
                Err(e) => {
                    tracing::debug!(
                        peer = key,
                        "serving a request failed: {}",
                        Escaped(&format!("{e:#}"))
                    );
                    if e.downcast_ref::<Stalled>().is_some() {
                        Served::Stalled
                    } else {
                        Served::Other
                    }
                }
            };
            drop(global);
            slots.give_back(how);
        });
    }
}

/// Reads a stream's request, which must be whole within `REQUEST_TIMEOUT`
/// of the stream's opening; then stops the receiving side, so that bytes a
/// peer sends after its request are dropped, not buffered. A stream whose
/// request is late or malformed is reset.
async fn read_request(
    mut send: SendStream,
    mut recv: RecvStream,
) -> anyhow::Result<(SendStream, Request)> {
    // the head, then what `Request::more` says is left (a Blocks
    // request's bitmap: at most `MAX_REQUEST_LEN` in all)
    let read = async {
        let mut raw = vec![0u8; REQUEST_LEN];
        recv.read_exact(&mut raw).await?;
        loop {
            let more = Request::more(&raw)?;
            if more == 0 {
                break;
            }
            let at = raw.len();
            raw.resize(at + more, 0);
            recv.read_exact(&mut raw[at..]).await?;
        }
        Ok::<_, anyhow::Error>(Request::decode(&raw)?)
    };
    let req = match timeout(REQUEST_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "request not complete within {REQUEST_TIMEOUT:?}"
        )),
    };
    let _ = recv.stop(close::CANCEL.into());
    match req {
        Ok(req) => Ok((send, req)),
        Err(e) => {
            let _ = send.reset(close::CANCEL.into());
            Err(e)
        }
    }
}

async fn serve_one(
    key: PeerKey,
    mut send: SendStream,
    req: Request,
    events: &mpsc::Sender<Event>,
) -> anyhow::Result<Served> {
    let (reply, answer) = oneshot::channel();
    events
        .send(Event::ServeAsk {
            key,
            req: req.clone(),
            reply,
        })
        .await?;
    match answer.await? {
        ServeAnswer::Refuse(status) => {
            send.write_all(&[status as u8]).await?;
            send.finish()?;
            Ok(Served::Other)
        }
        ServeAnswer::Manifest(bytes) => {
            send.write_all(&wire::manifest_answer_header(bytes.len()))
                .await?;
            send.write_all(&bytes).await?;
            send.finish()?;
            Ok(Served::Other)
        }
        ServeAnswer::Piece { from, len, limits } => {
            let Some(piece) = req.piece() else {
                bail!("piece answer to a manifest request")
            };
            // The same deadline the requester applies: a peer that reads
            // too slowly cannot hold a serve slot for longer.
            let deadline = super::fetch::deadline(len);
            let counted = !matches!(req, Request::Outboard(_));
            let work = async {
                match req {
                    Request::Outboard(_) => delta::send_outboard(&mut send, piece, from, len).await,
                    Request::Blocks { wanted, .. } => {
                        delta::send_blocks(&mut send, piece, from, len, &wanted, &limits).await
                    }
                    Request::Delta { hints, .. } => {
                        delta::send_delta(&mut send, piece, from, len, &hints, &limits).await
                    }
                    _ => send_piece(&mut send, from, len, &limits).await,
                }
            };
            let result = match timeout(deadline, work).await {
                Ok(r) => r,
                Err(_) => Err(Stalled(deadline).into()),
            };
            let changed = result
                .as_ref()
                .is_err_and(|e| e.downcast_ref::<Changed>().is_some());
            if result.is_err() {
                let code = if changed {
                    close::CHANGED
                } else {
                    close::CANCEL
                };
                let _ = send.reset(code.into());
            }
            let sent = *result.as_ref().unwrap_or(&0);
            events
                .send(Event::ServeEnded {
                    key,
                    piece,
                    bytes: sent,
                    completed: result.is_ok(),
                    changed,
                    counted,
                })
                .await?;
            result.map(|_| Served::Piece)
        }
    }
}

async fn send_piece(
    send: &mut SendStream,
    from: PieceSource,
    len: u64,
    limits: &[Arc<RateLimit>],
) -> anyhow::Result<u64> {
    let stall = stall_timeout(len);
    send.write_all(&[Status::Ok as u8]).await?;
    let (mut done, mut sent) = (0u64, 0u64);
    let mut hasher = Some(Box::new(blake3::Hasher::new()));
    while done < len {
        let n = (len - done).min(SERVE_CHUNK as u64) as usize;
        let (chunk, mask) = match &from {
            PieceSource::Memory(data) => {
                let chunk = data.slice(done as usize..done as usize + n);
                let mask = piece::mask(&chunk);
                (chunk, mask)
            }
            PieceSource::Disk {
                content,
                offset,
                hash,
            } => {
                let (c, at) = (content.clone(), offset + done);
                let mut h = hasher.take().unwrap_or_default();
                // hashed on the same thread, while the bytes are in cache
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = Chunk::take(n);
                    c.read_at(at, &mut buf.0)?;
                    h.update(&buf.0);
                    let mask = piece::mask(&buf.0);
                    Ok::<_, std::io::Error>((buf, h, mask))
                })
                .await?;
                let (buf, h, mask) = match read {
                    Ok(r) => r,
                    // the file is shorter than when it was hashed
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Err(Changed.into());
                    }
                    Err(e) => return Err(e.into()),
                };
                if done + n as u64 == len && h.finalize().as_bytes() != hash {
                    return Err(Changed.into());
                }
                hasher = Some(h);
                (Bytes::from_owner(buf), mask)
            }
        };
        // the group's mask, then its blocks that are not all zeros
        // (`wire::piece`), runs of them as one slice
        let mut bufs = vec![Bytes::copy_from_slice(&mask.to_le_bytes())];
        let mut j = 0;
        while j * BLOCK < n {
            if mask & 1 << j == 0 {
                j += 1;
                continue;
            }
            let start = j;
            while j * BLOCK < n && mask & 1 << j != 0 {
                j += 1;
            }
            bufs.push(chunk.slice(start * BLOCK..(j * BLOCK).min(n)));
        }
        sent += write_limited(send, bufs, limits, stall).await?;
        done += n as u64;
    }
    send.finish()?;
    Ok(sent)
}

/// Passes `chunk` through the rate limits, then hands it to quinn
/// without a copy, watching that the requester keeps taking bytes.
async fn write_limited(
    send: &mut SendStream,
    mut bufs: Vec<Bytes>,
    limits: &[Arc<RateLimit>],
    stall: Duration,
) -> anyhow::Result<u64> {
    let total: usize = bufs.iter().map(Bytes::len).sum();
    for l in limits {
        l.acquire(total).await;
    }
    let mut i = 0;
    while i < bufs.len() {
        if bufs[i].is_empty() {
            i += 1;
            continue;
        }
        timeout(stall, send.write_chunks(&mut bufs[i..]))
            .await
            .map_err(|_| Stalled(stall))??;
    }
    Ok(total as u64)
}

/// A chunk being served; its buffer goes back to `FREE_CHUNKS` once quinn
/// is done with it (acknowledged or dropped). A fresh zeroed buffer per
/// chunk cost about 4% of the machine in a loopback transfer: zeroing it
/// and faulting its pages in.
struct Chunk(Vec<u8>);

/// Buffers ready for reuse. The pool never holds more than were alive at
/// once: up to `SERVE_TOTAL` being read, and those quinn still holds
/// (sent, not yet acknowledged). With 16 buffers, not enough for 15 peers,
/// the 1 x 16 benchmark spent 4% of the machine faulting in new ones.
static FREE_CHUNKS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const FREE_MAX: usize = 2 * SERVE_TOTAL;

fn free_chunks() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    FREE_CHUNKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Chunk {
    /// A buffer of `n` bytes, reused when one is free. Its contents are
    /// whatever it held; the caller overwrites all `n`.
    fn take(n: usize) -> Chunk {
        let mut buf = free_chunks()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SERVE_CHUNK));
        buf.resize(n, 0);
        Chunk(buf)
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        let mut free = free_chunks();
        if free.len() < FREE_MAX && buf.capacity() >= SERVE_CHUNK {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_found_well_before_the_request_deadline() {
        for len in [0, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20] {
            let (stall, deadline) = (stall_timeout(len), super::super::fetch::deadline(len));
            assert!(stall * 2 < deadline, "{len}: {stall:?} vs {deadline:?}");
        }
    }
}

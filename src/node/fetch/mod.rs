//! Fetching one piece: a request stream, a deadline, verification against
//! the manifest, and a positional write. The result goes to the engine.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quinn::Connection;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::credit::Grant;
use super::event::Event;
use super::rate::RateLimit;
use crate::core::{Failure, PeerKey};
use crate::manifest::{Manifest, blocks};
use crate::storage::{Basis, Content, PieceBuf};
use crate::text::Escaped;
use crate::wire::{self, Request, Status, close};

mod delta;

pub struct Job {
    pub key: PeerKey,
    pub conn: Connection,
    /// Set when `conn` leads to another group: the piece's bytes are
    /// taken from this bucket before the request goes out.
    pub wan_limit: Option<Arc<RateLimit>>,
    pub piece: u32,
    pub manifest: Arc<Manifest>,
    pub content: Arc<Content>,
    /// An older copy to take blocks from: set, a piece of more than one
    /// block is fetched as a delta (`delta`).
    pub basis: Option<Arc<Basis>>,
    pub cancel: CancellationToken,
}

/// Receive credit held at once while the manifest arrives.
const MANIFEST_CREDIT: u64 = 8 << 20;

pub use crate::core::request_deadline as deadline;

pub(super) enum Outcome {
    /// The piece's bytes, not yet verified, and the bytes that came for
    /// it (zero blocks are not sent).
    Data(PieceBuf, u64),
    /// The piece, verified block by block: `received` bytes came from the
    /// peer (outboard included), `from_basis` from the basis.
    Delta {
        data: PieceBuf,
        received: u64,
        from_basis: u64,
    },
    /// The piece, completed in place (`delta::in_place`): verified block
    /// by block and written.
    InPlace {
        received: u64,
        from_basis: u64,
    },
    /// A write of a piece completed in place failed (disk full).
    WriteFailed(std::io::Error),
    /// The peer sent an outboard or blocks that do not check out.
    Corrupt,
    Refused(Status),
}

pub async fn run(job: Job, events: mpsc::Sender<Event>) {
    let (offset, len) = job.manifest.piece_range(job.piece as usize);
    let hash = *job
        .manifest
        .piece_hash(job.piece as usize)
        .unwrap_or(&[0; 32]);
    let basis = job.basis.clone().filter(|_| blocks::splittable(len));
    // from before the WAN bucket's wait: the core's piece ages count it
    // too, and a piece waiting for tokens must not look late
    let started = Instant::now();
    if basis.is_none()
        && let Some(l) = &job.wan_limit
    {
        tokio::select! {
            _ = l.acquire(len as usize) => {}
            _ = job.cancel.cancelled() => return,
        }
    }
    let work = async {
        match &basis {
            Some(b) => {
                let wan = job.wan_limit.as_deref();
                let target = delta::Target {
                    piece: job.piece,
                    offset,
                    len,
                    hash: &hash,
                    content: &job.content,
                };
                delta::request(&job.conn, target, b, wan).await
            }
            None => request(&job.conn, job.piece, len).await,
        }
    };
    let got = tokio::select! {
        r = timeout(deadline(len), work) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("deadline of {:?} missed", deadline(len))),
        },
        _ = job.cancel.cancelled() => return,
    };
    let event = match got {
        Ok(Outcome::Delta {
            data,
            received,
            from_basis,
        }) => {
            store(
                &job,
                offset,
                data,
                received,
                from_basis,
                Check::Done,
                started,
            )
            .await
        }
        Ok(Outcome::InPlace {
            received,
            from_basis,
        }) => Event::PieceDone {
            key: job.key,
            piece: job.piece,
            data: None,
            received,
            from_basis,
            elapsed: started.elapsed(),
        },
        Ok(Outcome::WriteFailed(why)) => Event::WriteFailed {
            piece: job.piece,
            why,
        },
        Ok(Outcome::Corrupt) => Event::PieceFailed {
            key: job.key,
            piece: job.piece,
            why: Failure::Corrupt,
        },
        Ok(Outcome::Data(data, received)) => {
            store(&job, offset, data, received, 0, Check::WholePiece, started).await
        }
        Ok(Outcome::Refused(Status::Elsewhere)) => Event::PieceFailed {
            key: job.key,
            piece: job.piece,
            why: Failure::Elsewhere,
        },
        Ok(Outcome::Refused(Status::Changed)) => Event::PieceFailed {
            key: job.key,
            piece: job.piece,
            why: Failure::Changed,
        },
        Ok(Outcome::Refused(_)) => Event::PieceFailed {
            key: job.key,
            piece: job.piece,
            why: Failure::Missing,
        },
        Err(e) => {
            tracing::debug!(
                peer = job.key,
                piece = job.piece,
                "request failed: {}",
                Escaped(&format!("{e:#}"))
            );
            Event::PieceFailed {
                key: job.key,
                piece: job.piece,
                why: Failure::Failed,
            }
        }
    };
    let _ = events.send(event).await;
}

/// What [`store`] must still check before it writes a piece.
#[derive(Clone, Copy)]
enum Check {
    /// Hash the whole piece against the manifest (a piece from a peer).
    WholePiece,
    /// Nothing: every block was verified as it arrived (a delta).
    Done,
}

/// Verifies `data` against the manifest as `check` says, writes it at
/// `offset` off the async threads, and says how that went.
async fn store(
    job: &Job,
    offset: u64,
    data: PieceBuf,
    received: u64,
    from_basis: u64,
    check: Check,
    started: Instant,
) -> Event {
    let (m, c, piece) = (job.manifest.clone(), job.content.clone(), job.piece);
    // One contiguous buffer: hashing it whole uses blake3's SIMD width and
    // writing it is one pwrite. Keeping quinn's ~9 KB chunks instead cost
    // more (joiner user time 1.9 -> 2.8 s/GiB).
    let stored = tokio::task::spawn_blocking(move || {
        if matches!(check, Check::WholePiece) && !m.verify_piece(piece as usize, data.as_slice()) {
            return Ok(None);
        }
        c.write_sparse(offset, data.as_slice()).map(|_| Some(data))
    })
    .await;
    let (key, piece) = (job.key, job.piece);
    match stored {
        Ok(Ok(Some(data))) => Event::PieceDone {
            key,
            piece,
            data: Some(Bytes::from_owner(data)),
            received,
            from_basis,
            elapsed: started.elapsed(),
        },
        Ok(Ok(None)) => Event::PieceFailed {
            key,
            piece,
            why: Failure::Corrupt,
        },
        Ok(Err(why)) => Event::WriteFailed { piece, why },
        Err(e) => Event::WriteFailed {
            piece,
            why: std::io::Error::other(e.to_string()),
        },
    }
}

impl wire::piece::Sink for PieceBuf {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_zeros(&mut self, n: usize) {
        self.extend_zeros(n);
    }
    fn keep(&mut self, n: usize) {
        // only a Delta answer keeps blocks; a piece's decoder never does
        self.extend_zeros(n);
    }
}

async fn request(conn: &Connection, piece: u32, len: u64) -> anyhow::Result<Outcome> {
    // the peer may send the answer's bytes (status, masks and piece) at once
    let most = 1 + len + 4 * len.div_ceil(wire::piece::GROUP as u64);
    let mut credit = Grant::new(conn, most, most);
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&Request::Piece(piece).encode()).await?;
    send.finish()?;
    let status = read_status(&mut recv).await?;
    credit.read(1);
    if status != Status::Ok {
        return Ok(Outcome::Refused(status));
    }
    // read chunks as quinn hands them over, never more than the answer
    // holds next; one copy into a buffer aligned for a direct write, zero
    // blocks filled in (`wire::piece`)
    let mut a = Decoding {
        d: wire::piece::Decoder::new(len),
        out: PieceBuf::with_capacity(len as usize),
    };
    if !read_answer(&mut recv, &mut credit, &mut a, None).await? {
        return Ok(Outcome::Refused(Status::Changed));
    }
    Ok(Outcome::Data(a.out, a.d.received))
}

/// An answer read as it comes: how many bytes it holds next (0: it is
/// complete), and where they go.
pub(super) trait Reading {
    fn want(&self) -> usize;
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<()>;
}

/// A piece answer (`wire::piece`) decoded into `out`.
pub(super) struct Decoding<S> {
    pub d: wire::piece::Decoder,
    pub out: S,
}

impl<S: wire::piece::Sink> Reading for Decoding<S> {
    fn want(&self) -> usize {
        self.d.want()
    }
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(self.d.feed(bytes, &mut self.out)?)
    }
}

/// Reads the rest of an answer into `r`, giving its receive credit back
/// as it goes, after taking `wan`'s tokens for it if given. `Ok(false)`:
/// the holder reset the stream with CHANGED (its copy no longer matches
/// the manifest).
pub(super) async fn read_answer(
    recv: &mut quinn::RecvStream,
    credit: &mut Grant,
    r: &mut impl Reading,
    wan: Option<&RateLimit>,
) -> anyhow::Result<bool> {
    while r.want() > 0 {
        match recv.read_chunk(r.want(), true).await {
            Ok(Some(chunk)) => {
                if let Some(l) = wan {
                    l.acquire(chunk.bytes.len()).await;
                }
                credit.read(chunk.bytes.len() as u64);
                r.feed(&chunk.bytes)?;
            }
            Ok(None) => anyhow::bail!("stream ended {} bytes short of the answer", r.want()),
            Err(quinn::ReadError::Reset(code)) if code == close::CHANGED.into() => {
                return Ok(false);
            }
            Err(e) => {
                let _ = recv.stop(close::CANCEL.into());
                return Err(e.into());
            }
        }
    }
    Ok(true)
}

/// The status byte of an answer. A holder whose copy changed may reset
/// the stream with CHANGED before even the status is through: that is
/// the Changed status, not a failure of the peer.
pub(super) async fn read_status(recv: &mut quinn::RecvStream) -> anyhow::Result<Status> {
    let mut status = [0u8; 1];
    match recv.read_exact(&mut status).await {
        Ok(()) => Ok(Status::decode(status[0])?),
        Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code)))
            if code == close::CHANGED.into() =>
        {
            Ok(Status::Changed)
        }
        Err(e) => Err(e.into()),
    }
}

/// Fetches the manifest from a peer and checks it against the ticket's id.
pub async fn manifest(
    conn: &Connection,
    want: crate::manifest::ManifestId,
) -> Result<(Manifest, Vec<u8>), super::NodeError> {
    use super::NodeError;
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&Request::Manifest.encode()).await?;
        send.finish()?;
        // the answer must start soon (a host that never answers is left
        // for the next one); a large manifest may then take longer
        let mut status = [0u8; 1];
        timeout(super::HANDSHAKE_TIMEOUT, recv.read_exact(&mut status))
            .await
            .map_err(|_| anyhow::anyhow!("no answer to the manifest request"))??;
        if Status::decode(status[0])? != Status::Ok {
            anyhow::bail!("peer refused to send the manifest");
        }
        let mut len = [0u8; 4];
        recv.read_exact(&mut len).await?;
        let len = wire::manifest_answer_len(len)?;
        // credit for the manifest as it is read, a few MiB at a time; the
        // buffer grows with what arrives, not with what the length claims
        let mut credit = Grant::new(conn, len as u64, MANIFEST_CREDIT);
        let mut bytes = Vec::with_capacity(len.min(MANIFEST_CREDIT as usize));
        while bytes.len() < len {
            let Some(chunk) = recv.read_chunk(len - bytes.len(), true).await? else {
                anyhow::bail!("the manifest ended after {} of {len} bytes", bytes.len());
            };
            credit.read(chunk.bytes.len() as u64);
            bytes.extend_from_slice(&chunk.bytes);
        }
        Ok::<_, anyhow::Error>(bytes)
    };
    let bytes = timeout(super::MANIFEST_TIMEOUT, work)
        .await
        .map_err(|_| NodeError::Network("timed out fetching the manifest".into()))?
        .map_err(|e| NodeError::Network(format!("fetching the manifest: {e:#}")))?;
    let got = blake3::hash(&bytes);
    if got.as_bytes() != &want.0 {
        return Err(NodeError::Verification(format!(
            "manifest from peer hashes to {}, the ticket says {want}",
            crate::manifest::ManifestId(*got.as_bytes())
        )));
    }
    let m =
        Manifest::decode(&bytes).map_err(|e| NodeError::Verification(format!("manifest: {e}")))?;
    Ok((m, bytes))
}

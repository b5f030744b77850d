//! Serving a delta: a piece's outboard (the CVs of its blocks), and the
//! blocks a requester lacks after looking in its basis, asked for by
//! their index (Blocks) or by a hint of what the requester has (Delta). Both read the
//! piece a chunk at a time, as a whole-piece serve does; a piece read from
//! disk is checked against the manifest's hash by merging the CVs of its
//! blocks, and if it no longer matches (`Changed`) the answer is cut
//! before its last bytes, so the requester never takes this host for a
//! liar.

use std::sync::Arc;

use bitvec::prelude::*;
use bytes::Bytes;
use quinn::SendStream;

use super::{Changed, Chunk, SERVE_CHUNK, stall_timeout, write_limited};
use crate::manifest::blocks::{self, BLOCK, Cv};
use crate::node::event::PieceSource;
use crate::node::outboards;
use crate::node::rate::RateLimit;
use crate::wire::Status;
use crate::wire::piece::{self, GROUP_BLOCKS};

const _: () = assert!(SERVE_CHUNK.is_multiple_of(BLOCK));

/// `n` bytes of the piece at `at` (a multiple of `BLOCK`), with the CVs of
/// the blocks in them when `want_cvs` or when read from disk.
async fn chunk(
    from: &PieceSource,
    at: u64,
    n: usize,
    want_cvs: bool,
) -> anyhow::Result<(Bytes, Vec<Cv>)> {
    let first = at as usize / BLOCK;
    let cvs_of = move |b: &[u8]| -> Vec<Cv> {
        b.chunks(BLOCK)
            .enumerate()
            .map(|(j, block)| blocks::cv(first + j, block))
            .collect()
    };
    match from {
        PieceSource::Memory(data) => {
            let bytes = data.slice(at as usize..at as usize + n);
            if !want_cvs {
                return Ok((bytes, Vec::new()));
            }
            let b = bytes.clone();
            let cvs = tokio::task::spawn_blocking(move || cvs_of(&b)).await?;
            Ok((bytes, cvs))
        }
        PieceSource::Disk {
            content, offset, ..
        } => {
            let (c, pos) = (content.clone(), offset + at);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = Chunk::take(n);
                c.read_at(pos, &mut buf.0)?;
                let cvs = cvs_of(&buf.0);
                Ok::<_, std::io::Error>((buf, cvs))
            })
            .await?;
            match read {
                Ok((buf, cvs)) => Ok((Bytes::from_owner(buf), cvs)),
                // the file is shorter than when it was hashed
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Changed.into()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Whether the CVs read from disk still merge to the manifest's hash.
fn still_matches(from: &PieceSource, cvs: &[Cv], len: u64) -> bool {
    match from {
        PieceSource::Memory(_) => true,
        PieceSource::Disk { hash, .. } => blocks::root(cvs, len).as_ref() == Some(hash),
    }
}

/// The piece's `blocks::count(len)` CVs: known already (`outboards`), or
/// read, hashed and checked against the manifest now.
async fn outboard_of(piece: u32, from: &PieceSource, len: u64) -> anyhow::Result<Arc<[Cv]>> {
    if let Some(cvs) = outboards::get(piece).filter(|c| c.len() == blocks::count(len)) {
        return Ok(cvs);
    }
    let mut cvs = Vec::with_capacity(blocks::count(len));
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(SERVE_CHUNK as u64) as usize;
        cvs.extend(chunk(from, done, n, true).await?.1);
        done += n as u64;
    }
    if !still_matches(from, &cvs, len) {
        return Err(Changed.into());
    }
    outboards::put(piece, &cvs);
    Ok(cvs.into())
}

/// Status, then the outboard `cvs`.
fn outboard_answer(cvs: &[Cv]) -> Bytes {
    let mut out = Vec::with_capacity(1 + 32 * cvs.len());
    out.push(Status::Ok as u8);
    for cv in cvs {
        out.extend_from_slice(cv);
    }
    out.into()
}

/// Status, then the piece's `blocks::count(len)` CVs.
pub async fn send_outboard(
    send: &mut SendStream,
    piece: u32,
    from: PieceSource,
    len: u64,
) -> anyhow::Result<u64> {
    let answer = outboard_answer(&outboard_of(piece, &from, len).await?);
    let sent = answer.len() as u64 - 1;
    write_limited(send, vec![answer], &[], stall_timeout(sent)).await?;
    send.finish()?;
    Ok(sent)
}

/// Status, then the blocks whose CV does not start with the requester's
/// hint (the CV of the block it has there), framed as a Delta answer
/// (`wire::piece`): per group of blocks a mask of those that follow and
/// one of those that are zeros (which never follow); the requester keeps
/// its own for the others. Blocks read from disk are checked against the
/// outboard (itself checked against the manifest) before they leave.
pub async fn send_delta(
    send: &mut SendStream,
    piece: u32,
    from: PieceSource,
    len: u64,
    hints: &[[u8; 2]],
    limits: &[Arc<RateLimit>],
) -> anyhow::Result<u64> {
    let cvs = outboard_of(piece, &from, len).await?;
    let stall = stall_timeout(len);
    let mut sent = 0;
    let disk = matches!(from, PieceSource::Disk { .. });
    let differs = |b: usize| cvs[b][..2] != hints[b];
    let count = cvs.len();
    for g in (0..count).step_by(GROUP_BLOCKS) {
        let end = (g + GROUP_BLOCKS).min(count);
        // the status goes with the first group
        let status = usize::from(g == 0);
        let mut out = vec![0u8; status + 8];
        if status == 1 {
            out[0] = Status::Ok as u8;
        }
        let (mut mask, mut zeros) = (0u32, 0u32);
        let mut b = g;
        while b < end {
            if !differs(b) {
                b += 1;
                continue;
            }
            let mut e = b + 1;
            while e < end && differs(e) {
                e += 1;
            }
            let at = (b * BLOCK) as u64;
            let n = ((e * BLOCK) as u64).min(len) - at;
            let (bytes, got) = chunk(&from, at, n as usize, disk).await?;
            if disk && got[..] != cvs[b..e] {
                // the file changed since the piece was checked
                return Err(Changed.into());
            }
            for (k, block) in bytes.chunks(BLOCK).enumerate() {
                if piece::is_zero(block) {
                    zeros |= 1 << (b + k - g);
                } else {
                    mask |= 1 << (b + k - g);
                    out.extend_from_slice(block);
                }
            }
            b = e;
        }
        out[status..status + 4].copy_from_slice(&mask.to_le_bytes());
        out[status + 4..status + 8].copy_from_slice(&zeros.to_le_bytes());
        sent += (out.len() - status) as u64;
        write_limited(send, vec![out.into()], limits, stall).await?;
    }
    send.finish()?;
    Ok(sent)
}

/// Status, then the blocks set in `wanted` (as many bits as the piece has
/// blocks: the engine checked), in order. From disk, with the piece's
/// outboard known to be right, only the wanted blocks are read, each
/// checked against its CV before it leaves; without it, the whole piece
/// is read and checked, and the last chunk's worth of the blocks is held
/// back until then.
pub async fn send_blocks(
    send: &mut SendStream,
    piece: u32,
    from: PieceSource,
    len: u64,
    wanted: &BitSlice<u8, Lsb0>,
    limits: &[Arc<RateLimit>],
) -> anyhow::Result<u64> {
    if matches!(from, PieceSource::Disk { .. })
        && let Some(cvs) = outboards::get(piece).filter(|c| c.len() == blocks::count(len))
    {
        return send_checked_blocks(send, &from, len, wanted, &cvs, limits).await;
    }
    let stall = stall_timeout(len);
    send.write_all(&[Status::Ok as u8]).await?;
    let mut cvs = Vec::with_capacity(blocks::count(len));
    let mut held: Option<Bytes> = None;
    let (mut done, mut sent) = (0u64, 0u64);
    while done < len {
        let n = (len - done).min(SERVE_CHUNK as u64) as usize;
        let first = done as usize / BLOCK;
        let any = (first..blocks::count(done + n as u64)).any(|b| wanted[b]);
        let disk = matches!(from, PieceSource::Disk { .. });
        // a chunk with no wanted block from memory is not even read
        if any || disk {
            let (bytes, more) = chunk(&from, done, n, false).await?;
            cvs.extend(more);
            // the wanted blocks of the chunk copied out together: a slice
            // would keep the whole chunk alive until quinn has it acked
            // (32 times the bytes sent, for one block per chunk)
            let mut out = Vec::new();
            for (j, at) in (0..n).step_by(BLOCK).enumerate() {
                if wanted[first + j] {
                    out.extend_from_slice(&bytes[at..(at + BLOCK).min(n)]);
                }
            }
            drop(bytes);
            if !out.is_empty()
                && let Some(prev) = held.replace(Bytes::from(out))
            {
                sent += prev.len() as u64;
                write_limited(send, vec![prev], limits, stall).await?;
            }
        }
        done += n as u64;
    }
    if !still_matches(&from, &cvs, len) {
        return Err(Changed.into());
    }
    if matches!(from, PieceSource::Disk { .. }) {
        outboards::put(piece, &cvs);
    }
    if let Some(last) = held {
        sent += last.len() as u64;
        write_limited(send, vec![last], limits, stall).await?;
    }
    send.finish()?;
    Ok(sent)
}

/// `send_blocks` from disk against a checked outboard: runs of wanted
/// blocks (at most a chunk) are read and sent, nothing else. A delta of a
/// few pages in a 1 MiB piece had read and hashed the whole piece for
/// every requester: at 1 x 8, 1% of pages rewritten, the seed hashed 7 x
/// the changed pieces to send 7 x the changed blocks.
async fn send_checked_blocks(
    send: &mut SendStream,
    from: &PieceSource,
    len: u64,
    wanted: &BitSlice<u8, Lsb0>,
    cvs: &[Cv],
    limits: &[Arc<RateLimit>],
) -> anyhow::Result<u64> {
    let stall = stall_timeout(len);
    send.write_all(&[Status::Ok as u8]).await?;
    let (count, per) = (blocks::count(len), SERVE_CHUNK / BLOCK);
    let (mut b, mut sent) = (0, 0u64);
    while b < count {
        if !wanted[b] {
            b += 1;
            continue;
        }
        let mut e = b + 1;
        while e < count && wanted[e] && e - b < per {
            e += 1;
        }
        let at = (b * BLOCK) as u64;
        let n = ((e * BLOCK) as u64).min(len) - at;
        let (bytes, got) = chunk(from, at, n as usize, true).await?;
        if got[..] != cvs[b..e] {
            // the file changed since the piece was checked
            return Err(Changed.into());
        }
        sent += bytes.len() as u64;
        write_limited(send, vec![bytes], limits, stall).await?;
        b = e;
    }
    send.finish()?;
    Ok(sent)
}

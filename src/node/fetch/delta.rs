//! Fetching a piece as a delta against the basis: ask the peer for the
//! piece's outboard and check it against the manifest; take every block
//! the basis has (checked against its CV as it is read) and every block
//! of zeros (left a hole); ask the peer for the rest in one request and
//! check each block it sends against its CV. Two round trips instead of
//! one, and 32 bytes of outboard per 16 KiB block of the piece.

use bitvec::prelude::*;
use quinn::Connection;

use super::Outcome;
use crate::manifest::Hash;
use crate::manifest::blocks::{self, Cv};
use crate::node::credit::Grant;
use crate::node::rate::RateLimit;
use crate::storage::{Basis, Content, PieceBuf};
use crate::wire::close;
use crate::wire::{Request, Status};
use std::sync::Arc;

/// Asks `conn` for `req`; returns its status and, if it is Ok, the next
/// `len` bytes of the answer read into `into` (a CHANGED reset is the
/// Changed status).
async fn ask(
    conn: &Connection,
    req: &Request,
    len: u64,
    mut into: impl FnMut(&[u8]),
) -> anyhow::Result<Status> {
    let mut credit = Grant::new(conn, 1 + len, 1 + len);
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&req.encode()).await?;
    send.finish()?;
    let status = super::read_status(&mut recv).await?;
    credit.read(1);
    if status != Status::Ok {
        return Ok(status);
    }
    let mut got = 0u64;
    while got < len {
        match recv.read_chunk((len - got) as usize, true).await {
            Ok(Some(chunk)) => {
                credit.read(chunk.bytes.len() as u64);
                got += chunk.bytes.len() as u64;
                into(&chunk.bytes);
            }
            Ok(None) => anyhow::bail!("stream ended after {got} of {len} bytes"),
            Err(quinn::ReadError::Reset(code)) if code == close::CHANGED.into() => {
                return Ok(Status::Changed);
            }
            Err(e) => {
                let _ = recv.stop(close::CANCEL.into());
                return Err(e.into());
            }
        }
    }
    Ok(Status::Ok)
}

/// Where a delta's piece goes: `len` bytes at `offset` of `content`.
pub(super) struct Target<'a> {
    pub piece: u32,
    pub offset: u64,
    pub len: u64,
    pub hash: &'a Hash,
    pub content: &'a Arc<Content>,
}

pub(super) async fn request(
    conn: &Connection,
    t: Target<'_>,
    basis: &Arc<Basis>,
    wan: Option<&RateLimit>,
) -> anyhow::Result<Outcome> {
    let (piece, len, hash) = (t.piece, t.len, t.hash);
    let n = blocks::count(len);
    let outboard_len = 32 * n as u64;
    if let Some(l) = wan {
        l.acquire(outboard_len as usize).await;
    }
    let mut raw = Vec::with_capacity(outboard_len as usize);
    let asked = std::time::Instant::now();
    let status = ask(conn, &Request::Outboard(piece), outboard_len, |b| {
        raw.extend_from_slice(b)
    })
    .await?;
    if status != Status::Ok {
        return Ok(Outcome::Refused(status));
    }
    let Some(cvs) = blocks::check_outboard(&raw, len, hash) else {
        return Ok(Outcome::Corrupt);
    };
    crate::node::outboards::put(piece, &cvs);
    let outboard_took = asked.elapsed();
    if basis.placed(piece) {
        return in_place(conn, &t, cvs, basis, wan, outboard_took).await;
    }
    // the basis and zeros first, on a blocking thread (disk reads)
    let (b, c) = (basis.clone(), cvs.clone());
    let (mut data, wanted, from_basis) =
        tokio::task::spawn_blocking(move || from_basis(&b, &c, len)).await?;
    let want_bytes = wanted_bytes(&wanted, len);
    if want_bytes > 0 {
        let ranges: Vec<std::ops::Range<usize>> =
            wanted.iter_ones().map(|j| blocks::range(j, len)).collect();
        let (mut at, mut r) = (0usize, 0usize);
        let buf = data.as_mut_slice();
        let status = ask_blocks(conn, piece, &wanted, want_bytes, wan, |mut b| {
            // the blocks arrive one after the other; put each in place
            while !b.is_empty() && r < ranges.len() {
                let range = &ranges[r];
                let take = (range.len() - at).min(b.len());
                buf[range.start + at..range.start + at + take].copy_from_slice(&b[..take]);
                b = &b[take..];
                at += take;
                if at == range.len() {
                    (at, r) = (0, r + 1);
                }
            }
        })
        .await?;
        if status != Status::Ok {
            return Ok(Outcome::Refused(status));
        }
        let check = tokio::task::spawn_blocking(move || {
            let ok = wanted
                .iter_ones()
                .all(|j| blocks::cv(j, &data.as_slice()[blocks::range(j, len)]) == cvs[j]);
            (ok, data)
        });
        let (ok, checked) = check.await?;
        if !ok {
            return Ok(Outcome::Corrupt);
        }
        data = checked;
    }
    Ok(Outcome::Delta {
        data,
        received: outboard_len + want_bytes,
        from_basis,
    })
}

/// A piece whose old blocks the basis wrote ahead at its place: completed
/// there (`Basis::fill_in_place`), and the blocks still wanted fetched in
/// one request, checked, and written where they belong. No buffer of the
/// whole piece, and no read or hash of the blocks already in place.
async fn in_place(
    conn: &Connection,
    t: &Target<'_>,
    cvs: Vec<Cv>,
    basis: &Arc<Basis>,
    wan: Option<&RateLimit>,
    outboard_took: std::time::Duration,
) -> anyhow::Result<Outcome> {
    let (piece, len, offset) = (t.piece, t.len, t.offset);
    let filling = std::time::Instant::now();
    let outboard_len = 32 * cvs.len() as u64;
    let (b, c, content) = (basis.clone(), Arc::new(cvs), t.content.clone());
    let c2 = c.clone();
    let local =
        tokio::task::spawn_blocking(move || b.fill_in_place(piece, &c2, len, &content, offset))
            .await?;
    let (wanted, from_basis) = match local {
        Ok(w) => w,
        Err(e) => return Ok(Outcome::WriteFailed(e)),
    };
    let want_bytes = wanted_bytes(&wanted, len);
    let fill_took = filling.elapsed();
    let fetching = std::time::Instant::now();
    if want_bytes > 0 {
        let mut data = PieceBuf::with_capacity(want_bytes as usize);
        let into = |b: &[u8]| data.extend_from_slice(b);
        let status = ask_blocks(conn, piece, &wanted, want_bytes, wan, into).await?;
        if status != Status::Ok {
            return Ok(Outcome::Refused(status));
        }
        let content = t.content.clone();
        let written = tokio::task::spawn_blocking(move || {
            // the blocks came one after the other, in block order
            let mut at = 0usize;
            for j in wanted.iter_ones() {
                let r = blocks::range(j, len);
                let block = &data.as_slice()[at..at + r.len()];
                if blocks::cv(j, block) != c[j] {
                    return Ok(false);
                }
                at += r.len();
            }
            let mut at = 0usize;
            for run in runs(&wanted) {
                let (start, end) = (
                    blocks::range(run.start, len),
                    blocks::range(run.end - 1, len),
                );
                let n = end.end - start.start;
                content.write_at(offset + start.start as u64, &data.as_slice()[at..at + n])?;
                at += n;
            }
            Ok::<_, std::io::Error>(true)
        })
        .await?;
        match written {
            Ok(true) => {}
            Ok(false) => return Ok(Outcome::Corrupt),
            Err(e) => return Ok(Outcome::WriteFailed(e)),
        }
    }
    basis.forget(piece);
    tracing::trace!(
        piece,
        ?outboard_took,
        ?fill_took,
        blocks_took = ?fetching.elapsed(),
        want_bytes,
        "delta in place"
    );
    Ok(Outcome::InPlace {
        received: outboard_len + want_bytes,
        from_basis,
    })
}

/// Bytes of the blocks set in `wanted`, of a piece of `len` bytes.
fn wanted_bytes(wanted: &BitSlice<u8, Lsb0>, len: u64) -> u64 {
    wanted
        .iter_ones()
        .map(|j| blocks::range(j, len).len() as u64)
        .sum()
}

/// Asks `conn` for the blocks of `piece` set in `wanted` (`want_bytes`
/// in all), past the WAN bucket first when it leads to another group.
async fn ask_blocks(
    conn: &Connection,
    piece: u32,
    wanted: &BitVec<u8, Lsb0>,
    want_bytes: u64,
    wan: Option<&RateLimit>,
    into: impl FnMut(&[u8]),
) -> anyhow::Result<Status> {
    if let Some(l) = wan {
        l.acquire(want_bytes as usize).await;
    }
    let req = Request::Blocks {
        piece,
        wanted: wanted.clone(),
    };
    ask(conn, &req, want_bytes, into).await
}

/// Runs of consecutive set bits: block index ranges.
fn runs(bits: &BitSlice<u8, Lsb0>) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut ones = bits.iter_ones().peekable();
    std::iter::from_fn(move || {
        let start = ones.next()?;
        let mut end = start + 1;
        while ones.peek() == Some(&end) {
            ones.next();
            end += 1;
        }
        Some(start..end)
    })
}

/// The piece with what the basis has and the zero blocks filled in; the
/// blocks still wanted; bytes taken from the basis.
fn from_basis(basis: &Basis, cvs: &[Cv], len: u64) -> (PieceBuf, BitVec<u8, Lsb0>, u64) {
    let mut data = PieceBuf::zeroed(len as usize);
    let mut wanted = bitvec![u8, Lsb0; 0; cvs.len()];
    let mut taken = 0u64;
    for (j, cv) in cvs.iter().enumerate() {
        let range = blocks::range(j, len);
        if basis.is_zero_block(j, cv, range.len()) {
            continue;
        }
        if basis.block(j, cv, &mut data.as_mut_slice()[range.clone()]) {
            taken += range.len() as u64;
        } else {
            wanted.set(j, true);
        }
    }
    (data, wanted, taken)
}

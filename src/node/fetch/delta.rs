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
use crate::storage::{Basis, PieceBuf};
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

pub(super) async fn request(
    conn: &Connection,
    piece: u32,
    len: u64,
    hash: &Hash,
    basis: &Arc<Basis>,
    wan: Option<&RateLimit>,
) -> anyhow::Result<Outcome> {
    let n = blocks::count(len);
    let outboard_len = 32 * n as u64;
    if let Some(l) = wan {
        l.acquire(outboard_len as usize).await;
    }
    let mut raw = Vec::with_capacity(outboard_len as usize);
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
    // the basis and zeros first, on a blocking thread (disk reads)
    let cvs_kept = cvs.clone();
    let (b, c) = (basis.clone(), cvs.clone());
    let (mut data, wanted, from_basis) =
        tokio::task::spawn_blocking(move || from_basis(&b, &c, len)).await?;
    let want_bytes: u64 = wanted
        .iter_ones()
        .map(|j| blocks::range(j, len).len() as u64)
        .sum();
    if want_bytes > 0 {
        if let Some(l) = wan {
            l.acquire(want_bytes as usize).await;
        }
        let ranges: Vec<std::ops::Range<usize>> =
            wanted.iter_ones().map(|j| blocks::range(j, len)).collect();
        let (mut at, mut r) = (0usize, 0usize);
        let buf = data.as_mut_slice();
        let req = Request::Blocks {
            piece,
            wanted: wanted.clone(),
        };
        let status = ask(conn, &req, want_bytes, |mut b| {
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
    crate::node::outboards::put(piece, &cvs_kept);
    Ok(Outcome::Delta {
        data,
        received: outboard_len + want_bytes,
        from_basis,
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

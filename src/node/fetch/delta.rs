//! Fetching a piece as a delta against the basis.
//!
//! A piece whose old blocks the index wrote ahead at its place (`placed`,
//! the common case: a file changed in place or grown) takes one round
//! trip: a Delta request gives, for each block, the first two bytes of
//! the CV of the block already there, and the holder answers with the
//! blocks whose CV differs (two masks per group say which follow and
//! which are zeros; the others are kept). The piece's CVs are then those
//! of the blocks sent, of zeros, and of the old blocks kept, and they must
//! merge to the manifest's hash: so every block is checked without an
//! outboard, which cost 32 bytes per 16 KiB block of the piece, an eighth
//! of a delta of one page. When they do not merge (two bytes of a changed
//! CV that happen to match the old one's: one block in 65,536; or a
//! holder that lies), the outboard is asked for: it says which blocks are
//! wrong or missing, and those are asked for with Blocks.
//!
//! Any other piece (its bytes elsewhere in the basis, or a piece of more
//! than `MAX_DELTA_BLOCKS` blocks) takes two: the outboard, checked; every
//! block the basis has (checked against its CV as it is read) and every
//! block of zeros (left a hole) taken locally; the rest in one Blocks
//! request, each block checked against its CV.
//!
//! An outboard is 32 bytes per 16 KiB block of the piece.

use bitvec::prelude::*;
use quinn::Connection;

use super::{Decoding, Outcome, Reading};
use crate::manifest::Hash;
use crate::manifest::blocks::{self, Cv};
use crate::node::credit::Grant;
use crate::node::rate::RateLimit;
use crate::storage::{Basis, Content, PieceBuf};
use crate::wire::{self, MAX_DELTA_BLOCKS, Request, Status};
use std::sync::Arc;

/// Asks `conn` for `req`; returns its status and, if it is Ok, the next
/// `len` bytes of the answer read into `into` (a CHANGED reset is the
/// Changed status).
async fn ask(
    conn: &Connection,
    req: &Request,
    len: u64,
    into: impl FnMut(&[u8]),
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
    let mut exact = Exact { left: len, into };
    if !super::read_answer(&mut recv, &mut credit, &mut exact, None).await? {
        return Ok(Status::Changed);
    }
    Ok(Status::Ok)
}

/// The next `left` bytes of an answer, handed to `into`.
struct Exact<F> {
    left: u64,
    into: F,
}

impl<F: FnMut(&[u8])> Reading for Exact<F> {
    fn want(&self) -> usize {
        self.left.min(usize::MAX as u64) as usize
    }
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(bytes.len() as u64 <= self.left, "answer longer than asked");
        self.left -= bytes.len() as u64;
        (self.into)(bytes);
        Ok(())
    }
}

/// The blocks of a Delta answer, one after the other, and which they are
/// (a `wire::piece::Sink`).
struct Sent {
    /// Whether this came from a Delta answer (else none came yet).
    from_delta: bool,
    at: usize,
    data: Vec<u8>,
    which: BitVec<u8, Lsb0>,
    /// The blocks the answer says are zeros.
    zeros: BitVec<u8, Lsb0>,
}

impl Sent {
    /// Nothing yet, of a piece of `n` blocks.
    fn new(n: usize, from_delta: bool) -> Sent {
        Sent {
            from_delta,
            at: 0,
            data: Vec::new(),
            which: bitvec![u8, Lsb0; 0; n],
            zeros: bitvec![u8, Lsb0; 0; n],
        }
    }

    /// The piece's CVs by this answer: those of the blocks sent, of zeros,
    /// and `old` for the blocks kept; if they merge to `hash`. `zero_cv`
    /// gives the CV of a block of zeros (index, length).
    fn cvs(
        &self,
        old: &[Cv],
        len: u64,
        hash: &Hash,
        zero_cv: impl Fn(usize, usize) -> Cv,
    ) -> Option<Vec<Cv>> {
        let mut at = 0;
        let mut cvs = Vec::with_capacity(self.which.len());
        for j in 0..self.which.len() {
            let n = blocks::range(j, len).len();
            cvs.push(if self.which[j] {
                at += n;
                blocks::cv(j, self.data.get(at - n..at)?)
            } else if self.zeros[j] {
                zero_cv(j, n)
            } else {
                *old.get(j)?
            });
        }
        (blocks::root(&cvs, len).as_ref() == Some(hash)).then_some(cvs)
    }
}

impl wire::piece::Sink for Sent {
    fn put(&mut self, bytes: &[u8]) {
        // the decoder hands over one block, or part of one, at a time
        self.which.set(self.at / blocks::BLOCK, true);
        self.data.extend_from_slice(bytes);
        self.at += bytes.len();
    }
    fn put_zeros(&mut self, n: usize) {
        self.zeros.set(self.at / blocks::BLOCK, true);
        self.at += n;
    }
    fn keep(&mut self, n: usize) {
        self.at += n;
    }
}

/// A Delta request's hints: the first two bytes of each old block's CV
/// (two zeros past the old version's end).
fn hints(old: &[Cv], n: usize) -> Vec<[u8; 2]> {
    (0..n)
        .map(|j| old.get(j).map_or([0; 2], |cv| [cv[0], cv[1]]))
        .collect()
}

/// Asks for the piece's outboard and checks it against the manifest:
/// its CVs, or what came instead.
async fn outboard(
    conn: &Connection,
    t: &Target<'_>,
    wan: Option<&RateLimit>,
) -> anyhow::Result<Result<Vec<Cv>, Outcome>> {
    let outboard_len = 32 * blocks::count(t.len) as u64;
    if let Some(l) = wan {
        l.acquire(outboard_len as usize).await;
    }
    let mut raw = Vec::with_capacity(outboard_len as usize);
    let status = ask(conn, &Request::Outboard(t.piece), outboard_len, |b| {
        raw.extend_from_slice(b)
    })
    .await?;
    if status != Status::Ok {
        return Ok(Err(Outcome::Refused(status)));
    }
    let Some(cvs) = blocks::check_outboard(&raw, t.len, t.hash) else {
        return Ok(Err(Outcome::Corrupt));
    };
    crate::node::outboards::put(t.piece, &cvs);
    Ok(Ok(cvs))
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
    if n <= MAX_DELTA_BLOCKS
        && let Some(old) = basis.old_cvs(piece, hash)
    {
        return at_once(conn, &t, old, basis, wan).await;
    }
    let outboard_len = 32 * n as u64;
    let asked = std::time::Instant::now();
    let cvs = match outboard(conn, &t, wan).await? {
        Ok(cvs) => cvs,
        Err(outcome) => return Ok(outcome),
    };
    let outboard_took = asked.elapsed();
    if basis.placed(piece) {
        let sent = Sent::new(n, false);
        let got = Got {
            sent,
            outboard_len,
            checked: false,
            took: outboard_took,
        };
        return in_place(conn, &t, cvs, got, basis, wan).await;
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

/// A placed piece in one round trip (see the module): the blocks the
/// hints say differ, the piece's CVs made of them and of `old` (the old
/// blocks' CVs) and checked, then `in_place`.
async fn at_once(
    conn: &Connection,
    t: &Target<'_>,
    old: Vec<Cv>,
    basis: &Arc<Basis>,
    wan: Option<&RateLimit>,
) -> anyhow::Result<Outcome> {
    let (piece, len) = (t.piece, t.len);
    let n = blocks::count(len);
    let asked = std::time::Instant::now();
    // the holder may send it all at once: two masks per group and blocks
    let most = 1 + len + 8 * len.div_ceil(wire::piece::GROUP as u64);
    let mut credit = Grant::new(conn, most, most);
    let (mut send, mut recv) = conn.open_bi().await?;
    let hints = hints(&old, n);
    let req = Request::Delta {
        piece,
        hints: hints.clone(),
    };
    send.write_all(&req.encode()).await?;
    send.finish()?;
    let status = super::read_status(&mut recv).await?;
    credit.read(1);
    if status != Status::Ok {
        return Ok(Outcome::Refused(status));
    }
    let mut answer = Decoding {
        d: wire::piece::Decoder::delta(len),
        out: Sent::new(n, true),
    };
    // the WAN bucket's tokens as the blocks come: reading no faster
    // holds the holder back (receive credit)
    if !super::read_answer(&mut recv, &mut credit, &mut answer, wan).await? {
        return Ok(Outcome::Refused(Status::Changed));
    }
    let (mut sent, masks) = (answer.out, answer.d.received);
    sent.data.shrink_to_fit();
    // masks count as received bytes; the blocks are counted by `in_place`
    let masks = masks - sent.data.len() as u64;
    let (b, hash) = (basis.clone(), *t.hash);
    let (sent, made) = tokio::task::spawn_blocking(move || {
        let made = sent.cvs(&old, len, &hash, |j, n| b.zero_cv(j, n));
        (sent, made)
    })
    .await?;
    let (cvs, outboard_len, checked) = match made {
        Some(cvs) => {
            crate::node::outboards::put(piece, &cvs);
            (cvs, 0, true)
        }
        None => {
            tracing::debug!(
                piece,
                "delta: the blocks sent and kept do not make the piece's hash: asking for its outboard"
            );
            let cvs = match outboard(conn, t, wan).await? {
                Ok(cvs) => cvs,
                Err(outcome) => return Ok(outcome),
            };
            // a block said to be zeros that is not, or one kept whose CV
            // does not start with its hint: the holder lied (a block sent
            // that is wrong `in_place` finds)
            let lied = (0..n).any(|j| {
                !sent.which[j]
                    && if sent.zeros[j] {
                        cvs[j] != basis.zero_cv(j, blocks::range(j, len).len())
                    } else {
                        cvs[j][..2] != hints[j]
                    }
            });
            if lied {
                return Ok(Outcome::Corrupt);
            }
            (cvs, 32 * n as u64, false)
        }
    };
    let got = Got {
        sent,
        outboard_len,
        checked,
        took: asked.elapsed(),
    };
    Ok(match in_place(conn, t, cvs, got, basis, wan).await? {
        Outcome::InPlace {
            received,
            from_basis,
        } => Outcome::InPlace {
            received: received + masks,
            from_basis,
        },
        other => other,
    })
}

/// What a piece's first round trip brought: the blocks of a Delta answer
/// (none after an Outboard request), the outboard's bytes if one came,
/// and how long it took.
struct Got {
    sent: Sent,
    outboard_len: u64,
    /// Whether the CVs were made of the blocks sent (so they need no
    /// second check against them).
    checked: bool,
    took: std::time::Duration,
}

/// A piece whose old blocks the basis wrote ahead at its place: completed
/// there (`Basis::fill_in_place`), and the blocks still wanted taken from
/// `sent` (those a Delta answer brought) or fetched in one Blocks request,
/// checked, and written where they belong straight from the answers. No
/// read or hash of the blocks already in place.
async fn in_place(
    conn: &Connection,
    t: &Target<'_>,
    cvs: Vec<Cv>,
    got: Got,
    basis: &Arc<Basis>,
    wan: Option<&RateLimit>,
) -> anyhow::Result<Outcome> {
    let (piece, len, offset) = (t.piece, t.len, t.offset);
    let filling = std::time::Instant::now();
    let Got {
        sent,
        outboard_len,
        checked,
        took: outboard_took,
    } = got;
    let (b, c, content) = (basis.clone(), Arc::new(cvs), t.content.clone());
    let c2 = c.clone();
    let local =
        tokio::task::spawn_blocking(move || b.fill_in_place(piece, &c2, len, &content, offset))
            .await?;
    let (wanted, from_basis) = match local {
        Ok(w) => w,
        Err(e) => return Ok(Outcome::WriteFailed(e)),
    };
    let fill_took = filling.elapsed();
    let fetching = std::time::Instant::now();
    // what the Delta answer did not bring (none after Outboard: all)
    let from_delta = sent.from_delta;
    let mut more = wanted.clone();
    more &= !sent.which.clone();
    let more_bytes = wanted_bytes(&more, len);
    let mut extra = Vec::with_capacity(more_bytes as usize);
    if more_bytes > 0 && from_delta {
        tracing::debug!(
            piece,
            blocks = more.count_ones(),
            "changed blocks the hints did not bring: asking with Blocks"
        );
    }
    if more_bytes > 0 {
        let into = |b: &[u8]| extra.extend_from_slice(b);
        let status = ask_blocks(conn, piece, &more, more_bytes, wan, into).await?;
        if status != Status::Ok {
            return Ok(Outcome::Refused(status));
        }
    }
    let received = outboard_len + sent.data.len() as u64 + more_bytes;
    let want_bytes = wanted_bytes(&wanted, len);
    if want_bytes > 0 {
        let content = t.content.clone();
        let written = tokio::task::spawn_blocking(move || {
            // each wanted block from the answer it came in, checked, and
            // written in runs that lie one after the other in that answer
            // and in the piece
            let answers = [&sent.data[..], &extra[..]];
            let mut at = [0usize; 2];
            // (answer, start in it, length, offset in the copy)
            let mut run: Option<(usize, usize, usize, u64)> = None;
            let write = |(a, start, n, to): (usize, usize, usize, u64)| {
                content.write_at(to, &answers[a][start..start + n])
            };
            for j in 0..c.len() {
                let r = blocks::range(j, len);
                let a = match (sent.which[j], more[j]) {
                    (true, _) => 0,
                    (false, true) => 1,
                    (false, false) => continue,
                };
                let (start, n) = (at[a], r.len());
                at[a] += n;
                if !wanted[j] {
                    continue;
                }
                let made_of_it = a == 0 && checked;
                if !made_of_it && blocks::cv(j, &answers[a][start..start + n]) != c[j] {
                    return Ok(false);
                }
                let to = offset + r.start as u64;
                match &mut run {
                    Some((ra, rs, rn, rt))
                        if *ra == a && *rs + *rn == start && *rt + *rn as u64 == to =>
                    {
                        *rn += n
                    }
                    _ => {
                        if let Some(done) = run.replace((a, start, n, to)) {
                            write(done)?;
                        }
                    }
                }
            }
            if let Some(done) = run {
                write(done)?;
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
        received,
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

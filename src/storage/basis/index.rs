//! The index: one pass over the basis, every window read and hashed on
//! all cores, while the join already fetches (the engine runs it on a
//! blocking thread and hears of it batch by batch).
//!
//! What the pass may fill is held from fetching until it says
//! (`Basis::plan`): a piece is found whole and written (`found`), or its
//! own place was read and differs, its old blocks written ahead
//! (`released`: it is fetched as a delta now, completed in place), or
//! the pass ends (everything still held is released). So the network
//! works while the disk is read: first on new data (files grown at the
//! end, new files), then on each changed piece as soon as its old version
//! was read. The batches are read in a random order per host, so that
//! the joiners of one swarm release different pieces first and have
//! something to trade.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use bitvec::prelude::*;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::{Basis, Place, SOURCE_SHIFT, key, place};
use crate::manifest::blocks::{self, BLOCK, Cv};
use crate::manifest::{FileSpan, Hash, Manifest, PACK_BELOW};
use crate::storage::{Content, PieceBuf};
use crate::text;

/// What one batch of the pass gave.
#[derive(Default, Debug)]
pub struct Progress {
    /// Held pieces found whole, written and verified.
    pub found: Vec<u32>,
    /// Their bytes.
    pub bytes: u64,
    /// Held pieces the basis does not have whole: to fetch now.
    pub released: Vec<u32>,
}

impl Progress {
    fn is_empty(&self) -> bool {
        self.found.is_empty() && self.released.is_empty()
    }
}

impl Basis {
    /// Which pieces that `have` lacks the pass may fill, and so are held
    /// from fetching until it says; the others are fetched from the start.
    /// A piece that starts in a file of `PACK_BELOW` or more is held if
    /// that file's old version under the same path was as large and
    /// reaches the piece (its own place: the pass releases it when it
    /// reads it, or finds it whole), or if the basis has no file of that
    /// path but a file that left the image has its size (it may have
    /// moved, and the pass finds it). So a file grown at the end, a new
    /// file, or one that was small and packed before is fetched at once.
    /// A packed piece (small files) is held where the basis packs the
    /// same files at the same places (`packed_places`). Held pieces with
    /// no place to be released at are released when the pass ends, last,
    /// on every joiner at once: at 1 x 8 (1 GiB tree, p = 1%), 16 of
    /// them cost the last second of every join.
    pub fn plan(&self, m: &Manifest, have: &BitSlice) -> BitVec {
        let ours: HashSet<&str> = m.files().iter().map(|f| f.path.as_str()).collect();
        let mut old: HashMap<&str, (usize, &FileSpan)> = HashMap::new();
        let mut gone = HashSet::new();
        for (s, src) in self.sources.iter().enumerate() {
            for f in &src.spans {
                old.entry(f.path.as_str()).or_insert((s, f));
                if !ours.contains(f.path.as_str()) {
                    gone.insert(f.size);
                }
            }
        }
        let indexed = self.indexed_windows();
        let files = m.files();
        let mut held = BitVec::repeat(false, have.len());
        let mut packed = Vec::new();
        for i in have.iter_zeros() {
            let (off, _) = m.piece_range(i);
            let Some(f) = files.get(files.partition_point(|f| f.end() <= off)) else {
                continue;
            };
            if !starts_in_large(f, off) {
                packed.push(i as u32);
                continue;
            }
            let o = off - f.offset;
            let hold = match old.get(f.path.as_str()) {
                Some(&(s, old)) => {
                    old.size >= PACK_BELOW && o < old.size && indexed.contains(&(s, old.offset + o))
                }
                None => gone.contains(&f.size),
            };
            held.set(i, hold);
        }
        for (i, _) in packed_places(m, packed.into_iter(), self) {
            held.set(i as usize, true);
        }
        held
    }

    /// Where the windows the pass reads start: (source, offset).
    fn indexed_windows(&self) -> HashSet<(usize, u64)> {
        self.windows.iter().map(|&(s, off, _)| (s, off)).collect()
    }

    /// The pass. With `fill` (the new copy and the pieces held for the
    /// pass, `plan`), writes what it finds there and says so to
    /// `progress` after every batch; `progress` returning false, or
    /// `stop`, ends the pass early. Only a write can fail. Run once.
    pub fn run(
        &self,
        m: &Manifest,
        fill: Option<(&Content, &BitSlice)>,
        stop: &AtomicBool,
        mut progress: impl FnMut(Progress) -> bool,
    ) -> std::io::Result<()> {
        let mut held: BitVec = fill.map(|(_, h)| h.to_bitvec()).unwrap_or_default();
        let mut want: HashMap<Hash, Wanted> = HashMap::new();
        for i in held.iter_ones() {
            if let Some(h) = m.piece_hash(i) {
                want.entry(*h).or_default().pieces.push(i as u32);
            }
        }
        let own = own_places(m, held.iter_ones().map(|i| i as u32), self);
        // a batch at a time, so that the CVs waiting to be inserted stay
        // small whatever the basis's size
        let batch = (rayon::current_num_threads() * 8).max(16);
        let mut order: Vec<&[(usize, u64, u64)]> = self.windows.chunks(batch).collect();
        order.shuffle(&mut rand::rng());
        let mut later = BitVec::<usize, Lsb0>::repeat(false, held.len());
        for part in order {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let hashed: Vec<Hashed> = part
                .par_iter()
                // aligned, so that the pieces found go to the new copy by
                // O_DIRECT, not through a copy into the page cache
                .map_init(
                    || PieceBuf::with_capacity(self.piece_size as usize),
                    |buf, &(s, offset, len)| {
                        buf.overwrite(len as usize);
                        let buf = buf.as_mut_slice();
                        if let Err(e) = self.sources[s].content.read_at(offset, buf) {
                            tracing::debug!("basis {}: {e}", text::path(&self.sources[s].shown));
                            self.unread.fetch_add(1, Ordering::Relaxed);
                            return Ok(None);
                        }
                        let (root, cvs) = if blocks::splittable(len) {
                            let cvs = blocks::cvs(buf);
                            (blocks::root(&cvs, len).expect("cvs of a whole window"), cvs)
                        } else {
                            (*blake3::hash(buf).as_bytes(), Vec::new())
                        };
                        let mut h = Hashed {
                            at: place(s, offset),
                            len: len as u32,
                            root,
                            cvs,
                            wrote: Vec::new(),
                            later: Vec::new(),
                            placed: None,
                            differs: None,
                        };
                        if let Some((content, _)) = fill {
                            fill_from(&mut h, buf, m, content, &want, &own, &held)?;
                        }
                        Ok(Some(h))
                    },
                )
                .filter_map(Result::transpose)
                .collect::<std::io::Result<_>>()?;
            let mut p = Progress::default();
            {
                let mut ix = self.index.write().unwrap_or_else(|e| e.into_inner());
                for h in hashed {
                    for i in h.wrote {
                        if held.replace(i as usize, false) {
                            p.found.push(i);
                            p.bytes += m.piece_range(i as usize).1;
                        }
                    }
                    for i in h.later {
                        later.set(i as usize, true);
                    }
                    if let Some((i, cvs)) = h.placed {
                        ix.placed.insert(i, cvs);
                        if held.replace(i as usize, false) {
                            p.released.push(i);
                        }
                    }
                    if let Some(i) = h.differs
                        && held.replace(i as usize, false)
                    {
                        p.released.push(i);
                    }
                    ix.pieces.entry(h.root).or_insert((h.at, h.len));
                    for (j, cv) in h.cvs.iter().enumerate() {
                        ix.blocks
                            .entry(key(cv))
                            .or_insert(h.at + (j * BLOCK) as u64);
                    }
                }
            }
            self.whole_bytes.fetch_add(p.bytes, Ordering::Relaxed);
            if !p.is_empty() && !progress(p) {
                return Ok(());
            }
        }
        let mut p = Progress::default();
        if let Some((content, _)) = fill {
            // found whole away from their own place (a file moved onto a
            // path the basis has with other bytes), and still held
            let mut buf = PieceBuf::with_capacity(self.piece_size as usize);
            for i in later.iter_ones().map(|i| i as u32) {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if !held[i as usize] {
                    continue;
                }
                let (at, len) = m.piece_range(i as usize);
                let hash = m.piece_hash(i as usize).expect("a piece of the image");
                buf.overwrite(len as usize);
                if self.piece(hash, len, buf.as_mut_slice()) {
                    content.write_sparse(at, buf.as_slice())?;
                    held.set(i as usize, false);
                    p.found.push(i);
                    p.bytes += len;
                }
            }
        }
        self.whole_bytes.fetch_add(p.bytes, Ordering::Relaxed);
        p.released.extend(held.iter_ones().map(|i| i as u32));
        let unread = self.unread.load(Ordering::Relaxed);
        if unread > 0 {
            tracing::warn!(
                "basis: {unread} of {} pieces' worth could not be read; what they hold is fetched instead",
                self.windows.len()
            );
        }
        if !p.is_empty() {
            progress(p);
        }
        Ok(())
    }
}

/// A window of the basis, hashed, and what was written from it.
struct Hashed {
    at: Place,
    len: u32,
    root: Hash,
    cvs: Vec<Cv>,
    /// Held pieces found whole here and written.
    wrote: Vec<u32>,
    /// Held pieces found whole here whose own place is another window:
    /// written after the pass if still held, so that the pass never
    /// writes a piece it released (nor one written ahead).
    later: Vec<u32>,
    /// The piece whose own place this is, and what was written there
    /// ahead.
    placed: Option<(u32, super::Ahead)>,
    /// The piece with nothing to write ahead whose own place this is,
    /// if it differs (`Own::differs_at`).
    differs: Option<u32>,
}

/// Where the held pieces lie in the basis when their file is there under
/// the same path: the window at the same offset in that file (the first
/// source that has the path). Only for files that start a piece in both
/// layouts (`PACK_BELOW`), and pieces of more than one block; with how
/// many bytes from the piece's start lie in that file in both versions,
/// in whole blocks. And a packed piece's (`packed_places`), and a
/// piece's with nothing in common to write ahead.
#[derive(Default)]
struct Own {
    by_window: HashMap<(usize, u64), (u32, u32)>,
    by_piece: HashMap<u32, (usize, u64)>,
    /// Pieces with nothing to write ahead (packed ones, pieces of one
    /// block), by their window: released when it is read and differs.
    differs_at: HashMap<(usize, u64), u32>,
}

fn own_places(m: &Manifest, held: impl Iterator<Item = u32> + Clone, basis: &Basis) -> Own {
    let sources = &basis.sources;
    let mut paths: HashMap<&str, (usize, &FileSpan)> = HashMap::new();
    for (s, src) in sources.iter().enumerate() {
        for f in &src.spans {
            paths.entry(f.path.as_str()).or_insert((s, f));
        }
    }
    let files = m.files();
    let indexed = basis.indexed_windows();
    let mut own = Own::default();
    for (i, w) in packed_places(m, held.clone(), basis) {
        own.differs_at.insert(w, i);
        own.by_piece.insert(i, w);
    }
    for i in held {
        let (off, len) = m.piece_range(i as usize);
        let Some(f) = files.get(files.partition_point(|f| f.end() <= off)) else {
            continue;
        };
        if !starts_in_large(f, off) {
            continue;
        }
        let o = off - f.offset;
        let Some(&(s, old)) = paths.get(f.path.as_str()) else {
            continue;
        };
        if old.size < PACK_BELOW || o >= old.size {
            continue;
        }
        // whole blocks both versions have there, and the old file's
        // shorter last block where the new file still covers it (a block
        // of the same length and bytes has the same CV)
        let common = len.min(f.size - o).min(old.size - o);
        let common = if old.size - o <= len && old.size <= f.size {
            common
        } else {
            common / BLOCK as u64 * BLOCK as u64
        };
        let w = (s, old.offset + o);
        if !indexed.contains(&w) {
            // not read (a file too large, or past the budget): the piece
            // is not held (`plan`)
            continue;
        }
        if blocks::splittable(len) && common > 0 {
            own.by_window.insert(w, (i, common as u32));
        } else {
            // nothing to write ahead (a piece of one block, or no whole
            // block in common): released when its window differs
            own.differs_at.insert(w, i);
        }
        own.by_piece.insert(i, w);
    }
    own
}

/// Whether a piece at `off` starts inside `f` (the first file that ends
/// past it), a file that starts a piece in both layouts.
fn starts_in_large(f: &FileSpan, off: u64) -> bool {
    f.offset <= off && f.size >= PACK_BELOW
}

/// What a range of a layout holds: its length, and each file in it (path,
/// size, where it starts relative to the range). Two ranges of the same
/// shape hold the same bytes if their files do.
type Shape<'a> = (u64, Vec<(&'a str, u64, i128)>);

fn shape(files: &[FileSpan], off: u64, len: u64) -> Shape<'_> {
    let k = files.partition_point(|f| f.end() <= off);
    let held = files[k..]
        .iter()
        .take_while(|f| f.offset < off + len)
        .map(|f| {
            (
                f.path.as_str(),
                f.size,
                i128::from(f.offset) - i128::from(off),
            )
        });
    (len, held.collect())
}

/// Which of `pieces` are packed (small files, or the gap before a large
/// one: not `starts_in_large`) and where the basis has a window of the
/// same shape (the first): only there can the index find such a piece
/// whole, since small files are packed in tree order and one file added,
/// removed or resized shifts the rest of its run. A packed piece the basis
/// has no such window for is fetched from the start (`Basis::plan`): held
/// until the pass ended, it came last, on every joiner at once (1 x 8, 1
/// GiB tree, p = 1%: 16 pieces released at the end of every pass, and
/// the hosts chased each other for them for the last second).
fn packed_places(
    m: &Manifest,
    pieces: impl Iterator<Item = u32>,
    basis: &Basis,
) -> Vec<(u32, (usize, u64))> {
    let files = m.files();
    let packed: Vec<(u32, u64, u64)> = pieces
        .filter_map(|i| {
            let (off, len) = m.piece_range(i as usize);
            let f = files.get(files.partition_point(|f| f.end() <= off))?;
            (!starts_in_large(f, off)).then_some((i, off, len))
        })
        .collect();
    if packed.is_empty() {
        return Vec::new();
    }
    let mut windows: HashMap<Shape, (usize, u64)> = HashMap::new();
    for &(s, off, len) in &basis.windows {
        windows
            .entry(shape(&basis.sources[s].spans, off, len))
            .or_insert((s, off));
    }
    packed
        .into_iter()
        .filter_map(|(i, off, len)| Some((i, *windows.get(&shape(files, off, len))?)))
        .collect()
}

/// The held pieces of one hash, and whether a window of that hash took
/// them already: the first does, so that content repeated many times in
/// the image and the basis costs one pass over its pieces, not one per
/// window, and each piece is written once.
#[derive(Default)]
struct Wanted {
    pieces: Vec<u32>,
    taken: AtomicBool,
}

/// What window `h` (its bytes in `buf`) gives the new copy: every held
/// piece it is whole, if no window of its hash came first: written now if
/// this is the piece's own place or it has none, else left for later;
/// where it is a changed piece's own place, the blocks both versions have
/// there, written ahead at the piece's place (`Basis::placed`); and where
/// it is the own place of a piece with nothing to write ahead
/// (`Own::differs_at`) that differs, that piece released.
fn fill_from(
    h: &mut Hashed,
    buf: &[u8],
    m: &Manifest,
    content: &Content,
    want: &HashMap<Hash, Wanted>,
    own: &Own,
    held: &BitSlice,
) -> std::io::Result<()> {
    let here = (
        (h.at >> SOURCE_SHIFT) as usize,
        h.at & ((1 << SOURCE_SHIFT) - 1),
    );
    let first = want
        .get(&h.root)
        .filter(|w| !w.taken.swap(true, Ordering::Relaxed));
    for &i in first.map_or(&[][..], |w| w.pieces.as_slice()) {
        let (at, n) = m.piece_range(i as usize);
        if n != u64::from(h.len) || !held[i as usize] {
            continue;
        }
        match own.by_piece.get(&i) {
            Some(w) if *w != here => h.later.push(i),
            _ => {
                content.write_sparse(at, buf)?;
                h.wrote.push(i);
            }
        }
    }
    if let Some(&i) = own.differs_at.get(&here)
        && held[i as usize]
    {
        let (at, n) = m.piece_range(i as usize);
        if m.piece_hash(i as usize) != Some(&h.root) {
            h.differs = Some(i);
        } else if first.is_none() && n == u64::from(h.len) {
            // as for a piece unchanged at its own place below
            content.write_sparse(at, buf)?;
            h.wrote.push(i);
        }
        return Ok(());
    }
    let Some(&(i, common)) = own.by_window.get(&here) else {
        return Ok(());
    };
    let (at, n) = m.piece_range(i as usize);
    if !held[i as usize] {
        return Ok(());
    }
    if m.piece_hash(i as usize) == Some(&h.root) {
        // unchanged at its own place, its hash's pieces taken by another
        // window (content repeated in the image): written from here all
        // the same, as nobody else writes it
        if first.is_none() && n == u64::from(h.len) {
            content.write_sparse(at, buf)?;
            h.wrote.push(i);
        }
    } else if !h.cvs.is_empty() {
        // the partial copy holds zeros there (fresh, or punched by the
        // resume scan), so the zero blocks need no write
        // a shorter last block only where the window ends with the old
        // file (no smaller file packed after it in the old layout): a CV
        // kept must be that of exactly the bytes written
        let common = if u64::from(common) == u64::from(h.len) {
            common as usize
        } else {
            common as usize / BLOCK * BLOCK
        };
        let common = common.min(buf.len());
        content.write_sparse(at, &buf[..common])?;
        let cvs: Box<[Cv]> = h.cvs[..(n as usize).div_ceil(BLOCK).min(h.cvs.len())].into();
        let written = common.div_ceil(BLOCK).min(cvs.len());
        let ahead = super::Ahead { cvs, written };
        h.placed = Some((i, ahead));
    }
    Ok(())
}

//! An older copy on the local disk as a source (issue 22): last night's
//! image, file or tree, at DEST_DIR/NAME or named with `--basis`. It is
//! only ever read, never through a link, and nothing read from it counts
//! as part of the copy before it is verified against the manifest (blocks
//! written ahead into the partial copy are checked against the piece's
//! outboard before the piece is done, and punched back to zeros by a
//! resume's scan otherwise).
//!
//! The basis is indexed once, laid out as a manifest of it would be at the
//! new manifest's piece size (`manifest::layout`: the tree walked in the
//! same order, small files packed, large ones starting a piece), and each
//! of its pieces is hashed whole and block by block (`manifest::blocks`).
//! A piece of the new image whose hash is one of those is copied from
//! there, with no network at all; that finds every unchanged piece of
//! every large file, also of one renamed or moved in the tree, and the
//! small files' pieces where their packing did not change. For the other pieces, the
//! joiner fetches the piece's outboard from a peer and looks each block's
//! CV up: a block CV depends on the block's bytes and its position in the
//! piece, so a page rewritten in place, or a file grown at its end, leaves
//! every other block of the piece found here. Data shifted by an amount
//! that is not a multiple of the piece size (an insert in the middle of a
//! file) is not found: databases rewrite pages in place and grow files at
//! the end, and rsync's rolling checksum would cost a pass per host over
//! every byte for that case.
//!
//! A changed piece whose file is in the basis under the same path (a page
//! rewritten in place, a file grown) gets that file's old blocks at the
//! same offset written ahead into the new copy while the index reads
//! them, from the buffer they were hashed in, and their CVs kept
//! (`placed`). When the piece's outboard comes, the blocks whose CV it
//! shares are in place already: a delta then reads, hashes and writes only
//! the blocks that changed (`fill_in_place`), where it used to read, hash
//! and write the whole piece a second time.
//!
//! Memory: 8 bytes of key and 8 of place per block (16 KiB) and per
//! piece, in hash maps: about 2 MiB per GiB of basis; and 32 bytes per
//! block of the changed pieces written ahead and not yet complete, at
//! most 2 MiB per GiB of the image.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::at::Root;
use super::buf::PieceBuf;
use super::content::Content;
use crate::manifest::blocks::{self, BLOCK, Cv};
use crate::manifest::{FileSpan, Hash, Manifest, PACK_BELOW, layout, layout_piece, layout_pieces};
use crate::text;
use bitvec::prelude::{BitVec, Lsb0};

/// One basis path: its files as a content stream, each file at a
/// piece-aligned offset.
struct Source {
    content: Content,
    spans: Vec<FileSpan>,
    shown: PathBuf,
}

/// Where a window or block lies: source index (top 8 bits) and offset.
type Place = u64;

const SOURCE_SHIFT: u32 = 56;

fn place(source: usize, offset: u64) -> Place {
    ((source as u64) << SOURCE_SHIFT) | offset
}

pub struct Basis {
    sources: Vec<Source>,
    /// What the index reads and hashes: (source, offset, length), one
    /// per piece slot of each source's layout.
    windows: Vec<(usize, u64, u64)>,
    piece_size: u32,
    /// Filled by the index (`index.rs`), read by deltas while it runs.
    index: RwLock<Index>,
    /// CVs of a block of zeros at the first block positions of a piece
    /// (`ZERO_CVS` at most; the rest are computed when asked).
    zero_cvs: Vec<Cv>,
    /// Bytes of regular files to index.
    pub bytes: u64,
    /// See `missed`.
    missed: AtomicU64,
    /// Windows the index could not read.
    unread: AtomicU64,
    /// Bytes of the pieces the index found whole (`index.rs`).
    pub(crate) whole_bytes: AtomicU64,
    /// Files to index.
    pub files: usize,
}

#[derive(Default)]
struct Index {
    /// Window hash -> place, for windows of the piece size or a file's
    /// shorter last one.
    pieces: HashMap<Hash, (Place, u32)>,
    /// First 8 bytes of a block's CV -> place of the block.
    blocks: HashMap<u64, Place>,
    /// CVs of the blocks written ahead into the new copy at a piece's own
    /// place (see `index::own_places`), by piece: checked against the
    /// piece's outboard when it comes, so that those blocks need no read,
    /// no hash and no write then.
    placed: HashMap<u32, Ahead>,
}

/// What the index wrote ahead at a changed piece's own place.
#[derive(Clone, Default)]
pub(super) struct Ahead {
    /// The CVs of the old window's blocks there: the hints of a Delta
    /// request, and the CVs of the blocks it keeps (`old_cvs`).
    pub cvs: Box<[Cv]>,
    /// How many of them (the first) were written ahead: not a block the
    /// old file shares with a smaller file packed after it.
    pub written: usize,
}

const ZERO_CVS: usize = 1024;

/// Most basis paths (`--basis` and the automatic one).
pub const MAX_SOURCES: usize = 64;

impl Basis {
    /// Opens the regular files of `paths` (files or trees) as sources for
    /// `m`; nothing is read yet (`index.rs` does). What cannot be opened
    /// is skipped with a warning: it is then simply not a source. Never
    /// fails. Bounded by what `m` could use: a basis file larger than
    /// `m`'s largest is not hashed (a sparse 16 TiB file planted in an old
    /// copy would take hours), and at most twice `m`'s size is hashed in
    /// all.
    pub fn open(paths: &[PathBuf], m: &Manifest) -> Basis {
        let piece_size = m.piece_size;
        let ps = u64::from(piece_size);
        let largest = m.files().iter().map(|f| f.size).max().unwrap_or(0);
        let max_file = largest.div_ceil(ps).saturating_mul(ps).max(PACK_BELOW);
        let mut budget = m.total_size().saturating_mul(2);
        let mut sources = Vec::new();
        for p in paths.iter().take(MAX_SOURCES) {
            match open_source(p, piece_size) {
                Ok(s) => sources.push(s),
                Err(e) => tracing::warn!(
                    "basis {}: {e}; not used, what it holds is fetched instead",
                    text::path(p)
                ),
            }
        }
        let mut windows: Vec<(usize, u64, u64)> = Vec::new();
        'all: for (s, src) in sources.iter().enumerate() {
            for i in 0..layout_pieces(&src.spans, piece_size) as usize {
                let (offset, len) = layout_piece(&src.spans, piece_size, i);
                // the file that starts the window: too large, not hashed
                let k = src.spans.partition_point(|f| f.end() <= offset);
                if len == 0 || src.spans.get(k).is_some_and(|f| f.size > max_file) {
                    continue;
                }
                if budget < len {
                    tracing::warn!(
                        "basis: indexed twice the new image's size; the rest is not used"
                    );
                    break 'all;
                }
                budget -= len;
                windows.push((s, offset, len));
            }
        }
        Basis {
            files: sources.iter().map(|s| s.spans.len()).sum(),
            bytes: windows.iter().map(|w| w.2).sum(),
            sources,
            windows,
            piece_size,
            missed: AtomicU64::new(0),
            unread: AtomicU64::new(0),
            whole_bytes: AtomicU64::new(0),
            index: RwLock::new(Index::default()),
            zero_cvs: (0..(piece_size as usize / BLOCK).min(ZERO_CVS))
                .map(|j| blocks::cv(j, &[0u8; BLOCK]))
                .collect(),
        }
    }

    /// `open` and `run` with nothing to fill: the index alone.
    pub fn index(paths: &[PathBuf], m: &Manifest) -> Basis {
        let b = Basis::open(paths, m);
        b.run(m, None, &AtomicBool::new(false), |_| true)
            .expect("no writes, no errors");
        b
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether nothing was found to take from, though there was something
    /// to read: every window failed.
    pub fn found_nothing(&self) -> bool {
        self.read_index().pieces.is_empty()
    }

    /// Reads a whole piece of `len` bytes whose hash is `hash` into `buf`,
    /// if the basis has it and it still checks out.
    pub fn piece(&self, hash: &Hash, len: u64, buf: &mut [u8]) -> bool {
        let Some(&(at, n)) = self.read_index().pieces.get(hash) else {
            return false;
        };
        u64::from(n) == len
            && buf.len() as u64 == len
            && self.read(at, buf)
            && blake3::hash(buf).as_bytes() == hash
    }

    /// Whether the index wrote blocks of `piece` ahead at its place in the
    /// new copy (the old version's blocks at the same place in the same
    /// file): then `fill_in_place` completes it.
    pub fn placed(&self, piece: u32) -> bool {
        self.read_index().placed.contains_key(&piece)
    }

    /// For a piece written ahead (`placed`), the CV of each block of the
    /// old version at its place (as many as the old window has, at most
    /// the new piece's count): a Delta
    /// request's hints are their first two bytes, and the blocks a holder
    /// does not send because of them are these. A block not written ahead
    /// whose CV this is lies in the basis there, and `fill_in_place`
    /// copies it.
    ///
    /// None for a piece the basis holds whole elsewhere (a file moved onto
    /// a path the old version had with other bytes): its hints would ask
    /// for every block, and the outboard alone lets `fill_in_place` take
    /// them all from the basis.
    pub fn old_cvs(&self, piece: u32, hash: &Hash) -> Option<Vec<Cv>> {
        let ix = self.read_index();
        if ix.pieces.contains_key(hash) {
            return None;
        }
        Some(ix.placed.get(&piece)?.cvs.to_vec())
    }

    /// Drops what the index kept of `piece` written ahead: it is complete.
    /// A duplicate of its fetch still running then completes it as any
    /// other delta, over bytes that are final already.
    pub fn forget(&self, piece: u32) {
        let mut ix = self.index.write().unwrap_or_else(|e| e.into_inner());
        ix.placed.remove(&piece);
    }

    /// Completes `piece` (`len` bytes at `offset` of `content`, its block
    /// CVs `cvs` from the checked outboard) in place from what the index
    /// wrote ahead there (`placed`): a block written ahead whose CV is the
    /// outboard's is in place already; one the new version has as zeros
    /// is punched; any other block the basis has elsewhere is read, checked
    /// and written. Returns the blocks still wanted from a peer and the
    /// bytes that came from the basis. Only a write can fail.
    pub fn fill_in_place(
        &self,
        piece: u32,
        cvs: &[Cv],
        len: u64,
        content: &Content,
        offset: u64,
    ) -> std::io::Result<(BitVec<u8, Lsb0>, u64)> {
        let ahead = self
            .read_index()
            .placed
            .get(&piece)
            .map(|a| a.cvs[..a.written].to_vec())
            .unwrap_or_default();
        let mut wanted = bitvec::bitvec![u8, Lsb0; 0; cvs.len()];
        let mut taken = 0u64;
        let mut buf = PieceBuf::with_capacity(BLOCK);
        for (j, cv) in cvs.iter().enumerate() {
            let range = blocks::range(j, len);
            let (at, n) = (offset + range.start as u64, range.len());
            let old = ahead.get(j);
            if self.is_zero_block(j, cv, n) {
                if old.is_some_and(|o| !self.is_zero_block(j, o, n)) {
                    content.punch(at, n as u64)?;
                }
            } else if old == Some(cv) {
                taken += n as u64;
            } else {
                buf.overwrite(n);
                if self.block(j, cv, buf.as_mut_slice()) {
                    content.write_at(at, buf.as_slice())?;
                    taken += n as u64;
                } else {
                    wanted.set(j, true);
                }
            }
        }
        Ok((wanted, taken))
    }

    /// Whether block `index` of a piece, `cv` by the outboard and
    /// `len` bytes long, is all zeros.
    pub fn is_zero_block(&self, index: usize, cv: &Cv, len: usize) -> bool {
        &self.zero_cv(index, len) == cv
    }

    /// The CV of `len` zeros as block `index` of a piece.
    pub fn zero_cv(&self, index: usize, len: usize) -> Cv {
        match self.zero_cvs.get(index) {
            Some(z) if len == BLOCK => *z,
            _ => blocks::cv(index, &vec![0u8; len]),
        }
    }

    /// Reads block `index` (CV `cv` by the outboard) into `buf` if the
    /// basis has it and it still checks out.
    pub fn block(&self, index: usize, cv: &Cv, buf: &mut [u8]) -> bool {
        let Some(at) = self.read_index().blocks.get(&key(cv)).copied() else {
            return false;
        };
        let ok = self.read(at, buf) && &blocks::cv(index, buf) == cv;
        if !ok {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Blocks the index had but that no longer checked out when read
    /// (the basis changed, or could not be read, after it was indexed):
    /// fetched instead.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    fn read(&self, at: Place, buf: &mut [u8]) -> bool {
        let s = (at >> SOURCE_SHIFT) as usize;
        let offset = at & ((1 << SOURCE_SHIFT) - 1);
        match self
            .sources
            .get(s)
            .map(|src| src.content.read_at(offset, buf))
        {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                // changed or gone since it was indexed: fetched instead
                tracing::debug!("basis {}: {e}", text::path(&self.sources[s].shown));
                false
            }
            None => false,
        }
    }

    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }
}

fn key(cv: &Cv) -> u64 {
    u64::from_le_bytes(cv[..8].try_into().expect("8 bytes"))
}

/// Opens a basis path (not following a link at its end, nor below it) and
/// lays out its regular files as a manifest of it would.
fn open_source(path: &Path, piece_size: u32) -> std::io::Result<Source> {
    let root = Root::open(path, false)?;
    let mut names = Vec::new();
    if let Root::Dir(_) = root {
        walk(path, "", &mut names, &mut HashSet::new());
    } else {
        names.push((String::new(), fs::symlink_metadata(path)?.len()));
    }
    let spans =
        layout(names, piece_size).ok_or_else(|| std::io::Error::other("too large to lay out"))?;
    Ok(Source {
        content: Content::from_root(root, &spans, false)?,
        spans,
        shown: path.to_path_buf(),
    })
}

/// Regular files under `dir` (paths relative to the basis root) in the
/// order `storage::build` walks a tree (names sorted, depth first), a
/// file with several names once; links are not followed, and names that
/// are not UTF-8 are skipped (no manifest has them). Reading goes through
/// `Content`, relative to the root handle and never through a link,
/// whatever happens to the tree after this walk.
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u64)>, seen: &mut HashSet<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(items) = fs::read_dir(dir) else {
        tracing::warn!("basis {}: cannot be listed; skipped", text::path(dir));
        return;
    };
    let mut names: Vec<String> = items
        .flatten()
        .filter_map(|i| i.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) => {
                out.push((rel_path, m.len()))
            }
            Ok(m) if m.is_dir() => walk(&p, &rel_path, out, seen),
            _ => {}
        }
    }
}

mod index;
pub use index::Progress;

#[cfg(test)]
mod tests;

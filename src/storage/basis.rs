//! An older copy on the local disk as a source (issue 22): last night's
//! image, file or tree, at DEST_DIR/NAME or named with `--basis`. It is
//! only ever read, never through a link, and nothing read from it is used
//! before it is verified against the manifest.
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
//! block of the changed pieces written ahead, at most 2 MiB per GiB of
//! the image.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

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
    piece_size: u32,
    /// Window hash -> place, for windows of the piece size or a file's
    /// shorter last one.
    pieces: HashMap<Hash, (Place, u32)>,
    /// First 8 bytes of a block's CV -> place of the block.
    blocks: HashMap<u64, Place>,
    /// CVs of a block of zeros at the first block positions of a piece
    /// (`ZERO_CVS` at most; the rest are computed when asked).
    zero_cvs: Vec<Cv>,
    /// CVs of the blocks written ahead into the new copy at a piece's own
    /// place (see `own_places`), by piece: checked against the piece's
    /// outboard when it comes, so that those blocks need no read, no hash
    /// and no write then.
    placed: HashMap<u32, Box<[Cv]>>,
    /// Bytes of regular files indexed.
    pub bytes: u64,
    /// See `missed`.
    missed: AtomicU64,
    /// Files indexed.
    pub files: usize,
}

const ZERO_CVS: usize = 1024;

/// Most basis paths (`--basis` and the automatic one).
pub const MAX_SOURCES: usize = 64;

impl Basis {
    /// Indexes the regular files of `paths` (files or trees) for `m`,
    /// hashing on all cores. What cannot be read is skipped with a
    /// warning: it is then simply not a source. Never fails. Bounded by
    /// what `m` could use: a basis file larger than `m`'s largest is
    /// not hashed (a sparse 16 TiB file planted in an old copy would
    /// take hours), and at most twice `m`'s size is hashed in all.
    pub fn index(paths: &[PathBuf], m: &Manifest) -> Basis {
        Basis::build(paths, m, None)
            .expect("no writes, no errors")
            .0
    }

    /// `index`, copying every piece of `m` that `have` lacks and the basis
    /// holds whole into `content` as it is found (from the very buffer it
    /// was hashed in: one read and one hash per byte of the basis), and
    /// setting it in `have`. Returns the basis, and the pieces and bytes
    /// copied. A write that fails (disk full) is an error.
    pub fn index_and_fill(
        paths: &[PathBuf],
        m: &Manifest,
        content: &Content,
        have: &mut BitVec,
    ) -> std::io::Result<(Basis, usize, u64)> {
        let mut want: HashMap<Hash, Vec<u32>> = HashMap::new();
        for i in have.iter_zeros() {
            if let Some(h) = m.piece_hash(i) {
                want.entry(*h).or_default().push(i as u32);
            }
        }
        let (basis, found) = Basis::build(paths, m, Some((content, &want)))?;
        let mut bytes = 0;
        let mut pieces = 0;
        for i in found {
            if !have.replace(i as usize, true) {
                pieces += 1;
                bytes += m.piece_range(i as usize).1;
            }
        }
        Ok((basis, pieces, bytes))
    }

    fn build(
        paths: &[PathBuf],
        m: &Manifest,
        fill: Option<(&Content, &HashMap<Hash, Vec<u32>>)>,
    ) -> std::io::Result<(Basis, Vec<u32>)> {
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
        for (s, src) in sources.iter().enumerate() {
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
                    break;
                }
                budget -= len;
                windows.push((s, offset, len));
            }
        }
        let mut basis = Basis {
            files: sources.iter().map(|s| s.spans.len()).sum(),
            bytes: windows.iter().map(|w| w.2).sum(),
            sources,
            piece_size,
            missed: AtomicU64::new(0),
            pieces: HashMap::with_capacity(windows.len()),
            blocks: HashMap::new(),
            placed: HashMap::new(),
            zero_cvs: (0..(piece_size as usize / BLOCK).min(ZERO_CVS))
                .map(|j| blocks::cv(j, &[0u8; BLOCK]))
                .collect(),
        };
        let own = match fill {
            Some((_, want)) => own_places(m, want.values().flatten().copied(), &basis.sources),
            None => Own::default(),
        };
        // a batch at a time, so that the CVs waiting to be inserted stay
        // small whatever the basis's size
        let batch = (rayon::current_num_threads() * 8).max(16);
        let mut found = Vec::new();
        let mut later = Vec::new();
        for part in windows.chunks(batch) {
            let hashed: Vec<Hashed> = part
                .par_iter()
                // aligned, so that the pieces found go to the new copy by
                // O_DIRECT, not through a copy into the page cache
                .map_init(
                    || PieceBuf::with_capacity(piece_size as usize),
                    |buf, &(s, offset, len)| {
                        buf.resize(len as usize);
                        let buf = buf.as_mut_slice();
                        if let Err(e) = basis.sources[s].content.read_at(offset, buf) {
                            tracing::debug!("basis {}: {e}", text::path(&basis.sources[s].shown));
                            basis.missed.fetch_add(1, Ordering::Relaxed);
                            return Ok(None);
                        }
                        let (root, cvs) = if blocks::splittable(len) {
                            let cvs = blocks::cvs(buf);
                            (blocks::root(&cvs, len).expect("cvs of a whole window"), cvs)
                        } else {
                            (*blake3::hash(buf).as_bytes(), Vec::new())
                        };
                        let mut out = Hashed {
                            at: place(s, offset),
                            len: len as u32,
                            root,
                            cvs,
                            wrote: Vec::new(),
                            later: Vec::new(),
                            placed: None,
                        };
                        if let Some((content, want)) = fill {
                            fill_from(&mut out, buf, m, content, want, &own)?;
                        }
                        Ok(Some(out))
                    },
                )
                .filter_map(Result::transpose)
                .collect::<std::io::Result<_>>()?;
            for h in hashed {
                found.extend(h.wrote);
                later.extend(h.later);
                if let Some((i, cvs)) = h.placed {
                    basis.placed.insert(i, cvs);
                }
                basis.pieces.entry(h.root).or_insert((h.at, h.len));
                for (j, cv) in h.cvs.iter().enumerate() {
                    basis
                        .blocks
                        .entry(key(cv))
                        .or_insert(h.at + (j * BLOCK) as u64);
                }
            }
        }
        if let Some((content, _)) = fill {
            found.extend(basis.fill_later(later, &found, m, content)?);
        }
        let unread = basis.missed.swap(0, Ordering::Relaxed);
        if unread > 0 {
            tracing::warn!(
                "basis: {unread} of {} pieces' worth could not be read; what they hold is fetched instead",
                windows.len()
            );
        }
        Ok((basis, found))
    }

    /// The pieces found whole at a place that is not their own (a file
    /// moved or copied in the tree), written now that no thread writes
    /// any more: read again, checked, and written over what was written
    /// ahead there. Returns the pieces written.
    fn fill_later(
        &mut self,
        mut later: Vec<u32>,
        found: &[u32],
        m: &Manifest,
        content: &Content,
    ) -> std::io::Result<Vec<u32>> {
        later.sort_unstable();
        later.dedup();
        let found: HashSet<u32> = found.iter().copied().collect();
        let mut wrote = Vec::new();
        let mut buf = PieceBuf::with_capacity(self.piece_size as usize);
        for i in later.into_iter().filter(|i| !found.contains(i)) {
            let (at, len) = m.piece_range(i as usize);
            let hash = m.piece_hash(i as usize).expect("a piece of the image");
            buf.resize(len as usize);
            if !self.piece(hash, len, buf.as_mut_slice()) {
                continue; // changed since: fetched instead
            }
            if self.placed.remove(&i).is_some() {
                content.punch(at, len)?;
            }
            content.write_sparse(at, buf.as_slice())?;
            wrote.push(i);
        }
        Ok(wrote)
    }

    /// The CVs of the blocks of `piece` that the index wrote ahead at its
    /// place in the new copy (the old version's blocks at the same place
    /// in the same file), from its first block on. A block whose CV in
    /// the piece's outboard is the one here is in place already.
    pub fn placed(&self, piece: u32) -> Option<&[Cv]> {
        self.placed.get(&piece).map(|c| &c[..])
    }

    /// Whether there is anything to take from.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Reads a whole piece of `len` bytes whose hash is `hash` into `buf`,
    /// if the basis has it and it still checks out.
    pub fn piece(&self, hash: &Hash, len: u64, buf: &mut [u8]) -> bool {
        let Some(&(at, n)) = self.pieces.get(hash) else {
            return false;
        };
        u64::from(n) == len
            && buf.len() as u64 == len
            && self.read(at, buf)
            && blake3::hash(buf).as_bytes() == hash
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
        let ahead = self.placed(piece).unwrap_or(&[]);
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
                buf.resize(n);
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
    /// `buf.len()` long, is all zeros.
    pub fn is_zero_block(&self, index: usize, cv: &Cv, len: usize) -> bool {
        match self.zero_cvs.get(index) {
            Some(z) if len == BLOCK => z == cv,
            _ => &blocks::cv(index, &vec![0u8; len]) == cv,
        }
    }

    /// Reads block `index` (CV `cv` by the outboard) into `buf` if the
    /// basis has it and it still checks out.
    pub fn block(&self, index: usize, cv: &Cv, buf: &mut [u8]) -> bool {
        let Some(&at) = self.blocks.get(&key(cv)) else {
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

/// A window of the basis, hashed, and what was written from it.
struct Hashed {
    at: Place,
    len: u32,
    root: Hash,
    cvs: Vec<Cv>,
    /// Pieces of the new image found whole here and written.
    wrote: Vec<u32>,
    /// Pieces found whole here whose own place is another window: written
    /// after the pass (`Basis::fill_later`), so that no two threads ever
    /// write one piece.
    later: Vec<u32>,
    /// The piece whose own place this is, and the CVs of its blocks
    /// written there ahead.
    placed: Option<(u32, Box<[Cv]>)>,
}

/// Where the new image's wanted pieces lie in the basis when their file is
/// there under the same path: the window at the same offset in that file
/// (the first source that has the path). Only for files that start a
/// piece in both layouts (`PACK_BELOW`), and pieces of more than one
/// block; with how many bytes from the piece's start lie in that file in
/// both versions, in whole blocks.
#[derive(Default)]
struct Own {
    by_window: HashMap<(usize, u64), (u32, u32)>,
    by_piece: HashMap<u32, (usize, u64)>,
}

fn own_places(m: &Manifest, wanted: impl Iterator<Item = u32>, sources: &[Source]) -> Own {
    let mut paths: HashMap<&str, (usize, &FileSpan)> = HashMap::new();
    for (s, src) in sources.iter().enumerate() {
        for f in &src.spans {
            paths.entry(f.path.as_str()).or_insert((s, f));
        }
    }
    let files = m.files();
    let mut own = Own::default();
    for i in wanted {
        let (off, len) = m.piece_range(i as usize);
        let Some(f) = files.get(files.partition_point(|f| f.end() <= off)) else {
            continue;
        };
        if !blocks::splittable(len) || f.offset > off || f.size < PACK_BELOW {
            continue;
        }
        let o = off - f.offset;
        let Some(&(s, old)) = paths.get(f.path.as_str()) else {
            continue;
        };
        if old.size < PACK_BELOW || o >= old.size {
            continue;
        }
        let common = len.min(f.size - o).min(old.size - o) / BLOCK as u64 * BLOCK as u64;
        if common > 0 {
            own.by_window
                .insert((s, old.offset + o), (i, common as u32));
            own.by_piece.insert(i, (s, old.offset + o));
        }
    }
    own
}

/// What window `h` (its bytes in `buf`) gives the new copy: every wanted
/// piece it is whole, written now if this is the piece's own place or it
/// has none, else left for later; and where it is a changed piece's own
/// place, the blocks both versions have there, written ahead at the
/// piece's place (`Basis::placed`).
fn fill_from(
    h: &mut Hashed,
    buf: &[u8],
    m: &Manifest,
    content: &Content,
    want: &HashMap<Hash, Vec<u32>>,
    own: &Own,
) -> std::io::Result<()> {
    let here = (
        (h.at >> SOURCE_SHIFT) as usize,
        h.at & ((1 << SOURCE_SHIFT) - 1),
    );
    for &i in want.get(&h.root).map_or(&[][..], Vec::as_slice) {
        let (at, n) = m.piece_range(i as usize);
        if n != u64::from(h.len) {
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
    if let Some(&(i, common)) = own.by_window.get(&here)
        && m.piece_hash(i as usize) != Some(&h.root)
        && !h.cvs.is_empty()
    {
        // the partial copy holds zeros there (fresh, or punched by the
        // resume scan), so the zero blocks need no write
        let (at, _) = m.piece_range(i as usize);
        content.write_sparse(at, &buf[..common as usize])?;
        let cvs = h.cvs[..common as usize / BLOCK].to_vec().into_boxed_slice();
        h.placed = Some((i, cvs));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest of one file of `size` bytes (hashes unused here).
    fn image(size: u64, piece_size: u32) -> Manifest {
        let root = crate::manifest::Root::File {
            size,
            meta: crate::manifest::Meta::mode(0o644),
        };
        let n = Manifest::pieces_for(&root, piece_size).unwrap() as usize;
        Manifest::new("img".into(), root, piece_size, vec![[0; 32]; n])
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 131 + seed as usize * 7) % 251) as u8)
            .collect()
    }

    /// Whole pieces and single blocks are found wherever a file moved to
    /// in the tree; a block's bytes at another position in its piece are
    /// not taken for it; what changed after indexing is not used.
    #[test]
    fn finds_pieces_and_blocks_and_checks_what_it_reads() {
        const P: usize = 4 * BLOCK;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("old");
        fs::create_dir_all(root.join("sub")).unwrap();
        let a = data(2 * P + 1000, 1);
        fs::write(root.join("sub/a"), &a).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let basis = Basis::index(std::slice::from_ref(&root), &image(4 * P as u64, P as u32));
        assert_eq!((basis.files, basis.bytes), (1, a.len() as u64));
        let mut buf = vec![0u8; P];
        let h1 = *blake3::hash(&a[P..2 * P]).as_bytes();
        assert!(basis.piece(&h1, P as u64, &mut buf));
        assert_eq!(buf, &a[P..2 * P]);
        let tail = *blake3::hash(&a[2 * P..]).as_bytes();
        let mut t = vec![0u8; 1000];
        assert!(basis.piece(&tail, 1000, &mut t));
        // a new version of piece 0 with block 2 rewritten: blocks 0, 1, 3
        // come from the basis, block 2 does not
        let mut new = a[..P].to_vec();
        new[2 * BLOCK + 9] ^= 0xff;
        let cvs = blocks::cvs(&new);
        let mut b = vec![0u8; BLOCK];
        for (j, cv) in cvs.iter().enumerate() {
            assert_eq!(basis.block(j, cv, &mut b), j != 2, "block {j}");
        }
        // the same bytes as another block position are not that block
        let moved = blocks::cv(1, &a[..BLOCK]);
        assert!(!basis.block(1, &moved, &mut b));
        // the basis changes after indexing: nothing wrong is used
        let mut changed = a.clone();
        changed[P + 5] ^= 1;
        fs::write(root.join("sub/a"), &changed).unwrap();
        assert!(!basis.piece(&h1, P as u64, &mut buf));
        let cv1 = blocks::cv(0, &a[P..P + BLOCK]);
        let missed = basis.missed();
        assert!(!basis.block(0, &cv1, &mut b));
        assert_eq!(basis.missed(), missed + 1, "counted, for the warning");
        assert!(basis.is_zero_block(3, &blocks::cv(3, &[0u8; BLOCK]), BLOCK));
        assert!(basis.is_zero_block(1, &blocks::cv(1, &[0u8; 100]), 100));
        assert!(!basis.is_zero_block(1, &blocks::cv(2, &[0u8; BLOCK]), BLOCK));
    }

    /// The pieces found whole are written as they are hashed, and only
    /// those are set; the copy reads back the new version's bytes there.
    #[test]
    fn index_and_fill_writes_the_pieces_it_finds() {
        const P: usize = 4 * BLOCK;
        let d = tempfile::tempdir().unwrap();
        let old = data(3 * P, 4);
        let mut new = old.clone();
        new[P + 7] ^= 1; // piece 1 changed
        fs::write(d.path().join("old"), &old).unwrap();
        let root = crate::manifest::Root::File {
            size: new.len() as u64,
            meta: crate::manifest::Meta::mode(0o644),
        };
        let hashes = new.chunks(P).map(|c| *blake3::hash(c).as_bytes()).collect();
        let m = Manifest::new("img".into(), root, P as u32, hashes);
        let target = d.path().join("new");
        fs::File::create(&target)
            .unwrap()
            .set_len(new.len() as u64)
            .unwrap();
        let content = Content::open(target.clone(), m.files(), true).unwrap();
        let mut have = bitvec::bitvec![0; 3];
        let (_, pieces, bytes) =
            Basis::index_and_fill(&[d.path().join("old")], &m, &content, &mut have).unwrap();
        assert_eq!((pieces, bytes), (2, 2 * P as u64));
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), [0, 2]);
        let got = fs::read(&target).unwrap();
        assert_eq!(&got[..P], &new[..P]);
        assert_eq!(&got[2 * P..], &new[2 * P..]);
        // piece 1 changed: its own place got the old version's blocks
        // ahead, and their CVs are kept
        assert_eq!(&got[P..2 * P], &old[P..2 * P]);
    }

    /// A changed piece is completed in place: blocks written ahead that
    /// the new version has are neither read nor written again, a block
    /// now zeros is punched, a block found elsewhere in the basis is
    /// copied, and only the rest is wanted. Written as the fetch does,
    /// the copy is the new version.
    #[test]
    fn a_changed_piece_is_completed_in_place() {
        const P: usize = 4 * BLOCK;
        let d = tempfile::tempdir().unwrap();
        let old = data(2 * P, 5);
        let mut new = old.clone();
        new[P + 3] ^= 1; // block 0 of piece 1: wanted
        new[P + BLOCK..P + 2 * BLOCK].fill(0); // block 1: now zeros
        new.copy_within(..BLOCK, P + 3 * BLOCK); // block 3: piece 0's first block...
        // ...which is not at block 0 of a piece there, so the basis does
        // not have it at that position: wanted too
        fs::write(d.path().join("old"), &old).unwrap();
        let root = crate::manifest::Root::File {
            size: new.len() as u64,
            meta: crate::manifest::Meta::mode(0o644),
        };
        let hashes = new.chunks(P).map(|c| *blake3::hash(c).as_bytes()).collect();
        let m = Manifest::new("img".into(), root, P as u32, hashes);
        let target = d.path().join("new");
        fs::File::create(&target)
            .unwrap()
            .set_len(new.len() as u64)
            .unwrap();
        let content = Content::open(target.clone(), m.files(), true).unwrap();
        let mut have = bitvec::bitvec![0; 2];
        let (basis, pieces, _) =
            Basis::index_and_fill(&[d.path().join("old")], &m, &content, &mut have).unwrap();
        assert_eq!(pieces, 1);
        assert!(basis.placed(0).is_none(), "found whole: nothing ahead");
        assert_eq!(basis.placed(1).map(<[Cv]>::len), Some(4));
        let cvs = blocks::cvs(&new[P..]);
        let (wanted, taken) = basis
            .fill_in_place(1, &cvs, P as u64, &content, P as u64)
            .unwrap();
        assert_eq!(wanted.iter_ones().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(taken, BLOCK as u64, "block 2 only: block 1 is zeros");
        for j in wanted.iter_ones() {
            let r = blocks::range(j, P as u64);
            content
                .write_at((P + r.start) as u64, &new[P + r.start..P + r.end])
                .unwrap();
        }
        assert_eq!(fs::read(&target).unwrap(), new);
    }

    /// A file of the new tree whose bytes are another file of the basis
    /// (moved onto a path the basis has with other bytes): its own place
    /// is written ahead first, then overwritten whole once no thread
    /// writes, so the copy is the new version and nothing stays ahead.
    #[test]
    fn a_piece_found_away_from_its_own_place_replaces_what_was_put_there() {
        const P: usize = 4 * BLOCK;
        let d = tempfile::tempdir().unwrap();
        let (mut a, b) = (data(2 * P, 6), data(2 * P, 7));
        a[BLOCK..2 * BLOCK].fill(0); // must not keep b's block there
        fs::create_dir_all(d.path().join("old")).unwrap();
        fs::write(d.path().join("old/a"), &a).unwrap();
        fs::write(d.path().join("old/b"), &b).unwrap();
        let entries = vec![crate::manifest::Entry {
            path: "b".into(),
            kind: crate::manifest::EntryKind::File {
                size: a.len() as u64,
            },
            meta: crate::manifest::Meta::mode(0o644),
        }];
        let root = crate::manifest::Root::Dir {
            meta: crate::manifest::Meta::mode(0o755),
            entries,
        };
        let hashes = a.chunks(P).map(|c| *blake3::hash(c).as_bytes()).collect();
        let m = Manifest::new("t".into(), root, P as u32, hashes);
        let target = d.path().join("new");
        fs::create_dir_all(&target).unwrap();
        fs::File::create(target.join("b"))
            .unwrap()
            .set_len(a.len() as u64)
            .unwrap();
        let content = Content::open(target.clone(), m.files(), true).unwrap();
        let mut have = bitvec::bitvec![0; 2];
        let (basis, pieces, _) =
            Basis::index_and_fill(&[d.path().join("old")], &m, &content, &mut have).unwrap();
        assert_eq!(pieces, 2);
        assert!(basis.placed(0).is_none() && basis.placed(1).is_none());
        assert_eq!(fs::read(target.join("b")).unwrap(), a);
    }

    #[test]
    fn a_basis_that_is_missing_or_a_link_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        fs::write(&f, data(3 * BLOCK, 2)).unwrap();
        std::os::unix::fs::symlink(&f, d.path().join("l")).unwrap();
        let b = Basis::index(
            &[d.path().join("nope"), d.path().join("l")],
            &image(3 * BLOCK as u64, 4 * BLOCK as u32),
        );
        assert!(b.is_empty());
        let b = Basis::index(
            std::slice::from_ref(&f),
            &image(3 * BLOCK as u64, 4 * BLOCK as u32),
        );
        assert_eq!((b.files, b.is_empty()), (1, false));
        // more than twice the image's size is not hashed
        let b = Basis::index(
            std::slice::from_ref(&f),
            &image(BLOCK as u64, 4 * BLOCK as u32),
        );
        assert!(b.is_empty());
        // nor a file larger than any of the image's, within that budget
        let big = d.path().join("big");
        fs::write(&big, data(13 * BLOCK, 3)).unwrap();
        let entries = (0..10)
            .map(|i| crate::manifest::Entry {
                path: format!("f{i}"),
                kind: crate::manifest::EntryKind::File { size: BLOCK as u64 },
                meta: crate::manifest::Meta::mode(0o644),
            })
            .collect();
        let root = crate::manifest::Root::Dir {
            meta: crate::manifest::Meta::mode(0o755),
            entries,
        };
        let n = Manifest::pieces_for(&root, 4 * BLOCK as u32).unwrap() as usize;
        let tree = Manifest::new("t".into(), root, 4 * BLOCK as u32, vec![[0; 32]; n]);
        assert!(Basis::index(&[big], &tree).is_empty());
    }
}

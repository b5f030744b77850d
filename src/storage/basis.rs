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
//! Memory: 8 bytes of key and 8 of place per block (16 KiB) and per
//! piece, in hash maps: about 2 MiB per GiB of basis.

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
use bitvec::vec::BitVec;

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
            zero_cvs: (0..(piece_size as usize / BLOCK).min(ZERO_CVS))
                .map(|j| blocks::cv(j, &[0u8; BLOCK]))
                .collect(),
        };
        // a batch at a time, so that the CVs waiting to be inserted stay
        // small whatever the basis's size
        let batch = (rayon::current_num_threads() * 8).max(16);
        let mut found = Vec::new();
        for part in windows.chunks(batch) {
            type Hashed = (Place, u32, Hash, Vec<Cv>, Vec<u32>);
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
                        // a piece of the new image, hashed just now: written
                        // from this buffer
                        let mut wrote = Vec::new();
                        if let Some((content, want)) = fill {
                            for &i in want.get(&root).map_or(&[][..], Vec::as_slice) {
                                let (at, n) = m.piece_range(i as usize);
                                if n == len {
                                    content.write_sparse(at, buf)?;
                                    wrote.push(i);
                                }
                            }
                        }
                        Ok(Some((place(s, offset), len as u32, root, cvs, wrote)))
                    },
                )
                .filter_map(Result::transpose)
                .collect::<std::io::Result<_>>()?;
            for (at, len, root, cvs, wrote) in hashed {
                found.extend(wrote);
                basis.pieces.entry(root).or_insert((at, len));
                for (j, cv) in cvs.iter().enumerate() {
                    basis
                        .blocks
                        .entry(key(cv))
                        .or_insert(at + (j * BLOCK) as u64);
                }
            }
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
        assert_eq!(&got[P..2 * P], &vec![0u8; P][..]);
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

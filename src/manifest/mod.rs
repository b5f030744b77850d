//! The manifest: what is being distributed (a file or a directory tree with
//! its links, owners and mtimes), cut into fixed-size pieces, each with its
//! blake3 hash. Its canonical encoding (see `codec`) is hashed into the
//! manifest id that a ticket carries, so a manifest fetched from any peer can
//! be checked before use.
//!
//! Pieces are aligned to files, as in BitTorrent v2, but for small ones: a
//! regular file of `PACK_BELOW` (64 KiB) or more starts a new piece, so a
//! file added, removed or grown changes only its own pieces and those of
//! the small files packed next to it, never the pieces of the large files
//! after it (what lets an older copy serve as a basis, see
//! `storage::Basis`). Files smaller than that are packed one after the
//! other, as every file was before: a piece per 8 KiB file made a tree of
//! 4,000 such files take 1.5-1.7 s instead of 0.86 s on loopback, and
//! would have cut the bytes in flight across a WAN to 16 x 8 KiB.
//!
//! Positions are given in a virtual content stream (`layout`): packed
//! files follow each other, and a large file starts at the next multiple
//! of the piece size; the gap before it belongs to no piece and is never
//! read or written. Piece `i` covers the content in `[i * piece_size, (i +
//! 1) * piece_size)`, which is contiguous (a gap only ever ends a piece).

pub mod blocks;
mod codec;
pub mod path;
#[cfg(test)]
mod seeds;

use std::sync::OnceLock;

pub use codec::{MAX_ENTRIES, MAX_MANIFEST_BYTES, MAX_PIECES};

pub type Hash = [u8; 32];

/// The manifest id: blake3 of the canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestId(pub Hash);

impl std::fmt::Debug for ManifestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self)
    }
}

impl std::fmt::Display for ManifestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mtime {
    pub secs: i64,
    /// Below 1,000,000,000.
    pub nanos: u32,
}

/// What `rsync -a` keeps of an entry besides its content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (`MODE_MASK`). A
    /// joiner keeps setuid and setgid of files only with --keep-setuid
    /// and owners (`storage::Keep`).
    pub mode: u32,
    /// Numeric owner and group, applied by a joiner running as root.
    pub uid: u32,
    pub gid: u32,
    pub mtime: Mtime,
}

impl Meta {
    /// Only the mode (tests, and entries whose other fields do not matter).
    pub fn mode(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    /// A symbolic link, carried as the link itself and never followed; the
    /// target is kept as written (it may point outside the tree).
    Symlink {
        target: String,
    },
    /// Another name for an earlier `File` entry (its index in `entries`):
    /// a hard link inside the tree, sent once. Its `meta` is the file's.
    HardLink {
        target: u32,
    },
}

impl EntryKind {
    /// A symbolic or hard link: made by a joiner at the end.
    pub fn is_link(&self) -> bool {
        matches!(self, EntryKind::Symlink { .. } | EntryKind::HardLink { .. })
    }
}

/// One entry of a directory tree, with a path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    /// Symlinks: mode 0o777. Hard links: `Meta::default()` (the target's
    /// applies).
    pub meta: Meta,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    File { size: u64, meta: Meta },
    Dir { meta: Meta, entries: Vec<Entry> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Name of the file or directory, placed inside the joiner's DEST_DIR.
    pub name: String,
    pub root: Root,
    pub piece_size: u32,
    pub hashes: Vec<Hash>,
    /// Derived from `root` and `piece_size` on first use; those two must
    /// not change afterwards.
    pub layout: Layout,
}

/// The regular files with content, in entry order, at their aligned
/// offsets (derived from the manifest, so ignored by `==`).
#[derive(Clone, Debug, Default)]
pub struct Layout(OnceLock<Vec<FileSpan>>);

impl PartialEq for Layout {
    fn eq(&self, _: &Layout) -> bool {
        true
    }
}
impl Eq for Layout {}

/// A file's place in the content stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// Path relative to the root; empty when the root itself is the file.
    pub path: String,
    /// In the virtual stream (see the module doc).
    pub offset: u64,
    pub size: u64,
}

impl FileSpan {
    pub fn end(&self) -> u64 {
        self.offset + self.size
    }
}

/// Files of this size or more start a new piece; smaller ones are packed.
pub const PACK_BELOW: u64 = 64 << 10;

/// Places files of the given (path, size), in order, in the virtual
/// stream at `piece_size` (empty files take no place and get no span).
/// `None` if the stream would pass `u64::MAX`.
pub fn layout(
    files: impl IntoIterator<Item = (String, u64)>,
    piece_size: u32,
) -> Option<Vec<FileSpan>> {
    let ps = u64::from(piece_size.max(1));
    let mut pos = 0u64;
    let mut out = Vec::new();
    for (path, size) in files {
        if size == 0 {
            continue;
        }
        if size >= PACK_BELOW {
            pos = pos.checked_next_multiple_of(ps)?;
        }
        out.push(FileSpan {
            path,
            offset: pos,
            size,
        });
        pos = pos.checked_add(size)?;
    }
    Some(out)
}

/// Pieces of a layout: every piece slot up to its end holds content.
pub fn layout_pieces(spans: &[FileSpan], piece_size: u32) -> u64 {
    spans
        .last()
        .map_or(0, |s| s.end().div_ceil(u64::from(piece_size.max(1))))
}

/// Byte range `(offset, len)` of piece `i` of a layout; `(0, 0)` past the
/// last piece.
pub fn layout_piece(spans: &[FileSpan], piece_size: u32, i: usize) -> (u64, u64) {
    let ps = u64::from(piece_size.max(1));
    let start = i as u64 * ps;
    let end = start + ps;
    // the last span that starts before this piece ends: the content of
    // the piece runs from its start to that span's end at most
    let k = spans.partition_point(|s| s.offset < end);
    match k.checked_sub(1).map(|k| &spans[k]) {
        Some(s) if s.end() > start => (start, s.end().min(end) - start),
        _ => (0, 0),
    }
}

pub const MODE_MASK: u32 = 0o7777;
/// The mode every symbolic link has.
pub const SYMLINK_MODE: u32 = 0o777;

impl Manifest {
    pub fn new(name: String, root: Root, piece_size: u32, hashes: Vec<Hash>) -> Manifest {
        Manifest {
            name,
            root,
            piece_size,
            hashes,
            layout: Layout::default(),
        }
    }

    pub fn id(&self) -> ManifestId {
        ManifestId(*blake3::hash(&self.encode()).as_bytes())
    }

    pub fn piece_count(&self) -> usize {
        self.hashes.len()
    }

    /// Bytes of content (a hard-linked file counted once).
    pub fn total_size(&self) -> u64 {
        self.files().iter().map(|f| f.size).sum()
    }

    /// Byte range `(offset, len)` of piece `i` in the content stream (see
    /// the module doc); `(0, 0)` past the last piece.
    pub fn piece_range(&self, i: usize) -> (u64, u64) {
        layout_piece(self.files(), self.piece_size, i)
    }

    /// The files piece `i` holds bytes of.
    pub fn piece_files(&self, i: usize) -> &[FileSpan] {
        let (start, len) = self.piece_range(i);
        let files = self.files();
        let first = files.partition_point(|f| f.end() <= start);
        let last = files.partition_point(|f| f.offset < start + len);
        &files[first..last.max(first)]
    }

    /// Regular files with content, in entry order, at their offsets in
    /// the virtual stream (empty files and hard links have no span). A
    /// manifest that decoded has a layout; one that would overflow (only
    /// ever built by hand) has none.
    pub fn files(&self) -> &[FileSpan] {
        self.layout
            .0
            .get_or_init(|| layout(file_sizes(&self.root), self.piece_size).unwrap_or_default())
    }

    /// Number of pieces `root` needs at `piece_size` (`None` on overflow).
    pub fn pieces_for(root: &Root, piece_size: u32) -> Option<u64> {
        Some(layout_pieces(
            &layout(file_sizes(root), piece_size)?,
            piece_size,
        ))
    }

    /// The blake3 hash piece `i` must have.
    pub fn piece_hash(&self, i: usize) -> Option<&[u8; 32]> {
        self.hashes.get(i)
    }

    pub fn verify_piece(&self, i: usize, data: &[u8]) -> bool {
        self.hashes.get(i) == Some(blake3::hash(data).as_bytes())
    }
}

/// The regular files of `root` with their sizes, in entry order.
fn file_sizes(root: &Root) -> Vec<(String, u64)> {
    match root {
        Root::File { size, .. } => vec![(String::new(), *size)],
        Root::Dir { entries, .. } => entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::File { size } => Some((e.path.clone(), size)),
                _ => None,
            })
            .collect(),
    }
}

/// 1 MiB, doubled until the image needs at most 65536 pieces (a 2 MiB
/// manifest of hashes): 1 MiB up to 64 GiB, 4 MiB at 256 GiB. Smaller
/// pieces pass on sooner: 8 hosts of 256 MiB at 200 Mbit/s finished in
/// 1.29x S/B with 1 MiB pieces, 1.52x with 4 MiB (benches/wan.rs); a
/// single seed-to-joiner copy on loopback was about 8% slower.
pub fn default_piece_size(total: u64) -> u32 {
    let mut size: u64 = 1 << 20;
    while total.div_ceil(size) > 65536 && size < (1 << codec::MAX_PIECE_LOG2) {
        size *= 2;
    }
    size as u32
}

//! The manifest: what is being distributed (a file or a directory tree with
//! its links, owners and mtimes), cut into fixed-size pieces, each with its
//! blake3 hash. Its canonical encoding (see `codec`) is hashed into the
//! manifest id that a ticket carries, so a manifest fetched from any peer can
//! be checked before use.
//!
//! Pieces are aligned to files, as in BitTorrent v2: each regular file's
//! content starts a new piece, so a file added, removed or grown changes only
//! its own pieces, never the pieces of the files after it (what lets an
//! older copy serve as a basis, see `crate::basis`). Positions are given in
//! a virtual content stream where file `k` starts at `first_piece(k) *
//! piece_size`; the gap after a file's last byte up to the next piece
//! boundary belongs to no piece and is never read or written.

pub mod blocks;
mod build;
mod codec;
pub mod path;
mod sigbus;

use std::sync::OnceLock;

pub use build::{BuildError, build, default_piece_size};
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
    /// joiner that does not set owners drops setuid and setgid.
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
    /// `first_piece * piece_size`.
    pub offset: u64,
    pub size: u64,
    pub first_piece: u32,
}

impl FileSpan {
    pub fn pieces(&self, piece_size: u32) -> u64 {
        self.size.div_ceil(u64::from(piece_size))
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
        match self.file_of_piece(i) {
            Some(f) => {
                let start = i as u64 * u64::from(self.piece_size);
                let len = (f.offset + f.size - start).min(u64::from(self.piece_size));
                (start, len)
            }
            None => (0, 0),
        }
    }

    /// The file that holds piece `i`.
    pub fn file_of_piece(&self, i: usize) -> Option<&FileSpan> {
        let files = self.files();
        let k = files
            .partition_point(|f| (f.first_piece as u64 + f.pieces(self.piece_size)) <= i as u64);
        files.get(k).filter(|f| (f.first_piece as usize) <= i)
    }

    /// Regular files with content, in entry order, at their aligned offsets
    /// (empty files and hard links have no span).
    pub fn files(&self) -> &[FileSpan] {
        self.layout.0.get_or_init(|| {
            let ps = u64::from(self.piece_size.max(1));
            let sizes: Vec<(String, u64)> = match &self.root {
                Root::File { size, .. } => vec![(String::new(), *size)],
                Root::Dir { entries, .. } => entries
                    .iter()
                    .filter_map(|e| match e.kind {
                        EntryKind::File { size } => Some((e.path.clone(), size)),
                        _ => None,
                    })
                    .collect(),
            };
            let mut piece = 0u64;
            let mut out = Vec::new();
            for (path, size) in sizes {
                if size == 0 {
                    continue;
                }
                out.push(FileSpan {
                    path,
                    offset: piece.saturating_mul(ps),
                    size,
                    first_piece: piece.min(u64::from(u32::MAX)) as u32,
                });
                piece = piece.saturating_add(size.div_ceil(ps));
            }
            out
        })
    }

    /// Number of pieces `root` needs at `piece_size` (`None` on overflow).
    pub fn pieces_for(root: &Root, piece_size: u32) -> Option<u64> {
        let ps = u64::from(piece_size);
        match root {
            Root::File { size, .. } => Some(size.div_ceil(ps)),
            Root::Dir { entries, .. } => entries.iter().try_fold(0u64, |acc, e| match e.kind {
                EntryKind::File { size } => acc.checked_add(size.div_ceil(ps)),
                _ => Some(acc),
            }),
        }
    }

    /// The blake3 hash piece `i` must have.
    pub fn piece_hash(&self, i: usize) -> Option<&[u8; 32]> {
        self.hashes.get(i)
    }

    pub fn verify_piece(&self, i: usize, data: &[u8]) -> bool {
        self.hashes.get(i) == Some(blake3::hash(data).as_bytes())
    }
}

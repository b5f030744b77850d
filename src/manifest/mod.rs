//! The manifest: what is being distributed (a file or a directory tree), cut
//! into fixed-size pieces, each with its blake3 hash. Its canonical encoding
//! (see `codec`) is hashed into the manifest id that a ticket carries, so a
//! manifest fetched from any peer can be checked before use.
//!
//! Content is one byte stream: the files' contents concatenated in entry order.
//! Piece `i` covers bytes `[i * piece_size, min((i + 1) * piece_size, total))`.

mod build;
mod codec;
pub mod path;
mod sigbus;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File { size: u64 },
    Dir,
}

/// One entry of a directory tree, with a path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o777` mask; setuid/setgid/sticky are not carried).
    pub mode: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    File { size: u64, mode: u32 },
    Dir { mode: u32, entries: Vec<Entry> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Name of the file or directory, placed inside the joiner's DEST_DIR.
    pub name: String,
    pub root: Root,
    pub piece_size: u32,
    pub hashes: Vec<Hash>,
}

/// A file's place in the content stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// Path relative to the root; empty when the root itself is the file.
    pub path: String,
    pub offset: u64,
    pub size: u64,
}

pub const MODE_MASK: u32 = 0o777;

impl Manifest {
    pub fn id(&self) -> ManifestId {
        ManifestId(*blake3::hash(&self.encode()).as_bytes())
    }

    pub fn piece_count(&self) -> usize {
        self.hashes.len()
    }

    pub fn total_size(&self) -> u64 {
        match &self.root {
            Root::File { size, .. } => *size,
            Root::Dir { entries, .. } => entries
                .iter()
                .map(|e| match e.kind {
                    EntryKind::File { size } => size,
                    EntryKind::Dir => 0,
                })
                .sum(),
        }
    }

    /// Byte range `(offset, len)` of piece `i` in the content stream.
    pub fn piece_range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.piece_size as u64;
        let end = (start + self.piece_size as u64).min(self.total_size());
        (start, end - start)
    }

    /// Files in content order with their offsets (empty files included).
    pub fn files(&self) -> Vec<FileSpan> {
        match &self.root {
            Root::File { size, .. } => vec![FileSpan {
                path: String::new(),
                offset: 0,
                size: *size,
            }],
            Root::Dir { entries, .. } => {
                let mut offset = 0;
                let mut out = Vec::new();
                for e in entries {
                    if let EntryKind::File { size } = e.kind {
                        out.push(FileSpan {
                            path: e.path.clone(),
                            offset,
                            size,
                        });
                        offset += size;
                    }
                }
                out
            }
        }
    }

    /// Number of pieces needed for `total` bytes at `piece_size`.
    pub fn pieces_for(total: u64, piece_size: u32) -> u64 {
        total.div_ceil(piece_size as u64)
    }

    /// The blake3 hash piece `i` must have.
    pub fn piece_hash(&self, i: usize) -> Option<&[u8; 32]> {
        self.hashes.get(i)
    }

    pub fn verify_piece(&self, i: usize, data: &[u8]) -> bool {
        self.hashes.get(i) == Some(blake3::hash(data).as_bytes())
    }
}

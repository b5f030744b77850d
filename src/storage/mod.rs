//! Disk I/O: reading and writing pieces in place (`Content`), the download
//! target (`Partial`): a partial file or tree next to the final destination,
//! verified on resume and renamed into place when complete, and the files
//! written for the operator (`PrivateFile`: ticket, report).
//!
//! Nothing here follows a symbolic link below a directory the operator
//! named (DEST_DIR, the seeded root): `at` opens, creates, renames and
//! chmods relative to open directory handles, one component at a time.

mod at;
mod basis;
mod buf;
mod build;
mod check;
mod content;
mod meta;
mod partial;
mod private;
pub mod seed_state;
mod sigbus;

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::text;

pub use at::Root;
pub use basis::{Basis, Progress as BasisProgress};
pub use buf::PieceBuf;
pub use build::{BuildError, Hashing, build, build_counted, hash as hash_pieces, scan};
pub use check::{Difference, Owners, compare};
pub use content::Content;
pub use meta::Keep;
pub use partial::Partial;
pub use private::{PrivateFile, write_private};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error(
        "destination {} already exists (use --force to replace it: what it has in common with the new copy is then taken from it, not fetched)",
        text::path(.0)
    )]
    Exists(PathBuf),
    #[error("destination directory {} does not exist or is not a directory", text::path(.0))]
    NoDestDir(PathBuf),
    #[error(
        "{} is a symbolic link; swarm never follows links in what it creates under DEST_DIR: remove it and run again",
        text::path(.0)
    )]
    Link(PathBuf),
    /// Something swarm expects to have made itself (partial data) that it
    /// did not: another user's, or a file with other hard links.
    #[error(
        "{} {why}: swarm only reuses partial data it made itself; remove it and run again",
        text::path(path)
    )]
    Foreign { path: PathBuf, why: String },
    /// A name swarm was working on no longer holds what swarm put or found
    /// there (moved or replaced by someone else).
    #[error(
        "{} was moved or replaced by someone else while swarm worked on it; check DEST_DIR and run again",
        text::path(.0)
    )]
    Replaced(PathBuf),
    /// An entry of a partial tree that the manifest does not have.
    #[error(
        "{} is in the partial tree but not in the manifest; swarm does not resume with entries it did not make: remove it and run again",
        text::path(.0)
    )]
    Extra(PathBuf),
    #[error(
        "{} exists but is not a {want}; remove it and run again",
        text::path(path)
    )]
    NotKind { path: PathBuf, want: &'static str },
    #[error(
        "not enough free space in {}: need {need} bytes, {avail} available",
        text::path(dir)
    )]
    NoSpace { dir: PathBuf, need: u64, avail: u64 },
    #[error("{}: {source}", text::path(path))]
    Io { path: PathBuf, source: io::Error },
    /// `--state DIR` that could let another user read or plant the
    /// secret.
    #[error("--state {}: {why}; it holds the swarm's secret", text::path(path))]
    StateDir { path: PathBuf, why: &'static str },
    /// A file written for the operator (`what` is the option, e.g.
    /// `--ticket-file`); `source` names the path.
    #[error("{what}: {source}")]
    Output {
        what: &'static str,
        source: io::Error,
    },
}

/// The pieces that are all zeros (by their hash): never fetched, never
/// written, so a hole in the seed's file is a hole in the copy.
pub fn zero_pieces(m: &crate::manifest::Manifest) -> bitvec::vec::BitVec {
    use rayon::prelude::*;
    // one hash per distinct length (the piece size, and files' tails),
    // on all cores
    let lens: std::collections::HashSet<u64> =
        (0..m.piece_count()).map(|i| m.piece_range(i).1).collect();
    let zero_hash: std::collections::HashMap<u64, [u8; 32]> = lens
        .into_par_iter()
        .map(|len| (len, zeros_hash(len)))
        .collect();
    (0..m.piece_count())
        .map(|i| m.piece_hash(i) == zero_hash.get(&m.piece_range(i).1))
        .collect()
}

/// blake3 of `len` zero bytes.
pub fn zeros_hash(len: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let block = [0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    *h.finalize().as_bytes()
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// For `Content`'s positional I/O, which speaks `io::Error`: the message
/// (with its path) is kept, and the kind where there is one.
impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        let kind = match &e {
            StorageError::Io { source, .. } | StorageError::Output { source, .. } => source.kind(),
            StorageError::NoSpace { .. } => io::ErrorKind::StorageFull,
            StorageError::Exists(_) => io::ErrorKind::AlreadyExists,
            StorageError::NoDestDir(_) => io::ErrorKind::NotFound,
            StorageError::Link(_)
            | StorageError::NotKind { .. }
            | StorageError::Foreign { .. }
            | StorageError::Replaced(_)
            | StorageError::StateDir { .. }
            | StorageError::Extra(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

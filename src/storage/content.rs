//! Positional reads and writes in the content stream of a manifest, mapped
//! onto the files that hold it (one file, or every file of a tree in entry
//! order). Pieces may span file boundaries.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::OFlags;

use super::at::{self, Dir, Root};
use crate::manifest::FileSpan;

struct Span {
    /// Relative to the root directory; empty when the root is the file.
    path: String,
    offset: u64,
    size: u64,
}

/// Files of a content stream, ordered by offset. A single-file stream keeps
/// its file open; a tree opens files relative to its open root directory
/// and never through a link (`at::Dir`), so that a file swapped for a
/// link under it is refused rather than read or written, and keeps the
/// last few open (`OPEN_FILES`), so that a datadir of many thousands of
/// files does not exhaust file descriptors.
pub struct Content {
    spans: Vec<Span>,
    /// The tree's root directory; `None` when the root is the file.
    dir: Option<Dir>,
    /// A tree's most recently used files (span index, file), the latest
    /// last.
    open: Mutex<Vec<(usize, Arc<Open>)>>,
    single: Option<Arc<Open>>,
    /// Cleared on the first direct write the kernel refuses; from then on
    /// every write goes through the page cache.
    direct_ok: AtomicBool,
    writable: bool,
    /// Set by `seal`.
    sealed: std::sync::RwLock<bool>,
}

/// A file of the content, open.
struct Open {
    file: File,
    /// The same file opened again with O_DIRECT, for writes (see
    /// `write_at`), on the first write that can use it; `None` where the
    /// file system refuses O_DIRECT (tmpfs).
    direct: OnceLock<Option<File>>,
}

impl Open {
    fn new(file: File) -> Arc<Open> {
        Arc::new(Open {
            file,
            direct: OnceLock::new(),
        })
    }
}

/// Files of a tree kept open. Accesses are local: a piece's blocks read
/// one by one from a basis, a piece written around its zero blocks, the
/// few small files packed into one piece. Opening per access instead cost
/// three openat and a close per block (a path walk under `at::Dir`):
/// 23,000 opens for a 256 MiB tree delta. Small, because a join may hold
/// up to `basis::MAX_SOURCES` basis trees as well as its own.
const OPEN_FILES: usize = 8;

/// Offsets, lengths and buffer addresses of direct writes are multiples of
/// this (the largest logical block size in common use).
pub const DIRECT_ALIGN: usize = 4096;

impl Content {
    /// `base` is the file itself when the root is a file, or the root
    /// directory of a tree; `files` comes from `Manifest::files`. Neither
    /// a link at `base` nor one below it is followed.
    pub fn open(base: PathBuf, files: &[FileSpan], writable: bool) -> io::Result<Content> {
        Content::from_root(Root::open(&base, writable)?, files, writable)
    }

    /// Content under an open root (see `Partial`, which creates it).
    pub fn from_root(root: Root, files: &[FileSpan], writable: bool) -> io::Result<Content> {
        let spans: Vec<Span> = files
            .iter()
            .filter(|f| f.size > 0)
            .map(|f| Span {
                path: f.path.clone(),
                offset: f.offset,
                size: f.size,
            })
            .collect();
        let (dir, single) = match root {
            Root::File(f) => (None, Some(Open::new(f))),
            Root::Dir(d) => {
                let single = match (files.len(), spans.first()) {
                    (1, Some(s)) => Some(Open::new(d.open_file(&s.path, writable)?)),
                    _ => None,
                };
                (Some(d), single)
            }
        };
        Ok(Content {
            spans,
            dir,
            open: Mutex::new(Vec::with_capacity(OPEN_FILES)),
            single,
            direct_ok: AtomicBool::new(writable),
            writable,
            sealed: Default::default(),
        })
    }

    /// The one file of a single-file content, open (for `storage::build`,
    /// which maps it).
    pub fn single_file(&self) -> Option<&File> {
        self.single.as_ref().map(|o| &o.file)
    }

    /// Calls `f(file, offset_in_file, range_in_buf)` for each file touched by
    /// `[offset, offset + len)`.
    fn each_span(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Open, u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset + len as u64;
        let first = self.spans.partition_point(|s| s.offset + s.size <= offset);
        let mut done = 0usize;
        for (i, s) in self.spans.iter().enumerate().skip(first) {
            if s.offset >= end {
                break;
            }
            let from = offset.max(s.offset);
            let to = end.min(s.offset + s.size);
            let n = (to - from) as usize;
            let range = done..done + n;
            match (&self.single, &self.dir) {
                (Some(file), _) => f(file, from - s.offset, range)?,
                (None, Some(dir)) => {
                    let file = self.open_file(dir, i)?;
                    f(&file, from - s.offset, range)?
                }
                (None, None) => return Err(io::Error::other("content without a root")),
            }
            done += n;
        }
        if done != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("range {offset}+{len} lies outside the content"),
            ));
        }
        Ok(())
    }

    /// The file of span `i` of a tree, from `open` or opened and put there.
    fn open_file(&self, dir: &Dir, i: usize) -> io::Result<Arc<Open>> {
        let lock = || self.open.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut open = lock();
            if let Some(k) = open.iter().position(|(j, _)| *j == i) {
                let hit = open.remove(k);
                let file = hit.1.clone();
                open.push(hit);
                return Ok(file);
            }
        }
        // opened without the lock held: other threads' hits go on
        let file = Open::new(dir.open_file(&self.spans[i].path, self.writable)?);
        let mut open = lock();
        if !open.iter().any(|(j, _)| *j == i) {
            if open.len() == OPEN_FILES {
                open.remove(0);
            }
            open.push((i, file.clone()));
        }
        Ok(file)
    }

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len();
        self.each_span(offset, len, |open, at, range| {
            open.file.read_exact_at(&mut buf[range], at)
        })
    }

    /// Writes `buf` at `offset`. The block-aligned part of a write to a single
    /// file bypasses the page cache (O_DIRECT) when `buf` is aligned (see
    /// `PieceBuf`): copying a received piece into the page cache cost the
    /// joiner about as much CPU as QUIC itself, and the page cache holding
    /// a multi-GB image the host does not read is no help either.
    /// Writes `buf` at `offset` but for its all-zero blocks
    /// (`manifest::blocks::BLOCK`, from `offset`): the partial files are
    /// sparse at their final sizes, so those read as zeros already and a
    /// hole of the seed's file stays a hole. Safe on resume too: a partial
    /// file holds only verified bytes of the same manifest and zeros once
    /// the resume scan has punched every piece that does not verify (a
    /// basis may have written old blocks ahead there).
    pub fn write_sparse(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        use crate::manifest::blocks::BLOCK;
        let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
        let mut at = 0;
        while at < buf.len() {
            let start = at;
            while at < buf.len() && !zero(&buf[at..(at + BLOCK).min(buf.len())]) {
                at = (at + BLOCK).min(buf.len());
            }
            if at > start {
                self.write_at(offset + start as u64, &buf[start..at])?;
            }
            while at < buf.len() && zero(&buf[at..(at + BLOCK).min(buf.len())]) {
                at = (at + BLOCK).min(buf.len());
            }
        }
        Ok(())
    }

    /// Refuses every write from now on, once writes under way are done:
    /// the copy is complete, and a late duplicate of a piece must not
    /// touch it (nor its mtime) after its metadata is set.
    pub fn seal(&self) {
        *self.sealed.write().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Makes `len` bytes at `offset` read as zeros again: a hole where the
    /// file system can punch one, else zeros written. For bytes a basis put
    /// there ahead of the piece's outboard (`Basis::placed`) that the new
    /// version has as zeros, and for an unverified piece of a resumed copy.
    pub fn punch(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        let _sealed = self.writable_unsealed()?;
        self.each_span(offset, len as usize, |open, at, range| {
            let n = range.len() as u64;
            match fallocate(
                &open.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                at,
                n,
            ) {
                Ok(()) => Ok(()),
                // no holes here (or not this way): zeros written
                Err(
                    rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::INVAL,
                ) => open.file.write_all_at(&vec![0u8; range.len()], at),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// The seal's read guard, once writes are known to be allowed.
    fn writable_unsealed(&self) -> io::Result<std::sync::RwLockReadGuard<'_, bool>> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the content is open read-only",
            ));
        }
        // held for the whole write: `seal` waits for it
        let sealed = self.sealed.read().unwrap_or_else(|e| e.into_inner());
        if *sealed {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the copy is complete: no more writes",
            ));
        }
        Ok(sealed)
    }

    pub fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let _sealed = self.writable_unsealed()?;
        self.each_span(offset, buf.len(), |open, at, range| {
            self.write_file(open, at, &buf[range])
        })
    }

    /// Writes `data` at `at` in one file: its block-aligned part by
    /// O_DIRECT when `data` lies at an aligned address (see `PieceBuf`),
    /// the rest through the page cache.
    fn write_file(&self, open: &Open, mut at: u64, mut data: &[u8]) -> io::Result<()> {
        let aligned = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        if aligned > 0
            && at.is_multiple_of(DIRECT_ALIGN as u64)
            && (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
            && self.direct_ok.load(Ordering::Relaxed)
            && let Some(direct) = open
                .direct
                .get_or_init(|| at::reopen(&open.file, OFlags::WRONLY | OFlags::DIRECT))
        {
            match direct.write_all_at(&data[..aligned], at) {
                Ok(()) => {
                    data = &data[aligned..];
                    at += aligned as u64;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_ok.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        open.file.write_all_at(data, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::PieceBuf;

    /// Aligned pieces take the O_DIRECT path, the unaligned tail and
    /// unaligned buffers the page cache; the file must read back the same
    /// either way.
    #[test]
    fn direct_and_buffered_writes_land_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let size = 3 * 65536 + 1000;
        File::create(&path).unwrap().set_len(size).unwrap();
        let files = [FileSpan {
            path: String::new(),
            offset: 0,
            size,
        }];
        let c = Content::open(path.clone(), &files, true).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let piece = 65536usize;
        for (i, chunk) in data.chunks(piece).enumerate() {
            let at = (i * piece) as u64;
            if i == 1 {
                c.write_at(at, chunk).unwrap(); // a plain, unaligned Vec slice
            } else {
                let mut b = PieceBuf::with_capacity(chunk.len());
                b.extend_from_slice(chunk);
                c.write_at(at, b.as_slice()).unwrap();
            }
        }
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let mut back = vec![0u8; 2500];
        c.read_at(65536 * 3 - 2000, &mut back).unwrap();
        assert_eq!(back, &data[65536 * 3 - 2000..][..2500]);
    }

    /// A file of a tree swapped for a link after the manifest was built
    /// (seed) or the partial tree was made (join) is refused: its target
    /// is neither read (and served to peers) nor written.
    #[test]
    fn a_link_in_a_tree_is_neither_read_nor_written() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, vec![7u8; 4096]).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("a"), vec![1u8; 4096]).unwrap();
        std::os::unix::fs::symlink(&secret, tree.join("sub/b")).unwrap();
        let files = [
            FileSpan {
                path: "a".into(),
                offset: 0,
                size: 4096,
            },
            FileSpan {
                path: "sub/b".into(),
                offset: 4096,
                size: 4096,
            },
        ];
        for writable in [false, true] {
            let c = Content::open(tree.clone(), &files, writable).unwrap();
            let mut buf = vec![0u8; 4096];
            c.read_at(0, &mut buf).unwrap();
            assert_eq!(buf, vec![1u8; 4096]);
            let e = c.read_at(4096, &mut buf).unwrap_err();
            assert!(e.to_string().contains("is a symbolic link"), "{e}");
            assert_eq!(buf, vec![1u8; 4096], "bytes of the link's target read");
            if writable {
                assert!(c.write_at(4096, &[9u8; 4096]).is_err());
            }
        }
        assert_eq!(std::fs::read(&secret).unwrap(), vec![7u8; 4096]);
    }
}

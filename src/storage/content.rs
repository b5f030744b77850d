//! Positional reads and writes in the content stream of a manifest, mapped
//! onto the files that hold it (one file, or every file of a tree in entry
//! order). Pieces may span file boundaries.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::manifest::FileSpan;

struct Span {
    path: PathBuf,
    offset: u64,
    size: u64,
}

/// Files of a content stream, ordered by offset. A single-file stream keeps
/// its file open; a tree opens files per access so that a datadir of many
/// thousands of files does not exhaust file descriptors.
pub struct Content {
    spans: Vec<Span>,
    single: Option<File>,
    writable: bool,
}

impl Content {
    /// `base` is the file itself when the root is a file, or the root
    /// directory of a tree; `files` comes from `Manifest::files`.
    pub fn open(base: PathBuf, files: &[FileSpan], writable: bool) -> io::Result<Content> {
        let spans: Vec<Span> = files
            .iter()
            .filter(|f| f.size > 0)
            .map(|f| Span {
                path: if f.path.is_empty() {
                    base.clone()
                } else {
                    base.join(&f.path)
                },
                offset: f.offset,
                size: f.size,
            })
            .collect();
        let single = match (files.len(), spans.first()) {
            (1, Some(s)) => Some(open(&s.path, writable)?),
            _ => None,
        };
        Ok(Content {
            spans,
            single,
            writable,
        })
    }

    /// Calls `f(file, offset_in_file, range_in_buf)` for each file touched by
    /// `[offset, offset + len)`.
    fn each_span(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&File, u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset + len as u64;
        let first = self.spans.partition_point(|s| s.offset + s.size <= offset);
        let mut done = 0usize;
        for s in &self.spans[first..] {
            if s.offset >= end {
                break;
            }
            let from = offset.max(s.offset);
            let to = end.min(s.offset + s.size);
            let n = (to - from) as usize;
            let range = done..done + n;
            match &self.single {
                Some(file) => f(file, from - s.offset, range)?,
                None => f(&open(&s.path, self.writable)?, from - s.offset, range)?,
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

    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len();
        self.each_span(offset, len, |file, at, range| {
            file.read_exact_at(&mut buf[range], at)
        })
    }

    pub fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.each_span(offset, buf.len(), |file, at, range| {
            file.write_all_at(&buf[range], at)
        })
    }
}

fn open(path: &PathBuf, writable: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

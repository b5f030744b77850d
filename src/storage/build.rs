//! Building a manifest from a file or directory on disk: walk, then hash all
//! pieces on all cores (one sequential read of a piece per task). The
//! model it fills in is `manifest`'s, which reads no disk.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use thiserror::Error;

use super::Content;
use crate::manifest::{
    Entry, EntryKind, Hash, MODE_MASK, Manifest, Meta, Mtime, Root, SYMLINK_MODE,
    default_piece_size, path,
};

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: {what}; swarm carries regular files, directories and symbolic links only: move it out of the tree",
        crate::text::path(path)
    )]
    Unsupported { path: PathBuf, what: &'static str },
    #[error(
        "{}: the root is a symbolic link; name the directory or file it points to",
        crate::text::path(.0)
    )]
    RootLink(PathBuf),
    #[error("{0}: name is not valid UTF-8 or not a plain name")]
    BadName(PathBuf),
    #[error("piece size {0} must be a power of two between 4KiB and 1GiB")]
    BadPieceSize(u64),
    #[error("{what}: {got} exceeds the limit of {max}")]
    TooBig {
        what: &'static str,
        got: u64,
        max: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Walks `root` and hashes it. `piece_size` of `None` picks the default.
pub fn build(root: &Path, piece_size: Option<u64>) -> Result<Manifest, BuildError> {
    build_counted(root, piece_size, &Hashing::default())
}

/// How far a build is, for a progress line (a multi-GB image takes a
/// while): the bytes to hash, known once the tree is walked, and hashed.
#[derive(Debug, Default)]
pub struct Hashing {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

/// `build`, counting in `progress` as it goes.
pub fn build_counted(
    root: &Path,
    piece_size: Option<u64>,
    progress: &Hashing,
) -> Result<Manifest, BuildError> {
    let (name, tree) = scan(root)?;
    let total = Manifest::new(name.clone(), tree.clone(), 1 << 20, Vec::new()).total_size();
    progress.total.store(total, Ordering::Relaxed);
    let piece_size = match piece_size {
        None => default_piece_size(total),
        Some(p) if p.is_power_of_two() && (4096..=1 << 30).contains(&p) => p as u32,
        Some(p) => return Err(BuildError::BadPieceSize(p)),
    };
    let n = Manifest::pieces_for(&tree, piece_size).unwrap_or(u64::MAX);
    if n > crate::manifest::MAX_PIECES as u64 {
        return Err(BuildError::TooBig {
            what: "piece count",
            got: n,
            max: crate::manifest::MAX_PIECES as u64,
        });
    }
    let mut m = Manifest::new(name, tree, piece_size, Vec::new());
    m.hashes = hash(root, &m, &progress.done)?;
    Ok(m)
}

/// The name and the tree at `root`, walked in manifest order, without
/// reading any file's content.
pub fn scan(root: &Path) -> Result<(String, Root), BuildError> {
    let meta = fs::symlink_metadata(root).map_err(io_err(root))?;
    let name = root
        .canonicalize()
        .map_err(io_err(root))?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| BuildError::BadName(root.to_path_buf()))?;
    path::check_component(&name).map_err(|_| BuildError::BadName(root.to_path_buf()))?;
    let tree = if meta.is_file() {
        Root::File {
            size: meta.len(),
            meta: meta_of(&meta),
        }
    } else if meta.is_dir() {
        let mut entries = Vec::new();
        walk(root, "", &mut entries, &mut HashMap::new())?;
        if entries.len() > crate::manifest::MAX_ENTRIES {
            return Err(BuildError::TooBig {
                what: "entry count",
                got: entries.len() as u64,
                max: crate::manifest::MAX_ENTRIES as u64,
            });
        }
        Root::Dir {
            meta: meta_of(&meta),
            entries,
        }
    } else if meta.is_symlink() {
        return Err(BuildError::RootLink(root.to_path_buf()));
    } else {
        return Err(BuildError::Unsupported {
            path: root.to_path_buf(),
            what: special_kind(&meta),
        });
    };
    Ok((name, tree))
}

/// The hashes of `m`'s pieces as the files under `root` hold them now
/// (`m`'s layout: `root` must have its files, at their sizes), on all
/// cores, adding the bytes hashed to `hashed`.
pub fn hash(root: &Path, m: &Manifest, hashed: &AtomicU64) -> Result<Vec<Hash>, BuildError> {
    // from the layout: `m.hashes` may be what this fills in
    let n = Manifest::pieces_for(&m.root, m.piece_size).unwrap_or(0) as usize;
    let files = m.files().to_vec();
    // Opened without following links (`storage::at`): a file swapped for a
    // link after the walk is refused, not hashed and then served.
    let content = Content::open(root.to_path_buf(), &files, false).map_err(io_err(root))?;
    if let [f] = files.as_slice()
        && f.size > 0
        && let Some(file) = content.single_file()
    {
        let path = if f.path.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&f.path)
        };
        if let Some(hashes) = hash_mapped(file, &path, m, n, f.size, MAP_WINDOW, hashed)? {
            return Ok(hashes);
        }
    }
    (0..n)
        .into_par_iter()
        .map_init(Vec::new, |buf, i| {
            let (offset, len) = m.piece_range(i);
            buf.resize(len as usize, 0);
            content.read_at(offset, buf).map_err(io_err(root))?;
            hashed.fetch_add(len, Ordering::Relaxed);
            Ok(*blake3::hash(buf).as_bytes())
        })
        .collect()
}

/// Bytes of the file mapped at once while hashing.
const MAP_WINDOW: u64 = 64 << 20;

/// Hashes the pieces of a single file from a read-only mapping, as b3sum
/// does. Reading through `pread` copied every byte out of the page cache
/// first, and with AVX-512 blake3 that copy was 38% of the build's time
/// (`perf record`, 1 GiB cached): 6.1-6.7 GB/s against b3sum's 8.7-9.5.
/// A file truncated meanwhile, or unreadable, raises SIGBUS: `sigbus::Guard`
/// turns that into a message naming the file and a non-zero exit. `None`
/// when the file cannot be mapped. The file is mapped `window` bytes
/// (`MAP_WINDOW`), or one piece per thread if that is more, at a time:
/// every page of a mapping that was read counts in the resident set, so
/// one mapping of the whole file made a seed's peak RSS the image's size
/// (1,054,860 KiB for 1 GiB).
fn hash_mapped(
    file: &fs::File,
    path: &Path,
    m: &Manifest,
    pieces: usize,
    size: u64,
    window: u64,
    hashed: &AtomicU64,
) -> Result<Option<Vec<[u8; 32]>>, BuildError> {
    let shrank = || BuildError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file shrank while the manifest was built",
        ),
    };
    // at least a piece per thread, so big pieces still hash in parallel
    let threads = rayon::current_num_threads().max(1) as u64;
    let window = window.max(u64::from(m.piece_size) * threads);
    let per_window = (window / u64::from(m.piece_size)).max(1) as usize;
    let _guard = super::sigbus::Guard::new(path);
    let mut hashes = Vec::with_capacity(pieces);
    for first in (0..pieces).step_by(per_window) {
        let last = (first + per_window).min(pieces);
        let start = m.piece_range(first).0;
        let (end_off, end_len) = m.piece_range(last - 1);
        let len = end_off + end_len - start;
        if file.metadata().map_err(io_err(path))?.len() < start + len || start + len > size {
            return Err(shrank());
        }
        // SAFETY: a read-only shared mapping, only read from here while
        // the guard above is armed: a file truncated meanwhile is its
        // SIGBUS case.
        let map = match unsafe {
            memmap2::MmapOptions::new()
                .offset(start)
                .len(len as usize)
                .map(file)
        } {
            Ok(map) => map,
            // a file system that cannot map files: read it instead
            Err(_) if first == 0 => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        let _ = map.advise(memmap2::Advice::Sequential);
        hashes.par_extend((first..last).into_par_iter().map(|i| {
            let (offset, len) = m.piece_range(i);
            let at = (offset - start) as usize;
            let h = *blake3::hash(&map[at..at + len as usize]).as_bytes();
            hashed.fetch_add(len, Ordering::Relaxed);
            h
        }));
        // unmapped here: its pages leave this process's resident set
    }
    Ok(Some(hashes))
}

fn meta_of(m: &fs::Metadata) -> Meta {
    Meta {
        mode: m.mode() & MODE_MASK,
        uid: m.uid(),
        gid: m.gid(),
        mtime: Mtime {
            secs: m.mtime(),
            nanos: m.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
    }
}

fn special_kind(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_block_device() {
        "a block device"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a special file"
    }
}

/// Appends the entries under `dir` (relative prefix `rel`) in component
/// order. `inodes` maps the (dev, ino) of each regular file with more than
/// one link to its entry index: a later name of it becomes a hard link.
fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<Entry>,
    inodes: &mut HashMap<(u64, u64), u32>,
) -> Result<(), BuildError> {
    let mut children = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let p = item.path();
        let name = item
            .file_name()
            .to_str()
            .filter(|n| path::check_component(n).is_ok())
            .ok_or_else(|| BuildError::BadName(p.clone()))?
            .to_string();
        children.push((name, p));
    }
    children.sort();
    for (name, p) in children {
        let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        let rel_path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if rel_path.len() > path::MAX_PATH_LEN {
            return Err(BuildError::BadName(p));
        }
        if meta.is_file() {
            let index = out.len() as u32;
            if meta.nlink() > 1
                && let Some(&target) = inodes.get(&(meta.dev(), meta.ino()))
            {
                out.push(Entry {
                    path: rel_path,
                    kind: EntryKind::HardLink { target },
                    meta: Meta::default(),
                });
                continue;
            }
            if meta.nlink() > 1 {
                inodes.insert((meta.dev(), meta.ino()), index);
            }
            out.push(Entry {
                path: rel_path,
                kind: EntryKind::File { size: meta.len() },
                meta: meta_of(&meta),
            });
        } else if meta.is_dir() {
            out.push(Entry {
                path: rel_path.clone(),
                kind: EntryKind::Dir,
                meta: meta_of(&meta),
            });
            walk(&p, &rel_path, out, inodes)?;
        } else if meta.is_symlink() {
            let target = fs::read_link(&p).map_err(io_err(&p))?;
            let target = target
                .to_str()
                .filter(|t| path::check_link_target(t).is_ok())
                .ok_or_else(|| BuildError::BadName(p.clone()))?
                .to_string();
            out.push(Entry {
                path: rel_path,
                kind: EntryKind::Symlink { target },
                meta: Meta {
                    mode: SYMLINK_MODE,
                    ..meta_of(&meta)
                },
            });
        } else {
            return Err(BuildError::Unsupported {
                path: p,
                what: special_kind(&meta),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_tree_in_canonical_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("img");
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::write(root.join("b/c/data"), vec![7u8; 10_000]).unwrap();
        fs::write(root.join("a-file"), b"hello").unwrap();
        fs::write(root.join("zero"), b"").unwrap();
        let m = build(&root, Some(4096)).unwrap();
        let Root::Dir { entries, .. } = &m.root else {
            panic!("not a dir")
        };
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a-file", "b", "b/c", "b/c/data", "empty", "zero"]);
        assert_eq!(m.total_size(), 10_005);
        // small files are packed: piece 0 = "hello" + 4091 bytes of 7
        assert_eq!(m.piece_count(), 3);
        let mut p0 = b"hello".to_vec();
        p0.extend(vec![7u8; 4091]);
        assert!(m.verify_piece(0, &p0));
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    /// What `rsync -a` keeps: links as links (targets as written, even
    /// out of the tree), hard links as one file, owners, modes with the
    /// setgid bit, mtimes of files and directories.
    #[test]
    fn keeps_links_owners_and_mtimes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pgdata");
        fs::create_dir_all(root.join("base")).unwrap();
        fs::write(root.join("base/1"), vec![1u8; 90_000]).unwrap();
        fs::hard_link(root.join("base/1"), root.join("base/2")).unwrap();
        std::os::unix::fs::symlink("/srv/wal", root.join("pg_wal")).unwrap();
        std::os::unix::fs::symlink("../base/1", root.join("rel")).unwrap();
        fs::set_permissions(root.join("base"), fs::Permissions::from_mode(0o2750)).unwrap();
        let m = build(&root, Some(4096)).unwrap();
        let Root::Dir { entries, .. } = &m.root else {
            panic!("not a dir")
        };
        let kinds: Vec<(&str, &EntryKind)> =
            entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("base", &EntryKind::Dir),
                ("base/1", &EntryKind::File { size: 90_000 }),
                ("base/2", &EntryKind::HardLink { target: 1 }),
                (
                    "pg_wal",
                    &EntryKind::Symlink {
                        target: "/srv/wal".into()
                    }
                ),
                (
                    "rel",
                    &EntryKind::Symlink {
                        target: "../base/1".into()
                    }
                ),
            ]
        );
        // the hard-linked file is sent once
        assert_eq!((m.total_size(), m.piece_count()), (90_000, 22));
        let st = fs::metadata(root.join("base")).unwrap();
        assert_eq!(entries[0].meta.mode, 0o2750);
        assert_eq!(entries[0].meta.uid, st.uid());
        assert_eq!(entries[0].meta.mtime.secs, st.mtime());
        assert_eq!(entries[0].meta.mtime.nanos as i64, st.mtime_nsec());
        assert_eq!(entries[3].meta.mode, SYMLINK_MODE);
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn refuses_special_files_naming_them_and_bad_piece_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("img");
        fs::create_dir(&root).unwrap();
        let fifo = root.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = build(&root, None).unwrap_err();
        assert!(matches!(e, BuildError::Unsupported { .. }), "{e}");
        let shown = e.to_string();
        assert!(
            shown.contains("pipe") && shown.contains("a FIFO"),
            "{shown}"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert!(matches!(build(&link, None), Err(BuildError::RootLink(_))));
        let f = dir.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(matches!(
            build(&f, Some(5000)),
            Err(BuildError::BadPieceSize(5000))
        ));
    }

    #[test]
    fn a_file_hashed_window_by_window_gets_every_piece_right() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("img");
        let data: Vec<u8> = (0..10 * 4096 + 100).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&f, &data).unwrap();
        let m = build(&f, Some(4096)).unwrap();
        let want: Vec<[u8; 32]> = data
            .chunks(4096)
            .map(|c| *blake3::hash(c).as_bytes())
            .collect();
        assert_eq!(m.hashes, want);
        // windows of 3 pieces, of 2 (a size that is no multiple of the
        // piece size; 11 pieces leave a short last window), and of one
        // piece per thread (a window smaller than that is widened)
        for window in [3 * 4096, 2 * 4096 + 100, 1] {
            let file = fs::File::open(&f).unwrap();
            let got = hash_mapped(
                &file,
                &f,
                &m,
                want.len(),
                data.len() as u64,
                window,
                &AtomicU64::new(0),
            )
            .unwrap();
            assert_eq!(got.as_ref(), Some(&want), "window {window}");
        }
    }

    #[test]
    fn default_piece_size_keeps_manifest_small() {
        assert_eq!(default_piece_size(0), 1 << 20);
        assert_eq!(default_piece_size(64 << 30), 1 << 20);
        assert_eq!(default_piece_size((64 << 30) + 1), 2 << 20);
        assert_eq!(default_piece_size(256 << 30), 4 << 20);
        assert_eq!(default_piece_size(1 << 40), 16 << 20);
    }
}

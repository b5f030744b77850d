//! File system operations that never follow a symbolic link. Everything is
//! done relative to an open directory handle (`Dir`), one path component at
//! a time, each opened with O_NOFOLLOW; new files and directories are
//! created exclusively (O_CREAT|O_EXCL, mkdirat), modes are set with fchmod
//! on the open file, renames are renameat2 between names in one directory
//! handle. A link planted where swarm creates or reopens something is an
//! error (`StorageError::Link`), never a way to reach its target.
//!
//! rustix rather than raw `libc` calls: the same system calls, but with
//! owned file descriptors and no `unsafe` at each call site (paths as
//! C strings, errno); it is already built for `tempfile`, so it adds no
//! code to the build.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, CWD, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::meta::{ids, times};
use super::{StorageError, io_at};
use crate::manifest::Meta;

/// Intermediate components: enough to look names up in, nothing more.
const WALK: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// A directory to fsync and fchmod.
const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// A file: NONBLOCK so that a FIFO put in its place cannot hang the open
/// (it is then refused as not a regular file).
const FILE: OFlags = OFlags::NOFOLLOW
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// While a download is in progress everything it creates is the owner's only.
pub(super) const NEW_DIR_MODE: u32 = 0o700;
pub(super) const NEW_FILE_MODE: u32 = 0o600;

/// An open directory, and its path for messages.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Everything below is swarm's own (the partial tree): every directory
    /// and file reached from here is checked with `check_own` when opened.
    own: bool,
}

/// Identity of a file: (st_dev, st_ino).
pub type Ident = (u64, u64);

#[allow(clippy::unnecessary_cast)] // not u64 on every target
fn ident(st: &rfs::Stat) -> Ident {
    (st.st_dev as u64, st.st_ino as u64)
}

/// Refuses what swarm did not create itself: anything owned by another
/// user, or a regular file with more than one name (a hard link to a file
/// elsewhere, which writes and fchmod would reach).
fn check_own(fd: impl AsFd, shown: &Path) -> Result<rfs::Stat, StorageError> {
    let st = rfs::fstat(fd).map_err(|e| io_at(shown)(e.into()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != me {
        return Err(StorageError::Foreign {
            path: shown.to_path_buf(),
            why: format!(
                "is owned by another user (uid {}, swarm runs as {me})",
                st.st_uid
            ),
        });
    }
    if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_nlink != 1 {
        return Err(StorageError::Foreign {
            path: shown.to_path_buf(),
            why: format!("has {} hard links", st.st_nlink),
        });
    }
    Ok(st)
}

/// The root of a content: the file itself, or the top directory of a tree.
pub enum Root {
    File(File),
    Dir(Dir),
}

impl Root {
    /// Opens `path` (errors do not name it), a root the operator named: the path as written, but
    /// not a link at its end (`storage::build` refuses those too). A
    /// file is opened for writing too if `write`.
    pub fn open(path: &Path, write: bool) -> io::Result<Root> {
        let rw = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let fd = match rfs::openat(CWD, path, FILE | rw, Mode::empty()) {
            Err(Errno::ISDIR) => rfs::openat(CWD, path, FILE | OFlags::RDONLY, Mode::empty()),
            r => r,
        }?;
        match file_type(&fd)? {
            FileType::RegularFile => Ok(Root::File(File::from(fd))),
            FileType::Directory => Ok(Root::Dir(Dir {
                fd,
                path: path.to_path_buf(),
                own: false,
            })),
            _ => Err(io::Error::other("not a regular file or directory")),
        }
    }

    pub fn try_clone(&self) -> io::Result<Root> {
        Ok(match self {
            Root::File(f) => Root::File(f.try_clone()?),
            Root::Dir(d) => Root::Dir(d.try_clone()?),
        })
    }

    /// (st_dev, st_ino) of the open root.
    pub fn ident(&self) -> io::Result<Ident> {
        let st = match self {
            Root::File(f) => rfs::fstat(f)?,
            Root::Dir(d) => rfs::fstat(&d.fd)?,
        };
        Ok(ident(&st))
    }

    /// The same root, no longer checked as swarm's own (the finished copy,
    /// which the operator may hard-link or chown as they like).
    pub fn released(self) -> Root {
        match self {
            Root::Dir(mut d) => {
                d.own = false;
                Root::Dir(d)
            }
            f => f,
        }
    }
}

impl Dir {
    /// Opens a directory the operator named (DEST_DIR), following links
    /// in the path as written: that choice is the operator's.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rfs::openat(CWD, path, flags, Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
            own: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            own: self.own,
        })
    }

    /// `rel` ('/'-separated plain names) below this directory, for messages.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// Calls `f(parent, leaf, shown)` with the directory that holds the
    /// last component of `rel`, reached without following any link.
    fn at_parent<T>(
        &self,
        rel: &str,
        f: impl FnOnce(BorrowedFd<'_>, &str, PathBuf) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut comps: Vec<&str> = rel.split('/').collect();
        let leaf = comps.pop().unwrap_or_default();
        let mut cur: Option<OwnedFd> = None;
        let mut shown = self.path.clone();
        for c in comps {
            shown.push(c);
            let at = cur.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
            let next = rfs::openat(at, c, WALK, Mode::empty())
                .map_err(|e| classify(at, c, &shown, e, "directory"))?;
            if self.own {
                check_own(&next, &shown)?;
            }
            cur = Some(next);
        }
        let at = cur.as_ref().map_or(self.fd.as_fd(), |d| d.as_fd());
        f(at, leaf, shown.join(leaf))
    }

    /// Opens the existing regular file `rel`.
    /// In swarm's own tree it must be swarm's (`check_own`).
    pub fn open_file(&self, rel: &str, write: bool) -> Result<File, StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            open_file_at(at, leaf, &shown, write, self.own)
        })
    }

    /// Creates the file `rel` (O_EXCL, mode 0600), or reopens it for
    /// reading and writing if it is already there as a regular file that
    /// swarm made (owned by this user, one link: `check_own`); a reopened
    /// file is set to mode 0600 again before anything else.
    pub fn create_file(&self, rel: &str) -> Result<File, StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            let flags = FILE | OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
            match rfs::openat(at, leaf, flags, Mode::from_raw_mode(NEW_FILE_MODE)) {
                Ok(fd) => Ok(File::from(fd)),
                Err(Errno::EXIST) => {
                    let f = open_file_at(at, leaf, &shown, true, true)?;
                    rfs::fchmod(&f, Mode::from_raw_mode(NEW_FILE_MODE))
                        .map_err(|e| io_at(&shown)(e.into()))?;
                    Ok(f)
                }
                Err(e) => Err(classify(at, leaf, &shown, e, "regular file")),
            }
        })
    }

    /// Opens the existing directory `rel`.
    pub fn open_dir(&self, rel: &str) -> Result<Dir, StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            open_dir_at(at, leaf, shown, self.own)
        })
    }

    /// Creates the directory `rel` (mode 0700), or reopens it if it is
    /// already there as a directory of this user's (set to 0700 again).
    /// Everything below the result is checked as swarm's own (`check_own`:
    /// swarm's effective uid, even for what was just created, else a name
    /// swapped between mkdirat and openat would be adopted; a file system
    /// that maps owners, such as NFS with root squashing or vfat mounted
    /// with another uid=, therefore cannot hold a partial tree).
    pub fn create_dir(&self, rel: &str) -> Result<Dir, StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            match rfs::mkdirat(at, leaf, Mode::from_raw_mode(NEW_DIR_MODE)) {
                Ok(()) => open_dir_at(at, leaf, shown, true),
                Err(Errno::EXIST) => {
                    let d = open_dir_at(at, leaf, shown, true)?;
                    rfs::fchmod(&d.fd, Mode::from_raw_mode(NEW_DIR_MODE))
                        .map_err(|e| io_at(&d.path)(e.into()))?;
                    Ok(d)
                }
                Err(e) => Err(classify(at, leaf, &shown, e, "directory")),
            }
        })
    }

    /// The names in this directory (not `.` nor `..`), read through the
    /// handle. A name that is not UTF-8 is given lossily (it is then in
    /// no manifest).
    pub fn names(&self) -> Result<Vec<String>, StorageError> {
        let err = |e: Errno| io_at(&self.path)(e.into());
        let mut d = rfs::Dir::read_from(&self.fd).map_err(err)?;
        let mut out = Vec::new();
        while let Some(e) = d.read() {
            let e = e.map_err(err)?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(String::from_utf8_lossy(n).into_owned());
            }
        }
        Ok(out)
    }

    /// (st_dev, st_ino) of `name` in this directory itself, not following
    /// a link; `None` if there is nothing by that name.
    pub fn ident_of(&self, name: &str) -> Result<Option<Ident>, StorageError> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(ident(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_at(&self.join(name))(e.into())),
        }
    }

    /// The type of `name` in this directory itself, not following a link;
    /// `None` if there is nothing by that name.
    pub fn kind(&self, name: &str) -> Result<Option<FileType>, StorageError> {
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_at(&self.join(name))(e.into())),
        }
    }

    /// Renames `from` to `to`, both in this directory, never replacing what
    /// is at `to` (a link there is kept, not followed): `Exists` instead.
    pub fn rename_noreplace(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let r = rfs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE);
        match r {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => Err(StorageError::Exists(self.join(to))),
            // file systems without RENAME_NOREPLACE: check, then rename
            // (rename never follows a link at either name)
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                if self.kind(to)?.is_some() {
                    return Err(StorageError::Exists(self.join(to)));
                }
                rfs::renameat(&self.fd, from, &self.fd, to)
                    .map_err(|e| io_at(&self.join(to))(e.into()))
            }
            Err(e) => Err(io_at(&self.join(to))(e.into())),
        }
    }

    /// Swaps the names `a` and `b` in one step. `Ok(false)` where the file
    /// system cannot.
    pub fn exchange(&self, a: &str, b: &str) -> Result<bool, StorageError> {
        match rfs::renameat_with(&self.fd, a, &self.fd, b, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            Err(Errno::INVAL) | Err(Errno::NOSYS) => Ok(false),
            Err(e) => Err(io_at(&self.join(b))(e.into())),
        }
    }

    /// Removes `name` from this directory if it is still the file or
    /// directory `expect` (a link there is removed itself); a directory
    /// with everything in it, walked through handles (openat with
    /// O_NOFOLLOW|O_DIRECTORY, unlinkat), never by path and never through a
    /// link or into another file system. Something else at `name` (put
    /// there by another user since `expect` was seen) is left alone:
    /// `StorageError::Replaced`.
    pub fn remove_exact(&self, name: &str, expect: Ident) -> Result<(), StorageError> {
        let shown = self.join(name);
        let err = |e: Errno| io_at(&shown)(e.into());
        let st = match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        if ident(&st) != expect {
            return Err(StorageError::Replaced(shown));
        }
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return rfs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(err);
        }
        let fd = rfs::openat(&self.fd, name, DIR, Mode::empty())
            .map_err(|e| classify(self.fd(), name, &shown, e, "directory"))?;
        if ident(&rfs::fstat(&fd).map_err(err)?) != expect {
            return Err(StorageError::Replaced(shown));
        }
        remove_below(&fd, &shown, expect.0)?;
        rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(err)
    }

    /// Creates the symbolic link `rel` with content `target` (written as
    /// given, never resolved). Something already at `rel` is an error.
    pub fn symlink(&self, rel: &str, target: &str) -> Result<(), StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            rfs::symlinkat(target, at, leaf).map_err(|e| match e {
                Errno::EXIST => StorageError::Replaced(shown),
                e => io_at(&shown)(e.into()),
            })
        })
    }

    /// Makes `rel` another name of the existing file `target` (linkat
    /// without AT_SYMLINK_FOLLOW: a link at `target` would be linked
    /// itself, never its target; both names are reached without following
    /// links).
    pub fn hard_link(&self, target: &str, rel: &str) -> Result<(), StorageError> {
        self.at_parent(target, |old_at, old_leaf, _| {
            self.at_parent(rel, |at, leaf, shown| {
                rfs::linkat(old_at, old_leaf, at, leaf, AtFlags::empty()).map_err(|e| match e {
                    Errno::EXIST => StorageError::Replaced(shown),
                    e => io_at(&shown)(e.into()),
                })
            })
        })
    }

    /// Removes `rel` if it is anything but a directory (a link swarm made
    /// in an earlier run, before it was interrupted); nothing there is
    /// fine. A directory there is `NotKind`.
    pub fn remove_non_dir(&self, rel: &str) -> Result<(), StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            match rfs::statat(at, leaf, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(io_at(&shown)(e.into())),
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    Err(StorageError::NotKind {
                        path: shown,
                        want: "link",
                    })
                }
                Ok(_) => {
                    rfs::unlinkat(at, leaf, AtFlags::empty()).map_err(|e| io_at(&shown)(e.into()))
                }
            }
        })
    }

    /// Owner (when `owners`) and mtime of the link `rel` itself.
    pub fn set_link_meta(&self, rel: &str, meta: &Meta, owners: bool) -> Result<(), StorageError> {
        self.at_parent(rel, |at, leaf, shown| {
            let err = |e: Errno| io_at(&shown)(e.into());
            if owners {
                let (uid, gid) = ids(meta);
                rfs::chownat(at, leaf, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err)?;
            }
            rfs::utimensat(at, leaf, &times(meta), AtFlags::SYMLINK_NOFOLLOW).map_err(err)
        })
    }

    /// `reclaim` of the file or directory `rel`, opened without following
    /// a link and without the ownership check (a failed finish may have
    /// given it to another owner already); its parents must be swarm's,
    /// so call this for parents first.
    pub fn reclaim(&self, rel: &str) {
        let _ = self.at_parent(rel, |at, leaf, _| {
            if let Ok(fd) = rfs::openat(
                at,
                leaf,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) && let Ok(st) = rfs::fstat(&fd)
            {
                let flags = match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => DIR,
                    FileType::RegularFile => FILE | OFlags::RDONLY,
                    _ => return Ok(()),
                };
                if let Ok(fd) = rfs::openat(at, leaf, flags, Mode::empty()) {
                    super::meta::reclaim(fd);
                }
            }
            Ok(())
        });
    }

    /// fsync of the directory: names created or renamed in it are durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        rfs::fsync(&self.fd).map_err(|e| io_at(&self.path)(e.into()))
    }
}

fn open_file_at(
    at: BorrowedFd<'_>,
    leaf: &str,
    shown: &Path,
    write: bool,
    own: bool,
) -> Result<File, StorageError> {
    let flags = FILE | if write { OFlags::RDWR } else { OFlags::RDONLY };
    let fd = rfs::openat(at, leaf, flags, Mode::empty())
        .map_err(|e| classify(at, leaf, shown, e, "regular file"))?;
    match file_type(&fd).map_err(io_at(shown))? {
        FileType::RegularFile => {
            if own {
                check_own(&fd, shown)?;
            }
            Ok(File::from(fd))
        }
        _ => Err(StorageError::NotKind {
            path: shown.to_path_buf(),
            want: "regular file",
        }),
    }
}

fn open_dir_at(
    at: BorrowedFd<'_>,
    leaf: &str,
    shown: PathBuf,
    own: bool,
) -> Result<Dir, StorageError> {
    match rfs::openat(at, leaf, DIR, Mode::empty()) {
        Ok(fd) => {
            if own {
                check_own(&fd, &shown)?;
            }
            Ok(Dir {
                fd,
                path: shown,
                own,
            })
        }
        Err(e) => Err(classify(at, leaf, &shown, e, "directory")),
    }
}

/// Why opening `leaf` without following links failed: a link (ELOOP, or
/// ENOTDIR where a directory was asked for and a link is there), something
/// else of the wrong kind, or an I/O error.
fn classify(
    at: BorrowedFd<'_>,
    leaf: &str,
    shown: &Path,
    e: Errno,
    want: &'static str,
) -> StorageError {
    let link = || {
        rfs::statat(at, leaf, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    };
    match e {
        Errno::LOOP => StorageError::Link(shown.to_path_buf()),
        Errno::NOTDIR | Errno::ISDIR | Errno::NXIO if link() => {
            StorageError::Link(shown.to_path_buf())
        }
        Errno::NOTDIR | Errno::ISDIR | Errno::NXIO => StorageError::NotKind {
            path: shown.to_path_buf(),
            want,
        },
        e => io_at(shown)(e.into()),
    }
}

/// Removes everything in the open directory `dir`, depth first.
fn remove_below(dir: &OwnedFd, shown: &Path, dev: u64) -> Result<(), StorageError> {
    use std::ffi::{CString, OsStr};
    use std::os::unix::ffi::OsStrExt;
    let err = |p: &Path, e: Errno| io_at(p)(e.into());
    // entries can be removed from a read-only directory of the old copy
    // only once it is writable again (fails harmlessly if not ours)
    let _ = rfs::fchmod(dir, Mode::from_raw_mode(NEW_DIR_MODE));
    let mut names: Vec<CString> = Vec::new();
    let mut rd = rfs::Dir::read_from(dir).map_err(|e| err(shown, e))?;
    while let Some(e) = rd.read() {
        let e = e.map_err(|e| err(shown, e))?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            names.push(n.to_owned());
        }
    }
    for n in names {
        let p = shown.join(OsStr::from_bytes(n.to_bytes()));
        let st = match rfs::statat(dir, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(err(&p, e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rfs::openat(dir, n.as_c_str(), DIR, Mode::empty())
                .map_err(|_| StorageError::Replaced(p.clone()))?;
            let sst = rfs::fstat(&sub).map_err(|e| err(&p, e))?;
            if ident(&sst) != ident(&st) || ident(&sst).0 != dev {
                return Err(StorageError::Replaced(p));
            }
            remove_below(&sub, &p, dev)?;
            rfs::unlinkat(dir, n.as_c_str(), AtFlags::REMOVEDIR).map_err(|e| err(&p, e))?;
        } else {
            match rfs::unlinkat(dir, n.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(err(&p, e)),
            }
        }
    }
    Ok(())
}

pub(super) fn file_type(fd: impl AsFd) -> io::Result<FileType> {
    Ok(FileType::from_raw_mode(rfs::fstat(fd)?.st_mode))
}

/// The same file opened again with other flags (O_DIRECT for writes), by
/// its descriptor rather than its name: `/proc/self/fd/N` names this very
/// file whatever happened to its path. `None` where that fails (no /proc,
/// a file system that refuses the flags).
pub fn reopen(file: &File, flags: OFlags) -> Option<File> {
    let name = format!("/proc/self/fd/{}", file.as_raw_fd());
    let fd = rfs::openat(CWD, name.as_str(), flags | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let (a, b) = (rfs::fstat(file).ok()?, rfs::fstat(&fd).ok()?);
    (a.st_dev == b.st_dev && a.st_ino == b.st_ino).then(|| File::from(fd))
}

/// Bytes allocated to an open file (for the free-space check on resume).
pub fn allocated(file: &File) -> u64 {
    rfs::fstat(file).map_or(0, |st| st.st_blocks as u64 * 512)
}

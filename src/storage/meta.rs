//! The metadata a finished copy gets (owners, modes, mtimes: what
//! `rsync -a` keeps), applied through open handles as the last step
//! before the rename, and taken back if that step fails half-way.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Mode};
use rustix::io::Errno;

use super::at::{NEW_DIR_MODE, NEW_FILE_MODE, file_type};
use super::{StorageError, io_at};
use crate::manifest::Meta;

/// What of the manifest's metadata a join applies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keep {
    /// Owners and groups (the join runs as root, without --no-owner).
    pub owners: bool,
    /// setuid and setgid bits of files (--keep-setuid, with `owners`).
    pub setuid: bool,
}

impl Keep {
    /// The mode to set: a file keeps setuid and setgid only when asked
    /// (`--keep-setuid`) and its owner is the manifest's; a directory
    /// keeps setgid (it only passes the group on) and sticky.
    pub(super) fn mode(&self, meta: &Meta, dir: bool) -> u32 {
        let mode = meta.mode & crate::manifest::MODE_MASK;
        match dir {
            true => mode & !0o4000,
            false if self.owners && self.setuid => mode,
            false => mode & !0o6000,
        }
    }
}

/// What the manifest says of an open file or directory, applied as the
/// last step before the rename: owner and group if `keep.owners`, then
/// the mode (`Keep::mode`; chown may clear setuid, so after it); the
/// mtime. Not durable yet: see `Partial::finish`, which syncs once after.
pub fn finish_meta(
    fd: impl AsFd,
    meta: &Meta,
    keep: Keep,
    shown: &Path,
) -> Result<(), StorageError> {
    let err = |e: Errno| io_at(shown)(e.into());
    let dir = file_type(&fd).map_err(io_at(shown))? == FileType::Directory;
    if keep.owners {
        let (uid, gid) = ids(meta);
        rfs::fchown(&fd, Some(uid), Some(gid)).map_err(err)?;
    }
    rfs::fchmod(&fd, Mode::from_raw_mode(keep.mode(meta, dir))).map_err(err)?;
    rfs::futimens(&fd, &times(meta)).map_err(err)
}

/// Gives an open file or directory of the partial data back to swarm's
/// user with the mode it had while in progress (a finish that failed
/// half-way, so that the same command resumes). Best effort.
pub fn reclaim(fd: impl AsFd) {
    let Ok(st) = rfs::fstat(&fd) else { return };
    let mode = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => NEW_DIR_MODE,
        FileType::RegularFile if st.st_nlink == 1 => NEW_FILE_MODE,
        _ => return,
    };
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if st.st_uid != uid {
        let _ = rfs::fchown(
            &fd,
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
        );
    }
    let _ = rfs::fchmod(&fd, Mode::from_raw_mode(mode));
}

/// The numeric ids of `meta` (never `!0`: the manifest decoder refuses it).
pub(super) fn ids(meta: &Meta) -> (rfs::Uid, rfs::Gid) {
    (rfs::Uid::from_raw(meta.uid), rfs::Gid::from_raw(meta.gid))
}

/// The mtime of `meta`; the access time is left as is.
pub(super) fn times(meta: &Meta) -> rfs::Timestamps {
    rfs::Timestamps {
        last_access: rfs::Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: rfs::Timespec {
            tv_sec: meta.mtime.secs,
            tv_nsec: i64::from(meta.mtime.nanos) as _,
        },
    }
}

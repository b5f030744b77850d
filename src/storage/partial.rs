//! The download target. Data goes to `DEST/.NAME.swarm-ID.partial` (a file or
//! a directory tree), each piece written at its offset. The partial name
//! carries the manifest id, so a restarted join finds its own data and never
//! mixes two images. When every piece is verified: fsync, set the modes, and
//! rename atomically to `DEST/NAME`.
//!
//! Every name is created or reopened through `at::Dir`, relative to the
//! open DEST_DIR and partial root: exclusive creation, O_NOFOLLOW, fchmod on
//! the open file, renameat2 within DEST_DIR. A link planted at the partial
//! name or anywhere in the partial tree stops the join with
//! `StorageError::Link` (exit 5); a link at the final name is kept and
//! reported as an existing destination, or with --force replaced itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bitvec::prelude::*;
use rayon::prelude::*;

use super::at::{self, Dir, Root as Handle};
use super::meta::{self, Keep};
use super::{Content, StorageError, io_at};
use crate::manifest::{EntryKind, Manifest, Root};

pub struct Partial {
    pub final_path: PathBuf,
    pub partial_path: PathBuf,
    dest: Dir,
    final_name: String,
    partial_name: String,
    /// The partial file, or the partial tree's root, as opened (or
    /// created) here: later steps work from this handle, not the name.
    root: Handle,
    /// (st_dev, st_ino) of `root`: the names are checked against it
    /// around the final rename.
    ident: at::Ident,
    /// True when partial data from an earlier run was found.
    pub resumed: bool,
}

impl Partial {
    /// Checks the destination, free space, and creates (or reopens) the
    /// partial data with every file at its final size.
    pub fn prepare(dest_dir: &Path, m: &Manifest, force: bool) -> Result<Partial, StorageError> {
        let dest = Dir::open(dest_dir).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                StorageError::NoDestDir(dest_dir.to_path_buf())
            }
            _ => io_at(dest_dir)(e),
        })?;
        let final_name = m.name.clone();
        let final_path = dest_dir.join(&final_name);
        if dest.kind(&final_name)?.is_some() && !force {
            return Err(StorageError::Exists(final_path));
        }
        let partial_name = format!(".{}.swarm-{}.partial", m.name, m.id());
        let partial_path = dest_dir.join(&partial_name);
        let resumed = dest.kind(&partial_name)?.is_some();
        if !resumed {
            check_space(&dest, m.total_size())?;
        }
        let mut allocated = 0;
        let root = match &m.root {
            Root::File { size, .. } => {
                let f = dest.create_file(&partial_name)?;
                allocated += size_file(&f, *size, &partial_path)?;
                Handle::File(f)
            }
            Root::Dir { entries, .. } => {
                let root = dest.create_dir(&partial_name)?;
                if resumed {
                    let known: HashSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
                    refuse_extra(&root, "", &known)?;
                    // links are made at the end (`finish`): those left by
                    // an interrupted run go first, before a hard-linked
                    // file would be refused as not swarm's own
                    for e in entries.iter().filter(|e| e.kind.is_link()) {
                        match root.remove_non_dir(&e.path) {
                            Err(StorageError::Io { source, .. })
                                if source.kind() == std::io::ErrorKind::NotFound => {}
                            r => r?,
                        }
                    }
                }
                for e in entries {
                    match e.kind {
                        EntryKind::Dir => drop(root.create_dir(&e.path)?),
                        EntryKind::File { size } => {
                            let f = root.create_file(&e.path)?;
                            allocated += size_file(&f, size, &root.join(&e.path))?;
                        }
                        EntryKind::Symlink { .. } | EntryKind::HardLink { .. } => {}
                    }
                }
                Handle::Dir(root)
            }
        };
        if resumed {
            check_space(&dest, m.total_size().saturating_sub(allocated))?;
        }
        let ident = root.ident().map_err(io_at(&partial_path))?;
        Ok(Partial {
            final_path,
            partial_path,
            dest,
            final_name,
            partial_name,
            root,
            ident,
            resumed,
        })
    }

    /// Opens the partial data for piece reads and writes.
    pub fn content(&self, m: &Manifest) -> Result<Content, StorageError> {
        let root = self.root.try_clone().map_err(io_at(&self.partial_path))?;
        Content::from_root(root, m.files(), true).map_err(io_at(&self.partial_path))
    }

    /// Hashes every piece already on disk; returns the ones that verify.
    /// Pieces that were never written fail their hash and are fetched again.
    /// One that fails and holds anything but zeros is punched back to
    /// zeros: a basis may have written blocks of the old version there
    /// ahead (`Basis::placed`), and later writes skip zero blocks, so an
    /// unverified piece must read as zeros again.
    pub fn scan(&self, m: &Manifest, content: &Content) -> Result<BitVec, StorageError> {
        let ok: Vec<bool> = (0..m.piece_count())
            .into_par_iter()
            .map_init(Vec::new, |buf, i| {
                let (offset, len) = m.piece_range(i);
                buf.resize(len as usize, 0);
                content
                    .read_at(offset, buf)
                    .map_err(io_at(&self.partial_path))?;
                let ok = m.verify_piece(i, buf);
                if !ok && buf.iter().any(|&b| b != 0) {
                    content
                        .punch(offset, len)
                        .map_err(io_at(&self.partial_path))?;
                }
                Ok(ok)
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(ok.into_iter().collect())
    }

    /// Makes the tree what the manifest says and puts it in place: owners
    /// (`keep`), modes and mtimes of files; then the links; then
    /// directories, children before parents (so a read-only directory is
    /// closed, and its mtime set, only after everything inside it is
    /// done); all of it made durable (`sync`); then the rename, and an
    /// fsync of DEST_DIR. A failure before
    /// the rename gives everything back to swarm's user with its
    /// in-progress mode (`revert`), so the same command resumes. Returns
    /// the final path, the handle on what now lies there, and the old
    /// destination that --force replaced, still to remove: the new copy is
    /// durable and in place before that (removing a large tree took 1.7 s
    /// of the finish when 8 hosts removed theirs at once).
    pub fn finish(
        self,
        m: &Manifest,
        force: bool,
        keep: Keep,
    ) -> Result<(PathBuf, Handle, Option<Replaced>), StorageError> {
        let t = std::time::Instant::now();
        let applied = self.apply(m, keep);
        let t_apply = t.elapsed();
        if let Err(e) = applied.and_then(|()| self.sync()) {
            self.revert(m);
            return Err(e);
        }
        let t_sync = t.elapsed();
        match self.rename(m, force) {
            Ok(old) => {
                tracing::debug!(
                    "finished: metadata {:?}, durable {:?}, in place {:?}",
                    t_apply,
                    t_sync - t_apply,
                    t.elapsed() - t_sync
                );
                let replaced = old.map(|(name, old)| Replaced {
                    dest: self.dest,
                    name,
                    old,
                });
                Ok((self.final_path, self.root.released(), replaced))
            }
            Err((e, committed)) => {
                if !committed {
                    self.revert(m);
                }
                Err(e)
            }
        }
    }

    fn apply(&self, m: &Manifest, keep: Keep) -> Result<(), StorageError> {
        let shown = &self.partial_path;
        match (&self.root, &m.root) {
            (Handle::File(f), Root::File { meta, .. }) => meta::finish_meta(f, meta, keep, shown),
            (Handle::Dir(d), Root::Dir { meta, entries }) => {
                for e in entries {
                    if let EntryKind::File { .. } = e.kind {
                        let f = d.open_file(&e.path, false)?;
                        meta::finish_meta(f, &e.meta, keep, &d.join(&e.path))?;
                    }
                }
                for e in entries {
                    match &e.kind {
                        EntryKind::Symlink { target } => {
                            d.symlink(&e.path, target)?;
                            d.set_link_meta(&e.path, &e.meta, keep.owners)?;
                        }
                        EntryKind::HardLink { target } => {
                            let target = &entries[*target as usize].path;
                            d.hard_link(target, &e.path)?;
                        }
                        _ => {}
                    }
                }
                for e in entries.iter().rev() {
                    if e.kind == EntryKind::Dir {
                        let p = d.join(&e.path);
                        meta::finish_meta(d.open_dir(&e.path)?.fd(), &e.meta, keep, &p)?;
                    }
                }
                meta::finish_meta(d.fd(), meta, keep, shown)
            }
            _ => Err(StorageError::NotKind {
                path: shown.clone(),
                want: "file or directory as the manifest says",
            }),
        }
    }

    /// Makes the copy durable before it takes the final name: an fsync
    /// of a file; a syncfs for a tree. One fsync per file cost a journal
    /// commit each, serially: 423 files of a 256 MiB tree took 1.9 s
    /// (5 ms each, whatever the file's size), a datadir of thousands of
    /// files would take many seconds. syncfs flushes the whole filesystem
    /// in one pass (also others' dirty data there, which was due anyway).
    fn sync(&self) -> Result<(), StorageError> {
        let shown = &self.partial_path;
        let r = match &self.root {
            Handle::File(f) => rustix::fs::fsync(f),
            Handle::Dir(d) => rustix::fs::syncfs(d.fd()),
        };
        r.map_err(|e| io_at(shown)(e.into()))
    }

    /// Undoes `apply` as far as it got, best effort: the root and the
    /// directories (parents first) and the files back to this user and
    /// their in-progress modes, the links removed.
    fn revert(&self, m: &Manifest) {
        match (&self.root, &m.root) {
            (Handle::File(f), _) => meta::reclaim(f),
            (Handle::Dir(d), Root::Dir { entries, .. }) => {
                meta::reclaim(d.fd());
                for e in entries.iter().filter(|e| e.kind == EntryKind::Dir) {
                    d.reclaim(&e.path);
                }
                for e in entries.iter().filter(|e| e.kind.is_link()) {
                    let _ = d.remove_non_dir(&e.path);
                }
                for e in entries {
                    if let EntryKind::File { .. } = e.kind {
                        d.reclaim(&e.path);
                    }
                }
            }
            _ => {}
        }
    }

    /// The rename into place. On error, whether the copy was already at
    /// the final name (then it is not reverted).
    /// Returns the name the replaced destination is left at, to remove.
    fn rename(
        &self,
        m: &Manifest,
        force: bool,
    ) -> Result<Option<(String, at::Ident)>, (StorageError, bool)> {
        let early = |e| (e, false);
        let late = |e| (e, true);
        let dest = &self.dest;
        // The names are checked against the handle the data was written
        // through: another user who can write DEST_DIR may have moved the
        // partial away and put their own file at its name.
        let is_ours = |name: &str| -> Result<(), StorageError> {
            match dest.ident_of(name)? {
                Some(id) if id == self.ident => Ok(()),
                _ => Err(StorageError::Replaced(dest.join(name))),
            }
        };
        is_ours(&self.partial_name).map_err(early)?;
        let old = if force {
            dest.ident_of(&self.final_name).map_err(early)?
        } else {
            None
        };
        let replaced = if let Some(old) = old {
            // The old destination (a link there included: only the link
            // moves) goes to the partial name in the same step as the new
            // copy takes its place, then out of the way of a later join's
            // partial copy, and is removed from there once this copy is
            // reported complete: only if it is still what was at the final
            // name (see `remove_old`).
            let moved = format!(".{}.swarm-replaced-{:016x}", m.name, rand::random::<u64>());
            if dest
                .exchange(&self.partial_name, &self.final_name)
                .map_err(early)?
            {
                is_ours(&self.final_name).map_err(late)?;
                match dest.rename_noreplace(&self.partial_name, &moved) {
                    Ok(()) => Some((moved, old)),
                    Err(_) => Some((self.partial_name.clone(), old)),
                }
            } else {
                dest.rename_noreplace(&self.final_name, &moved)
                    .map_err(early)?;
                dest.rename_noreplace(&self.partial_name, &self.final_name)
                    .map_err(early)?;
                is_ours(&self.final_name).map_err(late)?;
                Some((moved, old))
            }
        } else {
            dest.rename_noreplace(&self.partial_name, &self.final_name)
                .map_err(early)?;
            is_ours(&self.final_name).map_err(late)?;
            None
        };
        dest.sync().map_err(late)?;
        Ok(replaced)
    }
}

/// The old destination that --force replaced, at a temporary name beside
/// the new copy until `remove`d.
pub struct Replaced {
    dest: Dir,
    name: String,
    old: at::Ident,
}

impl Replaced {
    pub fn remove(self) {
        remove_old(&self.dest, &self.name, self.old);
    }
}

/// Removes the old destination that --force replaced, now at `name`, if
/// it is still the very file or directory that was at the final name
/// (`old`); removal walks handles and never follows a link. Otherwise
/// (someone renamed something else into `name` meanwhile) nothing is
/// removed and a warning names what is left: the new copy is in place
/// either way.
fn remove_old(dest: &Dir, name: &str, old: at::Ident) {
    if let Err(e) = dest.remove_exact(name, old) {
        tracing::warn!(
            "the replaced destination was not removed: {e}; {} is left as it is",
            crate::text::path(&dest.join(name))
        );
    }
}

/// On resume: every name in the partial tree, at every level, must be one
/// the manifest has (a hostile seed's earlier tree or another local user
/// may have planted more). Only directories the manifest lists are
/// entered; what else is wrong with an entry is for `create_*` to find.
fn refuse_extra(dir: &Dir, prefix: &str, known: &HashSet<&str>) -> Result<(), StorageError> {
    for n in dir.names()? {
        let rel = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        if !known.contains(rel.as_str()) {
            return Err(StorageError::Extra(dir.join(&n)));
        }
        if dir.kind(&n)? == Some(rustix::fs::FileType::Directory) {
            refuse_extra(&dir.open_dir(&n)?, &rel, known)?;
        }
    }
    Ok(())
}

/// Sets an open partial file (owner-only while in progress) to its final
/// size, sparse; returns the bytes it already has allocated. Free space is
/// checked up front; blocks are not reserved with fallocate, because
/// writing into unwritten extents made ext4 writes 4x slower here (1 GiB:
/// 1.57 s against 0.38 s with dd), and a disk that fills up anyway fails
/// the write with a clear error and keeps the partial data.
fn size_file(f: &std::fs::File, size: u64, shown: &Path) -> Result<u64, StorageError> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_at(shown))?;
    if f.metadata().map_err(io_at(shown))?.len() != size {
        f.set_len(size).map_err(io_at(shown))?;
    }
    Ok(at::allocated(f))
}

fn check_space(dest: &Dir, need: u64) -> Result<(), StorageError> {
    let avail = fs4::available_space(dest.path()).map_err(io_at(dest.path()))?;
    if need > avail {
        return Err(StorageError::NoSpace {
            dir: dest.path().to_path_buf(),
            need,
            avail,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A resumed copy: a verified piece is kept; one that does not verify
    /// reads as zeros afterwards, whatever was written there (bytes a
    /// basis put there ahead), so later writes that skip zero blocks
    /// cannot leave old bytes in the copy.
    #[test]
    fn a_resume_scan_punches_pieces_that_do_not_verify() {
        const P: usize = 64 << 10;
        let d = tempfile::tempdir().unwrap();
        let new: Vec<u8> = (0..2 * P).map(|i| (i % 253) as u8 + 1).collect();
        let root = crate::manifest::Root::File {
            size: new.len() as u64,
            meta: crate::manifest::Meta::mode(0o644),
        };
        let hashes = new.chunks(P).map(|c| *blake3::hash(c).as_bytes()).collect();
        let m = Manifest::new("img".into(), root, P as u32, hashes);
        let first = Partial::prepare(d.path(), &m, false).unwrap();
        let content = first.content(&m).unwrap();
        content.write_at(0, &new[..P]).unwrap();
        content.write_at(P as u64, &vec![7u8; P]).unwrap();
        drop((content, first));
        let again = Partial::prepare(d.path(), &m, false).unwrap();
        assert!(again.resumed);
        let content = again.content(&m).unwrap();
        let have = again.scan(&m, &content).unwrap();
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), [0]);
        let mut got = vec![1u8; 2 * P];
        content.read_at(0, &mut got).unwrap();
        assert_eq!(&got[..P], &new[..P]);
        assert!(got[P..].iter().all(|&b| b == 0));
    }

    #[test]
    fn rename_never_replaces_nor_follows() {
        let d = tempfile::tempdir().unwrap();
        let dir = Dir::open(d.path()).unwrap();
        fs::write(d.path().join("a"), b"new").unwrap();
        fs::write(d.path().join("b"), b"precious").unwrap();
        assert!(matches!(
            dir.rename_noreplace("a", "b"),
            Err(StorageError::Exists(_))
        ));
        assert_eq!(fs::read(d.path().join("b")).unwrap(), b"precious");
        symlink(d.path().join("b"), d.path().join("c")).unwrap();
        assert!(matches!(
            dir.rename_noreplace("a", "c"),
            Err(StorageError::Exists(_))
        ));
        fs::remove_file(d.path().join("c")).unwrap();
        dir.rename_noreplace("a", "c").unwrap();
        assert_eq!(fs::read(d.path().join("c")).unwrap(), b"new");
        assert_eq!(fs::read(d.path().join("b")).unwrap(), b"precious");
    }

    #[test]
    fn links_inside_a_tree_are_refused_at_every_level() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("f"), b"precious").unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        symlink(outside.path(), d.path().join("linkdir")).unwrap();
        symlink(outside.path().join("f"), d.path().join("sub/linkfile")).unwrap();
        let dir = Dir::open(d.path()).unwrap();
        for r in [
            dir.create_file("linkdir/f").map(drop),
            dir.open_file("linkdir/f", true).map(drop),
            dir.create_dir("linkdir").map(drop),
            dir.open_dir("linkdir").map(drop),
            dir.create_file("sub/linkfile").map(drop),
            dir.open_file("sub/linkfile", false).map(drop),
        ] {
            assert!(matches!(r, Err(StorageError::Link(_))), "{:?}", r.err());
        }
        assert_eq!(fs::read(outside.path().join("f")).unwrap(), b"precious");
        // a FIFO where a file is expected is refused at once, not opened
        let fifo = d.path().join("sub/fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            dir.open_file("sub/fifo", false),
            Err(StorageError::NotKind { .. })
        ));
    }

    /// A partial file with a second name elsewhere (a hard link) is
    /// neither opened for writing nor chmod-ed nor truncated; neither is
    /// one below a partial tree.
    #[test]
    fn hard_linked_partial_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).unwrap();
        fs::create_dir(d.path().join("p")).unwrap();
        fs::hard_link(&victim, d.path().join("p/f")).unwrap();
        fs::hard_link(&victim, d.path().join("top")).unwrap();
        let dir = Dir::open(d.path()).unwrap();
        let e = dir.create_file("top").err().unwrap();
        assert!(e.to_string().contains("has 3 hard links"), "{e}");
        let p = dir.create_dir("p").unwrap();
        for r in [
            p.create_file("f").map(drop),
            p.open_file("f", true).map(drop),
        ] {
            assert!(
                matches!(r, Err(StorageError::Foreign { .. })),
                "{:?}",
                r.err()
            );
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let mode = fs::metadata(&victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    /// --force's removal of the old copy goes through handles and only
    /// removes what was at the final name: a link inside it is removed,
    /// not followed; a directory renamed in at its name meanwhile is left
    /// alone.
    #[test]
    fn remove_exact_removes_only_what_was_seen_and_follows_no_link() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"precious").unwrap();
        let dir = Dir::open(d.path()).unwrap();
        let old = d.path().join("old");
        fs::create_dir_all(old.join("a/b")).unwrap();
        fs::write(old.join("a/b/f"), b"x").unwrap();
        symlink(outside.path(), old.join("a/link")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(old.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        let id = dir.ident_of("old").unwrap().unwrap();
        // someone renames the old copy away and puts another tree there
        fs::rename(&old, d.path().join("elsewhere")).unwrap();
        fs::create_dir_all(old.join("theirs")).unwrap();
        fs::write(old.join("theirs/g"), b"not swarm's").unwrap();
        assert!(matches!(
            dir.remove_exact("old", id),
            Err(StorageError::Replaced(_))
        ));
        assert_eq!(fs::read(old.join("theirs/g")).unwrap(), b"not swarm's");
        // the very tree that was seen is removed, and nothing through the link
        fs::remove_dir_all(&old).unwrap();
        fs::rename(d.path().join("elsewhere"), &old).unwrap();
        dir.remove_exact("old", id).unwrap();
        assert!(fs::symlink_metadata(&old).is_err());
        assert_eq!(fs::read(outside.path().join("keep")).unwrap(), b"precious");
        // a plain file and a link at the name: the name itself goes
        fs::write(d.path().join("f"), b"y").unwrap();
        let id = dir.ident_of("f").unwrap().unwrap();
        dir.remove_exact("f", id).unwrap();
        symlink(outside.path(), d.path().join("l")).unwrap();
        let id = dir.ident_of("l").unwrap().unwrap();
        dir.remove_exact("l", id).unwrap();
        assert!(outside.path().join("keep").exists());
    }
}

#[cfg(test)]
#[path = "partial_finish_tests.rs"]
mod finish_tests;

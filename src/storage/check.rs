//! Is a copy on disk the image a manifest describes? What `swarm verify`
//! answers, and what lets a join that finds the identical copy already at
//! its destination end at once ("already up to date").
//!
//! The tree first (names, kinds, sizes, link targets, and the metadata a
//! join with the same `Keep` would have set): cheap, and the usual answer
//! for last night's copy, whose sizes and mtimes differ. Only a tree that
//! matches is read and hashed, piece by piece on all cores.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use super::BuildError;
use super::meta::Keep;
use crate::manifest::{Entry, EntryKind, Manifest, Meta, Root};
use crate::text::Escaped;

/// Whose the copy's entries must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owners {
    /// The image's numeric owners and groups (a join as root keeps them).
    Image,
    /// This user's (uid): what a join without owners makes. Another
    /// user's identical copy is not this join's.
    User(u32),
    /// Not compared (`verify` without root, or with --no-owner).
    Any,
}

/// The first way a copy differs from the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// An entry (`""`: the root itself) and what is wrong with it.
    Entry { path: String, what: String },
    /// The content of a piece: its index and the first entry it holds.
    Piece { index: usize, path: String },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p: &str| {
            if p.is_empty() {
                "the root".to_string()
            } else {
                Escaped(p).to_string()
            }
        };
        match self {
            Difference::Entry { path, what } => write!(f, "{}: {what}", name(path)),
            Difference::Piece { index, path } => {
                write!(f, "{}: content differs (piece {index})", name(path))
            }
        }
    }
}

/// Compares the copy at `path` with `m`: `None` if it is the image (the
/// tree as `m` says with `keep`'s metadata, every piece's hash `m`'s).
/// `hashed` counts the bytes read. Errors: the copy cannot be walked or
/// read (a missing path among them).
pub fn compare(
    m: &Manifest,
    path: &Path,
    keep: Keep,
    owners: Owners,
    hashed: &AtomicU64,
) -> Result<Option<Difference>, BuildError> {
    let (_, found) = super::scan(path)?;
    if let Some(d) = compare_tree(&m.root, &found, keep, owners) {
        return Ok(Some(d));
    }
    let hashes = super::hash_pieces(path, m, hashed)?;
    Ok(hashes
        .iter()
        .zip(&m.hashes)
        .position(|(a, b)| a != b)
        .map(|index| Difference::Piece {
            index,
            path: m
                .piece_files(index)
                .first()
                .map(|f| f.path.clone())
                .unwrap_or_default(),
        }))
}

/// The first difference between the tree `want` and the tree `found` (as
/// `manifest::scan` gives it), in entry order; content is not read.
pub fn compare_tree(want: &Root, found: &Root, keep: Keep, owners: Owners) -> Option<Difference> {
    let entry = |path: &str, what: String| {
        Some(Difference::Entry {
            path: path.to_string(),
            what,
        })
    };
    match (want, found) {
        (Root::File { size, meta }, Root::File { size: got, meta: m }) => {
            if size != got {
                return entry("", format!("{got} bytes, the image has {size}"));
            }
            compare_meta(meta, m, keep, owners, false).and_then(|w| entry("", w))
        }
        (
            Root::Dir { meta, entries },
            Root::Dir {
                meta: m,
                entries: got,
            },
        ) => {
            let by_path: HashMap<&str, &Entry> = got.iter().map(|e| (e.path.as_str(), e)).collect();
            for e in entries {
                let Some(g) = by_path.get(e.path.as_str()) else {
                    return entry(&e.path, "missing".into());
                };
                if let Some(what) = compare_entry(e, g, entries, got, keep, owners) {
                    return entry(&e.path, what);
                }
            }
            if entries.len() != got.len() {
                let want: std::collections::HashSet<&str> =
                    entries.iter().map(|e| e.path.as_str()).collect();
                if let Some(extra) = got.iter().find(|e| !want.contains(e.path.as_str())) {
                    return entry(&extra.path, "not in the image".into());
                }
            }
            compare_meta(meta, m, keep, owners, true).and_then(|w| entry("", w))
        }
        (Root::File { .. }, Root::Dir { .. }) => {
            entry("", "a directory, the image is a file".into())
        }
        (Root::Dir { .. }, Root::File { .. }) => {
            entry("", "a file, the image is a directory".into())
        }
    }
}

fn kind_name(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::File { .. } => "a file",
        EntryKind::Dir => "a directory",
        EntryKind::Symlink { .. } => "a symbolic link",
        EntryKind::HardLink { .. } => "a hard link",
    }
}

fn compare_entry(
    want: &Entry,
    got: &Entry,
    want_all: &[Entry],
    got_all: &[Entry],
    keep: Keep,
    owners: Owners,
) -> Option<String> {
    match (&want.kind, &got.kind) {
        (EntryKind::File { size }, EntryKind::File { size: s }) => {
            if size != s {
                return Some(format!("{s} bytes, the image has {size}"));
            }
            compare_meta(&want.meta, &got.meta, keep, owners, false)
        }
        (EntryKind::Dir, EntryKind::Dir) => compare_meta(&want.meta, &got.meta, keep, owners, true),
        (EntryKind::Symlink { target }, EntryKind::Symlink { target: t }) => {
            if target != t {
                return Some(format!(
                    "links to {}, the image to {}",
                    Escaped(t),
                    Escaped(target)
                ));
            }
            // a link's mode is always 0777; owners and mtime as set
            let (w, g) = (want.meta, got.meta);
            compare_meta(
                &Meta { mode: 0, ..w },
                &Meta { mode: 0, ..g },
                keep,
                owners,
                false,
            )
        }
        (EntryKind::HardLink { target }, EntryKind::HardLink { target: t }) => {
            let name = |all: &[Entry], i: u32| all.get(i as usize).map(|e| e.path.clone());
            let (w, g) = (name(want_all, *target), name(got_all, *t));
            (w != g).then(|| {
                format!(
                    "a hard link to {}, the image's to {}",
                    Escaped(g.as_deref().unwrap_or("?")),
                    Escaped(w.as_deref().unwrap_or("?"))
                )
            })
        }
        (w, g) => Some(format!("{}, the image has {}", kind_name(g), kind_name(w))),
    }
}

/// What a join with `keep` sets (the mode as `Keep::mode` makes it;
/// the owners as `owners` says; the mtime) against what is there.
fn compare_meta(want: &Meta, got: &Meta, keep: Keep, owners: Owners, dir: bool) -> Option<String> {
    let mode = keep.mode(want, dir);
    if got.mode != mode {
        return Some(format!("mode {:04o}, the image has {mode:04o}", got.mode));
    }
    match owners {
        Owners::Image if (got.uid, got.gid) != (want.uid, want.gid) => {
            return Some(format!(
                "owner {}:{}, the image has {}:{}",
                got.uid, got.gid, want.uid, want.gid
            ));
        }
        Owners::User(uid) if got.uid != uid => {
            return Some(format!(
                "owner {}, not this user ({uid}), whose a join without owners makes it",
                got.uid
            ));
        }
        _ => {}
    }
    if got.mtime != want.mtime {
        return Some(format!(
            "modified at {}.{:09}, the image at {}.{:09}",
            got.mtime.secs, got.mtime.nanos, want.mtime.secs, want.mtime.nanos
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::build;
    use std::os::unix::fs::PermissionsExt;

    fn keep() -> Keep {
        Keep::default()
    }

    fn tree(dir: &Path) -> std::path::PathBuf {
        let t = dir.join("t");
        std::fs::create_dir_all(t.join("sub")).unwrap();
        std::fs::write(t.join("a"), vec![1u8; 70_000]).unwrap();
        std::fs::write(t.join("sub/b"), b"small").unwrap();
        std::os::unix::fs::symlink("../a", t.join("sub/l")).unwrap();
        t
    }

    #[test]
    fn the_same_tree_has_no_difference_and_each_change_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path());
        let m = build(&t, Some(4096)).unwrap();
        let n = AtomicU64::new(0);
        assert_eq!(compare(&m, &t, keep(), Owners::Any, &n).unwrap(), None);
        assert!(n.load(std::sync::atomic::Ordering::Relaxed) >= 70_005);

        // one byte in place: the same tree, a piece differs
        let mut data = std::fs::read(t.join("a")).unwrap();
        data[66_000] = 9;
        let mtime = std::fs::metadata(t.join("a")).unwrap().modified().unwrap();
        std::fs::write(t.join("a"), &data).unwrap();
        std::fs::File::options()
            .write(true)
            .open(t.join("a"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let d = compare(&m, &t, keep(), Owners::Any, &n).unwrap().unwrap();
        assert_eq!(
            d,
            Difference::Piece {
                index: 66_000 / 4096,
                path: "a".into()
            }
        );
        assert!(
            d.to_string().contains("a: content differs (piece 16)"),
            "{d}"
        );
    }

    /// Sets the mtime of `dir` back to `to` (a name made or removed in a
    /// directory changes its mtime, which `compare_tree` names first).
    fn set_mtime(dir: &Path, to: std::time::SystemTime) {
        std::fs::File::open(dir).unwrap().set_modified(to).unwrap();
    }

    #[test]
    fn tree_differences_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path());
        let sub = std::fs::metadata(t.join("sub"))
            .unwrap()
            .modified()
            .unwrap();
        let (_, want) = crate::storage::scan(&t).unwrap();
        let check = |what: &str| {
            set_mtime(&t.join("sub"), sub);
            let (_, got) = crate::storage::scan(&t).unwrap();
            let d = compare_tree(&want, &got, keep(), Owners::Any).expect("a difference");
            assert!(d.to_string().starts_with(what), "{d} is not {what:?}");
        };
        std::fs::set_permissions(t.join("sub/b"), std::fs::Permissions::from_mode(0o600)).unwrap();
        check("sub/b: mode 0600, the image has 0644");
        std::fs::write(t.join("sub/b"), b"longer now").unwrap();
        check("sub/b: 10 bytes, the image has 5");
        std::fs::remove_file(t.join("sub/b")).unwrap();
        check("sub/b: missing");
        std::fs::create_dir(t.join("sub/b")).unwrap();
        check("sub/b: a directory, the image has a file");
        std::fs::remove_dir(t.join("sub/b")).unwrap();
        std::fs::write(t.join("sub/b"), b"small").unwrap();
        std::fs::set_permissions(t.join("sub/b"), std::fs::Permissions::from_mode(0o644)).unwrap();
        check("sub/b: modified at");
        std::fs::remove_file(t.join("sub/l")).unwrap();
        std::os::unix::fs::symlink("../x", t.join("sub/l")).unwrap();
        std::fs::remove_file(t.join("sub/b")).unwrap();
        check("sub/b: missing");
        let (_, got) = crate::storage::scan(&t).unwrap();
        if let (Root::Dir { entries: w, .. }, Root::Dir { entries: g, .. }) = (&want, &got) {
            let (w, g) = (&w[3], &g[2]);
            assert_eq!((w.path.as_str(), g.path.as_str()), ("sub/l", "sub/l"));
            let d = compare_entry(w, g, &[], &[], keep(), Owners::Any).unwrap();
            assert_eq!(d, "links to ../x, the image to ../a");
        }
    }

    #[test]
    fn an_entry_not_in_the_image_and_owners_only_when_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = tree(dir.path());
        let (_, want) = crate::storage::scan(&t).unwrap();
        std::fs::write(t.join("sub/zz"), b"").unwrap();
        set_mtime(
            &t.join("sub"),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1),
        );
        let (_, mut got) = crate::storage::scan(&t).unwrap();
        let d = compare_tree(&want, &got, keep(), Owners::Any).unwrap();
        // the directory's mtime changed with the new name: named first
        assert!(d.to_string().starts_with("sub: modified at 1.0"), "{d}");
        if let (Root::Dir { entries: w, .. }, Root::Dir { entries: g, .. }) = (&want, &mut got) {
            let s = g.iter_mut().find(|e| e.path == "sub").unwrap();
            s.meta.mtime = w.iter().find(|e| e.path == "sub").unwrap().meta.mtime;
            g.iter_mut().find(|e| e.path == "a").unwrap().meta.uid += 1;
        }
        let d = compare_tree(&want, &got, keep(), Owners::Any).unwrap();
        assert_eq!(d.to_string(), "sub/zz: not in the image");
        // owners count only when a join would have set them
        if let Root::Dir { entries: g, .. } = &mut got {
            g.retain(|e| e.path != "sub/zz");
        }
        assert_eq!(compare_tree(&want, &got, keep(), Owners::Any), None);
        let kept = Keep {
            owners: true,
            setuid: false,
        };
        let d = compare_tree(&want, &got, kept, Owners::Image).unwrap();
        assert!(d.to_string().starts_with("a: owner "), "{d}");
        // a join without owners makes everything its user's: another
        // user's copy is not up to date for it
        // (`want` was scanned from files this test made)
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(compare_tree(&want, &want, keep(), Owners::User(me)), None);
        let d = compare_tree(&want, &want, keep(), Owners::User(me + 1)).unwrap();
        assert!(d.to_string().starts_with("a: owner "), "{d}");
    }
}

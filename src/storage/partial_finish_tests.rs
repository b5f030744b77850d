//! A finish that fails before the rename leaves partial data the same
//! command resumes from (found by review: the links and the owners it
//! had set made the partial "not swarm's own"), and a seed cannot make a
//! setuid-root file on a joiner that did not ask for it.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::manifest::{Entry, Meta};

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A read-only file of 5000 bytes of 7 owned by `uid`, and a hard link
/// to it, in a read-only directory.
fn tree(uid: u32) -> Manifest {
    let file = Entry {
        path: "f".into(),
        kind: EntryKind::File { size: 5000 },
        meta: Meta {
            mode: 0o444,
            uid,
            gid: uid,
            ..Meta::default()
        },
    };
    let link = Entry {
        path: "g".into(),
        kind: EntryKind::HardLink { target: 0 },
        meta: Meta::default(),
    };
    let root = Root::Dir {
        meta: Meta {
            mode: 0o555,
            uid,
            gid: uid,
            ..Meta::default()
        },
        entries: vec![file, link],
    };
    let n = Manifest::pieces_for(&root, 4096).unwrap() as usize;
    let mut m = Manifest::new("img".into(), root, 4096, vec![[0; 32]; n]);
    m.hashes = (0..n)
        .map(|i| *blake3::hash(&vec![7u8; m.piece_range(i).1 as usize]).as_bytes())
        .collect();
    m
}

/// Writes the data, lets the rename fail (something appeared at the
/// final name), prepares again and finishes.
fn resume_after_failed_finish(m: &Manifest, keep: Keep) {
    let d = tempfile::tempdir().unwrap();
    let p = Partial::prepare(d.path(), m, false).unwrap();
    p.content(m).unwrap().write_at(0, &[7u8; 5000]).unwrap();
    fs::write(d.path().join("img"), b"someone else's").unwrap();
    assert!(matches!(
        p.finish(m, false, keep),
        Err(StorageError::Exists(_))
    ));
    fs::remove_file(d.path().join("img")).unwrap();
    let p = Partial::prepare(d.path(), m, false).unwrap();
    let c = p.content(m).unwrap();
    assert_eq!(p.scan(m, &c).unwrap().count_ones(), m.piece_count());
    p.finish(m, false, keep).unwrap();
    assert_eq!(fs::read(d.path().join("img/g")).unwrap(), vec![7u8; 5000]);
}

#[test]
fn a_finish_failed_after_its_links_and_modes_resumes() {
    // SAFETY: no preconditions.
    resume_after_failed_finish(&tree(unsafe { libc::geteuid() }), Keep::default());
}

#[test]
fn a_finish_failed_after_its_chowns_resumes() {
    if !is_root() {
        eprintln!("SKIPPED: chown needs root");
        return;
    }
    let keep = Keep {
        owners: true,
        setuid: false,
    };
    resume_after_failed_finish(&tree(26), keep);
}

#[test]
fn setuid_only_with_keep_setuid_and_owners() {
    let root = is_root();
    let cases = [
        (Keep::default(), 0o755),
        (
            Keep {
                owners: root,
                setuid: false,
            },
            0o755,
        ),
        (
            Keep {
                owners: false,
                setuid: true,
            },
            0o755,
        ),
        (
            Keep {
                owners: root,
                setuid: true,
            },
            if root { 0o4755 } else { 0o755 },
        ),
    ];
    for (keep, want) in cases {
        let d = tempfile::tempdir().unwrap();
        let meta = Meta {
            mode: 0o4755,
            ..Meta::default()
        };
        let m = Manifest::new(
            "x".into(),
            Root::File { size: 10, meta },
            4096,
            vec![*blake3::hash(&[1u8; 10]).as_bytes()],
        );
        let p = Partial::prepare(d.path(), &m, false).unwrap();
        p.content(&m).unwrap().write_at(0, &[1u8; 10]).unwrap();
        assert!(p.finish(&m, false, keep).unwrap().2.is_none());
        let md = fs::metadata(d.path().join("x")).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, want, "{keep:?}");
    }
}

//! Faithful trees (issue 22): what `rsync -a` keeps survives a swarm copy:
//! symbolic links as links (never followed, targets as written), hard
//! links as one file, owners and groups (numeric, as root; `--no-owner`
//! skips them), modes with setgid/setuid/sticky, mtimes of files,
//! directories and links; holes stay holes and are never sent; devices,
//! sockets and FIFOs are refused by name.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use crate::util::*;

/// Sets the mtime of `p` itself (a link is not followed).
fn set_mtime(p: &Path, secs: i64, nanos: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let t = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    ];
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A datadir as PostgreSQL leaves it: pg_wal a link out of the tree, a
/// tablespace link, relation files with a hard link, a setgid directory,
/// owners other than the user running swarm (when root), mtimes with
/// nanoseconds, set last (children before parents).
fn datadir(root: &Path) {
    fs::create_dir_all(root.join("base/16384")).unwrap();
    fs::create_dir_all(root.join("pg_tblspc")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    random_file(&root.join("base/16384/1259"), 300_000, 1);
    random_file(&root.join("base/16384/2608"), 70_001, 2);
    fs::hard_link(
        root.join("base/16384/1259"),
        root.join("base/1259.hardlink"),
    )
    .unwrap();
    fs::write(root.join("PG_VERSION"), b"16\n").unwrap();
    fs::write(root.join("postmaster.opts"), b"").unwrap();
    symlink("/nonexistent/wal", root.join("pg_wal")).unwrap();
    symlink("../base/16384", root.join("pg_tblspc/16385")).unwrap();
    symlink("PG_VERSION", root.join("version.link")).unwrap();
    fs::set_permissions(root.join("base"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("PG_VERSION"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(
        root.join("base/16384/2608"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if is_root() {
        for p in [
            "base",
            "base/16384",
            "base/16384/2608",
            "pg_wal",
            "PG_VERSION",
        ] {
            lchown(&root.join(p), 4321, 4322);
        }
        // chown clears setuid: set it again
        fs::set_permissions(root.join("PG_VERSION"), fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let mut t = 1_700_000_000;
    for p in [
        "base/16384/1259",
        "base/16384/2608",
        "PG_VERSION",
        "postmaster.opts",
        "pg_wal",
        "pg_tblspc/16385",
        "version.link",
        "base/16384",
        "base",
        "pg_tblspc",
        "empty",
        "",
    ] {
        t += 86_400;
        set_mtime(&root.join(p), t, 123_456_789);
    }
}

#[test]
fn faithful_tree_keeps_links_owners_modes_mtimes_and_hard_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pgdata");
    datadir(&root);
    let mut seed = seed(dir.path(), &root, &["--piece-size", "64KiB"]);
    let mut a = join(
        dir.path(),
        &seed,
        "a",
        &["--exit-on-complete", "--keep-setuid"],
    );
    let mut b = join(
        dir.path(),
        &seed,
        "b",
        &["--exit-on-complete", "--no-owner"],
    );
    let mut c = join(dir.path(), &seed, "c", &["--exit-on-complete"]);
    a.wait_ok(LIMIT);
    b.wait_ok(LIMIT);
    c.wait_ok(LIMIT);
    seed.proc.kill9();
    let copy = dir.path().join("a/pgdata");
    assert_same(&root, &copy);
    // the links are links, their targets as written, nothing followed
    assert_eq!(
        fs::read_link(copy.join("pg_wal")).unwrap(),
        Path::new("/nonexistent/wal")
    );
    assert!(
        fs::symlink_metadata(copy.join("pg_tblspc/16385"))
            .unwrap()
            .is_symlink()
    );
    let (f, h) = (
        fs::metadata(copy.join("base/16384/1259")).unwrap(),
        fs::metadata(copy.join("base/1259.hardlink")).unwrap(),
    );
    assert_eq!((f.ino(), f.nlink()), (h.ino(), 2), "one file, two names");
    // only the hard-linked file's content once
    let r = report(&dir.path().join("a.json"));
    assert_eq!(r["bytes_total"], 300_000 + 70_001 + 3);

    // --no-owner: owned by who ran the join, the files' setuid and
    // setgid dropped (a directory keeps setgid), the rest as the seed has
    // it; as root without --keep-setuid: the owners, no setuid
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    for (copy, owners) in [("b", false), ("c", true)] {
        let plain = dir.path().join(copy).join("pgdata");
        for (p, kept) in [
            ("", 0o1777),
            ("base", 0o3777),
            ("base/16384/2608", 0o1777),
            ("PG_VERSION", 0o1777),
        ] {
            let m = fs::symlink_metadata(plain.join(p)).unwrap();
            let want = fs::symlink_metadata(root.join(p)).unwrap();
            let owner = if owners && is_root() { want.uid() } else { me };
            assert_eq!(m.uid(), owner, "{copy}: owner of {p:?}");
            assert_eq!(
                m.mode() & 0o7777,
                want.mode() & kept,
                "{copy}: mode of {p:?}"
            );
            assert_eq!(
                (m.mtime(), m.mtime_nsec()),
                (want.mtime(), want.mtime_nsec())
            );
        }
    }
}

/// Holes are never sent and stay holes: a 32 MiB file with 1 MiB of data.
#[test]
fn faithful_sparse_file_keeps_its_holes_and_sends_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sparse.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(&img).unwrap();
        f.set_len(32 << 20).unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        let mut data = vec![0u8; 1 << 20];
        rand::RngExt::fill(&mut rand::rng(), &mut data[..]);
        f.write_all(&data).unwrap();
    }
    let mut seed = seed(dir.path(), &img, &["--piece-size", "1MiB"]);
    let mut a = join(dir.path(), &seed, "a", &["--exit-on-complete"]);
    a.wait_ok(LIMIT);
    seed.proc.kill9();
    let copy = dir.path().join("a/sparse.img");
    assert_same(&img, &copy);
    let allocated = fs::metadata(&copy).unwrap().blocks() * 512;
    assert!(
        allocated <= 2 << 20,
        "{allocated} bytes allocated for 1 MiB of data"
    );
    let r = report(&dir.path().join("a.json"));
    let got = r["bytes_received"].as_u64().unwrap();
    assert!(
        got <= (1 << 20) + (64 << 10),
        "{got} bytes received for 1 MiB of data"
    );
}

/// Blocks of zeros inside pieces of data are not sent either, to a joiner
/// without a basis too: every other 16 KiB block of a 4 MiB file is zeros.
#[test]
fn faithful_zero_blocks_inside_pieces_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("pages.img");
    let mut data = vec![0u8; 4 << 20];
    for block in data.chunks_mut(16 << 10).step_by(2) {
        rand::RngExt::fill(&mut rand::rng(), block);
    }
    fs::write(&img, &data).unwrap();
    let mut seed = seed(dir.path(), &img, &["--piece-size", "1MiB"]);
    let mut a = join(dir.path(), &seed, "a", &["--exit-on-complete"]);
    a.wait_ok(LIMIT);
    seed.proc.kill9();
    assert_same(&img, &dir.path().join("a/pages.img"));
    let r = report(&dir.path().join("a.json"));
    let got = r["bytes_received"].as_u64().unwrap();
    assert!(
        got <= (2 << 20) + 64,
        "{got} bytes received for 2 MiB of data in 4 MiB"
    );
    assert!(got >= 2 << 20);
}

/// Devices, sockets and FIFOs cannot be carried: the seed stops before
/// hashing, exit 5, naming the path and what it is.
#[test]
fn faithful_special_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("a"), b"x").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.join("sub/.s.PGSQL.5432")).unwrap();
    let out = run(
        {
            let mut c = swarm();
            c.arg("seed").arg(&root).args(["--listen", "127.0.0.1:0"]);
            c
        },
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("sub/.s.PGSQL.5432") && err.contains("a socket"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    if is_root() {
        let dev = root.join("null");
        let c = CString::new(dev.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; makes a character device like /dev/null.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
        assert_eq!(r, 0);
        fs::remove_file(root.join("sub/.s.PGSQL.5432")).unwrap();
        let mut c = swarm();
        c.arg("seed").arg(&root).args(["--listen", "127.0.0.1:0"]);
        let out = run(c, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{err}");
        assert!(
            err.contains("null") && err.contains("a character device"),
            "{err}"
        );
    }
}

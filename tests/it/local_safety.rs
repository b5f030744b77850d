//! What swarm creates on the local disk never goes through a link planted
//! there (issue 21): the partial file, the partial tree and everything in
//! it, the final name, the ticket file and report and their temporaries.
//! A planted link is an error with exit 5 and a message naming it, or
//! (the final name with --force, the ticket file itself) the link is
//! replaced and its target never touched.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use swarm::ticket::Ticket;

use crate::util::{self, *};

/// A file outside every directory swarm writes in, with content and mode
/// that must survive.
struct Victim {
    path: PathBuf,
}

impl Victim {
    fn file(dir: &Path, name: &str) -> Victim {
        let path = dir.join(name);
        fs::write(&path, b"precious, not to be overwritten").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        Victim { path }
    }

    fn dir(dir: &Path, name: &str) -> Victim {
        let path = dir.join(name);
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o750)).unwrap();
        Victim { path }
    }

    fn assert_untouched(&self, what: &str) {
        let meta = fs::symlink_metadata(&self.path).unwrap();
        if meta.is_dir() {
            assert_eq!(meta.permissions().mode() & 0o777, 0o750, "{what}: mode");
            let n = fs::read_dir(&self.path).unwrap().count();
            assert_eq!(n, 0, "{what}: entries appeared in the link's target");
        } else {
            assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{what}: mode");
            assert_eq!(
                fs::read(&self.path).unwrap(),
                b"precious, not to be overwritten",
                "{what}: content"
            );
        }
    }
}

fn join_cmd(seed: &Seed, dest: &Path, extra: &[&str]) -> Command {
    let mut c = swarm();
    c.args(["join", &seed.ticket])
        .arg(dest)
        .args(["--listen", "127.0.0.1:0", "--exit-on-complete"])
        .args(extra);
    c
}

/// Runs a join that must fail with exit 5 and a message about `needle`.
fn join_fails(seed: &Seed, dest: &Path, needle: &str, what: &str) {
    let out = run(join_cmd(seed, dest, &[]), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{what}: stderr: {err}");
    assert!(err.contains(needle), "{what}: stderr: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn partial_name(seed: &Seed, name: &str) -> String {
    let id = Ticket::parse(&seed.ticket).unwrap().manifest_id;
    format!(".{name}.swarm-{id}.partial")
}

#[test]
fn local_safety_links_planted_for_a_file_image_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("src")).unwrap();
    let image = root.join("src/img.bin");
    random_file(&image, 300_000, 21);
    let seed = seed(root, &image, &[]);
    let partial = partial_name(&seed, "img.bin");

    // the partial file is a link
    let dest = root.join("d1");
    fs::create_dir(&dest).unwrap();
    let v = Victim::file(root, "victim1");
    symlink(&v.path, dest.join(&partial)).unwrap();
    join_fails(&seed, &dest, "is a symbolic link", "partial file");
    v.assert_untouched("partial file link");
    assert!(!dest.join("img.bin").exists());

    // a dangling link there is no way to create the file either
    let dest = root.join("d2");
    fs::create_dir(&dest).unwrap();
    let absent = root.join("would-be-created");
    symlink(&absent, dest.join(&partial)).unwrap();
    join_fails(&seed, &dest, "is a symbolic link", "dangling partial");
    assert!(
        fs::symlink_metadata(&absent).is_err(),
        "created through a dangling link"
    );

    // the final name is a link: kept, reported as an existing destination
    let dest = root.join("d3");
    fs::create_dir(&dest).unwrap();
    let v = Victim::file(root, "victim3");
    symlink(&v.path, dest.join("img.bin")).unwrap();
    join_fails(&seed, &dest, "already exists", "final name");
    v.assert_untouched("final name link");

    // with --force the link itself is replaced by the copy
    let out = run(join_cmd(&seed, &dest, &["--force"]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "--force: {err}");
    v.assert_untouched("final name link with --force");
    assert!(
        fs::symlink_metadata(dest.join("img.bin"))
            .unwrap()
            .is_file()
    );
    assert_same(&image, &dest.join("img.bin"));
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        1,
        "leftovers in DEST_DIR"
    );
}

#[test]
fn local_safety_links_planted_in_a_partial_tree_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tree = root.join("src/tree");
    fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    random_file(&tree.join("top.bin"), 100_000, 1);
    random_file(&tree.join("sub/f1"), 70_000, 2);
    random_file(&tree.join("sub/deeper/f2"), 50_000, 3);
    fs::set_permissions(tree.join("sub/f1"), fs::Permissions::from_mode(0o755)).unwrap();
    let seed = seed(root, &tree, &[]);
    let partial = partial_name(&seed, "tree");
    // A partial tree as an earlier, interrupted run leaves it.
    let planted_tree = |dest: &Path| {
        let p = dest.join(&partial);
        fs::create_dir_all(p.join("sub/deeper")).unwrap();
        p
    };

    // the partial tree's root is a link to a directory
    let dest = root.join("d1");
    fs::create_dir(&dest).unwrap();
    let v = Victim::dir(root, "victim-root");
    symlink(&v.path, dest.join(&partial)).unwrap();
    join_fails(&seed, &dest, "is a symbolic link", "partial root");
    v.assert_untouched("partial root link");

    // a directory inside the partial tree is a link
    let dest = root.join("d2");
    fs::create_dir(&dest).unwrap();
    let p = planted_tree(&dest);
    fs::remove_dir(p.join("sub/deeper")).unwrap();
    let v = Victim::dir(root, "victim-sub");
    symlink(&v.path, p.join("sub/deeper")).unwrap();
    join_fails(
        &seed,
        &dest,
        "sub/deeper is a symbolic link",
        "subdirectory",
    );
    v.assert_untouched("subdirectory link");

    // the same one level up: the walk to sub/deeper/f2 must not pass it
    let dest = root.join("d3");
    fs::create_dir(&dest).unwrap();
    let p = dest.join(&partial);
    fs::create_dir(&p).unwrap();
    let v = Victim::dir(root, "victim-sub2");
    symlink(&v.path, p.join("sub")).unwrap();
    join_fails(&seed, &dest, "is a symbolic link", "first-level directory");
    v.assert_untouched("first-level directory link");

    // a file inside the partial tree is a link
    let dest = root.join("d4");
    fs::create_dir(&dest).unwrap();
    let p = planted_tree(&dest);
    let v = Victim::file(root, "victim-file");
    symlink(&v.path, p.join("sub/f1")).unwrap();
    join_fails(
        &seed,
        &dest,
        "sub/f1 is a symbolic link",
        "file in the tree",
    );
    v.assert_untouched("file link in the tree");

    // the partial root is a plain file where a tree belongs
    let dest = root.join("d5");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join(&partial), b"x").unwrap();
    join_fails(&seed, &dest, "is not a directory", "file as partial root");

    // the final name is a link to a directory: with --force the link is
    // replaced, the directory it points to gets nothing
    let dest = root.join("d6");
    fs::create_dir(&dest).unwrap();
    let v = Victim::dir(root, "victim-final");
    symlink(&v.path, dest.join("tree")).unwrap();
    join_fails(&seed, &dest, "already exists", "final name");
    let out = run(join_cmd(&seed, &dest, &["--force"]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "--force: {err}");
    v.assert_untouched("final name link with --force");
    assert_same(&tree, &dest.join("tree"));
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        1,
        "leftovers in DEST_DIR"
    );

    // and a legitimate partial tree from an earlier run is resumed
    let dest = root.join("d7");
    fs::create_dir(&dest).unwrap();
    planted_tree(&dest);
    let out = run(join_cmd(&seed, &dest, &[]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "resume: {err}");
    assert_same(&tree, &dest.join("tree"));
}

/// Waits until `path` is a regular file (not merely something that
/// exists: a planted link to an existing file does).
fn wait_regular(p: &mut Proc, path: &Path) {
    let t = std::time::Instant::now();
    while !fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        if let Some(st) = p.child.try_wait().unwrap() {
            panic!("{} exited with {st}: {}", p.name, p.log_text());
        }
        assert!(t.elapsed() < LIMIT, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn local_safety_ticket_and_report_files_are_0600_and_never_written_through_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = root.join("img.bin");
    random_file(&image, 100_000, 5);
    let out = root.join("out");
    fs::create_dir(&out).unwrap();
    let (ticket, report) = (out.join("ticket"), out.join("seed.json"));
    // links at the files themselves and at the temporaries' old fixed names
    let victims: Vec<Victim> = ["ticket", "ticket.tmp-swarm", "seed.json", "seed.tmp-swarm"]
        .iter()
        .map(|name| {
            let v = Victim::file(root, &format!("victim-{name}"));
            symlink(&v.path, out.join(name)).unwrap();
            v
        })
        .collect();
    let stdout = root.join("seed.stdout");
    let mut cmd = swarm();
    cmd.arg("seed")
        .arg(&image)
        .args(["--listen", "127.0.0.1:0", "--ticket-file"])
        .arg(&ticket)
        .arg("--report")
        .arg(&report)
        .stdout(fs::File::create(&stdout).unwrap());
    let log = root.join("seed.log");
    let mut seed = Proc {
        child: cmd.stderr(fs::File::create(&log).unwrap()).spawn().unwrap(),
        name: "seed".into(),
        log,
    };
    wait_regular(&mut seed, &ticket);
    assert_eq!(mode(&ticket), 0o600, "ticket file mode");
    let line = fs::read_to_string(&ticket).unwrap();
    let t = Ticket::parse(&line).expect("the ticket file holds the ticket");
    seed.signal(libc::SIGTERM);
    assert_eq!(seed.wait(LIMIT).code(), Some(0), "{}", seed.log_text());
    assert_eq!(mode(&report), 0o600, "report mode");
    assert!(fs::symlink_metadata(&report).unwrap().is_file());
    assert_eq!(util::report(&report)["interrupted"], true);
    for v in &victims {
        v.assert_untouched(&v.path.display().to_string());
    }
    // The secret is in the file only: neither in stderr nor on stdout
    // (both are logs under a service manager or in a pod).
    let secret = t.encode();
    let body = secret.trim_start_matches("swarm1:");
    let printed = fs::read_to_string(&stdout).unwrap();
    assert!(
        !printed.contains(body),
        "stdout holds the ticket: {printed}"
    );
    let err = seed.log_text();
    assert!(!err.contains(body), "stderr holds the ticket: {err}");
    assert!(err.contains("the ticket is in "), "{err}");
    // the stale links at the old temporary names are left alone, nothing else
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["seed.json", "seed.tmp-swarm", "ticket", "ticket.tmp-swarm"]
    );
}

#[test]
fn local_safety_an_unwritable_ticket_file_fails_at_once_before_hashing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = root.join("img.bin");
    random_file(&image, 100_000, 6);
    fs::write(root.join("plain-file"), b"x").unwrap();
    for (bad, needle) in [
        (root.join("no-such-dir/ticket"), "No such file or directory"),
        (root.join("plain-file/ticket"), "Not a directory"),
        (root.to_path_buf(), "is a directory"),
    ] {
        let report = root.join("r.json");
        let mut cmd = swarm();
        cmd.arg("seed")
            .arg(&image)
            .args(["--listen", "127.0.0.1:0", "--ticket-file"])
            .arg(&bad)
            .arg("--report")
            .arg(&report);
        let out = run(cmd, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{}: {err}", bad.display());
        assert!(err.contains("--ticket-file"), "{err}");
        assert!(err.contains(&bad.display().to_string()), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(out.stdout.is_empty(), "a ticket was printed");
        // it failed before the manifest was built: the report has none
        let r = util::report(&report);
        assert_eq!(r["exit_code"], 5);
        assert_eq!(r["ended"], "failed");
        assert_eq!(r["manifest_id"], "");
        assert!(r["error"].as_str().unwrap().contains("--ticket-file"));
    }
}

/// Makes `path` (and nothing below it) another user's, as if that user
/// had created it: the tests run as root, as CI does.
fn give_away(path: &Path) {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
}

/// Partial data that swarm did not make itself is never reused: a hard
/// link to a file elsewhere (writes, truncation and fchmod would reach
/// that file), or a file or directory owned by another user (who could
/// then change the verified copy). Each is exit 5 naming it; the foreign
/// file keeps its content and mode.
#[test]
fn local_safety_foreign_or_hard_linked_partial_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("src")).unwrap();
    let image = root.join("src/img.bin");
    random_file(&image, 300_000, 22);
    let seed = seed(root, &image, &[]);
    let partial = partial_name(&seed, "img.bin");

    // the partial file is a hard link to a file elsewhere
    let dest = root.join("d1");
    fs::create_dir(&dest).unwrap();
    let v = Victim::file(root, "victim1");
    fs::hard_link(&v.path, dest.join(&partial)).unwrap();
    join_fails(&seed, &dest, "has 2 hard links", "hard-linked partial");
    v.assert_untouched("hard-linked partial");
    assert!(!dest.join("img.bin").exists());

    // the partial file was made by another user
    let dest = root.join("d2");
    fs::create_dir(&dest).unwrap();
    let p = dest.join(&partial);
    fs::write(&p, b"theirs").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    give_away(&p);
    join_fails(&seed, &dest, "is owned by another user", "foreign partial");
    assert_eq!(fs::read(&p).unwrap(), b"theirs");
    assert_eq!(mode(&p), 0o666);
    assert!(!dest.join("img.bin").exists());

    // a partial file of this user's, left open to others, is 0600 again
    // before it is used, and the copy completes
    let dest = root.join("d3");
    fs::create_dir(&dest).unwrap();
    let p = dest.join(&partial);
    fs::write(&p, b"").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    let out = run(join_cmd(&seed, &dest, &[]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "own partial: {err}");
    assert_same(&image, &dest.join("img.bin"));
}

#[test]
fn local_safety_foreign_hard_linked_or_extra_entries_in_a_partial_tree_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tree = root.join("src/tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    random_file(&tree.join("README"), 50_000, 4);
    random_file(&tree.join("bin/tool"), 70_000, 5);
    let seed = seed(root, &tree, &[]);
    let partial = partial_name(&seed, "tree");
    let planted_tree = |dest: &Path| {
        fs::create_dir(dest).unwrap();
        let p = dest.join(&partial);
        fs::create_dir_all(p.join("bin")).unwrap();
        p
    };

    // the partial root is another user's
    let p = planted_tree(&root.join("d1"));
    give_away(&p);
    join_fails(&seed, &root.join("d1"), "is owned by another user", "root");

    // a directory inside it is
    let p = planted_tree(&root.join("d2"));
    give_away(&p.join("bin"));
    join_fails(
        &seed,
        &root.join("d2"),
        "bin is owned by another user",
        "dir",
    );

    // a file inside it is
    let p = planted_tree(&root.join("d3"));
    fs::write(p.join("bin/tool"), b"theirs").unwrap();
    give_away(&p.join("bin/tool"));
    join_fails(
        &seed,
        &root.join("d3"),
        "tool is owned by another user",
        "file",
    );
    assert_eq!(fs::read(p.join("bin/tool")).unwrap(), b"theirs");

    // a file inside it is a hard link to a file elsewhere
    let p = planted_tree(&root.join("d4"));
    let v = Victim::file(root, "victim4");
    fs::hard_link(&v.path, p.join("README")).unwrap();
    join_fails(&seed, &root.join("d4"), "README has 2 hard links", "link");
    v.assert_untouched("hard link in the tree");

    // an entry the manifest does not have (a hostile earlier seed's)
    let p = planted_tree(&root.join("d5"));
    fs::write(p.join("bin/evil"), b"#!/bin/sh\necho pwned\n").unwrap();
    join_fails(
        &seed,
        &root.join("d5"),
        "bin/evil is in the partial tree but not in the manifest",
        "extra",
    );
    let p = planted_tree(&root.join("d6"));
    fs::create_dir(p.join("extra")).unwrap();
    join_fails(
        &seed,
        &root.join("d6"),
        "extra is in the partial tree but not in the manifest",
        "extra dir",
    );
    assert!(!root.join("d5/tree").exists() && !root.join("d6/tree").exists());

    // this user's own partial tree, left open to others, is 0700 again and resumed
    let p = planted_tree(&root.join("d7"));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(p.join("bin"), fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(join_cmd(&seed, &root.join("d7"), &[]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "own partial tree: {err}");
    assert_same(&tree, &root.join("d7/tree"));
}

/// Another user who can write DEST_DIR (world-writable, not sticky) moves
/// the partial away while the join runs and puts their own file at its
/// name: the final rename checks the name against the handle the data was
/// written through, and stops with exit 5 instead of putting their file
/// in place.
#[test]
fn local_safety_a_partial_swapped_during_the_join_is_not_put_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("src")).unwrap();
    let image = root.join("src/img.bin");
    random_file(&image, 3 << 20, 23);
    let seed = seed(
        root,
        &image,
        &["--piece-size", "256KiB", "--upload-limit", "1MiB/s"],
    );
    let partial = partial_name(&seed, "img.bin");
    let dest = root.join("dest");
    fs::create_dir(&dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o777)).unwrap();
    let mut j = Proc::spawn(join_cmd(&seed, &dest, &[]), "join", root);
    wait_regular(&mut j, &dest.join(&partial));
    fs::rename(dest.join(&partial), dest.join("stolen")).unwrap();
    fs::write(dest.join(&partial), b"attacker content\n").unwrap();
    give_away(&dest.join(&partial));
    let st = j.wait(LIMIT);
    let log = j.log_text();
    assert_eq!(st.code(), Some(5), "{log}");
    assert!(
        log.contains("was moved or replaced by someone else"),
        "{log}"
    );
    assert!(
        !dest.join("img.bin").exists(),
        "the swapped file was put in place"
    );
    assert_eq!(
        fs::read(dest.join(&partial)).unwrap(),
        b"attacker content\n"
    );
}

/// A manifest whose root name is one of swarm's own temporary names (a
/// hostile seed naming its content `.NAME.swarm-ID.partial` to plant a
/// partial tree for another download) is refused by the join.
#[test]
fn local_safety_a_root_name_like_a_partial_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tree = root.join("src/.treeB.swarm-cae879ee5044b7e8.partial");
    fs::create_dir_all(tree.join("bin")).unwrap();
    random_file(&tree.join("bin/evil"), 1000, 6);
    let seed = seed(root, &tree, &[]);
    let dest = root.join("dest");
    fs::create_dir(&dest).unwrap();
    let out = run(join_cmd(&seed, &dest, &[]), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("looks like a temporary name of swarm's own"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "created in DEST_DIR"
    );
}

/// `swarm demo --dir DIR` follows no link planted in DIR: a link at a log
/// file is replaced (its target keeps its content and mode), a link at a
/// joiner's directory or at `src` stops the demo (exit 5) naming it, and
/// nothing is written into the link's target.
#[test]
fn local_safety_demo_dir_follows_no_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let demo = |d: &Path| {
        let mut c = swarm();
        c.args(["-q", "demo", "--peers", "1", "--size", "256KiB", "--dir"])
            .arg(d);
        run(c, LIMIT)
    };

    let d = root.join("demo1");
    fs::create_dir(&d).unwrap();
    let v = Victim::file(root, "victim-log");
    symlink(&v.path, d.join("seed.log")).unwrap();
    symlink(&v.path, d.join("peer1.log")).unwrap();
    let out = demo(&d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    v.assert_untouched("log link");
    assert!(fs::symlink_metadata(d.join("seed.log")).unwrap().is_file());

    for what in ["peer1", "src"] {
        let d = root.join(format!("demo-{what}"));
        fs::create_dir(&d).unwrap();
        let v = Victim::dir(root, &format!("victim-{what}"));
        symlink(&v.path, d.join(what)).unwrap();
        let out = demo(&d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{what}: {err}");
        assert!(
            err.contains(&format!("{what} is a symbolic link")),
            "{what}: {err}"
        );
        v.assert_untouched(what);
    }
}

//! Only what changed crosses the network (issue 22): a joiner with an
//! older copy (the destination itself with --force, or `--basis PATH`)
//! takes unchanged pieces and blocks from it and fetches the rest. Real
//! binary, real files; bytes fetched are read from the reports. The basis
//! is never modified, and a copy is always byte-identical.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::util::*;

const PAGE: usize = 16 << 10;

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// `old` with `pages` of its 16 KiB pages rewritten (every `stride`-th
/// from `first`) and `append` bytes added; returns it and the changed bytes.
fn next_version(
    old: &[u8],
    first: usize,
    stride: usize,
    pages: usize,
    append: usize,
) -> (Vec<u8>, u64) {
    let mut new = old.to_vec();
    for k in 0..pages {
        let at = (first + k * stride) * PAGE;
        new[at..at + PAGE].copy_from_slice(&random(PAGE, 1000 + k as u64));
    }
    new.extend(random(append, 99));
    (new, (pages * PAGE + append) as u64)
}

fn received(dir: &Path, name: &str) -> (u64, u64) {
    let r = report(&dir.join(format!("{name}.json")));
    (
        r["bytes_received"].as_u64().unwrap(),
        r["bytes_from_basis"].as_u64().unwrap(),
    )
}

/// Every 16 KiB page is one block; bytes received may exceed the changed
/// bytes by the outboards (32 bytes per block of a piece fetched as a
/// delta) and no more.
fn assert_fetched_about(got: u64, changed: u64, what: &str) {
    assert!(
        got >= changed,
        "{what}: {got} bytes received, {changed} changed"
    );
    assert!(
        got as f64 <= changed as f64 * 1.25,
        "{what}: {got} bytes received for {changed} changed"
    );
}

/// A file with scattered pages rewritten and data appended: a joiner with
/// the old copy at its destination (--force) and one with it elsewhere
/// (--basis) fetch about the changed bytes; one without a basis fetches
/// all; the basis elsewhere is untouched, mtime included.
#[test]
fn delta_a_file_with_rewritten_pages_and_appended_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = random(8 << 20, 1);
    let (new, changed) = next_version(&old, 3, 97, 5, 400 << 10);
    let src = d.join("src/img");
    fs::create_dir_all(src.parent().unwrap()).unwrap();
    fs::write(&src, &new).unwrap();
    fs::create_dir_all(d.join("a")).unwrap();
    fs::write(d.join("a/img"), &old).unwrap();
    let elsewhere = d.join("old/img-2026-12-05");
    fs::create_dir_all(elsewhere.parent().unwrap()).unwrap();
    fs::write(&elsewhere, &old).unwrap();
    let before = fs::metadata(&elsewhere).unwrap();

    let mut seed = seed(d, &src, &[]);
    let mut a = join(d, &seed, "a", &["--exit-on-complete", "--force"]);
    let basis = elsewhere.to_str().unwrap();
    let mut b = join(d, &seed, "b", &["--exit-on-complete", "--basis", basis]);
    let mut c = join(d, &seed, "c", &["--exit-on-complete"]);
    for j in [&mut a, &mut b, &mut c] {
        j.wait_ok(LIMIT);
    }
    seed.proc.kill9();
    for name in ["a", "b", "c"] {
        assert_same(&src, &d.join(name).join("img"));
    }
    for name in ["a", "b"] {
        let (got, from_basis) = received(d, name);
        assert_fetched_about(got, changed, name);
        assert_eq!(from_basis, new.len() as u64 - changed, "{name}");
    }
    // everything, and the 4-byte masks of the piece answers' groups
    let (got, from_basis) = received(d, "c");
    assert_eq!(from_basis, 0);
    let len = new.len() as u64;
    assert!((len..len + 1024).contains(&got), "{got} for {len}");
    assert_eq!(fs::read(&elsewhere).unwrap(), old, "the basis was modified");
    let after = fs::metadata(&elsewhere).unwrap();
    assert_eq!(
        (after.mtime(), after.mtime_nsec(), after.ino()),
        (before.mtime(), before.mtime_nsec(), before.ino())
    );
}

/// A changed block whose CV starts with the same two bytes as the old
/// block's (the hint of a Delta request, so the holder does not send it):
/// the piece's CVs made of the blocks sent and kept do not merge to its
/// hash, so the joiner asks for the outboard and fetches that block with
/// a Blocks request; a block that became zeros (the answer's zeros mask)
/// is left a hole and never sent. The copy is right, and only the
/// changed blocks cross the network.
#[test]
fn delta_a_hint_that_matches_a_changed_block_is_fetched_anyway() {
    use swarm::manifest::blocks;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = random(1 << 20, 5);
    let mut new = old.clone();
    // piece 0 (256 KiB, 16 blocks), block 1: old and new CVs share two
    // bytes (about 65,536 tries)
    let x = random(PAGE, 6);
    let want = blocks::cv(1, &x);
    let mut y = random(PAGE, 7);
    for k in 0u64.. {
        y[..8].copy_from_slice(&k.to_le_bytes());
        if blocks::cv(1, &y)[..2] == want[..2] {
            break;
        }
    }
    new[PAGE..2 * PAGE].copy_from_slice(&x);
    let mut old = old;
    old[PAGE..2 * PAGE].copy_from_slice(&y);
    // piece 1: block 3 rewritten, block 5 now zeros
    let p1 = 256 << 10;
    new[p1 + 3 * PAGE..p1 + 4 * PAGE].copy_from_slice(&random(PAGE, 8));
    new[p1 + 5 * PAGE..p1 + 6 * PAGE].fill(0);
    let changed = 2 * PAGE as u64;
    let src = d.join("src/img");
    fs::create_dir_all(src.parent().unwrap()).unwrap();
    fs::write(&src, &new).unwrap();
    fs::create_dir_all(d.join("a")).unwrap();
    fs::write(d.join("a/img"), &old).unwrap();
    let mut seed = seed(d, &src, &["--piece-size", "256KiB"]);
    let mut cmd = swarm();
    cmd.env("RUST_LOG", "warn,swarm::node::fetch=debug")
        .arg("join")
        .arg(&seed.ticket)
        .arg(d.join("a"))
        .args(["--listen", "127.0.0.1:0", "--exit-on-complete", "--force"])
        .arg("--report")
        .arg(d.join("a.json"));
    let mut a = Proc::spawn(cmd, "a", d);
    a.wait_ok(LIMIT);
    seed.proc.kill9();
    assert_same(&src, &d.join("a/img"));
    let log = a.log_text();
    assert!(
        log.contains("do not make the piece's hash: asking for its outboard")
            && log.contains("changed blocks the hints did not bring")
            && log.contains("blocks=1"),
        "{log}"
    );
    let r = report(&d.join("a.json"));
    assert_eq!(r["pieces_corrupt"].as_u64(), Some(0), "{r}");
    let (got, from_basis) = received(d, "a");
    assert_fetched_about(got, changed, "a");
    assert_eq!(from_basis, new.len() as u64 - 3 * PAGE as u64);
}

/// A datadir-like tree: a file changed in place, one grown, one new that
/// sorts first, one removed, one renamed. Pieces follow files, so the new
/// file shifts nothing and the renamed one is found whole.
#[test]
fn delta_a_tree_with_files_added_removed_renamed_and_grown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = d.join("a/pgdata");
    fs::create_dir_all(old.join("base")).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("base/1259", random(3 << 20, 11)),
        ("base/2608", random(1 << 20, 12)),
        ("base/2610", random(700 << 10, 13)),
        ("base/gone", random(500 << 10, 14)),
        ("base/moved", random(900 << 10, 15)),
        // small files, packed into shared pieces
        ("base/1259_fsm", random(24 << 10, 17)),
        ("base/1259_vm", random(8 << 10, 18)),
        ("base/2608_fsm", random(24 << 10, 19)),
        ("base/PG_VERSION", b"16\n".to_vec()),
    ];
    for (p, data) in &files {
        fs::write(old.join(p), data).unwrap();
    }
    let src = d.join("src/pgdata");
    fs::create_dir_all(src.join("base")).unwrap();
    let (changed_in_place, c1) = next_version(&files[0].1, 1, 31, 4, 0);
    let (grown, c2) = next_version(&files[1].1, 0, 1, 0, 123_457);
    let early = random(300 << 10, 16);
    fs::write(src.join("base/1259"), &changed_in_place).unwrap();
    fs::write(src.join("base/2608"), &grown).unwrap();
    fs::write(src.join("base/2610"), &files[2].1).unwrap();
    fs::write(src.join("base/0000_new"), &early).unwrap();
    fs::write(src.join("base/renamed"), &files[4].1).unwrap();
    for (p, data) in &files[5..] {
        fs::write(src.join(p), data).unwrap();
    }
    std::os::unix::fs::symlink("/srv/wal", src.join("pg_wal")).unwrap();
    let changed = c1 + c2 + early.len() as u64;

    let mut seed = seed(d, &src, &["--piece-size", "256KiB"]);
    let mut a = join(d, &seed, "a", &["--exit-on-complete", "--force"]);
    a.wait_ok(LIMIT);
    seed.proc.kill9();
    assert_same(&src, &d.join("a/pgdata"));
    let left: Vec<_> = fs::read_dir(d.join("a")).unwrap().collect();
    assert_eq!(left.len(), 1, "the replaced tree is left: {left:?}");
    let (got, _) = received(d, "a");
    assert_fetched_about(got, changed, "tree");
}

/// Several joiners with the old copy fetch the changed blocks from each
/// other, not all from the seed.
#[test]
fn delta_changed_blocks_swarm_between_joiners() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = random(8 << 20, 2);
    let (new, changed) = next_version(&old, 0, 7, 60, 0);
    let src = d.join("src/img");
    fs::create_dir_all(src.parent().unwrap()).unwrap();
    fs::write(&src, &new).unwrap();
    let names = ["a", "b", "c", "e"];
    for n in names {
        fs::create_dir_all(d.join(n)).unwrap();
        fs::write(d.join(n).join("img"), &old).unwrap();
    }
    // a slow seed, so the joiners trade what they already have
    let mut seed = seed(
        d,
        &src,
        &["--piece-size", "256KiB", "--upload-limit", "2MiB/s"],
    );
    let mut js: Vec<Proc> = names
        .iter()
        .map(|n| join(d, &seed, n, &["--force", "--linger", "2s"]))
        .collect();
    for j in &mut js {
        j.wait_ok(LIMIT);
    }
    seed.proc.kill9();
    let mut from_seed = 0;
    for n in names {
        assert_same(&src, &d.join(n).join("img"));
        let r = report(&d.join(format!("{n}.json")));
        assert_fetched_about(r["bytes_received"].as_u64().unwrap(), changed, n);
        from_seed += r["received_from_seed"].as_u64().unwrap();
    }
    assert!(
        (from_seed as f64) < 3.0 * changed as f64,
        "the seed sent {from_seed} bytes to 4 joiners for {changed} changed"
    );
}

/// A basis of another image altogether is read and does no harm: every
/// piece is fetched, the copy is right, the basis untouched.
#[test]
fn delta_a_basis_of_another_image_is_only_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("img");
    random_file(&src, 3 << 20, 3);
    let other = d.join("other");
    random_file(&other, 4 << 20, 4);
    let other_bytes = fs::read(&other).unwrap();
    let mut seed = seed(d, &src, &[]);
    let mut a = join(
        d,
        &seed,
        "a",
        &["--exit-on-complete", "--basis", other.to_str().unwrap()],
    );
    a.wait_ok(LIMIT);
    seed.proc.kill9();
    assert_same(&src, &d.join("a/img"));
    let (got, from_basis) = received(d, "a");
    assert_eq!(from_basis, 0);
    assert!(got >= 3 << 20);
    assert_eq!(fs::read(&other).unwrap(), other_bytes);
}

/// kill -9 in the middle of a delta: the old copy at the destination is
/// intact, and the same command resumes and finishes.
#[test]
fn delta_killed_mid_way_keeps_the_old_copy_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = random(8 << 20, 5);
    let (new, _) = next_version(&old, 0, 2, 200, 1 << 20);
    let src = d.join("src/img");
    fs::create_dir_all(src.parent().unwrap()).unwrap();
    fs::write(&src, &new).unwrap();
    fs::create_dir_all(d.join("a")).unwrap();
    fs::write(d.join("a/img"), &old).unwrap();
    let mut seed = seed(
        d,
        &src,
        &["--piece-size", "256KiB", "--upload-limit", "1MiB/s"],
    );
    let mut a = join(d, &seed, "a", &["--exit-on-complete", "--force"]);
    wait_for_pieces(&mut a, 10);
    a.kill9();
    assert_eq!(
        fs::read(d.join("a/img")).unwrap(),
        old,
        "the old copy changed"
    );
    let mut a = join(d, &seed, "a", &["--exit-on-complete", "--force"]);
    a.wait_ok(LIMIT);
    seed.proc.kill9();
    assert_same(&src, &d.join("a/img"));
    let r = report(&d.join("a.json"));
    assert!(r["pieces_resumed"].as_u64().unwrap() >= 10, "{r}");
}

/// A --basis that does not exist: exit 2 naming it, before anything is
/// fetched. No room to build the new copy beside the old one: exit 5,
/// the old copy untouched.
#[test]
fn delta_bad_basis_and_no_room_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("img");
    random_file(&src, 6 << 20, 6);
    let seed = seed(d, &src, &[]);
    let mut c = swarm();
    c.args(["join", &seed.ticket]).arg(d).args([
        "--basis",
        "/nonexistent/db-2026-12-05",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = run(c, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/db-2026-12-05"), "{err}");

    let disk = Tmpfs::mount(&d.join("disk"), "10m");
    let old = random(6 << 20, 7);
    fs::write(disk.0.join("img"), &old).unwrap();
    let mut c = swarm();
    c.args(["join", &seed.ticket]).arg(&disk.0).args([
        "--force",
        "--exit-on-complete",
        "--listen",
        "127.0.0.1:0",
    ]);
    let out = run(c, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("not enough free space"), "{err}");
    assert_eq!(fs::read(disk.0.join("img")).unwrap(), old);
}

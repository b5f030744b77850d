//! One seed and six joiners on loopback, every copy compared byte for byte.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::*;

const JOINERS: usize = 6;
const PIECE: usize = 64 << 10;

/// Seeds `src`, runs six joiners, checks every copy; returns the reports.
fn swarm_of_six(
    dir: &Path,
    src: &Path,
    seed_args: &[&str],
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let n = JOINERS.to_string();
    let mut args = vec!["--until-done", &n];
    args.extend_from_slice(seed_args);
    let mut seed = seed(dir, src, &args);
    let mut joiners: Vec<Proc> = (0..JOINERS)
        .map(|k| join(dir, &seed, &format!("j{k}"), &[]))
        .collect();
    for j in &mut joiners {
        j.wait_ok(LIMIT);
    }
    seed.proc.wait_ok(LIMIT);
    let name = src.file_name().unwrap();
    for k in 0..JOINERS {
        let dest = dir.join(format!("j{k}"));
        assert_same(src, &dest.join(name));
        // nothing else left behind: no partial data
        assert_eq!(
            fs::read_dir(&dest).unwrap().count(),
            1,
            "stray files in {}",
            dest.display()
        );
    }
    let reports = (0..JOINERS)
        .map(|k| report(&dir.join(format!("j{k}.json"))))
        .collect();
    (reports, report(&seed.report))
}

fn file_of_size(size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, size, size as u64);
    let (reports, _) = swarm_of_six(dir.path(), &src, &["--piece-size", "64KiB"]);
    for r in reports {
        assert_eq!(r["bytes_total"], size as u64);
        assert_eq!(r["pieces_total"], size.div_ceil(PIECE) as u64);
    }
}

#[test]
fn empty_file() {
    file_of_size(0);
}

#[test]
fn one_byte_file() {
    file_of_size(1);
}

#[test]
fn one_byte_short_of_a_piece() {
    file_of_size(PIECE - 1);
}

#[test]
fn one_byte_over_a_piece() {
    file_of_size(PIECE + 1);
}

#[test]
fn random_64mib_mostly_from_peers() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db.img");
    let size = 64 << 20;
    random_file(&src, size, 64);
    let (reports, seed) = swarm_of_six(dir.path(), &src, &[]);
    let from_seed: u64 = reports
        .iter()
        .map(|r| r["received_from_seed"].as_u64().unwrap())
        .sum();
    let copies = from_seed as f64 / size as f64;
    eprintln!("the seed delivered {copies:.2} copies to {JOINERS} joiners");
    assert!(
        copies < 3.0,
        "the seed delivered {copies:.2} copies; peers should carry most of the load"
    );
    let from_peers: u64 = reports
        .iter()
        .map(|r| r["bytes_received"].as_u64().unwrap() - r["received_from_seed"].as_u64().unwrap())
        .sum();
    assert!(
        from_peers > 2 * size as u64,
        "joiners got only {from_peers} bytes from each other"
    );
    assert!(
        seed["bytes_served"].as_u64().unwrap() >= size as u64,
        "the seed must have sent at least one copy"
    );
    // what joiners pass on they mostly just received: served from memory,
    // not read back from disk (every copy was compared byte for byte above)
    let from_memory: u64 = reports
        .iter()
        .map(|r| r["pieces_served_from_memory"].as_u64().unwrap())
        .sum();
    let piece_size = 1u64 << 20;
    eprintln!(
        "joiners served {from_memory} pieces from memory of {} passed on",
        from_peers / piece_size
    );
    assert!(from_memory > 0, "no joiner served a piece from memory");
}

#[test]
fn directory_tree_with_empty_parts_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("datadir");
    fs::create_dir_all(root.join("base/16384")).unwrap();
    fs::create_dir_all(root.join("pg_wal/archive_status")).unwrap(); // empty dir
    fs::create_dir_all(root.join("empty")).unwrap();
    random_file(&root.join("base/16384/1259"), 300_000, 1);
    random_file(&root.join("base/16384/2608"), 70_001, 2);
    random_file(&root.join("pg_wal/000000010000000000000001"), 1 << 20, 3);
    fs::write(root.join("postmaster.opts"), b"").unwrap(); // empty file
    fs::write(root.join("PG_VERSION"), b"16\n").unwrap();
    fs::set_permissions(root.join("base"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(root.join("PG_VERSION"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(
        root.join("pg_wal/000000010000000000000001"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    swarm_of_six(dir.path(), &root, &["--piece-size", "64KiB"]);
}

/// The seed hashes a single file from a mapping, a window at a time: its
/// peak resident memory must not grow with the image (a mapping of the
/// whole file once made it the image's size).
#[test]
fn seeding_a_large_file_keeps_memory_below_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("img");
    const SIZE: usize = 160 << 20;
    random_file(&src, SIZE, 11);
    let seed = seed(dir.path(), &src, &[]);
    let pid = seed.proc.child.id();
    // VmHWM: the peak resident set so far; the ticket comes after hashing
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    let hwm = hwm_kib << 10;
    // 64 MiB mapped at a time plus the process; the whole file was 168 MiB
    assert!(
        hwm < (SIZE as u64) * 3 / 4,
        "seed peak RSS {} MiB after hashing {} MiB",
        hwm >> 20,
        SIZE >> 20
    );
}

/// A seed that keeps at most two connections sends the other joiners,
/// started at the same time, to the hosts it serves: every copy completes,
/// and the seed served two hosts only.
#[test]
fn a_full_seed_sends_newcomers_to_other_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db.img");
    let size = 8 << 20;
    random_file(&src, size, 9);
    let mut seed = seed(
        dir.path(),
        &src,
        &["--max-peers", "2", "--piece-size", "256KiB"],
    );
    let mut joiners: Vec<Proc> = (0..JOINERS)
        .map(|k| join(dir.path(), &seed, &format!("j{k}"), &["--linger", "3s"]))
        .collect();
    for j in &mut joiners {
        j.wait_ok(LIMIT);
    }
    seed.proc.signal(libc::SIGTERM);
    seed.proc.wait_ok(LIMIT);
    for k in 0..JOINERS {
        assert_same(&src, &dir.path().join(format!("j{k}")).join("db.img"));
    }
    let s = report(&seed.report);
    let served = s["served_to"].as_object().unwrap();
    assert!(served.len() <= 2, "the seed served {served:?}");
    let redirected = (0..JOINERS)
        .map(|k| report(&dir.path().join(format!("j{k}.json"))))
        .filter(|r| r["received_from_seed"].as_u64() == Some(0))
        .count();
    assert!(
        redirected >= JOINERS - 2,
        "{redirected} joiners took nothing from the seed"
    );
    // --until-done cannot count hosts the seed does not keep
    let out = run(
        {
            let mut c = swarm();
            c.arg("seed")
                .arg(&src)
                .args(["--max-peers", "2", "--until-done", "3"]);
            c
        },
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-peers"));
}

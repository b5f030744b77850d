//! A seeded file modified after it was hashed: the seed checks what it
//! serves against the manifest, says so, and stops serving those pieces;
//! joiners take them from a host that fetched them before the change, or
//! end with exit 4 naming the cause.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

/// Overwrites `len` bytes at `at` in place (same size, new content), as a
/// database writing into its image would.
fn scribble(path: &Path, at: u64, len: usize) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&vec![0x5a; len]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_file_changed_after_hashing_ends_the_join_with_exit_4_naming_the_cause() {
    // piece 5 of 16 changes after the manifest was made
    changed_at_the_seed(5, |src| scribble(src, 5 * (256 << 10) + 1000, 100));
}

#[test]
fn a_file_truncated_after_hashing_ends_the_join_with_exit_4_naming_the_cause() {
    // piece 12 of 16 is cut short, 13 to 15 are gone
    changed_at_the_seed(12, |src| {
        let f = fs::OpenOptions::new().write(true).open(src).unwrap();
        f.set_len(13 * (256 << 10) - 5).unwrap();
    });
}

fn changed_at_the_seed(piece: u32, change: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, 4 << 20, 21);
    let mut s = seed(dir.path(), &src, &["--piece-size", "256KiB"]);
    change(&src);
    let started = Instant::now();
    let mut j = join(dir.path(), &s, "j", &[]);
    let st = j.wait(LIMIT);
    let took = started.elapsed();
    let log = j.log_text();
    assert_eq!(st.code(), Some(4), "join log:\n{log}");
    assert!(
        log.contains(&format!("piece {piece}")) && log.contains("changed at its source"),
        "{log}"
    );
    // the seed was never taken for a liar: it did not send a bad piece
    assert!(!log.contains("failed verification"), "{log}");
    // well before the 60 s and 120 s timeouts it used to end on
    assert!(took < Duration::from_secs(50), "took {took:?}");
    // every other piece arrived and stays for a later resume
    let partial: Vec<_> = fs::read_dir(dir.path().join("j"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        partial.iter().any(|n| n.ends_with(".partial")),
        "{partial:?}"
    );
    let slog = s.proc.log_text();
    assert!(
        slog.contains("changed after it was hashed") && slog.contains("piece"),
        "seed log:\n{slog}"
    );
    s.proc.signal(libc::SIGINT);
    s.proc.wait(LIMIT);
}

#[test]
fn a_piece_changed_at_the_seed_comes_from_a_host_that_fetched_it_before() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, 4 << 20, 22);
    let original = fs::read(&src).unwrap();
    let mut s = seed(dir.path(), &src, &["--piece-size", "256KiB"]);
    // a fetches everything and stays to serve
    let mut a = join(dir.path(), &s, "a", &["--linger", "60s"]);
    let t = Instant::now();
    while !dir.path().join("a/image.bin").exists() {
        assert!(t.elapsed() < LIMIT, "a never completed:\n{}", a.log_text());
        if let Some(st) = a.child.try_wait().unwrap() {
            panic!("a exited with {st}:\n{}", a.log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    scribble(&src, 3 * (256 << 10), 256 << 10);
    scribble(&src, 11 * (256 << 10) + 7, 1);
    let mut b = join(dir.path(), &s, "b", &[]);
    b.wait_ok(LIMIT);
    assert_eq!(fs::read(dir.path().join("b/image.bin")).unwrap(), original);
    // (whether b asked the seed for a changed piece at all depends on the
    // seed's spreading: once a holds a copy, the seed points b to it)
    let blog = b.log_text();
    assert!(!blog.contains("failed verification"), "{blog}");
    a.kill9();
    s.proc.signal(libc::SIGINT);
    s.proc.wait(LIMIT);
}

/// A delta from the seed after its file changed: the seed knows the
/// piece's outboard from an earlier request (so the outboard is answered
/// without reading the disk) and reads only the blocks asked for; a block
/// that no longer matches its CV is never sent, and the joiner ends with
/// exit 4 naming the piece, not taking the seed for a liar.
#[test]
fn a_changed_block_is_not_sent_in_a_delta() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("image.bin");
    random_file(&src, 4 << 20, 23);
    // last night's copy: block 3 of piece 5 differs (16 KiB blocks,
    // 256 KiB pieces)
    let at = 5 * (256 << 10) + 3 * (16 << 10);
    let basis = dir.path().join("basis.bin");
    fs::copy(&src, &basis).unwrap();
    scribble(&basis, at, 16 << 10);
    let basis_arg = basis.to_str().unwrap();
    let mut s = seed(dir.path(), &src, &["--piece-size", "256KiB"]);
    // a takes that block from the seed (the seed reads the piece and
    // keeps its outboard)
    let mut a = join(
        dir.path(),
        &s,
        "a",
        &["--basis", basis_arg, "--exit-on-complete"],
    );
    a.wait_ok(LIMIT);
    assert_eq!(report(&dir.path().join("a.json"))["pieces_fetched"], 1);
    // the block changes at the seed; b needs it too, from the seed only
    scribble(&src, at + 100, 10);
    let mut b = join(dir.path(), &s, "b", &["--basis", basis_arg]);
    let st = b.wait(LIMIT);
    let log = b.log_text();
    assert_eq!(st.code(), Some(4), "join log:\n{log}");
    assert!(
        log.contains("piece 5") && log.contains("changed at its source"),
        "{log}"
    );
    assert!(!log.contains("failed verification"), "{log}");
    let slog = s.proc.log_text();
    assert!(
        slog.contains("changed after it was hashed"),
        "seed log:\n{slog}"
    );
    s.proc.signal(libc::SIGINT);
    s.proc.wait(LIMIT);
}

//! kill -9 a joiner half way; the restarted joiner reuses what it verified.

use std::fs;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn killed_joiner_resumes_and_fetches_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    let size = 64usize << 20;
    random_file(&src, size, 9);
    // 16 MiB/s: the 64 MiB copy takes about 4 s, time enough to kill it half way
    let mut seed = seed(
        d,
        &src,
        &[
            "--until-done",
            "1",
            "--upload-limit",
            "16MiB/s",
            "--piece-size",
            "1MiB",
        ],
    );
    let mut j = join(d, &seed, "j", &[]);
    // wait until a good part has arrived (the partial file fills piece by piece)
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    j.kill9();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "killed too late to test resume"
    );
    let partial: Vec<_> = fs::read_dir(d.join("j"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        partial.len() == 1
            && partial[0].starts_with(".image.bin.swarm-")
            && partial[0].ends_with(".partial"),
        "expected one partial file, found {partial:?}"
    );
    let mut j = join(d, &seed, "j", &[]);
    j.wait_ok(LIMIT);
    seed.proc.wait_ok(LIMIT);
    assert_same(&src, &d.join("j/image.bin"));
    let r = report(&d.join("j.json"));
    let resumed = r["pieces_resumed"].as_u64().unwrap();
    let received = r["bytes_received"].as_u64().unwrap();
    eprintln!("resumed {resumed} pieces, fetched {received} bytes after the restart");
    assert!(
        resumed >= 8,
        "only {resumed} of 64 pieces survived the kill"
    );
    // each 1 MiB piece: its bytes and the masks of its two 512 KiB
    // groups (`wire::piece`)
    assert_eq!(
        received,
        (64 - resumed) * ((1 << 20) + 8),
        "fetched more than the missing pieces"
    );
    assert!(received < (size as u64) * 9 / 10);
}

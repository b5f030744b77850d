//! The manifest decoder, format 2 (which checks every path, link and meta
//! field in it): whatever decodes re-encodes to exactly the input (one
//! manifest, one encoding), and the derived layout holds: pieces aligned
//! to files, each inside its file's span, their lengths summing to the
//! content; the file spans in order, large files starting a piece; hard
//! links naming an earlier regular file; symlinks with a target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::{EntryKind, MODE_MASK, Manifest, PACK_BELOW, Root, SYMLINK_MODE};

/// Pieces checked one by one (each lookup is a binary search; a valid
/// input of a few KiB has a hundred pieces at most, but an input of
/// 4 MiB pieces-worth of hashes must not slow the fuzzer down).
const MAX_CHECKED: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    assert_eq!(
        m.encode(),
        data,
        "a decoded manifest re-encodes differently"
    );
    let ps = u64::from(m.piece_size);
    assert!(ps.is_power_of_two());

    let metas = match &m.root {
        Root::File { meta, .. } => vec![*meta],
        Root::Dir { meta, entries } => {
            let mut metas = vec![*meta];
            for (i, e) in entries.iter().enumerate() {
                metas.push(e.meta);
                match &e.kind {
                    EntryKind::HardLink { target } => {
                        let t = *target as usize;
                        assert!(t < i, "hard link {i} to a later entry {t}");
                        assert!(
                            matches!(entries[t].kind, EntryKind::File { .. }),
                            "hard link {i} to entry {t}, not a regular file"
                        );
                    }
                    EntryKind::Symlink { target } => {
                        assert!(!target.is_empty(), "empty symlink target");
                        assert_eq!(e.meta.mode, SYMLINK_MODE);
                    }
                    EntryKind::File { .. } | EntryKind::Dir => {}
                }
            }
            metas
        }
    };
    for meta in metas {
        assert_eq!(meta.mode & !MODE_MASK, 0);
        assert!(meta.mtime.nanos < 1_000_000_000);
    }

    // file spans: in order, no empty ones, no overlap; a file of
    // PACK_BELOW or more starts a piece
    let mut end = 0u64;
    let mut total = 0u64;
    for f in m.files() {
        assert!(f.size > 0, "an empty file has a span");
        assert!(f.offset >= end, "file spans overlap or go back");
        if f.size >= PACK_BELOW {
            assert_eq!(f.offset % ps, 0, "a large file does not start a piece");
        } else {
            assert_eq!(f.offset, end, "a small file is not packed");
        }
        end = f.offset.checked_add(f.size).expect("file span overflows");
        total += f.size;
    }
    assert_eq!(end.div_ceil(ps), m.piece_count() as u64, "pieces not covered by files");
    assert_eq!(total, m.total_size());

    // every piece: no longer than a piece, all its bytes inside files
    let mut sum = 0u64;
    let n = m.piece_count();
    for i in 0..n.min(MAX_CHECKED) {
        let (offset, len) = m.piece_range(i);
        assert!(len > 0 && len <= ps, "piece {i} of {len} bytes");
        assert_eq!(offset, i as u64 * ps);
        let in_files: u64 = m
            .piece_files(i)
            .iter()
            .map(|f| f.end().min(offset + len) - f.offset.max(offset))
            .sum();
        assert_eq!(in_files, len, "piece {i} has bytes outside files");
        sum += len;
    }
    if n <= MAX_CHECKED {
        assert_eq!(
            sum,
            m.total_size(),
            "piece lengths do not sum to the content"
        );
    }
    assert_eq!(m.piece_range(n), (0, 0));
    assert!(m.piece_files(n).is_empty());
});

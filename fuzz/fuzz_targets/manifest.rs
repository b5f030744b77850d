//! The manifest decoder, format 2 (which checks every path, link and meta
//! field in it): whatever decodes re-encodes to exactly the input (one
//! manifest, one encoding), and the derived layout holds: pieces aligned
//! to files, each inside its file's span, their lengths summing to the
//! content; the file spans in order with consecutive first pieces; hard
//! links naming an earlier regular file; symlinks with a target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::{EntryKind, MODE_MASK, Manifest, Root, SYMLINK_MODE};

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

    // file spans: in order, no empty ones, first pieces consecutive
    let mut next = 0u64;
    let mut total = 0u64;
    for f in m.files() {
        assert!(f.size > 0, "an empty file has a span");
        assert_eq!(u64::from(f.first_piece), next, "a gap or overlap in pieces");
        assert_eq!(f.offset, next * ps);
        f.offset.checked_add(f.size).expect("file span overflows");
        next += f.pieces(m.piece_size);
        total += f.size;
    }
    assert_eq!(next, m.piece_count() as u64, "pieces not covered by files");
    assert_eq!(total, m.total_size());

    // every piece inside its file, no longer than a piece
    let mut sum = 0u64;
    let n = m.piece_count();
    for i in 0..n.min(MAX_CHECKED) {
        let (offset, len) = m.piece_range(i);
        assert!(len > 0 && len <= ps, "piece {i} of {len} bytes");
        assert_eq!(offset, i as u64 * ps);
        let f = m.file_of_piece(i).expect("every piece is in a file");
        let end = offset.checked_add(len).expect("piece range overflows");
        assert!(
            offset >= f.offset && end <= f.offset + f.size,
            "piece {i} outside its file"
        );
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
    assert!(m.file_of_piece(n).is_none());
});

//! The manifest decoder (which checks every path in it): whatever decodes
//! must re-encode to bytes that decode to the same manifest, and every file
//! span and piece must lie inside the content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        let bytes = m.encode();
        let again = Manifest::decode(&bytes).expect("a re-encoded manifest decodes");
        assert_eq!(again.encode(), bytes);
        let total = m.total_size();
        for f in m.files() {
            let end = f.offset.checked_add(f.size).expect("file span overflows");
            assert!(end <= total, "file span past the end");
        }
        for i in 0..m.piece_count().min(64) {
            let (offset, len) = m.piece_range(i);
            assert!(len <= u64::from(m.piece_size));
            let end = offset.checked_add(len).expect("piece range overflows");
            assert!(end <= total, "piece past the end");
        }
    }
});

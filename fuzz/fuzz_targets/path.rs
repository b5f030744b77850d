//! Path checks for names that arrive from the network: whatever passes is
//! relative and has only plain components.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::path::{check_component, check_rel_path};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parts) = check_rel_path(s) {
        assert!(!s.starts_with('/'));
        for p in parts {
            assert!(!p.is_empty() && p != "." && p != "..");
            assert!(!p.contains(['/', '\\', '\0']));
            check_component(p).expect("a checked path's components pass");
        }
    }
});

//! The ticket parser: whatever parses must print and parse back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::ticket::Ticket;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Ticket::parse(s) {
        assert_eq!(Ticket::parse(&t.encode()).ok(), Some(t));
    }
});

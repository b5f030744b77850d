//! The first bytes of a request stream and of its answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::wire::{REQUEST_LEN, Request, Status};

fuzz_target!(|data: &[u8]| {
    if let Some(b) = data.first_chunk::<REQUEST_LEN>() {
        if let Ok(r) = Request::decode(*b) {
            assert_eq!(Request::decode(r.encode()).ok(), Some(r));
        }
    }
    if let Some(&s) = data.first() {
        let _ = Status::decode(s);
    }
});

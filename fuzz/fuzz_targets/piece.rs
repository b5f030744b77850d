//! A piece answer without its zero blocks (`wire::piece`): any bytes, fed
//! in the steps the decoder asks for, never panic, never make it take
//! more than it asked for, and never build more than the piece's length;
//! no answer is shorter than the piece's own encoding; a piece encoded
//! and decoded again is itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::wire::piece::{Decoder, encode};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    // a length up to 2 MiB
    let len = 1 + (u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize % (2 << 20));
    let mut d = Decoder::new(len as u64);
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    while d.want() > 0 && at < rest.len() {
        let n = d.want().min(rest.len() - at);
        if d.feed(&rest[at..at + n], &mut out).is_err() {
            break;
        }
        at += n;
        assert!(out.len() <= len, "built past the piece");
    }
    if d.want() == 0 {
        assert_eq!(out.len(), len);
        // a sender may send a zero block rather than skip it, never less
        assert!(encode(&out).len() <= at, "an answer shorter than the piece's own");
    }
    // round trip of the rest as a piece
    if !rest.is_empty() {
        let wire = encode(rest);
        let mut d = Decoder::new(rest.len() as u64);
        let mut back: Vec<u8> = Vec::new();
        d.feed(&wire, &mut back).expect("an encoded piece decodes");
        assert_eq!(back, rest);
        assert_eq!(d.want(), 0);
    }
});

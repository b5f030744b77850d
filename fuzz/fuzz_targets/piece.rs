//! A piece answer without its zero blocks (`wire::piece`), or a Delta
//! answer (two masks per group, blocks kept): any bytes, fed in the steps
//! the decoder asks for, never panic, never make it take more than it
//! asked for, and never build more than the piece's length; no piece
//! answer is shorter than the piece's own encoding; a piece encoded and
//! decoded again is itself, and so is a Delta answer of every block.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::wire::piece::{Decoder, encode, encode_delta};

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    // a length up to 2 MiB; the top bit of the third byte: a Delta answer
    let delta = head[2] & 0x80 != 0;
    let len = 1 + (u32::from_le_bytes([head[0], head[1], head[2] & 0x7f, 0]) as usize % (2 << 20));
    let mut d = if delta {
        Decoder::delta(len as u64)
    } else {
        Decoder::new(len as u64)
    };
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
        assert!(
            delta || encode(&out).len() <= at,
            "an answer shorter than the piece's own"
        );
    }
    // round trip of the rest as a piece, and as a Delta of every block
    if !rest.is_empty() {
        let mut d = Decoder::new(rest.len() as u64);
        let mut back: Vec<u8> = Vec::new();
        d.feed(&encode(rest), &mut back).expect("an encoded piece decodes");
        assert_eq!(back, rest);
        assert_eq!(d.want(), 0);
        let mut d = Decoder::delta(rest.len() as u64);
        let mut back: Vec<u8> = Vec::new();
        d.feed(&encode_delta(rest, |_| true), &mut back)
            .expect("an encoded delta decodes");
        assert_eq!(back, rest);
        assert_eq!(d.want(), 0);
    }
});

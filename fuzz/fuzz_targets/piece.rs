//! A piece answer without its zero blocks (`wire::piece`), or a Delta
//! answer (two masks per group, blocks kept): any bytes, fed in the steps
//! the decoder asks for, never panic, never make it take more than it
//! asked for, and never build more than the piece's length; no piece
//! answer is shorter than the piece's own encoding; a piece encoded and
//! decoded again is itself, and a Delta answer of any choice of blocks
//! gives back the blocks sent, zeros and which were kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::blocks::BLOCK;
use swarm::wire::piece::{Decoder, Sink, encode, encode_delta};

/// Each byte of the piece: what was sent (zeros included), or None where
/// the block was kept.
#[derive(Default)]
struct Kinds(Vec<Option<u8>>);

impl Sink for Kinds {
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend(bytes.iter().map(|&b| Some(b)));
    }
    fn put_zeros(&mut self, n: usize) {
        self.0.extend(std::iter::repeat_n(Some(0), n));
    }
    fn keep(&mut self, n: usize) {
        self.0.extend(std::iter::repeat_n(None, n));
    }
}

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
    let mut out = Kinds::default();
    let mut at = 0;
    while d.want() > 0 && at < rest.len() {
        let n = d.want().min(rest.len() - at);
        if d.feed(&rest[at..at + n], &mut out).is_err() {
            break;
        }
        at += n;
        assert!(out.0.len() <= len, "built past the piece");
    }
    assert!(d.received <= rest.len() as u64, "took more than it was given");
    if d.want() == 0 {
        assert_eq!(out.0.len(), len);
        assert_eq!(d.received, at as u64);
        if !delta {
            // a sender may send a zero block rather than skip it, never less
            let piece: Vec<u8> = out.0.iter().map(|b| b.expect("nothing kept")).collect();
            assert!(encode(&piece).len() <= at, "an answer shorter than the piece's own");
        }
    }
    // round trips of the rest: as a piece, and as a Delta that sends the
    // blocks whose first byte is odd
    if !rest.is_empty() {
        let mut d = Decoder::new(rest.len() as u64);
        let mut back: Vec<u8> = Vec::new();
        d.feed(&encode(rest), &mut back).expect("an encoded piece decodes");
        assert_eq!(back, rest);
        assert_eq!(d.want(), 0);
        let send = |j: usize| rest[j * BLOCK] & 1 == 1;
        let mut d = Decoder::delta(rest.len() as u64);
        let mut back = Kinds::default();
        d.feed(&encode_delta(rest, send), &mut back)
            .expect("an encoded delta decodes");
        let want: Vec<Option<u8>> = rest
            .iter()
            .enumerate()
            .map(|(i, &b)| send(i / BLOCK).then_some(b))
            .collect();
        assert!(back.0 == want, "a Delta answer decoded to other blocks");
        assert_eq!(d.want(), 0);
    }
});

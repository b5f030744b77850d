//! The bytes of a piece answer (after its status byte), without its
//! blocks of zeros: the piece in groups of `GROUP_BLOCKS` 16 KiB blocks
//! (512 KiB), each group a `mask u32` (bit j set: block j of the group
//! follows; clear: it is all zeros and is not sent) and then the blocks
//! whose bits are set, in order. Bits past the piece's last block are
//! clear. So a hole, or a page of zeros, never crosses the network,
//! whether or not the requester has a basis; a piece with no zeros costs
//! 4 bytes per 512 KiB more than its bytes.
//!
//! A Delta answer (`Decoder::delta`) has two masks per group: the blocks
//! that follow, then the blocks of zeros that do not; a block in neither
//! is the one the requester has (its hint matched), so it is `kept`.
//!
//! `Decoder` is sans-IO: it says how many bytes it wants next (so a
//! reader never takes more from the stream than the answer holds) and
//! builds the piece, zeros included, as they come.

use crate::codec::DecodeError;
use crate::manifest::blocks::{self, BLOCK};

/// Where a decoded piece goes.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_zeros(&mut self, n: usize);
    /// A block of `n` bytes the requester has already (a Delta answer's
    /// block in neither mask); a piece answer has none.
    fn keep(&mut self, n: usize);
}

/// The piece as sent; a kept block is left as zeros (tests, fuzzing).
impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }
    fn keep(&mut self, n: usize) {
        self.put_zeros(n);
    }
}

pub const GROUP_BLOCKS: usize = 32;
pub const GROUP: usize = GROUP_BLOCKS * BLOCK;

/// Whether `b` is all zeros (most data fails at its first word).
pub fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(16);
    let tail = words.remainder();
    words
        .map(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")))
        .all(|w| w == 0)
        && tail.iter().all(|&x| x == 0)
}

/// The mask of a group's bytes (`GROUP` or fewer, from a block
/// boundary): a bit per block that is not all zeros.
pub fn mask(group: &[u8]) -> u32 {
    group
        .chunks(BLOCK)
        .enumerate()
        .filter(|(_, b)| !is_zero(b))
        .fold(0, |m, (j, _)| m | 1 << j)
}

/// Encodes a whole piece as a Delta answer (tests, fuzzing; the server
/// sends group by group): the blocks set in `send` follow unless they are
/// zeros, the others are kept.
pub fn encode_delta(piece: &[u8], send: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (g, group) in piece.chunks(GROUP).enumerate() {
        let (mut m, mut z) = (0u32, 0u32);
        let mut data = Vec::new();
        for (j, b) in group.chunks(BLOCK).enumerate() {
            if !send(g * GROUP_BLOCKS + j) {
                continue;
            }
            if is_zero(b) {
                z |= 1 << j;
            } else {
                m |= 1 << j;
                data.extend_from_slice(b);
            }
        }
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&z.to_le_bytes());
        out.extend(data);
    }
    out
}

/// Encodes a whole piece (tests; the server sends group by group).
pub fn encode(piece: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(piece.len() + 4 * piece.len().div_ceil(GROUP));
    for g in piece.chunks(GROUP) {
        let m = mask(g);
        out.extend_from_slice(&m.to_le_bytes());
        for (j, b) in g.chunks(BLOCK).enumerate() {
            if m & 1 << j != 0 {
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// Reads a piece of `len` bytes from its answer.
pub struct Decoder {
    len: usize,
    /// Bytes of the piece placed so far (sent or zeros).
    done: usize,
    /// The current group: where it starts and ends, and its mask.
    group_start: usize,
    group_end: usize,
    mask: u32,
    /// A Delta answer's second mask (the blocks of zeros); `None` for a
    /// piece answer, whose blocks not sent are all zeros.
    zeros: Option<u32>,
    /// Mask bytes per group: 4, or 8 in a Delta answer.
    mask_len: usize,
    mask_bytes: [u8; 8],
    mask_have: usize,
    /// Bytes of the block being received.
    in_block: usize,
    /// Bytes taken in all (masks and blocks).
    pub received: u64,
}

impl Decoder {
    pub fn new(len: u64) -> Decoder {
        Decoder {
            len: len as usize,
            done: 0,
            group_start: 0,
            group_end: 0,
            mask: 0,
            zeros: None,
            mask_len: 4,
            mask_bytes: [0; 8],
            mask_have: 0,
            in_block: 0,
            received: 0,
        }
    }

    /// For a Delta answer (see the module).
    pub fn delta(len: u64) -> Decoder {
        Decoder {
            zeros: Some(0),
            mask_len: 8,
            ..Decoder::new(len)
        }
    }

    /// How many bytes the answer holds next (0: it is complete).
    pub fn want(&self) -> usize {
        if self.done == self.len {
            0
        } else if self.done == self.group_end {
            self.mask_len - self.mask_have
        } else {
            self.block_len() - self.in_block
        }
    }

    fn block_len(&self) -> usize {
        blocks::range(self.done / BLOCK, self.len as u64).len()
    }

    /// Takes `bytes` (at most `want()`, or it is an error), appending the
    /// piece to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut impl Sink) -> Result<(), DecodeError> {
        self.received += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.done == self.len {
                return Err(DecodeError::Trailing(bytes.len()));
            }
            if self.done == self.group_end {
                let n = (self.mask_len - self.mask_have).min(bytes.len());
                self.mask_bytes[self.mask_have..self.mask_have + n].copy_from_slice(&bytes[..n]);
                self.mask_have += n;
                bytes = &bytes[n..];
                if self.mask_have == self.mask_len {
                    self.mask_have = 0;
                    self.start_group(out)?;
                }
                continue;
            }
            let n = (self.block_len() - self.in_block).min(bytes.len());
            out.put(&bytes[..n]);
            bytes = &bytes[n..];
            self.in_block += n;
            if self.in_block == self.block_len() {
                self.done += self.in_block;
                self.in_block = 0;
                self.place_zeros(out);
            }
        }
        Ok(())
    }

    fn start_group(&mut self, out: &mut impl Sink) -> Result<(), DecodeError> {
        let word = |k: usize| {
            u32::from_le_bytes(
                self.mask_bytes[4 * k..4 * k + 4]
                    .try_into()
                    .expect("4 bytes"),
            )
        };
        let m = word(0);
        let z = self.zeros.map(|_| word(1));
        let blocks_here = (blocks::count(self.len as u64) - self.done / BLOCK).min(GROUP_BLOCKS);
        let all = m | z.unwrap_or(0);
        if blocks_here < GROUP_BLOCKS && all >> blocks_here != 0 {
            return Err(DecodeError::invalid("piece mask", format!("{all:#x}")));
        }
        if z.is_some_and(|z| z & m != 0) {
            return Err(DecodeError::invalid(
                "delta masks",
                format!("{m:#x} and {z:?}"),
            ));
        }
        self.group_start = self.done;
        self.group_end = (self.done + GROUP).min(self.len);
        self.mask = m;
        self.zeros = z;
        self.place_zeros(out);
        Ok(())
    }

    /// Places the blocks not sent that come next in the current group:
    /// zeros, or (a Delta answer) kept.
    fn place_zeros(&mut self, out: &mut impl Sink) {
        while self.done < self.group_end {
            let bit = 1 << ((self.done - self.group_start) / BLOCK);
            if self.mask & bit != 0 {
                return;
            }
            let n = self.block_len();
            match self.zeros {
                Some(z) if z & bit == 0 => out.keep(n),
                _ => out.put_zeros(n),
            }
            self.done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A piece of `len` bytes whose blocks are zeros where `zero` says.
    fn piece(len: usize, zero: &[bool]) -> Vec<u8> {
        let mut p: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
        for (j, b) in p.chunks_mut(BLOCK).enumerate() {
            if zero.get(j).copied().unwrap_or(false) {
                b.fill(0);
            }
        }
        p
    }

    /// Feeds `wire` to `d` in steps of at most `step` bytes, as a reader
    /// would: the bytes it took.
    fn feed_all(
        mut d: Decoder,
        wire: &[u8],
        step: usize,
        out: &mut impl Sink,
    ) -> Result<u64, DecodeError> {
        let mut at = 0;
        while d.want() > 0 {
            let n = d.want().min(step).min(wire.len() - at);
            if n == 0 {
                return Err(DecodeError::invalid("answer", "short"));
            }
            d.feed(&wire[at..at + n], out)?;
            at += n;
        }
        if at != wire.len() {
            return Err(DecodeError::Trailing(wire.len() - at));
        }
        Ok(d.received)
    }

    fn decode(len: usize, wire: &[u8], step: usize) -> Result<(Vec<u8>, u64), DecodeError> {
        let mut out = Vec::with_capacity(len);
        let received = feed_all(Decoder::new(len as u64), wire, step, &mut out)?;
        Ok((out, received))
    }

    #[test]
    fn zero_blocks_are_not_sent() {
        let len = 40 * BLOCK + 100;
        let mut zero = vec![false; 41];
        zero[0] = true;
        zero[5] = true;
        zero[40] = true;
        let p = piece(len, &zero);
        let wire = encode(&p);
        assert_eq!(wire.len(), len - 2 * BLOCK - 100 + 8);
        assert_eq!(
            decode(len, &wire, usize::MAX).unwrap(),
            (p.clone(), wire.len() as u64)
        );
        // a piece of zeros: its masks only
        let z = vec![0u8; len];
        assert_eq!(encode(&z), vec![0; 8]);
        assert_eq!(decode(len, &[0; 8], 3).unwrap().0, z);
    }

    #[test]
    fn bad_answers_are_errors() {
        let len = 3 * BLOCK;
        let p = piece(len, &[]);
        let mut wire = encode(&p);
        wire[0] |= 0b1000; // a block past the piece's last
        assert!(decode(len, &wire, usize::MAX).is_err());
        let mut d = Decoder::new(len as u64);
        let mut out = Vec::new();
        let good = encode(&p);
        assert!(d.feed(&[good.as_slice(), &[1]].concat(), &mut out).is_err());
    }

    /// What a Delta answer rebuilds, byte by byte: the byte sent, or 0
    /// for zeros, or None for a byte kept.
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

    fn decode_delta(len: usize, wire: &[u8], step: usize) -> Result<Kinds, DecodeError> {
        let mut out = Kinds::default();
        let received = feed_all(Decoder::delta(len as u64), wire, step, &mut out)?;
        assert_eq!(received, wire.len() as u64);
        Ok(out)
    }

    /// The piece as a Delta answer with `send` rebuilds it: what was sent
    /// (zeros included), and None where it was kept.
    fn expect_delta(p: &[u8], send: &dyn Fn(usize) -> bool) -> Vec<Option<u8>> {
        p.iter()
            .enumerate()
            .map(|(i, &b)| send(i / BLOCK).then_some(b))
            .collect()
    }

    #[test]
    fn a_delta_answer_tells_zeros_from_blocks_kept() {
        let len = 40 * BLOCK + 100;
        let mut zero = vec![false; 41];
        zero[3] = true; // sent as zeros
        zero[4] = true; // kept (and zeros: the requester's own)
        zero[40] = true;
        let p = piece(len, &zero);
        let send = |j: usize| j.is_multiple_of(3) || j == 40;
        let wire = encode_delta(&p, send);
        // masks, and the blocks sent that are not zeros
        let sent: usize = (0..41).filter(|&j| send(j) && !zero[j]).count();
        assert_eq!(wire.len(), 16 + sent * BLOCK);
        assert_eq!(
            decode_delta(len, &wire, 7).unwrap().0,
            expect_delta(&p, &send)
        );
        // a block both sent and zeros, or a zero bit past the end
        let mut both = wire.clone();
        both[4] |= 1; // block 0 is sent already
        assert!(decode_delta(len, &both, usize::MAX).is_err());
        let mut past = wire.clone();
        let second = 8 + (0..32).filter(|&j| send(j) && !zero[j]).count() * BLOCK;
        past[second + 5] |= 0b10; // zero bit of block 41 of a 41-block piece
        assert!(decode_delta(len, &past, usize::MAX).is_err());
    }

    proptest! {
        #[test]
        fn delta_answers_round_trip_in_any_steps(
            blocks in 1usize..70,
            tail in 0usize..BLOCK,
            zero in proptest::collection::vec(any::<bool>(), 70),
            send in proptest::collection::vec(any::<bool>(), 70),
            step in 1usize..40_000,
        ) {
            let len = (blocks - 1) * BLOCK + tail + 1;
            let p = piece(len, &zero);
            let sends = |j: usize| send[j];
            let wire = encode_delta(&p, sends);
            prop_assert_eq!(decode_delta(len, &wire, step).unwrap().0, expect_delta(&p, &sends));
        }

        #[test]
        fn any_delta_answer_never_panics(len in 1usize..(3 * GROUP), wire in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode_delta(len, &wire, 97);
        }

        #[test]
        fn round_trips_in_any_steps(
            blocks in 1usize..70,
            tail in 0usize..BLOCK,
            zero in proptest::collection::vec(any::<bool>(), 70),
            step in 1usize..40_000,
        ) {
            let len = (blocks - 1) * BLOCK + tail + 1;
            let p = piece(len, &zero);
            let wire = encode(&p);
            prop_assert_eq!(decode(len, &wire, step).unwrap().0, p);
        }

        #[test]
        fn any_answer_never_panics(len in 1usize..(3 * GROUP), wire in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode(len, &wire, 97);
        }
    }
}

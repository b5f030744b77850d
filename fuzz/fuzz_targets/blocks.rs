//! A piece's outboard as a peer sends it (`Outboard` answer): arbitrary
//! bytes, an arbitrary piece length (up to 4 MiB) and hash go through
//! `blocks::check_outboard`, which must never panic, and accept only CVs
//! that merge back to that hash. Input: `mode u8 | len u32 | hash [32] |
//! rest`; the mode picks what `rest` is:
//!
//! * 0: the outboard, checked against the given hash (almost always
//!   refused, which must not panic whatever the lengths);
//! * 1: the outboard, checked against the hash its own CVs merge to (if
//!   they fit `len`): it must be accepted, and one flipped bit refused;
//! * 2: piece content, repeated to `len` bytes (up to 1 MiB): the
//!   outboard of its real blocks must be accepted against blake3's hash
//!   of the piece (the merge agrees with blake3 itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm::manifest::blocks;

const MAX_LEN: u64 = 4 << 20;

fn flat(cvs: &[blocks::Cv]) -> Vec<u8> {
    cvs.iter().flatten().copied().collect()
}

/// Checks `bytes` against `hash`; what is accepted merges to `hash`.
fn check(bytes: &[u8], len: u64, hash: &[u8; 32]) -> bool {
    match blocks::check_outboard(bytes, len, hash) {
        Some(cvs) => {
            assert!(blocks::splittable(len), "a one-block piece has no outboard");
            assert_eq!(cvs.len(), blocks::count(len));
            assert_eq!(flat(&cvs), bytes);
            assert_eq!(blocks::root(&cvs, len).as_ref(), Some(hash));
            true
        }
        None => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let len = u64::from(u32::from_le_bytes(*len)) % (MAX_LEN + 1);
    let Some((hash, rest)) = rest.split_first_chunk::<32>() else {
        return;
    };
    match mode % 3 {
        0 => {
            check(rest, len, hash);
        }
        1 => {
            // whole CVs only, as many as given
            let cvs: Vec<blocks::Cv> = rest
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap())
                .collect();
            match blocks::root(&cvs, len) {
                Some(h) => {
                    let mut bytes = flat(&cvs);
                    assert!(check(&bytes, len, &h), "CVs refused against their own root");
                    let bit = usize::from(hash[0]) * 8 + usize::from(hash[1] % 8);
                    let at = bit % (bytes.len() * 8);
                    bytes[at / 8] ^= 1 << (at % 8);
                    assert!(!check(&bytes, len, &h), "a flipped CV bit accepted");
                }
                None => assert!(
                    !blocks::splittable(len) || cvs.len() != blocks::count(len),
                    "CVs that fit the length do not merge"
                ),
            }
        }
        _ => {
            if rest.is_empty() {
                return;
            }
            // at most 1 MiB here: 64 blocks take every shape of tree, and
            // hashing 4 MiB twice a run slowed the fuzzer to 60 runs/s
            let len = len % ((1 << 20) + 1);
            let mut piece = Vec::with_capacity(len as usize);
            while piece.len() < len as usize {
                let take = rest.len().min(len as usize - piece.len());
                piece.extend_from_slice(&rest[..take]);
            }
            let real = *blake3::hash(&piece).as_bytes();
            let cvs = blocks::cvs(&piece);
            assert_eq!(cvs.len(), blocks::count(len));
            let accepted = check(&flat(&cvs), len, &real);
            assert_eq!(accepted, blocks::splittable(len), "len {len}");
        }
    }
});

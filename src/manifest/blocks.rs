//! Blocks: a piece's bytes in `BLOCK`-sized runs, each checkable on its own
//! against the piece's hash. blake3 hashes a piece as a binary tree over
//! 1 KiB chunks, and every `BLOCK`-aligned run of a piece is one subtree
//! of that tree: its chaining value (CV) depends only on its bytes and its
//! offset in the piece. A piece's CVs (its *outboard*, 32 bytes per block:
//! 2 KiB for a 1 MiB piece) merge up to the piece's hash, so a host that
//! has checked an outboard against the manifest can check any block
//! against it, without a larger manifest and without the seed doing
//! anything but hash.
//!
//! This uses blake3's own `hazmat` API (subtree CVs at an input offset,
//! parent merges) rather than the bao-tree crate: all a delta needs is
//! "CVs of fixed blocks" and "merge them to the root", a few dozen lines
//! here, where bao-tree brings its own encodings, range sets and async
//! I/O layer that swarm's wire format and storage would have to wrap.
//!
//! Block size: 16 KiB, an InnoDB page, two PostgreSQL pages. It keeps
//! blake3's widest SIMD path (16 chunks at once with AVX-512), so hashing
//! block by block costs what hashing the piece whole does, and the
//! outboard is 0.2% of the data. A rewritten 8 KiB page costs a 16 KiB
//! block.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use super::Hash;

pub const BLOCK: usize = 16 << 10;
/// Most blocks of a piece (a 1 GiB piece).
pub const MAX_BLOCKS: usize = (1 << super::codec::MAX_PIECE_LOG2) / BLOCK;

pub type Cv = ChainingValue;

/// Blocks of a piece of `len` bytes.
pub fn count(len: u64) -> usize {
    len.div_ceil(BLOCK as u64) as usize
}

/// Whether a piece of `len` bytes can be checked block by block: it has
/// more than one block (a piece of one block is its own root).
pub fn splittable(len: u64) -> bool {
    len > BLOCK as u64
}

/// The CV of block `index` of a splittable piece, its bytes `data` (a
/// full block, or the piece's shorter last one).
pub fn cv(index: usize, data: &[u8]) -> Cv {
    let mut h = blake3::Hasher::new();
    h.set_input_offset((index * BLOCK) as u64);
    h.update(data);
    h.finalize_non_root()
}

/// The CVs of every block of a splittable piece.
pub fn cvs(piece: &[u8]) -> Vec<Cv> {
    piece
        .chunks(BLOCK)
        .enumerate()
        .map(|(i, b)| cv(i, b))
        .collect()
}

/// The piece hash the CVs of a splittable piece of `len` bytes merge to;
/// `None` if their number does not fit `len`.
pub fn root(cvs: &[Cv], len: u64) -> Option<Hash> {
    if !splittable(len) || cvs.len() != count(len) {
        return None;
    }
    let (left, right) = split(cvs, len);
    Some(*merge_subtrees_root(&left, &right, Mode::Hash).as_bytes())
}

/// The CVs of the left and right subtrees of `len` bytes (more than one
/// block) whose blocks' CVs are `cvs`. blake3 puts the largest power of two
/// chunks that leaves something on the right in the left subtree; with
/// more than one block that is a whole number of blocks.
fn split(cvs: &[Cv], len: u64) -> (Cv, Cv) {
    let left = blake3::hazmat::left_subtree_len(len);
    let at = (left / BLOCK as u64) as usize;
    (merge(&cvs[..at], left), merge(&cvs[at..], len - left))
}

fn merge(cvs: &[Cv], len: u64) -> Cv {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let (l, r) = split(cvs, len);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// Decodes an outboard as sent (`count(len)` CVs of 32 bytes) and checks
/// it against the piece's hash.
pub fn check_outboard(bytes: &[u8], len: u64, hash: &Hash) -> Option<Vec<Cv>> {
    if bytes.len() != count(len) * 32 {
        return None;
    }
    let cvs: Vec<Cv> = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    (root(&cvs, len).as_ref() == Some(hash)).then_some(cvs)
}

/// The range of block `index` in a piece of `len` bytes.
pub fn range(index: usize, len: u64) -> std::ops::Range<usize> {
    let start = index * BLOCK;
    start..(start + BLOCK).min(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// The CVs merge to exactly blake3's hash of the piece, for every
    /// shape of tree: powers of two, one byte over, a short last block.
    #[test]
    fn cvs_merge_to_the_piece_hash() {
        for len in [
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK,
            3 * BLOCK + 100,
            5 * BLOCK - 1,
            64 * BLOCK,
            65 * BLOCK + 1024,
            (1 << 20) - 1,
        ] {
            let d = data(len);
            let cvs = cvs(&d);
            assert_eq!(cvs.len(), count(len as u64));
            assert_eq!(
                root(&cvs, len as u64),
                Some(*blake3::hash(&d).as_bytes()),
                "{len}"
            );
        }
    }

    #[test]
    fn a_changed_block_or_a_wrong_count_does_not_merge() {
        let mut d = data(4 * BLOCK + 7);
        let good = *blake3::hash(&d).as_bytes();
        let cvs_good = cvs(&d);
        d[2 * BLOCK + 5] ^= 1;
        let bad = cvs(&d);
        assert_ne!(bad[2], cvs_good[2]);
        assert_ne!(root(&bad, d.len() as u64), Some(good));
        assert_eq!(root(&cvs_good[..4], d.len() as u64), None);
        // the same bytes at another block position have another CV
        let block = &d[..BLOCK];
        assert_ne!(cv(0, block), cv(1, block));
        // an outboard that does not fit, or lies, is refused
        let bytes: Vec<u8> = cvs_good.iter().flatten().copied().collect();
        assert!(check_outboard(&bytes, d.len() as u64, &good).is_some());
        assert!(check_outboard(&bytes[..32 * 4], d.len() as u64, &good).is_none());
        let lie: Vec<u8> = bad.iter().flatten().copied().collect();
        assert!(check_outboard(&lie, d.len() as u64, &good).is_none());
        assert!(!splittable(BLOCK as u64));
        assert_eq!(root(&[cv(0, &d[..BLOCK])], BLOCK as u64), None);
    }

    /// Writes seeds for the `blocks` fuzz target (`mode u8 | len u32 |
    /// hash [32] | rest`, see fuzz/fuzz_targets/blocks.rs) to the directory
    /// `SWARM_BLOCKS_SEEDS` names (`fuzz/corpus/blocks`):
    /// `SWARM_BLOCKS_SEEDS=$PWD/fuzz/corpus/blocks cargo test --lib
    /// blocks::tests::write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let Some(dir) = std::env::var_os("SWARM_BLOCKS_SEEDS") else {
            panic!("set SWARM_BLOCKS_SEEDS to the corpus directory");
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let seed = |name: String, mode: u8, len: usize, hash: &Hash, rest: &[u8]| {
            let mut b = vec![mode];
            b.extend_from_slice(&(len as u32).to_le_bytes());
            b.extend_from_slice(hash);
            b.extend_from_slice(rest);
            std::fs::write(dir.join(name), b).unwrap();
        };
        for len in [
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK + 100,
            5 * BLOCK - 1,
            (1 << 20) - 1,
            1 << 20,
            4 << 20,
        ] {
            let d = data(len);
            let hash = *blake3::hash(&d).as_bytes();
            let outboard: Vec<u8> = cvs(&d).iter().flatten().copied().collect();
            // a true outboard against its hash, and as mode 1
            seed(format!("outboard-{len}"), 0, len, &hash, &outboard);
            seed(format!("own-root-{len}"), 1, len, &hash, &outboard);
            // one CV short, and one CV too many
            let short = &outboard[..outboard.len() - 32];
            seed(format!("short-{len}"), 0, len, &hash, short);
            let mut long = outboard.clone();
            long.extend_from_slice(&[0; 32]);
            seed(format!("long-{len}"), 0, len, &hash, &long);
        }
        // one block or none: never an outboard
        seed("one-block".into(), 0, BLOCK, &[0; 32], &[0; 32]);
        seed("empty".into(), 0, 0, &[0; 32], &[]);
        // content to repeat up to len (mode 2)
        for len in [1, BLOCK, BLOCK + 1, 7 * BLOCK + 3, 1 << 20] {
            seed(format!("content-{len}"), 2, len, &[0; 32], &data(64));
        }
    }

    proptest! {
        #[test]
        fn any_splittable_length_merges_to_its_hash(len in (BLOCK + 1)..(40 * BLOCK)) {
            let d = data(len);
            prop_assert_eq!(root(&cvs(&d), len as u64), Some(*blake3::hash(&d).as_bytes()));
        }
    }
}

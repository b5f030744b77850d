//! Pieces a joiner received lately, kept in memory to serve from. A piece
//! just verified is the one its peers want next (it is rare: this host
//! announced it a moment ago), and received pieces go to disk past the
//! page cache (O_DIRECT), so without this every such request would read
//! the disk back. Bounded by bytes; the oldest piece goes first.

use std::collections::VecDeque;

pub struct RecentPieces<T> {
    entries: VecDeque<(u32, T, usize)>,
    bytes: usize,
    cap: usize,
}

impl<T: Clone> RecentPieces<T> {
    /// Holds at most `cap` bytes of pieces.
    pub fn new(cap: usize) -> Self {
        RecentPieces {
            entries: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    /// Keeps `data` (`len` bytes) for `piece`, dropping the oldest pieces
    /// to make room. A piece larger than the whole cap is not kept.
    pub fn insert(&mut self, piece: u32, data: T, len: usize) {
        if len > self.cap || self.entries.iter().any(|e| e.0 == piece) {
            return;
        }
        while self.bytes + len > self.cap {
            match self.entries.pop_front() {
                Some((_, _, n)) => self.bytes -= n,
                None => break,
            }
        }
        self.entries.push_back((piece, data, len));
        self.bytes += len;
    }

    pub fn get(&self, piece: u32) -> Option<T> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.0 == piece)
            .map(|e| e.1.clone())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_oldest_piece_makes_room() {
        let mut r = RecentPieces::new(3);
        for p in 0..3 {
            r.insert(p, p * 10, 1);
        }
        assert_eq!(r.get(0), Some(0));
        r.insert(3, 30, 1);
        assert_eq!(r.get(0), None, "oldest dropped");
        assert_eq!(r.get(1), Some(10));
        assert_eq!(r.get(3), Some(30));
        r.insert(4, 40, 2);
        assert_eq!((r.get(1), r.get(2), r.get(3)), (None, None, Some(30)));
        assert_eq!(r.bytes(), 3);
    }

    #[test]
    fn a_piece_larger_than_the_cap_is_not_kept_and_drops_nothing() {
        let mut r = RecentPieces::new(4);
        r.insert(1, 'a', 4);
        r.insert(2, 'b', 5);
        assert_eq!((r.get(1), r.get(2)), (Some('a'), None));
        assert_eq!(r.bytes(), 4);
    }

    proptest! {
        /// Whatever the order and sizes, the bytes held never pass the
        /// cap, each piece is held once, and the newest piece (if it fits)
        /// is always there.
        #[test]
        fn never_over_the_cap(ops in prop::collection::vec((0u32..20, 0usize..8), 0..200)) {
            let mut r = RecentPieces::new(16);
            for (p, len) in ops {
                r.insert(p, p, len);
                prop_assert!(r.bytes() <= 16);
                prop_assert_eq!(r.get(p), Some(p));
                let held: usize = r.entries.iter().map(|e| e.2).sum();
                prop_assert_eq!(held, r.bytes());
                let mut ids: Vec<u32> = r.entries.iter().map(|e| e.0).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), r.entries.len());
            }
        }
    }
}

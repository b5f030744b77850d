//! Upload policy of the seed, and of a bridge towards its own group:
//! spread distinct pieces first.
//!
//! While some piece has never been delivered by the seed, the seed serves a
//! request for piece `i` only if nobody else is known to hold `i` and the
//! seed is not already sending `i` to someone (or if it is sending nothing at
//! all: an idle seed always serves). Otherwise it answers
//! `Elsewhere`, and the requester picks another piece (and fetches `i` from
//! a peer). So one full copy leaves the seed as early as possible and the
//! seed's NIC carries about one copy of the image. Once every piece has been
//! delivered once, the seed is one source among many: it serves pieces that
//! no other peer holds.
//!
//! After spreading, the seed also serves every request of a bridge of
//! another group. The other hosts of its group would serve those pieces
//! too, but their uplinks are busy with their own group, and a long-RTT
//! WAN flow sharing a queue with short-RTT LAN flows gets a small share of
//! it: with 2 groups of 4 the WAN into the remote group fell from 90-100 to
//! 50-70 Mbit/s of 100 once spreading ended. Bridges are few (K per group)
//! and fetch each piece once, so this costs the seed at most one copy per
//! group, at WAN speed.
//!
//! A seed that has been idle for `IDLE_GRACE` serves anything: if the
//! holders it points to do not deliver (slow, or lying about what they
//! hold), the requests come back to it. Serving duplicates as soon as it
//! was idle for an instant cost more than it gave: with 7 joiners the seed
//! sent 1.31 copies and the last host finished at 1.42x S/B; with the grace
//! it sends about one copy.
//!
//! Holders are taken at their word, so a peer that claims pieces it does
//! not have (or never serves them) could make the seed send everyone
//! elsewhere in vain. So a peer that asks again for a piece the seed
//! pointed it away from at least `REASK_AFTER` earlier is served: the
//! holders did not deliver it. An honest swarm rarely re-asks (a requester
//! prefers pieces only the seed holds); a lying one costs each requester
//! about `REASK_AFTER` per piece instead of stalling it.
//!
//! A bridge applies the same policy to the hosts of its own group: it is
//! their only source of the pieces it pulls over the WAN, and when each
//! member fetched each new piece from it, its uplink carried 2.3 copies
//! to 3 members (2 groups of 4, 256 MiB) and the members finished 3 s after
//! it. So a bridge serves a new piece to one member and sends the others to
//! that member (`note_serve` counts the serves it does not decide, so that
//! the idle rule holds).
//!
//! It also counts the copies the swarm holds: `copies[i]` is the number of
//! connected peers that announced piece `i` (verified: a peer announces
//! only what it checked), for a seed that leaves once every piece has
//! `goal` copies elsewhere (`copies_reached`).
//!
//! State invariants: `holders[i]` counts connected peers that announced `i`;
//! `active[i]` counts serves of `i` in progress; `delivered[i]` is set once a
//! serve of `i` has completed or a peer announced `i` (a resumed joiner needs
//! no spreading), and `undelivered` counts the unset ones.

use crate::core::LocalMap;
use std::time::{Duration, Instant};

use bitvec::prelude::*;

use super::PeerKey;

/// How long the seed must have served nothing before it serves a piece that
/// others hold.
pub const IDLE_GRACE: Duration = Duration::from_millis(250);

/// After spreading, the seed still serves pieces held by fewer other peers.
/// 1 measured best: with 2 the seed sent 2.75-2.88 copies to 6 joiners on
/// loopback (64 MiB), with 1 it sent 2.31-2.44, in the same time.
const RARE: u32 = 1;

/// A peer sent elsewhere for a piece is served if it asks again this much
/// later.
pub const REASK_AFTER: Duration = Duration::from_secs(2);

/// Refusals remembered per peer at most (a peer could request every
/// piece); past it, that peer's further refusals are not remembered. An
/// honest requester has a few dozen requests in flight, and a refusal is
/// forgotten once the piece is served to it or it announces the piece;
/// 4096 (200 KB per peer) let 512 connections of one ticket holder take
/// 100 MB.
const MAX_REFUSED_PER_PEER: usize = 256;

/// One peer, in one map (a Have looks it up once).
struct PeerState {
    /// The pieces it holds, announced or (`serve_ended`) sent, and how many.
    held: BitVec,
    held_count: usize,
    /// The pieces it announced; `None` until it announced anything.
    announced: Option<BitVec>,
    /// piece -> when the seed first sent it elsewhere for that piece; an
    /// entry ends when the piece is served to or announced by it.
    refused: LocalMap<usize, Instant>,
}

impl PeerState {
    fn new(pieces: usize) -> Self {
        PeerState {
            held: bitvec![0; pieces],
            held_count: 0,
            announced: None,
            refused: LocalMap::default(),
        }
    }
}

pub struct Spreader {
    holders: Vec<u32>,
    active: Vec<u32>,
    active_total: u32,
    delivered: BitVec,
    undelivered: usize,
    /// What the seed knows of each peer.
    peers: LocalMap<PeerKey, PeerState>,
    /// Peers that announced something (a bitfield or a Have).
    announcing: usize,
    copies: Vec<u32>,
    /// Copies of every piece the caller waits for (0: none); `short`
    /// counts the pieces with fewer.
    goal: u32,
    short: usize,
    /// Since when no serve has been in progress.
    idle_since: Option<Instant>,
    /// Serves in progress that `serve_ended` must close, per peer and piece.
    serving: LocalMap<(PeerKey, usize), u32>,
    /// Peers that hold every piece.
    full: usize,
}

impl Spreader {
    pub fn new(pieces: usize, now: Instant) -> Self {
        Spreader {
            idle_since: Some(now),
            holders: vec![0; pieces],
            active: vec![0; pieces],
            active_total: 0,
            delivered: bitvec![0; pieces],
            undelivered: pieces,
            peers: LocalMap::default(),
            announcing: 0,
            copies: vec![0; pieces],
            goal: 0,
            short: 0,
            serving: LocalMap::default(),
            full: 0,
        }
    }

    /// Whether some peer holds every piece (announced or sent to it).
    pub fn has_full_holder(&self) -> bool {
        self.full > 0
    }

    /// Tracks whether every piece is held by at least `goal` peers.
    pub fn with_copies_goal(mut self, goal: u32) -> Self {
        self.goal = goal;
        self.short = if goal == 0 { 0 } else { self.copies.len() };
        self
    }

    /// Whether every piece has `goal` announced copies among connected
    /// peers (false without a goal).
    pub fn copies_reached(&self) -> bool {
        // (the peer count matters for a manifest without pieces: its
        // joiners still need the seed for the manifest)
        self.goal > 0 && self.short == 0 && self.announcing >= self.goal as usize
    }

    /// Whether the spreading phase is over (every piece delivered once).
    pub fn spread_done(&self) -> bool {
        self.undelivered == 0
    }

    /// A peer announced `bits` (its bitfield).
    pub fn peer_bitfield(&mut self, peer: PeerKey, bits: &BitSlice) {
        let n = self.copies.len();
        // the peer counts as announced and known even with nothing held
        let st = self.peers.entry(peer).or_insert_with(|| PeerState::new(n));
        if st.announced.is_none() {
            st.announced = Some(bitvec![0; n]);
            self.announcing += 1;
        }
        for i in bits.iter_ones().take_while(|&i| i < n) {
            self.announced_one(peer, i);
        }
    }

    /// A peer announced piece `i` (a Have): what `peer_bitfield` does for
    /// one piece, without a bitfield of the whole image per Have.
    pub fn peer_have(&mut self, peer: PeerKey, i: usize) {
        if i < self.holders.len() {
            self.announced_one(peer, i);
        }
    }

    fn announced_one(&mut self, peer: PeerKey, i: usize) {
        let n = self.copies.len();
        let st = self.peers.entry(peer).or_insert_with(|| PeerState::new(n));
        st.refused.remove(&i);
        let announced = st.announced.get_or_insert_with(|| {
            self.announcing += 1;
            bitvec![0; n]
        });
        if !announced[i] {
            announced.set(i, true);
            self.copies[i] += 1;
            if self.copies[i] == self.goal {
                self.short -= 1;
            }
        }
        self.holds_one(peer, i);
    }

    /// `peer` holds piece `i`, announced or not yet.
    fn holds_one(&mut self, peer: PeerKey, i: usize) {
        let n = self.holders.len();
        let st = self.peers.entry(peer).or_insert_with(|| PeerState::new(n));
        if !st.held[i] {
            st.held.set(i, true);
            self.holders[i] += 1;
            st.held_count += 1;
            if st.held_count == n {
                self.full += 1;
            }
        }
        // a piece a peer already holds (resumed, or from a peer) counts as
        // delivered: the seed need not spread it
        if !self.delivered[i] {
            self.delivered.set(i, true);
            self.undelivered -= 1;
        }
    }

    pub fn peer_gone(&mut self, peer: PeerKey) {
        let Some(st) = self.peers.remove(&peer) else {
            return;
        };
        for i in st.held.iter_ones() {
            self.holders[i] -= 1;
        }
        if st.held_count == st.held.len() && st.held_count > 0 {
            self.full -= 1;
        }
        if let Some(bits) = st.announced {
            self.announcing -= 1;
            for i in bits.iter_ones() {
                if self.copies[i] == self.goal {
                    self.short += 1;
                }
                self.copies[i] -= 1;
            }
        }
    }

    /// Decides a request for piece `i` by `peer` (`remote`: of another
    /// group, so a bridge); on `true` the caller serves it and must call
    /// `serve_ended`.
    pub fn should_serve(&mut self, peer: PeerKey, i: usize, remote: bool, now: Instant) -> bool {
        if i >= self.holders.len() {
            return false;
        }
        let n = self.holders.len();
        let spread_done = self.spread_done();
        let st = self.peers.entry(peer).or_insert_with(|| PeerState::new(n));
        let others = self.holders[i] - u32::from(st.held[i]);
        let idle = self
            .idle_since
            .is_some_and(|t| now.saturating_duration_since(t) >= IDLE_GRACE);
        let mut ok = idle
            || if spread_done {
                // one source among many: rare pieces only, and whatever a
                // bridge of another group asks (below)
                others < RARE || remote
            } else {
                others == 0 && self.active[i] == 0
            };
        if !ok {
            let mine = &mut st.refused;
            match mine.get(&i) {
                Some(&t) => ok = now.saturating_duration_since(t) >= REASK_AFTER,
                None if mine.len() < MAX_REFUSED_PER_PEER => {
                    mine.insert(i, now);
                }
                None => {}
            }
        }
        if ok {
            st.refused.remove(&i);
            self.start(peer, i);
        }
        ok
    }

    /// A serve of `i` to `peer` that the caller decided without asking
    /// (`should_serve`); it too must end with `serve_ended`.
    pub fn note_serve(&mut self, peer: PeerKey, i: usize) {
        if i < self.holders.len() {
            self.start(peer, i);
        }
    }

    fn start(&mut self, peer: PeerKey, i: usize) {
        *self.serving.entry((peer, i)).or_default() += 1;
        self.active[i] += 1;
        self.active_total += 1;
        self.idle_since = None;
    }

    /// A serve of `i` to `peer` ended. A completed one counts as `peer`
    /// holding `i` at once: its Have comes only after it has received and
    /// verified the piece, and meanwhile other requests for `i` would be
    /// served again by the seed instead of by `peer` (measured: the seed
    /// sent 1.24-1.32 copies to 7 joiners instead of about one).
    /// A serve it did not count (not started by `should_serve` or
    /// `note_serve`) is ignored.
    pub fn serve_ended(&mut self, peer: PeerKey, i: usize, completed: bool, now: Instant) {
        match self.serving.get_mut(&(peer, i)) {
            Some(1) => {
                self.serving.remove(&(peer, i));
            }
            Some(n) => *n -= 1,
            None => return,
        }
        self.active[i] -= 1;
        self.active_total -= 1;
        if self.active_total == 0 {
            self.idle_since = Some(now);
        }
        if completed {
            self.holds_one(peer, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(t: Instant) -> Instant {
        t + IDLE_GRACE
    }

    #[test]
    fn serves_each_piece_once_before_any_twice() {
        let t = Instant::now();
        let mut s = Spreader::new(2, t);
        assert!(s.should_serve(1, 0, false, t));
        assert!(
            !s.should_serve(2, 0, false, t),
            "piece 0 is already on its way to peer 1"
        );
        assert!(s.should_serve(2, 1, false, t));
        s.serve_ended(1, 0, true, t);
        assert!(
            !s.should_serve(2, 0, false, t),
            "peer 1 holds piece 0 now, before its Have arrives"
        );
        s.peer_have(1, 0);
        s.serve_ended(2, 1, true, t);
        assert!(s.spread_done());
        assert!(!s.should_serve(3, 0, false, t), "idle for an instant only");
        assert!(
            s.should_serve(3, 0, false, later(t)),
            "idle for a while: serves anything"
        );
        assert!(
            !s.should_serve(4, 1, false, later(t)),
            "busy, and peer 2 holds piece 1"
        );
        s.peer_gone(2);
        assert!(
            s.should_serve(4, 1, false, later(t)),
            "busy, but nobody else holds piece 1"
        );
    }

    #[test]
    fn a_busy_seed_refuses_held_pieces_until_the_holder_leaves() {
        let t = Instant::now();
        let mut s = Spreader::new(3, t);
        assert!(s.should_serve(1, 0, false, t), "nobody holds piece 0");
        s.peer_have(2, 1);
        assert!(
            !s.should_serve(3, 1, false, t),
            "busy, and peer 2 holds piece 1"
        );
        s.peer_gone(2);
        assert!(s.should_serve(3, 1, false, t), "its only holder left");
        s.serve_ended(1, 0, false, t);
        s.serve_ended(3, 1, true, t);
        assert!(
            !s.spread_done(),
            "piece 0 never arrived, piece 2 never left"
        );
        assert!(!s.should_serve(5, 7, false, later(t)), "out of range");
    }

    #[test]
    fn after_spreading_bridges_of_other_groups_are_served() {
        let t = Instant::now();
        let mut s = Spreader::new(2, t);
        s.peer_bitfield(1, &bitvec![1, 1]);
        assert!(s.should_serve(1, 0, false, later(t)), "idle");
        assert!(
            !s.should_serve(2, 1, false, t),
            "busy; peer 1 holds piece 1"
        );
        assert!(s.should_serve(3, 1, true, t), "a bridge of another group");
    }

    #[test]
    fn pieces_peers_already_hold_need_no_spreading() {
        let t = Instant::now();
        let mut s = Spreader::new(3, t);
        s.peer_bitfield(1, &bitvec![1, 1, 1]);
        assert!(s.spread_done(), "a resumed joiner holds everything");
        assert!(!s.should_serve(2, 0, false, t), "peer 1 holds piece 0");
        assert!(
            s.should_serve(2, 0, false, later(t)),
            "but a seed idle for a while serves it: peer 1 may not deliver"
        );
        assert!(
            !s.should_serve(3, 1, false, later(t)),
            "busy, and peer 1 holds piece 1"
        );
    }

    #[test]
    fn a_peer_that_asks_again_is_served_despite_holders() {
        let t = Instant::now();
        let mut s = Spreader::new(2, t);
        assert!(s.should_serve(1, 0, false, t), "busy from now on");
        // a liar claims everything
        s.peer_bitfield(9, &bitvec![1, 1]);
        assert!(!s.should_serve(2, 1, false, t), "peer 9 holds piece 1");
        let soon = t + REASK_AFTER / 2;
        assert!(!s.should_serve(2, 1, false, soon), "asked again too soon");
        let after = t + REASK_AFTER;
        assert!(
            s.should_serve(2, 1, false, after),
            "peer 9 did not deliver: served on asking again"
        );
        assert!(
            !s.should_serve(3, 1, false, after),
            "another peer is sent elsewhere first"
        );
        s.peer_gone(3);
        assert!(
            !s.should_serve(3, 1, false, after + REASK_AFTER / 2),
            "a peer that left and came back starts over"
        );
    }

    #[test]
    fn counts_announced_copies_not_pieces_merely_sent() {
        let t = Instant::now();
        let mut s = Spreader::new(2, t).with_copies_goal(2);
        assert!(!s.copies_reached());
        assert!(s.should_serve(1, 0, false, t));
        s.serve_ended(1, 0, true, t);
        s.peer_have(1, 1);
        s.peer_bitfield(2, &bitvec![1, 1]);
        assert!(
            !s.copies_reached(),
            "piece 0 was sent to peer 1, not announced"
        );
        s.peer_have(1, 0);
        s.peer_have(1, 0);
        assert!(s.copies_reached());
        s.peer_gone(2);
        assert!(!s.copies_reached(), "peer 2 left with its copies");
        s.peer_bitfield(3, &bitvec![1, 1]);
        assert!(s.copies_reached());
        assert!(!Spreader::new(2, t).copies_reached(), "no goal");
    }

    #[test]
    fn noted_serves_keep_it_busy_and_uncounted_ends_are_ignored() {
        let t = Instant::now();
        let mut s = Spreader::new(2, t);
        s.serve_ended(9, 0, true, t);
        assert!(
            !s.spread_done(),
            "a serve it never counted delivers nothing"
        );
        s.note_serve(1, 0);
        assert!(
            !s.should_serve(2, 0, false, later(t)),
            "piece 0 is on its way to peer 1 (a serve decided elsewhere)"
        );
        s.serve_ended(1, 0, true, later(t));
        assert!(
            !s.should_serve(2, 0, false, later(t)),
            "peer 1 holds piece 0 now, and the host was busy until now"
        );
        assert!(
            s.should_serve(2, 0, false, later(later(t))),
            "idle for a while: serves anything"
        );
        s.serve_ended(2, 0, true, later(later(t)));
        s.serve_ended(2, 0, true, later(later(t)));
        assert!(
            s.should_serve(3, 1, false, later(later(t))),
            "a second end of one serve is ignored (no underflow)"
        );
    }

    #[test]
    fn knows_whether_a_peer_holds_everything() {
        let t = Instant::now();
        let mut s = Spreader::new(3, t);
        assert!(!s.has_full_holder());
        s.peer_bitfield(1, &bitvec![1, 1, 0]);
        s.peer_have(1, 1);
        assert!(!s.has_full_holder());
        s.peer_have(1, 2);
        assert!(s.has_full_holder());
        s.peer_bitfield(2, &bitvec![1, 1, 1]);
        s.peer_gone(1);
        assert!(s.has_full_holder(), "peer 2 still does");
        s.peer_gone(2);
        assert!(!s.has_full_holder());
        // a piece sent to a peer counts too
        s.peer_bitfield(3, &bitvec![1, 1, 0]);
        s.note_serve(3, 2);
        s.serve_ended(3, 2, true, t);
        assert!(s.has_full_holder());
        assert!(!Spreader::new(0, t).has_full_holder(), "nothing to hold");
    }
}

//! The cross-group side of `Download`: remote peers, the bridge role, and
//! what a bridge asks other groups for (group-rarest, and stripes when
//! several groups pull at once).

use std::time::Instant;

use super::{Download, PeerKey, lowest_score, missing};
use crate::core::group::{BridgeShare, stripe_owner};

impl Download {
    /// A peer of another group, the one tagged `group`
    /// (`group::group_tag`).
    pub fn add_remote_peer(&mut self, peer: PeerKey, group: u64) {
        self.insert_peer(peer, Some(group));
    }

    /// Tags this host's group (`group::group_tag`); the tags of the groups
    /// still pulling the image in decide which pieces a bridge prefers to
    /// fetch from a group that has them all (`pick_remote`).
    pub fn set_group(&mut self, group: u64) {
        self.group = group;
    }

    /// Makes this host a bridge of its group with `share`, or (`None`) not
    /// a bridge. Cross-group requests already in flight run to the end
    /// even when the new share no longer covers them: their bytes are
    /// already crossing the WAN, and cancelling would throw away what has
    /// arrived (the next bridge picks among many pieces, so it seldom asks
    /// for one of these). Only new requests follow the new share.
    pub fn set_bridge(&mut self, share: Option<BridgeShare>) {
        self.bridge = share;
    }

    pub fn bridge(&self) -> Option<BridgeShare> {
        self.bridge
    }

    /// Whether `peer` is in another group.
    pub fn peer_is_remote(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.remote)
    }

    /// Group-rarest: a piece of this bridge's share that no local peer
    /// holds and nobody is fetching; among those, the one fewest remote
    /// peers hold, so that several groups pulling from one source take
    /// different pieces and can trade them. Past those, a WAN endgame
    /// (`wan_endgame`).
    ///
    /// With other groups still pulling too, each piece has an owner among
    /// them (`group::stripe_owner`), so that the pulling groups take
    /// disjoint thirds (halves...) across the uplink of a group with a
    /// complete copy and trade the rest among themselves, instead of each
    /// pulling every piece through it:
    /// - From a peer of a group with a complete copy, this bridge asks only
    ///   for its own group's stripe while this host misses some of it, or
    ///   while another pulling group holds a piece this one could fetch
    ///   from it (from a source that is not backing off). Each piece then
    ///   leaves the full group once. (As a mere preference, a bridge whose
    ///   stripe was all asked for took the others' pieces there too: at
    ///   4 x 4 the seed's group sent 1.3 S.)
    /// - Past that, with nothing to trade, it takes the others' pieces
    ///   there too: that helps a group slower than the rest (a thinner
    ///   WAN), at the cost of a piece crossing the full group's uplink
    ///   twice.
    /// - From a peer of a group still pulling, its own stripe comes first.
    pub(super) fn pick_remote(&mut self, key: PeerKey, now: Instant) -> Option<usize> {
        let share = self.bridge?;
        let pulling = self.pulling_groups();
        let p = &self.peers[&key];
        let (skip, availability, inflight) = (&self.skip, &self.availability, &self.inflight);
        let remote_availability = &self.remote_availability;
        let me = self.group;
        let striped = pulling.len() > 1;
        let mine = |i: usize| !striped || stripe_owner(i, &pulling) == me;
        let wanted = |i: usize| availability[i] == 0 && inflight[i] == 0 && share.takes(i);
        // a remote peer whose group is not pulling is in a full group
        let only_mine = striped
            && !pulling.contains(&p.group)
            && (skip.iter_zeros().any(|i| stripe_owner(i, &pulling) == me)
                || self.peers.values().any(|q| {
                    // a source that is backing off, or failed the piece,
                    // offers nothing (a peer that claims pieces and never
                    // serves them must not hold the full group back)
                    q.remote
                        && q.group != me
                        && pulling.contains(&q.group)
                        && q.src.is_ready(now)
                        && missing(&q.bits, skip).any(|i| wanted(i) && !q.src.avoids(i))
                }));
        let best = lowest_score(
            &mut self.rng,
            missing(&p.bits, skip)
                .filter(|&i| wanted(i) && !p.src.avoids(i) && (!only_mine || mine(i)))
                .map(|i| {
                    (
                        i,
                        if mine(i) { 0 } else { 1u32 << 31 } + remote_availability[i],
                    )
                }),
        );
        best.or_else(|| self.wan_endgame(key, now))
    }

    /// A piece of this bridge's share stuck at one source of another group
    /// (late by `late::WAN_LATE_FACTOR`), asked of `key` too: a proven peer
    /// of another group with nothing in flight from this host, once no
    /// piece of the share is left unrequested there. At most two requests
    /// of a piece at once; the first to deliver cancels the other.
    fn wan_endgame(&self, key: PeerKey, now: Instant) -> Option<usize> {
        let share = self.bridge?;
        let p = &self.peers[&key];
        if !p.requested.is_empty() || !p.src.is_proven() {
            return None;
        }
        let lacked = |i: usize| !self.skip[i] && self.availability[i] == 0 && share.takes(i);
        let unrequested_left = (0..self.have.len())
            .any(|i| lacked(i) && self.inflight[i] == 0 && self.remote_availability[i] > 0);
        if unrequested_left {
            return None;
        }
        missing(&p.bits, &self.skip)
            .filter(|&i| lacked(i) && self.inflight[i] == 1 && !p.src.avoids(i))
            .filter(|&i| self.late.late_remote_at(i).is_some_and(|t| t <= now))
            .min_by_key(|&i| self.late.late_remote_at(i))
    }

    /// The tags of the groups still pulling the image in: this host's, and
    /// every other group of which no connected member has all pieces.
    fn pulling_groups(&self) -> Vec<u64> {
        let n = self.piece_count();
        let mut full: Vec<u64> = Vec::new();
        let mut all: Vec<u64> = vec![self.group];
        for p in self.peers.values().filter(|p| p.remote) {
            all.push(p.group);
            if p.held == n {
                full.push(p.group);
            }
        }
        all.sort_unstable();
        all.dedup();
        all.retain(|g| *g == self.group || !full.contains(g));
        all
    }
}

//! The cross-group side of `Download`: remote peers, the bridge role, and
//! what a bridge asks other groups for (group-rarest, and stripes when
//! several groups pull at once).

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
    /// different pieces and can trade them. No endgame duplicates here.
    ///
    /// With other groups still pulling too, each piece has an owner among
    /// them (`group::stripe_owner`): from a group with a complete copy,
    /// pieces this group owns go first, so the pulling groups take
    /// disjoint halves (thirds...) across that group's uplink and trade the
    /// rest among themselves instead of each pulling every piece through
    /// it. A preference, not a rule: once its own stripe is all asked for,
    /// a bridge takes the others' pieces from whoever has them.
    pub(super) fn pick_remote(&mut self, key: PeerKey) -> Option<usize> {
        let share = self.bridge?;
        let pulling = self.pulling_groups();
        let p = &self.peers[&key];
        let (have, availability, inflight) = (&self.have, &self.availability, &self.inflight);
        let remote_availability = &self.remote_availability;
        let me = self.group;
        let others_first = |i: usize| {
            if pulling.len() > 1 && stripe_owner(i, &pulling) != me {
                1u32 << 31
            } else {
                0
            }
        };
        lowest_score(
            &mut self.rng,
            missing(&p.bits, have)
                .filter(|&i| {
                    availability[i] == 0 && inflight[i] == 0 && share.takes(i) && !p.src.avoids(i)
                })
                .map(|i| (i, others_first(i) + remote_availability[i])),
        )
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

//! Which piece to ask a peer of this host's group for next: rarest first
//! (random for the first few), and in the endgame a late piece again.
//! A peer of another group goes to `pick_remote` (`download_remote.rs`).

use std::time::Instant;

use super::{Download, ENDGAME_MAX_UNPROVEN, PeerKey, lowest_score, missing};

impl Download {
    /// The next piece to ask `key` for (`poll_requests`, for each peer
    /// with a free slot), if any.
    pub(super) fn pick(&mut self, key: PeerKey, now: Instant) -> Option<usize> {
        if self.peers[&key].remote {
            return self.pick_remote(key, now);
        }
        let p = &self.peers[&key];
        // this runs once per request over all of a peer's pieces: the
        // avoid map is nearly always empty, so skip hashing then
        let avoided = |i: usize| p.src.avoids(i);
        let random_phase = self.have_count < self.cfg.random_first;
        let (skip, availability, inflight) = (&self.skip, &self.availability, &self.inflight);
        let mut best = lowest_score(
            &mut self.rng,
            missing(&p.bits, skip)
                .filter(|&i| inflight[i] == 0 && !avoided(i))
                .map(|i| (i, if random_phase { 0 } else { availability[i] })),
        );
        if best.is_some() {
            return best;
        }
        // Endgame: only when nothing unrequested that some peer holds is
        // left (a piece nobody holds must not keep the others from being
        // duplicated to faster peers).
        let unrequested_left = (0..self.have.len())
            .any(|i| !self.skip[i] && self.inflight[i] == 0 && self.availability[i] > 0);
        if unrequested_left {
            return None;
        }
        // Nor while more is to come that this group will then hold: pieces
        // held for the local source (the index of a basis), or pieces only
        // another group holds (a member waiting for its bridge). Such a
        // host is out of work for most of a run, and it duplicated every
        // late piece, mostly into cancels mid-piece: 1 x 8 and 2 x 4 delta
        // runs of a 1 GiB tree (p = 1%) received 1.24-1.27 (max 1.35) and
        // 1.14-1.15 (max 1.30) x the changed bytes at the NIC, 1.12-1.15
        // (1.19) and 1.08 (1.12) with this rule, in the same time.
        let more_to_come = self.holding()
            || (0..self.have.len())
                .any(|i| !self.skip[i] && self.inflight[i] == 0 && self.remote_availability[i] > 0);
        if more_to_come {
            return None;
        }
        // Only a peer with nothing in flight duplicates (libtorrent's
        // strict endgame), and only a piece that is late: most of what is
        // in flight when the endgame starts arrives in time, and a copy of
        // it only takes bandwidth from the rest. Duplicating into every
        // free slot at once made the endgame of 16 hosts on 200 Mbit/s
        // NICs 45-50 duplicate requests per host, cancelled mid-piece.
        if !p.requested.is_empty() {
            return None;
        }
        let mut best_inflight = u8::MAX;
        for i in missing(&p.bits, &self.skip) {
            if avoided(i) || !self.late.is_late(i, now) {
                continue;
            }
            let n = self.proven_inflight[i];
            let unproven = self.inflight[i] - n;
            if n < self.cfg.endgame_dup
                && n < best_inflight
                && (p.src.is_proven() || unproven < ENDGAME_MAX_UNPROVEN)
            {
                best_inflight = n;
                best = Some(i);
            }
        }
        best
    }
}

//! A joiner's download state: which pieces it has, which peers hold what,
//! and which requests are in flight. The node feeds it events and asks it
//! which requests to start (`poll_requests`).
//!
//! Peers are local (this host's group) or remote (another group). Local
//! peers are asked for any piece they hold. Remote peers are asked only by
//! a bridge (`set_bridge`), only for pieces of its share that no local peer
//! holds and nobody is fetching (group-rarest), and twice only for a piece
//! stuck at one source (`wan_endgame`): every cross-group byte crosses a
//! WAN link. When several groups pull at once,
//! a bridge asks a group with a complete copy for its own group's stripe
//! first (`download_remote.rs`).
//!
//! Invariants (checked by `check_invariants` in tests):
//! * `availability[i]` = number of local peers whose bitfield has `i`;
//!   `remote_availability[i]` the same for remote peers.
//! * `inflight[i]` = number of peers with `i` in their `requested` set; a
//!   piece we have is never in flight (receiving it cancels the others).
//! * A peer's requests number at most `per_peer`, all peers' at most `total`.
//!
//! Slots: a local peer may have `total / n` requests in flight when `n`
//! local peers are ready and hold pieces this host lacks, clamped to
//! `per_peer_min ..= per_peer`: one source gets a deep pipeline, and many
//! share the total instead of the fastest few taking it all.
//!
//! Picking: while we hold fewer than `random_first` pieces, a random piece
//! (so new hosts soon have something to trade); after that the rarest
//! piece among the peer's, random tie-break. Peers are served in order of
//! measured throughput and each fills its slots before the next, so fast
//! sources get the slots. When every missing piece is already requested
//! (endgame), a peer with nothing in flight duplicates one request of a
//! piece that is late (see `late`), at most `endgame_dup` per piece,
//! counting only requests to peers that have delivered a piece: a peer
//! that never answers cannot use up a piece's duplicates. The first copy
//! to arrive wins and `piece_received` returns the others to cancel.

use crate::core::LocalMap;
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use thiserror::Error;

use super::group::BridgeShare;
use super::late::Lateness;
pub use super::limits::{DownloadConfig, INFLIGHT_BYTES};
use super::source::Source;

/// In the endgame, requests of one piece to peers that have not delivered
/// yet, at most (they never keep a proven peer from a duplicate).
const ENDGAME_MAX_UNPROVEN: u8 = 8;

/// The node's handle for a connected peer.
pub type PeerKey = u64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolViolation {
    #[error("bitfield has {got} bits, the manifest has {want} pieces")]
    BitfieldLength { got: usize, want: usize },
    #[error("piece index {index} out of range ({count} pieces)")]
    PieceIndex { index: usize, count: usize },
    #[error("unknown peer")]
    UnknownPeer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The data failed its hash: the caller drops the peer.
    Corrupt,
    /// Deadline missed, stream reset, connection lost, or local I/O error.
    Failed,
    /// The peer does not have the piece after all.
    Missing,
    /// The peer asks us to fetch it elsewhere for now.
    Elsewhere,
    /// The peer's copy changed after the manifest was made: it no longer
    /// holds the piece, and nobody may hold it any more.
    Changed,
}

/// A duplicate request to cancel (endgame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancel {
    pub peer: PeerKey,
    pub piece: u32,
}

struct Peer {
    /// In another group: only a bridge asks it, and only for pieces no
    /// local peer holds.
    remote: bool,
    /// Its group's tag (`group::group_tag`).
    group: u64,
    bits: BitVec,
    /// Ones in `bits`.
    held: usize,
    has_bitfield: bool,
    requested: Vec<u32>,
    /// When each of `requested` was asked for (same order).
    requested_at: Vec<Instant>,
    /// Its rate, request window and backoffs.
    src: Source,
}

/// The candidate with the lowest score, ties broken uniformly at random
/// (reservoir sampling, one pass).
fn lowest_score(
    rng: &mut SmallRng,
    candidates: impl Iterator<Item = (usize, u32)>,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut best_score = u32::MAX;
    let mut ties = 0u32;
    for (i, score) in candidates {
        if score < best_score {
            best_score = score;
            best = Some(i);
            ties = 1;
        } else if score == best_score {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = Some(i);
            }
        }
    }
    best
}

/// The pieces `bits` holds that `have` lacks, in order. Word by word, so
/// late in a download (few pieces missing) a pick skips what is held 64 at
/// a time instead of looking at each piece.
fn missing<'a>(bits: &'a BitVec, have: &'a BitVec) -> impl Iterator<Item = usize> + 'a {
    let n = bits.len().min(have.len());
    bits.as_raw_slice()
        .iter()
        .zip(have.as_raw_slice())
        .enumerate()
        .flat_map(|(w, (&b, &h))| {
            let mut x = b & !h;
            std::iter::from_fn(move || {
                if x == 0 {
                    return None;
                }
                let bit = x.trailing_zeros() as usize;
                x &= x - 1;
                Some(w * usize::BITS as usize + bit)
            })
        })
        .take_while(move |&i| i < n)
}

/// Request limits now: the config's, grown while pieces cost less on the
/// wire than their size (`limits::scale`).
#[derive(Clone, Copy)]
struct Limits {
    total: usize,
    per_peer: usize,
    per_remote_peer: usize,
}

impl Limits {
    /// How many requests `p` may have in flight at most.
    fn max_slots(&self, p: &Peer) -> usize {
        if p.remote {
            self.per_remote_peer
        } else {
            self.per_peer
        }
    }

    /// How many requests `p` may have in flight now, a local peer at most
    /// `local_cap` (`Download::local_cap`).
    fn slots(&self, p: &Peer, local_cap: usize) -> usize {
        if p.remote {
            p.src.window(self.per_remote_peer)
        } else {
            p.src.window(local_cap.min(self.per_peer))
        }
    }
}

pub struct Download {
    cfg: DownloadConfig,
    have: BitVec,
    have_count: usize,
    /// Pieces not to request now: a local source (the basis index) may
    /// fill them (`hold`).
    held: BitVec,
    /// `have | held`: what a pick skips.
    skip: BitVec,
    availability: Vec<u32>,
    remote_availability: Vec<u32>,
    inflight: Vec<u8>,
    /// The same, counting only proven peers' requests (the endgame cap).
    proven_inflight: Vec<u8>,
    inflight_total: usize,
    /// When each piece in flight turns late (endgame duplicates).
    late: Lateness,
    peers: LocalMap<PeerKey, Peer>,
    /// Set while this host is one of its group's bridges.
    bridge: Option<BridgeShare>,
    /// This host's group tag (`set_group`).
    group: u64,
    /// Pieces a peer said its copy of no longer matches the manifest.
    changed: BitVec,
    /// Bytes a piece took on the wire lately (moving average; starts at
    /// the piece size).
    wire: f64,
    rng: SmallRng,
}

impl Download {
    pub fn new(have: BitVec, cfg: DownloadConfig, seed: u64) -> Self {
        let n = have.len();
        Download {
            have_count: have.count_ones(),
            held: BitVec::repeat(false, n),
            skip: have.clone(),
            have,
            availability: vec![0; n],
            remote_availability: vec![0; n],
            inflight: vec![0; n],
            proven_inflight: vec![0; n],
            inflight_total: 0,
            late: Lateness::new(n),
            peers: LocalMap::default(),
            bridge: None,
            group: 0,
            changed: BitVec::repeat(false, n),
            wire: cfg.piece_size as f64,
            rng: SmallRng::seed_from_u64(seed),
            cfg,
        }
    }

    pub fn piece_count(&self) -> usize {
        self.have.len()
    }
    pub fn have(&self) -> &BitSlice {
        &self.have
    }
    pub fn have_count(&self) -> usize {
        self.have_count
    }
    pub fn is_complete(&self) -> bool {
        self.have_count == self.have.len()
    }

    /// Pieces not to request until `release`d or filled locally
    /// (`local`): a basis is being indexed and may hold them.
    pub fn hold(&mut self, pieces: &BitSlice) {
        for i in pieces.iter_ones().filter(|&i| i < self.have.len()) {
            if !self.have[i] {
                self.held.set(i, true);
                self.skip.set(i, true);
            }
        }
    }

    /// A held piece may be requested now.
    pub fn release(&mut self, i: usize) {
        if i < self.held.len() && self.held.replace(i, false) {
            self.skip.set(i, self.have[i]);
        }
    }

    /// Whether any piece is still held.
    pub fn holding(&self) -> bool {
        self.held.any()
    }

    /// Every held piece may be requested now.
    pub fn release_all(&mut self) {
        self.held.fill(false);
        self.skip.copy_from_bitslice(&self.have);
    }

    /// A piece filled locally (found whole in the basis): held, so never
    /// requested. Returns whether it is new.
    pub fn local(&mut self, i: usize) -> bool {
        if i >= self.have.len() || self.have[i] {
            return false;
        }
        self.held.set(i, false);
        self.have.set(i, true);
        self.skip.set(i, true);
        self.have_count += 1;
        true
    }

    /// A piece this host lacks that a source reported changed (its file
    /// was modified after the manifest was made) and that no connected
    /// peer holds: unless a host that fetched it earlier appears, nobody
    /// can deliver it.
    pub fn lost_to_change(&self) -> Option<u32> {
        self.changed.iter_ones().find_map(|i| {
            let held = self.availability[i] + self.remote_availability[i] > 0;
            (!self.have[i] && !held).then_some(i as u32)
        })
    }
    pub fn inflight_total(&self) -> usize {
        self.inflight_total
    }
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// A peer of this host's group.
    pub fn add_peer(&mut self, peer: PeerKey) {
        self.insert_peer(peer, None);
    }

    fn insert_peer(&mut self, peer: PeerKey, remote_group: Option<u64>) {
        let n = self.piece_count();
        let group = remote_group.unwrap_or(self.group);
        self.peers.entry(peer).or_insert_with(|| Peer {
            remote: remote_group.is_some(),
            group,
            held: 0,
            bits: bitvec![0; n],
            has_bitfield: false,
            requested: Vec::new(),
            requested_at: Vec::new(),
            src: Source::new(self.cfg.initial_window),
        });
    }

    fn avail_mut(&mut self, remote: bool) -> &mut Vec<u32> {
        if remote {
            &mut self.remote_availability
        } else {
            &mut self.availability
        }
    }

    /// Forgets a peer; its in-flight requests become requestable again.
    pub fn remove_peer(&mut self, peer: PeerKey) {
        if let Some(p) = self.peers.remove(&peer) {
            let avail = self.avail_mut(p.remote);
            for i in p.bits.iter_ones() {
                avail[i] -= 1;
            }
            for i in p.requested {
                self.inflight[i as usize] -= 1;
                self.update_asked_at(i as usize);
                self.inflight_total -= 1;
                if p.src.is_proven() {
                    self.proven_inflight[i as usize] -= 1;
                }
            }
        }
    }

    pub fn peer_bitfield(
        &mut self,
        peer: PeerKey,
        bits: &BitSlice,
    ) -> Result<(), ProtocolViolation> {
        let n = self.piece_count();
        if bits.len() != n {
            return Err(ProtocolViolation::BitfieldLength {
                got: bits.len(),
                want: n,
            });
        }
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(ProtocolViolation::UnknownPeer)?;
        let avail = if p.remote {
            &mut self.remote_availability
        } else {
            &mut self.availability
        };
        for i in bits.iter_ones() {
            if !p.bits[i] {
                p.bits.set(i, true);
                p.held += 1;
                avail[i] += 1;
            }
        }
        p.has_bitfield = true;
        Ok(())
    }

    pub fn peer_have(&mut self, peer: PeerKey, i: usize) -> Result<(), ProtocolViolation> {
        let count = self.piece_count();
        if i >= count {
            return Err(ProtocolViolation::PieceIndex { index: i, count });
        }
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(ProtocolViolation::UnknownPeer)?;
        if !p.bits[i] {
            p.bits.set(i, true);
            p.held += 1;
            let remote = p.remote;
            self.avail_mut(remote)[i] += 1;
        }
        Ok(())
    }

    /// Whether some connected peer (of any group) lacks piece `i`, so may
    /// ask this host for it.
    pub fn lacked_by_a_peer(&self, i: usize) -> bool {
        let holders = self.availability[i] as usize + self.remote_availability[i] as usize;
        holders < self.peers.len()
    }

    /// Whether `peer` has every piece (a seed or a finished joiner).
    pub fn peer_is_complete(&self, peer: PeerKey) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.held == self.piece_count())
    }

    /// Whether `peer` holds a piece we lack.
    pub fn peer_is_interesting(&self, peer: PeerKey) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.bits.iter_ones().any(|i| !self.have[i]))
    }

    fn finish_request(&mut self, peer: PeerKey, i: u32) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(pos) = p.requested.iter().position(|&r| r == i) else {
            return false;
        };
        p.requested.swap_remove(pos);
        p.requested_at.swap_remove(pos);
        if p.src.is_proven() {
            self.proven_inflight[i as usize] -= 1;
        }
        self.inflight[i as usize] -= 1;
        self.inflight_total -= 1;
        self.update_asked_at(i as usize);
        true
    }

    /// After a request of `i` ended: the oldest of its requests left, if
    /// any (a fresh duplicate that outlives the first request is not late
    /// at once). Scans the requests in flight, a few dozen at most.
    fn update_asked_at(&mut self, i: usize) {
        let oldest = if self.inflight[i] == 0 {
            None
        } else {
            self.peers
                .values()
                .flat_map(|p| p.requested.iter().zip(&p.requested_at))
                .filter(|(r, _)| **r as usize == i)
                .map(|(_, t)| *t)
                .min()
        };
        self.late.set_oldest(i, oldest);
    }

    /// A piece arrived from `peer` and verified, taking `elapsed`. Returns
    /// duplicate requests for it to cancel.
    pub fn piece_received(
        &mut self,
        peer: PeerKey,
        i: u32,
        bytes: u64,
        elapsed: Duration,
    ) -> Vec<Cancel> {
        let tracked = self.finish_request(peer, i);
        // the typical time of this group's sources, and apart that of
        // other groups' (a bridge's WAN pieces take longer)
        if tracked && let Some(p) = self.peers.get(&peer) {
            self.late.delivered(elapsed, p.remote);
        }
        if bytes > 0 {
            self.wire = 0.8 * self.wire + 0.2 * bytes as f64;
        }
        let limits = self.limits();
        if let Some(p) = self.peers.get_mut(&peer) {
            let slots = limits.max_slots(p);
            if p.src.delivered(bytes, elapsed, slots) {
                // newly proven: its requests count towards the endgame cap
                for &r in &p.requested {
                    self.proven_inflight[r as usize] += 1;
                }
            }
        }
        if (i as usize) < self.have.len() && !self.have[i as usize] {
            self.have.set(i as usize, true);
            self.skip.set(i as usize, true);
            self.have_count += 1;
        }
        let dups: Vec<Cancel> = self
            .peers
            .iter()
            .filter(|(_, p)| p.requested.contains(&i))
            .map(|(&peer, _)| Cancel { peer, piece: i })
            .collect();
        for c in &dups {
            self.finish_request(c.peer, c.piece);
        }
        dups
    }

    /// A request ended without a verified piece.
    pub fn piece_failed(&mut self, peer: PeerKey, i: u32, why: Failure, now: Instant) {
        if !self.finish_request(peer, i) {
            return;
        }
        let backoff = self.cfg.elsewhere_backoff;
        if let Some(p) = self.peers.get_mut(&peer) {
            match why {
                Failure::Missing | Failure::Changed => {
                    if why == Failure::Changed {
                        self.changed.set(i as usize, true);
                    }
                    if p.bits[i as usize] {
                        p.bits.set(i as usize, false);
                        p.held -= 1;
                        let avail = if p.remote {
                            &mut self.remote_availability
                        } else {
                            &mut self.availability
                        };
                        avail[i as usize] -= 1;
                    }
                }
                Failure::Elsewhere => p.src.sent_elsewhere(i, now + backoff),
                // slow or broken: others go first (see `Source::failed`)
                Failure::Failed => p.src.failed(i, now, backoff),
                Failure::Corrupt => {}
            }
        }
    }

    /// The earliest backoff or endgame deadline (`late_at`) still pending
    /// after `now`, for the caller's timer (expired ones are not reported,
    /// or a finished download, which no longer purges them, would wake its
    /// caller in a loop).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if self.is_complete() {
            return None;
        }
        // a piece asked of another group may turn late here too (a
        // member got it) or there (`wan_endgame`)
        let late = self.peers.values().flat_map(|p| {
            p.requested.iter().flat_map(|&i| {
                let remote = p.remote.then(|| self.late.late_remote_at(i as usize));
                [self.late.late_at(i as usize), remote.flatten()]
                    .into_iter()
                    .flatten()
            })
        });
        self.peers
            .values()
            .flat_map(|p| p.src.wake_times().copied())
            .chain(late)
            .filter(|t| *t > now)
            .min()
    }

    /// Decides which requests to start now.
    pub fn poll_requests(&mut self, now: Instant) -> Vec<(PeerKey, u32)> {
        let mut out = Vec::new();
        if self.is_complete() {
            return out;
        }
        let limits = self.limits();
        if self.inflight_total >= limits.total {
            return out; // every slot taken: the usual case after an event
        }
        for p in self.peers.values_mut() {
            p.src.expire(now);
        }
        let cap = self.local_cap(now, &limits);
        // fastest first; unmeasured peers count as fast so they get tried
        let mut order: Vec<(PeerKey, f64, u64)> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.has_bitfield
                    && p.src.is_ready(now)
                    && p.requested.len() < limits.slots(p, cap)
                    && (!p.remote || self.bridge.is_some())
            })
            .map(|(&k, p)| (k, p.src.order_rate(), self.rng.random()))
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
        // fill the fastest peer's slots first, then the next one's
        for (key, _, _) in order {
            while self.inflight_total < limits.total
                && self.peers[&key].requested.len() < limits.slots(&self.peers[&key], cap)
            {
                let Some(i) = self.pick(key, now) else { break };
                let p = self.peers.get_mut(&key).expect("peer in order");
                p.requested.push(i as u32);
                p.requested_at.push(now);
                self.late.asked(i, now);
                self.inflight[i] += 1;
                if p.src.is_proven() {
                    self.proven_inflight[i] += 1;
                }
                self.inflight_total += 1;
                out.push((key, i as u32));
            }
        }
        out
    }

    /// The request limits now (`limits::scale`).
    fn limits(&self) -> Limits {
        let (total, per_peer, per_remote_peer) =
            self.cfg.scaled(super::limits::scale(&self.cfg, self.wire));
        Limits {
            total,
            per_peer,
            per_remote_peer,
        }
    }

    /// Requests a local peer may have in flight: `total` shared among the
    /// local peers that are ready (not backing off) and hold a piece this
    /// host lacks, within `per_peer_min ..= per_peer`.
    fn local_cap(&self, now: Instant, limits: &Limits) -> usize {
        let sources = self
            .peers
            .values()
            .filter(|p| {
                !p.remote
                    && p.has_bitfield
                    && p.src.is_ready(now)
                    && missing(&p.bits, &self.skip).next().is_some()
            })
            .count();
        (limits.total / sources.max(1))
            .max(self.cfg.per_peer_min)
            .min(limits.per_peer)
    }
}

#[path = "download_pick.rs"]
mod pick;

#[path = "download_remote.rs"]
mod remote;

#[cfg(test)]
#[path = "download_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "download_group_tests.rs"]
mod group_tests;

//! Peers this host knows of but is not connected to, and when to dial them:
//! learned addresses, the dial target, redial backoff and giving up.
//!
//! What one peer says is bounded: a peer list (any ticket holder can send
//! one, with made-up ids and addresses) adds at most `PER_SOURCE` entries
//! per peer that told us, and a peer whose entries failed `SOURCE_FAILS`
//! times (plus 4 per entry of it that connected) is not believed again.
//! The table holds `MAX_KNOWN`; when full, a newcomer takes the place of an
//! entry of the source with the most, if that is another. Peers this host
//! was connected to (first-hand) come before those only heard of
//! (hearsay), and those heard of from several peers before the rest; and
//! hearsay dials pass `limits` (a rate, per-address backoff, per-IP
//! throttling), so that peer lists cannot make honest hosts send
//! handshakes to third parties.

use crate::core::Map;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod limits;

use self::limits::DialLimits;
use crate::core::{LocalMap, LocalSet};
use crate::wire::{PeerId, PeerInfo};

/// This host dials known peers only while it has fewer connections than
/// this; others may still dial it (up to `MAX_CONNECTIONS`). Like
/// BitTorrent's peer limit, it keeps a large swarm a mesh, not a clique.
/// Simulated (session 25, 4 MiB pieces, 10 Gbit/s, seed 1), 40 against
/// 24: 1 x 1,000 (1 GiB) 2.27 against 3.43 T*, but 1 x 10,000 (64 MiB)
/// 88 against 60 T* (median 72 against 35): more dials at once crowd the
/// hubs while ten thousand hosts form the mesh. A fixed target cannot do
/// both; which hosts a newcomer meets is the next step (docs/simulation.md).
const DIAL_TARGET: usize = 24;
/// Members of this host's own group are dialed while it has fewer
/// connections than this, when other groups exist: the bridge election
/// ranks the members a host is connected to, so a group must be a clique
/// for its hosts to agree. Simulated (session 22), with `DIAL_TARGET` for
/// every peer a host with 24 connections (the seed, other groups' bridges)
/// stopped meeting its own group and waited out the 10 s settling: 4
/// groups of 50 (256 MiB, WAN 1 Gbit/s) 7.84 T*. Groups of more than this
/// many hosts still elect from partial views (docs/simulation.md).
pub const GROUP_DIAL_TARGET: usize = 64;
/// A host that fetches across groups (a bridge) keeps connections with
/// this many hosts of every other group, past the dial targets: with three
/// groups or more the remote groups must trade with each other (only then
/// does the seed's group uplink carry one copy, not one per group), and a
/// bridge knows what another group holds only from its hosts' Haves.
/// Simulated (session 23), 4 groups of 50 (256 MiB, 200 Mbit/s NICs, WAN
/// 50 Mbit/s): a bridge with 49 members connected dialed no other group,
/// the seed uploaded 4.26 S and the last host took 3.23 T*.
pub const CROSS_PER_GROUP: usize = 2;
/// No dials at all past this many connections (half of `MAX_CONNECTIONS`,
/// so that others can still reach this host).
const CROSS_CEILING: usize = 256;
const MAX_KNOWN: usize = 1024;
/// Entries one peer's lists may have in the table at once.
pub const PER_SOURCE: usize = 64;
/// Entries of other groups a source keeps however many members of this
/// host's group it names (`learn`): a host that becomes a bridge dials
/// them (`CROSS_PER_GROUP`). Lists put this many first after the first
/// members (`Host::list_for`).
pub const FAR_KEEP: usize = 16;
/// A source whose entries failed this many dials, plus 4 for each of them
/// that connected, is believed no more.
pub(super) const SOURCE_FAILS: u32 = 16;
/// Addresses kept per entry (a host advertises one, or a few).
const MAX_ENTRY_ADDRS: usize = 4;
/// Redial backoff: `REDIAL_AFTER` times the failures so far, at most
/// `REDIAL_MAX`; a peer this host was connected to is forgotten after
/// `MAX_DIAL_FAILURES`, one only heard of after `HEARSAY_FAILURES`. With
/// the 5 s dial timeout that keeps trying a lost peer for about a minute
/// and a half, so a WAN outage of that length heals by itself.
const REDIAL_AFTER: Duration = Duration::from_secs(2);
const REDIAL_MAX: Duration = Duration::from_secs(15);
const MAX_DIAL_FAILURES: u32 = 8;
const HEARSAY_FAILURES: u32 = 2;
/// Two hosts that learn of each other at once (the seed tells both) would
/// dial each other at once, and one of the two connections is then closed
/// as a duplicate, with the requests already made on it. Only the one
/// whose connection is kept (the lower peer id dials) dials at once; the
/// other waits this long for it before dialing itself.
const DIAL_DEFER: Duration = Duration::from_secs(2);

struct Known {
    info: PeerInfo,
    /// Of this host's group.
    near: bool,
    /// The peer whose list named it; `None`: a peer this host was
    /// connected to, at an address it was seen at.
    source: Option<PeerId>,
    /// Other peers that named it too (up to 3).
    vouchers: u8,
    next_dial: Instant,
    failures: u32,
    /// The addresses being dialed now, if it is.
    dialing: Option<Vec<SocketAddr>>,
}

impl Known {
    fn hearsay(&self) -> bool {
        self.source.is_some()
    }
}

/// What the entries of one source came to.
#[derive(Default)]
struct Source {
    entries: usize,
    /// Of them, entries of other groups than this host's.
    far: usize,
    failed: u32,
    connected: u32,
}

impl Source {
    fn distrusted(&self) -> bool {
        self.failed >= SOURCE_FAILS + 4 * self.connected
    }
}

/// Known-but-unconnected peers. The engine decides who may be learned
/// (not itself, not connected, not banned); this decides when to dial.
pub struct Dialer {
    /// This host's group.
    group: String,
    known: Map<PeerId, Known>,
    /// Entries of other groups in `known`.
    far: usize,
    /// Sources with entries in the table, or that were distrusted (bounded
    /// like the table).
    sources: Map<PeerId, Source>,
    limits: DialLimits,
    /// Entries being dialed now.
    dialing: usize,
    /// Nothing can be dialed before this time, for the `cross` it was
    /// found with, unless the table changes (`touch`): `take_due` runs
    /// after every event and would otherwise sort the whole table each
    /// time a host waits for its hearsay tokens (20% of the simulator's
    /// time at 300 hosts).
    quiet: Option<(Instant, bool)>,
}

impl Dialer {
    pub fn new(group: &str, now: Instant) -> Dialer {
        Dialer {
            group: group.to_owned(),
            known: Map::default(),
            far: 0,
            sources: Map::default(),
            limits: DialLimits::new(now),
            dialing: 0,
            quiet: None,
        }
    }

    /// The table changed: `take_due` must look at it again.
    fn touch(&mut self) {
        self.quiet = None;
    }

    /// Remembers a peer that `source`'s list named, to dial soon (after
    /// `DIAL_DEFER` if `defer`: the peer is expected to dial this host).
    /// Returns whether it was taken (new, or one more voucher for a known
    /// one); not if the source is over its share or distrusted, the table
    /// is full of others' entries, or the peer has no address. A member of
    /// this host's group takes the place of an entry of another
    /// group from the same source when that source is at its share: the
    /// bridge election needs to see the group, and the seed names every
    /// host (simulated, 10 groups of 10: a host heard of 64 of the 99, none
    /// of its own group, and elected itself a second bridge of it).
    pub fn learn(&mut self, mut info: PeerInfo, source: PeerId, defer: bool, now: Instant) -> bool {
        if info.addrs.is_empty() || self.sources.get(&source).is_some_and(Source::distrusted) {
            return false;
        }
        if let Some(k) = self.known.get_mut(&info.id) {
            if k.source.is_some_and(|s| s != source) && k.vouchers < 3 {
                k.vouchers += 1;
                return true;
            }
            return false;
        }
        let near = info.group == self.group;
        let mut mine = self.sources.get(&source).map_or(0, |s| s.entries);
        if mine >= PER_SOURCE && near && self.evict_far(source, now) {
            mine -= 1;
        }
        if mine >= PER_SOURCE || (self.known.len() >= MAX_KNOWN && !self.evict_for(mine, now)) {
            return false;
        }
        if self.sources.len() >= 2 * MAX_KNOWN && !self.sources.contains_key(&source) {
            self.sources.retain(|_, s| s.entries > 0);
        }
        info.addrs.truncate(MAX_ENTRY_ADDRS);
        let wait = if defer { DIAL_DEFER } else { Duration::ZERO };
        // a new entry: `take_due` must look at the table again
        self.touch();
        self.far += usize::from(!near);
        self.known.insert(
            info.id,
            Known {
                info,
                near,
                source: Some(source),
                vouchers: 0,
                next_dial: now + wait,
                failures: 0,
                dialing: None,
            },
        );
        let s = self.sources.entry(source).or_default();
        s.entries += 1;
        s.far += usize::from(!near);
        true
    }

    /// Drops an entry of `source` (not being dialed, least vouched for) of
    /// another group, if it has more than `FAR_KEEP` of them.
    fn evict_far(&mut self, source: PeerId, now: Instant) -> bool {
        if self.sources.get(&source).is_none_or(|s| s.far <= FAR_KEEP) {
            return false;
        }
        self.evict_one(|k| k.source == Some(source) && !k.near, now)
    }

    /// Drops the entry that `pick` takes (not being dialed, least vouched
    /// for), if any.
    fn evict_one(&mut self, pick: impl Fn(&Known) -> bool, now: Instant) -> bool {
        let victim = self
            .known
            .iter()
            .filter(|(_, k)| pick(k) && k.dialing.is_none())
            .min_by_key(|(_, k)| k.vouchers)
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.remove(&id, now);
                true
            }
            None => false,
        }
    }

    /// Makes room for an entry of a source that has `mine` entries: drops
    /// an entry (not being dialed, least vouched for) of the source with
    /// the most, if it has more than `mine` + 1.
    fn evict_for(&mut self, mine: usize, now: Instant) -> bool {
        let Some((&big, _)) = self
            .sources
            .iter()
            .filter(|(_, s)| s.entries > mine + 1)
            .max_by_key(|(_, s)| s.entries)
        else {
            return false;
        };
        self.evict_one(|k| k.source == Some(big), now)
    }

    /// Removes an entry, with its source's count and its dial in flight.
    fn remove(&mut self, id: &PeerId, now: Instant) -> Option<Known> {
        let k = self.known.remove(id)?;
        self.far -= usize::from(!k.near);
        if let Some(s) = k.source.and_then(|s| self.sources.get_mut(&s)) {
            s.entries -= 1;
            s.far -= usize::from(!k.near);
        }
        if let Some(addrs) = &k.dialing {
            self.dialing -= 1;
            if k.hearsay() {
                self.limits.ended(addrs, false, now);
            }
        }
        Some(k)
    }

    /// A dial failed: back off longer each time, forget after a few.
    pub fn failed(&mut self, id: &PeerId, now: Instant) {
        self.touch();
        let Some(k) = self.known.get_mut(id) else {
            return;
        };
        let Some(addrs) = k.dialing.take() else {
            return;
        };
        self.dialing -= 1;
        k.failures += 1;
        k.next_dial = now + (REDIAL_AFTER * k.failures).min(REDIAL_MAX);
        let (hearsay, failures, source) = (k.hearsay(), k.failures, k.source);
        if hearsay {
            self.limits.ended(&addrs, true, now);
        } else {
            for a in addrs {
                self.limits.addr_failed(a, now);
            }
        }
        if let Some(s) = source.and_then(|s| self.sources.get_mut(&s)) {
            s.failed += 1;
            if s.distrusted() {
                let src = source.expect("has a source");
                self.forget_source(src, now);
            }
        }
        let most = if hearsay {
            HEARSAY_FAILURES
        } else {
            MAX_DIAL_FAILURES
        };
        if failures >= most {
            self.remove(id, now);
        }
    }

    /// Drops what a distrusted source told us (but dials in progress).
    fn forget_source(&mut self, source: PeerId, now: Instant) {
        let ids: Vec<PeerId> = self
            .known
            .iter()
            .filter(|(_, k)| k.source == Some(source) && k.dialing.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove(&id, now);
        }
    }

    /// A connection with `id` came up (dialed or accepted); it is no longer
    /// being dialed, whether or not the engine keeps it.
    pub fn connected(&mut self, id: &PeerId, now: Instant) {
        self.touch();
        if let Some(k) = self.known.get_mut(id)
            && let Some(addrs) = k.dialing.take()
        {
            self.dialing -= 1;
            if k.source.is_some() {
                self.limits.ended(&addrs, false, now);
            }
        }
    }

    /// The engine kept a connection with `id`: nothing left to dial, and
    /// the source that named it told the truth.
    pub fn forget(&mut self, id: &PeerId, now: Instant) {
        self.touch();
        if let Some(s) = self
            .remove(id, now)
            .and_then(|k| k.source)
            .and_then(|s| self.sources.get_mut(&s))
        {
            s.connected += 1;
        }
    }

    /// A connection with a peer was lost abnormally: dial it again after a
    /// pause, as if one dial had failed. First-hand if `seen_at` (the
    /// address the connection came from) is one of its addresses: then
    /// only those are kept. Otherwise its addresses are its own word, and
    /// dialed as hearsay from itself.
    pub fn redial_later(&mut self, mut info: PeerInfo, seen_at: SocketAddr, now: Instant) {
        self.touch();
        self.remove(&info.id, now);
        let ip = seen_at.ip().to_canonical();
        let first_hand = info.addrs.iter().any(|a| a.ip().to_canonical() == ip);
        if first_hand {
            info.addrs.retain(|a| a.ip().to_canonical() == ip);
        }
        info.addrs.truncate(MAX_ENTRY_ADDRS);
        let source = (!first_hand).then_some(info.id);
        let near = info.group == self.group;
        if let Some(s) = source {
            let s = self.sources.entry(s).or_default();
            s.entries += 1;
            s.far += usize::from(!near);
        }
        self.far += usize::from(!near);
        self.known.insert(
            info.id,
            Known {
                info,
                near,
                source,
                vouchers: 0,
                next_dial: now + REDIAL_AFTER,
                failures: 1,
                dialing: None,
            },
        );
    }

    /// The peers to dial now, marked as dialing, with the addresses to
    /// try: those due, first-hand before hearsay, members of this host's
    /// group first, as many as keep `connections` plus dials in progress within
    /// the dial target (`GROUP_DIAL_TARGET` for members when
    /// other groups are known). Members of other groups only if this host
    /// fetches across groups (`cross` is `Some`, and counts this host's
    /// connections to a group): within the dial target, and besides it up
    /// to `CROSS_PER_GROUP` in each other group. The others wait, known.
    /// Hearsay entries only as `limits` allow.
    pub fn take_due(
        &mut self,
        now: Instant,
        connections: usize,
        cross: Option<&dyn Fn(&str) -> usize>,
    ) -> Vec<PeerInfo> {
        debug_assert_eq!(
            self.dialing,
            self.known.values().filter(|k| k.dialing.is_some()).count(),
            "the count of dials in flight"
        );
        debug_assert_eq!(
            self.far,
            self.known.values().filter(|k| !k.near).count(),
            "the count of entries of other groups"
        );
        let group_target = self.group_target(cross.is_some());
        let busy = connections + self.dialing;
        if busy >= CROSS_CEILING || (busy >= group_target && cross.is_none()) {
            return Vec::new();
        }
        if self
            .quiet
            .is_some_and(|(until, c)| now < until && c == cross.is_some())
        {
            return Vec::new();
        }
        // hearsay entries only while a token is left (none comes back
        // during this call)
        let token = self.limits.has_token(now);
        let mut later: Option<Instant> = None;
        let mut waiting = false;
        // members of this host's group first: it fetches from them, and
        // the bridge election needs to see them
        let mut due: Vec<(bool, bool, u8, PeerId)> = Vec::new();
        for (id, k) in &self.known {
            if k.dialing.is_some() || !(cross.is_some() || k.near) {
                continue;
            }
            if k.next_dial > now {
                later = Some(later.map_or(k.next_dial, |l| l.min(k.next_dial)));
            } else if k.hearsay() && !token {
                waiting = true;
            } else {
                due.push((!k.near, k.hearsay(), 3 - k.vouchers, *id));
            }
        }
        if due.is_empty() {
            // nothing before the next entry is due or the next token
            let token_at = waiting.then(|| self.limits.next_token(now));
            let until = [later, token_at].into_iter().flatten().min();
            self.quiet = Some((until.unwrap_or(now + REDIAL_MAX), cross.is_some()));
            return Vec::new();
        }
        due.sort_unstable();
        // connections and dials in each other group, counted once per group
        // met (by its name's hash: a table of made-up groups costs one
        // pass each, not one per entry)
        let mut per_group: LocalMap<u64, usize> = LocalMap::default();
        let tag = |g: &str| {
            let mut h = rustc_hash::FxHasher::default();
            g.hash(&mut h);
            h.finish()
        };
        if cross.is_some() {
            for k in self
                .known
                .values()
                .filter(|k| !k.near && k.dialing.is_some())
            {
                *per_group.entry(tag(&k.info.group)).or_default() += 1;
            }
        }
        let mut linked: LocalSet<u64> = LocalSet::default();
        let mut out = Vec::new();
        for (other_group, hearsay, _, id) in due {
            let busy = connections + self.dialing;
            if busy >= CROSS_CEILING {
                break;
            }
            if hearsay && !self.limits.has_token(now) {
                continue;
            }
            let slot = if other_group {
                let g = &self.known[&id].info.group;
                let t = tag(g);
                if linked.insert(t) {
                    *per_group.entry(t).or_default() += cross.map_or(0, |count| count(g));
                }
                if busy >= DIAL_TARGET && per_group.get(&t).copied().unwrap_or(0) >= CROSS_PER_GROUP
                {
                    continue;
                }
                Some(t)
            } else if busy >= group_target {
                continue;
            } else {
                None
            };
            let k = self.known.get_mut(&id).expect("listed above");
            let addrs = if hearsay {
                self.limits.admit(&k.info.addrs, now)
            } else {
                k.info.addrs.clone()
            };
            if addrs.is_empty() {
                continue;
            }
            if let Some(t) = slot {
                *per_group.entry(t).or_default() += 1;
            }
            k.dialing = Some(addrs.clone());
            self.dialing += 1;
            out.push(PeerInfo {
                id,
                group: k.info.group.clone(),
                addrs,
            });
        }
        out
    }

    /// How many connections members of this host's group are dialed up to:
    /// `GROUP_DIAL_TARGET` when other groups exist (this host fetches
    /// across, or has heard of hosts of other groups), else `DIAL_TARGET`.
    /// A ticket holder can make a host of a one-group swarm believe in
    /// other groups with one made-up entry: then it dials up to 64 members
    /// of its group, not 24 (more connections, all to real members; see
    /// docs/security.md).
    fn group_target(&self, cross: bool) -> usize {
        if cross || self.far > 0 {
            GROUP_DIAL_TARGET
        } else {
            DIAL_TARGET
        }
    }

    /// A peer at `addr` connected (its IP runs swarm: `limits`).
    pub fn peer_up(&mut self, addr: SocketAddr) {
        self.limits.up(addr);
    }

    /// A peer at `addr` went away.
    pub fn peer_down(&mut self, addr: SocketAddr) {
        self.limits.down(addr);
    }

    /// Whether any dial is in progress.
    pub fn is_dialing(&self) -> bool {
        self.dialing > 0
    }

    /// Whether a peer never connected before is being dialed (one we just
    /// heard of, not one that went away) on the word of a source that
    /// named a peer that connected, or of several.
    pub fn is_dialing_new(&self) -> bool {
        self.known.values().any(|k| {
            k.dialing.is_some()
                && k.failures == 0
                && (k.vouchers > 0
                    || k.source
                        .and_then(|s| self.sources.get(&s))
                        .is_some_and(|s| s.connected > 0))
        })
    }

    /// Whether this host is still meeting members of its group: one of them
    /// is being dialed, or was learned and has not failed a dial yet while
    /// it would still be dialed (fewer than `GROUP_DIAL_TARGET` connections).
    pub fn meeting(&self, connections: usize) -> bool {
        let more = connections + self.dialing < self.group_target(false);
        self.known
            .values()
            .any(|k| k.near && (k.dialing.is_some() || (more && k.failures == 0)))
    }
}

#[cfg(test)]
mod tests;

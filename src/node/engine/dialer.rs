//! Peers this host knows of but is not connected to, and when to dial them:
//! learned addresses, the dial target, redial backoff and giving up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wire::{PeerId, PeerInfo};

/// This host dials known peers only while it has fewer connections than
/// this; others may still dial it (up to `MAX_CONNECTIONS`). Like
/// BitTorrent's peer limit, it keeps a large swarm a mesh, not a clique.
const DIAL_TARGET: usize = 24;
const MAX_KNOWN: usize = 4096;
/// Redial backoff: `REDIAL_AFTER` times the failures so far, at most
/// `REDIAL_MAX`; a peer is forgotten after `MAX_DIAL_FAILURES`. With the
/// 5 s dial timeout that keeps trying for about a minute and a half, so a
/// WAN outage of that length heals by itself.
const REDIAL_AFTER: Duration = Duration::from_secs(2);
const REDIAL_MAX: Duration = Duration::from_secs(15);
const MAX_DIAL_FAILURES: u32 = 8;
/// Two hosts that learn of each other at once (the seed tells both) would
/// dial each other at once, and one of the two connections is then closed
/// as a duplicate, with the requests already made on it. Only the one
/// whose connection is kept (the lower peer id dials) dials at once; the
/// other waits this long for it before dialing itself.
const DIAL_DEFER: Duration = Duration::from_secs(2);

struct Known {
    info: PeerInfo,
    next_dial: Instant,
    failures: u32,
    dialing: bool,
}

/// Known-but-unconnected peers. The engine decides who may be learned
/// (not itself, not connected, not banned); this decides when to dial.
#[derive(Default)]
pub(super) struct Dialer {
    known: HashMap<PeerId, Known>,
}

impl Dialer {
    /// Remembers a peer to dial soon (after `DIAL_DEFER` if `defer`: the
    /// peer is expected to dial this host), unless the table is full, the
    /// peer has no address, or it is already known.
    pub(super) fn learn(&mut self, info: PeerInfo, defer: bool) {
        if self.known.len() >= MAX_KNOWN || info.addrs.is_empty() {
            return;
        }
        let wait = if defer { DIAL_DEFER } else { Duration::ZERO };
        self.known.entry(info.id).or_insert(Known {
            info,
            next_dial: Instant::now() + wait,
            failures: 0,
            dialing: false,
        });
    }

    /// A dial failed: back off longer each time, forget after a few.
    pub(super) fn failed(&mut self, id: &PeerId) {
        if let Some(k) = self.known.get_mut(id) {
            k.dialing = false;
            k.failures += 1;
            k.next_dial = Instant::now() + (REDIAL_AFTER * k.failures).min(REDIAL_MAX);
            if k.failures >= MAX_DIAL_FAILURES {
                self.known.remove(id);
            }
        }
    }

    /// A connection with `id` came up (dialed or accepted); it is no longer
    /// being dialed, whether or not the engine keeps it.
    pub(super) fn connected(&mut self, id: &PeerId) {
        if let Some(k) = self.known.get_mut(id) {
            k.dialing = false;
        }
    }

    /// The engine kept a connection with `id`: nothing left to dial.
    pub(super) fn forget(&mut self, id: &PeerId) {
        self.known.remove(id);
    }

    /// A connection with a peer was lost abnormally: dial it again after a
    /// pause, as if one dial had failed.
    pub(super) fn redial_later(&mut self, info: PeerInfo) {
        self.known.insert(
            info.id,
            Known {
                info,
                next_dial: Instant::now() + REDIAL_AFTER,
                failures: 1,
                dialing: false,
            },
        );
    }

    /// The peers to dial now, marked as dialing: those due, members of
    /// `group` first, as many as keep `connections` plus dials in progress
    /// within the dial target. Members of other groups only if `cross`
    /// (this host fetches across groups); the others wait, known.
    pub(super) fn take_due(
        &mut self,
        now: Instant,
        connections: usize,
        group: &str,
        cross: bool,
    ) -> Vec<PeerInfo> {
        let dialing = self.known.values().filter(|k| k.dialing).count();
        let room = DIAL_TARGET.saturating_sub(connections + dialing);
        // members of this host's group first: it fetches from them, and
        // the bridge election needs to see them
        let mut due: Vec<&mut Known> = self
            .known
            .values_mut()
            .filter(|k| !k.dialing && k.next_dial <= now && (cross || k.info.group == group))
            .collect();
        due.sort_by_key(|k| k.info.group != group);
        due.into_iter()
            .take(room)
            .map(|k| {
                k.dialing = true;
                k.info.clone()
            })
            .collect()
    }

    /// Whether any dial is in progress.
    pub(super) fn is_dialing(&self) -> bool {
        self.known.values().any(|k| k.dialing)
    }

    /// Whether a peer never connected before is being dialed (one we just
    /// heard of, not one that went away).
    pub(super) fn is_dialing_new(&self) -> bool {
        self.known.values().any(|k| k.dialing && k.failures == 0)
    }

    /// Whether this host is still meeting members of `group`: one of them
    /// is being dialed, or was learned and has not failed a dial yet.
    pub(super) fn meeting(&self, group: &str) -> bool {
        self.known
            .values()
            .any(|k| k.info.group == group && (k.dialing || k.failures == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u8, group: &str) -> PeerInfo {
        PeerInfo {
            id: [id; 16],
            group: group.into(),
            addrs: vec!["10.0.0.1:7000".parse().unwrap()],
        }
    }

    fn ids(due: Vec<PeerInfo>) -> Vec<u8> {
        due.iter().map(|p| p.id[0]).collect()
    }

    #[test]
    fn peers_of_other_groups_wait_until_this_host_fetches_across() {
        let mut d = Dialer::default();
        d.learn(info(1, "a"), false);
        d.learn(info(2, "b"), false);
        let now = Instant::now();
        assert_eq!(ids(d.take_due(now, 0, "a", false)), [1]);
        assert!(
            d.take_due(now, 0, "a", false).is_empty(),
            "the other group's peer waits"
        );
        assert_eq!(ids(d.take_due(now, 0, "a", true)), [2]);
    }

    #[test]
    fn members_of_the_group_come_first_within_the_target() {
        let mut d = Dialer::default();
        for i in 0..DIAL_TARGET as u8 {
            d.learn(info(i, "far"), false);
        }
        d.learn(info(200, "near"), false);
        let due = ids(d.take_due(Instant::now(), 1, "near", true));
        assert_eq!(due.len(), DIAL_TARGET - 1);
        assert_eq!(due[0], 200);
    }
}

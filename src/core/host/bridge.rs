//! The bridge election's timing: when to run it, settling before a first
//! bridge role, members that went away a moment ago; and what a bridge
//! tells other groups (whether it wants their Haves). The election itself
//! is `core::group`.

use std::time::{Duration, Instant};

use super::{Action, Host};
use crate::core::PeerKey;
use crate::core::group::{self, Member};
use crate::wire::Message;

/// A joiner takes no bridge role in its first 300 ms, nor (for its first
/// ten seconds) before a peer has told it who is in the swarm or while it
/// is still dialing members of its group it has just heard of: hosts
/// started together would otherwise each see an empty group, each elect
/// itself and pull the same first pieces over the WAN. The peer list
/// matters for hosts started apart: the seed's bitfield arrives just before
/// its list, and a newcomer that saw no member yet would ask the seed for
/// pieces across groups in between (measured: 2 MiB of a 48 MiB image).
/// 300 ms instead of 1 s (session 5): the remote group's WAN carried 43-48
/// Mbit/s in the first second instead of 2, and the WAN bytes stayed
/// 1.055 x S (2 x 4) and 1.064 x S (3 groups test).
/// A host that is a bridge already does not settle again when it meets a
/// newcomer: by seniority a newcomer seldom outranks it (see `core::group`).
const BRIDGE_SETTLE: Duration = Duration::from_millis(300);
const BRIDGE_SETTLE_MAX: Duration = Duration::from_secs(10);

/// A member whose connection closed still counts in the election for this
/// long: two hosts that dialed each other at once close one of the two
/// connections (`close::DUPLICATE`), and the member is back on the other
/// within milliseconds; without the grace, the next-ranked host became a
/// bridge in between and asked for pieces across groups (measured, 3
/// groups test under load: a piece crossed twice). A bridge that died is
/// replaced this much later, after its idle timeout.
const GONE_GRACE: Duration = Duration::from_secs(2);

/// The most often `tick` (after events, and at least every 250 ms) re-runs
/// the election when no member came or went (a connect or a drop re-runs
/// it at once): often enough for the time-based settling above, and not
/// once per event. Per event it ranked every
/// member by a hash and, until session 10, hashed the whole manifest too:
/// 2.3% of all CPU with 16 hosts of a 256 MiB image, and growing with the
/// image (a 64 GiB manifest is 2 MiB).
const ELECT_EVERY: Duration = Duration::from_millis(100);

impl Host {
    /// `elect`, unless it ran less than `ELECT_EVERY` ago.
    pub(super) fn elect_if_due(&mut self, now: Instant) {
        if self
            .elected_at
            .is_none_or(|at| now.saturating_duration_since(at) >= ELECT_EVERY)
        {
            self.elect(now);
        }
    }

    /// Re-runs the bridge election over the live members of this host's
    /// group that it knows (see `core::group`).
    pub(super) fn elect(&mut self, now: Instant) {
        let Some(d) = &mut self.download else { return };
        self.elected_at = Some(now);
        self.recently_gone
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < GONE_GRACE);
        let others: Vec<Member> = self
            .peers
            .values()
            .filter(|p| !p.remote)
            .map(|p| Member {
                id: p.info.id,
                since: p.since,
            })
            .chain(
                self.recently_gone
                    .iter()
                    .map(|(&id, &(since, _))| Member { id, since }),
            )
            .collect();
        let age = now.saturating_duration_since(self.started);
        let meeting = self.dialer.meeting(self.peers.len());
        let settling = d.bridge().is_none()
            && (age < BRIDGE_SETTLE || ((meeting || !self.heard_peers) && age < BRIDGE_SETTLE_MAX));
        let share = if settling || d.is_complete() {
            None
        } else {
            group::bridge_share(
                &self.bridge_salt,
                Member {
                    id: self.cfg.me,
                    since: self.cfg.since,
                },
                &others,
                self.cfg.bridges,
            )
        };
        if share != d.bridge() {
            match share {
                Some(s) => tracing::info!(
                    group = self.cfg.group,
                    "this host is now bridge {} of {}",
                    s.rank + 1,
                    s.of
                ),
                None => tracing::info!(group = self.cfg.group, "this host is no longer a bridge"),
            }
            d.set_bridge(share);
            if share.is_some() {
                self.stats.was_bridge = true;
            }
        }
    }

    /// Whether this host fetches across groups: a bridge, not complete, in
    /// a group without a full copy. Only such a host dials peers of other
    /// groups (they dial it when they fetch from its group) and wants their
    /// Haves.
    pub fn fetches_across(&self) -> bool {
        !self.group_holds_all()
            && self
                .download
                .as_ref()
                .is_some_and(|d| d.bridge().is_some() && !d.is_complete())
    }

    /// Tells the peers of other groups whether this host wants their Haves:
    /// only while it fetches across groups (`fetches_across`). Otherwise
    /// every host of a group heard every Have of the other groups' hosts
    /// over the WAN and acknowledged each: at 2 groups of 8 (512 MiB),
    /// 6,450 small packets into each non-bridge, 11% of the packets into
    /// the group. A peer that wants Haves again is sent its holder's whole
    /// bitfield first. A message the driver could not queue is retried next
    /// tick (`unsent`).
    pub(super) fn sync_want_haves(&mut self) {
        let want = self.fetches_across();
        for (&key, p) in self.peers.iter_mut() {
            if p.remote && p.told_want_haves != want {
                p.told_want_haves = want;
                self.actions.push_back(Action::Send {
                    key,
                    msg: Message::WantHaves(want),
                });
            }
        }
    }

    /// A `Send` the driver could not queue (the peer's queue is full).
    pub fn unsent(&mut self, key: PeerKey, msg: &Message) {
        if let (Message::WantHaves(on), Some(p)) = (msg, self.peers.get_mut(&key))
            && p.told_want_haves == *on
        {
            p.told_want_haves = !on;
        }
    }
}

//! The engine's side of the bridge election: when to run it, and acting on
//! its outcome (the election itself is `core::group`).

use std::time::Duration;

use super::Engine;
use crate::core::group;
use crate::wire::PeerId;

/// A joiner takes no bridge role in its first 300 ms, nor (for its first
/// ten seconds) while it is still dialing members of its group it has just
/// heard of: hosts started together would otherwise each see an empty
/// group, each elect itself and pull the same first pieces over the WAN.
/// 300 ms instead of 1 s (session 5): the remote group's WAN carried 43-48
/// Mbit/s in the first second instead of 2, and the WAN bytes stayed
/// 1.055 x S (2 x 4) and 1.064 x S (3 groups test).
const BRIDGE_SETTLE: Duration = Duration::from_millis(300);
const BRIDGE_SETTLE_MAX: Duration = Duration::from_secs(10);

impl Engine {
    /// Re-runs the bridge election over the live members of this host's
    /// group that it knows (see `core::group`).
    pub(super) fn elect(&mut self) {
        let Some(d) = &mut self.download else { return };
        let others: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.remote)
            .map(|p| p.info.id)
            .collect();
        let age = self.started.elapsed();
        let meeting = self.dialer.meeting(&self.group.name);
        let settling = age < BRIDGE_SETTLE || (meeting && age < BRIDGE_SETTLE_MAX);
        let share = if settling || d.is_complete() {
            None
        } else {
            group::bridge_share(
                &self.manifest.id().0,
                &self.id.peer_id,
                &others,
                self.group.bridges,
            )
        };
        if share != d.bridge() {
            match share {
                Some(s) => tracing::info!(
                    group = self.group.name,
                    "this host is now bridge {} of {}",
                    s.rank + 1,
                    s.of
                ),
                None => tracing::info!(group = self.group.name, "this host is no longer a bridge"),
            }
            for c in d.set_bridge(share) {
                if let Some(t) = self.fetches.remove(&(c.peer, c.piece)) {
                    t.cancel();
                }
            }
            if share.is_some() {
                self.report.was_bridge = true;
            }
        }
    }
}

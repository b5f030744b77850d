//! Accounting: the run's `Report` (bytes by peer, by group, from the seed)
//! and the live `Status` for progress displays.

use std::collections::BTreeMap;

use super::Engine;
use crate::core::PeerKey;
use crate::node::{Status, hex};

/// Peers a report names at most in `received_from` and `served_to`; the
/// bytes of any more (a peer can come back under new ids without end) are
/// counted under `OTHERS`.
const MAX_REPORT_PEERS: usize = 4096;
const OTHERS: &str = "others";

/// The counter of `id` in a report's map, or that of `OTHERS` once the
/// map names `MAX_REPORT_PEERS` peers.
fn by_peer<'a>(map: &'a mut BTreeMap<String, u64>, id: &[u8]) -> &'a mut u64 {
    let key = hex(id);
    let key = if map.len() >= MAX_REPORT_PEERS && !map.contains_key(&key) {
        OTHERS.to_string()
    } else {
        key
    };
    map.entry(key).or_default()
}

impl Engine {
    /// Names a peer in the report: the address it connected from (or was
    /// dialed at) and its group, so that `received_from` and `served_to`
    /// can be read as hosts. The latest address wins; bounded as those.
    pub(super) fn note_peer(&mut self, id: &[u8], addr: std::net::SocketAddr, group: &str) {
        let map = &mut self.report.peers;
        let key = hex(id);
        if map.len() < MAX_REPORT_PEERS || map.contains_key(&key) {
            map.insert(
                key,
                crate::node::PeerSeen {
                    addr: addr.to_string(),
                    group: crate::text::escape(group).into_owned(),
                },
            );
        }
    }

    /// Counts a verified piece of `bytes` fetched from `key`.
    pub(super) fn count_received(&mut self, key: PeerKey, bytes: u64) {
        self.report.pieces_fetched += 1;
        self.report.bytes_received += bytes;
        if let Some(p) = self.peers.get(&key) {
            *by_peer(&mut self.report.received_from, &p.id) += bytes;
            if Some(p.id) == self.seed_id {
                self.report.received_from_seed += bytes;
            }
            if p.remote {
                self.report.received_cross_group += bytes;
            } else {
                self.report.received_same_group += bytes;
            }
        }
    }

    /// Counts `bytes` served to `key`, whether or not the serve completed.
    pub(super) fn count_served(&mut self, key: PeerKey, bytes: u64) {
        self.report.bytes_served += bytes;
        if let Some(p) = self.peers.get(&key) {
            *by_peer(&mut self.report.served_to, &p.id) += bytes;
            if p.remote {
                self.report.served_cross_group += bytes;
            } else {
                self.report.served_same_group += bytes;
            }
        }
    }

    /// Adds a connection's QUIC counters, when it closes or at exit.
    pub(super) fn count_quic(&mut self, remote: bool, conn: &quinn::Connection) {
        let stats = conn.stats();
        tracing::debug!(?stats, "connection stats");
        if remote {
            self.report.quic_cross_group.add(&stats);
        } else {
            self.report.quic_same_group.add(&stats);
        }
    }

    /// Publishes the live view for progress displays.
    pub(super) fn publish_status(&self) {
        if self.status.is_closed() {
            return; // nobody watches (--quiet)
        }
        let stats = self.host.stats();
        self.status.send_replace(Status {
            pieces_have: self.host.have_count(),
            pieces_total: self.manifest.piece_count(),
            bytes_total: self.manifest.total_size(),
            bytes_received: self.report.bytes_received,
            received_cross_group: self.report.received_cross_group,
            bytes_from_basis: self.report.bytes_from_basis,
            bytes_served: self.report.bytes_served,
            served_cross_group: self.report.served_cross_group,
            peers: self.peers.len(),
            peers_done: self.host.peers_done(),
            complete: self.host.is_complete(),
            group: self.group.name.clone(),
            bridge: self.host.bridge(),
            hashing: None,
            pieces_corrupt: stats.pieces_corrupt as u64,
            peers_banned: stats.peers_banned,
            complete_secs: self.report.complete_secs,
        });
    }

    /// Copies what the host counted into the report, at the end of a run.
    pub(super) fn take_stats(&mut self) {
        let stats = self.host.stats();
        self.report.pieces_corrupt = stats.pieces_corrupt;
        self.report.peers_banned = stats.peers_banned;
        self.report.pieces_changed = stats.pieces_changed;
        self.report.was_bridge = stats.was_bridge;
    }
}

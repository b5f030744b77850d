//! Receive credit: how much a peer may send this host beyond a small base
//! window, shared by all connections of the process.
//!
//! A host needs to receive much only where it asked: the bytes of its own
//! requests (pieces, the manifest). A peer sends little else (requests of
//! 5 bytes, control frames that are read as they come). So a connection's
//! receive window is a small base plus the credit granted here: when a
//! request goes out, the bytes it expects are granted (from a process-wide
//! budget); as they are read, the grant shrinks by as much; when the
//! request ends short (refused, failed, cancelled), what was granted and
//! not received stays with that connection as `pool` (the peer still holds
//! that credit: QUIC credit cannot be taken back), and the next request on
//! the same connection draws on it before the budget.
//!
//! So at any time the credit all peers together hold beyond their base
//! windows is at most `limit`, whatever they send. A peer that keeps
//! credit it was given (asks and never answers) keeps it from the budget
//! until its connection closes; requests find less budget then, and are
//! still answered through the base window, more slowly.

use std::collections::HashMap;

/// A connection, as the caller names it (quinn's `stable_id`).
pub type ConnId = usize;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Conn {
    /// Granted to requests in progress and not yet received.
    granted: u64,
    /// Granted to requests that ended short: the peer still holds it.
    pool: u64,
}

#[derive(Debug)]
pub struct Credit {
    limit: u64,
    used: u64,
    conns: HashMap<ConnId, Conn>,
}

impl Credit {
    pub fn new(limit: u64) -> Self {
        Credit {
            limit,
            used: 0,
            conns: HashMap::new(),
        }
    }

    /// Changes the budget; credit already out is not taken back.
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// A request on `conn` expects `want` more bytes: grants what the
    /// connection's pool and then the budget allow. Returns the bytes
    /// granted (at most `want`).
    pub fn grant(&mut self, conn: ConnId, want: u64) -> u64 {
        let free = self.limit.saturating_sub(self.used);
        let c = self.conns.entry(conn).or_default();
        let from_pool = c.pool.min(want);
        let from_budget = (want - from_pool).min(free);
        c.pool -= from_pool;
        c.granted += from_pool + from_budget;
        self.used += from_budget;
        from_pool + from_budget
    }

    /// `n` granted bytes arrived and were read.
    pub fn consumed(&mut self, conn: ConnId, n: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let n = n.min(c.granted);
            c.granted -= n;
            self.used -= n;
        }
    }

    /// A request ended with `n` granted bytes not received: the peer keeps
    /// that credit, for the connection's next requests.
    pub fn unused(&mut self, conn: ConnId, n: u64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let n = n.min(c.granted);
            c.granted -= n;
            c.pool += n;
        }
    }

    /// The connection closed: its credit returns to the budget.
    pub fn closed(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.used -= c.granted + c.pool;
        }
    }

    /// Whether `conn` has been granted credit and not closed since.
    pub fn knows(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// What `conn`'s receive window holds beyond its base.
    pub fn extra(&self, conn: ConnId) -> u64 {
        self.conns.get(&conn).map_or(0, |c| c.granted + c.pool)
    }

    /// Credit out, all connections together (at most the limit).
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Connections with credit accounted.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_shrink_as_bytes_are_read() {
        let mut c = Credit::new(10);
        assert_eq!(c.grant(1, 4), 4);
        assert_eq!(c.extra(1), 4);
        c.consumed(1, 3);
        assert_eq!((c.extra(1), c.used()), (1, 1));
        c.consumed(1, 1);
        assert_eq!((c.extra(1), c.used()), (0, 0));
    }

    #[test]
    fn the_budget_caps_all_connections_together() {
        let mut c = Credit::new(10);
        assert_eq!(c.grant(1, 6), 6);
        assert_eq!(c.grant(2, 6), 4, "only what is left");
        assert_eq!(c.grant(3, 6), 0);
        assert_eq!(c.used(), 10);
        c.consumed(1, 6);
        assert_eq!(c.grant(3, 6), 6);
    }

    #[test]
    fn credit_a_request_left_unused_stays_with_its_connection() {
        let mut c = Credit::new(10);
        c.grant(1, 5);
        c.consumed(1, 1); // "missing": one status byte
        c.unused(1, 4);
        assert_eq!((c.extra(1), c.used()), (4, 4));
        // the next request there draws on it first: a peer that refuses
        // every request never holds more than one request's worth
        for _ in 0..100 {
            assert_eq!(c.grant(1, 5), 5);
            c.consumed(1, 1);
            c.unused(1, 4);
        }
        assert_eq!((c.extra(1), c.used()), (4, 4));
        // and it does not count against other connections but as used
        assert_eq!(c.grant(2, 10), 6);
    }

    #[test]
    fn closing_returns_everything() {
        let mut c = Credit::new(10);
        c.grant(1, 5);
        c.unused(1, 2);
        c.grant(2, 3);
        c.closed(1);
        assert_eq!((c.used(), c.connections()), (3, 1));
        // reports after the close change nothing
        c.consumed(1, 3);
        c.unused(1, 3);
        assert_eq!(c.used(), 3);
        c.closed(2);
        assert_eq!((c.used(), c.connections()), (0, 0));
    }

    #[test]
    fn more_reported_than_granted_is_ignored() {
        let mut c = Credit::new(10);
        c.grant(1, 2);
        c.consumed(1, 5);
        c.unused(1, 5);
        assert_eq!((c.extra(1), c.used()), (0, 0));
    }
}

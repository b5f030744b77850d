//! Receive credit on quinn connections (`core::credit`): an authenticated
//! connection's receive window is `tls::POST_AUTH_WINDOW` plus what this
//! host granted for its own requests on it, from one budget per process
//! (`Tuning::conn_window`, 64 MiB). A fetch holds a `Grant` for the bytes it
//! expects; reading them shrinks the window again, and a request that ends
//! short leaves its credit with the connection for the next one.
//!
//! quinn cannot take advertised credit back: shrinking the window only
//! withholds new credit until the peer has sent as much. Each read shrinks
//! the window by what it read, so a connection's window stays within one
//! read of `POST_AUTH_WINDOW` plus its credit.

use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use quinn::{Connection, VarInt};

use super::tls::POST_AUTH_WINDOW;
use crate::core::credit::Credit;

/// The budget (and `Tuning::conn_window`'s default): twice the most a
/// joiner has in flight (32 MiB: 8 requests of 4 MiB,
/// `limits::MIN_REQUESTS`), so that credit a refused or cancelled request
/// leaves with its connection, and the manifest, leave room for the rest.
pub const DEFAULT_LIMIT: u64 = 64 << 20;

static CREDIT: LazyLock<Mutex<Credit>> = LazyLock::new(|| Mutex::new(Credit::new(DEFAULT_LIMIT)));

fn credit() -> MutexGuard<'static, Credit> {
    CREDIT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets the process's budget (the endpoint's `Tuning::conn_window`).
pub fn set_limit(limit: u64) {
    credit().set_limit(limit);
}

/// Credit out now, all connections together, and on how many connections.
pub fn in_use() -> (u64, usize) {
    let c = credit();
    (c.used(), c.connections())
}

/// Applies `conn`'s credit to its receive window. Called with the budget
/// locked, so that updates reach quinn in the order they were decided.
fn apply(c: &Credit, conn: &Connection) {
    let w = POST_AUTH_WINDOW as u64 + c.extra(conn.stable_id());
    conn.set_receive_window(VarInt::from_u64(w).unwrap_or(VarInt::MAX));
}

/// Credit for the bytes one request expects on `conn`; call `read` for
/// each chunk read. Dropping it leaves what was not received with the
/// connection.
pub struct Grant {
    conn: Connection,
    /// Bytes still expected.
    want: u64,
    /// Granted and not yet read.
    held: u64,
    /// The most held at once (the manifest may be far larger than the
    /// budget; it is granted as it is read).
    most: u64,
    /// Read since the window was last shrunk (`APPLY_EVERY`).
    unapplied: u64,
}

/// A grant shrinks its connection's window after this much was read, not
/// after every chunk: each update wakes the connection's driver.
const APPLY_EVERY: u64 = 64 << 10;

impl Grant {
    /// Grants up to `most` of the `want` bytes a stream of `conn` expects.
    pub fn new(conn: &Connection, want: u64, most: u64) -> Grant {
        let mut g = Grant {
            conn: conn.clone(),
            want,
            held: 0,
            most,
            unapplied: 0,
        };
        let mut c = credit();
        if g.top_up(&mut c) {
            apply(&c, &g.conn);
        }
        g
    }

    /// Takes more credit, up to what is still expected and `most`. Returns
    /// whether it took any.
    fn top_up(&mut self, c: &mut Credit) -> bool {
        let target = self.want.min(self.most);
        // a closed connection's credit is returned (`watch`): take none
        if self.held >= target || self.conn.close_reason().is_some() {
            return false;
        }
        let id = self.conn.stable_id();
        let new = !c.knows(id);
        let got = c.grant(id, target - self.held);
        if new {
            watch(&self.conn);
        }
        self.held += got;
        got > 0
    }

    /// `n` bytes of the stream were read.
    pub fn read(&mut self, n: u64) {
        self.want = self.want.saturating_sub(n);
        let used = n.min(self.held);
        self.held -= used;
        self.unapplied += used;
        let mut c = credit();
        c.consumed(self.conn.stable_id(), used);
        if self.top_up(&mut c) || self.unapplied >= APPLY_EVERY || self.want == 0 {
            apply(&c, &self.conn);
            self.unapplied = 0;
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.held == 0 && self.unapplied == 0 {
            return;
        }
        let mut c = credit();
        // what was not received stays in the window: the peer may still
        // send that much
        c.unused(self.conn.stable_id(), self.held);
        if self.unapplied > 0 {
            apply(&c, &self.conn);
        }
    }
}

/// Returns a connection's credit to the budget once it closes.
fn watch(conn: &Connection) {
    let conn = conn.clone();
    tokio::spawn(async move {
        conn.closed().await;
        credit().closed(conn.stable_id());
    });
}

//! The connection handles: taking an authenticated connection in (the host
//! decides whether), and letting one go.

use std::time::Instant;

use quinn::ConnectionError;

use super::Engine;
use crate::core::PeerKey;
use crate::core::host::{Admit, PeerUp};
use crate::node::connect;
use crate::node::identity::Handshaken;
use crate::node::peer::{self, PeerHandle};
use crate::wire::{PeerId, PeerInfo, close};

/// A connected peer's handle, with what the report needs of it.
pub(super) struct Peer {
    pub(super) handle: PeerHandle,
    pub(super) id: PeerId,
    /// In another group than this host.
    pub(super) remote: bool,
}

impl Engine {
    pub(super) fn on_connected(&mut self, h: Handshaken) {
        let now = Instant::now();
        let id = h.hello.peer_id;
        let remote = h.conn.remote_address();
        match self.host.admit(now, id, remote, h.dialed) {
            Admit::Refuse(why) => {
                h.conn.close(close::DUPLICATE.into(), why.as_bytes());
                return;
            }
            Admit::Take { replaces } => {
                if let Some(conn) = replaces.and_then(|old| self.remove_handle(old)) {
                    conn.close(close::DUPLICATE.into(), b"duplicate");
                }
            }
        }
        let info = PeerInfo {
            id,
            group: h.hello.group.clone(),
            addrs: connect::resolve_addrs(&h.hello.addrs, remote),
        };
        let since = h.hello.since;
        let dialed = h.dialed;
        let conn = h.conn.clone();
        let handle = peer::start(
            h,
            self.events_tx.clone(),
            self.have_rx(),
            self.serve_limit.clone(),
            self.manifest.piece_count(),
        );
        let key = handle.key;
        self.note_peer(&id, remote, &info.group);
        let addrs = info.addrs.clone();
        let up = PeerUp {
            info,
            addr: remote,
            dialed,
            since,
        };
        let cross = self.host.peer_up(now, key, up);
        if cross {
            self.id.wan.learn(&addrs);
            crate::node::cc::mark_cross_group(&conn);
        }
        self.peers.insert(
            key,
            Peer {
                handle,
                id,
                remote: cross,
            },
        );
        self.share_send_budget();
    }

    /// A peer's connection closed (or its control stream ended).
    pub(super) fn on_peer_down(&mut self, key: PeerKey, why: &str) {
        let Some(conn) = self.remove_handle(key) else {
            return;
        };
        // A peer that left normally, or that we refused or closed, is not
        // redialed.
        let normal = match conn.close_reason() {
            Some(ConnectionError::ApplicationClosed(c)) => {
                c.error_code == close::DONE.into() || c.error_code == close::DUPLICATE.into()
            }
            Some(ConnectionError::LocallyClosed) => true,
            _ => false,
        };
        self.host.drop_peer(Instant::now(), key, why, normal);
    }

    /// Takes a peer's handle out of the table (counting its connection's
    /// QUIC figures); its connection, to close if need be.
    pub(super) fn remove_handle(&mut self, key: PeerKey) -> Option<quinn::Connection> {
        let p = self.peers.remove(&key)?;
        self.count_quic(p.remote, &p.handle.conn);
        self.share_send_budget();
        Some(p.handle.conn)
    }

    /// Gives every connection its share of the process's send budget
    /// (`tls::SEND_BUDGET`), whenever the number of peers changes.
    fn share_send_budget(&self) {
        let w = crate::node::tls::send_window_share(&self.id.tuning, self.peers.len());
        for p in self.peers.values() {
            p.handle.conn.set_send_window(w);
        }
    }
}

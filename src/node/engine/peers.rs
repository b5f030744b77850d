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
use std::collections::HashMap;

use crate::node::gate::Source;
use crate::node::serve::REQUEST_TIMEOUT;
use crate::wire::{Message, PeerId, PeerInfo, REQUEST_LEN, Request, Status, close};

/// Redirected connections open at once at most (`Engine::redirect`), in
/// all and from one source (an IPv4 address or an IPv6 /64, as the
/// handshake gate counts them); past it a newcomer to a full host is
/// closed without peers.
const MAX_REDIRECTS: usize = 1024;
const MAX_REDIRECTS_PER_SOURCE: usize = 16;
/// Manifests sent to redirected hosts at once (each is buffered whole).
const REDIRECT_MANIFESTS: usize = 8;
/// How long a redirected connection may stay open.
const REDIRECT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The connections being redirected, in all and by source.
pub(super) struct Redirecting {
    open: std::sync::Mutex<(usize, HashMap<Source, usize>)>,
    manifests: tokio::sync::Semaphore,
}

impl Default for Redirecting {
    fn default() -> Self {
        Redirecting {
            open: Default::default(),
            manifests: tokio::sync::Semaphore::new(REDIRECT_MANIFESTS),
        }
    }
}

impl Redirecting {
    fn take(&self, s: Source) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by) = &mut *open;
        let n = by.entry(s).or_default();
        if *total >= MAX_REDIRECTS || *n >= MAX_REDIRECTS_PER_SOURCE {
            if *n == 0 {
                by.remove(&s);
            }
            return false;
        }
        *total += 1;
        *n += 1;
        true
    }

    fn give_back(&self, s: Source) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by) = &mut *open;
        *total -= 1;
        if let Some(n) = by.get_mut(&s) {
            *n -= 1;
            if *n == 0 {
                by.remove(&s);
            }
        }
    }
}

/// Answers one request of a redirected newcomer: the manifest, or nothing
/// (any other request is refused as missing).
async fn send_manifest(
    conn: &quinn::Connection,
    manifest: &[u8],
    sends: &tokio::sync::Semaphore,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut raw = [0u8; REQUEST_LEN];
    tokio::time::timeout(REQUEST_TIMEOUT, recv.read_exact(&mut raw)).await??;
    let _ = recv.stop(close::CANCEL.into());
    if Request::more(&raw)? != 0 || Request::decode(&raw)? != Request::Manifest {
        send.write_all(&[Status::Missing as u8]).await?;
        send.finish()?;
        return Ok(());
    }
    let _turn = sends.acquire().await?;
    send.write_all(&crate::wire::manifest_answer_header(manifest.len()))
        .await?;
    send.write_all(manifest).await?;
    send.finish()?;
    let _ = send.stopped().await;
    Ok(())
}

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
        match self.host.admit(now, id, &h.hello.group, remote, h.dialed) {
            Admit::Refuse(why) => {
                h.conn.close(close::DUPLICATE.into(), why.as_bytes());
                return;
            }
            Admit::Redirect(peers) => {
                self.redirect(h, peers);
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
        let key = peer::next_key();
        self.note_peer(&id, remote, &info.group);
        let addrs = info.addrs.clone();
        let up = PeerUp {
            info,
            addr: remote,
            dialed: h.dialed,
            since: h.hello.since,
        };
        // the WAN settings before the first frame goes out
        let cross = self.host.peer_up(now, key, up);
        if cross {
            self.id.wan.learn(&addrs);
            crate::node::cc::mark_cross_group(&h.conn);
        }
        let handle = peer::start(
            h,
            key,
            self.events_tx.clone(),
            self.have_rx(),
            self.serve_limit.clone(),
            self.manifest.piece_count(),
        );
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

    /// Turns a newcomer away with peers to go to (`Admit::Redirect`): a
    /// Peers frame on its control stream and, if it asks, the manifest
    /// (one request, `REDIRECT_MANIFESTS` sent at once in all); nothing
    /// else. The connection closes with `full` a few round trips after the
    /// newcomer's first control frame (its engine has started: it has the
    /// manifest and is reading the Peers frame), or after `REDIRECT_GRACE`.
    /// The control stream is not finished: a finished stream would end the
    /// newcomer's control reader before the close, which it would then take
    /// for a lost peer to dial again.
    fn redirect(&mut self, h: Handshaken, peers: Vec<PeerInfo>) {
        let source = Source::from(h.conn.remote_address());
        if !self.redirecting.take(source) {
            h.conn.close(close::DUPLICATE.into(), b"full");
            return;
        }
        tracing::debug!(
            peer = crate::node::hex(&h.hello.peer_id[..4]),
            to = peers.len(),
            "table full: redirected"
        );
        let redirecting = self.redirecting.clone();
        let manifest = self.manifest_bytes.clone();
        tokio::spawn(async move {
            let conn = h.conn.clone();
            let (mut send, mut recv) = (h.send, h.recv);
            let work = async {
                send.write_all(&Message::Peers(peers.into()).encode_frame())
                    .await?;
                let mut first = [0u8; 4];
                let manifest = send_manifest(&conn, &manifest, &redirecting.manifests);
                tokio::pin!(manifest);
                let mut served = false;
                loop {
                    tokio::select! {
                        r = recv.read_exact(&mut first) => break r?,
                        r = &mut manifest, if !served => {
                            served = true;
                            r?;
                        }
                    }
                }
                // the Peers frame, if a packet of it was lost, is resent
                // within a few round trips
                tokio::time::sleep((conn.rtt() * 4).min(std::time::Duration::from_secs(1))).await;
                anyhow::Ok(())
            };
            let _ = tokio::time::timeout(REDIRECT_GRACE, work).await;
            conn.close(close::DUPLICATE.into(), b"full");
            redirecting.give_back(source);
        });
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
        // a control stream that ended on an open connection breaks the
        // protocol: no connection stays open outside the table
        conn.close(close::PROTOCOL.into(), b"control stream ended");
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

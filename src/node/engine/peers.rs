//! The table of connected peers: admitting a connection (dedup, gossip of
//! who is in the swarm), their control messages, and dropping them.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bitvec::prelude::*;
use quinn::ConnectionError;

use super::Engine;
use crate::core::PeerKey;
use crate::core::group::group_tag;
use crate::node::connect;
use crate::node::hex;
use crate::node::peer::{self, Handshaken, PeerHandle, close};
use crate::text::Escaped;
use crate::wire::{MAX_PEERS, Message, PeerId, PeerInfo};

/// Connections this host keeps at most; more are refused or not dialed.
const MAX_CONNECTIONS: usize = 512;
/// Distinct peers counted as done at most (beyond `--until-done`).
const MAX_DONE_IDS: usize = 4096;

/// Peers that sent a corrupt piece, by peer id and by the address they
/// spoke from: a peer chooses its id, so one that comes back under a new id
/// from the same socket is refused too. Kept for the whole run, up to
/// `MAX_BANS` of each (each ban costs its peer a new connection and a
/// corrupt piece this host asked for); past it the oldest go first.
#[derive(Default)]
pub(super) struct Bans {
    ids: HashSet<PeerId>,
    addrs: HashSet<SocketAddr>,
    order: VecDeque<(PeerId, SocketAddr)>,
}

const MAX_BANS: usize = 4096;

/// An IPv4 peer seen on a dual-stack socket has an IPv4-mapped IPv6
/// address; compare addresses in their plain form.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Bans {
    pub(super) fn ban(&mut self, id: PeerId, addr: SocketAddr) {
        if self.order.len() >= MAX_BANS
            && let Some((id, addr)) = self.order.pop_front()
        {
            self.ids.remove(&id);
            self.addrs.remove(&addr);
        }
        let addr = canonical(addr);
        self.ids.insert(id);
        self.addrs.insert(addr);
        self.order.push_back((id, addr));
    }

    pub(super) fn refuses(&self, id: &PeerId, addr: SocketAddr) -> bool {
        self.ids.contains(id) || self.addrs.contains(&canonical(addr))
    }

    /// Whether a peer we heard of is banned, by id or any of its addresses.
    pub(super) fn covers(&self, info: &PeerInfo) -> bool {
        self.ids.contains(&info.id)
            || info
                .addrs
                .iter()
                .any(|a| self.addrs.contains(&canonical(*a)))
    }
}

pub(super) struct Peer {
    pub(super) handle: PeerHandle,
    pub(super) info: PeerInfo,
    pub(super) done: bool,
    /// In another group than this host.
    pub(super) remote: bool,
    /// When it started, as its Hello says (for the bridge election).
    pub(super) since: u64,
    /// When it last announced a piece, said Done, or asked us for one, or
    /// a serve to it ended.
    pub(super) heard: Instant,
    /// Pieces being served to it now.
    pub(super) serving: u32,
    /// Whether we last told it we want its Haves (on at first, as the
    /// protocol starts); see `sync_want_haves`.
    pub(super) told_want_haves: bool,
}

impl Engine {
    pub(super) fn on_connected(&mut self, h: Handshaken) {
        let id = h.hello.peer_id;
        self.dialer.connected(&id);
        if self.banned.refuses(&id, h.conn.remote_address()) || self.peers.len() >= MAX_CONNECTIONS
        {
            h.conn.close(close::DUPLICATE.into(), b"not accepted");
            return;
        }
        let dialer = |dialed: bool, them: PeerId| if dialed { self.id.peer_id } else { them };
        if let Some(&old_key) = self.by_id.get(&id) {
            let old = &self.peers[&old_key];
            // Keep the connection dialed by the lower peer id; both sides
            // apply the same rule. Same dialer: the newer one wins.
            let (old_d, new_d) = (dialer(old.handle.dialed, id), dialer(h.dialed, id));
            if new_d > old_d {
                h.conn.close(close::DUPLICATE.into(), b"duplicate");
                return;
            }
            old.handle.conn.close(close::DUPLICATE.into(), b"duplicate");
            // no election in between: the member is only changing
            // connections (the one below, once the new one is in, sees it)
            self.remove_peer(old_key, "replaced by a new connection");
        }
        let remote = h.conn.remote_address();
        let cross = h.hello.group != self.group.name;
        let since = h.hello.since;
        let info = PeerInfo {
            id,
            group: h.hello.group.clone(),
            addrs: connect::resolve_addrs(&h.hello.addrs, remote),
        };
        if cross {
            self.id.wan.learn(&info.addrs);
            crate::node::cc::mark_cross_group(&h.conn);
        }
        let handle = peer::start(
            h,
            self.events_tx.clone(),
            self.have_rx(),
            self.serve_limit.clone(),
            self.manifest.piece_count(),
        );
        let key = handle.key;
        tracing::debug!(peer = hex(&id[..4]), key, %remote, "peer up");
        self.note_peer(&id, remote, &info.group);
        // Tell the newcomer about everyone (also that there is nobody else:
        // it waits for a list before it may become a bridge), and everyone
        // about the newcomer.
        let others: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|p| p.info.clone())
            .take(MAX_PEERS)
            .collect();
        let _ = handle.control.try_send(Message::Peers(others));
        for p in self.peers.values() {
            let _ = p
                .handle
                .control
                .try_send(Message::Peers(vec![info.clone()]));
        }
        if self.complete {
            let _ = handle.control.try_send(Message::Done);
        }
        if let Some(d) = &mut self.download {
            if cross {
                d.add_remote_peer(key, group_tag(&info.group));
            } else {
                d.add_peer(key);
            }
        }
        self.dialer.forget(&id);
        self.dialer.peer_up(remote);
        self.recently_gone.remove(&id);
        self.by_id.insert(id, key);
        self.peers.insert(
            key,
            Peer {
                handle,
                info,
                done: false,
                remote: cross,
                since,
                heard: Instant::now(),
                serving: 0,
                told_want_haves: true,
            },
        );
        self.share_send_budget();
        if !cross {
            self.elect();
        }
    }

    /// Gives every connection its share of the process's send budget
    /// (`tls::SEND_BUDGET`), whenever the number of peers changes.
    fn share_send_budget(&self) {
        let w = crate::node::tls::send_window_share(&self.id.tuning, self.peers.len());
        for p in self.peers.values() {
            p.handle.conn.set_send_window(w);
        }
    }

    pub(super) fn on_message(&mut self, key: PeerKey, msg: Message) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        // what a finished host waits for: pieces announced, Done (not
        // peer lists, which a peer can send without end)
        if matches!(msg, Message::Bitfield(_) | Message::Have(_) | Message::Done) {
            p.heard = Instant::now();
        }
        // the seed spreads towards everyone, a bridge towards its group
        let spread = self.download.is_none() || !p.remote;
        let res = match msg {
            Message::Bitfield(bits) => {
                let bits: BitVec = bits.iter().by_vals().collect();
                if spread {
                    self.spreader.peer_bitfield(key, &bits);
                }
                match &mut self.download {
                    Some(d) => d.peer_bitfield(key, &bits).map_err(|e| e.to_string()),
                    None if bits.len() != self.manifest.piece_count() => {
                        Err("bitfield length".into())
                    }
                    None => Ok(()),
                }
            }
            Message::Have(i) => {
                if spread {
                    self.spreader.peer_have(key, i as usize);
                }
                match &mut self.download {
                    Some(d) => d.peer_have(key, i as usize).map_err(|e| e.to_string()),
                    None if i as usize >= self.manifest.piece_count() => Err("piece index".into()),
                    None => Ok(()),
                }
            }
            Message::Peers(list) => {
                self.heard_peers = true;
                let source = p.info.id;
                for info in list {
                    self.learn(info, source);
                }
                Ok(())
            }
            Message::Done => {
                let p = self.peers.get_mut(&key).expect("checked above");
                p.done = true;
                // what `--until-done` counts; a peer can say Done under new
                // ids without end, and more than N never matter
                if self.done_ids.len() < self.exit.until_done.unwrap_or(0).max(MAX_DONE_IDS) {
                    self.done_ids.insert(p.info.id);
                }
                tracing::debug!(peer = hex(&p.info.id[..4]), "peer is done");
                // it holds every piece, whether or not we heard its Haves
                let all = bitvec![1; self.manifest.piece_count()];
                if spread {
                    self.spreader.peer_bitfield(key, &all);
                }
                match &mut self.download {
                    Some(d) => d.peer_bitfield(key, &all).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            Message::WantHaves(on) => {
                let p = self.peers.get(&key).expect("checked above");
                p.handle.wants_haves.send_replace(on);
                Ok(())
            }
            Message::Hello(_) => Err("second hello".into()),
            Message::Proof(_) => Err("proof after the handshake".into()),
        };
        if let Err(why) = res {
            if let Some(p) = self.peers.get(&key) {
                tracing::warn!(
                    peer = hex(&p.info.id[..4]),
                    "protocol violation: {}",
                    Escaped(&why)
                );
                p.handle.conn.close(close::PROTOCOL.into(), why.as_bytes());
            }
            self.drop_peer(key, &why);
        }
    }

    /// Passes a peer that `source` told us of to the dialer, unless it is
    /// this host, is connected already, or is banned.
    fn learn(&mut self, info: PeerInfo, source: PeerId) {
        if info.id == self.id.peer_id
            || self.by_id.contains_key(&info.id)
            || self.banned.covers(&info)
        {
            return;
        }
        let cross = info.group != self.group.name;
        let addrs = info.addrs.clone();
        // both sides keep the connection the lower id dialed: let it dial
        let defer = info.id < self.id.peer_id;
        if self.dialer.learn(info, source, defer, Instant::now()) && cross {
            // its connections, dialed or accepted, get the WAN settings
            self.id.wan.learn(&addrs);
        }
    }

    /// Drops a peer whose connection closed or must close, and re-runs the
    /// bridge election if it was a member of this host's group.
    pub(super) fn drop_peer(&mut self, key: PeerKey, why: &str) {
        if self.remove_peer(key, why) == Some(false) {
            self.elect();
        }
    }

    /// `drop_peer` without the election; returns whether the peer was
    /// remote, or `None` if it was not in the table.
    fn remove_peer(&mut self, key: PeerKey, why: &str) -> Option<bool> {
        let p = self.peers.remove(&key)?;
        self.share_send_budget();
        let remote = p.remote;
        if !remote && self.download.is_some() {
            self.recently_gone
                .insert(p.info.id, (p.since, Instant::now()));
        }
        let id = p.info.id;
        tracing::debug!(peer = hex(&id[..4]), "peer down: {}", Escaped(why));
        let seen_at = p.handle.conn.remote_address();
        self.dialer.peer_down(seen_at);
        self.count_quic(p.remote, &p.handle.conn);
        if self.by_id.get(&id) == Some(&key) {
            self.by_id.remove(&id);
        }
        if let Some(d) = &mut self.download {
            d.remove_peer(key);
        }
        self.spreader.peer_gone(key);
        self.fetches.retain(|(k, _), t| {
            if *k == key {
                t.cancel();
            }
            *k != key
        });
        // A peer that left normally, or that we refused, is not redialed;
        // nor one that was done, once this host is complete too. (A done
        // host never dials another group's hosts: after a WAN outage the
        // bridge on the other side must dial it again.)
        let normal = matches!(p.handle.conn.close_reason(), Some(ConnectionError::ApplicationClosed(ref c)) if c.error_code == close::DONE.into() || c.error_code == close::DUPLICATE.into())
            || matches!(
                p.handle.conn.close_reason(),
                Some(ConnectionError::LocallyClosed)
            );
        let useful = !p.done || !self.complete;
        if !normal && useful && !self.banned.covers(&p.info) && !self.by_id.contains_key(&id) {
            self.dialer.redial_later(p.info, seen_at, Instant::now());
        }
        Some(remote)
    }
}

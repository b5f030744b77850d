//! The table of connected peers as policy sees it: admitting a connection
//! (bans, the table's size, one connection per pair of hosts), gossip of
//! who is in the swarm, their control messages, and dropping them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitvec::prelude::*;

use super::{Action, Host};
use crate::core::dial::{FAR_KEEP, PER_SOURCE};
use crate::core::group::group_tag;
use crate::core::{PeerKey, Set};
use crate::text::{Escaped, hex};
use crate::wire::{Message, PeerId, PeerInfo, close};

/// Connections this host keeps at most by default (`--max-peers`); more
/// are redirected (`Admit::Redirect`) or not dialed.
pub const MAX_CONNECTIONS: usize = 512;
/// Peers named to a newcomer a full host turns away.
pub const REDIRECT_PEERS: usize = 32;
/// Newcomers are told to the other peers in batches at most this far
/// apart (`flush_gossip`).
pub const GOSSIP_EVERY: Duration = Duration::from_millis(100);
/// Distinct peers counted as done at most (beyond `--until-done`).
const MAX_DONE_IDS: usize = 4096;

/// Peers that sent a corrupt piece, by peer id and by the address they
/// spoke from: a peer chooses its id, so one that comes back under a new id
/// from the same socket is refused too. Kept for the whole run, up to
/// `MAX_BANS` of each (each ban costs its peer a new connection and a
/// corrupt piece this host asked for); past it the oldest go first.
#[derive(Default)]
pub(super) struct Bans {
    ids: Set<PeerId>,
    addrs: Set<SocketAddr>,
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

    fn refuses(&self, id: &PeerId, addr: SocketAddr) -> bool {
        self.ids.contains(id) || self.addrs.contains(&canonical(addr))
    }

    /// Whether a peer we heard of is banned, by id or any of its addresses.
    fn covers(&self, info: &PeerInfo) -> bool {
        self.ids.contains(&info.id)
            || info
                .addrs
                .iter()
                .any(|a| self.addrs.contains(&canonical(*a)))
    }
}

/// A connected peer as policy sees it.
pub struct PeerState {
    pub info: PeerInfo,
    /// The address its connection is seen at.
    pub addr: SocketAddr,
    pub dialed: bool,
    pub done: bool,
    /// In another group than this host.
    pub remote: bool,
    /// When it started, as its Hello says (for the bridge election).
    pub since: u64,
    /// When it last announced a piece, said Done, or asked us for one, or
    /// a serve to it ended.
    pub heard: Instant,
    /// Pieces being served to it now.
    pub serving: u32,
    /// Whether we last told it we want its Haves (on at first, as the
    /// protocol starts); see `sync_want_haves`.
    pub told_want_haves: bool,
    /// Whether its bitfield came (every host sends it first).
    pub sent_bitfield: bool,
}

/// An authenticated connection, as its handshake described it.
pub struct PeerUp {
    /// Its id, group and the addresses it can be reached at.
    pub info: PeerInfo,
    /// Where its connection comes from.
    pub addr: SocketAddr,
    /// This host dialed it.
    pub dialed: bool,
    /// When it started, as its Hello says.
    pub since: u64,
}

/// Whether a new connection is taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Close it with `close::DUPLICATE` and this reason.
    Refuse(&'static str),
    /// This host's table is full: send the newcomer a Peers message of
    /// these hosts, answer its manifest request, then close the connection
    /// (`close::DUPLICATE`, "full"). Without it a joiner whose only
    /// address is a full seed's (the ticket's) could not start at all:
    /// past 512 joiners started at once, half of them (`swarm simulate`).
    Redirect(Vec<PeerInfo>),
    /// Take it; the connection of `replaces` (the same peer's older one)
    /// is dropped from the table already and must be closed
    /// (`close::DUPLICATE`).
    Take { replaces: Option<PeerKey> },
}

impl Host {
    /// A handshake completed with `id` (of `group`) at `addr`: take the
    /// connection? Call `peer_up` next if taken.
    pub fn admit(
        &mut self,
        now: Instant,
        id: PeerId,
        group: &str,
        addr: SocketAddr,
        dialed: bool,
    ) -> Admit {
        self.dialer.connected(&id, now);
        if self.bans.refuses(&id, addr) {
            return Admit::Refuse("not accepted");
        }
        if self.peers.len() >= self.cfg.max_peers && !self.by_id.contains_key(&id) {
            if dialed {
                return Admit::Refuse("full");
            }
            return Admit::Redirect(self.redirect_to(&id, group));
        }
        let Some(&old_key) = self.by_id.get(&id) else {
            return Admit::Take { replaces: None };
        };
        // Keep the connection dialed by the lower peer id; both sides
        // apply the same rule. Same dialer: the newer one wins.
        let me = self.cfg.me;
        let dialer = |dialed: bool| if dialed { me } else { id };
        if dialer(dialed) > dialer(self.peers[&old_key].dialed) {
            return Admit::Refuse("duplicate");
        }
        // no election in between: the member is only changing
        // connections (`peer_up`, once the new one is in, sees it)
        self.remove_peer(now, old_key, "replaced by a new connection", true);
        Admit::Take {
            replaces: Some(old_key),
        }
    }

    /// Up to `REDIRECT_PEERS` peers for a newcomer turned away: of its
    /// group first, still fetching first (a finished host leaves soon),
    /// taken in turn from a moving start so that successive newcomers are
    /// spread over the table.
    fn redirect_to(&mut self, id: &PeerId, group: &str) -> Vec<PeerInfo> {
        let mut all: Vec<&PeerState> = self.peers.values().filter(|p| p.info.id != *id).collect();
        all.sort_by_key(|p| (p.info.group != group, p.done, p.info.id));
        let n = all.len();
        let near = all
            .iter()
            .take_while(|p| p.info.group == group && !p.done)
            .count();
        let from = if near > REDIRECT_PEERS {
            self.redirects % near
        } else {
            0
        };
        self.redirects = self.redirects.wrapping_add(REDIRECT_PEERS);
        (0..n.min(REDIRECT_PEERS))
            .map(|k| {
                all[if k < near { (from + k) % near } else { k }]
                    .info
                    .clone()
            })
            .collect()
    }

    /// What a newcomer of `group` is told of the peers in the table: its
    /// own group first and then every other group once before any twice
    /// (each group in table order), and within a receiver's share of one
    /// source (`PER_SOURCE`, all the list holds: the newcomer would take no
    /// more) at least `FAR_KEEP` of other groups: a host that becomes a
    /// bridge must know hosts of other groups to trade with
    /// (`CROSS_PER_GROUP`). Up to 512 (`MAX_PEERS`) before: the lists in
    /// flight to newcomers were the simulator's peak memory with 2,000
    /// hosts (session 23). Simulated, 1 x 300 (1 GiB): lists sorted by id
    /// made every newcomer dial the same lowest ids (6.5 T*), lists from a
    /// start that moved from newcomer to newcomer (a random mesh) 3.3 T*;
    /// in table order, as before, 1.45.
    fn list_for(&mut self, group: &str) -> Vec<PeerInfo> {
        self.listed = self.listed.wrapping_add(1);
        let mut all: Vec<&PeerInfo> = self.peers.values().map(|p| &p.info).collect();
        all.sort_by(|a, b| (a.group != group, &a.group).cmp(&(b.group != group, &b.group)));
        // (rank in its group, info)
        let mut ranked: Vec<(usize, &PeerInfo)> = Vec::with_capacity(all.len());
        for info in &all {
            let rank = match ranked.last() {
                Some((r, prev)) if prev.group == info.group => r + 1,
                _ => 0,
            };
            ranked.push((rank, info));
        }
        let near_len = all.iter().take_while(|i| i.group == group).count();
        let (near, far) = ranked.split_at_mut(near_len);
        // every other group once before any twice; which group first turns
        // from newcomer to newcomer, so that with more groups than the list
        // has room for every group is named to some
        let mut names: Vec<&str> = far.iter().map(|(_, i)| i.group.as_str()).collect();
        names.dedup();
        let turn = self.listed % names.len().max(1);
        let order = |g: &str| {
            let at = names.binary_search(&g).unwrap_or(0);
            (at + names.len() - turn) % names.len()
        };
        far.sort_by_key(|(rank, i)| (*rank, order(&i.group)));
        let near_first = near_len.min(PER_SOURCE - FAR_KEEP);
        near[..near_first]
            .iter()
            .chain(far.iter().take(FAR_KEEP))
            .chain(near[near_first..].iter())
            .chain(far.iter().skip(FAR_KEEP))
            .take(PER_SOURCE)
            .map(|(_, info)| (*info).clone())
            .collect()
    }

    /// Tells every peer of the newcomers since the last batch (at most
    /// `GOSSIP_EVERY` after the first of them), in one Peers message each.
    /// One message per newcomer to every peer made a seed with 512 peers
    /// queue 512 x 512 messages as a crowd arrived (the simulator's peak
    /// memory, session 23); a receiver keeps `PER_SOURCE` entries of one
    /// source anyway.
    pub(super) fn flush_gossip(&mut self, now: Instant) {
        if self.gossip_due.is_none_or(|at| now < at) {
            return;
        }
        self.gossip_due = None;
        let mut ids = std::mem::take(&mut self.gossip);
        // those still connected, as they are now
        ids.retain(|id| self.by_id.contains_key(id));
        if ids.len() > PER_SOURCE {
            self.gossip = ids.split_off(PER_SOURCE);
            self.gossip_due = Some(now + GOSSIP_EVERY);
        }
        if ids.is_empty() {
            return;
        }
        // one list for all (a host ignores itself in it)
        let news: Arc<[PeerInfo]> = ids
            .iter()
            .map(|id| self.peers[&self.by_id[id]].info.clone())
            .collect();
        for &key in self.peers.keys() {
            self.actions.push_back(Action::Send {
                key,
                msg: Message::Peers(news.clone()),
            });
        }
    }

    /// When the next batch of news is due, if any.
    pub(super) fn gossip_due(&self) -> Option<Instant> {
        self.gossip_due
    }

    /// A taken connection is up as `key`. Returns whether the peer is of
    /// another group.
    pub fn peer_up(&mut self, now: Instant, key: PeerKey, up: PeerUp) -> bool {
        let info = up.info;
        let cross = info.group != self.cfg.group;
        tracing::debug!(peer = hex(&info.id[..4]), key, remote = %up.addr, "peer up");
        // Tell the newcomer about everyone (also that there is nobody else:
        // it waits for a list before it may become a bridge), and everyone
        // about the newcomer, with the next batch of news.
        let list = self.list_for(&info.group);
        self.push(Action::Send {
            key,
            msg: Message::Peers(list.into()),
        });
        if self.gossip.len() < MAX_CONNECTIONS && !self.gossip.contains(&info.id) {
            self.gossip.push(info.id);
        }
        self.gossip_due.get_or_insert(now + GOSSIP_EVERY);
        if self.complete {
            self.push(Action::Send {
                key,
                msg: Message::Done,
            });
        }
        if let Some(d) = &mut self.download {
            if cross {
                d.add_remote_peer(key, group_tag(&info.group));
            } else {
                d.add_peer(key);
            }
        }
        self.dialer.forget(&info.id, now);
        self.dialer.peer_up(up.addr);
        self.recently_gone.remove(&info.id);
        self.by_id.insert(info.id, key);
        self.peers.insert(
            key,
            PeerState {
                info,
                addr: up.addr,
                dialed: up.dialed,
                done: false,
                remote: cross,
                since: up.since,
                heard: now,
                serving: 0,
                told_want_haves: true,
                sent_bitfield: false,
            },
        );
        if !cross {
            self.elect(now);
        }
        cross
    }

    /// A control message from `key`. A message that breaks the protocol
    /// closes and drops the peer.
    pub fn message(&mut self, now: Instant, key: PeerKey, msg: Message) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        // what a finished host waits for: pieces announced, Done (not
        // peer lists, which a peer can send without end)
        if matches!(msg, Message::Bitfield(_) | Message::Have(_) | Message::Done) {
            p.heard = now;
        }
        // the seed spreads towards everyone, a bridge towards its group
        let spread = self.download.is_none() || !p.remote;
        let n = self.manifest.piece_count();
        let res = match msg {
            Message::Bitfield(bits) => {
                p.sent_bitfield = true;
                let bits: BitVec = bits.iter().by_vals().collect();
                if spread {
                    self.spreader.peer_bitfield(key, &bits);
                }
                match &mut self.download {
                    Some(d) => d.peer_bitfield(key, &bits).map_err(|e| e.to_string()),
                    None if bits.len() != n => Err("bitfield length".into()),
                    None => Ok(()),
                }
            }
            Message::Have(i) => {
                if spread {
                    self.spreader.peer_have(key, i as usize);
                }
                match &mut self.download {
                    Some(d) => d.peer_have(key, i as usize).map_err(|e| e.to_string()),
                    None if i as usize >= n => Err("piece index".into()),
                    None => Ok(()),
                }
            }
            Message::Peers(list) => {
                self.heard_peers = true;
                let source = p.info.id;
                // every host sends its bitfield first: a list before it is a
                // full host's redirect, whose peers were told nothing of this
                // one, so none of them will dial it
                let redirect = !p.sent_bitfield;
                for info in list.iter() {
                    self.learn(now, info.clone(), source, redirect);
                }
                Ok(())
            }
            Message::Done => {
                p.done = true;
                // what `--until-done` counts; a peer can say Done under new
                // ids without end, and more than N never matter
                if self.done_ids.len() < self.cfg.until_done.unwrap_or(0).max(MAX_DONE_IDS) {
                    self.done_ids.insert(p.info.id);
                }
                tracing::debug!(peer = hex(&p.info.id[..4]), "peer is done");
                // it holds every piece, whether or not we heard its Haves
                let all = bitvec![1; n];
                if spread {
                    self.spreader.peer_bitfield(key, &all);
                }
                match &mut self.download {
                    Some(d) => d.peer_bitfield(key, &all).map_err(|e| e.to_string()),
                    None => Ok(()),
                }
            }
            Message::WantHaves(on) => {
                self.push(Action::PeerWantsHaves { key, on });
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
                self.push(Action::Close {
                    key,
                    code: close::PROTOCOL,
                    reason: "protocol violation",
                    dropped: true,
                });
            }
            // closed by this host: not redialed
            self.drop_peer(now, key, &why, true);
        }
    }

    /// Passes a peer that `source` told us of to the dialer, unless it is
    /// this host, is connected already, or is banned.
    fn learn(&mut self, now: Instant, info: PeerInfo, source: PeerId, redirect: bool) {
        if info.id == self.cfg.me || self.by_id.contains_key(&info.id) || self.bans.covers(&info) {
            return;
        }
        let cross = info.group != self.cfg.group;
        let addrs = info.addrs.clone();
        // both sides keep the connection the lower id dialed: let it dial
        // (unless it cannot know of this host)
        let defer = info.id < self.cfg.me && !redirect;
        if self.dialer.learn(info, source, defer, now) && cross {
            // its connections, dialed or accepted, get the WAN settings
            self.push(Action::OtherGroup(addrs));
        }
    }

    /// A dial of `id` failed.
    pub fn dial_failed(&mut self, now: Instant, id: &PeerId) {
        self.dialer.failed(id, now);
    }

    /// Drops a peer whose connection closed (`normal`: it left normally or
    /// this host closed it; then it is not redialed), and re-runs the
    /// bridge election if it was a member of this host's group.
    pub fn drop_peer(&mut self, now: Instant, key: PeerKey, why: &str, normal: bool) {
        if self.remove_peer(now, key, why, normal) == Some(false) {
            self.elect(now);
        }
    }

    /// `drop_peer` without the election; returns whether the peer was
    /// remote, or `None` if it was not in the table.
    fn remove_peer(&mut self, now: Instant, key: PeerKey, why: &str, normal: bool) -> Option<bool> {
        let p = self.peers.remove(&key)?;
        if !p.remote && self.download.is_some() {
            self.recently_gone.insert(p.info.id, (p.since, now));
        }
        let id = p.info.id;
        tracing::debug!(peer = hex(&id[..4]), "peer down: {}", Escaped(why));
        self.dialer.peer_down(p.addr);
        if self.by_id.get(&id) == Some(&key) {
            self.by_id.remove(&id);
        }
        if let Some(d) = &mut self.download {
            d.remove_peer(key);
        }
        self.spreader.peer_gone(key);
        let gone: Vec<_> = self
            .fetches
            .iter()
            .filter(|(k, _)| *k == key)
            .copied()
            .collect();
        for (k, piece) in gone {
            self.fetches.remove(&(k, piece));
            self.actions.push_back(Action::Cancel { key: k, piece });
        }
        // A peer that left normally, or that we refused, is not redialed;
        // nor one that was done, once this host is complete too. (A done
        // host never dials another group's hosts: after a WAN outage the
        // bridge on the other side must dial it again.)
        let useful = !p.done || !self.complete;
        if !normal && useful && !self.bans.covers(&p.info) && !self.by_id.contains_key(&id) {
            self.dialer.redial_later(p.info, p.addr, now);
        }
        Some(p.remote)
    }
}

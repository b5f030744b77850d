//! swarm in virtual time: one `core::host::Host` per simulated host, the
//! very policy the real node runs, driven as `node::engine` drives it, over
//! the flow-level network of `net`. What the node does with sockets, disk
//! and timers is done here with events in a queue:
//!
//! * a dial is a handshake of two round trips; each side admits the
//!   connection on its own (`Host::admit`), as two engines do;
//! * control messages (bitfields, Haves, peer lists, Done) arrive one
//!   way's latency after they are sent; a host's Haves go out as the real
//!   control writer sends them, to peers that want them;
//! * a request arrives one way's latency after it is made; the serving
//!   host takes a slot of the connection's serve window and of its total
//!   (`core::serve`), asks its `Host`, and sends the piece: one flow per
//!   connection at a time, oldest request first (quinn's stream priority
//!   in the node); the piece arrives when the flow is through plus one
//!   way's latency. Pieces are never corrupt here, nor is a disk slow.
//! * a joiner starts by dialing the seed (the ticket's address), and
//!   tries again every second for a minute while the seed refuses it.

mod conns;
mod faults;
mod policy;
mod serve;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitvec::prelude::*;

use super::net::Net;
use super::{HostOutcome, Scenario};
use crate::core::host::{Action, Admit, Host, HostConfig, MAX_CONNECTIONS, PeerUp};
use crate::core::serve::ServeWindow;
use crate::core::{Failure, LocalMap, Map, PeerKey};
use crate::manifest::Manifest;
use crate::wire::{Message, PeerId, PeerInfo, close};

/// How long a joiner keeps trying the seed before it gives up.
const BOOTSTRAP_FOR: f64 = 60.0;
const BOOTSTRAP_RETRY: f64 = 1.0;
/// A dial to a host that is gone fails after this (the node's 5 s).
const DIAL_TIMEOUT: f64 = 5.0;
/// A connection over which nothing passes closes after this (QUIC's idle
/// timeout in the node).
const IDLE_TIMEOUT: f64 = 10.0;

/// A connection between hosts `ends[0]` (the dialer) and `ends[1]`.
struct Conn {
    ends: [usize; 2],
    /// Each side's key once it took the connection.
    keys: [Option<PeerKey>; 2],
    open: bool,
    /// Messages that arrived at a side before it took the connection.
    early: [Vec<Message>; 2],
    /// Whether each side wants the other's Haves (the peer's WantHaves).
    wants_haves: [bool; 2],
    /// Serving state of each side towards the other.
    serve: [ServeSide; 2],
}

#[derive(Default)]
struct ServeSide {
    window: Option<ServeWindow>,
    queue: VecDeque<u64>,
    /// Requests being served, oldest first; the first one flows.
    active: VecDeque<u64>,
    flow: Option<u32>,
}

/// A request for a piece, from `from` to the other end of `conn`.
struct Req {
    conn: usize,
    /// The requesting side (0 or 1).
    side: usize,
    piece: u32,
    at: f64,
    cancelled: bool,
}

enum Ev {
    Start(usize),
    /// A joiner tries the seed again.
    Bootstrap(usize),
    Wake(usize),
    /// A handshake completes at side `side` of `conn`.
    Handshake {
        conn: usize,
        side: usize,
    },
    DialFailed {
        host: usize,
        id: PeerId,
    },
    Msg {
        conn: usize,
        to: usize,
        msgs: Vec<Message>,
    },
    /// Haves, one list shared by every peer they go to.
    Haves {
        conn: usize,
        to: usize,
        pieces: Arc<[u32]>,
    },
    Request {
        req: u64,
    },
    CancelRequest {
        req: u64,
    },
    Delivered {
        req: u64,
    },
    Refused {
        req: u64,
        why: Failure,
    },
    /// The requester's deadline for a request.
    /// The host's process dies: no close is sent.
    Die(usize),
    /// Every WAN link goes down (`true`) or comes back.
    Wan(bool),
    /// A connection across the WAN timed out in an outage.
    IdleOut(usize),
    /// Side `from` closes the connection (a redirect's end).
    Close {
        conn: usize,
        from: usize,
    },
    Deadline {
        req: u64,
    },
    /// The connection closed; side `to` hears of it.
    Down {
        conn: usize,
        to: usize,
        normal: bool,
    },
}

struct SimHost {
    host: Option<Host>,
    id: PeerId,
    group: usize,
    addr: SocketAddr,
    start: f64,
    /// The connections of this host by its key.
    conns: LocalMap<PeerKey, usize>,
    /// Every connection it dialed or was dialed on (`exit` closes them).
    all_conns: Vec<usize>,
    /// The most connections it had at once.
    peak_conns: usize,
    /// Pieces already announced (for Haves).
    announced: BitVec,
    serving: usize,
    next_wake: f64,
    done_at: Option<f64>,
    failed: Option<String>,
    exited: bool,
    /// Killed by the scenario (`--fail`).
    died: bool,
    uploaded: f64,
    received: f64,
    bootstrap_until: f64,
}

pub struct Swarm {
    sc: Scenario,
    base: Instant,
    t: f64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free_events: Vec<usize>,
    hosts: Vec<SimHost>,
    by_id: Map<PeerId, usize>,
    conns: Vec<Conn>,
    reqs: LocalMap<u64, Req>,
    /// Live requests by connection, requesting side and piece.
    req_index: LocalMap<(usize, usize, u32), u64>,
    next_req: u64,
    next_key: PeerKey,
    net: Net,
    manifest: Arc<Manifest>,
    /// Flow id -> request it carries.
    flow_req: LocalMap<u32, u64>,
    pub events_run: u64,
    /// Messages delivered to a host's policy, and runs of it (`drive`).
    pub messages: u64,
    pub drives: u64,
    /// (virtual time, bytes the joiners hold), every T* / 20 at first.
    pub delivered: Vec<(f64, f64)>,
    /// Hosts that had an event at the current instant: their policy runs
    /// once, after every event of that instant (`flush`).
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    wan_down: bool,
}

/// Nanoseconds of virtual time.
fn ns(t: f64) -> u64 {
    (t * 1e9).round().max(0.0) as u64
}

impl Swarm {
    pub fn new(sc: &Scenario, manifest: Arc<Manifest>) -> Swarm {
        let n = sc.host_count();
        let mut hosts = Vec::with_capacity(n);
        let mut by_id = Map::default();
        for h in 0..n {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(h as u64 + 1).to_be_bytes());
            // ids in a scrambled order, as random ids are: the lower id
            // dials, and the bridge ranking hashes them anyway
            let scramble = *blake3::hash(&id[..8]).as_bytes();
            id[8..].copy_from_slice(&scramble[..8]);
            id.rotate_left(8);
            by_id.insert(id, h);
            hosts.push(SimHost {
                host: None,
                id,
                group: sc.group_of(h),
                addr: SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + h as u32 + 1), 7000)),
                start: sc.start_of(h),
                conns: Default::default(),
                all_conns: Vec::new(),
                peak_conns: 0,
                announced: BitVec::repeat(false, manifest.piece_count()),
                serving: 0,
                next_wake: f64::INFINITY,
                done_at: None,
                failed: None,
                exited: false,
                died: false,
                uploaded: 0.0,
                received: 0.0,
                bootstrap_until: 0.0,
            });
        }
        let mut s = Swarm {
            sc: sc.clone(),
            base: Instant::now(),
            t: 0.0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free_events: Vec::new(),
            hosts,
            by_id,
            conns: Vec::new(),
            reqs: Default::default(),
            req_index: Default::default(),
            next_req: 1,
            next_key: 1,
            net: sc.network(),
            manifest,
            flow_req: Default::default(),
            events_run: 0,
            messages: 0,
            drives: 0,
            delivered: Vec::new(),
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            wan_down: false,
        };
        for h in 0..n {
            let at = s.hosts[h].start;
            s.at(at, Ev::Start(h));
            if sc.dies(h) {
                s.at(sc.fail_at.max(at), Ev::Die(h));
            }
        }
        if let Some((start, dur)) = sc.wan_outage {
            s.at(start, Ev::Wan(true));
            s.at(start + dur, Ev::Wan(false));
        }
        s
    }

    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(ns(self.t))
    }

    fn at(&mut self, t: f64, ev: Ev) {
        let slot = match self.free_events.pop() {
            Some(i) => {
                self.events[i] = Some(ev);
                i
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.queue
            .push(Reverse((ns(t.max(self.t)), self.seq, slot)));
    }

    fn latency(&self, a: usize, b: usize) -> f64 {
        if self.hosts[a].group == self.hosts[b].group {
            self.sc.lan_latency
        } else {
            self.sc.wan_latency
        }
    }

    /// Runs until every joiner is done or failed, or `until` seconds.
    /// `progress` is called now and then with the time and hosts done.
    pub fn run(&mut self, until: f64, progress: &mut dyn FnMut(f64, usize)) {
        let dt = self.sc.tick;
        let mut next_report = 0.0;
        let mut next_sample = 0.0;
        while self.t < until && !self.all_settled() {
            let end = self.t + dt;
            // pieces whose flows end within this step
            for (flow, into) in self.net.advance(dt) {
                let req = self.flow_req[&flow];
                let t = self.t + into;
                self.flow_done(flow, req, t);
            }
            // events in time order; a host's policy runs once per batch of
            // its events no more than `window` apart (a LAN latency, or the
            // step), at the batch's last event, as an engine drains what is
            // ready before it decides; what that sends lands later
            let (end_ns, window) = (ns(end), ns(self.sc.lan_latency.min(dt)).max(1));
            // (hosts the flows' ends touched run with the first batch)
            let mut batch = (!self.dirty.is_empty()).then(|| ns(self.t));
            loop {
                let next = self
                    .queue
                    .peek()
                    .map(|&Reverse((t, _, _))| t)
                    .filter(|&t| t <= end_ns);
                if let Some(b) = batch
                    && next.is_none_or(|t| t > b + window)
                {
                    self.flush();
                    batch = None;
                    continue;
                }
                let Some(t) = next else { break };
                let Some(Reverse((_, _, slot))) = self.queue.pop() else {
                    break;
                };
                self.t = (t as f64 / 1e9).max(self.t);
                let ev = self.events[slot].take().expect("queued events are set");
                self.free_events.push(slot);
                self.events_run += 1;
                self.handle(ev);
                if batch.is_none() && !self.dirty.is_empty() {
                    batch = Some(t);
                }
            }
            self.t = end;
            if self.t >= next_sample {
                // every T* / 20, sparser as a long run goes on
                next_sample = self.t + (self.sc.t_star() / 20.0).max(self.t / 200.0);
                self.sample_delivered();
            }
            if self.t >= next_report {
                next_report = self.t + 1.0;
                let done = self.hosts.iter().skip(1).filter(|h| h.done_at.is_some());
                progress(self.t, done.count());
            }
        }
    }

    /// Notes the bytes the joiners hold now (duplicates not counted).
    pub fn sample_delivered(&mut self) {
        let size = self.sc.size as f64;
        let r = self
            .hosts
            .iter()
            .skip(1)
            .map(|h| h.received.min(size))
            .sum();
        self.delivered.push((self.t, r));
    }

    fn touch(&mut self, h: usize) {
        if !self.is_dirty[h] {
            self.is_dirty[h] = true;
            self.dirty.push(h);
        }
    }

    /// Runs the policy of every host that had an event in this batch.
    fn flush(&mut self) {
        while let Some(h) = self.dirty.pop() {
            self.is_dirty[h] = false;
            self.drive(h);
        }
    }

    fn all_settled(&self) -> bool {
        self.hosts
            .iter()
            .skip(1)
            .all(|h| h.done_at.is_some() || h.failed.is_some() || h.died)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start(h) => self.start(h),
            Ev::Bootstrap(h) => {
                if !self.hosts[h].exited && self.hosts[h].conns.is_empty() {
                    self.dial(h, 0);
                }
            }
            Ev::Wake(h) => {
                if ns(self.hosts[h].next_wake) <= ns(self.t) {
                    self.hosts[h].next_wake = f64::INFINITY;
                    self.touch(h);
                }
            }
            Ev::Handshake { conn, side } => self.handshake(conn, side),
            Ev::DialFailed { host, id } => {
                if let Some(hh) = self.hosts[host].host.as_mut() {
                    let now = self.base + Duration::from_nanos(ns(self.t));
                    hh.dial_failed(now, &id);
                    self.touch(host);
                }
            }
            Ev::Msg { conn, to, msgs } => {
                for msg in msgs {
                    self.message(conn, to, msg);
                }
            }
            Ev::Haves { conn, to, pieces } => {
                for &i in pieces.iter() {
                    self.message(conn, to, Message::Have(i));
                }
            }
            Ev::Request { req } => self.request(req),
            Ev::CancelRequest { req } => self.cancel_request(req),
            Ev::Delivered { req } => self.delivered(req),
            Ev::Refused { req, why } => {
                let Some(r) = self.take_req(req) else { return };
                if r.cancelled {
                    return;
                }
                let (h, key) = self.end_key(r.conn, r.side);
                if let (Some(key), Some(hh)) = (key, self.hosts[h].host.as_mut()) {
                    let now = self.base + Duration::from_nanos(ns(self.t));
                    hh.piece_failed(now, key, r.piece, why, None);
                    self.touch(h);
                }
            }
            Ev::Down { conn, to, normal } => self.down(conn, to, normal),
            Ev::Close { conn, from } => self.close(conn, from, close::DUPLICATE),
            Ev::Die(h) => self.die(h),
            Ev::IdleOut(c) => self.idle_out(c),
            Ev::Wan(down) => self.wan(down),
            Ev::Deadline { req } => {
                // still not here: the requester gives up on it, and the
                // server stops serving it
                let Some(r) = self.reqs.get(&req).filter(|r| !r.cancelled) else {
                    return;
                };
                let (conn, side, piece) = (r.conn, r.side, r.piece);
                self.req_index.remove(&(conn, side, piece));
                self.reqs.get_mut(&req).expect("found").cancelled = true;
                let lat = self.latency(self.conns[conn].ends[0], self.conns[conn].ends[1]);
                self.at(self.t + lat, Ev::CancelRequest { req });
                let (h, key) = self.end_key(conn, side);
                if let (Some(key), Some(hh)) = (key, self.hosts[h].host.as_mut()) {
                    let now = self.base + Duration::from_nanos(ns(self.t));
                    hh.piece_failed(now, key, piece, Failure::Failed, None);
                    self.touch(h);
                }
            }
        }
    }

    fn take_req(&mut self, id: u64) -> Option<Req> {
        let r = self.reqs.remove(&id)?;
        if self.req_index.get(&(r.conn, r.side, r.piece)) == Some(&id) {
            self.req_index.remove(&(r.conn, r.side, r.piece));
        }
        Some(r)
    }

    fn end_key(&self, conn: usize, side: usize) -> (usize, Option<PeerKey>) {
        let c = &self.conns[conn];
        (c.ends[side], c.keys[side])
    }

    /// The most connections a host had at once: the seed's, and the
    /// joiners' median and most.
    pub fn peak_conns(&self) -> serde_json::Value {
        let mut j: Vec<usize> = self.hosts.iter().skip(1).map(|h| h.peak_conns).collect();
        j.sort_unstable();
        serde_json::json!({
            "seed": self.hosts[0].peak_conns,
            "median": j.get(j.len() / 2),
            "max": j.last(),
        })
    }

    pub fn outcome(&self) -> Vec<HostOutcome> {
        self.hosts
            .iter()
            .map(|h| HostOutcome {
                group: h.group,
                start: h.start,
                done: h.done_at,
                failed: h.failed.clone(),
                died: h.died,
                uploaded: h.uploaded,
                received: h.received,
            })
            .collect()
    }

    /// Bytes carried by each group's WAN downlink.
    pub fn wan_in(&self) -> Vec<f64> {
        let n = self.hosts.len();
        (0..self.sc.groups)
            .map(|g| self.net.carried[2 * n + self.sc.groups + g])
            .collect()
    }

    /// Bytes carried by each group's WAN uplink.
    pub fn wan_out(&self) -> Vec<f64> {
        let n = self.hosts.len();
        (0..self.sc.groups)
            .map(|g| self.net.carried[2 * n + g])
            .collect()
    }
}

fn to_wire(bits: &BitSlice) -> BitVec<u8, Lsb0> {
    bits.iter().by_vals().collect()
}

//! A BitTorrent-like baseline over the same network, as a mainstream
//! client (libtorrent's defaults, aria2 in the compare benchmark) runs a
//! swarm: no groups, no bridges. Each joiner gets `PEERS` random others
//! from the tracker and connects to them (links go both ways, so a host has
//! about twice as many peers; a peer not started yet is idle until it
//! starts); it uploads to at most `UNCHOKE` peers at once, chosen every
//! `RECHOKE` seconds by the bytes they sent it lately (a finished host: by
//! the bytes it sent them, fastest first), plus one optimistic unchoke
//! rotated every `OPTIMISTIC` seconds; a free slot goes to an interested
//! peer at once. A host asks each peer that unchokes it for up to
//! `PIPELINE` pieces at a time, rarest first among its peers, and in
//! endgame for pieces already asked of others. A request reaches its peer
//! one way's latency after it is made; the piece is then one flow, with
//! TCP's share of a link (inversely proportional to the round trip), as
//! the cascade's copies, and arrives one way's latency after its last
//! byte leaves. A choke does not cancel requests already made. The
//! scenario's stagger applies; failures and WAN outages do not (the
//! baseline is for the plain push).

use bitvec::prelude::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::Scenario;
use crate::core::LocalMap;

/// Peers a host asks the tracker for (libtorrent's `num_want`, 50).
const PEERS: usize = 50;
/// Regular unchoke slots (BitTorrent's classic 4).
const UNCHOKE: usize = 4;
const RECHOKE: f64 = 10.0;
const OPTIMISTIC: f64 = 30.0;
/// Pieces asked of one unchoking peer at once: a client pipelines block
/// requests, about a piece ahead.
const PIPELINE: usize = 2;

struct Transfer {
    piece: u32,
    from: usize,
    /// When the request reaches `from`, and the flow once it has.
    starts: f64,
    flow: Option<u32>,
    /// One way's latency.
    lat: f64,
}

struct Host {
    have: BitVec,
    have_count: usize,
    asked: BitVec,
    /// How many of its peers hold each piece.
    avail: Vec<u16>,
    peers: Vec<usize>,
    /// Peers it uploads to now (regular, then the optimistic one).
    unchoked: Vec<usize>,
    optimistic: Option<usize>,
    /// Bytes from and to each peer since the last rechoke.
    got: LocalMap<usize, f64>,
    sent: LocalMap<usize, f64>,
    inflight: Vec<Transfer>,
    done: Option<f64>,
    started: bool,
}

/// When each host has the image (host 0, the seed, at 0), and the bytes
/// into each group over its WAN link.
pub struct Outcome {
    pub done: Vec<Option<f64>>,
    pub wan_in: Vec<f64>,
}

pub fn run(sc: &Scenario, pieces: usize, piece_len: impl Fn(usize) -> f64, until: f64) -> Outcome {
    let n = sc.host_count();
    let mut rng = SmallRng::seed_from_u64(sc.seed ^ 0xb177);
    let mut hosts: Vec<Host> = (0..n)
        .map(|h| Host {
            have: BitVec::repeat(h == 0, pieces),
            have_count: if h == 0 { pieces } else { 0 },
            asked: BitVec::repeat(false, pieces),
            avail: vec![0; pieces],
            peers: Vec::new(),
            unchoked: Vec::new(),
            optimistic: None,
            got: LocalMap::default(),
            sent: LocalMap::default(),
            inflight: Vec::new(),
            done: (h == 0).then_some(0.0),
            started: h == 0,
        })
        .collect();
    // the tracker: each joiner connects to PEERS random others
    let mut all: Vec<usize> = (0..n).collect();
    for h in 1..n {
        all.shuffle(&mut rng);
        for &q in all.iter().filter(|&&q| q != h).take(PEERS) {
            if !hosts[h].peers.contains(&q) {
                hosts[h].peers.push(q);
                hosts[q].peers.push(h);
            }
        }
    }
    for h in 0..n {
        for k in 0..hosts[h].peers.len() {
            let q = hosts[h].peers[k];
            if hosts[q].have_count == pieces {
                for a in &mut hosts[h].avail {
                    *a += 1;
                }
            }
        }
    }
    let mut net = sc.network();
    let mut flows: LocalMap<u32, usize> = LocalMap::default();
    // each host rechokes at its own phase
    let phase: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * RECHOKE).collect();
    let mut dirty: Vec<bool> = vec![true; n];
    let mut t = 0.0;
    let dt = sc.tick;
    let mut left = n - 1;
    while t < until && left > 0 {
        for h in 1..n {
            if !hosts[h].started && sc.start_of(h) <= t {
                hosts[h].started = true;
                dirty[h] = true;
                for k in 0..hosts[h].peers.len() {
                    dirty[hosts[h].peers[k]] = true;
                }
            }
        }
        for h in 0..n {
            if !hosts[h].started {
                continue;
            }
            let prev = ((t - dt - phase[h]) / RECHOKE).floor();
            if t > 0.0 && ((t - phase[h]) / RECHOKE).floor() != prev {
                rechoke(&mut hosts, h, t, &mut rng);
                dirty[h] = true;
                for k in 0..hosts[h].peers.len() {
                    dirty[hosts[h].peers[k]] = true;
                }
            }
        }
        // free slots go to interested peers at once
        for h in 0..n {
            if dirty[h] && hosts[h].started && fill_slots(&mut hosts, h, &mut rng) {
                for k in 0..hosts[h].peers.len() {
                    dirty[hosts[h].peers[k]] = true;
                }
            }
        }
        for h in 1..n {
            if std::mem::take(&mut dirty[h]) && hosts[h].started && hosts[h].done.is_none() {
                request(sc, &mut hosts, h, t, &mut rng);
            }
        }
        dirty[0] = false;
        for (h, host) in hosts.iter_mut().enumerate().skip(1) {
            for x in host.inflight.iter_mut() {
                if x.flow.is_none() && x.starts <= t {
                    let (gs, gd) = (sc.group_of(x.from) as u32, sc.group_of(h) as u32);
                    let mut links = vec![x.from as u32, (n + h) as u32];
                    if gs != gd {
                        links.push((2 * n) as u32 + gs);
                        links.push((2 * n + sc.groups) as u32 + gd);
                    }
                    let len = piece_len(x.piece as usize);
                    let flow = net.start(&links, len, 1.0 / (2.0 * x.lat).max(1e-6));
                    flows.insert(flow, h);
                    x.flow = Some(flow);
                }
            }
        }
        for (flow, into) in net.advance(dt) {
            let Some(to) = flows.remove(&flow) else {
                continue;
            };
            net.stop(flow);
            let Some(i) = hosts[to].inflight.iter().position(|x| x.flow == Some(flow)) else {
                continue;
            };
            let x = hosts[to].inflight.swap_remove(i);
            let len = piece_len(x.piece as usize);
            *hosts[to].got.entry(x.from).or_default() += len;
            *hosts[x.from].sent.entry(to).or_default() += len;
            dirty[to] = true;
            let p = x.piece as usize;
            if hosts[to].have[p] {
                continue;
            }
            hosts[to].have.set(p, true);
            hosts[to].have_count += 1;
            // endgame duplicates of it end
            let dups: Vec<u32> = hosts[to]
                .inflight
                .iter()
                .filter(|y| y.piece == x.piece)
                .filter_map(|y| y.flow)
                .collect();
            for f in dups {
                net.stop(f);
                flows.remove(&f);
            }
            hosts[to].inflight.retain(|y| y.piece != x.piece);
            for k in 0..hosts[to].peers.len() {
                let q = hosts[to].peers[k];
                hosts[q].avail[p] += 1;
                dirty[q] = true;
            }
            if hosts[to].have_count == pieces {
                hosts[to].done = Some(t + into + x.lat);
                left -= 1;
            }
        }
        t += dt;
    }
    let wan_in = (0..sc.groups)
        .map(|g| net.carried[2 * n + sc.groups + g])
        .collect();
    Outcome {
        done: hosts.iter().map(|h| h.done).collect(),
        wan_in,
    }
}

/// Whether `q` lacks a piece `h` has (by whole words: the seed's bits past
/// the last piece are set, but a finished `q` is not interested anyway).
fn interested(hosts: &[Host], q: usize, h: usize) -> bool {
    hosts[q].started
        && hosts[q].done.is_none()
        && hosts[h].have_count > 0
        && hosts[h]
            .have
            .as_raw_slice()
            .iter()
            .zip(hosts[q].have.as_raw_slice())
            .any(|(a, b)| a & !b != 0)
}

/// Every `RECHOKE` s: the `UNCHOKE` interested peers that sent this host
/// most lately (a finished host: that it sent most), and every
/// `OPTIMISTIC` s a new optimistic one.
fn rechoke(hosts: &mut [Host], h: usize, t: f64, rng: &mut SmallRng) {
    let by = if hosts[h].done.is_some() {
        &hosts[h].sent
    } else {
        &hosts[h].got
    };
    let mut cand: Vec<(f64, u32, usize)> = hosts[h]
        .peers
        .iter()
        .filter(|&&q| interested(hosts, q, h))
        .map(|&q| (by.get(&q).copied().unwrap_or(0.0), rng.random::<u32>(), q))
        .collect();
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut next: Vec<usize> = cand.iter().take(UNCHOKE).map(|c| c.2).collect();
    let rotate = (t / OPTIMISTIC).floor() != ((t - RECHOKE) / OPTIMISTIC).floor();
    let keep = hosts[h].optimistic.filter(|o| !rotate && !next.contains(o));
    let optimistic = keep.or_else(|| {
        let rest: Vec<usize> = cand.iter().skip(UNCHOKE).map(|c| c.2).collect();
        (!rest.is_empty()).then(|| rest[rng.random_range(0..rest.len())])
    });
    next.extend(optimistic);
    hosts[h].optimistic = optimistic;
    hosts[h].unchoked = next;
    hosts[h].got.clear();
    hosts[h].sent.clear();
}

/// Drops unchoked peers that are no longer interested and fills free slots
/// with interested ones, at random. Whether the set changed.
fn fill_slots(hosts: &mut [Host], h: usize, rng: &mut SmallRng) -> bool {
    let before = hosts[h].unchoked.len();
    let mut kept: Vec<usize> = std::mem::take(&mut hosts[h].unchoked);
    kept.retain(|&q| interested(hosts, q, h));
    if hosts[h].optimistic.is_some_and(|o| !kept.contains(&o)) {
        hosts[h].optimistic = None;
    }
    let mut changed = kept.len() != before;
    if kept.len() < UNCHOKE + 1 {
        let mut cand: Vec<usize> = hosts[h]
            .peers
            .iter()
            .copied()
            .filter(|q| !kept.contains(q) && interested(hosts, *q, h))
            .collect();
        cand.shuffle(rng);
        for q in cand.into_iter().take(UNCHOKE + 1 - kept.len()) {
            kept.push(q);
            changed = true;
        }
    }
    hosts[h].unchoked = kept;
    changed
}

/// Asks every peer that unchokes `h` for pieces, up to `PIPELINE` each.
fn request(sc: &Scenario, hosts: &mut [Host], h: usize, t: f64, rng: &mut SmallRng) {
    for k in 0..hosts[h].peers.len() {
        let q = hosts[h].peers[k];
        if !hosts[q].started || !hosts[q].unchoked.contains(&h) {
            continue;
        }
        while hosts[h].inflight.iter().filter(|x| x.from == q).count() < PIPELINE {
            let Some(p) = pick(&hosts[h], &hosts[q], q, rng) else {
                break;
            };
            hosts[h].asked.set(p, true);
            let lat = if sc.group_of(q) == sc.group_of(h) {
                sc.lan_latency
            } else {
                sc.wan_latency
            };
            hosts[h].inflight.push(Transfer {
                piece: p as u32,
                from: q,
                starts: t + lat,
                flow: None,
                lat,
            });
        }
    }
}

/// The rarest piece `q` holds that `h` lacks and has not asked for (ties
/// at random); in endgame, when every missing piece is asked for, one
/// asked of another peer.
fn pick(h: &Host, q: &Host, qi: usize, rng: &mut SmallRng) -> Option<usize> {
    let mut best: Option<(u16, u32, usize)> = None;
    let mut endgame: Option<(u32, usize)> = None;
    for p in q.have.iter_ones() {
        if h.have[p] {
            continue;
        }
        if h.asked[p] {
            if !h
                .inflight
                .iter()
                .any(|x| x.piece as usize == p && x.from == qi)
            {
                let r = rng.random::<u32>();
                if endgame.is_none_or(|(b, _)| r < b) {
                    endgame = Some((r, p));
                }
            }
            continue;
        }
        let key = (h.avail[p], rng.random::<u32>(), p);
        if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
            best = Some(key);
        }
    }
    if let Some((_, _, p)) = best {
        return Some(p);
    }
    let all_asked =
        h.have_count + h.inflight.len() >= h.have.len() || h.asked.iter_zeros().all(|p| h.have[p]);
    endgame.filter(|_| all_asked).map(|(_, p)| p)
}

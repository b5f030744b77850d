//! `swarm simulate`: a fleet in virtual time, to plan a push and to show
//! how the design scales past what one machine can emulate. Each simulated
//! host runs the node's own policy (`core::host::Host`, driven by `swarm`
//! as `node::engine` drives it); the network is flow-level (`net`: NICs and
//! each group's WAN links shared max-min fair); the rsync cascade
//! (`cascade`) and a BitTorrent-like swarm (`bittorrent`) run over the same
//! network. Same scenario and seed, same result.
//!
//! Not modelled: packets, loss and congestion control (a flow takes its
//! fair share at once), CPU and disk (a host verifies and writes for free),
//! corrupt pieces, and the handshake's cost beyond its round trips.

mod bittorrent;
mod cascade;
mod net;
pub mod plot;
mod swarm;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::manifest::{Manifest, Meta, Root};

/// What to simulate. Rates in bytes per second, times in seconds.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub groups: usize,
    pub hosts_per_group: usize,
    pub size: u64,
    pub piece_size: u32,
    /// Every host's NIC, each way.
    pub up: f64,
    pub down: f64,
    /// Each group's WAN link, each way; `None`: only the NICs limit.
    pub wan: Option<f64>,
    /// One way.
    pub lan_latency: f64,
    pub wan_latency: f64,
    /// Bridges per group.
    pub bridges: usize,
    /// The seed's `--max-peers`.
    pub seed_max_peers: usize,
    /// Every joiner starts at a time drawn evenly from `[0, stagger]`.
    pub stagger: f64,
    /// This share of the joiners (chosen by the seed) has NICs `slow_factor`
    /// times as fast.
    pub slow_share: f64,
    pub slow_factor: f64,
    /// How long a finished joiner stays for others (`swarm join --linger`).
    pub linger: f64,
    /// This share of the joiners (chosen by the seed) dies at `fail_at`.
    pub fail_share: f64,
    pub fail_at: f64,
    /// Every WAN link is down from `.0` for `.1` seconds.
    pub wan_outage: Option<(f64, f64)>,
    /// The network's step: rates are recomputed, and pieces end, at this
    /// granularity (a fraction of a piece's time on a NIC).
    pub tick: f64,
    pub seed: u64,
    /// Virtual seconds after which the run is cut off.
    pub limit: f64,
    /// Which baselines run beside swarm.
    pub cascade: bool,
    pub bittorrent: bool,
}

impl Scenario {
    /// `groups * hosts_per_group` hosts, group by group; the seed is host
    /// 0, one of the first group's (as in the compare benchmark's GxH).
    pub fn host_count(&self) -> usize {
        self.groups * self.hosts_per_group
    }

    pub fn group_of(&self, h: usize) -> usize {
        h / self.hosts_per_group
    }

    fn draw(&self, h: usize, what: u64) -> f64 {
        let x = blake3::hash(
            &[
                self.seed.to_le_bytes(),
                (h as u64).to_le_bytes(),
                what.to_le_bytes(),
            ]
            .concat(),
        );
        let v = u64::from_le_bytes(x.as_bytes()[..8].try_into().expect("8 bytes"));
        (v >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn start_of(&self, h: usize) -> f64 {
        if h == 0 {
            0.0
        } else {
            self.stagger * self.draw(h, 1)
        }
    }

    /// Whether joiner `h` is one of the `share` of the joiners, spread
    /// evenly over them: exactly floor(joiners x share), every
    /// 1/share-th joiner, from a place the seed picks (`what` tells the
    /// choices apart).
    fn picked(&self, h: usize, share: f64, what: u64) -> bool {
        if h == 0 || share <= 0.0 {
            return false;
        }
        let n = (self.host_count() - 1) as f64;
        let total = (n * share).floor();
        let shift = (self.draw(0, what) * n).floor() as usize;
        let j = ((h - 1 + shift) % (n as usize)) as f64;
        ((j + 1.0) * total / n).floor() > (j * total / n).floor()
    }

    pub fn is_slow(&self, h: usize) -> bool {
        self.picked(h, self.slow_share, 2)
    }

    /// Whether joiner `h` dies (`fail_share`).
    pub fn dies(&self, h: usize) -> bool {
        self.picked(h, self.fail_share, 3)
    }

    pub fn up_of(&self, h: usize) -> f64 {
        self.up
            * if self.is_slow(h) {
                self.slow_factor
            } else {
                1.0
            }
    }

    pub fn down_of(&self, h: usize) -> f64 {
        self.down
            * if self.is_slow(h) {
                self.slow_factor
            } else {
                1.0
            }
    }

    /// The network's links: each host's NIC up, then down, then each
    /// group's WAN link out, then in.
    fn network(&self) -> net::Net {
        let n = self.host_count();
        let mut caps = Vec::with_capacity(2 * n + 2 * self.groups);
        caps.extend((0..n).map(|h| self.up_of(h)));
        caps.extend((0..n).map(|h| self.down_of(h)));
        let wan = self.wan.unwrap_or(f64::INFINITY);
        caps.extend(std::iter::repeat_n(wan, 2 * self.groups));
        net::Net::new(caps)
    }

    /// The physical limit for a fast host: S over the narrowest of the
    /// seed's uplink, a host's downlink and (with more than one group) the
    /// WAN.
    pub fn t_star(&self) -> f64 {
        let mut b = self.up.min(self.down);
        if self.groups > 1
            && let Some(w) = self.wan
        {
            b = b.min(w);
        }
        self.size as f64 / b
    }

    fn manifest(&self) -> Manifest {
        let root = Root::File {
            size: self.size,
            meta: Meta::mode(0o644),
        };
        let n = Manifest::pieces_for(&root, self.piece_size).unwrap_or(0) as usize;
        // hashes that are not a block of zeros' (those pieces are never
        // fetched by a joiner): the simulation never checks them
        let hashes = (0..n as u64)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        Manifest::new("sim".into(), root, self.piece_size, hashes)
    }
}

/// One host's run.
#[derive(Clone, Debug)]
pub struct HostOutcome {
    pub group: usize,
    pub start: f64,
    pub done: Option<f64>,
    pub failed: Option<String>,
    /// Killed by the scenario.
    pub died: bool,
    pub uploaded: f64,
    pub received: f64,
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

/// Completion times (since each host's start) of the joiners in `pick`.
fn times(hosts: &[HostOutcome], pick: impl Fn(usize) -> bool) -> Vec<f64> {
    let mut v: Vec<f64> = hosts
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(h, _)| pick(*h))
        .filter_map(|(_, o)| o.done.map(|d| d - o.start))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Completion times of the joiners that finished, since each started,
/// sorted (a baseline's `done`: when each host had the image).
fn since_start(sc: &Scenario, done: &[Option<f64>]) -> Vec<f64> {
    let mut v: Vec<f64> = done
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(h, d)| d.map(|d| d - sc.start_of(h)))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// About this many points per curve in the JSON (and the plot), at most
/// twice as many.
const CURVE_POINTS: usize = 200;

/// (time / T*, share of `total` done) after each of the sorted `t`, at most
/// `CURVE_POINTS` of them, from (0, 0).
fn done_curve(sc: &Scenario, t: &[f64], total: usize) -> Vec<(f64, f64)> {
    let ts = sc.t_star();
    let step = t.len().div_ceil(CURVE_POINTS).max(1);
    let mut out = vec![(0.0, 0.0)];
    for (i, &x) in t.iter().enumerate() {
        if (i + 1) % step == 0 || i + 1 == t.len() {
            out.push((x / ts, (i + 1) as f64 / total.max(1) as f64));
        }
    }
    out
}

fn summary(sc: &Scenario, t: &[f64], total: usize) -> Value {
    let ts = sc.t_star();
    json!({
        "hosts": total,
        "hosts_done": t.len(),
        "last_s": t.last(),
        "median_s": quantile(t, 0.5),
        "last_over_t_star": t.last().map(|x| x / ts),
        "median_over_t_star": quantile(t, 0.5).map(|x| x / ts),
    })
}

/// Runs swarm and the cascade on `sc`; `progress` hears (what, virtual
/// seconds, hosts done) now and then. One JSON document.
pub fn run(sc: &Scenario, progress: &mut dyn FnMut(&str, f64, usize)) -> Value {
    let wall = Instant::now();
    let m = Arc::new(sc.manifest());
    let mut s = swarm::Swarm::new(sc, m.clone());
    s.run(sc.limit, &mut |t, n| progress("swarm", t, n));
    s.sample_delivered();
    let hosts = s.outcome();
    let joiners = sc.host_count() - 1;
    let fast = times(&hosts, |h| !sc.is_slow(h));
    let slow = times(&hosts, |h| sc.is_slow(h));
    let size = sc.size as f64;
    let mut up: Vec<f64> = hosts.iter().skip(1).map(|o| o.uploaded / size).collect();
    up.sort_by(f64::total_cmp);
    let (wan_in, wan_out) = (s.wan_in(), s.wan_out());
    let mut by_upload: Vec<(usize, &HostOutcome)> = hosts.iter().enumerate().skip(1).collect();
    by_upload.sort_by(|a, b| b.1.uploaded.total_cmp(&a.1.uploaded).then(a.0.cmp(&b.0)));
    let uploaders: Vec<Value> = by_upload
        .iter()
        .take(5)
        .map(|(h, o)| json!({"host": h, "group": o.group, "upload_over_s": o.uploaded / size}))
        .collect();
    let failed: Vec<Value> = hosts
        .iter()
        .enumerate()
        .filter_map(|(h, o)| o.failed.as_ref().map(|w| json!({"host": h, "why": w})))
        .take(20)
        .collect();
    let mut last: Vec<(usize, &HostOutcome)> = hosts.iter().enumerate().skip(1).collect();
    last.sort_by(|a, b| {
        let t = |o: &HostOutcome| o.done.map_or(f64::INFINITY, |d| d - o.start);
        t(b.1).total_cmp(&t(a.1)).then(a.0.cmp(&b.0))
    });
    let slowest: Vec<Value> = last
        .iter()
        .take(5)
        .map(|(h, o)| {
            json!({"host": h, "group": o.group, "start_s": o.start, "done_s": o.done,
                   "slow": sc.is_slow(*h), "received_over_s": o.received / size})
        })
        .collect();
    let swarm_wall = wall.elapsed().as_secs_f64();
    let all = times(&hosts, |_| true);
    let bytes_all = (joiners as f64 * size).max(1.0);
    let step = s.delivered.len().div_ceil(CURVE_POINTS).max(1);
    let n = s.delivered.len();
    let delivered: Vec<(f64, f64)> = s
        .delivered
        .iter()
        .enumerate()
        .filter(|&(i, _)| i % step == 0 || i + 1 == n)
        .map(|(_, &(t, b))| (t / sc.t_star(), b / bytes_all))
        .collect();
    let cascade = if sc.cascade {
        cascade::run(sc, sc.limit)
    } else {
        Vec::new()
    };
    let ct = since_start(sc, &cascade);
    if sc.cascade {
        progress("cascade", ct.last().copied().unwrap_or(0.0), ct.len());
    }
    let cascade_summary = sc.cascade.then(|| {
        let mut v = summary(sc, &ct, joiners);
        v["done_over_time"] = json!(done_curve(sc, &ct, joiners));
        v
    });
    let bt_summary = sc.bittorrent.then(|| {
        let bt = bittorrent::run(sc, m.piece_count(), |p| m.piece_range(p).1 as f64, sc.limit);
        let t = since_start(sc, &bt.done);
        progress("bittorrent", t.last().copied().unwrap_or(0.0), t.len());
        let mut v = summary(sc, &t, joiners);
        v["done_over_time"] = json!(done_curve(sc, &t, joiners));
        v["wan_in_over_s_per_remote_group"] = json!(
            bt.wan_in
                .iter()
                .skip(1)
                .map(|b| b / size)
                .collect::<Vec<_>>()
        );
        v
    });
    let slow_n = (1..sc.host_count()).filter(|&h| sc.is_slow(h)).count();
    json!({
        "scenario": {
            "groups": sc.groups,
            "hosts_per_group": sc.hosts_per_group,
            "size_bytes": sc.size,
            "piece_size_bytes": sc.piece_size,
            "pieces": m.piece_count(),
            "up_bytes_per_s": sc.up,
            "down_bytes_per_s": sc.down,
            "wan_bytes_per_s": sc.wan,
            "lan_latency_s": sc.lan_latency,
            "wan_latency_s": sc.wan_latency,
            "bridges": sc.bridges,
            "seed_max_peers": sc.seed_max_peers,
            "stagger_s": sc.stagger,
            "slow_hosts": slow_n,
            "slow_factor": sc.slow_factor,
            "fail_share": sc.fail_share,
            "fail_at_s": sc.fail_at,
            "wan_outage_s": sc.wan_outage,
            "tick_s": sc.tick,
            "seed": sc.seed,
        },
        "t_star_s": sc.t_star(),
        "swarm": {
            "all": summary(sc, &all, joiners),
            "done_over_time": done_curve(sc, &all, joiners),
            "delivered_over_time": delivered,
            "fast_hosts": summary(sc, &fast, joiners - slow_n),
            "slow_hosts": summary(sc, &slow, slow_n),
            "slow_host_limit_s": (slow_n > 0).then(|| size / (sc.down * sc.slow_factor).min(sc.up)),
            "hosts_failed": hosts.iter().filter(|o| o.failed.is_some()).count(),
            "hosts_died": hosts.iter().filter(|o| o.died).count(),
            "failures": failed,
            "last_hosts": slowest,
            "seed_upload_over_s": hosts[0].uploaded / size,
            "upload_over_s": {
                "min": up.first(),
                "p10": quantile(&up, 0.1),
                "median": quantile(&up, 0.5),
                "p90": quantile(&up, 0.9),
                "max": up.last(),
            },
            "top_uploaders": uploaders,
            "wan_in_over_s_per_remote_group": wan_in.iter().skip(1).map(|b| b / size).collect::<Vec<_>>(),
            "wan_out_over_s_per_group": wan_out.iter().map(|b| b / size).collect::<Vec<_>>(),
            "events": s.events_run,
            "messages": s.messages,
            "policy_runs": s.drives,
            "connections_per_host": s.peak_conns(),
            "wall_s": swarm_wall,
        },
        "cascade": cascade_summary,
        "bittorrent": bt_summary,
        "sim": {
            "wall_s": wall.elapsed().as_secs_f64(),
        },
    })
}

#[cfg(test)]
mod tests;

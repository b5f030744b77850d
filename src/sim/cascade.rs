//! The rsync cascade (Net::CascadeCopy, as `benches/compare/rsync.rs` runs
//! it for real) over the same network: the origin copies to the first host
//! of each group, every host that finishes becomes a source for the rest
//! of its group, a source runs at most `MAX_FORKS` copies at once, and only
//! the origin's first copy into each group crosses the WAN. A copy is one
//! flow of the whole image, after a start-up of a few round trips
//! (`START_RTTS`: rsync's connection and file list). The scenario's
//! failures apply too: a WAN outage stalls the copies across (TCP waits,
//! rsync has no timeout by default), a host that dies is copied to no
//! more, and a copy from it goes back to the queue.

use std::collections::VecDeque;

use super::Scenario;

const MAX_FORKS: usize = 2;
const START_RTTS: f64 = 3.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Origin,
    Host(usize),
}

struct Copy {
    from: From,
    to: usize,
    /// When its bytes start to flow, and its flow once they do.
    starts: f64,
    flow: Option<u32>,
}

/// When each host (the origin, host 0, at 0) has the image.
pub fn run(sc: &Scenario, until: f64) -> Vec<Option<f64>> {
    let n = sc.host_count();
    let mut net = sc.network();
    let mut todo: Vec<VecDeque<usize>> = vec![VecDeque::new(); sc.groups];
    for h in 1..n {
        todo[sc.group_of(h)].push_back(h);
    }
    let mut sources: Vec<Vec<usize>> = vec![Vec::new(); sc.groups];
    let mut origin_served = vec![false; sc.groups];
    let mut done: Vec<Option<f64>> = vec![None; n];
    done[0] = Some(0.0);
    let mut running: Vec<Copy> = Vec::new();
    let mut t = 0.0;
    let dt = sc.tick;
    let mut dead = vec![false; n];
    let mut wan_down = false;
    let settled =
        |done: &[Option<f64>], dead: &[bool]| (0..n).all(|h| done[h].is_some() || dead[h]);
    while t < until && !settled(&done, &dead) {
        // the scenario's failures
        if let Some((start, dur)) = sc.wan_outage {
            let down = t >= start && t < start + dur;
            if down != wan_down {
                wan_down = down;
                let cap = if down {
                    0.0
                } else {
                    sc.wan.unwrap_or(f64::INFINITY)
                };
                for k in 0..2 * sc.groups {
                    net.set_cap((2 * n + k) as u32, cap);
                }
            }
        }
        if t >= sc.fail_at {
            for h in 1..n {
                if sc.dies(h) && !dead[h] {
                    dead[h] = true;
                    for q in &mut todo {
                        q.retain(|&x| x != h);
                    }
                    for s in &mut sources {
                        s.retain(|&x| x != h);
                    }
                    // copies to it end; copies from it go back to the queue
                    running.retain(|c| {
                        let from_dead = c.from == From::Host(h);
                        if c.to == h || from_dead {
                            if let Some(f) = c.flow {
                                net.stop(f);
                            }
                            if from_dead && !dead[c.to] {
                                todo[sc.group_of(c.to)].push_front(c.to);
                            }
                            return false;
                        }
                        true
                    });
                }
            }
        }
        // start what the sources have room for (copies start when their
        // joiner has started)
        let busy = |s: From, running: &[Copy]| running.iter().filter(|c| c.from == s).count();
        for g in 0..sc.groups {
            let mut starts: Vec<From> = Vec::new();
            if !origin_served[g]
                && sources[g].is_empty()
                && busy(From::Origin, &running) < MAX_FORKS
            {
                origin_served[g] = true;
                starts.push(From::Origin);
            }
            for &s in &sources[g] {
                let free = MAX_FORKS.saturating_sub(busy(From::Host(s), &running));
                starts.extend(std::iter::repeat_n(From::Host(s), free));
            }
            for from in starts {
                let Some(pos) = todo[g].iter().position(|&h| sc.start_of(h) <= t) else {
                    if from == From::Origin {
                        origin_served[g] = false;
                    }
                    break;
                };
                let to = todo[g].remove(pos).expect("found");
                let src = match from {
                    From::Origin => 0,
                    From::Host(s) => s,
                };
                let lat = if sc.group_of(src) == g {
                    sc.lan_latency
                } else {
                    sc.wan_latency
                };
                running.push(Copy {
                    from,
                    to,
                    starts: t + START_RTTS * 2.0 * lat,
                    flow: None,
                });
            }
        }
        for c in &mut running {
            if c.flow.is_none() && c.starts <= t {
                let src = match c.from {
                    From::Origin => 0,
                    From::Host(s) => s,
                };
                let (gs, gd) = (sc.group_of(src) as u32, sc.group_of(c.to) as u32);
                let mut links = vec![src as u32, (n + c.to) as u32];
                if gs != gd {
                    links.push((2 * n) as u32 + gs);
                    links.push((2 * n + sc.groups) as u32 + gd);
                }
                // TCP: a share inversely proportional to the round trip
                let rtt = 2.0
                    * if gs == gd {
                        sc.lan_latency
                    } else {
                        sc.wan_latency
                    };
                c.flow = Some(net.start(&links, sc.size as f64, 1.0 / rtt.max(1e-6)));
            }
        }
        for (flow, into) in net.advance(dt) {
            let Some(i) = running.iter().position(|c| c.flow == Some(flow)) else {
                continue;
            };
            let c = running.swap_remove(i);
            net.stop(flow);
            done[c.to] = Some(t + into);
            sources[sc.group_of(c.to)].push(c.to);
        }
        t += dt;
    }
    done
}

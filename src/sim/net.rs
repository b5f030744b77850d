//! The flow-level network: every host's NIC (up and down) and every group's
//! WAN uplink and downlink are capacities shared by the flows through them,
//! weighted max-min fair (progressive filling: the most constrained link's
//! share per unit of weight is fixed first, its flows take it in proportion
//! to their weights, the rest share what is left). Weights stand for how a
//! congestion controller splits a link: equal for swarm's flows, which
//! share by design (`node::cc`), inversely proportional to the round trip
//! for TCP's (the cascade's rsync), which favours the short one. Packets,
//! congestion control and loss are not modelled; latency is added by the
//! caller per message and per piece.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A link: `cap` bytes per second.
#[derive(Clone, Debug)]
struct Link {
    cap: f64,
    /// Progressive filling's working state.
    left: f64,
    /// The weights of the flows not fixed yet.
    unfixed: f64,
    /// Flows not fixed yet.
    count: u32,
    flows: Vec<u32>,
}

/// One flow: bytes from a host to another through `links`.
#[derive(Clone, Debug)]
pub struct Flow {
    pub links: [u32; 4],
    pub nlinks: u8,
    pub remaining: f64,
    pub rate: f64,
    weight: f64,
    fixed: bool,
}

pub struct Net {
    links: Vec<Link>,
    flows: Vec<Option<Flow>>,
    free: Vec<u32>,
    dirty: bool,
    /// Bytes carried by each link so far.
    pub carried: Vec<f64>,
}

/// An entry of the filling's heap: a link and its share when pushed.
struct Share(f64, u32);

impl PartialEq for Share {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Share {}
impl PartialOrd for Share {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Share {
    /// The smallest share first (a max-heap reversed), ties by link.
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

impl Net {
    /// Links of these capacities (bytes per second; `f64::INFINITY` for
    /// none), numbered in this order.
    pub fn new(caps: Vec<f64>) -> Net {
        let n = caps.len();
        Net {
            links: caps
                .into_iter()
                .map(|cap| Link {
                    cap,
                    left: 0.0,
                    unfixed: 0.0,
                    count: 0,
                    flows: Vec::new(),
                })
                .collect(),
            flows: Vec::new(),
            free: Vec::new(),
            dirty: false,
            carried: vec![0.0; n],
        }
    }

    /// Starts a flow of `bytes` through `links` (unlimited ones only count
    /// what passes).
    pub fn start(&mut self, links: &[u32], bytes: f64, weight: f64) -> u32 {
        assert!(links.len() <= 4, "at most 4 links a flow");
        let mut l = [0u32; 4];
        l[..links.len()].copy_from_slice(links);
        let f = Flow {
            links: l,
            nlinks: links.len() as u8,
            remaining: bytes.max(0.0),
            rate: 0.0,
            weight: weight.max(1e-9),
            fixed: false,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.flows[id as usize] = Some(f);
                id
            }
            None => {
                self.flows.push(Some(f));
                (self.flows.len() - 1) as u32
            }
        };
        self.dirty = true;
        id
    }

    /// Changes a link's capacity (a WAN outage: 0).
    pub fn set_cap(&mut self, k: u32, cap: f64) {
        self.links[k as usize].cap = cap;
        self.dirty = true;
    }

    /// Ends a flow (done or cancelled); returns it.
    pub fn stop(&mut self, id: u32) -> Option<Flow> {
        let f = self.flows.get_mut(id as usize)?.take()?;
        self.free.push(id);
        self.dirty = true;
        Some(f)
    }

    #[cfg(test)]
    fn flow(&self, id: u32) -> Option<&Flow> {
        self.flows.get(id as usize)?.as_ref()
    }

    /// Max-min fair rates for the flows now running (only if they changed).
    pub fn fill(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        for l in &mut self.links {
            l.left = l.cap;
            l.unfixed = 0.0;
            l.count = 0;
            l.flows.clear();
        }
        for (id, f) in self.flows.iter_mut().enumerate() {
            let Some(f) = f else { continue };
            f.fixed = false;
            f.rate = f64::INFINITY;
            for &k in &f.links[..f.nlinks as usize] {
                let l = &mut self.links[k as usize];
                l.unfixed += f.weight;
                l.count += 1;
                l.flows.push(id as u32);
            }
        }
        let mut heap: BinaryHeap<Share> = self
            .links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.count > 0)
            .map(|(k, l)| Share(l.left / l.unfixed, k as u32))
            .collect();
        while let Some(Share(share, k)) = heap.pop() {
            let l = &self.links[k as usize];
            if l.count == 0 {
                continue;
            }
            let now = l.left.max(0.0) / l.unfixed;
            if now.total_cmp(&share) != Ordering::Equal {
                continue; // stale: pushed again when it changed
            }
            let flows = std::mem::take(&mut self.links[k as usize].flows);
            for &id in &flows {
                let f = self.flows[id as usize].as_mut().expect("listed flows run");
                if f.fixed {
                    continue;
                }
                f.fixed = true;
                f.rate = share * f.weight;
                for &k2 in &f.links[..f.nlinks as usize] {
                    let l2 = &mut self.links[k2 as usize];
                    if f.rate.is_finite() {
                        l2.left -= f.rate;
                    }
                    l2.count -= 1;
                    l2.unfixed = if l2.count == 0 {
                        0.0
                    } else {
                        l2.unfixed - f.weight
                    };
                    if k2 != k && l2.count > 0 {
                        heap.push(Share(l2.left.max(0.0) / l2.unfixed, k2));
                    }
                }
            }
            self.links[k as usize].flows = flows;
        }
    }

    /// Moves every flow on by `dt` seconds at its rate; returns the flows
    /// that finish within it, with the seconds into `dt` at which each did.
    pub fn advance(&mut self, dt: f64) -> Vec<(u32, f64)> {
        self.fill();
        let mut done = Vec::new();
        for (id, f) in self.flows.iter_mut().enumerate() {
            let Some(f) = f else { continue };
            let rate = if f.rate.is_finite() { f.rate } else { 1e18 };
            let moved = (rate * dt).min(f.remaining);
            for &k in &f.links[..f.nlinks as usize] {
                self.carried[k as usize] += moved;
            }
            if rate * dt >= f.remaining {
                let into = if f.remaining > 0.0 {
                    f.remaining / rate
                } else {
                    0.0
                };
                done.push((id as u32, into));
                f.remaining = 0.0;
            } else {
                f.remaining -= moved;
            }
        }
        done.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(n: &Net, ids: &[u32]) -> Vec<f64> {
        ids.iter().map(|&i| n.flow(i).unwrap().rate).collect()
    }

    /// The textbook case: flows limited elsewhere leave their share to
    /// the others.
    #[test]
    fn shares_are_max_min_fair() {
        // links: 0 (10), 1 (4), 2 (unlimited)
        let mut n = Net::new(vec![10.0, 4.0, f64::INFINITY]);
        let a = n.start(&[0, 1], 100.0, 1.0);
        let b = n.start(&[0, 1], 100.0, 1.0);
        let c = n.start(&[0, 2], 100.0, 1.0);
        n.fill();
        // a and b share link 1 (2 each); c takes what link 0 has left
        assert_eq!(rates(&n, &[a, b, c]), vec![2.0, 2.0, 6.0]);
        n.stop(c);
        n.fill();
        assert_eq!(rates(&n, &[a, b]), vec![2.0, 2.0]);
    }

    /// Weights split a shared link in proportion (TCP's round trips).
    #[test]
    fn weights_split_a_link_in_proportion() {
        let mut n = Net::new(vec![12.0, f64::INFINITY, f64::INFINITY]);
        let a = n.start(&[0, 1], 100.0, 3.0);
        let b = n.start(&[0, 2], 100.0, 1.0);
        n.fill();
        assert_eq!(rates(&n, &[a, b]), vec![9.0, 3.0]);
    }

    #[test]
    fn flows_finish_when_their_bytes_are_through() {
        let mut n = Net::new(vec![10.0]);
        let a = n.start(&[0], 5.0, 1.0);
        let b = n.start(&[0], 20.0, 1.0);
        let done = n.advance(1.0);
        assert_eq!(done, vec![(a, 1.0)]);
        n.stop(a);
        let done = n.advance(2.0);
        // b had 15 left at 10 per second
        assert_eq!(done, vec![(b, 1.5)]);
        assert!((n.carried[0] - 25.0).abs() < 1e-9);
    }
}

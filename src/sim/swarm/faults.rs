//! Failures the scenario asks for: hosts that die, WAN outages.

use super::{Ev, IDLE_TIMEOUT, Swarm};

impl Swarm {
    /// A host dies at once: its peers notice after the idle timeout, and
    /// what it was sending or receiving stops.
    pub(super) fn die(&mut self, h: usize) {
        if self.hosts[h].exited {
            return;
        }
        self.hosts[h].died = true;
        self.hosts[h].exited = true;
        self.hosts[h].host = None;
        for conn in std::mem::take(&mut self.hosts[h].all_conns) {
            if !self.conns[conn].open {
                continue;
            }
            self.conns[conn].open = false;
            for side in 0..2 {
                self.stop_serving(conn, side);
            }
            let other = 1 - self.side_of(conn, h);
            self.at(
                self.t + IDLE_TIMEOUT,
                Ev::Down {
                    conn,
                    to: other,
                    normal: false,
                },
            );
        }
        self.hosts[h].conns.clear();
    }

    /// The WAN goes down or comes back: its links carry nothing meanwhile;
    /// connections across that stay idle past the idle timeout close.
    pub(super) fn wan(&mut self, down: bool) {
        let n = self.hosts.len();
        let cap = if down {
            0.0
        } else {
            self.sc.wan.unwrap_or(f64::INFINITY)
        };
        for k in 0..2 * self.sc.groups {
            self.net.set_cap((2 * n + k) as u32, cap);
        }
        self.wan_down = down;
        if down {
            let until = self.sc.wan_outage.map_or(0.0, |(_, d)| d);
            if until > IDLE_TIMEOUT {
                let cross: Vec<usize> = (0..self.conns.len())
                    .filter(|&c| {
                        let [a, b] = self.conns[c].ends;
                        self.conns[c].open && self.hosts[a].group != self.hosts[b].group
                    })
                    .collect();
                let at = self.t + IDLE_TIMEOUT;
                for c in cross {
                    self.at(at, Ev::IdleOut(c));
                }
            }
        }
    }

    /// A connection across the WAN timed out during an outage.
    pub(super) fn idle_out(&mut self, conn: usize) {
        if !self.conns[conn].open || !self.wan_down {
            return;
        }
        self.conns[conn].open = false;
        for side in 0..2 {
            self.stop_serving(conn, side);
            self.at(
                self.t,
                Ev::Down {
                    conn,
                    to: side,
                    normal: false,
                },
            );
        }
    }

    /// When a message sent now across the WAN arrives: after the outage.
    pub(super) fn arrival(&self, a: usize, b: usize) -> f64 {
        let lat = self.latency(a, b);
        match self.sc.wan_outage {
            Some((start, dur)) if self.wan_down && self.hosts[a].group != self.hosts[b].group => {
                (start + dur).max(self.t) + lat
            }
            _ => self.t + lat,
        }
    }
}

//! How often this host sends handshakes to addresses it only heard of
//! (hearsay: a peer list, not a peer it was connected to). Any ticket
//! holder can put addresses in a peer list, those of hosts that run no
//! swarm among them; honest hosts must not become its reflectors.
//!
//! * A token bucket: `BURST` hearsay dials at once (a newcomer meets the
//!   swarm), then `RATE` a second.
//! * An address whose handshake failed is not dialed again, under any
//!   peer id, for `ADDR_BACKOFF`.
//! * An IP with `IP_FAILURES` failed hearsay handshakes in the last
//!   `IP_WINDOW` gets no hearsay dial until they age out, and no IP has
//!   more than `IP_IN_FLIGHT` hearsay dials in progress; unless this host
//!   is connected to a peer at that IP (it runs swarm: several hosts
//!   behind one NAT, or on one test machine).
//! * A hearsay dial tries at most `HEARSAY_ADDRS` addresses.
//!
//! So a host sends at most `IP_FAILURES + IP_IN_FLIGHT` handshakes a
//! minute to an IP where no peer of it runs, whatever peer lists say.

use std::collections::VecDeque;

use crate::core::Map;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub(super) const BURST: f64 = 32.0;
pub(super) const RATE: f64 = 2.0;
pub(super) const ADDR_BACKOFF: Duration = Duration::from_secs(60);
pub(super) const IP_WINDOW: Duration = Duration::from_secs(60);
pub(super) const IP_FAILURES: usize = 4;
pub(super) const IP_IN_FLIGHT: u32 = 2;
pub(super) const HEARSAY_ADDRS: usize = 2;
/// Addresses and IPs remembered at most (each map); past it the oldest
/// records go first.
const MAX_RECORDS: usize = 4096;

pub(super) struct DialLimits {
    tokens: f64,
    refilled: Instant,
    failed_addrs: Map<SocketAddr, Instant>,
    ip_failures: Map<IpAddr, VecDeque<Instant>>,
    in_flight: Map<IpAddr, u32>,
    /// IPs of connected peers, with how many.
    live: Map<IpAddr, u32>,
}

fn ip(a: &SocketAddr) -> IpAddr {
    a.ip().to_canonical()
}

impl DialLimits {
    pub(super) fn new(now: Instant) -> Self {
        DialLimits {
            tokens: BURST,
            refilled: now,
            failed_addrs: Map::default(),
            ip_failures: Map::default(),
            in_flight: Map::default(),
            live: Map::default(),
        }
    }

    /// A peer at `a` connected.
    pub(super) fn up(&mut self, a: SocketAddr) {
        *self.live.entry(ip(&a)).or_default() += 1;
    }

    /// A peer at `a` went away.
    pub(super) fn down(&mut self, a: SocketAddr) {
        if let Some(n) = self.live.get_mut(&ip(&a)) {
            *n -= 1;
            if *n == 0 {
                self.live.remove(&ip(&a));
            }
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * RATE).min(BURST);
        self.refilled = now;
    }

    /// Whether a hearsay dial could start now (a token is left).
    pub(super) fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// When the next token comes (now if one is left).
    pub(super) fn next_token(&mut self, now: Instant) -> Instant {
        self.refill(now);
        now + Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / RATE)
    }

    fn ip_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if self.live.contains_key(&ip) {
            return false;
        }
        let failed = self.ip_failures.get(&ip).map_or(0, |f| {
            f.iter()
                .filter(|&&t| now.saturating_duration_since(t) < IP_WINDOW)
                .count()
        });
        failed >= IP_FAILURES || self.in_flight.get(&ip).copied().unwrap_or(0) >= IP_IN_FLIGHT
    }

    /// The addresses of a hearsay entry that may be dialed now, at most
    /// `HEARSAY_ADDRS`, taking a token and counting them in flight; empty
    /// if none may (then nothing is taken).
    pub(super) fn admit(&mut self, addrs: &[SocketAddr], now: Instant) -> Vec<SocketAddr> {
        if !self.has_token(now) {
            return Vec::new();
        }
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            if out.len() == HEARSAY_ADDRS {
                break;
            }
            let recent_failure = self
                .failed_addrs
                .get(a)
                .is_some_and(|&t| now.saturating_duration_since(t) < ADDR_BACKOFF);
            let same_ip = out.iter().filter(|o| ip(o) == ip(a)).count() as u32;
            let in_flight = self.in_flight.get(&ip(a)).copied().unwrap_or(0);
            let crowded = !self.live.contains_key(&ip(a)) && in_flight + same_ip >= IP_IN_FLIGHT;
            if recent_failure || out.contains(a) || self.ip_blocked(ip(a), now) || crowded {
                continue;
            }
            out.push(*a);
        }
        if !out.is_empty() {
            self.tokens -= 1.0;
            for a in &out {
                *self.in_flight.entry(ip(a)).or_default() += 1;
            }
        }
        out
    }

    /// A hearsay dial of `addrs` (from `admit`) ended; if it `failed`,
    /// every address of it counts as failed.
    pub(super) fn ended(&mut self, addrs: &[SocketAddr], failed: bool, now: Instant) {
        for a in addrs {
            let ip = ip(a);
            if let Some(n) = self.in_flight.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&ip);
                }
            }
            if failed {
                self.addr_failed(*a, now);
                self.ip_failed(*a, now);
            }
        }
    }

    /// A handshake with `a` failed: no hearsay dial to it for a while.
    pub(super) fn addr_failed(&mut self, a: SocketAddr, now: Instant) {
        if self.failed_addrs.len() >= MAX_RECORDS {
            self.failed_addrs
                .retain(|_, &mut t| now.saturating_duration_since(t) < ADDR_BACKOFF);
            if self.failed_addrs.len() >= MAX_RECORDS {
                return;
            }
        }
        self.failed_addrs.insert(a, now);
    }

    fn ip_failed(&mut self, a: SocketAddr, now: Instant) {
        if self.ip_failures.len() >= MAX_RECORDS && !self.ip_failures.contains_key(&ip(&a)) {
            self.ip_failures.retain(|_, f| {
                f.back()
                    .is_some_and(|&t| now.saturating_duration_since(t) < IP_WINDOW)
            });
            if self.ip_failures.len() >= MAX_RECORDS {
                return;
            }
        }
        let f = self.ip_failures.entry(ip(&a)).or_default();
        while f
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= IP_WINDOW)
        {
            f.pop_front();
        }
        if f.len() < IP_FAILURES {
            f.push_back(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_a_rate() {
        let now = Instant::now();
        let mut l = DialLimits::new(now);
        let mut n = 0;
        for i in 0..100u16 {
            let addr = SocketAddr::new(IpAddr::from([10, 0, (i >> 8) as u8, i as u8]), 7000);
            if !l.admit(&[addr], now).is_empty() {
                n += 1;
            }
        }
        assert_eq!(n, BURST as usize);
        let later = now + Duration::from_secs(5);
        let mut m = 0;
        for i in 0..100u16 {
            let addr = SocketAddr::new(IpAddr::from([10, 1, (i >> 8) as u8, i as u8]), 7000);
            if !l.admit(&[addr], later).is_empty() {
                m += 1;
            }
        }
        assert_eq!(m, (5.0 * RATE) as usize);
    }

    #[test]
    fn a_failed_address_waits_whatever_id_it_comes_under() {
        let now = Instant::now();
        let mut l = DialLimits::new(now);
        let x = a("10.0.0.1:7000");
        let got = l.admit(&[x], now);
        assert_eq!(got, [x]);
        l.ended(&got, true, now);
        assert!(l.admit(&[x], now).is_empty());
        assert!(l.admit(&[x], now + ADDR_BACKOFF / 2).is_empty());
        assert_eq!(l.admit(&[x], now + ADDR_BACKOFF), [x]);
    }

    #[test]
    fn an_ip_that_does_not_answer_gets_few_handshakes() {
        let now = Instant::now();
        let mut l = DialLimits::new(now);
        let mut sent = 0;
        // a peer list with a thousand ports of one host
        for port in 1000..2000u16 {
            let addr = SocketAddr::new(IpAddr::from([192, 0, 2, 7]), port);
            let got = l.admit(&[addr], now);
            sent += got.len();
            l.ended(&got, true, now);
        }
        assert_eq!(sent, IP_FAILURES);
        // in flight at once, at most IP_IN_FLIGHT
        let mut l = DialLimits::new(now);
        let got: Vec<_> = (1000..1010u16)
            .map(|p| l.admit(&[SocketAddr::new(IpAddr::from([192, 0, 2, 8]), p)], now))
            .filter(|g| !g.is_empty())
            .collect();
        assert_eq!(got.len(), IP_IN_FLIGHT as usize);
    }

    #[test]
    fn a_dial_tries_few_addresses() {
        let now = Instant::now();
        let mut l = DialLimits::new(now);
        let many: Vec<SocketAddr> = (1..=16u8)
            .map(|i| SocketAddr::new(IpAddr::from([10, 0, 0, i]), 7000))
            .collect();
        assert_eq!(l.admit(&many, now).len(), HEARSAY_ADDRS);
    }

    #[test]
    fn an_ip_where_a_peer_runs_is_not_throttled() {
        let now = Instant::now();
        let mut l = DialLimits::new(now);
        let peer = a("127.0.0.1:4000");
        l.up(peer);
        for p in 5000..5010u16 {
            let got = l.admit(&[SocketAddr::new(peer.ip(), p)], now);
            assert_eq!(got.len(), 1, "dial {p}");
            l.ended(&got, true, now);
        }
        // but a failed address still waits
        assert!(l.admit(&[a("127.0.0.1:5000")], now).is_empty());
        l.down(peer);
        assert!(l.admit(&[a("127.0.0.1:6000")], now).is_empty());
    }

    #[test]
    fn a_success_frees_its_ip() {
        let now = Instant::now();
        let mut l = DialLimits::new(now);
        for p in 0..10u16 {
            let got = l.admit(&[SocketAddr::new(IpAddr::from([10, 0, 0, 1]), p)], now);
            assert_eq!(got.len(), 1, "dial {p}");
            l.ended(&got, false, now);
        }
    }
}

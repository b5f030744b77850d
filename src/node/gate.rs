//! Which incoming connections may start a handshake: the connections that
//! have not proved the swarm secret yet, counted per source (an IPv4
//! address, or an IPv6 /64) and in all. Pure bookkeeping, no I/O: the
//! accept loop asks it about every `Incoming` and acts at once on the
//! answer (it never waits for a slot).
//!
//! * A source holds at most `per_source` handshakes; one more is refused.
//! * Once the host holds half its slots, or a source half of its own,
//!   senders that have not proved their address get a QUIC retry first, so
//!   spoofed packets cannot take slots.
//! * When every slot is taken, a newcomer (whose address is proved) takes
//!   the oldest handshake of the source that holds the most, if that
//!   source holds more than the newcomer's does: an outsider with many
//!   addresses can fill the slots, but a host whose source holds none
//!   always gets one, and an honest handshake (a round trip or two) is
//!   over long before the attacker's connections that came before it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Whose handshakes count together.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Source {
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address: a host gets a /64.
    V6(u64),
}

impl From<SocketAddr> for Source {
    fn from(a: SocketAddr) -> Source {
        match a.ip() {
            IpAddr::V4(ip) => Source::V4(ip),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6((u128::from(ip) >> 64) as u64),
            },
        }
    }
}

/// What to do with an incoming connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<H> {
    /// Start its handshake under `ticket` (hand it back with `release`);
    /// end the handshake `evicted` stood for, if any, now.
    Accept { ticket: u64, evicted: Option<H> },
    /// Ask the sender to prove its address first (a QUIC retry).
    Retry,
    /// Refuse it at once.
    Refuse,
}

pub struct Gate<H> {
    slots: usize,
    per_source: usize,
    next: u64,
    total: usize,
    /// Per source, its handshakes by ticket (oldest first) and their handles.
    by_source: HashMap<Source, BTreeMap<u64, H>>,
}

impl<H> Gate<H> {
    pub fn new(slots: usize, per_source: usize) -> Self {
        Gate {
            slots: slots.max(1),
            per_source: per_source.max(1),
            next: 0,
            total: 0,
            by_source: HashMap::new(),
        }
    }

    /// Handshakes in progress.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.total
    }

    /// Handshakes in progress from `src`.
    pub fn of(&self, src: Source) -> usize {
        self.by_source.get(&src).map_or(0, BTreeMap::len)
    }

    /// Decides on a connection from `src`; `validated` if the sender has
    /// proved its address (it answered a retry). `handle` is kept with the
    /// ticket and handed back if the handshake is evicted.
    pub fn admit(&mut self, src: Source, validated: bool, handle: H) -> Admit<H> {
        let mine = self.of(src);
        if mine >= self.per_source {
            return Admit::Refuse;
        }
        let busy = self.total >= self.slots / 2 || mine >= self.per_source / 2;
        if busy && !validated {
            return Admit::Retry;
        }
        let mut evicted = None;
        if self.total >= self.slots {
            let victim = self
                .by_source
                .iter()
                .filter_map(|(s, q)| Some((*s, q.len(), *q.keys().next()?)))
                .max_by_key(|&(_, n, oldest)| (n, Reverse(oldest)));
            match victim {
                Some((s, n, oldest)) if n > mine => evicted = self.remove(s, oldest),
                _ => return Admit::Refuse,
            }
        }
        let ticket = self.next;
        self.next += 1;
        self.by_source
            .entry(src)
            .or_default()
            .insert(ticket, handle);
        self.total += 1;
        Admit::Accept { ticket, evicted }
    }

    /// Ends a handshake (done, failed, or authenticated); false if it was
    /// evicted before.
    pub fn release(&mut self, src: Source, ticket: u64) -> bool {
        self.remove(src, ticket).is_some()
    }

    fn remove(&mut self, src: Source, ticket: u64) -> Option<H> {
        let q = self.by_source.get_mut(&src)?;
        let h = q.remove(&ticket)?;
        if q.is_empty() {
            self.by_source.remove(&src);
        }
        self.total -= 1;
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(last: u8) -> Source {
        Source::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn ticket(a: Admit<u32>) -> (u64, Option<u32>) {
        match a {
            Admit::Accept { ticket, evicted } => (ticket, evicted),
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn a_source_is_capped_and_retried_past_half() {
        let mut g = Gate::new(64, 4);
        ticket(g.admit(src(1), false, 0));
        ticket(g.admit(src(1), false, 1));
        // half of its share: unproved addresses are asked to prove it
        assert_eq!(g.admit(src(1), false, 2), Admit::Retry);
        ticket(g.admit(src(1), true, 2));
        let (t, _) = ticket(g.admit(src(1), true, 3));
        // full: refused, proved or not, and other sources are not affected
        assert_eq!(g.admit(src(1), true, 4), Admit::Refuse);
        assert_eq!(g.admit(src(1), false, 4), Admit::Refuse);
        ticket(g.admit(src(2), false, 5));
        assert!(g.release(src(1), t));
        assert!(!g.release(src(1), t), "released twice");
        ticket(g.admit(src(1), true, 6));
        assert_eq!(g.len(), 5);
    }

    #[test]
    fn a_full_gate_takes_the_oldest_of_the_largest_source() {
        let mut g = Gate::new(8, 4);
        // two sources of 4 and 3, then one of 1: full
        for (i, s) in [1, 1, 1, 1, 2, 2, 2, 3].into_iter().enumerate() {
            ticket(g.admit(src(s), true, i as u32));
        }
        assert_eq!(g.len(), 8);
        // unproved newcomers are asked to prove their address
        assert_eq!(g.admit(src(9), false, 100), Admit::Retry);
        // a new source takes the oldest handshake of source 1
        let (_, ev) = ticket(g.admit(src(9), true, 100));
        assert_eq!(ev, Some(0));
        assert_eq!((g.of(src(1)), g.of(src(9)), g.len()), (3, 1, 8));
        // sources 1 and 2 now hold 3 each: the one whose oldest handshake
        // is older gives way (1's second came before 2's first)
        let (_, ev) = ticket(g.admit(src(10), true, 101));
        assert_eq!(ev, Some(1));
        // a source that holds as many as the largest is refused
        let mut g = Gate::new(2, 4);
        ticket(g.admit(src(1), true, 0));
        ticket(g.admit(src(2), true, 1));
        assert_eq!(g.admit(src(1), true, 2), Admit::Refuse);
    }

    #[test]
    fn many_sources_cannot_lock_out_a_new_one() {
        // 256 slots taken by 256 addresses, one handshake each
        let mut g = Gate::new(256, 16);
        for i in 0..256u32 {
            let s = Source::V4(Ipv4Addr::from(0x0a00_0000 + i));
            ticket(g.admit(s, true, i));
        }
        let honest = Source::V4(Ipv4Addr::new(192, 168, 0, 1));
        let (t, ev) = ticket(g.admit(honest, true, 999));
        // the oldest of all gives way, not the newcomer
        assert_eq!(ev, Some(0));
        // the attackers come back: each takes the oldest of theirs, and the
        // honest handshake is the newest, so it is the last to go
        for i in 0..255u32 {
            let s = Source::V4(Ipv4Addr::from(0x0b00_0000 + i));
            ticket(g.admit(s, true, 1000 + i));
        }
        assert!(g.release(honest, t), "the newcomer was evicted");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:5".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:6".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:5".parse().unwrap();
        assert_eq!(Source::from(a), Source::from(b));
        assert_ne!(Source::from(a), Source::from(c));
        let m: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(Source::from(m), src(1));
    }
}

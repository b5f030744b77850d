//! Connections: dials and their handshakes (each side admits on its own),
//! the bootstrap's retries, control messages with latency, and closes.

use super::*;

impl Swarm {
    /// Starts a handshake from `a` to `b`.
    pub(super) fn dial(&mut self, a: usize, b: usize) {
        let across = self.hosts[a].group != self.hosts[b].group;
        if self.hosts[b].host.is_none() || self.hosts[b].exited || (across && self.wan_down) {
            let id = self.hosts[b].id;
            self.at(self.t + DIAL_TIMEOUT, Ev::DialFailed { host: a, id });
            return;
        }
        let rtt = 2.0 * self.latency(a, b);
        self.conns.push(Conn {
            ends: [a, b],
            keys: [None, None],
            open: true,
            early: [Vec::new(), Vec::new()],
            wants_haves: [true, true],
            serve: [ServeSide::default(), ServeSide::default()],
        });
        let conn = self.conns.len() - 1;
        self.hosts[a].all_conns.push(conn);
        self.hosts[b].all_conns.push(conn);
        // QUIC's handshake, then the proofs: the acceptor is done first
        self.at(self.t + 1.5 * rtt, Ev::Handshake { conn, side: 1 });
        self.at(self.t + 2.0 * rtt, Ev::Handshake { conn, side: 0 });
    }

    pub(super) fn handshake(&mut self, conn: usize, side: usize) {
        let c = &self.conns[conn];
        if !c.open {
            return;
        }
        let (me, other) = (c.ends[side], c.ends[1 - side]);
        let now = self.now();
        let (oid, oaddr, ogroup) = {
            let o = &self.hosts[other];
            (o.id, o.addr, o.group)
        };
        if self.hosts[me].exited {
            return;
        }
        let Some(hh) = self.hosts[me].host.as_mut() else {
            return;
        };
        let ogroup_name = format!("g{ogroup}");
        match hh.admit(now, oid, &ogroup_name, oaddr, side == 0) {
            Admit::Refuse(_) => {
                self.close(conn, side, close::DUPLICATE);
                if side == 0 && other == 0 && self.hosts[me].conns.is_empty() {
                    self.retry_bootstrap(me);
                }
                return;
            }
            Admit::Redirect(peers) => {
                // the peer list, then the close once the newcomer has
                // started (after its manifest: a round trip)
                self.send(conn, side, Message::Peers(peers.into()));
                let rtt = 2.0 * self.latency(me, other);
                self.at(self.t + rtt, Ev::Close { conn, from: side });
                return;
            }
            Admit::Take { replaces } => {
                if let Some(old) = replaces
                    && let Some(&oc) = self.hosts[me].conns.get(&old)
                {
                    let os = usize::from(self.conns[oc].ends[1] == me);
                    self.hosts[me].conns.remove(&old);
                    self.conns[oc].keys[os] = None;
                    self.close(oc, os, close::DUPLICATE);
                }
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        self.conns[conn].keys[side] = Some(key);
        self.hosts[me].conns.insert(key, conn);
        let hm = &mut self.hosts[me];
        hm.peak_conns = hm.peak_conns.max(hm.conns.len());
        let up = PeerUp {
            info: PeerInfo {
                id: oid,
                group: format!("g{ogroup}"),
                addrs: vec![oaddr],
            },
            addr: oaddr,
            dialed: side == 0,
            since: ns(self.hosts[other].start) / 1_000_000 + 1,
        };
        let hh = self.hosts[me].host.as_mut().expect("checked above");
        hh.peer_up(now, key, up);
        // the control writer's first frame: this host's bitfield
        let bits = hh.have().to_bitvec();
        self.send(conn, side, Message::Bitfield(to_wire(&bits)));
        for msg in std::mem::take(&mut self.conns[conn].early[side]) {
            self.message_now(conn, side, msg);
        }
        self.touch(me);
    }

    /// The seed refused a joiner that has no peer yet: it tries again
    /// (the node's bootstrap dials until its connect timeout).
    pub(super) fn retry_bootstrap(&mut self, h: usize) {
        if self.t + BOOTSTRAP_RETRY > self.hosts[h].bootstrap_until {
            self.fail(h, "the seed refused every connection for 60s".into());
            return;
        }
        self.at(self.t + BOOTSTRAP_RETRY, Ev::Bootstrap(h));
    }

    /// Sends `msg` from side `from` of `conn` to the other side.
    pub(super) fn send(&mut self, conn: usize, from: usize, msg: Message) {
        self.send_all(conn, from, vec![msg]);
    }

    /// Sends `msgs`, in order, at once.
    pub(super) fn send_all(&mut self, conn: usize, from: usize, msgs: Vec<Message>) {
        let c = &self.conns[conn];
        if !c.open {
            return;
        }
        let at = self.arrival(c.ends[0], c.ends[1]);
        self.at(
            at,
            Ev::Msg {
                conn,
                to: 1 - from,
                msgs,
            },
        );
    }

    pub(super) fn message(&mut self, conn: usize, to: usize, msg: Message) {
        if !self.conns[conn].open {
            return;
        }
        if self.conns[conn].keys[to].is_none() {
            self.conns[conn].early[to].push(msg);
            return;
        }
        self.message_now(conn, to, msg);
        let h = self.conns[conn].ends[to];
        self.touch(h);
    }

    pub(super) fn message_now(&mut self, conn: usize, to: usize, msg: Message) {
        let (h, key) = self.end_key(conn, to);
        let Some(key) = key else { return };
        let now = self.now();
        self.messages += 1;
        if let Some(hh) = self.hosts[h].host.as_mut() {
            hh.message(now, key, msg);
        }
    }

    pub(super) fn side_of(&self, conn: usize, h: usize) -> usize {
        usize::from(self.conns[conn].ends[1] == h)
    }

    /// Closes `conn` from side `from`: the other side hears of it.
    pub(super) fn close(&mut self, conn: usize, from: usize, code: u32) {
        if !self.conns[conn].open {
            return;
        }
        self.conns[conn].open = false;
        let normal = code == close::DONE || code == close::DUPLICATE;
        let [a, b] = self.conns[conn].ends;
        let lat = self.latency(a, b);
        // both sides stop serving the other
        for side in 0..2 {
            self.stop_serving(conn, side);
        }
        self.at(
            self.t + lat,
            Ev::Down {
                conn,
                to: 1 - from,
                normal,
            },
        );
    }

    pub(super) fn down(&mut self, conn: usize, to: usize, normal: bool) {
        let (h, key) = self.end_key(conn, to);
        let Some(key) = key else { return };
        self.conns[conn].keys[to] = None;
        self.hosts[h].conns.remove(&key);
        let now = self.now();
        if let Some(hh) = self.hosts[h].host.as_mut() {
            hh.drop_peer(now, key, "closed", normal);
            self.touch(h);
        }
    }
}

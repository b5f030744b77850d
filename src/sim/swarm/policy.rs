//! Each simulated host's policy run as the engine runs it: a joiner's
//! start, a run of its policy after its events (`drive`), and what it
//! decides carried out (`act`): fetches, cancels, messages, closes, dials,
//! Haves, the copy put in place, and its exit.

use super::*;

impl Swarm {
    pub(super) fn start(&mut self, h: usize) {
        let sc = &self.sc;
        let is_seed = h == 0;
        let cfg = HostConfig {
            me: self.hosts[h].id,
            since: ns(self.hosts[h].start) / 1_000_000 + 1,
            group: format!("g{}", self.hosts[h].group),
            bridges: sc.bridges,
            is_join: !is_seed,
            linger: Duration::from_secs_f64(sc.linger),
            exit_on_complete: false,
            until_done: None,
            until_copies: None,
            rng_seed: sc.seed ^ (h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            max_peers: if is_seed {
                sc.seed_max_peers
            } else {
                MAX_CONNECTIONS
            },
        };
        let n = self.manifest.piece_count();
        let have = BitVec::repeat(is_seed, n);
        let now = self.now();
        self.hosts[h].host = Some(Host::new(cfg, self.manifest.clone(), have, !is_seed, now));
        if is_seed {
            self.hosts[h].announced = BitVec::repeat(true, n);
            self.hosts[h].done_at = Some(self.t);
        } else {
            self.hosts[h].bootstrap_until = self.t + BOOTSTRAP_FOR;
            self.dial(h, 0);
        }
        self.touch(h);
    }

    /// Runs the host's policy after an event, as the engine's loop does,
    /// and carries out what it decides.
    pub(super) fn drive(&mut self, h: usize) {
        if self.hosts[h].exited || self.hosts[h].host.is_none() {
            return;
        }
        self.drives += 1;
        let _span = tracing::debug_span!("host", h, t = self.t).entered();
        let now = self.now();
        self.act(h);
        let hh = self.hosts[h].host.as_mut().expect("checked");
        let ticked = hh.tick(now);
        self.act(h);
        if let Err(stop) = ticked {
            self.fail(h, format!("{stop:?}"));
            return;
        }
        let hh = self.hosts[h].host.as_mut().expect("checked");
        if h != 0 && hh.should_exit(now) {
            self.exit(h);
            return;
        }
        hh.schedule(now);
        self.act(h);
        let hh = self.hosts[h].host.as_ref().expect("checked");
        let wake = hh
            .poll_timeout(now)
            .saturating_duration_since(self.base)
            .as_secs_f64();
        if wake < self.hosts[h].next_wake {
            self.hosts[h].next_wake = wake;
            self.at(wake, Ev::Wake(h));
        }
    }

    pub(super) fn act(&mut self, h: usize) {
        loop {
            let Some(a) = self.hosts[h].host.as_mut().and_then(Host::poll_action) else {
                return;
            };
            match a {
                Action::Fetch { key, piece } => {
                    let Some(&conn) = self.hosts[h].conns.get(&key) else {
                        continue;
                    };
                    let side = self.side_of(conn, h);
                    let id = self.next_req;
                    self.next_req += 1;
                    self.req_index.insert((conn, side, piece), id);
                    self.reqs.insert(
                        id,
                        Req {
                            conn,
                            side,
                            piece,
                            at: self.t,
                            cancelled: false,
                        },
                    );
                    let lat = self.latency(self.conns[conn].ends[0], self.conns[conn].ends[1]);
                    self.at(self.t + lat, Ev::Request { req: id });
                    let len = self.manifest.piece_range(piece as usize).1;
                    let deadline = crate::core::request_deadline(len).as_secs_f64();
                    self.at(self.t + deadline, Ev::Deadline { req: id });
                }
                Action::Cancel { key, piece } => {
                    let Some(&conn) = self.hosts[h].conns.get(&key) else {
                        continue;
                    };
                    let side = self.side_of(conn, h);
                    if let Some(id) = self.req_index.remove(&(conn, side, piece)) {
                        self.reqs.get_mut(&id).expect("found").cancelled = true;
                        let lat = self.latency(self.conns[conn].ends[0], self.conns[conn].ends[1]);
                        self.at(self.t + lat, Ev::CancelRequest { req: id });
                    }
                }
                Action::Send { key, msg } => {
                    if let Some(&conn) = self.hosts[h].conns.get(&key) {
                        let side = self.side_of(conn, h);
                        self.send(conn, side, msg);
                    }
                }
                Action::PeerWantsHaves { key, on } => {
                    if let Some(&conn) = self.hosts[h].conns.get(&key) {
                        let side = self.side_of(conn, h);
                        let was =
                            std::mem::replace(&mut self.conns[conn].wants_haves[1 - side], on);
                        if on && !was {
                            let bits = self.hosts[h].announced.clone();
                            self.send(conn, side, Message::Bitfield(to_wire(&bits)));
                        }
                    }
                }
                Action::Close {
                    key, code, dropped, ..
                } => {
                    if let Some(&conn) = self.hosts[h].conns.get(&key) {
                        let side = self.side_of(conn, h);
                        if dropped {
                            self.hosts[h].conns.remove(&key);
                            self.conns[conn].keys[side] = None;
                        }
                        self.close(conn, side, code);
                        if !dropped {
                            self.at(
                                self.t,
                                Ev::Down {
                                    conn,
                                    to: side,
                                    normal: true,
                                },
                            );
                        }
                    }
                }
                Action::Dial(info) => {
                    if let Some(&b) = self.by_id.get(&info.id) {
                        self.dial(h, b);
                    }
                }
                Action::OtherGroup(_) => {}
                Action::HaveChanged => self.announce(h),
                Action::Finalize => {
                    self.hosts[h].done_at = Some(self.t);
                    if let Some(hh) = self.hosts[h].host.as_mut() {
                        hh.finalized();
                    }
                }
            }
        }
    }

    /// Sends Haves for the pieces gained since the last announcement.
    pub(super) fn announce(&mut self, h: usize) {
        let SimHost {
            host: Some(hh),
            announced,
            ..
        } = &mut self.hosts[h]
        else {
            return;
        };
        let new: Arc<[u32]> = hh
            .have()
            .iter_ones()
            .filter(|&i| !announced[i])
            .map(|i| i as u32)
            .collect();
        if new.is_empty() {
            return;
        }
        for &i in new.iter() {
            announced.set(i as usize, true);
        }
        let conns: Vec<usize> = self.hosts[h].conns.values().copied().collect();
        for conn in conns {
            let side = self.side_of(conn, h);
            let c = &self.conns[conn];
            if c.wants_haves[1 - side] && c.open {
                let at = self.arrival(c.ends[0], c.ends[1]);
                let pieces = new.clone();
                self.at(
                    at,
                    Ev::Haves {
                        conn,
                        to: 1 - side,
                        pieces,
                    },
                );
            }
        }
    }

    pub(super) fn fail(&mut self, h: usize, why: String) {
        self.hosts[h].failed = Some(why);
        self.exit(h);
    }

    /// The host's process ends: its connections close.
    pub(super) fn exit(&mut self, h: usize) {
        if self.hosts[h].exited {
            return;
        }
        self.hosts[h].exited = true;
        // every connection it has an end of, taken or still in its handshake
        let conns = std::mem::take(&mut self.hosts[h].all_conns);
        for conn in conns {
            let side = self.side_of(conn, h);
            self.close(conn, side, close::DONE);
        }
        self.hosts[h].conns.clear();
        self.hosts[h].host = None;
    }
}

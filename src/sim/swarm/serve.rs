//! Serving requests: a connection's queue and window, the host's total,
//! one flow per connection at a time, and what ends a serve.

use std::time::Duration;

use super::{Ev, Swarm};
use crate::core::Failure;
use crate::core::host::Decision;
use crate::core::serve::{self as serving, ServeWindow, Served};
use crate::wire::{Request, Status};

impl Swarm {
    pub(super) fn request(&mut self, id: u64) {
        let Some(r) = self.reqs.get(&id) else { return };
        let (conn, server_side) = (r.conn, 1 - r.side);
        if r.cancelled || !self.conns[conn].open {
            return;
        }
        let s = &mut self.conns[conn].serve[server_side];
        s.window
            .get_or_insert_with(|| ServeWindow::new(serving::PER_CONNECTION));
        s.queue.push_back(id);
        self.serve_next(conn, server_side);
    }

    /// Starts what the serving side's windows allow.
    pub(super) fn serve_next(&mut self, conn: usize, side: usize) {
        let server = self.conns[conn].ends[side];
        loop {
            if self.hosts[server].serving >= serving::TOTAL || !self.conns[conn].open {
                return;
            }
            let s = &mut self.conns[conn].serve[side];
            if s.queue.is_empty() || !s.window.as_mut().is_some_and(ServeWindow::try_start) {
                return;
            }
            let id = s.queue.pop_front().expect("not empty");
            let Some(r) = self.reqs.get(&id) else {
                self.end_serve_slot(conn, side, Served::Other);
                continue;
            };
            let piece = r.piece;
            let Some(key) = self.conns[conn].keys[side] else {
                self.end_serve_slot(conn, side, Served::Other);
                continue;
            };
            let now = self.now();
            if self.hosts[server].host.is_none() {
                self.end_serve_slot(conn, side, Served::Other);
                return;
            }
            self.hosts[server].serving += 1;
            let hh = self.hosts[server].host.as_mut().expect("checked");
            match hh.serve(now, key, &Request::Piece(piece)) {
                Decision::Piece { .. } => {
                    self.conns[conn].serve[side].active.push_back(id);
                    self.flow_next(conn, side);
                }
                Decision::Refuse(status) => {
                    self.hosts[server].serving -= 1;
                    self.end_serve_slot(conn, side, Served::Other);
                    let why = match status {
                        Status::Elsewhere => Failure::Elsewhere,
                        Status::Changed => Failure::Changed,
                        _ => Failure::Missing,
                    };
                    let lat = self.latency(self.conns[conn].ends[0], self.conns[conn].ends[1]);
                    self.at(self.t + lat, Ev::Refused { req: id, why });
                }
                Decision::Manifest => {
                    self.hosts[server].serving -= 1;
                    self.end_serve_slot(conn, side, Served::Other);
                }
            }
        }
    }

    pub(super) fn end_serve_slot(&mut self, conn: usize, side: usize, how: Served) {
        if let Some(w) = self.conns[conn].serve[side].window.as_mut() {
            w.end(how);
        }
    }

    /// A serve of `server` ended: its total has room again, for requests
    /// waiting on any of its connections (the node's semaphore wakes them).
    pub(super) fn serve_freed(&mut self, server: usize) {
        let conns: Vec<usize> = self.hosts[server].conns.values().copied().collect();
        for conn in conns {
            if self.hosts[server].serving >= serving::TOTAL {
                return;
            }
            let side = self.side_of(conn, server);
            if !self.conns[conn].serve[side].queue.is_empty() {
                self.serve_next(conn, side);
            }
        }
    }

    /// Starts the flow of the oldest serve of a connection side, if none
    /// flows.
    pub(super) fn flow_next(&mut self, conn: usize, side: usize) {
        let s = &self.conns[conn].serve[side];
        if s.flow.is_some() {
            return;
        }
        let Some(&id) = s.active.front() else { return };
        let r = &self.reqs[&id];
        let len = self.manifest.piece_range(r.piece as usize).1 as f64;
        let (server, client) = (self.conns[conn].ends[side], self.conns[conn].ends[1 - side]);
        let n = self.hosts.len() as u32;
        let g = self.sc.groups as u32;
        let mut links = vec![server as u32, n + client as u32];
        let (gs, gc) = (
            self.hosts[server].group as u32,
            self.hosts[client].group as u32,
        );
        if gs != gc {
            links.push(2 * n + gs);
            links.push(2 * n + g + gc);
        }
        let flow = self.net.start(&links, len, 1.0);
        self.flow_req.insert(flow, id);
        self.conns[conn].serve[side].flow = Some(flow);
    }

    /// A flow is through at `t`: the serve ends there, the piece arrives
    /// one way later.
    pub(super) fn flow_done(&mut self, flow: u32, id: u64, t: f64) {
        self.net.stop(flow);
        self.flow_req.remove(&flow);
        let Some(r) = self.reqs.get(&id) else { return };
        let (conn, side) = (r.conn, 1 - r.side);
        let piece = r.piece;
        let len = self.manifest.piece_range(piece as usize).1 as f64;
        let server = self.conns[conn].ends[side];
        let client = self.conns[conn].ends[1 - side];
        self.hosts[server].uploaded += len;
        self.hosts[client].received += len;
        let saved = self.t;
        self.t = t.max(saved);
        let s = &mut self.conns[conn].serve[side];
        s.flow = None;
        s.active.pop_front();
        self.hosts[server].serving -= 1;
        self.end_serve_slot(conn, side, Served::Piece);
        if let Some(key) = self.conns[conn].keys[side] {
            let now = self.now();
            if let Some(hh) = self.hosts[server].host.as_mut() {
                hh.serve_ended(now, key, piece, true);
            }
        }
        let lat = self.latency(server, client);
        self.at(self.t + lat, Ev::Delivered { req: id });
        self.flow_next(conn, side);
        self.serve_next(conn, side);
        self.serve_freed(server);
        self.drive(server);
        self.t = saved;
    }

    pub(super) fn delivered(&mut self, id: u64) {
        let Some(r) = self.take_req(id) else { return };
        if r.cancelled {
            return;
        }
        let (h, key) = self.end_key(r.conn, r.side);
        let Some(key) = key else { return };
        let len = self.manifest.piece_range(r.piece as usize).1;
        let elapsed = Duration::from_secs_f64((self.t - r.at).max(0.0));
        let now = self.now();
        if let Some(hh) = self.hosts[h].host.as_mut() {
            hh.piece_done(now, key, r.piece, len, elapsed);
            self.touch(h);
        }
    }

    pub(super) fn cancel_request(&mut self, id: u64) {
        let Some(r) = self.take_req(id) else { return };
        let (conn, side) = (r.conn, 1 - r.side);
        let s = &mut self.conns[conn].serve[side];
        if let Some(pos) = s.queue.iter().position(|&q| q == id) {
            s.queue.remove(pos);
            return;
        }
        let Some(pos) = s.active.iter().position(|&q| q == id) else {
            return;
        };
        s.active.remove(pos);
        if pos == 0
            && let Some(flow) = s.flow.take()
        {
            self.net.stop(flow);
            self.flow_req.remove(&flow);
        }
        let server = self.conns[conn].ends[side];
        self.hosts[server].serving -= 1;
        self.end_serve_slot(conn, side, Served::Other);
        if let Some(key) = self.conns[conn].keys[side] {
            let now = self.now();
            if let Some(hh) = self.hosts[server].host.as_mut() {
                hh.serve_ended(now, key, r.piece, false);
            }
        }
        self.flow_next(conn, side);
        self.serve_next(conn, side);
        self.serve_freed(server);
    }

    /// Ends every serve of side `side` of `conn` (the connection closed).
    pub(super) fn stop_serving(&mut self, conn: usize, side: usize) {
        let server = self.conns[conn].ends[side];
        let s = std::mem::take(&mut self.conns[conn].serve[side]);
        if let Some(flow) = s.flow {
            self.net.stop(flow);
            self.flow_req.remove(&flow);
        }
        self.hosts[server].serving -= s.active.len();
        let key = self.conns[conn].keys[side];
        let now = self.now();
        for &id in &s.active {
            if let Some(r) = self.take_req(id)
                && let (Some(key), Some(hh)) = (key, self.hosts[server].host.as_mut())
            {
                hh.serve_ended(now, key, r.piece, false);
            }
        }
        for &id in &s.queue {
            self.take_req(id);
        }
        if !s.active.is_empty() {
            self.serve_freed(server);
        }
    }
}

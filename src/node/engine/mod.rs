//! The engine: the one task that owns a host's I/O handles and drives its
//! sans-IO policy (`core::host::Host`). Connection, fetch and serve tasks
//! send it `Event`s; it turns each into a call on the host, executes the
//! actions the host then takes (start and cancel fetches, queue control
//! messages, close connections, dial, finalize the copy), answers serve
//! requests from the host's decision, and keeps the report and status.
//! It reads the clock only to pass `now` in.
//!
//! This file holds the state and the event loop; the handlers are `impl
//! Engine` blocks by concern: `peers` (the connection handles), `pieces`
//! (fetches, serves, finalizing), `index` (the basis indexed beside the
//! fetches), `report` (report and status).

mod index;
mod peers;
mod pieces;
mod report;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use bytes::Bytes;
use quinn::Endpoint;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::index::Index;
use self::peers::Peer;

use super::event::Event;
use super::identity::Identity;
use super::peer;
use super::rate::RateLimit;
use super::serve;
use super::{GroupConfig, NodeError, Report, Status, hex};
use crate::core::host::{self, Action, Host, HostConfig, Stop};
use crate::core::{PeerKey, RecentPieces};
use crate::manifest::Manifest;
use crate::storage::{Content, Partial};
use crate::wire::{PeerId, close};

pub const EVENT_QUEUE: usize = 1024;

/// How the engine's run ends when nothing goes wrong.
pub struct Exit {
    pub linger: Duration,
    pub exit_on_complete: bool,
    pub until_done: Option<usize>,
    pub until_copies: Option<u32>,
    pub force: bool,
    /// What of the manifest's metadata the copy gets (owners as root).
    pub keep: crate::storage::Keep,
}

/// Memory for pieces received lately, served without reading them back
/// from disk (see `core::RecentPieces`).
const RECENT_BYTES: usize = 16 << 20;

pub struct Engine {
    pub id: Identity,
    host: Host,
    manifest: Arc<Manifest>,
    manifest_bytes: Arc<Vec<u8>>,
    content: Arc<Content>,
    basis: Option<Arc<crate::storage::Basis>>,
    /// The basis's index, while it runs (`index::start_index`).
    index: Index,
    /// The finish of the copy, and then the removal of the old one that
    /// --force replaced: awaited before the run ends.
    finishing: Option<tokio::task::JoinHandle<()>>,
    partial: Option<Partial>,
    /// Pieces received lately that a peer still lacks, served from memory
    /// (`RECENT_BYTES` at most).
    recent: RecentPieces<Bytes>,
    have: watch::Sender<Arc<BitVec>>,
    peers: HashMap<PeerKey, Peer>,
    fetches: HashMap<(PeerKey, u32), CancellationToken>,
    /// Connections being turned away with peers (`Admit::Redirect`).
    redirecting: Arc<peers::Redirecting>,
    /// Files (as `files_of_piece` names them) already reported changed.
    changed_files: HashSet<String>,
    /// Where this host's copy lives: the seeded path, or the partial copy.
    content_root: PathBuf,
    endpoint: Endpoint,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    status: watch::Sender<Status>,
    pub report: Report,
    exit: Exit,
    started: Instant,
    seed_id: Option<PeerId>,
    upload_limit: Option<Arc<RateLimit>>,
    group: GroupConfig,
    /// Every cross-group byte, sent or fetched, passes this bucket.
    wan_limit: Option<Arc<RateLimit>>,
    serve_limit: Arc<tokio::sync::Semaphore>,
}

pub struct Parts {
    pub id: Identity,
    pub manifest: Arc<Manifest>,
    pub manifest_bytes: Arc<Vec<u8>>,
    pub content: Content,
    /// Where `content` lives (for messages).
    pub content_root: PathBuf,
    pub have: BitVec,
    pub partial: Option<Partial>,
    /// A join (fetches, then lingers while peers need it), not a seed. A
    /// join whose destination already is the image has all of `have` and
    /// no `partial`.
    pub is_join: bool,
    /// An older copy to index while fetching, and fetch pieces as deltas
    /// against; with the pieces held for the index (`Basis::plan`).
    pub basis: Option<(Arc<crate::storage::Basis>, BitVec)>,
    pub endpoint: Endpoint,
    pub exit: Exit,
    pub status: watch::Sender<Status>,
    pub started: Instant,
    pub seed_id: Option<PeerId>,
    pub report: Report,
    pub upload_limit: Option<u64>,
    pub group: GroupConfig,
    pub max_peers: usize,
}

impl Engine {
    pub fn new(p: Parts, events_tx: mpsc::Sender<Event>, events: mpsc::Receiver<Event>) -> Engine {
        let cfg = HostConfig {
            me: p.id.peer_id,
            since: p.id.since,
            group: p.group.name.clone(),
            bridges: p.group.bridges,
            is_join: p.is_join,
            linger: p.exit.linger,
            exit_on_complete: p.exit.exit_on_complete,
            until_done: p.exit.until_done,
            until_copies: p.exit.until_copies,
            rng_seed: rand::random(),
            max_peers: p.max_peers,
        };
        let host = Host::new(
            cfg,
            p.manifest.clone(),
            p.have.clone(),
            p.partial.is_some(),
            p.started,
        );
        let mut host = host;
        let (basis, index) = match p.basis {
            Some((b, held)) => {
                host.hold(&held);
                (Some(b), Index::pending(held))
            }
            None => (None, Index::default()),
        };
        let (have, _) = watch::channel(Arc::new(p.have));
        Engine {
            id: p.id,
            host,
            content: Arc::new(p.content),
            basis,
            index,
            finishing: None,
            partial: p.partial,
            recent: RecentPieces::new(RECENT_BYTES),
            manifest: p.manifest,
            manifest_bytes: p.manifest_bytes,
            have,
            peers: HashMap::new(),
            fetches: HashMap::new(),
            redirecting: Default::default(),
            changed_files: HashSet::new(),
            content_root: p.content_root,
            endpoint: p.endpoint,
            events_tx,
            events,
            status: p.status,
            report: p.report,
            exit: p.exit,
            started: p.started,
            seed_id: p.seed_id,
            upload_limit: p.upload_limit.map(|r| Arc::new(RateLimit::new(r))),
            wan_limit: p.group.wan_limit.map(|r| Arc::new(RateLimit::new(r))),
            group: p.group,
            serve_limit: Arc::new(tokio::sync::Semaphore::new(serve::SERVE_TOTAL)),
        }
    }

    pub fn have_rx(&self) -> watch::Receiver<Arc<BitVec>> {
        self.have.subscribe()
    }

    /// Runs until the exit condition holds, a fatal error, or `stop`; the
    /// report comes back however it ended.
    pub async fn run(mut self, stop: CancellationToken) -> (Report, Result<(), NodeError>) {
        // the image is known: displays and metrics show it from the start
        self.publish_status();
        // a joiner that resumed a complete copy only needs to finalize
        self.act();
        self.start_index();
        let result = loop {
            let wake = self.host.poll_timeout(Instant::now());
            tokio::select! {
                ev = self.events.recv() => {
                    let Some(ev) = ev else { break Err(NodeError::Network("event channel closed".into())) };
                    if let Err(e) = self.handle(ev) {
                        break Err(e);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = stop.cancelled() => break Err(NodeError::Interrupted),
            }
            let now = Instant::now();
            let ticked = self.host.tick(now);
            self.act();
            if let Err(stop) = ticked {
                break Err(self.stop_error(stop));
            }
            self.publish_status();
            if self.host.should_exit(now) {
                break Ok(());
            }
            self.host.schedule(now);
            self.act();
        };
        for t in self.fetches.values() {
            t.cancel();
        }
        if let Some(took) = self.index.stop() {
            self.report.basis_index_secs = took.as_secs_f64();
        }
        // Let the control writers deliver what is queued (Done above all),
        // then close every connection.
        let mut conns = Vec::new();
        let mut writers = Vec::new();
        for (_, p) in self.peers.drain() {
            conns.push((p.remote, p.handle.conn));
            writers.push(p.handle.writer);
        }
        let _ = tokio::time::timeout(peer::FLUSH_TIMEOUT, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
        close_endpoint(&self.endpoint, conns.iter().map(|(_, c)| c)).await;
        // nothing is received any more: a task still sending gives up
        // rather than wait on a full queue
        self.events.close();
        if let Some(f) = self.finishing.take() {
            let _ = f.await;
        }
        for (remote, conn) in &conns {
            self.count_quic(*remote, conn);
        }
        self.take_stats();
        self.report.elapsed_secs = self.started.elapsed().as_secs_f64();
        self.report.peak_rss_bytes = super::peak_rss_bytes();
        (self.report, result)
    }

    fn handle(&mut self, ev: Event) -> Result<(), NodeError> {
        let now = Instant::now();
        match ev {
            Event::Connected(h) => self.on_connected(*h),
            Event::DialFailed { id, why } => {
                tracing::debug!(
                    peer = hex(&id[..4]),
                    "dial failed: {}",
                    crate::text::Escaped(&why)
                );
                self.host.dial_failed(now, &id);
            }
            Event::PeerMsg { key, msg, budget } => {
                self.host.message(now, key, msg);
                drop(budget); // handled: its memory is free
            }
            Event::PeerDown { key, why } => self.on_peer_down(key, &why),
            Event::PieceDone {
                key,
                piece,
                data,
                received,
                from_basis,
                elapsed,
            } => self.on_piece(key, piece, data, (received, from_basis), elapsed),
            Event::PieceFailed { key, piece, why } => {
                tracing::trace!(peer = key, piece, ?why, "request failed");
                self.fetches.remove(&(key, piece));
                let addr = self.peers.get(&key).map(|p| p.handle.conn.remote_address());
                self.host.piece_failed(now, key, piece, why, addr);
            }
            Event::WriteFailed { piece, why } => self.on_write_failed(piece, why)?,
            Event::ServeAsk { key, req, reply } => {
                let answer = self.serve_answer(key, req);
                let _ = reply.send(answer);
            }
            Event::ServeEnded {
                key,
                piece,
                bytes,
                completed,
                changed,
                counted,
            } => {
                if changed {
                    self.on_source_changed(piece);
                }
                self.on_serve_ended(key, piece, bytes, completed, counted)
            }
            Event::Finalized(r) => self.on_finalized(r)?,
            Event::Indexed(p) => self.on_indexed(now, p),
            Event::IndexDone { result, took } => self.on_index_done(now, result, took)?,
        }
        self.act();
        Ok(())
    }

    /// Executes what the host decided.
    fn act(&mut self) {
        while let Some(a) = self.host.poll_action() {
            match a {
                Action::Fetch { key, piece } => self.start_fetch(key, piece),
                Action::Cancel { key, piece } => {
                    if let Some(t) = self.fetches.remove(&(key, piece)) {
                        tracing::trace!(peer = key, piece, "cancel");
                        t.cancel();
                    }
                }
                Action::Send { key, msg } => {
                    let sent = self
                        .peers
                        .get(&key)
                        .is_some_and(|p| p.handle.control.try_send(msg.clone()).is_ok());
                    if !sent {
                        self.host.unsent(key, &msg);
                    }
                }
                Action::PeerWantsHaves { key, on } => {
                    if let Some(p) = self.peers.get(&key) {
                        p.handle.wants_haves.send_replace(on);
                    }
                }
                Action::Close {
                    key,
                    code,
                    reason,
                    dropped,
                } => {
                    let p = if dropped {
                        self.remove_handle(key)
                    } else {
                        self.peers.get(&key).map(|p| p.handle.conn.clone())
                    };
                    if let Some(conn) = p {
                        conn.close(code.into(), reason.as_bytes());
                    }
                }
                Action::Dial(info) => {
                    tokio::spawn(super::connect::dial(
                        self.endpoint.clone(),
                        self.id.clone(),
                        info,
                        self.events_tx.clone(),
                    ));
                }
                Action::OtherGroup(addrs) => self.id.wan.learn(&addrs),
                Action::HaveChanged => {
                    self.have
                        .send_replace(Arc::new(self.host.have().to_bitvec()));
                }
                Action::Finalize => self.start_finalize(),
            }
        }
    }

    /// The message a run that gave up ends with.
    fn stop_error(&self, stop: Stop) -> NodeError {
        match stop {
            Stop::Alone { have, total } => NodeError::Network(format!(
                "no peer reachable for {}s with {have} of {total} pieces",
                host::ALONE_TIMEOUT.as_secs(),
            )),
            Stop::Stalled { have, total } => NodeError::Network(format!(
                "no piece arrived for {}s and no connected peer offers a missing one ({have} of {total} pieces)",
                host::STALL_TIMEOUT.as_secs(),
            )),
            Stop::Changed { piece, have, total } => NodeError::Verification(format!(
                "piece {piece} ({}) changed at its source after the manifest was made, \
                 and no other host holds it: the seeded files were modified while \
                 seeded; seed them again for a new ticket ({have} of {total} pieces here)",
                self.files_of_piece(piece as usize),
            )),
        }
    }
}

/// Longest wait for the connections' last packets at exit.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Closes every connection of `endpoint` and waits until each of `conns`
/// has sent a packet since, its CONNECTION_CLOSE, but not for the draining
/// period after it (`Endpoint::wait_idle`, three probe timeouts): that added
/// 80 ms to every exit on loopback, 7% of a 1 GiB join. A close that is
/// lost all the same costs the peer only its idle timeout.
async fn close_endpoint<'a>(
    endpoint: &Endpoint,
    conns: impl Iterator<Item = &'a quinn::Connection>,
) {
    // counted before closing: a data packet sent in between can only end
    // the wait early, never make it last longer
    let open: Vec<_> = conns
        .filter(|c| c.close_reason().is_none())
        .map(|c| (c, c.stats().udp_tx.datagrams))
        .collect();
    endpoint.close(close::DONE.into(), b"bye");
    let sent = async {
        while !open.iter().all(|(c, n)| c.stats().udp_tx.datagrams > *n) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sent).await;
}

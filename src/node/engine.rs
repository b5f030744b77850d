//! The engine: the one task that owns the swarm state. Connection tasks and
//! fetch tasks send it `Event`s; it feeds them to the sans-IO core and acts
//! on the decisions (start fetches, cancel duplicates, answer serve
//! requests, dial peers, publish our bitfield, decide when to exit).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitvec::prelude::*;
use quinn::{ConnectionError, Endpoint};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::connect;
use super::peer::{self, Handshaken, Identity, PeerHandle, ServeAnswer, close};
use super::rate::RateLimit;
use super::{ALONE_TIMEOUT, GroupConfig, NodeError, Report, STALL_TIMEOUT, Status, fetch, hex};
use crate::core::group;
use crate::core::{Download, DownloadConfig, Failure, PeerKey, Spreader};
use crate::manifest::Manifest;
use crate::storage::{Content, Partial, StorageError};
use crate::wire::{MAX_PEERS, Message, PeerId, PeerInfo, Request, Status as WireStatus};

pub const EVENT_QUEUE: usize = 1024;
const TICK: Duration = Duration::from_millis(250);
/// Connections this host keeps at most; more are refused or not dialed.
const MAX_CONNECTIONS: usize = 512;
/// This host dials known peers only while it has fewer connections than
/// this; others may still dial it (up to `MAX_CONNECTIONS`). Like
/// BitTorrent's peer limit, it keeps a large swarm a mesh, not a clique.
const DIAL_TARGET: usize = 24;
const MAX_KNOWN: usize = 4096;
const REDIAL_AFTER: Duration = Duration::from_secs(2);
const MAX_DIAL_FAILURES: u32 = 5;
/// A joiner takes no bridge role in its first second, nor (for its first
/// ten) while it is still dialing members of its group it has just heard
/// of: hosts started together would otherwise each see an empty group,
/// each elect itself and pull the same first pieces over the WAN.
const BRIDGE_SETTLE: Duration = Duration::from_secs(1);
const BRIDGE_SETTLE_MAX: Duration = Duration::from_secs(10);

pub enum Event {
    Connected(Box<Handshaken>),
    DialFailed {
        id: PeerId,
        why: String,
    },
    PeerMsg {
        key: PeerKey,
        msg: Message,
    },
    PeerDown {
        key: PeerKey,
        why: String,
    },
    PieceDone {
        key: PeerKey,
        piece: u32,
        bytes: u64,
        elapsed: Duration,
    },
    PieceFailed {
        key: PeerKey,
        piece: u32,
        why: Failure,
    },
    WriteFailed {
        piece: u32,
        why: String,
    },
    ServeAsk {
        key: PeerKey,
        req: Request,
        reply: oneshot::Sender<ServeAnswer>,
    },
    ServeEnded {
        key: PeerKey,
        piece: u32,
        bytes: u64,
        completed: bool,
    },
    Finalized(Result<PathBuf, StorageError>),
}

/// How the engine's run ends when nothing goes wrong.
pub struct Exit {
    pub linger: Duration,
    pub exit_on_complete: bool,
    pub until_done: Option<usize>,
    pub force: bool,
}

struct Peer {
    handle: PeerHandle,
    info: PeerInfo,
    done: bool,
    /// In another group than this host.
    remote: bool,
}

struct Known {
    info: PeerInfo,
    next_dial: Instant,
    failures: u32,
    dialing: bool,
}

pub struct Engine {
    pub id: Identity,
    manifest: Arc<Manifest>,
    manifest_bytes: Arc<Vec<u8>>,
    content: Arc<Content>,
    /// Joiners: the download state; `None` on the seed.
    download: Option<Download>,
    /// The seed: its upload policy.
    spreader: Option<Spreader>,
    partial: Option<Partial>,
    finalizing: bool,
    complete: bool,
    have: watch::Sender<Arc<BitVec>>,
    peers: HashMap<PeerKey, Peer>,
    by_id: HashMap<PeerId, PeerKey>,
    known: HashMap<PeerId, Known>,
    banned: HashSet<PeerId>,
    fetches: HashMap<(PeerKey, u32), CancellationToken>,
    done_ids: HashSet<PeerId>,
    endpoint: Endpoint,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    status: watch::Sender<Status>,
    pub report: Report,
    exit: Exit,
    started: Instant,
    alone_since: Option<Instant>,
    /// When the last piece arrived (or the run started).
    last_progress: Instant,
    all_done_since: Option<Instant>,
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
    pub have: BitVec,
    pub partial: Option<Partial>,
    pub endpoint: Endpoint,
    pub exit: Exit,
    pub status: watch::Sender<Status>,
    pub started: Instant,
    pub seed_id: Option<PeerId>,
    pub report: Report,
    pub upload_limit: Option<u64>,
    pub group: GroupConfig,
}

impl Engine {
    pub fn new(p: Parts, events_tx: mpsc::Sender<Event>, events: mpsc::Receiver<Event>) -> Engine {
        let n = p.manifest.piece_count();
        let is_seed = p.partial.is_none();
        let complete = p.have.all();
        let download = (!is_seed).then(|| {
            Download::new(
                p.have.clone(),
                DownloadConfig::for_piece_size(p.manifest.piece_size),
                rand::random(),
            )
        });
        let (have, _) = watch::channel(Arc::new(p.have));
        Engine {
            id: p.id,
            content: Arc::new(p.content),
            download,
            spreader: is_seed.then(|| Spreader::new(n)),
            partial: p.partial,
            manifest: p.manifest,
            manifest_bytes: p.manifest_bytes,
            finalizing: false,
            complete: is_seed && complete,
            have,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            known: HashMap::new(),
            banned: HashSet::new(),
            fetches: HashMap::new(),
            done_ids: HashSet::new(),
            endpoint: p.endpoint,
            events_tx,
            events,
            status: p.status,
            report: p.report,
            exit: p.exit,
            started: p.started,
            alone_since: None,
            last_progress: p.started,
            all_done_since: None,
            seed_id: p.seed_id,
            upload_limit: p.upload_limit.map(|r| Arc::new(RateLimit::new(r))),
            wan_limit: p.group.wan_limit.map(|r| Arc::new(RateLimit::new(r))),
            group: p.group,
            serve_limit: Arc::new(tokio::sync::Semaphore::new(peer::SERVE_TOTAL)),
        }
    }

    pub fn have_rx(&self) -> watch::Receiver<Arc<BitVec>> {
        self.have.subscribe()
    }

    /// Runs until the exit condition holds, a fatal error, or `stop`.
    pub async fn run(mut self, stop: CancellationToken) -> Result<Report, NodeError> {
        // A joiner that resumed a complete copy only needs to finalize.
        if !self.complete && self.download.as_ref().is_some_and(|d| d.is_complete()) {
            self.start_finalize();
        }
        let result = loop {
            let wake = self
                .download
                .as_ref()
                .and_then(|d| d.poll_timeout(Instant::now()))
                .map_or(Instant::now() + TICK, |t| t.min(Instant::now() + TICK));
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
            if let Err(e) = self.tick() {
                break Err(e);
            }
            if self.should_exit() {
                break Ok(());
            }
            self.schedule();
        };
        for t in self.fetches.values() {
            t.cancel();
        }
        // Let the control writers deliver what is queued (Done above all),
        // then close every connection.
        for (key, p) in &self.peers {
            tracing::debug!(peer = key, stats = ?p.handle.conn.stats(), "connection at exit");
        }
        let writers: Vec<_> = self.peers.drain().map(|(_, p)| p.handle.writer).collect();
        let _ = tokio::time::timeout(peer::FLUSH_TIMEOUT, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
        self.endpoint.close(close::DONE.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.report.elapsed_secs = self.started.elapsed().as_secs_f64();
        result.map(|_| self.report)
    }

    fn handle(&mut self, ev: Event) -> Result<(), NodeError> {
        match ev {
            Event::Connected(h) => self.on_connected(*h),
            Event::DialFailed { id, why } => {
                tracing::debug!(peer = hex(&id[..4]), "dial failed: {why}");
                if let Some(k) = self.known.get_mut(&id) {
                    k.dialing = false;
                    k.failures += 1;
                    k.next_dial = Instant::now() + REDIAL_AFTER * k.failures;
                    if k.failures >= MAX_DIAL_FAILURES {
                        self.known.remove(&id);
                    }
                }
            }
            Event::PeerMsg { key, msg } => self.on_message(key, msg),
            Event::PeerDown { key, why } => self.drop_peer(key, &why),
            Event::PieceDone {
                key,
                piece,
                bytes,
                elapsed,
            } => self.on_piece(key, piece, bytes, elapsed),
            Event::PieceFailed { key, piece, why } => {
                self.fetches.remove(&(key, piece));
                if why == Failure::Corrupt {
                    self.report.pieces_corrupt += 1;
                    if let Some(p) = self.peers.get(&key) {
                        tracing::warn!(
                            peer = hex(&p.info.id[..4]),
                            piece,
                            "piece failed verification; dropping the peer"
                        );
                        self.banned.insert(p.info.id);
                        p.handle.conn.close(close::CORRUPT.into(), b"corrupt piece");
                    }
                    if let Some(d) = &mut self.download {
                        d.remove_peer(key);
                    }
                } else if let Some(d) = &mut self.download {
                    d.piece_failed(key, piece, why, Instant::now());
                }
            }
            Event::WriteFailed { piece, why } => {
                // A late endgame duplicate may fail to write after the copy
                // was finished and renamed; only a piece we lack is fatal.
                if self
                    .download
                    .as_ref()
                    .is_some_and(|d| d.have()[piece as usize])
                {
                    tracing::debug!(piece, "late duplicate not written: {why}");
                } else {
                    return Err(NodeError::Other(anyhow::anyhow!(
                        "writing piece {piece}: {why}"
                    )));
                }
            }
            Event::ServeAsk { key, req, reply } => {
                let answer = self.serve_answer(key, req);
                let _ = reply.send(answer);
            }
            Event::ServeEnded {
                key,
                piece,
                bytes,
                completed,
            } => {
                if let Some(s) = &mut self.spreader {
                    s.serve_ended(piece as usize, completed);
                }
                self.report.bytes_served += bytes;
                if let Some(p) = self.peers.get(&key) {
                    *self.report.served_to.entry(hex(&p.info.id)).or_default() += bytes;
                    if p.remote {
                        self.report.served_cross_group += bytes;
                    } else {
                        self.report.served_same_group += bytes;
                    }
                }
            }
            Event::Finalized(r) => {
                let path = r?;
                let files = self.manifest.files();
                let content = Content::open(path.clone(), &files, false).map_err(|e| {
                    NodeError::Other(anyhow::anyhow!("reopening {}: {e}", path.display()))
                })?;
                self.content = Arc::new(content);
                self.complete = true;
                self.finalizing = false;
                self.report.output = Some(path);
                self.report.complete_secs = Some(self.started.elapsed().as_secs_f64());
                for p in self.peers.values() {
                    let _ = p.handle.control.try_send(Message::Done);
                }
            }
        }
        Ok(())
    }

    fn on_connected(&mut self, h: Handshaken) {
        let id = h.hello.peer_id;
        if let Some(k) = self.known.get_mut(&id) {
            k.dialing = false;
        }
        if self.banned.contains(&id) || self.peers.len() >= MAX_CONNECTIONS {
            h.conn.close(close::DUPLICATE.into(), b"not accepted");
            return;
        }
        let dialer = |dialed: bool, them: PeerId| if dialed { self.id.peer_id } else { them };
        if let Some(&old_key) = self.by_id.get(&id) {
            let old = &self.peers[&old_key];
            // Keep the connection dialed by the lower peer id; both sides
            // apply the same rule. Same dialer: the newer one wins.
            let (old_d, new_d) = (dialer(old.handle.dialed, id), dialer(h.dialed, id));
            if new_d > old_d {
                h.conn.close(close::DUPLICATE.into(), b"duplicate");
                return;
            }
            old.handle.conn.close(close::DUPLICATE.into(), b"duplicate");
            self.drop_peer(old_key, "replaced by a new connection");
        }
        let remote = h.conn.remote_address();
        let cross = h.hello.group != self.group.name;
        let info = PeerInfo {
            id,
            group: h.hello.group.clone(),
            addrs: connect::resolve_addrs(&h.hello.addrs, remote),
        };
        let handle = peer::start(
            h,
            self.events_tx.clone(),
            self.have_rx(),
            self.serve_limit.clone(),
        );
        let key = handle.key;
        tracing::debug!(peer = hex(&id[..4]), %remote, "peer up");
        // Tell the newcomer about everyone, and everyone about the newcomer.
        let others: Vec<PeerInfo> = self
            .peers
            .values()
            .map(|p| p.info.clone())
            .take(MAX_PEERS)
            .collect();
        if !others.is_empty() {
            let _ = handle.control.try_send(Message::Peers(others));
        }
        for p in self.peers.values() {
            let _ = p
                .handle
                .control
                .try_send(Message::Peers(vec![info.clone()]));
        }
        if self.complete {
            let _ = handle.control.try_send(Message::Done);
        }
        if let Some(d) = &mut self.download {
            if cross {
                d.add_remote_peer(key);
            } else {
                d.add_peer(key);
            }
        }
        self.known.remove(&id);
        self.by_id.insert(id, key);
        self.peers.insert(
            key,
            Peer {
                handle,
                info,
                done: false,
                remote: cross,
            },
        );
        if !cross {
            self.elect();
        }
    }

    /// Re-runs the bridge election over the live members of this host's
    /// group that it knows (see `core::group`).
    fn elect(&mut self) {
        let Some(d) = &mut self.download else { return };
        let others: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| !p.remote)
            .map(|p| p.info.id)
            .collect();
        let age = self.started.elapsed();
        let meeting = self
            .known
            .values()
            .any(|k| k.info.group == self.group.name && (k.dialing || k.failures == 0));
        let settling = age < BRIDGE_SETTLE || (meeting && age < BRIDGE_SETTLE_MAX);
        let share = if settling || d.is_complete() {
            None
        } else {
            group::bridge_share(
                &self.manifest.id().0,
                &self.id.peer_id,
                &others,
                self.group.bridges,
            )
        };
        if share != d.bridge() {
            match share {
                Some(s) => tracing::info!(
                    group = self.group.name,
                    "this host is now bridge {} of {}",
                    s.rank + 1,
                    s.of
                ),
                None => tracing::info!(group = self.group.name, "this host is no longer a bridge"),
            }
            for c in d.set_bridge(share) {
                if let Some(t) = self.fetches.remove(&(c.peer, c.piece)) {
                    t.cancel();
                }
            }
            if share.is_some() {
                self.report.was_bridge = true;
            }
        }
    }

    fn on_message(&mut self, key: PeerKey, msg: Message) {
        if !self.peers.contains_key(&key) {
            return;
        }
        let res = match msg {
            Message::Bitfield(bits) => {
                let bits: BitVec = bits.iter().by_vals().collect();
                if let Some(s) = &mut self.spreader {
                    s.peer_bitfield(key, &bits);
                }
                match &mut self.download {
                    Some(d) => d.peer_bitfield(key, &bits).map_err(|e| e.to_string()),
                    None if bits.len() != self.manifest.piece_count() => {
                        Err("bitfield length".into())
                    }
                    None => Ok(()),
                }
            }
            Message::Have(i) => {
                if let Some(s) = &mut self.spreader {
                    s.peer_have(key, i as usize);
                }
                match &mut self.download {
                    Some(d) => d.peer_have(key, i as usize).map_err(|e| e.to_string()),
                    None if i as usize >= self.manifest.piece_count() => Err("piece index".into()),
                    None => Ok(()),
                }
            }
            Message::Peers(list) => {
                for info in list {
                    self.learn(info);
                }
                Ok(())
            }
            Message::Done => {
                let p = self.peers.get_mut(&key).expect("checked above");
                p.done = true;
                self.done_ids.insert(p.info.id);
                tracing::debug!(peer = hex(&p.info.id[..4]), "peer is done");
                Ok(())
            }
            Message::Hello(_) => Err("second hello".into()),
        };
        if let Err(why) = res {
            if let Some(p) = self.peers.get(&key) {
                tracing::warn!(peer = hex(&p.info.id[..4]), "protocol violation: {why}");
                p.handle.conn.close(close::PROTOCOL.into(), why.as_bytes());
            }
            self.drop_peer(key, &why);
        }
    }

    fn learn(&mut self, info: PeerInfo) {
        if info.id == self.id.peer_id
            || self.by_id.contains_key(&info.id)
            || self.banned.contains(&info.id)
            || self.known.len() >= MAX_KNOWN
            || info.addrs.is_empty()
        {
            return;
        }
        self.known.entry(info.id).or_insert(Known {
            info,
            next_dial: Instant::now(),
            failures: 0,
            dialing: false,
        });
    }

    fn drop_peer(&mut self, key: PeerKey, why: &str) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        let id = p.info.id;
        tracing::debug!(peer = hex(&id[..4]), "peer down: {why}");
        if self.by_id.get(&id) == Some(&key) {
            self.by_id.remove(&id);
        }
        if let Some(d) = &mut self.download {
            d.remove_peer(key);
        }
        if let Some(s) = &mut self.spreader {
            s.peer_gone(key);
        }
        if !p.remote {
            self.elect();
        }
        self.fetches.retain(|(k, _), t| {
            if *k == key {
                t.cancel();
            }
            *k != key
        });
        // A peer that left normally, or that we refused, is not redialed.
        let normal = matches!(p.handle.conn.close_reason(), Some(ConnectionError::ApplicationClosed(ref c)) if c.error_code == close::DONE.into() || c.error_code == close::DUPLICATE.into())
            || matches!(
                p.handle.conn.close_reason(),
                Some(ConnectionError::LocallyClosed)
            );
        if !normal && !p.done && !self.banned.contains(&id) && !self.by_id.contains_key(&id) {
            self.known.insert(
                id,
                Known {
                    info: p.info,
                    next_dial: Instant::now() + REDIAL_AFTER,
                    failures: 1,
                    dialing: false,
                },
            );
        }
    }

    fn on_piece(&mut self, key: PeerKey, piece: u32, bytes: u64, elapsed: Duration) {
        self.fetches.remove(&(key, piece));
        let Some(d) = &mut self.download else { return };
        if d.have()[piece as usize] {
            return; // a duplicate that finished after the winner
        }
        for c in d.piece_received(key, piece, bytes, elapsed) {
            if let Some(t) = self.fetches.remove(&(c.peer, c.piece)) {
                t.cancel();
            }
        }
        self.report.pieces_fetched += 1;
        self.last_progress = Instant::now();
        self.report.bytes_received += bytes;
        if let Some(p) = self.peers.get(&key) {
            *self
                .report
                .received_from
                .entry(hex(&p.info.id))
                .or_default() += bytes;
            if Some(p.info.id) == self.seed_id {
                self.report.received_from_seed += bytes;
            }
            if p.remote {
                self.report.received_cross_group += bytes;
            } else {
                self.report.received_same_group += bytes;
            }
        }
        let have: BitVec = d.have().to_bitvec();
        let complete = d.is_complete();
        self.have.send_replace(Arc::new(have));
        if complete {
            self.start_finalize();
        }
    }

    fn start_finalize(&mut self) {
        let Some(partial) = self.partial.take() else {
            return;
        };
        self.finalizing = true;
        let m = self.manifest.clone();
        let force = self.exit.force;
        let tx = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let r = partial.finish(&m, force);
            let _ = tx.blocking_send(Event::Finalized(r));
        });
    }

    fn serve_answer(&mut self, key: PeerKey, req: Request) -> ServeAnswer {
        let i = match req {
            Request::Manifest => return ServeAnswer::Manifest(self.manifest_bytes.clone()),
            Request::Piece(i) => i as usize,
        };
        if i >= self.manifest.piece_count() || !self.have.borrow()[i] {
            return ServeAnswer::Refuse(WireStatus::Missing);
        }
        if let Some(s) = &mut self.spreader
            && !s.should_serve(key, i)
        {
            return ServeAnswer::Refuse(WireStatus::Elsewhere);
        }
        let (offset, len) = self.manifest.piece_range(i);
        let remote = self.peers.get(&key).is_some_and(|p| p.remote);
        let limits = [
            self.upload_limit.clone(),
            self.wan_limit.clone().filter(|_| remote),
        ];
        ServeAnswer::Piece {
            content: self.content.clone(),
            offset,
            len,
            limits: limits.into_iter().flatten().collect(),
        }
    }

    /// Starts the requests the core decides on.
    fn schedule(&mut self) {
        let Some(d) = &mut self.download else { return };
        for (key, piece) in d.poll_requests(Instant::now()) {
            let Some(p) = self.peers.get(&key) else {
                continue;
            };
            let cancel = CancellationToken::new();
            self.fetches.insert((key, piece), cancel.clone());
            let job = fetch::Job {
                key,
                conn: p.handle.conn.clone(),
                wan_limit: self.wan_limit.clone().filter(|_| p.remote),
                piece,
                manifest: self.manifest.clone(),
                content: self.content.clone(),
                cancel,
            };
            tokio::spawn(fetch::run(job, self.events_tx.clone()));
        }
    }

    fn tick(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        // dial peers we learned about, up to the dial target
        let dialing = self.known.values().filter(|k| k.dialing).count();
        let room = DIAL_TARGET.saturating_sub(self.peers.len() + dialing);
        // members of this host's group first: it fetches from them, and
        // the bridge election needs to see them
        let mut due: Vec<&mut Known> = self
            .known
            .values_mut()
            .filter(|k| !k.dialing && k.next_dial <= now)
            .collect();
        due.sort_by_key(|k| k.info.group != self.group.name);
        let due: Vec<PeerInfo> = due
            .into_iter()
            .take(room)
            .map(|k| {
                k.dialing = true;
                k.info.clone()
            })
            .collect();
        for info in due {
            tokio::spawn(connect::dial(
                self.endpoint.clone(),
                self.id.clone(),
                info,
                self.events_tx.clone(),
            ));
        }
        // a joiner left with nobody to talk to gives up after a while
        let dialing = self.known.values().any(|k| k.dialing);
        if !self.complete && self.download.is_some() && self.peers.is_empty() && !dialing {
            let since = *self.alone_since.get_or_insert(now);
            if now - since > ALONE_TIMEOUT {
                return Err(NodeError::Network(format!(
                    "no peer reachable for {}s with {} of {} pieces",
                    ALONE_TIMEOUT.as_secs(),
                    self.download.as_ref().map_or(0, |d| d.have_count()),
                    self.manifest.piece_count()
                )));
            }
        } else {
            self.alone_since = None;
        }
        self.elect();
        // connected, but nobody has what we miss (e.g. the seed died before
        // every piece left it): give up rather than wait forever
        if !self.complete
            && !self.finalizing
            && self.download.is_some()
            && self.fetches.is_empty()
            && now - self.last_progress > STALL_TIMEOUT
        {
            return Err(NodeError::Network(format!(
                "no piece arrived for {}s and no connected peer offers a missing one ({} of {} pieces)",
                STALL_TIMEOUT.as_secs(),
                self.download.as_ref().map_or(0, |d| d.have_count()),
                self.manifest.piece_count()
            )));
        }
        let all_done = self.complete && !dialing && self.peers.values().all(|p| p.done);
        self.all_done_since = if all_done {
            Some(self.all_done_since.unwrap_or(now))
        } else {
            None
        };
        let have_count = self
            .download
            .as_ref()
            .map_or(self.manifest.piece_count(), |d| d.have_count());
        self.status.send_replace(Status {
            pieces_have: have_count,
            pieces_total: self.manifest.piece_count(),
            bytes_total: self.manifest.total_size(),
            bytes_received: self.report.bytes_received,
            bytes_served: self.report.bytes_served,
            peers: self.peers.len(),
            peers_done: self.done_ids.len(),
            complete: self.complete,
            group: self.group.name.clone(),
            bridge: self
                .download
                .as_ref()
                .and_then(|d| d.bridge())
                .map(|s| (s.rank, s.of)),
        });
        Ok(())
    }

    fn should_exit(&self) -> bool {
        if let Some(n) = self.exit.until_done {
            return self.done_ids.len() >= n;
        }
        if self.download.is_none() || !self.complete {
            return false;
        }
        self.exit.exit_on_complete
            || self
                .all_done_since
                .is_some_and(|t| t.elapsed() >= self.exit.linger)
    }
}

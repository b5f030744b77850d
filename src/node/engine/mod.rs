//! The engine: the one task that owns the swarm state. Connection tasks and
//! fetch tasks send it `Event`s; it feeds them to the sans-IO core and acts
//! on the decisions (start fetches, cancel duplicates, answer serve
//! requests, dial peers, publish our bitfield, decide when to exit).
//!
//! This file holds the state, the event loop and the exit rules; the
//! handlers are `impl Engine` blocks by concern: `peers` (the connection
//! table), `pieces` (fetches, serves, finalizing), `bridge` (the bridge
//! election), `report` (report and status). `dialer` is the one piece of
//! state with its own type: known-but-unconnected peers and when to dial them.

mod bridge;
mod dial_limits;
mod dialer;
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
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use self::dialer::Dialer;
use self::peers::Peer;
use super::connect;
use super::peer::{self, Handshaken, Identity, close};
use super::rate::RateLimit;
use super::serve::{self, ServeAnswer};
use super::{
    ALONE_TIMEOUT, GroupConfig, NodeError, QUIET_TIMEOUT, Report, STALL_TIMEOUT, Status, hex,
};
use crate::core::group::group_tag;
use crate::core::{Download, DownloadConfig, Failure, PeerKey, RecentPieces, Spreader};
use crate::manifest::Manifest;
use crate::storage::{Content, Partial, Root, StorageError};
use crate::wire::{Message, PeerId, Request};

pub const EVENT_QUEUE: usize = 1024;
const TICK: Duration = Duration::from_millis(250);

pub enum Event {
    Connected(Box<Handshaken>),
    DialFailed {
        id: PeerId,
        why: String,
    },
    PeerMsg {
        key: PeerKey,
        msg: Message,
        /// The share of the control-frame budget a large message holds
        /// until it is handled.
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    PeerDown {
        key: PeerKey,
        why: String,
    },
    /// A piece verified and written; `data` is its bytes, to serve from.
    PieceDone {
        key: PeerKey,
        piece: u32,
        data: Bytes,
        /// Bytes that came from the peer (all of them, or a delta's
        /// outboard and blocks) and from the basis.
        received: u64,
        from_basis: u64,
        elapsed: Duration,
    },
    PieceFailed {
        key: PeerKey,
        piece: u32,
        why: Failure,
    },
    WriteFailed {
        piece: u32,
        why: std::io::Error,
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
        /// The piece read from disk no longer matched the manifest.
        changed: bool,
        /// A piece's bytes (whole, or blocks) that took a serve of the
        /// engine's: false for an outboard, which only counts as bytes.
        counted: bool,
    },
    /// The copy is in place: its path and the handle on it.
    Finalized(Result<(PathBuf, Root), StorageError>),
}

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

/// How long a joiner waits, with nothing in flight, for another holder of
/// a piece whose only sources reported it changed, before it gives up.
const CHANGED_GRACE: Duration = Duration::from_secs(10);

/// Memory for pieces received lately, served without reading them back
/// from disk (see `core::RecentPieces`).
const RECENT_BYTES: usize = 16 << 20;

pub struct Engine {
    pub id: Identity,
    manifest: Arc<Manifest>,
    manifest_bytes: Arc<Vec<u8>>,
    content: Arc<Content>,
    basis: Option<Arc<crate::storage::Basis>>,
    /// Joiners: the download state; `None` on the seed.
    download: Option<Download>,
    /// Upload policy (`core::spread`): the seed's towards every peer; a
    /// joiner's towards its own group, applied while it is a bridge. A
    /// joiner feeds it only its group's peers.
    spreader: Spreader,
    partial: Option<Partial>,
    /// Pieces received lately that a peer still lacks, served from memory
    /// (`RECENT_BYTES` at most).
    recent: RecentPieces<Bytes>,
    finalizing: bool,
    complete: bool,
    have: watch::Sender<Arc<BitVec>>,
    peers: HashMap<PeerKey, Peer>,
    by_id: HashMap<PeerId, PeerKey>,
    dialer: Dialer,
    banned: peers::Bans,
    fetches: HashMap<(PeerKey, u32), CancellationToken>,
    done_ids: HashSet<PeerId>,
    /// Pieces whose copy on this host's disk no longer matches the
    /// manifest (found while serving them): refused from then on.
    changed: BitVec,
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
    /// Members of this host's group whose connection closed lately, with
    /// their start time and when: they still count in the bridge election
    /// for `bridge::GONE_GRACE`.
    recently_gone: HashMap<PeerId, (u64, Instant)>,
    /// Whether a peer has told this host who is in the swarm (a Peers
    /// message, sent by every host right after its bitfield).
    heard_peers: bool,
    /// The manifest id, which salts the bridge ranking (`core::group`).
    bridge_salt: [u8; 32],
    /// When the bridge election last ran.
    elected_at: Option<Instant>,
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
    /// Where `content` lives (for messages).
    pub content_root: PathBuf,
    pub have: BitVec,
    pub partial: Option<Partial>,
    /// A join (fetches, then lingers while peers need it), not a seed. A
    /// join whose destination already is the image has all of `have` and
    /// no `partial`.
    pub is_join: bool,
    /// An older copy to fetch pieces as deltas against.
    pub basis: Option<Arc<crate::storage::Basis>>,
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
        let is_seed = !p.is_join;
        // complete from the start: a seed, or a join already up to date
        let complete = p.have.all() && p.partial.is_none();
        let download = (!is_seed).then(|| {
            let mut d = Download::new(
                p.have.clone(),
                DownloadConfig::for_piece_size(p.manifest.piece_size),
                rand::random(),
            );
            d.set_group(group_tag(&p.group.name));
            d
        });
        let (have, _) = watch::channel(Arc::new(p.have));
        let bridge_salt = p.manifest.id().0;
        Engine {
            id: p.id,
            content: Arc::new(p.content),
            basis: p.basis,
            download,
            spreader: Spreader::new(n, Instant::now())
                .with_copies_goal(p.exit.until_copies.unwrap_or(0)),
            partial: p.partial,
            recent: RecentPieces::new(RECENT_BYTES),
            manifest: p.manifest,
            manifest_bytes: p.manifest_bytes,
            finalizing: false,
            complete,
            have,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            dialer: Dialer::default(),
            banned: peers::Bans::default(),
            fetches: HashMap::new(),
            done_ids: HashSet::new(),
            changed: BitVec::repeat(false, n),
            changed_files: HashSet::new(),
            content_root: p.content_root,
            endpoint: p.endpoint,
            events_tx,
            events,
            status: p.status,
            report: p.report,
            exit: p.exit,
            started: p.started,
            recently_gone: HashMap::new(),
            heard_peers: false,
            bridge_salt,
            elected_at: None,
            alone_since: None,
            last_progress: p.started,
            all_done_since: None,
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
        for (remote, conn) in &conns {
            self.count_quic(*remote, conn);
        }
        self.report.elapsed_secs = self.started.elapsed().as_secs_f64();
        self.report.peak_rss_bytes = super::peak_rss_bytes();
        (self.report, result)
    }

    fn handle(&mut self, ev: Event) -> Result<(), NodeError> {
        match ev {
            Event::Connected(h) => self.on_connected(*h),
            Event::DialFailed { id, why } => {
                tracing::debug!(
                    peer = hex(&id[..4]),
                    "dial failed: {}",
                    crate::text::Escaped(&why)
                );
                self.dialer.failed(&id, Instant::now());
            }
            Event::PeerMsg { key, msg, budget } => {
                self.on_message(key, msg);
                drop(budget); // handled: its memory is free
            }
            Event::PeerDown { key, why } => self.drop_peer(key, &why),
            Event::PieceDone {
                key,
                piece,
                data,
                received,
                from_basis,
                elapsed,
            } => self.on_piece(key, piece, data, (received, from_basis), elapsed),
            Event::PieceFailed { key, piece, why } => self.on_piece_failed(key, piece, why),
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
        }
        Ok(())
    }

    fn tick(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        // dial peers we learned about, up to the dial target
        let due = self.dialer.take_due(
            now,
            self.peers.len(),
            &self.group.name,
            self.fetches_across(),
        );
        for info in due {
            tokio::spawn(connect::dial(
                self.endpoint.clone(),
                self.id.clone(),
                info,
                self.events_tx.clone(),
            ));
        }
        // a joiner left with nobody to talk to gives up after a while
        let dialing = self.dialer.is_dialing();
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
        self.elect_if_due(now);
        self.sync_want_haves();
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
        // the only copies of a piece we miss changed after the manifest was
        // made: say so instead of waiting for the stall timeout
        if !self.complete && !self.finalizing && self.fetches.is_empty() {
            let lost = self.download.as_ref().and_then(|d| d.lost_to_change());
            if let Some(i) = lost.filter(|_| now - self.last_progress > CHANGED_GRACE) {
                return Err(NodeError::Verification(format!(
                    "piece {i} ({}) changed at its source after the manifest was made, \
                     and no other host holds it: the seeded files were modified while \
                     seeded; seed them again for a new ticket ({} of {} pieces here)",
                    self.files_of_piece(i as usize),
                    self.download.as_ref().map_or(0, |d| d.have_count()),
                    self.manifest.piece_count()
                )));
            }
        }
        // Peers that went away without finishing (crashed, cut off) do not
        // hold a finished host: they are redialed, but not waited for. Nor
        // do connected peers that claim every piece without saying Done, or
        // that have gone quiet.
        let waits_for = |(key, p): (&PeerKey, &Peer)| {
            !p.done
                && !self
                    .download
                    .as_ref()
                    .is_some_and(|d| d.peer_is_complete(*key))
                && (p.serving > 0 || now.saturating_duration_since(p.heard) < QUIET_TIMEOUT)
        };
        let all_done =
            self.complete && !self.dialer.is_dialing_new() && !self.peers.iter().any(waits_for);
        self.all_done_since = if all_done {
            Some(self.all_done_since.unwrap_or(now))
        } else {
            None
        };
        self.publish_status();
        Ok(())
    }

    fn should_exit(&self) -> bool {
        if self.spreader.copies_reached() {
            tracing::info!("every piece has the copies asked for on other hosts");
            return true;
        }
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

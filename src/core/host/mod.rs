//! One host's whole swarm policy as a state machine, in the manner of
//! quinn-proto under quinn: the driver (`node::engine`) turns sockets,
//! tasks and timers into calls here (a peer connected, a message arrived, a
//! piece was verified or failed, a serve was asked or ended, `tick` at
//! `now`), and executes the `Action`s it then takes with `poll_action`
//! (fetch, cancel, send, close, dial, finalize). The host reads no clock
//! (every call takes `now`) and does no I/O, so a simulator can run the
//! very policy the real node runs.
//!
//! It owns the joiner's `Download` and the `Spreader`, the table of
//! connected peers as policy sees them (`peers`), the `Dialer`, the bridge
//! election's timing (`bridge`), the serve decision (`answer`) and the exit
//! rules (`tick`, `exit`).

mod answer;
mod bridge;
mod peers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitvec::prelude::*;

pub use self::answer::Decision;
use self::peers::Bans;
pub use self::peers::{Admit, MAX_CONNECTIONS, PeerState, PeerUp};
use super::dial::Dialer;
use super::group::group_tag;
use super::{Download, DownloadConfig, Failure, LocalMap, LocalSet, Map, PeerKey, Set, Spreader};
use crate::manifest::Manifest;
use crate::wire::{Message, PeerId, PeerInfo};

/// A joiner with no peer at all for this long gives up.
pub const ALONE_TIMEOUT: Duration = Duration::from_secs(60);
/// A joiner that received no piece for this long, with no request in
/// flight, gives up: no reachable peer holds what it misses.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// A finished host lingers for its peers until they are done, but not for
/// one it has heard nothing from (no Have, Done or request, nothing being
/// served to it) for this long: a stopped process, or a peer that stays
/// connected and never finishes. Longer than a source's longest pause
/// (10 s, `core::source`), so a joiner pausing a busy source is not taken
/// for a quiet one.
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a joiner waits, with nothing in flight, for another holder of
/// a piece whose only sources reported it changed, before it gives up.
const CHANGED_GRACE: Duration = Duration::from_secs(10);
/// The longest a driver waits between two `tick`s.
pub const TICK: Duration = Duration::from_millis(250);

/// Who this host is and how its run ends.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub me: PeerId,
    /// When this host started, as its Hello says (the bridge election).
    pub since: u64,
    pub group: String,
    /// Bridges per group (`--bridges`), at least 1.
    pub bridges: usize,
    /// A join (fetches, then lingers while peers need it), not a seed.
    pub is_join: bool,
    /// How long a complete joiner stays for peers that still fetch.
    pub linger: Duration,
    pub exit_on_complete: bool,
    pub until_done: Option<usize>,
    pub until_copies: Option<u32>,
    /// Seeds the picker's randomness.
    pub rng_seed: u64,
    /// Connections kept at most (`--max-peers`); newcomers past it are
    /// redirected to others.
    pub max_peers: usize,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Request piece `piece` of peer `key`.
    Fetch { key: PeerKey, piece: u32 },
    /// Stop that request (a duplicate that lost, or its peer is gone).
    Cancel { key: PeerKey, piece: u32 },
    /// Queue a control message to `key`.
    Send { key: PeerKey, msg: Message },
    /// The peer said whether it wants this host's Haves.
    PeerWantsHaves { key: PeerKey, on: bool },
    /// Close the connection to `key` with an application code. `dropped`:
    /// the host has removed it from its table already.
    Close {
        key: PeerKey,
        code: u32,
        reason: &'static str,
        dropped: bool,
    },
    /// Dial this peer.
    Dial(PeerInfo),
    /// These addresses are of a host of another group: its connections
    /// get the WAN transport settings.
    OtherGroup(Vec<SocketAddr>),
    /// This host's bitfield changed: publish it to the peers.
    HaveChanged,
    /// Every piece is verified: make the copy durable and put it in place,
    /// then call `finalized`.
    Finalize,
}

/// Why a run gave up (the driver words it).
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// No peer connected and none being dialed for `ALONE_TIMEOUT` (not
    /// while a local source holds pieces: `Host::hold`).
    Alone { have: usize, total: usize },
    /// No piece for `STALL_TIMEOUT` with nothing in flight (nor while a
    /// local source holds pieces).
    Stalled { have: usize, total: usize },
    /// The only copies of `piece` changed at their source.
    Changed {
        piece: u32,
        have: usize,
        total: usize,
    },
}

/// Counters of what policy decided, for the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostStats {
    pub pieces_corrupt: usize,
    pub peers_banned: u64,
    pub pieces_changed: usize,
    pub was_bridge: bool,
}

pub struct Host {
    cfg: HostConfig,
    manifest: Arc<Manifest>,
    /// Joiners: the download state; `None` on the seed.
    download: Option<Download>,
    /// Upload policy (`core::spread`): the seed's towards every peer; a
    /// joiner's towards its own group, applied while it is a bridge. A
    /// joiner feeds it only its group's peers.
    spreader: Spreader,
    /// The seed's pieces (a joiner's are its `download`'s).
    seed_have: BitVec,
    peers: LocalMap<PeerKey, PeerState>,
    by_id: Map<PeerId, PeerKey>,
    dialer: Dialer,
    bans: Bans,
    fetches: LocalSet<(PeerKey, u32)>,
    done_ids: Set<PeerId>,
    /// Pieces whose copy on this host's disk no longer matches the
    /// manifest (found while serving them): refused from then on.
    changed: BitVec,
    finalizing: bool,
    complete: bool,
    started: Instant,
    /// Members of this host's group whose connection closed lately, with
    /// their start time and when: they still count in the bridge election
    /// for `bridge::GONE_GRACE`.
    recently_gone: Map<PeerId, (u64, Instant)>,
    /// Whether a peer has told this host who is in the swarm (a Peers
    /// message, sent by every host right after its bitfield).
    heard_peers: bool,
    /// The manifest id, which salts the bridge ranking (`core::group`).
    bridge_salt: [u8; 32],
    elected_at: Option<Instant>,
    alone_since: Option<Instant>,
    /// Set while a local source holds pieces (`hold`).
    indexing: bool,
    /// When the last piece arrived (or the run started).
    last_progress: Instant,
    all_done_since: Option<Instant>,
    stats: HostStats,
    actions: VecDeque<Action>,
    /// Where the next redirect starts in the table (`admit`).
    redirects: usize,
    /// Newcomers not yet told to the other peers, and when they will be
    /// (`flush_gossip`).
    gossip: Vec<PeerId>,
    gossip_due: Option<Instant>,
    /// Lists made for newcomers so far (which other group comes first).
    listed: usize,
}

impl Host {
    /// A host with `have` verified already; `partial`: a joiner whose copy
    /// is not in place yet (a joiner already up to date has all of `have`
    /// and none).
    pub fn new(
        cfg: HostConfig,
        manifest: Arc<Manifest>,
        have: BitVec,
        partial: bool,
        now: Instant,
    ) -> Host {
        let n = manifest.piece_count();
        let complete = have.all() && !partial;
        let download = cfg.is_join.then(|| {
            let mut d = Download::new(
                have.clone(),
                DownloadConfig::for_piece_size(manifest.piece_size),
                cfg.rng_seed,
            );
            d.set_group(group_tag(&cfg.group));
            d
        });
        let spreader = Spreader::new(n, now).with_copies_goal(cfg.until_copies.unwrap_or(0));
        let mut h = Host {
            bridge_salt: manifest.id().0,
            download,
            spreader,
            seed_have: have,
            peers: Default::default(),
            by_id: Map::default(),
            dialer: Dialer::new(&cfg.group, now),
            bans: Bans::default(),
            fetches: Default::default(),
            done_ids: Set::default(),
            changed: BitVec::repeat(false, n),
            finalizing: false,
            complete,
            started: now,
            recently_gone: Map::default(),
            heard_peers: false,
            elected_at: None,
            alone_since: None,
            indexing: false,
            last_progress: now,
            all_done_since: None,
            stats: HostStats::default(),
            actions: VecDeque::new(),
            redirects: 0,
            gossip: Vec::new(),
            gossip_due: None,
            listed: 0,
            manifest,
            cfg,
        };
        // a joiner that resumed a complete copy only needs to finalize
        if !h.complete && h.download.as_ref().is_some_and(Download::is_complete) {
            h.start_finalize();
        }
        h
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `tick` (or `schedule`) must run next at the latest.
    pub fn poll_timeout(&self, now: Instant) -> Instant {
        self.download
            .as_ref()
            .and_then(|d| d.poll_timeout(now))
            .into_iter()
            .chain(self.gossip_due())
            .fold(now + TICK, Instant::min)
    }

    pub fn have(&self) -> &BitSlice {
        match &self.download {
            Some(d) => d.have(),
            None => &self.seed_have,
        }
    }

    pub fn have_count(&self) -> usize {
        self.download
            .as_ref()
            .map_or(self.manifest.piece_count(), Download::have_count)
    }

    /// Every piece verified and the copy in place.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// Distinct peers that said Done.
    pub fn peers_done(&self) -> usize {
        self.done_ids.len()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn peer(&self, key: PeerKey) -> Option<&PeerState> {
        self.peers.get(&key)
    }

    /// This host's share of its group's cross-group fetching, if a bridge.
    pub fn bridge(&self) -> Option<(usize, usize)> {
        self.download
            .as_ref()
            .and_then(Download::bridge)
            .map(|s| (s.rank, s.of))
    }

    /// Starts the requests the core decides on.
    pub fn schedule(&mut self, now: Instant) {
        let Some(d) = &mut self.download else { return };
        for (key, piece) in d.poll_requests(now) {
            if self.peers.contains_key(&key) {
                self.fetches.insert((key, piece));
                self.actions.push_back(Action::Fetch { key, piece });
            }
        }
    }

    /// Piece `piece` from `key` is verified and written (`bytes` came from
    /// the peer). Returns whether it is new and a peer still lacks it
    /// (worth keeping in memory to serve); `None` for a duplicate that
    /// finished after the winner.
    pub fn piece_done(
        &mut self,
        now: Instant,
        key: PeerKey,
        piece: u32,
        bytes: u64,
        elapsed: Duration,
    ) -> Option<bool> {
        self.fetches.remove(&(key, piece));
        let d = self.download.as_mut()?;
        if d.have()[piece as usize] {
            return None;
        }
        let keep = d.lacked_by_a_peer(piece as usize);
        for c in d.piece_received(key, piece, bytes, elapsed) {
            if self.fetches.remove(&(c.peer, c.piece)) {
                self.actions.push_back(Action::Cancel {
                    key: c.peer,
                    piece: c.piece,
                });
            }
        }
        let complete = d.is_complete();
        self.last_progress = now;
        self.actions.push_back(Action::HaveChanged);
        if complete {
            self.start_finalize();
        }
        Some(keep)
    }

    /// A local source is being read (the basis index): `pieces` are not
    /// requested until it releases them or fills them, and while it runs
    /// an idle or lone joiner is not stalled.
    pub fn hold(&mut self, pieces: &BitSlice) {
        if let Some(d) = &mut self.download {
            d.hold(pieces);
            self.indexing = true;
        }
    }

    /// Held pieces the local source does not fill: request them now.
    pub fn release(&mut self, pieces: &[u32]) {
        if let Some(d) = &mut self.download {
            for &i in pieces {
                d.release(i as usize);
            }
        }
    }

    /// A held piece was filled from the local source (written and
    /// verified). Returns whether it is new.
    pub fn piece_local(&mut self, now: Instant, piece: u32) -> bool {
        let Some(d) = &mut self.download else {
            return false;
        };
        if !d.local(piece as usize) {
            return false;
        }
        let complete = d.is_complete();
        self.last_progress = now;
        self.actions.push_back(Action::HaveChanged);
        if complete {
            self.start_finalize();
        }
        true
    }

    /// The local source is done: whatever it still held is requested.
    pub fn indexed(&mut self, now: Instant) {
        self.indexing = false;
        self.last_progress = now;
        if let Some(d) = &mut self.download {
            d.release_all();
        }
    }

    /// A request failed; a corrupt piece bans its peer and closes it.
    pub fn piece_failed(
        &mut self,
        now: Instant,
        key: PeerKey,
        piece: u32,
        why: Failure,
        addr: Option<SocketAddr>,
    ) {
        self.fetches.remove(&(key, piece));
        if why == Failure::Corrupt {
            self.stats.pieces_corrupt += 1;
            if let Some(p) = self.peers.get(&key) {
                tracing::warn!(
                    peer = crate::text::hex(&p.info.id[..4]),
                    piece,
                    "piece failed verification; dropping the peer"
                );
                self.bans.ban(p.info.id, addr.unwrap_or(p.addr));
                self.stats.peers_banned += 1;
                self.actions.push_back(Action::Close {
                    key,
                    code: crate::wire::close::CORRUPT,
                    reason: "corrupt piece",
                    dropped: false,
                });
            }
            if let Some(d) = &mut self.download {
                d.remove_peer(key);
            }
        } else if let Some(d) = &mut self.download {
            d.piece_failed(key, piece, why, now);
        }
    }

    /// A piece read from disk to serve no longer matched the manifest.
    /// Returns whether this is news (it is refused from now on).
    pub fn source_changed(&mut self, piece: u32) -> bool {
        let i = piece as usize;
        if i >= self.changed.len() || self.changed.replace(i, true) {
            return false;
        }
        self.stats.pieces_changed += 1;
        true
    }

    fn start_finalize(&mut self) {
        if self.finalizing || self.complete {
            return;
        }
        self.finalizing = true;
        self.actions.push_back(Action::Finalize);
    }

    /// The complete copy is in place: tell every peer.
    pub fn finalized(&mut self) {
        self.complete = true;
        self.finalizing = false;
        for &key in self.peers.keys() {
            self.actions.push_back(Action::Send {
                key,
                msg: Message::Done,
            });
        }
    }

    /// Dials due, the bridge election, Haves wanted across groups, and the
    /// rules by which a joiner gives up. Call after every event and at
    /// least by `poll_timeout`.
    pub fn tick(&mut self, now: Instant) -> Result<(), Stop> {
        let peers = &self.peers;
        let linked = |g: &str| {
            peers
                .values()
                .filter(|p| p.remote && p.info.group == g)
                .count()
        };
        let across = self
            .fetches_across()
            .then_some(&linked as &dyn Fn(&str) -> usize);
        for info in self.dialer.take_due(now, self.peers.len(), across) {
            self.actions.push_back(Action::Dial(info));
        }
        let (have, total) = (self.have_count(), self.manifest.piece_count());
        // a joiner left with nobody to talk to gives up after a while
        let joining = !self.complete && self.download.is_some() && !self.indexing;
        if joining && self.peers.is_empty() && !self.dialer.is_dialing() {
            let since = *self.alone_since.get_or_insert(now);
            if now - since > ALONE_TIMEOUT {
                return Err(Stop::Alone { have, total });
            }
        } else {
            self.alone_since = None;
        }
        self.elect_if_due(now);
        self.sync_want_haves();
        self.flush_gossip(now);
        let idle = joining && !self.finalizing && self.fetches.is_empty();
        // connected, but nobody has what we miss (e.g. the seed died before
        // every piece left it): give up rather than wait forever
        if idle && now - self.last_progress > STALL_TIMEOUT {
            return Err(Stop::Stalled { have, total });
        }
        // the only copies of a piece we miss changed after the manifest was
        // made: say so instead of waiting for the stall timeout
        if idle
            && now - self.last_progress > CHANGED_GRACE
            && let Some(piece) = self.download.as_ref().and_then(Download::lost_to_change)
        {
            return Err(Stop::Changed { piece, have, total });
        }
        // Peers that went away without finishing (crashed, cut off) do not
        // hold a finished host: they are redialed, but not waited for. Nor
        // do connected peers that claim every piece without saying Done, or
        // that have gone quiet.
        let waits_for = |(key, p): (&PeerKey, &PeerState)| {
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
        Ok(())
    }

    /// Whether the run is over (a normal end).
    pub fn should_exit(&self, now: Instant) -> bool {
        if self.spreader.copies_reached() {
            tracing::info!("every piece has the copies asked for on other hosts");
            return true;
        }
        if let Some(n) = self.cfg.until_done {
            return self.done_ids.len() >= n;
        }
        if self.download.is_none() || !self.complete {
            return false;
        }
        self.cfg.exit_on_complete
            || self
                .all_done_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.linger)
    }

    /// Whether this host's group holds a full copy (this host, or a peer of
    /// its group that holds every piece): its hosts then put the WAN flows
    /// they serve before their own group (`cc`). A group still pulling the
    /// image in does not: there every piece that crosses the WAN must
    /// spread to its members, and its LAN is the path that matters.
    pub fn group_holds_all(&self) -> bool {
        self.download.is_none() || self.spreader.has_full_holder() || self.have().all()
    }

    /// Requests in flight, by peer and piece (for the driver's checks).
    pub fn fetching(&self, key: PeerKey, piece: u32) -> bool {
        self.fetches.contains(&(key, piece))
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }
}

#[cfg(test)]
mod tests;

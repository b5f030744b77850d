//! The runtime: a quinn endpoint, one task per connection direction, and one
//! engine task that owns all swarm state (the sans-IO core) and talks to the
//! connection tasks through bounded channels.
//!
//! ```text
//!   accept / dial ──handshake──▶ peer tasks (control reader, control writer,
//!        │                        request-stream server)
//!        ▼                               │ Event (bounded mpsc)
//!   fetch tasks ◀── spawn ── engine ◀────┘  owns Download / Spreader, peers,
//!                                           Have bitfield (watch), report
//! ```

pub mod auth;
mod bootstrap;
pub(crate) mod cc;
mod connect;
pub mod credit;
mod engine;
mod event;
mod fetch;
mod gate;
mod handshake;
mod identity;
mod join;
mod outboards;
mod peer;
mod rate;
mod run;
mod serve;
mod socket;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use bootstrap::fetch_manifest;
pub use fetch::deadline as request_deadline;
pub use join::join;
pub use run::{quic_endpoint, seed};
pub use tls::Tuning;

/// How long to wait for a handshake or a request's first byte.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Before the peer has proved the secret: how long its TLS handshake may
/// take, and then its proof (and, for a dialer, the acceptor's proof).
/// An honest peer needs a round trip or two.
pub const PREAUTH_TIMEOUT: Duration = Duration::from_secs(3);
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
/// Fetching the manifest from the first peer.
pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The most bridges a group may have (`--bridges`).
pub const MAX_BRIDGES: usize = 16;

/// This host's datacenter group and how it talks to other groups.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub name: String,
    /// Bridges per group (`--bridges`), at least 1.
    pub bridges: usize,
    /// Bytes per second of cross-group traffic, each direction.
    pub wan_limit: Option<u64>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            name: "default".into(),
            bridges: 1,
            wan_limit: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SeedConfig {
    pub path: PathBuf,
    pub listen: SocketAddr,
    /// `--advertise`: where others reach this host (NAT, pods); empty:
    /// the listen address (every interface's, in the ticket, for 0.0.0.0).
    pub advertise: Vec<SocketAddr>,
    /// Connections kept at most (`--max-peers`).
    pub max_peers: usize,
    pub piece_size: Option<u64>,
    pub until_done: Option<usize>,
    /// Exit once every piece has this many copies on other hosts.
    pub until_copies: Option<u32>,
    pub group: GroupConfig,
    /// Bytes per second this host uploads at most.
    pub upload_limit: Option<u64>,
    pub tuning: Tuning,
    /// `--state DIR`: where the manifest and secret are kept between runs.
    pub state: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct JoinConfig {
    pub ticket: crate::ticket::Ticket,
    pub dest_dir: PathBuf,
    pub listen: SocketAddr,
    /// `--advertise`: where others reach this host; empty: where they see it.
    pub advertise: Vec<SocketAddr>,
    /// Connections kept at most (`--max-peers`).
    pub max_peers: usize,
    pub linger: Duration,
    pub exit_on_complete: bool,
    pub force: bool,
    /// Older copies to take unchanged data from (`--basis`); the
    /// destination's own older copy is added when `--force` is given.
    pub basis: Vec<PathBuf>,
    /// What of the manifest's metadata the copy gets: owners and groups
    /// (when run as root, without --no-owner), setuid/setgid of files
    /// (--keep-setuid).
    pub keep: crate::storage::Keep,
    pub group: GroupConfig,
    pub connect_timeout: Duration,
    /// Hosts to start from besides the ticket's addresses (`--peer`).
    pub peers: Vec<SocketAddr>,
    pub upload_limit: Option<u64>,
    pub tuning: Tuning,
}

/// A live view for progress displays.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub pieces_have: usize,
    pub pieces_total: usize,
    pub bytes_total: u64,
    pub bytes_received: u64,
    /// Of `bytes_received`, from hosts of other groups.
    pub received_cross_group: u64,
    /// Bytes taken from the basis (not received).
    pub bytes_from_basis: u64,
    pub bytes_served: u64,
    /// Of `bytes_served`, to hosts of other groups.
    pub served_cross_group: u64,
    pub peers: usize,
    pub peers_done: usize,
    pub complete: bool,
    pub group: String,
    /// `(rank, of)` while this host is one of its group's bridges.
    pub bridge: Option<(usize, usize)>,
    /// `(hashed, of)` bytes while a seed hashes its image.
    pub hashing: Option<(u64, u64)>,
    /// Pieces received that failed verification, and the peers banned
    /// for them.
    pub pieces_corrupt: u64,
    pub peers_banned: u64,
    /// Seconds from start until the copy was complete.
    pub complete_secs: Option<f64>,
}

/// What a run did, printed at the end and written as JSON with `--report`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub role: String,
    pub peer_id: String,
    pub manifest_id: String,
    pub bytes_total: u64,
    pub pieces_total: usize,
    /// Pieces found valid on disk at start (resume), or all zeros (never
    /// fetched: holes).
    pub pieces_resumed: usize,
    /// Older copies used as a local source (`--basis`, or the destination
    /// itself), and the bytes of regular files indexed in them.
    #[serde(default)]
    pub basis: Vec<String>,
    #[serde(default)]
    pub basis_bytes_indexed: u64,
    /// Seconds spent indexing the basis.
    #[serde(default)]
    pub basis_index_secs: f64,
    /// Blocks the basis index had that no longer checked out when read
    /// (the basis changed after it was indexed): fetched instead.
    #[serde(default)]
    pub basis_blocks_missed: u64,
    /// Pieces copied whole from the basis, with no network.
    #[serde(default)]
    pub pieces_from_basis: usize,
    /// Bytes of the copy taken from the basis: whole pieces, and blocks
    /// of pieces fetched as a delta. `bytes_received` counts what came
    /// over the network (a delta's outboards included).
    #[serde(default)]
    pub bytes_from_basis: u64,
    pub pieces_fetched: usize,
    /// The destination already held the identical copy (verified): the
    /// join ended there, with nothing fetched or written.
    #[serde(default)]
    pub up_to_date: bool,
    pub pieces_corrupt: usize,
    /// Peers dropped and refused from then on for a piece that failed
    /// verification.
    #[serde(default)]
    pub peers_banned: u64,
    /// Pieces whose copy on this host's disk no longer matched the
    /// manifest when read to serve them (the file changed after hashing).
    pub pieces_changed: usize,
    pub elapsed_secs: f64,
    /// Seconds from start until the copy was complete and in place.
    pub complete_secs: Option<f64>,
    pub bytes_received: u64,
    pub bytes_served: u64,
    /// Piece requests answered from the pieces received lately, kept in
    /// memory; the others were read from disk.
    pub pieces_served_from_memory: u64,
    /// The peer id of the seed (joiners: the host the ticket named).
    pub seed_peer_id: Option<String>,
    pub received_from_seed: u64,
    pub group: String,
    /// Whether this host was one of its group's bridges at some point.
    pub was_bridge: bool,
    /// Bytes received from (served to) hosts of this host's group, and of
    /// other groups.
    pub received_same_group: u64,
    pub received_cross_group: u64,
    pub served_same_group: u64,
    pub served_cross_group: u64,
    pub received_from: BTreeMap<String, u64>,
    pub served_to: BTreeMap<String, u64>,
    /// The peers of `received_from` and `served_to` (and every other this
    /// host connected with): the address and group each had here.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerSeen>,
    /// QUIC's own counters, summed over this host's connections with peers
    /// of its group and of other groups (those that completed the swarm
    /// handshake; counted when they close or at exit): what crossed the
    /// network, including headers, ACKs and retransmissions, beside the
    /// piece bytes above.
    pub quic_same_group: QuicCounters,
    pub quic_cross_group: QuicCounters,
    /// Where the complete copy was put: the path as `text::path` shows it
    /// (lossy UTF-8, control and bidirectional characters escaped), not
    /// necessarily the bytes of the name on disk.
    pub output: Option<String>,
    /// The process's peak resident memory (getrusage), at the report.
    pub peak_rss_bytes: u64,
    /// How the run ended: "ok", "failed" or "interrupted" (set by the
    /// command line, which writes the report on every end).
    #[serde(default)]
    pub ended: String,
    /// The exit status the process ends with.
    #[serde(default)]
    pub exit_code: u8,
    /// The error that ended the run, when it failed (control characters
    /// escaped, as printed).
    #[serde(default)]
    pub error: Option<String>,
    /// Whether SIGINT or SIGTERM stopped the run, and which.
    #[serde(default)]
    pub interrupted: bool,
    #[serde(default)]
    pub signal: Option<String>,
}

/// A peer as a report names it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerSeen {
    /// IP:PORT of the connection with it.
    pub addr: String,
    /// Its group, as it said (control characters escaped).
    pub group: String,
}

/// A sum of quinn's `ConnectionStats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QuicCounters {
    pub connections: u64,
    pub udp_sent_bytes: u64,
    pub udp_received_bytes: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub lost_bytes: u64,
    pub congestion_events: u64,
}

impl QuicCounters {
    pub fn add(&mut self, s: &quinn::ConnectionStats) {
        self.connections += 1;
        self.udp_sent_bytes += s.udp_tx.bytes;
        self.udp_received_bytes += s.udp_rx.bytes;
        self.sent_packets += s.path.sent_packets;
        self.lost_packets += s.path.lost_packets;
        self.lost_bytes += s.path.lost_bytes;
        self.congestion_events += s.path.congestion_events;
    }
}

/// This process's peak resident set size in bytes (0 if unknown): `VmHWM`
/// of /proc/self/status, the high-water mark of this program's own memory.
/// Not getrusage's `ru_maxrss`: Linux carries that over `execve`, so a
/// join started by a big parent (a test harness holding the image) would
/// report the parent's size.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("could not reach {addrs} within {secs}s: {why}")]
    Unreachable {
        addrs: String,
        secs: u64,
        why: String,
    },
    #[error("network: {0}")]
    Network(String),
    #[error("verification failed: {0}")]
    Verification(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Build(#[from] crate::storage::BuildError),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub use crate::text::hex;

//! The sans-IO core: plain state machines that take events (a peer's
//! bitfield, a verified piece, a failed request, the time `now`) and return
//! decisions (which piece to request from whom, which duplicates to cancel,
//! whether the seed serves a request). No sockets, no clock, no tokio:
//! randomness comes from a seeded RNG, time from the caller. That makes the
//! scheduling unit-testable and usable by a simulator.
//!
//! * `Download`: a joiner's view of its peers and its missing pieces;
//!   rarest-first with random first pieces, throughput-ordered sources,
//!   endgame duplicates with cancellation; `source` is how much it asks of
//!   each peer (rate, slow-start window, backoff); `late` is when a piece
//!   in flight is late enough to duplicate; `limits` how many requests may
//!   be in flight.
//! * `Spreader`: the seed's upload policy (super-seeding): serve each piece
//!   once before serving any piece twice.
//! * `serve`: how many of one connection's requests a host serves at once
//!   (slow start, one slot for a requester that stops reading).
//! * `credit`: receive credit beyond a connection's base window, granted
//!   for this host's own requests from one process-wide budget.
//! * `RecentPieces`: the pieces a joiner received lately, kept to serve
//!   from memory.
//! * `group`: datacenter groups: bridge election and how bridges split the
//!   cross-group pieces; `Download` applies the group-rarest rule.

pub mod credit;
pub mod dial;
mod download;
pub mod group;
pub mod host;
mod late;
mod limits;
mod recent;
pub mod serve;
mod source;
mod spread;

/// Hash maps and sets with a fixed hasher: the core's decisions may depend
/// on the order it walks its peers, and a run must be the same for the same
/// inputs (the simulator's seed). Their keys are this host's own keys or
/// bounded tables (peers, addresses: a few thousand at most), so colliding
/// keys a peer might choose cost at most a slower lookup, not unbounded work.
pub type Map<K, V> = std::collections::HashMap<K, V, Fixed>;
pub type Set<K> = std::collections::HashSet<K, Fixed>;
pub type Fixed = std::hash::BuildHasherDefault<std::hash::DefaultHasher>;

/// Maps and sets keyed by what this host numbers itself (peer keys, request
/// ids) or by piece indices (bounded by the manifest), never by peer ids or
/// addresses: a fast fixed hasher (Fx), as a Have looks up several of them
/// (the simulator runs hundreds of millions; with SipHash the lookups were
/// a fifth of its time). `Map`'s SipHash has a fixed, public key, so it too
/// only bounds what colliding keys cost by the size of its bounded tables.
pub type LocalMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;
pub type LocalSet<K> = std::collections::HashSet<K, rustc_hash::FxBuildHasher>;

pub use download::{
    Cancel, Download, DownloadConfig, Failure, INFLIGHT_BYTES, PeerKey, ProtocolViolation,
};
pub use limits::{MAX_PEER_REQUESTS, request_deadline};
pub use recent::RecentPieces;
pub use spread::Spreader;

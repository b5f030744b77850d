//! How much a joiner asks for at once: requests in flight per peer and in
//! all, in bytes whatever the piece size (`DownloadConfig::for_piece_size`).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct DownloadConfig {
    pub per_peer: usize,
    /// The fewest a local peer is allowed when many share `total` (see
    /// "Slots" in the `download` module doc).
    pub per_peer_min: usize,
    /// The same for a peer of another group: few, since a cross-group
    /// request is duplicated only once late (`wan_endgame`), and a slow
    /// WAN source holding many pieces would hold up the end of the
    /// download.
    pub per_remote_peer: usize,
    pub total: usize,
    pub random_first: usize,
    pub endgame_dup: u8,
    /// How long a peer that answered `Elsewhere` is not asked for that piece.
    pub elsewhere_backoff: Duration,
    /// Requests a new peer gets before it has delivered anything (see
    /// `Peer::window`).
    pub initial_window: usize,
    /// The piece size the limits above were made for; 0: the counts
    /// stay as they are (see `scale`).
    pub piece_size: u64,
}

/// How far the request limits grow when pieces cost less on the wire than
/// their size: up to `MAX_SCALE` times, by piece size over the bytes a
/// piece took lately (`wire`). A joiner with a basis fetches most pieces
/// as deltas of a block or two (16-32 KiB of a 1 MiB piece): with the
/// counts made for whole pieces, a bridge kept 12 deltas in flight over a
/// 60 ms WAN round trip (two per delta: outboard, blocks) and filled a
/// quarter of a 100 Mbit/s WAN (2 x 4, 256 MiB, p = 1%). Memory stays
/// bounded: a request holds at most a piece buffer, so at most
/// `MAX_SCALE` x `INFLIGHT_BYTES` (64 MiB) and `MAX_REQUESTS`.
pub fn scale(cfg: &DownloadConfig, wire: f64) -> usize {
    if cfg.piece_size == 0 || wire <= 0.0 {
        return 1;
    }
    ((cfg.piece_size as f64 / wire) as usize).clamp(1, MAX_SCALE)
}

pub const MAX_SCALE: usize = 4;

/// Requests one peer may have in flight at most, whatever the scale: it
/// may open `node::tls::STREAMS` streams towards us, one of them the
/// control stream; more would wait for a stream while their deadline ran.
pub const MAX_PEER_REQUESTS: usize = 15;

impl DownloadConfig {
    /// The limits at `scale` (see `scale`): in all, never more piece
    /// buffers than `MAX_SCALE` x `INFLIGHT_BYTES` (the unscaled count
    /// stays whatever it is: at least 2 of even a 1 GiB piece); per peer,
    /// `MAX_PEER_REQUESTS` at most.
    pub fn scaled(&self, scale: usize) -> (usize, usize, usize) {
        let memory = match self.piece_size {
            0 => usize::MAX,
            p => (MAX_SCALE as u64 * INFLIGHT_BYTES / p) as usize,
        };
        let total = (self.total * scale)
            .min(MAX_REQUESTS as usize)
            .min(memory.max(self.total));
        let peer = |x: usize| (x * scale).min(MAX_PEER_REQUESTS.max(x)).min(total);
        (total, peer(self.per_peer), peer(self.per_remote_peer))
    }
}

/// Bytes of piece buffers a joiner holds at most (requests in flight).
/// Session 11, 16 against 32 MiB, alternating: 1 x 16 (256 MiB) last host
/// the same (17.9-18.7 against 17.6-19.4 s) and joiner peak RSS 45-69
/// against 55-82 MiB; 2 x 8 27.7-28.9 against 28.9-29.7 s; the wan bench
/// 1.12-1.14 against 1.15-1.22 T*. One source keeps 12 (`per_peer`).
pub const INFLIGHT_BYTES: u64 = 16 << 20;
/// Bytes requested from one peer at a time, at most. One seed to one
/// joiner on loopback with 1 MiB pieces: 3 in flight took 2.2-3.1 s per GiB,
/// 12 took 1.9-2.0 s; with 8 hosts the two did not differ.
pub const PEER_INFLIGHT_BYTES: u64 = 12 << 20;
/// Bytes requested from one peer when many hold what this host lacks: one
/// piece of the default size, so that `INFLIGHT_BYTES` spread over as many
/// sources as hold something (the fastest first) and no uplink idles while
/// another queues. Session 10 (1 x 16, 256 MiB, 200 Mbit/s): 12 MiB per
/// peer drew 12 requests to the fastest-looking sources and their uplinks
/// queued them (last host 20.1-21.4 s); 4 MiB, 18.6-19.6 s. Session 22,
/// 4 MiB against 1 MiB: the namespace benchmark (1 x 16, 256 MiB, 100
/// Mbit/s, alternating, 2 rounds) 1.31 and 1.34 T* against 1.16 and 1.16,
/// CPU 12.8 and 12.1 s per GB against 11.5 and 11.3; the simulator, 1 x 16
/// 1.28 against 1.11 T*, 1 x 300 (1 GiB, 10 Gbit/s) 1.70 against 1.43
/// (median 1.27 against 1.12); 1 x 8 and 2 x 4 unchanged. One source on
/// loopback still needs 12 (4 were 13% slower), hence the sharing rule
/// rather than a smaller `per_peer`.
pub const PEER_SHARED_INFLIGHT_BYTES: u64 = 1 << 20;
/// Requests in flight at most, whatever the piece size.
const MAX_REQUESTS: u64 = 64;
/// Requests a joiner keeps in flight at least while they fit in
/// `SLACK_BYTES`. Each source's upload is shared by what it serves at
/// once, and with every host keeping R requests in flight a source serves
/// R at a time on average: a joiner's R requests then add up to its own
/// NIC only if the load is even, so R must leave slack for the sources
/// that are busier than the rest. 16 MiB of 4 MiB pieces left 4.
/// Simulated (session 25, 1 GiB in 4 MiB pieces, 10 Gbit/s, `DIAL_TARGET`
/// 40, seed 1): 1 x 1,000 2.27 -> 2.04 T* (median 1.75 -> 1.62), 1 x 300
/// 1.85 -> 1.78 (1.56 -> 1.45). Pieces of 1 MiB or less keep
/// `INFLIGHT_BYTES` (16 and more requests).
const MIN_REQUESTS: u64 = 8;
const SLACK_BYTES: u64 = 32 << 20;

impl DownloadConfig {
    /// Limits in bytes whatever the piece size: 16 MiB in flight in all and
    /// 12 MiB per peer (16 and 12 requests of 1 MiB), but in all at least
    /// `MIN_REQUESTS` while they fit in `SLACK_BYTES` (8 of 4 MiB, 4 of 8
    /// MiB) and never fewer than 2; 1 MiB per peer when many share the
    /// total, never fewer than 1 request.
    pub fn for_piece_size(piece_size: u32) -> Self {
        let d = DownloadConfig::default();
        let piece = piece_size.max(1) as u64;
        let slack = MIN_REQUESTS.min(SLACK_BYTES / piece);
        let total = (INFLIGHT_BYTES / piece).max(slack).clamp(2, MAX_REQUESTS) as usize;
        let per_peer = (PEER_INFLIGHT_BYTES / piece).clamp(2, MAX_REQUESTS) as usize;
        let per_peer_min = (PEER_SHARED_INFLIGHT_BYTES / piece).clamp(1, MAX_REQUESTS) as usize;
        DownloadConfig {
            total,
            per_peer: per_peer.min(total),
            per_peer_min: per_peer_min.min(per_peer).min(total),
            per_remote_peer: d.per_remote_peer.min(total),
            piece_size: piece,
            ..d
        }
    }
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            per_peer: 3,
            per_peer_min: 3,
            per_remote_peer: 3,
            total: 12,
            random_first: 4,
            endgame_dup: 2,
            elsewhere_backoff: Duration::from_millis(500),
            initial_window: 2,
            piece_size: 0,
        }
    }
}

/// A piece request's deadline: `BASE + PER_MIB * size_in_MiB`; the
/// requester gives up on it then, and the server stops serving it.
pub const REQUEST_DEADLINE_BASE: std::time::Duration = std::time::Duration::from_secs(10);
pub const REQUEST_DEADLINE_PER_MIB: std::time::Duration = std::time::Duration::from_secs(4);

pub fn request_deadline(len: u64) -> std::time::Duration {
    REQUEST_DEADLINE_BASE + REQUEST_DEADLINE_PER_MIB.mul_f64(len as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_buffers_stay_bounded_for_any_piece_size() {
        for log2 in 12..=30 {
            let piece = 1u32 << log2;
            let c = DownloadConfig::for_piece_size(piece);
            assert!(c.total >= 2 && c.per_peer <= c.total);
            assert!(c.total as u64 * piece as u64 <= (2 * INFLIGHT_BYTES).max(2 * piece as u64));
        }
        // at least 8 in flight while they fit in 32 MiB (`MIN_REQUESTS`)
        assert_eq!(DownloadConfig::for_piece_size(4 << 20).total, 8);
        assert_eq!(DownloadConfig::for_piece_size(8 << 20).total, 4);
        assert_eq!(DownloadConfig::for_piece_size(16 << 20).total, 2);
        assert_eq!(DownloadConfig::for_piece_size(4 << 20).per_peer, 3);
        assert_eq!(DownloadConfig::for_piece_size(1 << 20).total, 16);
        assert_eq!(DownloadConfig::for_piece_size(1 << 20).per_peer, 12);
        assert_eq!(DownloadConfig::for_piece_size(1 << 20).per_peer_min, 1);
        assert_eq!(DownloadConfig::for_piece_size(4 << 20).per_peer_min, 1);
        assert_eq!(DownloadConfig::for_piece_size(256 << 10).per_peer_min, 4);
    }

    /// Grown for deltas (`limits::scale`), the limits keep piece buffers
    /// within 4 x `INFLIGHT_BYTES` (or the unscaled 2 of a huge piece) and a
    /// peer's requests within the streams it may open.
    #[test]
    fn scaled_limits_stay_within_memory_and_streams() {
        for log2 in 12..=30 {
            let piece = 1u64 << log2;
            let c = DownloadConfig::for_piece_size(piece as u32);
            assert_eq!(c.scaled(1), (c.total, c.per_peer, c.per_remote_peer));
            let (total, peer, remote) = c.scaled(4);
            assert!(total as u64 * piece <= (4 * INFLIGHT_BYTES).max(c.total as u64 * piece));
            assert!(peer <= total && remote <= total);
            assert!(peer <= MAX_PEER_REQUESTS.max(c.per_peer), "{log2}");
        }
        assert_eq!(
            DownloadConfig::for_piece_size(1 << 20).scaled(4),
            (64, 15, 12)
        );
        assert_eq!(DownloadConfig::for_piece_size(16 << 20).scaled(4).0, 4);
        assert_eq!(DownloadConfig::for_piece_size(1 << 30).scaled(4).0, 2);
    }
}

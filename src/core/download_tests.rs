use super::*;
use proptest::prelude::*;

/// The group tag of the remote peers in these tests (this host's is 0).
pub const REMOTE: u64 = 1;

pub(super) fn t0() -> Instant {
    Instant::now()
}

pub(super) fn full(n: usize) -> BitVec {
    bitvec![1; n]
}

/// Without slow start, so a test sees every slot at once (the window
/// has its own test).
pub(super) fn cfg() -> DownloadConfig {
    DownloadConfig {
        random_first: 0,
        initial_window: usize::MAX,
        ..DownloadConfig::default()
    }
}

/// Lets the peers deliver every request, a second of clock per round (1000
/// at most), checking the invariants each round; whether `d` completed.
pub(super) fn deliver_until_complete(d: &mut Download, now: Instant) -> bool {
    let mut t = now;
    for _ in 0..1000 {
        if d.is_complete() {
            break;
        }
        t += Duration::from_secs(1);
        for (k, i) in d.poll_requests(t) {
            d.piece_received(k, i, 10, Duration::from_millis(1));
        }
        d.check_invariants();
    }
    d.is_complete()
}

#[test]
fn picks_rarest_first() {
    let mut d = Download::new(bitvec![0; 4], cfg(), 1);
    d.add_peer(1);
    d.add_peer(2);
    d.add_peer(3);
    d.peer_bitfield(1, &full(4)).unwrap();
    d.peer_bitfield(2, &bitvec![1, 1, 0, 1]).unwrap();
    d.peer_bitfield(3, &bitvec![1, 0, 0, 1]).unwrap();
    // availability: [3, 2, 1, 3]; peer 1 alone has piece 2, then piece 1 is rarest
    let reqs = d.poll_requests(t0());
    d.check_invariants();
    let from1: Vec<u32> = reqs.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    assert!(from1.contains(&2), "{reqs:?}");
    let all: std::collections::HashSet<u32> = reqs.iter().map(|r| r.1).collect();
    assert_eq!(
        all.len(),
        4,
        "distinct pieces while unrequested ones remain: {reqs:?}"
    );
}

#[test]
fn a_piece_is_lacked_while_a_peer_of_either_group_has_not_got_it() {
    let mut d = Download::new(bitvec![0; 3], cfg(), 1);
    d.add_peer(1);
    d.add_remote_peer(2, REMOTE);
    d.peer_bitfield(1, &bitvec![1, 1, 0]).unwrap();
    d.peer_bitfield(2, &bitvec![1, 0, 0]).unwrap();
    assert!(!d.lacked_by_a_peer(0), "both hold piece 0");
    assert!(d.lacked_by_a_peer(1), "the remote peer lacks piece 1");
    d.peer_have(2, 1).unwrap();
    assert!(!d.lacked_by_a_peer(1));
    assert!(d.lacked_by_a_peer(2));
    d.remove_peer(1);
    d.remove_peer(2);
    assert!(!d.lacked_by_a_peer(2), "no peers, nobody to serve");
}

#[test]
fn respects_per_peer_and_total_limits() {
    let c = DownloadConfig {
        per_peer: 2,
        total: 3,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; 100], c, 7);
    for k in 0..5 {
        d.add_peer(k);
        d.peer_bitfield(k, &full(100)).unwrap();
    }
    let reqs = d.poll_requests(t0());
    assert_eq!(reqs.len(), 3);
    d.check_invariants();
    assert!(d.poll_requests(t0()).is_empty());
}

#[test]
fn many_sources_share_the_total_and_one_source_gets_a_deep_pipeline() {
    let c = DownloadConfig {
        per_peer: 12,
        per_peer_min: 4,
        total: 32,
        ..cfg()
    };
    let per_peer = |reqs: &[(PeerKey, u32)]| {
        let mut n: LocalMap<PeerKey, usize> = LocalMap::default();
        for r in reqs {
            *n.entry(r.0).or_default() += 1;
        }
        n
    };
    // one source: per_peer
    let mut d = Download::new(bitvec![0; 100], c.clone(), 3);
    d.add_peer(1);
    d.peer_bitfield(1, &full(100)).unwrap();
    assert_eq!(d.poll_requests(t0()).len(), 12);
    d.check_invariants();
    // 4 sources: 32 / 4 = 8 each
    let mut d = Download::new(bitvec![0; 100], c.clone(), 3);
    for k in 0..4 {
        d.add_peer(k);
        d.peer_bitfield(k, &full(100)).unwrap();
    }
    let reqs = d.poll_requests(t0());
    assert_eq!(reqs.len(), 32);
    let n = per_peer(&reqs);
    assert!(n.len() == 4 && n.values().all(|&n| n == 8), "{reqs:?}");
    // 4 sources and 4 peers that hold nothing we lack: still 8 each
    let mut d = Download::new(bitvec![0; 100], c.clone(), 3);
    for k in 0..8 {
        d.add_peer(k);
        let bits = if k < 4 { full(100) } else { bitvec![0; 100] };
        d.peer_bitfield(k, &bits).unwrap();
    }
    let n = per_peer(&d.poll_requests(t0()));
    assert!(n.len() == 4 && n.values().all(|&n| n == 8), "{n:?}");
    // 16 sources: 32 / 16 = 2, but at least per_peer_min (4), so 8 of
    // them fill the total
    let mut d = Download::new(bitvec![0; 100], c, 3);
    for k in 0..16 {
        d.add_peer(k);
        d.peer_bitfield(k, &full(100)).unwrap();
    }
    let reqs = d.poll_requests(t0());
    d.check_invariants();
    assert_eq!(reqs.len(), 32);
    let n = per_peer(&reqs);
    assert_eq!(n.len(), 8, "{reqs:?}");
    assert!(n.values().all(|&n| n == 4), "{reqs:?}");
}

#[test]
fn no_requests_before_a_bitfield_and_none_when_complete() {
    let mut d = Download::new(bitvec![0; 3], cfg(), 1);
    d.add_peer(1);
    assert!(d.poll_requests(t0()).is_empty());
    let mut done = Download::new(bitvec![1; 3], cfg(), 1);
    done.add_peer(1);
    done.peer_bitfield(1, &full(3)).unwrap();
    assert!(done.poll_requests(t0()).is_empty());
    assert!(done.is_complete());
}

#[test]
fn endgame_duplicates_then_cancels_losers() {
    let mut d = Download::new(bitvec![1, 1, 0], cfg(), 3);
    d.add_peer(1);
    d.add_peer(2);
    d.peer_bitfield(1, &full(3)).unwrap();
    d.peer_bitfield(2, &full(3)).unwrap();
    let reqs = d.poll_requests(t0());
    assert_eq!(
        reqs.len(),
        2,
        "the last piece asked of both peers: {reqs:?}"
    );
    assert!(reqs.iter().all(|r| r.1 == 2));
    d.check_invariants();
    // a peer with a request in flight takes no duplicate
    assert!(d.poll_requests(t0()).is_empty());
    let winner = reqs[0].0;
    let cancels = d.piece_received(winner, 2, 100, Duration::from_millis(10));
    assert_eq!(
        cancels,
        vec![Cancel {
            peer: reqs[1].0,
            piece: 2
        }]
    );
    assert!(d.is_complete());
    d.check_invariants();
}

#[test]
fn lost_peer_releases_its_requests() {
    let mut d = Download::new(bitvec![0; 2], cfg(), 3);
    d.add_peer(1);
    d.peer_bitfield(1, &full(2)).unwrap();
    assert_eq!(d.poll_requests(t0()).len(), 2);
    d.remove_peer(1);
    d.check_invariants();
    d.add_peer(2);
    d.peer_bitfield(2, &full(2)).unwrap();
    assert_eq!(d.poll_requests(t0()).len(), 2);
}

#[test]
fn elsewhere_backs_off_then_retries() {
    let mut d = Download::new(bitvec![0; 1], cfg(), 3);
    d.add_peer(1);
    d.peer_bitfield(1, &full(1)).unwrap();
    let now = t0();
    assert_eq!(d.poll_requests(now), vec![(1, 0)]);
    d.piece_failed(1, 0, Failure::Elsewhere, now);
    assert!(d.poll_requests(now).is_empty());
    let wake = d.poll_timeout(now).unwrap();
    assert_eq!(
        d.poll_timeout(wake),
        None,
        "an expired backoff is not a wake-up"
    );
    assert!(wake > now);
    assert_eq!(
        d.poll_requests(wake + Duration::from_millis(1)),
        vec![(1, 0)]
    );
}

#[test]
fn missing_corrects_the_peer_bitfield() {
    let mut d = Download::new(bitvec![0; 2], cfg(), 3);
    d.add_peer(1);
    d.peer_bitfield(1, &full(2)).unwrap();
    let now = t0();
    for (k, i) in d.poll_requests(now) {
        d.piece_failed(k, i, Failure::Missing, now);
    }
    d.check_invariants();
    assert!(d.poll_requests(now).is_empty());
    assert!(!d.peer_is_interesting(1));
}

#[test]
fn a_piece_changed_at_its_only_holder_is_lost_until_another_has_it() {
    let mut d = Download::new(bitvec![0; 2], cfg(), 3);
    d.add_peer(1);
    d.peer_bitfield(1, &full(2)).unwrap();
    let now = t0();
    assert_eq!(d.lost_to_change(), None);
    let reqs = d.poll_requests(now);
    let &(k, i) = reqs.first().unwrap();
    d.piece_failed(k, i, Failure::Changed, now);
    d.check_invariants();
    assert_eq!(d.lost_to_change(), Some(i));
    // a host that fetched it before the change announces it
    d.add_peer(2);
    d.peer_have(2, i as usize).unwrap();
    assert_eq!(d.lost_to_change(), None);
}

#[test]
fn bad_input_is_an_error() {
    let mut d = Download::new(bitvec![0; 2], cfg(), 3);
    assert_eq!(d.peer_have(9, 0), Err(ProtocolViolation::UnknownPeer));
    d.add_peer(1);
    assert_eq!(
        d.peer_bitfield(1, &bitvec![1; 3]),
        Err(ProtocolViolation::BitfieldLength { got: 3, want: 2 })
    );
    assert_eq!(
        d.peer_have(1, 2),
        Err(ProtocolViolation::PieceIndex { index: 2, count: 2 })
    );
}

#[test]
fn faster_peers_get_slots_first() {
    let c = DownloadConfig {
        per_peer: 1,
        total: 2,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; 50], c, 9);
    d.add_peer(1);
    d.add_peer(2);
    d.peer_bitfield(1, &full(50)).unwrap();
    d.peer_bitfield(2, &full(50)).unwrap();
    let now = t0();
    // measure: peer 1 slow, peer 2 fast
    for (k, i) in d.poll_requests(now) {
        let ms = if k == 1 { 1000 } else { 10 };
        d.piece_received(k, i, 1 << 20, Duration::from_millis(ms));
    }
    let reqs = d.poll_requests(now);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].0, 2, "the fast peer is served first: {reqs:?}");
}

proptest! {
    /// Random event sequences keep the invariants and always finish when a
    /// complete peer stays connected.
    #[test]
    fn random_events_keep_invariants(seed in any::<u64>(), ops in proptest::collection::vec((0u8..6, 0u64..4, 0u32..20), 0..200)) {
        let n = 20;
        let mut d = Download::new(bitvec![0; n], DownloadConfig::default(), seed);
        let now = t0();
        d.add_peer(100);
        d.peer_bitfield(100, &full(n)).unwrap();
        let mut outstanding: Vec<(PeerKey, u32)> = Vec::new();
        for (op, peer, piece) in ops {
            match op {
                0 => { d.add_peer(peer); let _ = d.peer_have(peer, piece as usize); }
                1 => { d.remove_peer(peer); outstanding.retain(|r| r.0 != peer); }
                2 => outstanding.extend(d.poll_requests(now)),
                3 => if let Some(r) = outstanding.pop() {
                    for c in d.piece_received(r.0, r.1, 10, Duration::from_millis(1)) {
                        outstanding.retain(|o| *o != (c.peer, c.piece));
                    }
                },
                4 => if let Some(r) = outstanding.pop() { d.piece_failed(r.0, r.1, Failure::Failed, now) },
                _ => if let Some(r) = outstanding.pop() {
                    let why = if r.0 == 100 { Failure::Failed } else { Failure::Missing };
                    d.piece_failed(r.0, r.1, why, now)
                },
            }
            d.check_invariants();
        }
        // drain with the complete peer only
        for r in outstanding.drain(..) { d.piece_failed(r.0, r.1, Failure::Failed, now); }
        for k in 0..4 { d.remove_peer(k); }
        prop_assert!(deliver_until_complete(&mut d, now));
    }
}

#[test]
fn a_failing_unmeasured_peer_goes_behind_measured_ones() {
    let c = DownloadConfig {
        per_peer: 1,
        total: 1,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; 20], c, 5);
    d.add_peer(1);
    d.add_peer(2);
    d.peer_bitfield(1, &full(20)).unwrap();
    d.peer_bitfield(2, &full(20)).unwrap();
    let now = t0();
    // one request at a time: whichever peer is asked first fails, the other succeeds
    let (first, i) = d.poll_requests(now)[0];
    d.piece_failed(first, i, Failure::Failed, now);
    let (second, j) = d.poll_requests(now)[0];
    assert_ne!(first, second);
    d.piece_received(second, j, 1 << 20, Duration::from_millis(10));
    for _ in 0..5 {
        let (k, p) = d.poll_requests(now)[0];
        assert_eq!(
            k, second,
            "the peer that delivers is asked before the one that failed"
        );
        d.piece_received(k, p, 1 << 20, Duration::from_millis(10));
    }
}

#[test]
fn a_piece_nobody_holds_does_not_block_endgame() {
    let mut d = Download::new(bitvec![0; 2], cfg(), 3);
    d.add_peer(1);
    d.add_peer(2);
    // piece 1 is held by nobody; piece 0 by both
    d.peer_bitfield(1, &bitvec![1, 0]).unwrap();
    d.peer_bitfield(2, &bitvec![1, 0]).unwrap();
    let reqs = d.poll_requests(t0());
    assert_eq!(reqs.len(), 2, "piece 0 duplicated to both peers: {reqs:?}");
    assert!(reqs.iter().all(|r| r.1 == 0));
    d.check_invariants();
}

/// No endgame while the local source (a basis's index) holds pieces: a
/// late piece is duplicated only once they are released and asked for.
#[test]
fn no_endgame_while_the_local_source_holds_pieces() {
    let ms = Duration::from_millis;
    let mut d = Download::new(bitvec![0; 3], cfg(), 1);
    for k in [1, 2] {
        d.add_peer(k);
        d.peer_bitfield(k, &full(3)).unwrap();
    }
    d.hold(&bitvec![0, 0, 1]);
    let t = t0();
    let reqs = d.poll_requests(t);
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    // the first arrives; the other turns late, and a peer is idle
    d.piece_received(reqs[0].0, reqs[0].1, 10, ms(10));
    let (holder, stuck) = reqs[1];
    let later = t + Duration::from_secs(5);
    assert!(
        d.poll_requests(later).is_empty(),
        "duplicated while holding"
    );
    d.release(2);
    let next = d.poll_requests(later);
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].1, 2);
    d.piece_received(next[0].0, 2, 10, ms(10));
    let dup = d.poll_requests(later);
    assert_eq!(dup.len(), 1, "{dup:?}");
    assert!(dup[0].1 == stuck && dup[0].0 != holder, "{dup:?}");
    d.check_invariants();
}

proptest! {
    #[test]
    fn missing_lists_held_pieces_we_lack(
        pairs in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300)
    ) {
        let bits: BitVec = pairs.iter().map(|p| p.0).collect();
        let have: BitVec = pairs.iter().map(|p| p.1).collect();
        let want: Vec<usize> = (0..pairs.len()).filter(|&i| bits[i] && !have[i]).collect();
        prop_assert_eq!(missing(&bits, &have).collect::<Vec<_>>(), want);
    }
}

#[test]
fn a_new_peer_earns_its_slots_and_a_failing_one_loses_them() {
    let c = DownloadConfig {
        per_peer: 4,
        total: 16,
        initial_window: 2,
        ..cfg()
    };
    let now = t0();
    let mut d = Download::new(bitvec![0; 32], c, 5);
    d.add_peer(1);
    d.peer_bitfield(1, &full(32)).unwrap();
    let first = d.poll_requests(now);
    assert_eq!(first.len(), 2, "a new peer gets the initial window");
    // each verified piece opens one more slot, up to per_peer
    for (k, &(_, i)) in first.iter().enumerate() {
        d.piece_received(1, i, 1 << 20, Duration::from_millis(10));
        d.check_invariants();
        let more = d.poll_requests(now);
        assert_eq!(more.len(), 2, "after {} pieces: {more:?}", k + 1);
    }
    assert_eq!(d.poll_requests(now).len(), 0, "4 in flight, per_peer 4");
    // one request fails: the window falls to one, and the other three run out
    let inflight: Vec<u32> = d.peers[&1].requested.clone();
    d.piece_failed(1, inflight[0], Failure::Failed, now);
    for &i in &inflight[1..3] {
        d.piece_failed(1, i, Failure::Failed, now);
        assert!(d.poll_requests(now).is_empty(), "still one in flight");
    }
    d.piece_failed(1, inflight[3], Failure::Failed, now);
    d.check_invariants();
    // four failures in a row: paused for 8 x the backoff
    let backoff = DownloadConfig::default().elsewhere_backoff;
    assert!(d.poll_requests(now + backoff * 7).is_empty(), "paused");
    assert_eq!(
        d.poll_timeout(now),
        Some(now + backoff * 8),
        "wake when it ends"
    );
    let later = now + backoff * 8;
    assert_eq!(d.poll_requests(later).len(), 1, "window of one");
}

#[test]
fn a_piece_stuck_at_silent_peers_is_duplicated_to_a_proven_one() {
    let c = DownloadConfig {
        per_peer: 4,
        total: 16,
        endgame_dup: 2,
        ..cfg()
    };
    let now = t0();
    let mut d = Download::new(bitvec![0; 3], c, 9);
    // peers 1 and 2 claim everything and never answer
    for k in [1, 2] {
        d.add_peer(k);
        d.peer_bitfield(k, &full(3)).unwrap();
    }
    let first = d.poll_requests(now);
    assert_eq!(
        first.len(),
        3 + 1,
        "every piece at one, one duplicate at the other: {first:?}"
    );
    // peer 3 arrives, holding pieces 0 and 1, and delivers both, one at a
    // time: in the endgame a peer duplicates only with nothing in flight
    d.add_peer(3);
    d.peer_bitfield(3, &bitvec![1, 1, 0]).unwrap();
    // the silent peers' requests are long overdue
    let later = now + Duration::from_secs(1);
    for _ in 0..2 {
        let reqs = d.poll_requests(later);
        let from3: Vec<u32> = reqs.iter().filter(|r| r.0 == 3).map(|r| r.1).collect();
        assert_eq!(from3.len(), 1, "{reqs:?}");
        d.piece_received(3, from3[0], 1 << 20, Duration::from_millis(5));
    }
    assert!(d.have()[0] && d.have()[1]);
    d.check_invariants();
    // piece 2 is requested already, but only from peers that never
    // delivered: peer 3, proven, may still take it once it has it
    d.peer_have(3, 2).unwrap();
    let reqs = d.poll_requests(later);
    assert!(reqs.contains(&(3, 2)), "{reqs:?}");
    d.check_invariants();
}

#[test]
fn many_silent_peers_do_not_keep_a_proven_one_from_the_last_piece() {
    let c = DownloadConfig {
        per_peer: 4,
        total: 64,
        endgame_dup: 2,
        ..cfg()
    };
    let now = t0();
    let mut d = Download::new(bitvec![0; 2], c, 11);
    // peers 1-12 claim piece 1 and never answer: they take every request
    // the endgame gives to peers that have not delivered
    for k in 1..=12 {
        d.add_peer(k);
        d.peer_bitfield(k, &bitvec![0, 1]).unwrap();
    }
    let silent = d.poll_requests(now);
    assert!(
        silent.len() >= 8 && silent.len() <= 9,
        "one request, then at most 8 unproven duplicates: {silent:?}"
    );
    // peer 13 delivers piece 0, then announces piece 1
    d.add_peer(13);
    d.peer_bitfield(13, &bitvec![1, 0]).unwrap();
    assert_eq!(d.poll_requests(now), vec![(13, 0)]);
    d.piece_received(13, 0, 1 << 20, Duration::from_millis(5));
    d.peer_have(13, 1).unwrap();
    assert_eq!(
        d.poll_requests(now + Duration::from_secs(1)),
        vec![(13, 1)],
        "the proven peer gets it once the silent ones are late"
    );
    d.check_invariants();
}

#[test]
fn the_endgame_duplicates_only_a_late_piece() {
    let now = t0();
    let mut d = Download::new(bitvec![0; 3], cfg(), 5);
    d.add_peer(1);
    d.peer_bitfield(1, &full(3)).unwrap();
    assert_eq!(d.poll_requests(now).len(), 3);
    // a piece takes 100 ms: pieces 1 and 2 will be late 150 ms after asked
    let first = d.piece_received(1, 0, 1 << 20, Duration::from_millis(100));
    assert!(first.is_empty());
    d.add_peer(2);
    d.peer_bitfield(2, &full(3)).unwrap();
    let asked = now;
    let soon = asked + Duration::from_millis(100);
    assert!(
        d.poll_requests(soon).is_empty(),
        "pieces in flight for 100 ms are on time"
    );
    let wake = d.poll_timeout(soon).expect("a deadline to wake for");
    assert_eq!(wake, asked + Duration::from_millis(150));
    let reqs = d.poll_requests(wake);
    assert_eq!(reqs.len(), 1, "one duplicate for the idle peer: {reqs:?}");
    assert_eq!(reqs[0].0, 2);
    d.check_invariants();
}

#[test]
fn a_duplicate_that_outlives_the_first_request_is_not_late_at_once() {
    let t = t0();
    let ms = Duration::from_millis;
    let mut d = Download::new(bitvec![0; 2], cfg(), 7);
    d.add_peer(1);
    d.peer_bitfield(1, &full(2)).unwrap();
    assert_eq!(d.poll_requests(t).len(), 2);
    // piece 0 takes 100 ms: piece 1, asked at t, is late from t + 150 ms
    d.piece_received(1, 0, 1 << 20, ms(100));
    d.add_peer(2);
    d.peer_bitfield(2, &full(2)).unwrap();
    assert_eq!(d.poll_requests(t + ms(200)), vec![(2, 1)]);
    // the first request fails; the duplicate, asked at t + 200 ms, is what
    // is left, and it is late only from t + 350 ms
    d.piece_failed(1, 1, Failure::Failed, t + ms(210));
    d.check_invariants();
    d.add_peer(3);
    d.peer_bitfield(3, &full(2)).unwrap();
    assert!(d.poll_requests(t + ms(250)).is_empty());
    assert_eq!(d.poll_timeout(t + ms(250)), Some(t + ms(350)));
    assert_eq!(d.poll_requests(t + ms(350)), vec![(3, 1)]);
    d.check_invariants();
}

/// The state `Download` keeps incrementally, recomputed from scratch.
impl Download {
    pub(crate) fn check_invariants(&self) {
        let n = self.piece_count();
        let mut avail = vec![0u32; n];
        let mut remote_avail = vec![0u32; n];
        let mut infl = vec![0u8; n];
        let mut proven_infl = vec![0u8; n];
        let mut total = 0;
        for p in self.peers.values() {
            for i in p.bits.iter_ones() {
                if p.remote {
                    remote_avail[i] += 1;
                } else {
                    avail[i] += 1;
                }
            }
            // the limits shrink when pieces grow on the wire again: what
            // was asked before stays, within the largest scale
            let (_, per_peer, per_remote) = self.cfg.scaled(crate::core::limits::MAX_SCALE);
            assert!(p.requested.len() <= if p.remote { per_remote } else { per_peer });
            for &i in &p.requested {
                infl[i as usize] += 1;
                proven_infl[i as usize] += u8::from(p.src.is_proven());
                total += 1;
                assert!(!self.have[i as usize], "piece {i} in flight but held");
                assert!(!self.held[i as usize], "piece {i} in flight but held back");
            }
        }
        assert_eq!(avail, self.availability);
        assert_eq!(remote_avail, self.remote_availability);
        assert_eq!(infl, self.inflight);
        let mut oldest: Vec<Option<Instant>> = vec![None; n];
        for p in self.peers.values() {
            assert_eq!(p.requested.len(), p.requested_at.len());
            for (&i, &t) in p.requested.iter().zip(&p.requested_at) {
                let o = &mut oldest[i as usize];
                *o = Some(o.map_or(t, |o| o.min(t)));
            }
        }
        assert_eq!(
            oldest,
            self.late.asked_at(),
            "asked_at: the oldest request of each piece"
        );
        assert_eq!(proven_infl, self.proven_inflight);
        assert_eq!(total, self.inflight_total);
        assert!(total <= self.cfg.total);
        assert_eq!(self.have.count_ones(), self.have_count);
        assert_eq!(self.skip, self.have.clone() | self.held.clone(), "skip");
        assert!((self.have.clone() & self.held.clone()).not_any());
    }
}

/// Pieces held for a local source are never requested, not even in the
/// endgame; released, they are; filled locally, they count as had and
/// the download completes without them.
#[test]
fn held_pieces_wait_for_the_local_source() {
    let mut d = Download::new(bitvec![0; 6], cfg(), 1);
    d.add_peer(1);
    d.peer_bitfield(1, &full(6)).unwrap();
    d.hold(&bitvec![0, 1, 1, 0, 1, 1]);
    d.check_invariants();
    let mut t = t0();
    for _ in 0..5 {
        t += Duration::from_secs(10);
        for (k, i) in d.poll_requests(t) {
            assert!([0, 3].contains(&i), "held piece {i} requested");
            d.piece_received(k, i, 10, Duration::from_millis(1));
        }
        d.check_invariants();
    }
    assert_eq!(d.have_count(), 2);
    assert!(d.holding());
    d.release(1);
    d.release(2);
    assert!(d.local(4) && !d.local(4));
    d.check_invariants();
    let got = d.poll_requests(t);
    assert_eq!(got.len(), 2, "{got:?}");
    for (k, i) in got {
        assert!([1, 2].contains(&i), "{i}");
        d.piece_received(k, i, 10, Duration::from_millis(1));
    }
    assert!(!d.is_complete());
    d.local(5);
    d.check_invariants();
    assert!(!d.holding() && d.is_complete());
    // what is still held when the local source ends is asked for
    let mut e = Download::new(bitvec![0; 3], cfg(), 1);
    e.add_peer(1);
    e.peer_bitfield(1, &full(3)).unwrap();
    e.hold(&bitvec![1, 1, 0]);
    e.local(0);
    e.release_all();
    e.check_invariants();
    let got: Vec<u32> = e.poll_requests(t).into_iter().map(|r| r.1).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(!got.contains(&0), "{got:?}");
}

//! Tests of `Download` across datacenter groups: only bridges ask other
//! groups, for their share of what their group lacks (group-rarest).

use super::tests::{REMOTE, cfg, deliver_until_complete, full, t0};
use super::*;
use crate::core::group::{BridgeShare, stripe_owner};
use proptest::prelude::*;

fn share(rank: usize, of: usize) -> Option<BridgeShare> {
    Some(BridgeShare { rank, of })
}

#[test]
fn a_host_that_is_not_a_bridge_never_asks_another_group() {
    let mut d = Download::new(bitvec![0; 8], cfg(), 1);
    d.add_remote_peer(1, REMOTE);
    d.peer_bitfield(1, &full(8)).unwrap();
    assert!(d.poll_requests(t0()).is_empty());
    d.add_peer(2);
    d.peer_bitfield(2, &bitvec![1, 1, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let reqs = d.poll_requests(t0());
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r.0 == 2),
        "{reqs:?}"
    );
    d.check_invariants();
}

#[test]
fn a_bridge_pulls_across_groups_only_what_its_group_lacks() {
    let c = DownloadConfig {
        per_peer: 8,
        per_remote_peer: 8,
        total: 16,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; 8], c, 3);
    d.set_bridge(share(0, 1));
    d.add_remote_peer(1, REMOTE);
    d.peer_bitfield(1, &full(8)).unwrap();
    d.add_peer(2);
    d.peer_bitfield(2, &bitvec![1, 1, 1, 0, 0, 0, 0, 0])
        .unwrap();
    let reqs = d.poll_requests(t0());
    d.check_invariants();
    let remote: Vec<u32> = reqs.iter().filter(|r| r.0 == 1).map(|r| r.1).collect();
    let local: Vec<u32> = reqs.iter().filter(|r| r.0 == 2).map(|r| r.1).collect();
    assert!(remote.iter().all(|&i| i >= 3), "{reqs:?}");
    assert_eq!(remote.len(), 5, "{reqs:?}");
    assert_eq!(local.len(), 3, "{reqs:?}");
    // everything requested once; no duplicate crosses the WAN in the endgame
    assert!(d.poll_requests(t0()).is_empty());
}

/// A piece stuck at one source of another group is asked of a second
/// one once it is late by the WAN's own yardstick, and the first copy
/// to arrive cancels the other; before that, nothing crosses twice.
#[test]
fn a_bridge_duplicates_a_piece_stuck_across_the_wan_once_it_is_late() {
    let c = DownloadConfig {
        per_peer: 8,
        per_remote_peer: 2,
        total: 16,
        ..cfg()
    };
    let ms = Duration::from_millis;
    let t = t0();
    let mut d = Download::new(bitvec![0; 6], c, 3);
    d.set_bridge(share(0, 1));
    for k in [1, 2, 3] {
        d.add_remote_peer(k, REMOTE);
        d.peer_bitfield(k, &full(6)).unwrap();
    }
    let reqs = d.poll_requests(t);
    assert_eq!(reqs.len(), 6, "{reqs:?}");
    // everything arrives in 100 ms but one piece at the first peer
    let (stuck, at) = (reqs[0].1, reqs[0].0);
    for &(k, i) in &reqs[1..] {
        assert!(d.piece_received(k, i, 10, ms(100)).is_empty());
    }
    assert!(d.poll_requests(t + ms(100)).is_empty());
    // late at 4 x 100 ms: one other peer, idle and proven, is asked too
    assert_eq!(d.poll_timeout(t + ms(100)), Some(t + ms(400)));
    assert!(d.poll_requests(t + ms(399)).is_empty());
    let dup = d.poll_requests(t + ms(400));
    assert_eq!(dup.len(), 1, "{dup:?}");
    let other = dup[0].0;
    assert!(other != at && dup[0].1 == stuck, "{dup:?}");
    // the third peer is idle and proven too: two requests at most
    assert!(d.poll_requests(t + ms(900)).is_empty(), "two at most");
    d.check_invariants();
    let cancel = d.piece_received(other, stuck, 10, ms(150));
    assert_eq!(cancel.len(), 1);
    assert_eq!((cancel[0].peer, cancel[0].piece), (at, stuck));
    assert!(d.is_complete());
}

/// A member whose group still lacks pieces another group holds (its
/// bridge is pulling them) is not in the endgame: what it asked of its
/// group is not duplicated. Once nothing more is to come, it is.
#[test]
fn a_member_waiting_for_its_bridge_does_not_duplicate() {
    let mut d = Download::new(bitvec![0; 4], cfg(), 1);
    d.add_remote_peer(1, REMOTE);
    d.peer_bitfield(1, &full(4)).unwrap();
    for k in [2, 3] {
        d.add_peer(k);
        d.peer_bitfield(k, &bitvec![1, 0, 0, 0]).unwrap();
    }
    let t = t0();
    let reqs = d.poll_requests(t);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let (holder, _) = reqs[0];
    assert!(d.poll_requests(t + Duration::from_secs(5)).is_empty());
    // nothing more to come from the other group (here its peer left):
    // the late piece goes to the idle peer too
    d.remove_peer(1);
    let more = d.poll_requests(t + Duration::from_secs(5));
    assert_eq!(more.len(), 1, "{more:?}");
    assert!(more[0].1 == 0 && more[0].0 != holder, "{more:?}");
    d.check_invariants();
}

#[test]
fn bridges_split_the_cross_group_pieces() {
    let mut wanted = Vec::new();
    for rank in 0..2 {
        let c = DownloadConfig {
            per_peer: 8,
            per_remote_peer: 8,
            total: 16,
            ..cfg()
        };
        let mut d = Download::new(bitvec![0; 8], c, rank as u64);
        d.set_bridge(share(rank, 2));
        d.add_remote_peer(1, REMOTE);
        d.peer_bitfield(1, &full(8)).unwrap();
        let mut got: Vec<u32> = d.poll_requests(t0()).iter().map(|r| r.1).collect();
        got.sort();
        wanted.push(got);
    }
    assert_eq!(wanted, vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7]]);
}

#[test]
fn losing_the_bridge_role_lets_cross_group_requests_finish_and_makes_no_more() {
    let mut d = Download::new(bitvec![0; 8], cfg(), 4);
    d.set_bridge(share(0, 1));
    d.add_remote_peer(1, REMOTE);
    d.peer_bitfield(1, &bitvec![0, 0, 0, 0, 1, 1, 1, 1])
        .unwrap();
    d.add_peer(2);
    d.peer_bitfield(2, &bitvec![1, 1, 1, 1, 0, 0, 0, 0])
        .unwrap();
    let reqs = d.poll_requests(t0());
    let remote: Vec<(u64, u32)> = reqs.iter().filter(|r| r.0 == 1).copied().collect();
    assert_eq!(remote.len(), 3, "{reqs:?}");
    d.set_bridge(None);
    d.check_invariants();
    // the WAN bytes already on their way still count
    assert_eq!(d.inflight_total(), reqs.len());
    let (peer, piece) = remote[0];
    assert!(
        d.piece_received(peer, piece, 10, Duration::from_millis(1))
            .is_empty()
    );
    // but the remote peer's last piece is not asked for
    let later = d.poll_requests(t0());
    assert!(later.iter().all(|r| r.0 == 2), "{later:?}");
    d.check_invariants();
}

#[test]
fn a_piece_announced_in_the_group_is_no_longer_pulled_across() {
    let c = DownloadConfig {
        per_peer: 1,
        total: 1,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; 2], c, 9);
    d.set_bridge(share(0, 1));
    d.add_remote_peer(1, REMOTE);
    d.peer_bitfield(1, &full(2)).unwrap();
    d.add_peer(2);
    d.peer_bitfield(2, &bitvec![0, 0]).unwrap();
    let first = d.poll_requests(t0());
    assert_eq!(first.len(), 1);
    let other = 1 - first[0].1 as usize;
    // a group member got the other piece meanwhile (another bridge)
    d.peer_have(2, other).unwrap();
    d.piece_received(1, first[0].1, 10, Duration::from_millis(1));
    assert_eq!(d.poll_requests(t0()), vec![(2, other as u32)]);
    d.check_invariants();
}

proptest! {
    /// Whatever happens, a request to another group is only made by a
    /// bridge, for a piece of its share that no local peer holds and that
    /// is not in flight; and a bridge with a complete remote peer finishes.
    #[test]
    fn cross_group_requests_follow_the_group_rules(
        seed in any::<u64>(),
        ops in proptest::collection::vec((0u8..7, 0u64..6, 0u32..16), 0..200),
    ) {
        let n = 16;
        let mut d = Download::new(bitvec![0; n], DownloadConfig::default(), seed);
        let now = t0();
        d.add_remote_peer(100, REMOTE);
        d.peer_bitfield(100, &full(n)).unwrap();
        let mut outstanding: Vec<(PeerKey, u32)> = Vec::new();
        for (op, peer, piece) in ops {
            match op {
                0 => {
                    if peer % 2 == 0 { d.add_peer(peer) } else { d.add_remote_peer(peer, REMOTE) }
                    let _ = d.peer_have(peer, piece as usize);
                }
                1 => { d.remove_peer(peer); outstanding.retain(|r| r.0 != peer); }
                2 => {
                    let before_avail = d.availability.clone();
                    let before_inflight = d.inflight.clone();
                    let reqs = d.poll_requests(now);
                    for &(k, i) in &reqs {
                        if d.peer_is_remote(k) {
                            let s = d.bridge();
                            prop_assert!(s.is_some_and(|s| s.takes(i as usize)), "{reqs:?}");
                            prop_assert_eq!(before_avail[i as usize], 0);
                            prop_assert_eq!(before_inflight[i as usize], 0);
                            prop_assert_eq!(reqs.iter().filter(|r| r.1 == i).count(), 1);
                        }
                    }
                    outstanding.extend(reqs);
                }
                3 => if let Some(r) = outstanding.pop() {
                    for c in d.piece_received(r.0, r.1, 10, Duration::from_millis(1)) {
                        outstanding.retain(|o| *o != (c.peer, c.piece));
                    }
                },
                4 => if let Some(r) = outstanding.pop() {
                    let why = if r.0 == 100 { Failure::Failed } else { Failure::Missing };
                    d.piece_failed(r.0, r.1, why, now)
                },
                5 => {
                    let new = match piece % 3 { 0 => None, 1 => share(0, 1), _ => share(peer as usize % 2, 2) };
                    d.set_bridge(new);
                }
                _ => if let Some(r) = outstanding.pop() { d.piece_failed(r.0, r.1, Failure::Failed, now) },
            }
            d.check_invariants();
        }
        for r in outstanding.drain(..) { d.piece_failed(r.0, r.1, Failure::Failed, now); }
        for k in 0..6 { d.remove_peer(k); }
        d.set_bridge(share(0, 1));
        prop_assert!(deliver_until_complete(&mut d, now));
    }
}

#[test]
fn a_remote_peer_gets_fewer_requests_than_a_local_one() {
    let c = DownloadConfig {
        per_peer: 8,
        per_remote_peer: 2,
        total: 32,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; 20], c, 6);
    d.set_bridge(share(0, 1));
    d.add_remote_peer(1, REMOTE);
    d.peer_bitfield(
        1,
        &bitvec![1; 10]
            .into_iter()
            .chain([false; 10])
            .collect::<BitVec>(),
    )
    .unwrap();
    d.add_peer(2);
    d.peer_bitfield(
        2,
        &bitvec![0; 10]
            .into_iter()
            .chain([true; 10])
            .collect::<BitVec>(),
    )
    .unwrap();
    let reqs = d.poll_requests(t0());
    assert_eq!(reqs.iter().filter(|r| r.0 == 1).count(), 2, "{reqs:?}");
    assert_eq!(reqs.iter().filter(|r| r.0 == 2).count(), 8, "{reqs:?}");
    d.check_invariants();
}

/// Group tags of the stripe tests: a group with a complete copy, and
/// another group besides this host's (tag 0).
const ORIGIN: u64 = 7;
const OTHER: u64 = 9;

/// A bridge of group 0 with `slots` requests in flight at most, with
/// peer 1 of `ORIGIN` holding all `n` pieces.
fn bridge_beside_an_origin(n: usize, slots: usize) -> Download {
    let c = DownloadConfig {
        per_remote_peer: slots,
        total: slots,
        ..cfg()
    };
    let mut d = Download::new(bitvec![0; n], c, 5);
    d.set_group(0);
    d.set_bridge(share(0, 1));
    d.add_remote_peer(1, ORIGIN);
    d.peer_bitfield(1, &full(n)).unwrap();
    d
}

/// Two groups pull from a third that has it all: this bridge asks the
/// full group for the pieces its own group owns first (about half), and
/// only then for the rest, which the other pulling group is meant to
/// bring. One request at a time, so the order is the order of the picks.
#[test]
fn pulling_groups_take_disjoint_stripes_from_a_full_group() {
    let n = 64;
    let mut d = bridge_beside_an_origin(n, 1);
    d.add_remote_peer(2, OTHER);
    d.peer_bitfield(2, &bitvec![0; n]).unwrap();
    let mine: Vec<usize> = (0..n)
        .filter(|&i| stripe_owner(i, &[0, OTHER]) == 0)
        .collect();
    assert!((20..=44).contains(&mine.len()), "{} of {n}", mine.len());
    let mut order = Vec::new();
    while let Some(&(peer, i)) = d.poll_requests(t0()).first() {
        assert_eq!(peer, 1);
        order.push(i as usize);
        d.piece_received(peer, i, 1 << 20, Duration::from_millis(5));
        d.check_invariants();
    }
    assert_eq!(order.len(), n, "a preference, not a rule: all pieces come");
    let (first, rest) = order.split_at(mine.len());
    assert!(first.iter().all(|i| mine.contains(i)), "{order:?}");
    assert!(rest.iter().all(|i| !mine.contains(i)), "{order:?}");
}

/// With request slots to spare, a bridge still asks a full group for
/// nothing but its own group's stripe until it holds all of it, so each
/// piece leaves that group once; then it takes the rest there too.
#[test]
fn a_full_group_serves_only_the_stripe_until_it_is_held() {
    let n = 64;
    let mut d = bridge_beside_an_origin(n, n);
    d.add_remote_peer(2, OTHER);
    d.peer_bitfield(2, &bitvec![0; n]).unwrap();
    let mine: Vec<usize> = (0..n)
        .filter(|&i| stripe_owner(i, &[0, OTHER]) == 0)
        .collect();
    let mut asked: Vec<usize> = d.poll_requests(t0()).iter().map(|r| r.1 as usize).collect();
    asked.sort_unstable();
    assert_eq!(asked, mine);
    // all in flight, none held: still nothing else
    assert!(d.poll_requests(t0()).is_empty());
    for (k, &i) in mine.iter().enumerate() {
        d.piece_received(1, i as u32, 1 << 20, Duration::from_millis(5));
        d.check_invariants();
        if k + 1 < mine.len() {
            assert!(
                d.poll_requests(t0()).is_empty(),
                "after {} of {}",
                k + 1,
                mine.len()
            );
        }
    }
    let rest = d.poll_requests(t0());
    assert_eq!(rest.len(), n - mine.len(), "{rest:?}");
    assert!(
        rest.iter()
            .all(|r| r.0 == 1 && !mine.contains(&(r.1 as usize)))
    );
}

/// A bridge of group 0 that holds its group's whole stripe, one request
/// per remote peer, beside peer 1 of `ORIGIN` with every piece and peer 2
/// of `OTHER` (still pulling) with the first two pieces of its stripe;
/// and that stripe.
fn past_own_stripe() -> (Download, Vec<usize>) {
    let n = 64;
    let c = DownloadConfig {
        per_remote_peer: 1,
        total: n,
        ..cfg()
    };
    let (mine, theirs): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| stripe_owner(i, &[0, OTHER]) == 0);
    let mut have = bitvec![0; n];
    for &i in &mine {
        have.set(i, true);
    }
    let mut d = Download::new(have, c, 5);
    d.set_group(0);
    d.set_bridge(share(0, 1));
    d.add_remote_peer(1, ORIGIN);
    d.peer_bitfield(1, &full(n)).unwrap();
    d.add_remote_peer(2, OTHER);
    let mut two = bitvec![0; n];
    two.set(theirs[0], true);
    two.set(theirs[1], true);
    d.peer_bitfield(2, &two).unwrap();
    (d, theirs)
}

/// Past its own stripe, a bridge leaves a full group alone while another
/// pulling group has a piece to trade, and takes the rest there once
/// there is nothing to trade (a group slower than this one).
#[test]
fn a_full_group_helps_only_when_there_is_nothing_to_trade() {
    let (mut d, theirs) = past_own_stripe();
    // one request per remote peer: the other group gets one, the full
    // group none, as the second piece still waits at the other group
    let mut reqs = d.poll_requests(t0());
    reqs.extend(d.poll_requests(t0()));
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].0, 2);
    d.piece_received(2, reqs[0].1, 1 << 20, Duration::from_millis(5));
    d.check_invariants();
    // the other group's second piece, then nothing left to trade
    let mut reqs = d.poll_requests(t0());
    reqs.extend(d.poll_requests(t0()));
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(reqs.iter().any(|r| r.0 == 2), "{reqs:?}");
    let help: Vec<usize> = reqs
        .iter()
        .filter(|r| r.0 == 1)
        .map(|r| r.1 as usize)
        .collect();
    assert_eq!(help.len(), 1, "{reqs:?}");
    assert!(theirs[2..].contains(&help[0]), "{reqs:?}");
}

/// A peer of another pulling group that failed a request backs off, and
/// while it does it offers nothing to trade: the full group is asked
/// instead (a peer that claims pieces and never serves them must not hold
/// the download back).
#[test]
fn a_failed_trade_lets_the_full_group_help() {
    let (mut d, _) = past_own_stripe();
    let reqs = d.poll_requests(t0());
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].0, 2);
    d.piece_failed(2, reqs[0].1, Failure::Failed, t0());
    d.check_invariants();
    let reqs = d.poll_requests(t0());
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r.0 == 1),
        "{reqs:?}"
    );
}

/// Once the other group has a complete copy it no longer pulls: every
/// piece is this group's to take, rarest first as before.
#[test]
fn a_group_with_a_full_copy_owns_no_stripe() {
    let n = 64;
    let mut d = bridge_beside_an_origin(n, 1);
    d.add_remote_peer(2, OTHER);
    d.peer_bitfield(2, &full(n)).unwrap();
    let mine: Vec<usize> = (0..n)
        .filter(|&i| stripe_owner(i, &[0, OTHER]) == 0)
        .collect();
    // as many picks as this group's stripe would have: not all in it
    let mut first = Vec::new();
    for _ in 0..mine.len() {
        let (peer, i) = d.poll_requests(t0())[0];
        first.push(i as usize);
        d.piece_received(peer, i, 1 << 20, Duration::from_millis(5));
    }
    assert!(first.iter().any(|i| !mine.contains(i)), "{first:?}");
}

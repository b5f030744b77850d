//! The dialer: what is learned, from whom, and when it is dialed.
use super::*;

const SEED: PeerId = [0xee; 16];

/// A peer `id` of `group`, at an IP of its own.
fn info(id: u16, group: &str) -> PeerInfo {
    let mut pid = [0u8; 16];
    pid[..2].copy_from_slice(&id.to_be_bytes());
    PeerInfo {
        id: pid,
        group: group.into(),
        addrs: vec![SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 7000))],
    }
}

fn ids(due: Vec<PeerInfo>) -> Vec<u16> {
    due.iter()
        .map(|p| u16::from_be_bytes([p.id[0], p.id[1]]))
        .collect()
}

fn source(n: u8) -> PeerId {
    [n; 16]
}

#[test]
fn peers_of_other_groups_wait_until_this_host_fetches_across() {
    let now = Instant::now();
    let mut d = Dialer::new("a", now);
    d.learn(info(1, "a"), SEED, false, now);
    d.learn(info(2, "b"), SEED, false, now);
    assert_eq!(ids(d.take_due(now, 0, None)), [1]);
    assert!(
        d.take_due(now, 0, None).is_empty(),
        "the other group's peer waits"
    );
    assert_eq!(ids(d.take_due(now, 0, Some(&|_| 0))), [2]);
}

#[test]
fn members_of_the_group_come_first_within_the_target() {
    let now = Instant::now();
    let mut d = Dialer::new("near", now);
    for i in 0..DIAL_TARGET as u16 {
        d.learn(info(i, "far"), SEED, false, now);
    }
    d.learn(info(200, "near"), SEED, false, now);
    // the target binds (not the hearsay bucket's burst)
    let connections = DIAL_TARGET - 10;
    assert!(10 < super::limits::BURST as usize);
    let due = ids(d.take_due(now, connections, Some(&|_| 0)));
    assert_eq!(due.len(), DIAL_TARGET - connections);
    assert_eq!(due[0], 200);
}

#[test]
fn one_peer_adds_at_most_its_share() {
    let now = Instant::now();
    let mut d = Dialer::new("a", now);
    let taken = (0..10_000u16)
        .filter(|&i| d.learn(info(i, "a"), source(1), false, now))
        .count();
    assert_eq!(taken, PER_SOURCE);
    // another peer is heard all the same
    assert!(d.learn(info(20_000, "a"), source(2), false, now));
}

#[test]
fn a_full_table_makes_room_from_the_largest_source() {
    let now = Instant::now();
    let mut d = Dialer::new("a", now);
    let mut n = 0u16;
    // many sources fill the table, each to its share
    for s in 0..(MAX_KNOWN / PER_SOURCE) as u8 {
        for _ in 0..PER_SOURCE {
            assert!(d.learn(info(n, "a"), source(s), false, now));
            n += 1;
        }
    }
    assert_eq!(d.known.len(), MAX_KNOWN);
    // a newcomer's word still counts: it takes the place of one of theirs
    assert!(d.learn(info(n, "a"), source(200), false, now));
    assert_eq!(d.known.len(), MAX_KNOWN);
    // but not when it is as large as the largest
    for i in 1..PER_SOURCE as u16 {
        d.learn(info(n + i, "a"), source(200), false, now);
    }
    assert!(d.known.len() <= MAX_KNOWN);
}

#[test]
fn a_source_whose_peers_never_answer_is_not_believed() {
    let mut now = Instant::now();
    let mut d = Dialer::new("a", now);
    let liar = source(9);
    let mut next = 0u16;
    let mut dials = 0;
    for _ in 0..200 {
        while d.learn(info(next, "a"), liar, false, now) {
            next += 1;
        }
        let due = d.take_due(now, 0, None);
        dials += due.len();
        for p in due {
            d.failed(&p.id, now);
        }
        now += Duration::from_secs(1);
    }
    assert!(
        dials <= SOURCE_FAILS as usize + DIAL_TARGET,
        "{dials} dials on a liar's word"
    );
    assert!(!d.learn(info(60_000, "a"), liar, false, now));
    // what honest sources say still counts
    assert!(d.learn(info(60_001, "a"), SEED, false, now));
}

#[test]
fn first_hand_peers_come_before_hearsay() {
    let now = Instant::now();
    let mut d = Dialer::new("a", now);
    for i in 0..DIAL_TARGET as u16 {
        d.learn(info(i, "a"), SEED, false, now);
    }
    let lost = info(500, "a");
    let at = lost.addrs[0];
    d.redial_later(lost, at, now);
    let due = ids(d.take_due(now + REDIAL_AFTER, 1, None));
    assert_eq!(due[0], 500);
}

#[test]
fn a_lost_peers_own_word_is_hearsay() {
    let now = Instant::now();
    let mut d = Dialer::new("a", now);
    let mut lost = info(500, "a");
    // its Hello named addresses other than where it was seen
    lost.addrs = (1..=16u8)
        .map(|i| SocketAddr::from(([192, 0, 2, i], 7000)))
        .collect();
    d.redial_later(lost.clone(), "10.9.9.9:7000".parse().unwrap(), now);
    let due = d.take_due(now + REDIAL_AFTER, 0, None);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].addrs.len(), limits::HEARSAY_ADDRS);
    // seen at one of them: only that one
    lost.addrs.push("10.9.9.9:7000".parse().unwrap());
    let mut d = Dialer::new("a", now);
    d.redial_later(lost, "10.9.9.9:7001".parse().unwrap(), now);
    let due = d.take_due(now + REDIAL_AFTER, 0, None);
    assert_eq!(due[0].addrs, ["10.9.9.9:7000".parse().unwrap()]);
}

#[test]
fn peers_named_by_several_come_first() {
    let now = Instant::now();
    let mut d = Dialer::new("a", now);
    for i in 0..DIAL_TARGET as u16 {
        d.learn(info(i, "a"), source(1), false, now);
    }
    d.learn(info(7, "a"), source(2), false, now);
    let due = ids(d.take_due(now, DIAL_TARGET - 1, None));
    assert_eq!(due, [7]);
}

#[test]
fn a_dial_that_connects_counts_for_its_source() {
    let mut now = Instant::now();
    let mut d = Dialer::new("a", now);
    let mut n = 0u16;
    // a source that told the truth once may be wrong a few times more
    d.learn(info(n, "a"), SEED, false, now);
    let p = d.take_due(now, 0, None).remove(0);
    d.connected(&p.id, now);
    d.forget(&p.id, now);
    let mut failed = 0;
    for _ in 0..100 {
        n += 1;
        if !d.learn(info(n, "a"), SEED, false, now) {
            break;
        }
        for p in d.take_due(now, 0, None) {
            d.failed(&p.id, now);
            d.failed(&p.id, now);
            failed += 1;
        }
        now += Duration::from_secs(1);
    }
    assert_eq!(failed as u32, SOURCE_FAILS + 4);
}

/// A source at its share still gets members of this host's group in,
/// in place of its entries of other groups, never past its share.
#[test]
fn members_of_this_group_displace_other_groups_of_a_full_source() {
    let now = Instant::now();
    let mut d = Dialer::new("near", now);
    for i in 0..PER_SOURCE as u16 {
        assert!(d.learn(info(i, "far"), SEED, false, now));
    }
    assert!(!d.learn(info(1000, "far"), SEED, false, now));
    assert!(d.learn(info(2000, "near"), SEED, false, now));
    assert_eq!(d.known.len(), PER_SOURCE);
    assert!(d.known.values().any(|k| k.info.group == "near"));
    // members only: nothing of another group left to give way
    let mut d = Dialer::new("near", now);
    for i in 0..PER_SOURCE as u16 {
        assert!(d.learn(info(i, "near"), SEED, false, now));
    }
    assert!(!d.learn(info(2000, "near"), SEED, false, now));
}

/// With other groups known, members of this host's group are dialed up
/// to `GROUP_DIAL_TARGET` connections (its election needs them), the
/// others to `DIAL_TARGET`; in a swarm of one group, all to
/// `DIAL_TARGET`. Past the target, the host is no longer meeting them.
#[test]
fn members_are_dialed_past_the_dial_target_when_groups_exist() {
    let now = Instant::now();
    let mut d = Dialer::new("near", now);
    for i in 0..8u16 {
        d.learn(info(i, "near"), source(i as u8), false, now);
        d.learn(info(100 + i, "far"), source(i as u8), false, now);
    }
    // known, not dialed: meeting them only while they would be dialed
    assert!(d.meeting(DIAL_TARGET));
    assert!(!d.meeting(GROUP_DIAL_TARGET));
    let due = ids(d.take_due(now, DIAL_TARGET, Some(&|_| CROSS_PER_GROUP)));
    assert_eq!(due.len(), 8, "{due:?}");
    assert!(due.iter().all(|&i| i < 8), "{due:?}");
    assert!(d.meeting(GROUP_DIAL_TARGET), "dials in flight");

    let mut d = Dialer::new("near", now);
    for i in 0..8u16 {
        d.learn(info(i, "near"), source(i as u8), false, now);
    }
    assert!(d.take_due(now, DIAL_TARGET, None).is_empty());
    assert_eq!(d.take_due(now, DIAL_TARGET - 3, None).len(), 3);
}

/// A host that fetches across groups keeps `CROSS_PER_GROUP`
/// connections with every other group however many it has: remote
/// groups trade only if their bridges meet.
#[test]
fn a_bridge_meets_every_other_group_past_the_dial_targets() {
    let now = Instant::now();
    let mut d = Dialer::new("near", now);
    for g in 0..5u16 {
        for i in 0..4u16 {
            d.learn(
                info(100 * g + i, &format!("far{g}")),
                source(g as u8),
                false,
                now,
            );
        }
    }
    // not fetching across: none of them
    assert!(d.take_due(now, GROUP_DIAL_TARGET, None).is_empty());
    // group far0 has one connection already, far1 two
    let linked = |g: &str| match g {
        "far0" => 1,
        "far1" => 2,
        _ => 0,
    };
    let due = ids(d.take_due(now, GROUP_DIAL_TARGET, Some(&linked)));
    let per = |g: u16| due.iter().filter(|&&i| i / 100 == g).count();
    assert_eq!(
        [per(0), per(1), per(2), per(3), per(4)],
        [1, 0, 2, 2, 2],
        "{due:?}"
    );
    // dials in flight count: nothing more until they end
    assert!(d.take_due(now, GROUP_DIAL_TARGET, Some(&linked)).is_empty());
    // and nothing past the ceiling
    let mut d = Dialer::new("near", now);
    d.learn(info(1, "far"), source(1), false, now);
    assert!(d.take_due(now, CROSS_CEILING, Some(&|_| 0)).is_empty());
}

/// `take_due` skips the table while nothing can be dialed (no token for
/// hearsay, no entry due), but misses nothing: a token, a redial coming
/// due, or a change to the table ends the wait.
#[test]
fn a_host_waiting_for_tokens_dials_as_soon_as_one_comes() {
    // empties the hearsay bucket, as a newcomer's first dials do
    fn drain(d: &mut Dialer, now: Instant) {
        for k in 0..64 {
            if !d.limits.has_token(now) {
                break;
            }
            d.limits.admit(&info(900 + k, "a").addrs, now);
        }
        assert!(!d.limits.has_token(now));
    }
    let t0 = Instant::now();
    let mut d = Dialer::new("a", t0);
    drain(&mut d, t0);
    for i in 0..3u16 {
        assert!(d.learn(info(i, "a"), SEED, false, t0));
    }
    assert!(d.take_due(t0, 0, None).is_empty(), "no token left");
    assert!(
        d.take_due(t0 + Duration::from_millis(100), 0, None)
            .is_empty()
    );
    // a token every 500 ms (RATE)
    let t1 = t0 + Duration::from_millis(501);
    let first = ids(d.take_due(t1, 0, None));
    assert_eq!(first.len(), 1);
    assert!(d.take_due(t1, 0, None).is_empty());
    // a peer that went away is redialled first-hand, without a token
    let gone = info(first[0], "a");
    d.connected(&gone.id, t1);
    d.redial_later(gone.clone(), gone.addrs[0], t1);
    assert!(d.take_due(t1, 0, None).is_empty(), "not due yet");
    let t2 = t1 + REDIAL_AFTER;
    drain(&mut d, t2);
    assert_eq!(ids(d.take_due(t2, 0, None)), [first[0]]);
    // with no entry left to dial, a newly learned one is dialed at once
    let t3 = t2 + Duration::from_secs(60);
    let _ = d.take_due(t3, 0, None);
    assert!(d.take_due(t3, 0, None).is_empty());
    assert!(d.learn(info(500, "a"), SEED, false, t3));
    assert_eq!(ids(d.take_due(t3, 0, None)), [500]);
}

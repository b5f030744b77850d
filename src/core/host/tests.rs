//! The host's policy driven as a driver would, with no network: a joiner
//! from first peer to Done, what a broken or duplicate peer gets, and the
//! rules by which a run ends.

use std::net::SocketAddr;

use super::*;
use crate::wire::{Request, Status, close};

const PIECE: u32 = 1 << 20;

fn manifest(pieces: usize) -> Arc<Manifest> {
    let size = pieces as u64 * u64::from(PIECE);
    let root = crate::manifest::Root::File {
        size,
        meta: crate::manifest::Meta::mode(0o644),
    };
    let hashes = (0..pieces).map(|i| [i as u8 + 1; 32]).collect();
    Arc::new(Manifest::new("img".into(), root, PIECE, hashes))
}

fn cfg(me: u8, is_join: bool) -> HostConfig {
    HostConfig {
        me: [me; 16],
        since: 1,
        group: "g".into(),
        bridges: 1,
        is_join,
        linger: Duration::from_secs(5),
        exit_on_complete: false,
        until_done: None,
        until_copies: None,
        rng_seed: 7,
        max_peers: 512,
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7000))
}

fn up(id: u8, group: &str) -> PeerUp {
    PeerUp {
        info: PeerInfo {
            id: [id; 16],
            group: group.into(),
            addrs: vec![addr(id)],
        },
        addr: addr(id),
        dialed: false,
        since: 0,
    }
}

fn drain(h: &mut Host) -> Vec<Action> {
    std::iter::from_fn(|| h.poll_action()).collect()
}

fn connect(h: &mut Host, now: Instant, key: PeerKey, id: u8) {
    assert_eq!(
        h.admit(now, [id; 16], "g", addr(id), false),
        Admit::Take { replaces: None }
    );
    h.peer_up(now, key, up(id, "g"));
}

#[test]
fn a_joiner_fetches_every_piece_then_finalizes_and_says_done() {
    let n = 6;
    let t = Instant::now();
    let mut h = Host::new(cfg(9, true), manifest(n), bitvec![0; n], true, t);
    connect(&mut h, t, 1, 1);
    let first = drain(&mut h);
    assert!(first.contains(&Action::Send {
        key: 1,
        msg: Message::Peers(vec![].into())
    }));
    h.message(t, 1, Message::Bitfield(BitVec::repeat(true, n)));
    let mut now = t;
    for _ in 0..100 {
        if h.is_complete() {
            break;
        }
        h.schedule(now);
        for a in drain(&mut h) {
            match a {
                Action::Fetch { key, piece } => {
                    assert_eq!(key, 1);
                    assert!(h.fetching(key, piece));
                    h.piece_done(now, key, piece, u64::from(PIECE), Duration::from_millis(5));
                }
                Action::Finalize => h.finalized(),
                _ => {}
            }
        }
        assert!(h.tick(now).is_ok());
        now += Duration::from_millis(100);
    }
    assert!(h.is_complete());
    assert_eq!(h.have_count(), n);
    // the Done queued at the finish, then nothing more to fetch
    h.finalized();
    assert!(drain(&mut h).contains(&Action::Send {
        key: 1,
        msg: Message::Done
    }));
    // a complete joiner lingers while its peer has not finished
    assert!(!h.should_exit(now));
    h.message(now, 1, Message::Done);
    h.tick(now).unwrap();
    assert!(h.should_exit(now + Duration::from_secs(5)));
}

#[test]
fn a_protocol_violation_closes_and_drops_the_peer() {
    let t = Instant::now();
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    connect(&mut h, t, 1, 1);
    drain(&mut h);
    h.message(t, 1, Message::Have(4));
    let acts = drain(&mut h);
    assert!(acts.contains(&Action::Close {
        key: 1,
        code: close::PROTOCOL,
        reason: "protocol violation",
        dropped: true,
    }));
    assert_eq!(h.peer_count(), 0);
    // a seed checks the index too
    let mut s = Host::new(cfg(8, false), manifest(4), bitvec![1; 4], false, t);
    connect(&mut s, t, 1, 1);
    s.message(t, 1, Message::Bitfield(BitVec::repeat(false, 3)));
    assert_eq!(s.peer_count(), 0);
}

#[test]
fn one_connection_per_pair_the_lower_id_dialed() {
    let t = Instant::now();
    // this host (9) and peer 1: the connection 1 dialed is kept
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    assert_eq!(
        h.admit(t, [1; 16], "g", addr(1), false),
        Admit::Take { replaces: None }
    );
    h.peer_up(t, 1, up(1, "g"));
    // the one this host dialed is refused
    assert_eq!(
        h.admit(t, [1; 16], "g", addr(1), true),
        Admit::Refuse("duplicate")
    );
    // another one peer 1 dialed replaces the first
    assert_eq!(
        h.admit(t, [1; 16], "g", addr(1), false),
        Admit::Take { replaces: Some(1) }
    );
    assert_eq!(h.peer_count(), 0);
}

#[test]
fn a_corrupt_piece_bans_its_peer_by_id_and_address() {
    let t = Instant::now();
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    connect(&mut h, t, 1, 1);
    h.message(t, 1, Message::Bitfield(BitVec::repeat(true, 4)));
    h.schedule(t);
    let piece = drain(&mut h)
        .into_iter()
        .find_map(|a| match a {
            Action::Fetch { piece, .. } => Some(piece),
            _ => None,
        })
        .expect("a request");
    h.piece_failed(t, 1, piece, Failure::Corrupt, Some(addr(1)));
    assert!(drain(&mut h).iter().any(|a| matches!(
        a,
        Action::Close { key: 1, code, dropped: false, .. } if *code == close::CORRUPT
    )));
    assert_eq!(h.stats().pieces_corrupt, 1);
    h.drop_peer(t, 1, "closed", true);
    // back under a new id from the same address, or the same id elsewhere
    assert_eq!(
        h.admit(t, [2; 16], "g", addr(1), false),
        Admit::Refuse("not accepted")
    );
    assert_eq!(
        h.admit(t, [1; 16], "g", addr(3), false),
        Admit::Refuse("not accepted")
    );
}

#[test]
fn a_joiner_alone_or_stalled_gives_up() {
    let t = Instant::now();
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    h.tick(t).unwrap();
    let late = t + ALONE_TIMEOUT + Duration::from_secs(1);
    assert_eq!(h.tick(late), Err(Stop::Alone { have: 0, total: 4 }));
    // connected to a peer with nothing: no piece for STALL_TIMEOUT
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    connect(&mut h, t, 1, 1);
    h.message(t, 1, Message::Bitfield(BitVec::repeat(false, 4)));
    assert!(h.tick(t + STALL_TIMEOUT).is_ok());
    assert_eq!(
        h.tick(t + STALL_TIMEOUT + Duration::from_secs(1)),
        Err(Stop::Stalled { have: 0, total: 4 })
    );
}

#[test]
fn serving_refuses_what_it_lacks_and_what_changed() {
    let t = Instant::now();
    let mut have = bitvec![0; 4];
    have.set(2, true);
    let mut h = Host::new(cfg(9, true), manifest(4), have, true, t);
    connect(&mut h, t, 1, 1);
    assert_eq!(h.serve(t, 1, &Request::Manifest), Decision::Manifest);
    assert_eq!(
        h.serve(t, 1, &Request::Piece(0)),
        Decision::Refuse(Status::Missing)
    );
    assert!(matches!(
        h.serve(t, 1, &Request::Piece(2)),
        Decision::Piece {
            piece: 2,
            counted: true,
            remote: false,
            ..
        }
    ));
    assert!(!h.serve_ended(t, 1, 2, true));
    assert!(h.source_changed(2));
    assert!(!h.source_changed(2), "news once");
    assert_eq!(
        h.serve(t, 1, &Request::Piece(2)),
        Decision::Refuse(Status::Changed)
    );
    // a request from a peer no longer in the table
    assert_eq!(
        h.serve(t, 5, &Request::Piece(2)),
        Decision::Refuse(Status::Missing)
    );
}

#[test]
fn peers_of_other_groups_are_announced_for_the_wan_settings() {
    let t = Instant::now();
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    connect(&mut h, t, 1, 1);
    drain(&mut h);
    let far = PeerInfo {
        id: [3; 16],
        group: "other".into(),
        addrs: vec![addr(3)],
    };
    h.message(t, 1, Message::Peers(vec![far].into()));
    assert!(drain(&mut h).contains(&Action::OtherGroup(vec![addr(3)])));
    // and one of this group is not
    let near = PeerInfo {
        id: [4; 16],
        group: "g".into(),
        addrs: vec![addr(4)],
    };
    h.message(t, 1, Message::Peers(vec![near].into()));
    assert!(drain(&mut h).is_empty());
}

#[test]
fn a_full_host_redirects_newcomers_to_its_peers() {
    let t = Instant::now();
    let mut h = Host::new(
        HostConfig {
            max_peers: 2,
            ..cfg(9, false)
        },
        manifest(4),
        bitvec![1; 4],
        false,
        t,
    );
    connect(&mut h, t, 1, 1);
    connect(&mut h, t, 2, 2);
    match h.admit(t, [3; 16], "g", addr(3), false) {
        Admit::Redirect(peers) => {
            let mut ids: Vec<_> = peers.iter().map(|p| p.id[0]).collect();
            ids.sort();
            assert_eq!(ids, [1, 2]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.peer_count(), 2, "not taken");
    // one this host dialed is simply refused; a peer already in the table
    // may still replace its connection
    assert_eq!(
        h.admit(t, [3; 16], "g", addr(3), true),
        Admit::Refuse("full")
    );
    assert_eq!(
        h.admit(t, [1; 16], "g", addr(1), false),
        Admit::Take { replaces: Some(1) }
    );
    // a connection not in the table is served nothing (a redirected one
    // gets its manifest from the driver)
    assert_eq!(
        h.serve(t, 77, &Request::Manifest),
        Decision::Refuse(Status::Missing)
    );
}

/// A host with a lower id is left to dial, as both keep the connection
/// the lower id dialed; but not one named by a full host's redirect (a
/// list before any bitfield): it knows nothing of this host.
#[test]
fn peers_from_a_redirect_are_dialed_at_once() {
    let t = Instant::now();
    let near = |id: u8| PeerInfo {
        id: [id; 16],
        group: "g".into(),
        addrs: vec![addr(id)],
    };
    let dials = |h: &mut Host, now| {
        h.tick(now).unwrap();
        drain(h)
            .into_iter()
            .filter(|a| matches!(a, Action::Dial(_)))
            .count()
    };
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    connect(&mut h, t, 1, 1);
    h.message(t, 1, Message::Bitfield(BitVec::repeat(true, 4)));
    h.message(t, 1, Message::Peers(vec![near(3)].into()));
    assert_eq!(dials(&mut h, t), 0, "deferred: 3 dials 9");
    assert_eq!(dials(&mut h, t + Duration::from_secs(3)), 1);
    let mut h = Host::new(cfg(9, true), manifest(4), bitvec![0; 4], true, t);
    connect(&mut h, t, 1, 1);
    h.message(t, 1, Message::Peers(vec![near(3)].into()));
    assert_eq!(dials(&mut h, t), 1, "redirected: dialed at once");
}

/// The Peers messages in `actions`, by the key they go to.
fn lists(actions: &[Action]) -> Vec<(PeerKey, Vec<PeerInfo>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                key,
                msg: Message::Peers(l),
            } => Some((*key, l.to_vec())),
            _ => None,
        })
        .collect()
}

/// Newcomers are told to the others in one message per batch, not one
/// message each; a newcomer's own list holds its group first, then every
/// other group, within the share a receiver keeps of one source.
#[test]
fn newcomers_are_gossiped_in_batches_and_lists_name_every_group() {
    let t = Instant::now();
    let mut h = Host::new(cfg(200, false), manifest(4), bitvec![1; 4], false, t);
    // 100 of this host's group "g", then 5 hosts of each of 4 other groups
    for id in 1..=100u8 {
        connect(&mut h, t, id.into(), id);
    }
    for (g, far) in ["w", "x", "y", "z"].iter().enumerate() {
        for k in 0..5u8 {
            let id = 101 + 5 * g as u8 + k;
            assert_eq!(
                h.admit(t, [id; 16], far, addr(id), false),
                Admit::Take { replaces: None }
            );
            h.peer_up(t, id.into(), up(id, far));
        }
    }
    let at_once = drain(&mut h);
    // each newcomer got its list, and nobody else heard anything yet
    let sent = lists(&at_once);
    assert_eq!(sent.len(), 120, "one list per newcomer");
    let (_, last_near) = &sent[99];
    assert_eq!(last_near.len(), crate::core::dial::PER_SOURCE);
    let far_groups: Set<String> = last_near
        .iter()
        .filter(|p| p.group != "g")
        .map(|p| p.group.clone())
        .collect();
    assert_eq!(far_groups.len(), 0, "no other group had come yet");
    let (_, last_far) = &sent[119];
    assert!(
        last_far.iter().take(4).all(|p| p.group == "z"),
        "its own group first"
    );
    let mut seen: Vec<&str> = last_far[4..8].iter().map(|p| p.group.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(seen, ["g", "w", "x", "y"], "then every other group once");

    // the batch: one message to every peer, naming the newcomers (at most
    // PER_SOURCE of them; the rest in the next batch)
    let later = t + peers::GOSSIP_EVERY;
    h.tick(later).expect("no stop");
    let batch = lists(&drain(&mut h));
    assert_eq!(batch.len(), 120, "one message per peer");
    assert!(
        batch
            .iter()
            .all(|(_, l)| l.len() == crate::core::dial::PER_SOURCE)
    );
    assert!(h.poll_timeout(later) <= later + peers::GOSSIP_EVERY);
    h.tick(later + peers::GOSSIP_EVERY).expect("no stop");
    let rest = lists(&drain(&mut h));
    assert_eq!(rest.len(), 120);
    assert!(
        rest.iter()
            .all(|(_, l)| l.len() == 120 - crate::core::dial::PER_SOURCE)
    );
    // nothing new: nothing sent
    h.tick(later + 3 * peers::GOSSIP_EVERY).expect("no stop");
    assert!(lists(&drain(&mut h)).is_empty());
}

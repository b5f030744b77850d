//! Datacenter groups. Hosts fetch from their own group; in each group a few
//! hosts, the bridges, also fetch across groups, and only pieces nobody in
//! their group has (see `Download::set_bridge`).
//!
//! Election needs no messages: every host ranks the live members of its
//! group that it knows (itself included) by seniority, the time each says
//! it started (`Hello::since`), and the first `k` are the bridges; ties (the
//! same millisecond) go by `blake3::keyed_hash(salt, id)` with the manifest
//! id as the salt. Hosts that see the same members agree; the best-ranked
//! live host always sees itself first, so a group with a live member
//! always has a bridge. When a bridge leaves or dies its connections close,
//! the others drop it from their view and the next-ranked host takes over.
//!
//! Seniority, not the hash alone: hosts of a group are seldom started at
//! once (an operator's ssh loop starts them seconds apart), and a newcomer
//! that outranked the working bridge would take the role over mid-transfer,
//! each time one arrives; the requests the old bridge had in flight are
//! then paid for twice on the WAN (measured, 3 groups test with joiners
//! started 0.7 s apart: 1.44 x S into each remote group instead of 1.06).
//! With seniority a newcomer outranks a live member only if it started
//! earlier and connected later (slow start-up, a healed partition, a clock
//! behind): rarely, and then a piece may cross twice, since the new bridge
//! does not see the old one's requests in flight.
//!
//! Bridges split the cross-group work by piece index (`BridgeShare::takes`),
//! so two bridges of a group never pull the same piece over the WAN.

/// A host's id as the wire carries it.
pub type MemberId = [u8; 16];

/// A live member of a group as the election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// When it started, ms since the Unix epoch, as it says.
    pub since: u64,
}

/// This host's part of its group's cross-group fetching: it is bridge
/// `rank` (0-based) of `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeShare {
    pub rank: usize,
    pub of: usize,
}

impl BridgeShare {
    /// Whether this bridge is the one that fetches `piece` across groups.
    pub fn takes(&self, piece: usize) -> bool {
        piece % self.of == self.rank
    }
}

/// A group's name as the download core knows it.
pub fn group_tag(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Which of `groups` (tags, sorted) owns `piece`. Each run of k pieces
/// (k groups) has one piece per group, in an order that turns from run to
/// run, so every group owns the same share to one piece and every host
/// that knows the same groups agrees. (Rendezvous hashing, before, gave 40,
/// 49 and 39 of 128 pieces to three groups, and the group with 49 held the
/// others up.) The turn keeps a bridge's share (`BridgeShare::takes`, every
/// n-th piece) from lining up with the stripes.
pub fn stripe_owner(piece: usize, groups: &[u64]) -> u64 {
    let k = groups.len();
    if k == 0 {
        return 0;
    }
    let turn = (mix((piece / k) as u64) % k as u64) as usize;
    groups[(piece % k + turn) % k]
}

/// splitmix64's finaliser: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bridges of a group, best first, out of `members` (duplicates and
/// order do not matter).
pub fn bridges(salt: &[u8; 32], members: &[Member], k: usize) -> Vec<MemberId> {
    let mut ranked: Vec<(u64, [u8; 32], MemberId)> = members
        .iter()
        .map(|m| (m.since, *blake3::keyed_hash(salt, &m.id).as_bytes(), m.id))
        .collect();
    ranked.sort_unstable();
    ranked.dedup();
    ranked.into_iter().take(k).map(|(_, _, id)| id).collect()
}

/// `me`'s share when it knows `others` as the other live members of its
/// group, or `None` when it is not a bridge. `k` is at least 1.
pub fn bridge_share(
    salt: &[u8; 32],
    me: Member,
    others: &[Member],
    k: usize,
) -> Option<BridgeShare> {
    let mut members = others.to_vec();
    members.push(me);
    let chosen = bridges(salt, &members, k.max(1));
    let rank = chosen.iter().position(|id| *id == me.id)?;
    Some(BridgeShare {
        rank,
        of: chosen.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Member `n`, started at `since`.
    fn m(n: u8, since: u64) -> Member {
        Member { id: [n; 16], since }
    }

    fn others(all: &[Member], me: Member) -> Vec<Member> {
        all.iter().filter(|o| o.id != me.id).copied().collect()
    }

    #[test]
    fn one_bridge_per_group_and_everyone_agrees() {
        let salt = [7u8; 32];
        // started together: the hash decides
        let members: Vec<Member> = (0..6).map(|n| m(n, 1000)).collect();
        let shares: Vec<Option<BridgeShare>> = members
            .iter()
            .map(|&me| bridge_share(&salt, me, &others(&members, me), 1))
            .collect();
        let chosen: Vec<usize> = (0..6).filter(|&i| shares[i].is_some()).collect();
        assert_eq!(chosen.len(), 1, "{shares:?}");
        assert_eq!(bridges(&salt, &members, 1), vec![members[chosen[0]].id]);
        assert_eq!(shares[chosen[0]], Some(BridgeShare { rank: 0, of: 1 }));
    }

    #[test]
    fn the_longest_running_member_is_the_bridge() {
        let salt = [3u8; 32];
        let members = [m(1, 5000), m(2, 4000), m(3, 4500)];
        assert_eq!(bridges(&salt, &members, 1), vec![[2; 16]]);
        assert_eq!(bridges(&salt, &members, 2), vec![[2; 16], [3; 16]]);
    }

    #[test]
    fn a_newcomer_never_takes_the_role_from_a_live_bridge() {
        // whatever its hash: try many ids, each arriving after the bridge
        let salt = [5u8; 32];
        let bridge = m(0, 1000);
        for n in 1..=255u8 {
            let newcomer = m(n, 1001 + u64::from(n));
            assert_eq!(bridge_share(&salt, newcomer, &[bridge], 1), None);
            assert_eq!(
                bridge_share(&salt, bridge, &[newcomer], 1),
                Some(BridgeShare { rank: 0, of: 1 })
            );
        }
    }

    #[test]
    fn the_next_ranked_host_takes_over_when_the_bridge_leaves() {
        let salt = [1u8; 32];
        let members: Vec<Member> = (0..5).map(|n| m(n, 1000 + u64::from(n % 2))).collect();
        let first = bridges(&salt, &members, 1)[0];
        let rest: Vec<Member> = members.iter().filter(|o| o.id != first).copied().collect();
        let second = bridges(&salt, &rest, 1)[0];
        assert_ne!(first, second);
        assert_eq!(bridges(&salt, &members, 2), vec![first, second]);
        let me = *rest.iter().find(|o| o.id == second).unwrap();
        assert_eq!(
            bridge_share(&salt, me, &others(&rest, me), 1),
            Some(BridgeShare { rank: 0, of: 1 })
        );
    }

    #[test]
    fn a_host_alone_is_its_groups_bridge() {
        assert_eq!(
            bridge_share(&[0; 32], m(9, 0), &[], 3),
            Some(BridgeShare { rank: 0, of: 1 })
        );
    }

    #[test]
    fn another_salt_breaks_ties_otherwise() {
        // among hosts started in the same millisecond, the role does not
        // always land on the same host for every image
        let members: Vec<Member> = (0..8).map(|n| m(n, 7)).collect();
        let picks: std::collections::HashSet<MemberId> = (0..32u8)
            .map(|s| bridges(&[s; 32], &members, 1)[0])
            .collect();
        assert!(picks.len() > 1);
    }

    proptest! {
        /// With k bridges, every piece is taken by exactly one of them.
        #[test]
        fn shares_partition_the_pieces(
            since in proptest::collection::vec(0u64..4, 1..12),
            k in 1usize..5,
            salt in any::<[u8; 32]>(),
        ) {
            let members: Vec<Member> =
                since.iter().enumerate().map(|(n, &t)| m(n as u8, t)).collect();
            let shares: Vec<BridgeShare> = members
                .iter()
                .filter_map(|&me| bridge_share(&salt, me, &others(&members, me), k))
                .collect();
            prop_assert_eq!(shares.len(), k.min(members.len()));
            for piece in 0..50 {
                prop_assert_eq!(shares.iter().filter(|s| s.takes(piece)).count(), 1);
            }
        }

        /// Every group owns the same number of pieces to one, and so does
        /// every group within each bridge's share (no lining up).
        #[test]
        fn stripes_are_even(
            tags in proptest::collection::btree_set(any::<u64>(), 1..6),
            n in 0usize..300,
            bridges in 1usize..4,
        ) {
            let groups: Vec<u64> = tags.into_iter().collect();
            let count = |share: &dyn Fn(usize) -> bool, g: u64| {
                (0..n).filter(|&i| share(i) && stripe_owner(i, &groups) == g).count()
            };
            let all = |_: usize| true;
            let counts: Vec<usize> = groups.iter().map(|&g| count(&all, g)).collect();
            prop_assert_eq!(counts.iter().sum::<usize>(), n);
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "{:?}", counts);
            if groups.len() > 1 && n >= 60 * bridges * groups.len() / 2 {
                for rank in 0..bridges {
                    let mine = |i: usize| BridgeShare { rank, of: bridges }.takes(i);
                    for &g in &groups {
                        let c = count(&mine, g);
                        let fair = n / bridges / groups.len();
                        prop_assert!(c * 3 >= fair, "rank {} group {}: {} of ~{}", rank, g, c, fair);
                    }
                }
            }
        }
    }
}

//! Datacenter groups. Hosts fetch from their own group; in each group a few
//! hosts, the bridges, also fetch across groups, and only pieces nobody in
//! their group has (see `Download::set_bridge`).
//!
//! Election needs no messages: every host ranks the live members of its
//! group that it knows (itself included) by `blake3::keyed_hash(salt, id)`,
//! with the manifest id as the salt, and the first `k` are the bridges. Hosts
//! that see the same members agree; the best-ranked live host always sees
//! itself first, so a group with a live member always has a bridge. When a
//! bridge leaves or dies its connections close, the others drop it from
//! their view and the next-ranked host takes over.
//!
//! Bridges split the cross-group work by piece index (`BridgeShare::takes`),
//! so two bridges of a group never pull the same piece over the WAN.

/// A host's id as the wire carries it.
pub type MemberId = [u8; 16];

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

/// The bridges of a group, best first, out of `members` (duplicates and
/// order do not matter).
pub fn bridges(salt: &[u8; 32], members: &[MemberId], k: usize) -> Vec<MemberId> {
    let mut ranked: Vec<([u8; 32], MemberId)> = members
        .iter()
        .map(|id| (*blake3::keyed_hash(salt, id).as_bytes(), *id))
        .collect();
    ranked.sort_unstable();
    ranked.dedup();
    ranked.into_iter().take(k).map(|(_, id)| id).collect()
}

/// `me`'s share when it knows `others` as the other live members of its
/// group, or `None` when it is not a bridge. `k` is at least 1.
pub fn bridge_share(
    salt: &[u8; 32],
    me: &MemberId,
    others: &[MemberId],
    k: usize,
) -> Option<BridgeShare> {
    let mut members = others.to_vec();
    members.push(*me);
    let chosen = bridges(salt, &members, k.max(1));
    let rank = chosen.iter().position(|id| id == me)?;
    Some(BridgeShare {
        rank,
        of: chosen.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> MemberId {
        [n; 16]
    }

    #[test]
    fn one_bridge_per_group_and_everyone_agrees() {
        let salt = [7u8; 32];
        let members: Vec<MemberId> = (0..6).map(id).collect();
        let shares: Vec<Option<BridgeShare>> = members
            .iter()
            .map(|me| {
                let others: Vec<_> = members.iter().filter(|m| *m != me).copied().collect();
                bridge_share(&salt, me, &others, 1)
            })
            .collect();
        let chosen: Vec<usize> = (0..6).filter(|&i| shares[i].is_some()).collect();
        assert_eq!(chosen.len(), 1, "{shares:?}");
        assert_eq!(bridges(&salt, &members, 1), vec![members[chosen[0]]]);
        assert_eq!(shares[chosen[0]], Some(BridgeShare { rank: 0, of: 1 }));
    }

    #[test]
    fn the_next_ranked_host_takes_over_when_the_bridge_leaves() {
        let salt = [1u8; 32];
        let members: Vec<MemberId> = (0..5).map(id).collect();
        let first = bridges(&salt, &members, 1)[0];
        let rest: Vec<MemberId> = members.iter().filter(|m| **m != first).copied().collect();
        let second = bridges(&salt, &rest, 1)[0];
        assert_ne!(first, second);
        assert_eq!(bridges(&salt, &members, 2), vec![first, second]);
        let others: Vec<_> = rest.iter().filter(|m| **m != second).copied().collect();
        assert_eq!(
            bridge_share(&salt, &second, &others, 1),
            Some(BridgeShare { rank: 0, of: 1 })
        );
    }

    #[test]
    fn a_host_alone_is_its_groups_bridge() {
        assert_eq!(
            bridge_share(&[0; 32], &id(9), &[], 3),
            Some(BridgeShare { rank: 0, of: 1 })
        );
    }

    #[test]
    fn another_salt_picks_other_bridges() {
        // the role does not always land on the same host for every image
        let members: Vec<MemberId> = (0..8).map(id).collect();
        let picks: std::collections::HashSet<MemberId> = (0..32u8)
            .map(|s| bridges(&[s; 32], &members, 1)[0])
            .collect();
        assert!(picks.len() > 1);
    }

    proptest! {
        /// With k bridges, every piece is taken by exactly one of them.
        #[test]
        fn shares_partition_the_pieces(n in 1usize..12, k in 1usize..5, salt in any::<[u8; 32]>()) {
            let members: Vec<MemberId> = (0..n as u8).map(id).collect();
            let shares: Vec<BridgeShare> = members
                .iter()
                .filter_map(|me| {
                    let others: Vec<_> = members.iter().filter(|m| *m != me).copied().collect();
                    bridge_share(&salt, me, &others, k)
                })
                .collect();
            prop_assert_eq!(shares.len(), k.min(n));
            for piece in 0..50 {
                prop_assert_eq!(shares.iter().filter(|s| s.takes(piece)).count(), 1);
            }
        }
    }
}

//! How full a subnet is across the mesh: its addresses, how many any endpoint holds, how many
//! are free, and each owner's share. Pure: the ring and the addresses in use come in.

use std::collections::BTreeSet;

use super::{
    allocator::{hosts, intersect},
    ring::{Peer, Ring},
};
use crate::net::policy::Subnet;

/// One owner's part of a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub owner: Peer,
    /// Addresses of the subnet it owns (network and broadcast addresses left out).
    pub owned: u64,
    /// How many of those are in use.
    pub used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub subnet: Subnet,
    /// Addresses a container may get (all but the network and broadcast addresses).
    pub addresses: u64,
    pub used: u64,
    pub free: u64,
    /// Owners in the ring's order of first range; the part nobody has claimed yet is in no
    /// share (it is free: the first allocation claims it).
    pub shares: Vec<Share>,
}

fn count_in(in_use: &BTreeSet<u32>, (lo, hi): (u32, u64)) -> u64 {
    in_use
        .range(lo..)
        .take_while(|ip| u64::from(**ip) < hi)
        .count() as u64
}

/// `subnet` as the ring and `in_use` (every address an endpoint in the mesh holds or this
/// host has handed out) show it.
pub fn usage(ring: &Ring, subnet: &Subnet, in_use: &BTreeSet<u32>) -> Usage {
    let wanted = hosts(subnet);
    let addresses = wanted.1 - u64::from(wanted.0);
    let used = count_in(in_use, wanted);
    let mut shares: Vec<Share> = Vec::new();
    for owner in ring.owners() {
        let parts: Vec<(u32, u64)> = ring
            .ranges_of(owner)
            .into_iter()
            .filter_map(|range| intersect(range, wanted))
            .collect();
        if parts.is_empty() {
            continue;
        }
        shares.push(Share {
            owner: owner.clone(),
            owned: parts.iter().map(|(lo, hi)| hi - u64::from(*lo)).sum(),
            used: parts.iter().map(|part| count_in(in_use, *part)).sum(),
        });
    }
    Usage {
        subnet: *subnet,
        addresses,
        used,
        free: addresses - used,
        shares,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::ipam::allocator::span;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn a_subnet_split_between_two_owners_counts_each_ones_share() {
        let range = subnet("10.32.0.0/24");
        let (lo, hi) = span(&range);
        let mut ring = Ring::new(lo, hi);
        ring.claim("a", 1);
        // a gives b the upper half, with 128 free.
        assert!(ring.donate("a", "b", ip("10.32.0.128"), hi, 128));
        let in_use = BTreeSet::from([ip("10.32.0.1"), ip("10.32.0.2"), ip("10.32.0.200")]);
        let u = usage(&ring, &range, &in_use);
        assert_eq!((u.addresses, u.used, u.free), (254, 3, 251));
        assert_eq!(
            u.shares,
            [
                Share {
                    owner: "a".into(),
                    owned: 127,
                    used: 2
                },
                Share {
                    owner: "b".into(),
                    owned: 127,
                    used: 1
                },
            ]
        );
        // A smaller subnet inside: only its own addresses count.
        let inner = usage(&ring, &subnet("10.32.0.192/26"), &in_use);
        assert_eq!((inner.addresses, inner.used, inner.free), (62, 1, 61));
        assert_eq!(inner.shares.len(), 1);
        assert_eq!(inner.shares[0].owner, "b");
    }

    #[test]
    fn an_unclaimed_range_is_all_free_and_owned_by_nobody() {
        let range = subnet("10.32.0.0/28");
        let (lo, hi) = span(&range);
        let ring = Ring::new(lo, hi);
        let u = usage(&ring, &range, &BTreeSet::from([ip("10.32.0.5")]));
        assert_eq!((u.addresses, u.used, u.free), (14, 1, 13));
        assert!(u.shares.is_empty());
    }
}

//! Handing out addresses from what this peer owns, and choosing what to give a peer that
//! asks for space. Pure: the ring and the addresses in use come in, a choice goes out.

use std::{collections::BTreeSet, net::Ipv4Addr};

use super::ring::Ring;
use crate::net::policy::Subnet;

/// `subnet`'s addresses as `lo .. hi`.
pub fn span(subnet: &Subnet) -> (u32, u64) {
    let lo = u32::from(subnet.network);
    (
        lo,
        u64::from(lo) + (1u64 << (32 - u32::from(subnet.prefix))),
    )
}

/// The addresses of `subnet` a container may get: all but the network and broadcast
/// addresses (a /31 and a /32 have neither).
pub fn hosts(subnet: &Subnet) -> (u32, u64) {
    let (lo, hi) = span(subnet);
    if subnet.prefix >= 31 {
        (lo, hi)
    } else {
        (lo + 1, hi - 1)
    }
}

/// The addresses two spans share, if any.
pub fn intersect(a: (u32, u64), b: (u32, u64)) -> Option<(u32, u64)> {
    let lo = a.0.max(b.0);
    let hi = a.1.min(b.1);
    (u64::from(lo) < hi).then_some((lo, hi))
}

/// The lowest address of `subnet` that `me` owns and that is not `used` (allocated here, or
/// held by any endpoint the mesh knows of).
pub fn next_free(ring: &Ring, me: &str, subnet: &Subnet, used: &BTreeSet<u32>) -> Option<Ipv4Addr> {
    let wanted = hosts(subnet);
    for range in ring.ranges_of(me) {
        let Some((lo, hi)) = intersect(range, wanted) else {
            continue;
        };
        let mut candidate = u64::from(lo);
        for taken in used.range(lo..) {
            let taken = u64::from(*taken);
            if taken >= hi || taken > candidate {
                break;
            }
            candidate = taken + 1;
        }
        if candidate < hi {
            // Below hi, which fits in u32 + 1: a u32.
            return Some(Ipv4Addr::from(candidate as u32));
        }
    }
    None
}

/// How many addresses of `subnet` `me` could still hand out.
pub fn free_count(ring: &Ring, me: &str, subnet: &Subnet, used: &BTreeSet<u32>) -> u64 {
    let wanted = hosts(subnet);
    ring.ranges_of(me)
        .into_iter()
        .filter_map(|range| intersect(range, wanted))
        .map(|(lo, hi)| {
            let taken = used.range(lo..).take_while(|t| u64::from(**t) < hi).count();
            hi - u64::from(lo) - taken as u64
        })
        .sum()
}

/// What `me` gives a peer that asks for space in `subnet`: the upper half of its largest run
/// of unused addresses there, inside one of its ranges (a donation moves one entry's span), so
/// the donor keeps the lower part, where its own allocations are. None if it has nothing free
/// there. The run may hold the subnet's network or broadcast address: ownership covers every
/// address, allocation skips those.
pub fn donation(
    ring: &Ring,
    me: &str,
    subnet: &Subnet,
    used: &BTreeSet<u32>,
) -> Option<(u32, u64)> {
    let wanted = span(subnet);
    let mut best: Option<(u32, u64)> = None;
    for entry_span in ring.spans_of(me) {
        let Some((lo, hi)) = intersect(entry_span, wanted) else {
            continue;
        };
        let mut run_start = u64::from(lo);
        let boundaries = used
            .range(lo..)
            .map(|t| u64::from(*t))
            .take_while(|t| *t < hi)
            .chain([hi]);
        for stop in boundaries {
            if stop > run_start {
                let size = stop - run_start;
                if best.is_none_or(|(b_lo, b_hi)| b_hi - u64::from(b_lo) < size) {
                    best = Some((run_start as u32, stop));
                }
            }
            run_start = stop + 1;
        }
    }
    let (lo, hi) = best?;
    let size = hi - u64::from(lo);
    let mid = u64::from(lo) + size / 2;
    Some((mid as u32, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    fn ring_of(owner: &str, subnet: &str) -> Ring {
        let (lo, hi) = span(&s(subnet));
        let mut ring = Ring::new(lo, hi);
        ring.claim(owner, 1);
        ring
    }

    fn ip(text: &str) -> u32 {
        u32::from(text.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn the_network_and_broadcast_addresses_are_never_handed_out() {
        let ring = ring_of("a", "10.32.0.0/12");
        let net = s("10.32.5.0/24");
        let mut used = BTreeSet::new();
        let first = next_free(&ring, "a", &net, &used).unwrap();
        assert_eq!(first, "10.32.5.1".parse::<Ipv4Addr>().unwrap());
        used.extend((1..=253).map(|i| ip("10.32.5.0") + i));
        assert_eq!(
            next_free(&ring, "a", &net, &used),
            Some("10.32.5.254".parse().unwrap())
        );
        used.insert(ip("10.32.5.254"));
        assert_eq!(next_free(&ring, "a", &net, &used), None, "the /24 is full");
        assert_eq!(free_count(&ring, "a", &net, &used), 0);
        // In the whole range, 10.32.5.0 is a host address like any other.
        let whole = s("10.32.0.0/12");
        used.insert(ip("10.32.0.1"));
        assert_eq!(
            next_free(&ring, "a", &whole, &used),
            Some("10.32.0.2".parse().unwrap())
        );
    }

    #[test]
    fn only_what_the_peer_owns_is_handed_out() {
        let mut ring = ring_of("a", "10.32.0.0/28");
        let lo = ip("10.32.0.8");
        assert!(ring.donate("a", "b", lo, u64::from(lo) + 8, 8));
        let net = s("10.32.0.0/28");
        let none = BTreeSet::new();
        assert_eq!(free_count(&ring, "a", &net, &none), 7, ".1 to .7");
        assert_eq!(free_count(&ring, "b", &net, &none), 7, ".8 to .14");
        assert_eq!(
            next_free(&ring, "b", &net, &none),
            Some("10.32.0.8".parse().unwrap())
        );
    }

    #[test]
    fn a_donation_is_the_upper_half_of_the_largest_unused_run() {
        let ring = ring_of("a", "10.32.0.0/24");
        let used = BTreeSet::from([ip("10.32.0.1"), ip("10.32.0.2"), ip("10.32.0.200")]);
        let (lo, hi) = donation(&ring, "a", &s("10.32.0.0/24"), &used).unwrap();
        // Runs: .0, .3-.199 (197 addresses), .201-.255; half of the middle one.
        assert_eq!((lo, hi), (ip("10.32.0.101"), u64::from(ip("10.32.0.200"))));
        assert!(
            donation(&ring, "b", &s("10.32.0.0/24"), &used).is_none(),
            "b owns nothing to give"
        );
    }
}

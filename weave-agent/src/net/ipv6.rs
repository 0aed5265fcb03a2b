//! An endpoint's IPv6 map entries (layouts in `weave_common::ipv6`): its link-local address,
//! which the kernel derives from its MAC, and its IPv6 address if it was given one, both on
//! its link. Pure, so the local and remote entries are tested without a kernel.

use std::collections::BTreeMap;

use weave_common::{
    endpoint::{ENDPOINT_EXPOSED, ENDPOINT_SERVICE, Endpoint, ipv4_octets},
    ipv6::{Endpoint6, Ipv6Key, ipv4_link, link_local, network},
};

use super::addressing::Cidr6;

/// The entries of the endpoint whose IPv4 map entry is `ep`, with IPv6 address `ipv6`. An
/// exposed host address or the agent's service has none: IPv6 is between containers.
pub fn entries(ep: &Endpoint, ipv6: Option<&Cidr6>) -> Vec<(Ipv6Key, Endpoint6)> {
    if ep.flags & (ENDPOINT_EXPOSED | ENDPOINT_SERVICE) != 0 {
        return Vec::new();
    }
    let (link, link_prefix) = match ipv6 {
        Some(cidr) => (network(cidr.ip.octets(), cidr.prefix), cidr.prefix),
        None => ipv4_link(ipv4_octets(ep.subnet), ep.prefix_len),
    };
    let entry = Endpoint6 {
        mac: ep.mac,
        link_prefix,
        flags: ep.flags,
        ifindex: ep.ifindex,
        peer: ep.peer,
        link,
    };
    let mut out = vec![(link_local(ep.mac), entry)];
    if let Some(cidr) = ipv6 {
        out.push((cidr.ip.octets(), entry));
    }
    out
}

/// The entries of a container attached by the IPv6 address `cidr` alone: that address and
/// its link-local one, with the MAC derived from `cidr`, on `cidr`'s link. `flags`, `ifindex`
/// and `peer` as in [`Endpoint6`] (local: `ENDPOINT_LOCAL` and its host veth; remote: 0, 0
/// and the peer's underlay address).
pub fn only_entries(cidr: &Cidr6, flags: u8, ifindex: u32, peer: u32) -> Vec<(Ipv6Key, Endpoint6)> {
    let entry = Endpoint6 {
        mac: cidr.mac(),
        link_prefix: cidr.prefix,
        flags,
        ifindex,
        peer,
        link: network(cidr.ip.octets(), cidr.prefix),
    };
    vec![(link_local(entry.mac), entry), (cidr.ip.octets(), entry)]
}

/// The IPv6 map of a set of endpoints: each one's IPv4 entry with its IPv6 address.
pub fn map_of<'a>(
    endpoints: impl IntoIterator<Item = (&'a Endpoint, Option<&'a Cidr6>)>,
) -> BTreeMap<Ipv6Key, Endpoint6> {
    endpoints
        .into_iter()
        .flat_map(|(ep, ipv6)| entries(ep, ipv6))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use weave_common::endpoint::ENDPOINT_LOCAL;

    use super::*;
    use crate::net::addressing::Cidr;

    fn v4(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn an_endpoint_has_its_link_local_address_and_its_ipv6_one_on_one_link() {
        let ep = v4("10.40.1.10/24").local_endpoint(7);
        let cidr: Cidr6 = "fd00:1::10/64".parse().unwrap();
        let got = entries(&ep, Some(&cidr));
        assert_eq!(got.len(), 2);
        let ll: Ipv6Addr = "fe80::57:aff:fe28:10a".parse().unwrap();
        assert_eq!(got[0].0, ll.octets());
        assert_eq!(got[1].0, cidr.ip.octets());
        for (_, e) in &got {
            assert_eq!(e.link, "fd00:1::".parse::<Ipv6Addr>().unwrap().octets());
            assert_eq!(e.link_prefix, 64);
            assert_eq!((e.ifindex, e.flags, e.mac), (7, ENDPOINT_LOCAL, ep.mac));
        }
    }

    #[test]
    fn without_ipv6_the_link_local_address_is_on_the_ipv4_subnet() {
        let a = v4("10.40.1.10/24")
            .remote_endpoint([2, 0x57, 10, 40, 1, 10], Ipv4Addr::new(192, 168, 56, 102));
        let b = v4("10.40.1.20/24").local_endpoint(3);
        let c = v4("10.40.2.10/24").local_endpoint(4);
        let map = map_of([(&a, None), (&b, None), (&c, None)]);
        assert_eq!(map.len(), 3);
        let ll = |ep: &Endpoint| map[&link_local(ep.mac)];
        assert!(ll(&a).same_link(&ll(&b)));
        assert!(!ll(&a).same_link(&ll(&c)));
        assert_eq!(ll(&a).peer, a.peer);
    }

    #[test]
    fn an_ipv6_only_container_has_its_address_and_a_link_local_one_from_its_mac() {
        let cidr: Cidr6 = "fd00:1::10/64".parse().unwrap();
        let got = only_entries(&cidr, ENDPOINT_LOCAL, 9, 0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, link_local(cidr.mac()));
        assert_eq!(got[1].0, cidr.ip.octets());
        assert_eq!(got[1].1.mac, cidr.mac());
        assert_eq!(
            got[1].1.link,
            "fd00:1::".parse::<Ipv6Addr>().unwrap().octets()
        );
        // Same link as a dual-stack container of that IPv6 subnet.
        let other: Cidr6 = "fd00:1::20/64".parse().unwrap();
        let dual = entries(&v4("10.40.1.20/24").local_endpoint(3), Some(&other));
        assert!(got[1].1.same_link(&dual[1].1));
    }

    #[test]
    fn exposed_addresses_and_the_service_have_no_ipv6() {
        let mut ep = v4("10.40.1.1/24").local_endpoint(3);
        ep.flags |= ENDPOINT_EXPOSED;
        assert!(entries(&ep, None).is_empty());
    }
}

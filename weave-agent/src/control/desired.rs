//! What the live view of the mesh asks the maps to hold: remote endpoints and peers, and the
//! addresses claimed twice. Pure, like the plan built from it (`reconcile`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use weave_common::{
    endpoint::{ENDPOINT_EXPOSED, Endpoint},
    ipv6::{Endpoint6, Ipv6Key},
};

use crate::{
    mesh::gossip::PeerView,
    net::{addressing::parse_mac, ipv6, names::EXPOSED_LABEL},
};

/// What the maps should hold for remote endpoints and peers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub endpoints: BTreeMap<Ipv4Addr, Endpoint>,
    /// The IPv6 addresses of those endpoints, link-local ones included (`net::ipv6`).
    pub endpoints6: BTreeMap<Ipv6Key, Endpoint6>,
    pub peers: BTreeSet<Ipv4Addr>,
    /// Addresses claimed by more than one host, as human-readable lines.
    pub conflicts: Vec<String>,
}

/// Remote endpoints and peers from the live peers' published state. An address also used here
/// stays local; one claimed by two peers goes to the peer with the smaller name, and both
/// cases are reported as conflicts. The endpoints of a `refused` peer (one of a mesh that
/// claimed the address range apart, so it hands out the very addresses this mesh does) are
/// left out: it stays a peer of the underlay, but none of its addresses is reached.
pub fn desired(
    peers: &[PeerView],
    local: &BTreeSet<Ipv4Addr>,
    refused: &BTreeSet<String>,
) -> Desired {
    let mut out = Desired::default();
    let mut owner: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    let mut ipv6_of = BTreeMap::new();
    for peer in peers.iter().filter(|p| p.alive) {
        let IpAddr::V4(underlay) = peer.address.ip() else {
            continue;
        };
        out.peers.insert(underlay);
        if refused.contains(&peer.name) {
            continue;
        }
        for ep in &peer.endpoints {
            let ip = ep.cidr.ip;
            let Some(mac) = parse_mac(&ep.mac) else {
                continue;
            };
            if local.contains(&ip) {
                out.conflicts.push(format!(
                    "{ip} is attached here and also on peer {}",
                    peer.name
                ));
                continue;
            }
            if let Some(other) = owner.get(&ip) {
                out.conflicts.push(format!(
                    "{ip} is claimed by peers {other} and {}",
                    peer.name
                ));
                if *other <= peer.name.as_str() {
                    continue;
                }
            }
            owner.insert(ip, &peer.name);
            match peer.ipv6.get(&ip) {
                Some(cidr) => ipv6_of.insert(ip, *cidr),
                None => ipv6_of.remove(&ip),
            };
            let mut entry = ep.cidr.remote_endpoint(mac, underlay);
            if ep.container == EXPOSED_LABEL {
                entry.flags |= ENDPOINT_EXPOSED;
            }
            out.endpoints.insert(ip, entry);
        }
    }
    out.endpoints6 = ipv6::map_of(out.endpoints.iter().map(|(ip, ep)| (ep, ipv6_of.get(ip))));
    for peer in peers
        .iter()
        .filter(|p| p.alive && !refused.contains(&p.name))
    {
        let IpAddr::V4(underlay) = peer.address.ip() else {
            continue;
        };
        for cidr in &peer.ipv6_only {
            let peer = weave_common::endpoint::ipv4_key(underlay.octets());
            for (key, entry) in ipv6::only_entries(cidr, 0, 0, peer) {
                // An address a dual-stack endpoint holds keeps its entry.
                out.endpoints6.entry(key).or_insert(entry);
            }
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::SocketAddr;

    use weave_common::GOSSIP_PORT;

    use super::*;
    use crate::{
        mesh::keys::PublishedEndpoint,
        net::addressing::{Cidr, format_mac},
    };

    /// A peer at underlay `ip` publishing endpoints `eps` (CIDRs).
    pub(in crate::control) fn peer(name: &str, ip: [u8; 4], alive: bool, eps: &[&str]) -> PeerView {
        PeerView {
            seal_key: None,
            trusted: None,
            exposed_routes: BTreeMap::new(),
            ring: None,
            wants: BTreeMap::new(),
            names: BTreeMap::new(),
            ipv6: BTreeMap::new(),
            ipv6_only: Vec::new(),
            name: name.to_owned(),
            nickname: name.to_owned(),
            address: SocketAddr::from((ip, GOSSIP_PORT)),
            generation: 1,
            alive,
            endpoints: eps
                .iter()
                .map(|e| {
                    let cidr: Cidr = e.parse().unwrap();
                    PublishedEndpoint {
                        cidr,
                        mac: format_mac(&cidr.mac()),
                        container: "c".into(),
                    }
                })
                .collect(),
            rules: Vec::new(),
            links: None,
        }
    }

    #[test]
    fn live_peers_endpoints_become_remote_entries() {
        let peers = [
            peer("b", [10, 0, 0, 2], true, &["192.168.1.20/24"]),
            peer("c", [10, 0, 0, 3], false, &["192.168.1.30/24"]),
        ];
        let d = desired(&peers, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(d.peers, BTreeSet::from([Ipv4Addr::new(10, 0, 0, 2)]));
        assert_eq!(
            d.endpoints.len(),
            1,
            "dead peer's endpoints must be withdrawn"
        );
        let ep = d.endpoints[&Ipv4Addr::new(192, 168, 1, 20)];
        assert!(!ep.is_local());
        assert_eq!(ep.peer, weave_common::endpoint::ipv4_key([10, 0, 0, 2]));
        assert!(d.conflicts.is_empty());
    }

    #[test]
    fn conflicts_are_reported_and_resolved_deterministically() {
        let peers = [
            peer("z", [10, 0, 0, 9], true, &["192.168.1.20/24"]),
            peer(
                "b",
                [10, 0, 0, 2],
                true,
                &["192.168.1.20/24", "192.168.1.10/24"],
            ),
        ];
        let local = BTreeSet::from([Ipv4Addr::new(192, 168, 1, 10)]);
        let d = desired(&peers, &local, &BTreeSet::new());
        assert_eq!(
            d.endpoints[&Ipv4Addr::new(192, 168, 1, 20)].peer,
            weave_common::endpoint::ipv4_key([10, 0, 0, 2])
        );
        assert!(!d.endpoints.contains_key(&Ipv4Addr::new(192, 168, 1, 10)));
        assert_eq!(d.conflicts.len(), 2, "{:?}", d.conflicts);
    }

    #[test]
    fn a_refused_peers_addresses_are_not_reached() {
        let peers = [
            peer("apart", [10, 0, 0, 2], true, &["10.32.0.1/12"]),
            peer("ours", [10, 0, 0, 3], true, &["10.32.0.2/12"]),
        ];
        let d = desired(
            &peers,
            &BTreeSet::new(),
            &BTreeSet::from(["apart".to_owned()]),
        );
        assert_eq!(
            d.endpoints.keys().copied().collect::<Vec<_>>(),
            [Ipv4Addr::new(10, 32, 0, 2)]
        );
        assert_eq!(
            d.peers.len(),
            2,
            "a refused peer is still a peer of the underlay"
        );
        assert!(d.conflicts.is_empty(), "{:?}", d.conflicts);
    }
}

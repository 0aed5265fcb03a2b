//! The gossip key codec: what each agent writes under its own keys, and how a reader turns
//! a peer's keys back into endpoints and rules. Each agent writes only its own keys:
//! `nickname`, one `ep:<ip>` per local endpoint with value `<prefix> <mac> <container>`, and
//! one `rule:<a>,<b>` per isolation rule it knows (see [`crate::net::policy`]), and one
//! `via:<ip>` per exposed address, whose value lists the networks (comma-separated CIDRs, maybe
//! none) the exposed subnet's containers reach through it; `ipam:ring`, its view of who owns
//! which addresses (`crate::ipam::ring`, as JSON), and one `ipam:want:<subnet>` while it needs
//! space there, whose value changes with each new request; one `dns:<ip>` per address this
//! host gives names to, whose value is the full names, space-separated; one `ep6:<ip>` per
//! local endpoint with an IPv6 address, whose value is that address as a CIDR; one
//! `ep6only:<ipv6>` per container attached by an IPv6 address alone, whose value is that
//! address as a CIDR (its MAC follows from it).

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Result, bail};
use chitchat::NodeState;
use serde::{Deserialize, Serialize};

use crate::net::{
    addressing::{Cidr, Cidr6, format_mac, parse_mac},
    policy::{self, Rule, Subnet},
};

pub(super) const ENDPOINT_PREFIX: &str = "ep:";
pub(super) const NICKNAME_KEY: &str = "nickname";
pub(super) const VIA_PREFIX: &str = "via:";
pub(super) const IPAM_RING_KEY: &str = "ipam:ring";
pub(super) const IPAM_WANT_PREFIX: &str = "ipam:want:";
pub(super) const DNS_PREFIX: &str = "dns:";
pub(super) const IPV6_PREFIX: &str = "ep6:";

/// The gossip key and value giving the endpoint published as `ip` its IPv6 address.
pub fn ipv6_key_value(ip: Ipv4Addr, cidr: &Cidr6) -> (String, String) {
    (ipv6_key(ip), cidr.to_string())
}

pub fn ipv6_key(ip: Ipv4Addr) -> String {
    format!("{IPV6_PREFIX}{ip}")
}

pub(super) const IPV6_ONLY_PREFIX: &str = "ep6only:";

/// The gossip key and value of a container attached by the IPv6 address `cidr` alone.
pub fn ipv6_only_key_value(cidr: &Cidr6) -> (String, String) {
    (ipv6_only_key(cidr.ip), cidr.to_string())
}

pub fn ipv6_only_key(ip: std::net::Ipv6Addr) -> String {
    format!("{IPV6_ONLY_PREFIX}{ip}")
}

/// A peer's containers attached by an IPv6 address alone; an entry whose key and value name
/// different addresses, or malformed, is skipped.
pub(super) fn published_ipv6_only(state: &NodeState) -> Vec<Cidr6> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let ip: std::net::Ipv6Addr = key.strip_prefix(IPV6_ONLY_PREFIX)?.parse().ok()?;
            let cidr: Cidr6 = value.parse().ok()?;
            (cidr.ip == ip).then_some(cidr)
        })
        .collect()
}

/// The IPv6 address of each of a peer's endpoints that has one; malformed entries are
/// skipped.
pub(super) fn published_ipv6(state: &NodeState) -> BTreeMap<Ipv4Addr, Cidr6> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let ip = key.strip_prefix(IPV6_PREFIX)?.parse().ok()?;
            Some((ip, value.parse().ok()?))
        })
        .collect()
}

/// The gossip key and value naming `ip` (the names already full and checked).
pub fn names_key_value(ip: Ipv4Addr, names: &[String]) -> (String, String) {
    (names_key(ip), names.join(" "))
}

pub fn names_key(ip: Ipv4Addr) -> String {
    format!("{DNS_PREFIX}{ip}")
}

/// The names a peer gives to addresses; malformed entries are skipped.
pub(super) fn published_names(state: &NodeState) -> BTreeMap<Ipv4Addr, Vec<String>> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let ip = key.strip_prefix(DNS_PREFIX)?.parse().ok()?;
            let names: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
            (!names.is_empty()).then_some((ip, names))
        })
        .collect()
}

/// The key under which a peer asks for space in `subnet`.
pub fn want_key(subnet: &Subnet) -> String {
    format!("{IPAM_WANT_PREFIX}{subnet}")
}

/// What a peer asks for space in: subnet and request id; malformed entries are skipped.
pub(super) fn published_wants(state: &NodeState) -> BTreeMap<Subnet, String> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let subnet = key.strip_prefix(IPAM_WANT_PREFIX)?.parse().ok()?;
            Some((subnet, value.to_owned()))
        })
        .collect()
}

/// An endpoint published by some peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedEndpoint {
    pub cidr: Cidr,
    pub mac: String,
    pub container: String,
}

/// The gossip key and value announcing a local endpoint.
/// `mac`: the MAC of the holder's interface (derived from its first address: a container's
/// later addresses share it).
pub fn endpoint_key_value(cidr: &Cidr, mac: &[u8; 6], container: &str) -> (String, String) {
    let key = endpoint_key(cidr.ip);
    let value = format!("{} {} {container}", cidr.prefix, format_mac(mac));
    (key, value)
}

/// The key under which this agent publishes the endpoint with address `ip`.
pub fn endpoint_key(ip: std::net::Ipv4Addr) -> String {
    format!("{ENDPOINT_PREFIX}{ip}")
}

pub(super) fn published_endpoints(state: &NodeState) -> Vec<PublishedEndpoint> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let ip = key.strip_prefix(ENDPOINT_PREFIX)?;
            parse_endpoint(ip, value).ok()
        })
        .collect()
}

/// The gossip key and value announcing the networks routed through exposed address `ip`.
pub fn via_key_value(ip: Ipv4Addr, routes: &[Subnet]) -> (String, String) {
    let value: Vec<String> = routes.iter().map(ToString::to_string).collect();
    (via_key(ip), value.join(","))
}

pub fn via_key(ip: Ipv4Addr) -> String {
    format!("{VIA_PREFIX}{ip}")
}

/// The networks each of a peer's exposed addresses routes; malformed entries are skipped.
pub(super) fn published_via(state: &NodeState) -> BTreeMap<Ipv4Addr, Vec<Subnet>> {
    state
        .key_values()
        .filter_map(|(key, value)| {
            let ip: Ipv4Addr = key.strip_prefix(VIA_PREFIX)?.parse().ok()?;
            Some((ip, parse_via(value).ok()?))
        })
        .collect()
}

/// A `via:` value back into its networks.
pub fn parse_via(value: &str) -> Result<Vec<Subnet>> {
    value
        .split(',')
        .filter(|part| !part.is_empty())
        .map(str::parse)
        .collect()
}

pub(super) fn published_rules(state: &NodeState) -> Vec<Rule> {
    state
        .key_values()
        .filter(|(key, _)| key.starts_with(policy::GOSSIP_PREFIX))
        .filter_map(|(key, value)| Rule::from_gossip(key, value).ok())
        .collect()
}

/// The endpoint behind a gossip key's address part and its value.
pub fn parse_endpoint(ip: &str, value: &str) -> Result<PublishedEndpoint> {
    let mut parts = value.splitn(3, ' ');
    let (Some(prefix), Some(mac), container) = (parts.next(), parts.next(), parts.next()) else {
        bail!("malformed endpoint value {value:?}");
    };
    let cidr: Cidr = format!("{ip}/{prefix}").parse()?;
    if parse_mac(mac).is_none() {
        bail!("malformed MAC {mac:?}");
    }
    Ok(PublishedEndpoint {
        cidr,
        mac: mac.to_owned(),
        container: container.unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_values_parse_and_reject_garbage() {
        let ep = parse_endpoint("192.168.1.10", "24 02:57:c0:a8:01:0a netns:ctr 1").unwrap();
        assert_eq!(ep.cidr.to_string(), "192.168.1.10/24");
        assert_eq!(ep.container, "netns:ctr 1");
        assert!(parse_endpoint("192.168.1.10", "24").is_err());
        assert!(parse_endpoint("192.168.1.10", "24 nope c").is_err());
    }

    #[test]
    fn routes_through_an_exposed_address_read_back_and_garbage_is_refused() {
        let routes: Vec<Subnet> = vec![
            "192.168.56.0/24".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ];
        let (key, value) = via_key_value(Ipv4Addr::new(10, 40, 1, 1), &routes);
        assert_eq!(key, "via:10.40.1.1");
        assert_eq!(parse_via(&value).unwrap(), routes);
        assert_eq!(parse_via("").unwrap(), []);
        assert!(parse_via("10.1.0.0/16,nonsense").is_err());
    }

    #[test]
    fn a_request_for_space_names_its_subnet() {
        let subnet: Subnet = "10.32.5.0/24".parse().unwrap();
        let key = want_key(&subnet);
        assert_eq!(key, "ipam:want:10.32.5.0/24");
        let parsed: Subnet = key.strip_prefix(IPAM_WANT_PREFIX).unwrap().parse().unwrap();
        assert_eq!(parsed, subnet);
    }

    #[test]
    fn a_published_endpoint_reads_back_as_itself() {
        let cidr: Cidr = "10.32.0.7/12".parse().unwrap();
        // A second address of a container: the MAC of its first.
        let first: Cidr = "10.32.0.3/12".parse().unwrap();
        let (key, value) = endpoint_key_value(&cidr, &first.mac(), "web 1");
        let ip = key.strip_prefix(ENDPOINT_PREFIX).unwrap();
        let ep = parse_endpoint(ip, &value).unwrap();
        assert_eq!((ep.cidr, ep.container.as_str()), (cidr, "web 1"));
        assert_eq!(parse_mac(&ep.mac), Some(first.mac()));
    }
}

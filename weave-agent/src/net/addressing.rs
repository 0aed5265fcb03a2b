//! Overlay addresses: CIDR parsing, MACs derived from addresses, interface names.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weave_common::endpoint::{Endpoint, endpoint_mac, ipv4_key};

use super::{
    names::{EXPOSED_IFACE_PREFIX, EXPOSED_VETH_PREFIX, HOST_VETH_PREFIX, TEMP_PEER_PREFIX},
    policy::Subnet,
};

/// An endpoint address with its subnet, e.g. 192.168.1.10/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn network(&self) -> Ipv4Addr {
        self.subnet().network
    }

    /// The network the address belongs to, e.g. 192.168.1.0/24 for 192.168.1.10/24.
    pub fn subnet(&self) -> Subnet {
        Subnet::new(self.ip, self.prefix)
    }

    /// The `ethwe` MAC for this address: stable across detach/re-attach and restarts, so
    /// peers' neighbour caches never go stale. 02 = locally administered unicast, 57 = 'W'.
    pub fn mac(&self) -> [u8; 6] {
        endpoint_mac(self.ip.octets())
    }

    /// Name of the host-side veth: `vethwe` + the address in hex (14 bytes, under IFNAMSIZ).
    pub fn host_veth(&self) -> String {
        format!("{HOST_VETH_PREFIX}{:08x}", u32::from(self.ip))
    }

    /// Name of the interface holding this address when the host exposes it: `wexp` + hex.
    pub fn exposed_iface(&self) -> String {
        format!("{EXPOSED_IFACE_PREFIX}{:08x}", u32::from(self.ip))
    }

    /// Name of that interface's veth peer, where the programs sit: `vethwx` + hex.
    pub fn exposed_veth(&self) -> String {
        format!("{EXPOSED_VETH_PREFIX}{:08x}", u32::from(self.ip))
    }

    /// Temporary name of the container side before it is renamed `ethwe` in the container.
    pub fn peer_temp_name(&self) -> String {
        format!("{TEMP_PEER_PREFIX}{:08x}", u32::from(self.ip))
    }

    /// The map entry for this address as a local endpoint behind host veth `ifindex`.
    pub fn local_endpoint(&self, ifindex: u32) -> Endpoint {
        Endpoint {
            mac: self.mac(),
            prefix_len: self.prefix,
            flags: weave_common::endpoint::ENDPOINT_LOCAL,
            ifindex,
            peer: 0,
            subnet: ipv4_key(self.network().octets()),
        }
    }

    /// The map entry for this address living on the peer with underlay address `peer`.
    pub fn remote_endpoint(&self, mac: [u8; 6], peer: Ipv4Addr) -> Endpoint {
        Endpoint {
            mac,
            prefix_len: self.prefix,
            flags: 0,
            ifindex: 0,
            peer: ipv4_key(peer.octets()),
            subnet: ipv4_key(self.network().octets()),
        }
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (ip, prefix) = text.split_once('/').with_context(|| {
            format!("{text:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. 192.168.1.10/24")
        })?;
        let ip: Ipv4Addr = ip
            .parse()
            .with_context(|| format!("{ip:?} in {text:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=32).contains(p))
            .with_context(|| {
                format!("prefix {prefix:?} in {text:?} must be a number from 1 to 32")
            })?;
        let cidr = Self { ip, prefix };
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            bail!("{ip} cannot be a container address");
        }
        if prefix <= 30 {
            let host_bits = u32::from(ip) & !(u32::MAX << (32 - u32::from(prefix)));
            if host_bits == 0 {
                bail!(
                    "{text} is the network address of its subnet; use a host address, e.g. {}/{prefix}",
                    Ipv4Addr::from(u32::from(ip) + 1)
                );
            }
            if host_bits == !(u32::MAX << (32 - u32::from(prefix))) {
                bail!("{text} is the broadcast address of its subnet; use a host address");
            }
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An endpoint's IPv6 address with its subnet, e.g. fd00:1::10/64: given beside an IPv4
/// address (`attach 10.40.1.10/24,fd00:1::10/64`), on the same `ethwe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr6 {
    pub ip: Ipv6Addr,
    pub prefix: u8,
}

impl Cidr6 {
    /// The subnet's network address, e.g. fd00:1:: for fd00:1::10/64.
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(weave_common::ipv6::network(self.ip.octets(), self.prefix))
    }

    /// The `ethwe` MAC of a container with this IPv6 address and no IPv4 one.
    pub fn mac(&self) -> [u8; 6] {
        weave_common::ipv6::endpoint_mac6(self.ip.octets())
    }

    fn mac_hex(&self) -> String {
        self.mac()[2..].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Host-side veth of such a container: `vethwe6` + its MAC's last four bytes in hex (15
    /// bytes, one more than an IPv4 endpoint's, so the two never meet).
    pub fn host_veth(&self) -> String {
        format!("{HOST_VETH_PREFIX}6{}", self.mac_hex())
    }

    /// Temporary name of its container side, before it is renamed `ethwe`.
    pub fn peer_temp_name(&self) -> String {
        format!("{TEMP_PEER_PREFIX}6{}", self.mac_hex())
    }
}

impl FromStr for Cidr6 {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (ip, prefix) = text.split_once('/').with_context(|| {
            format!("{text:?} is not a CIDR: expected ADDRESS/PREFIX, e.g. fd00:1::10/64")
        })?;
        let ip: Ipv6Addr = ip
            .parse()
            .with_context(|| format!("{ip:?} in {text:?} is not an IPv6 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (1..=128).contains(p))
            .with_context(|| {
                format!("prefix {prefix:?} in {text:?} must be a number from 1 to 128")
            })?;
        let octets = ip.octets();
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            bail!("{ip} cannot be a container address");
        }
        if octets[0] == 0xfe && octets[1] & 0xc0 == 0x80 {
            bail!(
                "{ip} is link-local: every container has one already (from its MAC); give a \
                 global or unique local address, e.g. fd00:1::10/64"
            );
        }
        if ip.to_ipv4_mapped().is_some() {
            bail!("{ip} is an IPv4-mapped address; give the IPv4 address itself");
        }
        Ok(Self { ip, prefix })
    }
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

impl Serialize for Cidr6 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr6 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_derives() {
        let cidr: Cidr = "192.168.1.10/24".parse().unwrap();
        assert_eq!(cidr.network(), Ipv4Addr::new(192, 168, 1, 0));
        assert_eq!(format_mac(&cidr.mac()), "02:57:c0:a8:01:0a");
        assert_eq!(cidr.host_veth(), "vethwec0a8010a");
        assert!(cidr.host_veth().len() < 16);
        assert_eq!(cidr.to_string(), "192.168.1.10/24");
    }

    #[test]
    fn rejects_what_cannot_be_an_endpoint() {
        for bad in [
            "192.168.1.10",
            "192.168.1.10/",
            "192.168.1.10/33",
            "192.168.1.10/0",
            "192.168.1.300/24",
            "192.168.1.0/24",
            "192.168.1.255/24",
            "127.0.0.5/8",
            "224.0.0.1/24",
            "nonsense",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
        assert!("10.0.0.1/32".parse::<Cidr>().is_ok());
    }

    #[test]
    fn subnets_decide_isolation() {
        let a: Cidr = "192.168.1.10/24".parse().unwrap();
        let b: Cidr = "192.168.1.20/24".parse().unwrap();
        let c: Cidr = "192.168.2.30/24".parse().unwrap();
        assert!(a.local_endpoint(1).same_subnet(&b.local_endpoint(2)));
        assert!(!a.local_endpoint(1).same_subnet(&c.local_endpoint(3)));
    }

    #[test]
    fn mac_round_trips() {
        let mac = [2, 0x57, 192, 168, 1, 10];
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        assert_eq!(parse_mac("02:57:c0"), None);
    }
}

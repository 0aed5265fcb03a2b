//! Choosing the underlay: the host interface that carries the overlay to other hosts.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, bail};

use crate::net::{addressing::format_mac, names::is_overlay_veth};

/// What the agent needs to know about an interface to use it as the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub loopback: bool,
    /// rtnetlink link kind, e.g. "veth"; None for plain hardware NICs.
    pub kind: Option<String>,
    /// First IPv4 address and its prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    pub fn mac_string(&self) -> Option<String> {
        self.mac.as_ref().map(format_mac)
    }
}

/// Picks the underlay: `requested` if given, else the default route's interface, else the only
/// non-loopback interface with an IPv4 address.
pub fn select_underlay<'a>(
    links: &'a [Link],
    default_oif: Option<u32>,
    requested: Option<&str>,
) -> Result<&'a Link> {
    let chosen = if let Some(name) = requested {
        links.iter().find(|l| l.name == name).with_context(|| {
            format!("no interface named {name} in this network namespace (`ip link` lists them)")
        })?
    } else if let Some(link) = default_oif.and_then(|oif| links.iter().find(|l| l.index == oif)) {
        link
    } else {
        let candidates: Vec<&Link> = links
            .iter()
            .filter(|l| !l.loopback && !is_overlay_veth(&l.name) && l.ipv4.is_some())
            .collect();
        match candidates.as_slice() {
            [only] => *only,
            [] => bail!(
                "no underlay interface: no default route and no non-loopback interface with an \
                 IPv4 address; give one an address or name it with --iface"
            ),
            many => {
                let mut names: Vec<&str> = many.iter().map(|l| l.name.as_str()).collect();
                names.sort_unstable();
                bail!(
                    "cannot choose the underlay interface: no default route and several \
                     interfaces with IPv4 addresses ({}); choose one with --iface",
                    names.join(", ")
                )
            }
        }
    };
    if chosen.loopback {
        bail!(
            "{} is a loopback interface and cannot carry the overlay",
            chosen.name
        );
    }
    if chosen.ipv4.is_none() {
        bail!(
            "{} has no IPv4 address; the overlay reaches peers over IPv4, so add one \
             (`ip addr add ADDR/LEN dev {}`) or choose another interface with --iface",
            chosen.name,
            chosen.name
        );
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ipv4: Option<&str>) -> Link {
        Link {
            index,
            name: name.to_owned(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: 1500,
            loopback: name == "lo",
            kind: None,
            ipv4: ipv4.map(|ip| (ip.parse().unwrap(), 24)),
        }
    }

    fn sample() -> Vec<Link> {
        vec![
            link(1, "lo", Some("127.0.0.1")),
            link(2, "eth0", Some("192.168.56.101")),
            link(3, "eth1", None),
            link(4, "vethwe1234", Some("10.9.9.9")),
        ]
    }

    #[test]
    fn default_route_interface_wins() {
        let links = sample();
        let mut with_addr = links.clone();
        with_addr[2].ipv4 = Some(("10.0.0.1".parse().unwrap(), 8));
        assert_eq!(
            select_underlay(&with_addr, Some(3), None).unwrap().name,
            "eth1"
        );
    }

    #[test]
    fn only_addressed_interface_is_picked_and_overlay_veths_ignored() {
        assert_eq!(select_underlay(&sample(), None, None).unwrap().name, "eth0");
    }

    #[test]
    fn several_candidates_are_ambiguous_and_named() {
        let mut links = sample();
        links[2].ipv4 = Some(("10.0.0.1".parse().unwrap(), 8));
        let err = select_underlay(&links, None, None).unwrap_err().to_string();
        assert!(
            err.contains("eth0, eth1") && err.contains("--iface"),
            "{err}"
        );
    }

    #[test]
    fn requested_interface_must_exist_and_have_ipv4() {
        let links = sample();
        let err = select_underlay(&links, None, Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no interface named nope"), "{err}");
        let err = select_underlay(&links, None, Some("eth1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("eth1 has no IPv4 address"), "{err}");
        assert_eq!(
            select_underlay(&links, Some(3), Some("eth0")).unwrap().name,
            "eth0"
        );
    }

    #[test]
    fn nothing_usable_is_an_error() {
        let links = vec![link(1, "lo", Some("127.0.0.1"))];
        let err = select_underlay(&links, None, None).unwrap_err().to_string();
        assert!(err.contains("no underlay interface"), "{err}");
    }
}

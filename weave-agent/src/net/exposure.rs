//! Exposed host addresses (`expose`), the pure part: which routes the containers of an
//! exposed subnet get through it, which of the host's networks those are by default, and the
//! NAT rules the host needs. The daemon does the I/O (`control::expose`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use super::{
    addressing::Cidr,
    names::{EXPOSED_IFACE_PREFIX, is_overlay_veth},
    policy::Subnet,
};

/// How an exposed address serves what is outside the overlay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// Networks the subnet's containers reach through the exposed address.
    pub routes: Vec<Subnet>,
    /// The routes were given (`--routes`); else they are the host's directly connected
    /// networks, looked up again at each start.
    #[serde(default)]
    pub routes_given: bool,
    /// Clients from outside reach containers with the exposed address as their source
    /// (`--masquerade`), so the containers need no route back to them.
    #[serde(default)]
    pub masquerade: bool,
}

/// A route the agent keeps in a container, on `ethwe`: on link (a subnet an isolation rule
/// opens) or through a gateway (an exposed address of the container's subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerRoute {
    pub to: Subnet,
    pub via: Option<Ipv4Addr>,
}

impl ContainerRoute {
    pub fn on_link(to: Subnet) -> Self {
        Self { to, via: None }
    }
}

/// The routes a container of `subnet` gets: `on_link` ones (from the isolation rules), and one
/// through an exposed address of its subnet for each network an exposure routes
/// (`exposures`: exposed address and its routes, from anywhere in the mesh). Where two
/// exposed addresses route the same network, the lower address is the gateway, so every host
/// picks the same one; a network that is on link already, or that overlaps the subnet itself,
/// gets no gateway route.
pub fn container_routes<'a>(
    subnet: &Subnet,
    on_link: &BTreeSet<Subnet>,
    exposures: impl IntoIterator<Item = (Cidr, &'a [Subnet])>,
) -> BTreeSet<ContainerRoute> {
    let mut via: BTreeMap<Subnet, Ipv4Addr> = BTreeMap::new();
    for (exposed, routes) in exposures {
        if exposed.subnet() != *subnet {
            continue;
        }
        for to in routes {
            if on_link.contains(to) || to.contains(subnet) || subnet.contains(to) {
                continue;
            }
            via.entry(*to)
                .and_modify(|gw| *gw = (*gw).min(exposed.ip))
                .or_insert(exposed.ip);
        }
    }
    on_link
        .iter()
        .map(|to| ContainerRoute::on_link(*to))
        .chain(
            via.into_iter()
                .map(|(to, gw)| ContainerRoute { to, via: Some(gw) }),
        )
        .collect()
}

/// One IPv4 address of the host, as netlink lists it.
#[derive(Debug, Clone)]
pub struct HostAddress {
    pub iface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

/// The host's directly connected IPv4 networks that containers may be routed to through an
/// exposed address: every network of an address on a real interface, not loopback, not one
/// of the overlay's own interfaces, and not overlapping an overlay subnet (`overlay`).
pub fn connected_networks(addresses: &[HostAddress], overlay: &BTreeSet<Subnet>) -> Vec<Subnet> {
    let nets: BTreeSet<Subnet> = addresses
        .iter()
        .filter(|a| !a.ip.is_loopback() && !a.ip.is_link_local())
        .filter(|a| !is_overlay_veth(&a.iface) && !a.iface.starts_with("weave-"))
        .map(|a| Subnet::new(a.ip, a.prefix))
        .filter(|n| n.prefix > 0)
        .filter(|n| !overlay.iter().any(|o| o.contains(n) || n.contains(o)))
        .collect();
    nets.into_iter().collect()
}

/// Name of the nftables table the agent owns in the host's namespace.
pub const NAT_TABLE: &str = "weave_agent_expose";

/// The nftables script that makes the agent's NAT table hold exactly the rules `exposed`
/// needs (each exposed address with its options), in one transaction: created, emptied and
/// refilled, or deleted when nothing is exposed. For each exposed subnet:
/// - traffic from it leaving the host by any interface that is not an exposed one is
///   masqueraded to the host's address there (inside out: a server outside sees the host);
///   conntrack applies NAT only to new connections, so replies to clients that came in are
///   untouched;
/// - with masquerade, traffic from outside the subnet entering the overlay through the
///   exposed interface gets the exposed address as source (outside in, no route back needed).
pub fn nat_ruleset(exposed: &[(Cidr, bool)]) -> String {
    // "add" then "delete" makes the delete succeed whether or not the table existed.
    let mut script = format!("add table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n");
    if exposed.is_empty() {
        return script;
    }
    let _ = writeln!(script, "table ip {NAT_TABLE} {{");
    let _ = writeln!(script, "  chain postrouting {{");
    let _ = writeln!(
        script,
        "    type nat hook postrouting priority srcnat; policy accept;"
    );
    for (cidr, masquerade) in exposed {
        let subnet = cidr.subnet();
        let _ = writeln!(
            script,
            "    ip saddr {subnet} oifname != \"{EXPOSED_IFACE_PREFIX}*\" masquerade"
        );
        if *masquerade {
            let _ = writeln!(
                script,
                "    oifname \"{}\" ip saddr != {subnet} snat ip to {}",
                cidr.exposed_iface(),
                cidr.ip
            );
        }
    }
    script.push_str("  }\n}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    fn c(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn containers_of_the_subnet_get_a_route_through_the_lowest_exposed_address() {
        let lan = [s("192.168.56.0/24"), s("10.1.0.0/16")];
        let other = [s("192.168.56.0/24")];
        let routes = container_routes(
            &s("10.40.1.0/24"),
            &BTreeSet::new(),
            [
                (c("10.40.1.9/24"), &other[..]),
                (c("10.40.1.1/24"), &lan[..]),
                (c("10.50.0.1/24"), &lan[..]),
            ],
        );
        let gw = Some(Ipv4Addr::new(10, 40, 1, 1));
        assert_eq!(
            routes,
            BTreeSet::from([
                ContainerRoute {
                    to: s("10.1.0.0/16"),
                    via: gw
                },
                ContainerRoute {
                    to: s("192.168.56.0/24"),
                    via: gw
                },
            ])
        );
    }

    #[test]
    fn on_link_routes_win_and_the_subnet_itself_is_never_routed() {
        let on_link = BTreeSet::from([s("10.60.0.0/24")]);
        let wide = [s("10.60.0.0/24"), s("10.40.0.0/16"), s("10.40.1.128/25")];
        let routes = container_routes(
            &s("10.40.1.0/24"),
            &on_link,
            [(c("10.40.1.1/24"), &wide[..])],
        );
        assert_eq!(
            routes,
            BTreeSet::from([ContainerRoute::on_link(s("10.60.0.0/24"))])
        );
        let none = container_routes(
            &s("10.40.2.0/24"),
            &BTreeSet::new(),
            [(c("10.40.1.1/24"), &wide[..])],
        );
        assert!(
            none.is_empty(),
            "another subnet's exposure routes nothing: {none:?}"
        );
    }

    #[test]
    fn connected_networks_leave_out_the_overlay_and_its_interfaces() {
        let a = |iface: &str, ip: [u8; 4], prefix| HostAddress {
            iface: iface.into(),
            ip: Ipv4Addr::from(ip),
            prefix,
        };
        let addresses = [
            a("lo", [127, 0, 0, 1], 8),
            a("eth0", [192, 168, 56, 101], 24),
            a("eth1", [172, 30, 4, 9], 20),
            a("wexp0a280101", [10, 40, 1, 1], 24),
            a("eth2", [10, 40, 7, 1], 24),
            a("weave-seal", [169, 254, 1, 1], 16),
        ];
        let overlay = BTreeSet::from([s("10.40.0.0/16")]);
        assert_eq!(
            connected_networks(&addresses, &overlay),
            [s("172.30.0.0/20"), s("192.168.56.0/24")]
        );
    }

    #[test]
    fn the_nat_script_replaces_the_table_whole_or_removes_it() {
        let empty = nat_ruleset(&[]);
        assert_eq!(
            empty,
            format!("add table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n")
        );
        let script = nat_ruleset(&[(c("10.40.1.1/24"), false), (c("10.41.0.1/16"), true)]);
        assert!(script.starts_with(&empty), "{script}");
        assert!(script.contains("ip saddr 10.40.1.0/24 oifname != \"wexp*\" masquerade"));
        assert!(script.contains("ip saddr 10.41.0.0/16 oifname != \"wexp*\" masquerade"));
        assert!(
            script
                .contains("oifname \"wexp0a290001\" ip saddr != 10.41.0.0/16 snat ip to 10.41.0.1")
        );
        assert!(!script.contains("snat ip to 10.40.1.1"), "{script}");
    }
}

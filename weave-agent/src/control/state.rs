//! What survives an agent restart: the peers to connect to, the endpoints attached here and
//! the isolation rules.
//! Written atomically (temp file + rename), so a crash never leaves half a file.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{ErrorKind, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use weave_common::endpoint::{ENDPOINT_EXPOSED, ENDPOINT_FORWARDS, Endpoint, endpoint_mac};

use crate::net::{
    addressing::{Cidr, Cidr6},
    exposure::Exposure,
    names::CONTAINER_IFACE,
    policy::Rule,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Underlay interface the programs were attached to.
    #[serde(default)]
    pub underlay: Option<String>,
    /// Peers given to `launch`/`join`, as typed (IP or IP:PORT).
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub endpoints: Vec<LocalEndpoint>,
    /// Endpoints of Docker containers that stopped; they get their address back when the
    /// container starts again (`docker restart`, a restart policy).
    #[serde(default)]
    pub dormant: Vec<LocalEndpoint>,
    /// The newest isolation rule per pair of networks this agent knows (its own and gossiped),
    /// so rules survive even when every agent restarts.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Names given with `dns-add`, by address (full names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dns_records: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    /// Containers attached by an IPv6 address alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ipv6_only: Vec<Ipv6Endpoint>,
    /// Those of them that are stopped Docker containers, given back as `dormant` ones are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dormant6: Vec<Ipv6Endpoint>,
}

/// A container attached on this host by an IPv6 address and no IPv4 one: its `ethwe` MAC
/// comes from that address ([`Cidr6::mac`]). It has no IPv4 map entry, no subnet broadcast,
/// no DNS name and no automatic address; its super-packets take the kernel's path (it is
/// marked as forwarding, since the forwarding probe reads IPv4 settings). A Docker container's
/// is kept while the container is stopped and given back when it starts again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipv6Endpoint {
    pub cidr: Cidr6,
    /// The container as the user named it.
    pub container: String,
    pub netns: PathBuf,
    pub host_veth: String,
    pub mtu: u32,
    #[serde(default)]
    pub docker_id: Option<String>,
}

/// An endpoint attached on this host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalEndpoint {
    pub cidr: Cidr,
    /// The container as the user named it (`netns:ctr1`, `pid:123`, a path).
    pub container: String,
    /// Network namespace file of the container.
    pub netns: PathBuf,
    pub host_veth: String,
    pub mtu: u32,
    /// Full id when the container is a Docker container.
    #[serde(default)]
    pub docker_id: Option<String>,
    /// Why the container may send a packet it received on (see `host::forwarding`); empty
    /// when it cannot. Kept with the endpoint so that a restarted agent writes the same map
    /// entry before it has looked again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<String>,
    /// Set when this is the host's own address on the overlay (`expose`), not a container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Exposure>,
    /// The container's full DNS name (its Docker name, or `--dns-name`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    /// The container's IPv6 address on `ethwe`, kept with its first IPv4 address (whose
    /// name in the mesh it is published under).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Cidr6>,
    /// For a container's second and later addresses: the first one, which its `ethwe` MAC
    /// (and so this address's map entry and gossip) is derived from. They share its veth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_from: Option<Ipv4Addr>,
    /// The container's interface: `ethwe`, or the name a CNI runtime asked for (`eth0`).
    #[serde(
        default = "container_iface",
        skip_serializing_if = "is_container_iface"
    )]
    pub iface: String,
    /// Attached with `--no-multicast-route`: a re-attach (a Docker restart) leaves the route
    /// out again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_multicast_route: bool,
}

fn container_iface() -> String {
    CONTAINER_IFACE.to_owned()
}

fn is_container_iface(name: &String) -> bool {
    name == CONTAINER_IFACE
}

impl State {
    /// The names this host publishes for `ip`: its container's, and those of `dns-add`.
    pub fn names_of(&self, ip: Ipv4Addr) -> Vec<String> {
        let mut names: BTreeSet<String> = self.dns_records.get(&ip).cloned().unwrap_or_default();
        names.extend(
            self.endpoints
                .iter()
                .filter(|e| e.cidr.ip == ip)
                .filter_map(|e| e.dns_name.clone()),
        );
        names.into_iter().collect()
    }
}

impl LocalEndpoint {
    /// The map entry for this endpoint behind host veth `ifindex`.
    /// The MAC of the container's `ethwe`, which every address of it answers with.
    pub fn mac(&self) -> [u8; 6] {
        endpoint_mac(self.mac_from.unwrap_or(self.cidr.ip).octets())
    }

    pub fn map_entry(&self, ifindex: u32) -> Endpoint {
        let mut entry = self.cidr.local_endpoint(ifindex);
        entry.mac = self.mac();
        if !self.forwards.is_empty() {
            entry.flags |= ENDPOINT_FORWARDS;
        }
        if self.expose.is_some() {
            entry.flags |= ENDPOINT_EXPOSED;
        }
        entry
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

pub fn load(state_dir: &Path) -> Result<State> {
    let file = path(state_dir);
    match fs::read_to_string(&file) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt; move it away to start afresh",
                file.display()
            )
        }),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(State::default()),
        Err(err) => Err(err).with_context(|| format!("reading {}", file.display())),
    }
}

pub fn save(state_dir: &Path, state: &State) -> Result<()> {
    let file = path(state_dir);
    let tmp = file.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state)?;
    let mut out = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    fs::rename(&tmp, &file).with_context(|| format!("replacing {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_disk() {
        let dir = std::env::temp_dir().join(format!("weave-state-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(load(&dir).unwrap(), State::default());
        let state = State {
            underlay: Some("eth0".into()),
            peers: vec!["192.168.56.101".into()],
            endpoints: vec![LocalEndpoint {
                cidr: "192.168.1.10/24".parse().unwrap(),
                container: "netns:c1".into(),
                netns: "/run/netns/c1".into(),
                host_veth: "vethwec0a8010a".into(),
                mtu: 1450,
                docker_id: None,
                forwards: vec!["IPv4 forwarding on ethwe".into()],
                expose: None,
                dns_name: Some("c1.weave.local".into()),
                mac_from: None,
                ipv6: None,
                iface: "eth0".into(),
                no_multicast_route: true,
            }],
            dormant: Vec::new(),
            ipv6_only: vec![Ipv6Endpoint {
                cidr: "fd00:1::30/64".parse().unwrap(),
                container: "netns:c6".into(),
                netns: "/run/netns/c6".into(),
                host_veth: "vethwe6a1b2c3d4".into(),
                mtu: 1450,
                docker_id: None,
            }],
            dormant6: Vec::new(),
            dns_records: BTreeMap::from([(
                "192.0.2.80".parse().unwrap(),
                BTreeSet::from(["printer.weave.local".to_owned()]),
            )]),
            rules: vec![
                Rule::new(
                    "192.168.1.0/24".parse::<crate::net::policy::Net>().unwrap(),
                    "192.168.2.0/24".parse::<crate::net::policy::Net>().unwrap(),
                    crate::net::policy::Action::Allow,
                    7,
                    "peer",
                )
                .unwrap(),
            ],
        };
        save(&dir, &state).unwrap();
        assert_eq!(load(&dir).unwrap(), state);
        fs::remove_dir_all(&dir).unwrap();
    }
}

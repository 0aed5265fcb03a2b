//! What a daemon is started with, in the control plane's own terms (the CLI builds it from
//! its flags; the daemon never sees clap's types).

use std::net::SocketAddr;

/// How frames for other hosts are wrapped in VXLAN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encapsulation {
    /// Headers built and stripped by the eBPF programs; GSO bulk through the VXLAN device.
    #[default]
    Ebpf,
    /// Everything through the kernel VXLAN device.
    VxlanDevice,
}

#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// Peers to join, as the user typed them (IP, IP:PORT, HOST[:PORT]).
    pub peers: Vec<String>,
    /// Underlay interface; None picks one (see `host::underlay`).
    pub iface: Option<String>,
    /// Nickname shown by `status` and `peers`; None takes the namespace name.
    pub nickname: Option<String>,
    /// The mesh password, already read from wherever the user put it.
    pub password: Option<String>,
    pub encapsulation: Encapsulation,
    /// Where metrics are served; None for the default.
    pub metrics_addr: Option<SocketAddr>,
    /// The Docker network driver's name; None with `--no-docker-plugin`.
    pub docker_plugin: Option<String>,
    /// UDP port of gossip; VXLAN takes the next one (`weave_common::data_port`).
    pub port: u16,
    /// Underlay networks this host trusts (`launch --trusted-subnets`): traffic with a peer
    /// there crosses in clear if the peer trusts this host too.
    pub trusted_subnets: Vec<crate::net::policy::Subnet>,
    pub ipam: IpamConfig,
    /// The DNS server; None with `--no-dns`.
    pub dns: Option<DnsConfig>,
    /// Broadcast and multicast frames per second each endpoint may send (`--flood-rate`);
    /// 0: no limit.
    pub flood_pps: u32,
}

/// The DNS server for this host's containers.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Normalized, e.g. `weave.local`.
    pub domain: String,
    /// Where names outside the domain go; None: the resolvers of this namespace's
    /// resolv.conf.
    pub upstreams: Option<Vec<SocketAddr>>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            domain: crate::dns::zone::DEFAULT_DOMAIN.to_owned(),
            upstreams: None,
        }
    }
}

/// Automatic addresses: the range, the default subnet, and whether this host may claim the
/// range alone (None: if it was launched without peers).
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub range: crate::net::policy::Subnet,
    pub default_subnet: Option<crate::net::policy::Subnet>,
    pub init: Option<crate::ipam::space::Init>,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            range: DEFAULT_RANGE.parse().expect("a valid CIDR"),
            default_subnet: None,
            init: None,
        }
    }
}

/// Weave Net's default allocation range.
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";

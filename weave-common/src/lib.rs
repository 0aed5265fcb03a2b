//! Everything the eBPF programs and the agent must agree on, defined once.
//!
//! Both `weave-ebpf` (no_std, bpfel) and `weave-agent` compile these definitions, so a map's
//! key/value layout cannot drift between the two sides.
#![cfg_attr(not(test), no_std)]

pub mod counters;
pub mod endpoint;
pub mod flood;
pub mod ipv6;
pub mod policy;
pub mod relay;
pub mod seal;

/// Default UDP port of the gossip control plane (Weave Net's control port); `launch --port N`
/// moves it to N.
pub const GOSSIP_PORT: u16 = 6783;
/// Default UDP port of the VXLAN data plane (Weave Net's fastdp port): the gossip port + 1, as
/// [`data_port`] gives it for any gossip port.
pub const VXLAN_PORT: u16 = data_port(GOSSIP_PORT);

/// The data-plane port that goes with gossip port `gossip`, as Weave's 6783/6784: a firewall
/// between hosts opens exactly these two UDP ports.
pub const fn data_port(gossip: u16) -> u16 {
    gossip + 1
}
/// VXLAN network identifier of the overlay.
pub const OVERLAY_VNI: u32 = 6784;
/// Bytes an overlay frame needs on top of the container's IP packet:
/// outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. Container MTU = underlay MTU - this.
pub const OVERLAY_OVERHEAD: u32 = 50;

/// Names of the eBPF programs inside the object, as the agent looks them up.
pub mod programs {
    /// XDP on the underlay (host) NIC: drops overlay traffic from non-peers.
    pub const UNDERLAY_XDP: &str = "underlay_xdp";
    /// TC ingress on the host side of each container veth: ARP, anti-spoofing, isolation,
    /// local delivery, encapsulation.
    pub const CONTAINER_TC: &str = "container_tc";
    /// TC ingress on the VXLAN device: decapsulated frames to local containers.
    pub const OVERLAY_TC: &str = "overlay_tc";
    /// TC ingress on the underlay NIC: decapsulates overlay frames itself (eBPF encapsulation).
    pub const UNDERLAY_TC: &str = "underlay_tc";
    /// TC ingress on the agent's crypto (TAP) device: frames the agent opened, to local
    /// containers.
    pub const TAP_TC: &str = "tap_tc";
}

/// Names of the maps inside the object. Kernel object names are cut at 15 bytes, so keep them
/// short. All are pinned by name, so they outlive the agent.
pub mod maps {
    /// Per-CPU [`crate::counters::Counter`] by [`crate::counters::CounterId`].
    pub const COUNTERS: &str = "WEAVE_COUNTERS";
    /// [`crate::endpoint::Ipv4Key`] -> [`crate::endpoint::Endpoint`], local and remote.
    pub const ENDPOINTS: &str = "WEAVE_ENDPOINTS";
    /// Every live peer by underlay address ([`crate::endpoint::Ipv4Key`]) ->
    /// [`crate::endpoint::PeerRoute`]: where its frames go, itself or a relay.
    pub const PEERS: &str = "WEAVE_PEERS";
    /// What each peer's link hellos showed ([`crate::endpoint::Ipv4Key`] ->
    /// [`crate::endpoint::Heard`]): written by the underlay program, read by the agent.
    pub const HEARD: &str = "WEAVE_HEARD";
    /// One [`crate::endpoint::Config`] at index 0.
    pub const CONFIG: &str = "WEAVE_CONFIG";
    /// Allowed cross-subnet directions: [`crate::policy::SubnetPair`] -> u8 (unused). A pair of
    /// different subnets may talk only if present; a subnet always talks to itself.
    pub const POLICY: &str = "WEAVE_POLICY";
    /// One [`crate::seal::CryptoPath`] at index 0: whether frames must be sealed, and where
    /// the agent takes them.
    pub const CRYPTO: &str = "WEAVE_CRYPTO";
    /// LPM trie of every overlay subnet in the mesh: (prefix length, network
    /// [`crate::endpoint::Ipv4Key`]) -> [`crate::endpoint::OverlaySubnet`].
    pub const SUBNETS: &str = "WEAVE_SUBNETS";
    /// Who gets a copy of each subnet's broadcast and multicast frames:
    /// [`crate::flood::FloodKey`] -> [`crate::flood::FloodSet`].
    pub const FLOOD: &str = "WEAVE_FLOOD";
    /// Each local endpoint's broadcast and multicast rate clock: host-side veth ifindex -> u64
    /// (see [`crate::flood::admit_at_rate`]), written by the container program alone.
    pub const FLOOD_RATE: &str = "WEAVE_FLOOD_RT";
    /// [`crate::ipv6::Ipv6Key`] -> [`crate::ipv6::Endpoint6`]: every endpoint's IPv6
    /// addresses, link-local ones included, local and remote.
    pub const ENDPOINTS6: &str = "WEAVE_ENDPTS6";
    /// Allowed directions between different IPv6 links: [`crate::policy::LinkPair`] -> u8
    /// (unused), as [`POLICY`] for IPv4 subnets.
    pub const POLICY6: &str = "WEAVE_POLICY6";
}

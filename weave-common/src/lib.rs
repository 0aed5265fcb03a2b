//! Everything the eBPF programs and the agent must agree on, defined once.
//!
//! Both `weave-ebpf` (no_std, bpfel) and `weave-agent` compile these definitions, so a map's
//! key/value layout cannot drift between the two sides.
#![cfg_attr(not(test), no_std)]

pub mod counters;

/// UDP port of the gossip control plane (Weave Net's control port).
pub const GOSSIP_PORT: u16 = 6783;
/// UDP port of the VXLAN data plane (Weave Net's fastdp port).
pub const VXLAN_PORT: u16 = 6784;
/// Bytes an overlay frame needs on top of the container's IP packet:
/// outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. Container MTU = underlay MTU - this.
pub const OVERLAY_OVERHEAD: u32 = 50;

/// Names of the eBPF programs inside the object, as the agent looks them up.
pub mod programs {
    /// XDP on the underlay (host) NIC.
    pub const UNDERLAY_XDP: &str = "underlay_xdp";
    /// TC ingress on the host side of each container veth.
    pub const CONTAINER_TC: &str = "container_tc";
}

/// Names of the maps inside the object. Kernel object names are cut at 15 bytes, so keep them short.
pub mod maps {
    pub const COUNTERS: &str = "WEAVE_COUNTERS";
}

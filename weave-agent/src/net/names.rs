//! Names of the interfaces the agent makes, defined once: the agent creates them, `reset`
//! deletes them, and underlay selection must never pick one of them.

/// Prefix of the host side of every container veth (Weave Net's name).
pub const HOST_VETH_PREFIX: &str = "vethwe";
/// The overlay interface inside each container.
pub const CONTAINER_IFACE: &str = "ethwe";
/// Prefix of a container veth's far end until it is renamed `ethwe` inside the container.
pub const TEMP_PEER_PREFIX: &str = "wep";
/// The overlay's VXLAN device (Weave's fastdp used the same name).
pub const VXLAN_DEVICE: &str = "vxlan-6784";

/// The container label of an exposed host address (`expose`), in `ps` and in gossip, where it
/// tells other hosts the endpoint is one. No container is labelled so: Docker names have no
/// colon, and the other labels start `netns:`, `pid:` or `/`.
pub const EXPOSED_LABEL: &str = "weave:expose";
/// Prefix of the interface holding an exposed address in the host's namespace.
pub const EXPOSED_IFACE_PREFIX: &str = "wexp";
/// Prefix of its veth peer, the end the programs sit on (as a container veth's host end).
pub const EXPOSED_VETH_PREFIX: &str = "vethwx";

/// The interface holding the agent's DNS server address in the host's namespace, and its
/// veth peer, where the programs sit.
pub const DNS_IFACE: &str = "weavedns";
pub const DNS_VETH: &str = "vethwdns";

/// An interface of the overlay's own, which is never an underlay and which `reset` removes
/// (the host ends of container veths, and `ethwe` should one be seen in this namespace).
pub fn is_overlay_veth(name: &str) -> bool {
    name.starts_with(HOST_VETH_PREFIX)
        || name.starts_with(EXPOSED_VETH_PREFIX)
        || name.starts_with(EXPOSED_IFACE_PREFIX)
        || name == DNS_IFACE
        || name == DNS_VETH
        || name == CONTAINER_IFACE
}

//! Endpoint and configuration map values.

/// An IPv4 address as it sits in a packet (network byte order), read as a native `u32`.
/// Both sides build keys with [`ipv4_key`], so the byte order never has to be thought about.
pub type Ipv4Key = u32;

/// Map key for the address `a.b.c.d`.
pub const fn ipv4_key(octets: [u8; 4]) -> Ipv4Key {
    u32::from_ne_bytes(octets)
}

/// The address a key stands for.
pub const fn ipv4_octets(key: Ipv4Key) -> [u8; 4] {
    key.to_ne_bytes()
}

/// The MAC the agent gives the endpoint with address `ip`: `02:57:` then the address, as Docker
/// derives `02:42:...`, so it survives detach, re-attach and restarts.
pub const fn endpoint_mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x57, ip[0], ip[1], ip[2], ip[3]]
}

/// The address whose [`endpoint_mac`] `mac` is, if it is one. Only a guess at which endpoint
/// sent a frame: the programs look it up and accept it only if that endpoint has this MAC on
/// this veth (an ARP probe carries no sender address to look up).
pub const fn endpoint_mac_address(mac: &[u8; 6]) -> Option<[u8; 4]> {
    if mac[0] == 0x02 && mac[1] == 0x57 {
        Some([mac[2], mac[3], mac[4], mac[5]])
    } else {
        None
    }
}

/// The endpoint lives on this host (its veth is [`Endpoint::ifindex`]).
pub const ENDPOINT_LOCAL: u8 = 1;
/// A local endpoint whose namespace may send a received packet on without segmenting it first
/// (IPv4 forwarding on `ethwe`, `ethwe` enslaved or under another device, programs or qdiscs
/// that may redirect). GSO super-packets for it keep the kernel's VXLAN receive path, which
/// clears their UDP-tunnel GSO state; eBPF on this kernel cannot, and a packet that keeps the
/// stale state breaks when it is segmented on its way out.
pub const ENDPOINT_FORWARDS: u8 = 2;

/// The endpoint is a host's own address on the overlay (`expose`), on a host-side interface
/// instead of a container's `ethwe`: the host's processes and, through its routing, machines
/// outside the overlay come in behind it, so frames it sends may carry a source outside every
/// overlay subnet, and frames for a destination outside the overlay may be sent to it as a
/// gateway. A local one is delivered with `bpf_redirect` (its interface shares the programs'
/// namespace, where `bpf_redirect_peer` refuses).
pub const ENDPOINT_EXPOSED: u8 = 4;

/// The endpoint is a service of this host's agent (its DNS server), on a host-side interface
/// like an exposed address and delivered the same way. Every local endpoint may talk to it
/// whatever its subnet, no remote one may, and it is never gossiped: each host has its own
/// at the same address.
pub const ENDPOINT_SERVICE: u8 = 8;

/// A container address on the overlay: where it lives and which subnet it belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// The container's `ethwe` MAC; frames handed to the endpoint get it as destination.
    pub mac: [u8; 6],
    pub prefix_len: u8,
    /// [`ENDPOINT_LOCAL`] (and maybe [`ENDPOINT_FORWARDS`]), or 0 (remote); and
    /// [`ENDPOINT_EXPOSED`] for an exposed host address, local or remote;
    /// [`ENDPOINT_SERVICE`] for the agent's own service address.
    pub flags: u8,
    /// Local: ifindex of the host-side veth. Remote: 0.
    pub ifindex: u32,
    /// Remote: underlay address of the peer hosting it ([`Ipv4Key`]). Local: 0.
    pub peer: Ipv4Key,
    /// Network address of the endpoint's subnet ([`Ipv4Key`]); with `prefix_len` it decides
    /// who may talk to whom.
    pub subnet: Ipv4Key,
}

impl Endpoint {
    pub const fn is_local(&self) -> bool {
        self.flags & ENDPOINT_LOCAL != 0
    }

    /// See [`ENDPOINT_FORWARDS`].
    pub const fn forwards(&self) -> bool {
        self.flags & ENDPOINT_FORWARDS != 0
    }

    /// See [`ENDPOINT_EXPOSED`].
    pub const fn exposed(&self) -> bool {
        self.flags & ENDPOINT_EXPOSED != 0
    }

    /// See [`ENDPOINT_SERVICE`].
    pub const fn service(&self) -> bool {
        self.flags & ENDPOINT_SERVICE != 0
    }

    /// Both endpoints are in the same subnet, so traffic between them is allowed.
    pub const fn same_subnet(&self, other: &Self) -> bool {
        self.subnet == other.subnet && self.prefix_len == other.prefix_len
    }

    /// One is the agent's service and the other a local endpoint (see [`ENDPOINT_SERVICE`]).
    pub const fn local_service_pair(&self, other: &Self) -> bool {
        (self.service() && other.is_local()) || (other.service() && self.is_local())
    }
}

/// The value of the overlay-subnet map (an LPM trie keyed by network address and prefix
/// length): every subnet an endpoint anywhere in the mesh belongs to, so the programs can tell
/// an address outside the overlay from one inside it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverlaySubnet {
    /// This host's exposed address in the subnet ([`Ipv4Key`]), 0 if none: where a frame from
    /// the subnet for a destination outside the overlay is handed, whichever way it came.
    pub exposed_here: Ipv4Key,
}

/// Remote frames go through the kernel VXLAN (collect_md) device.
pub const ENCAP_VXLAN_DEVICE: u32 = 0;
/// Remote frames are encapsulated and decapsulated by the eBPF programs themselves.
pub const ENCAP_EBPF: u32 = 1;

/// Data-path settings the agent fills in at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// ifindex of the VXLAN (collect_md) device remote traffic is sent through; 0 = none yet.
    pub vxlan_ifindex: u32,
    pub vni: u32,
    /// [`ENCAP_VXLAN_DEVICE`] or [`ENCAP_EBPF`].
    pub encap: u32,
    /// The underlay interface and its address ([`Ipv4Key`]), for eBPF encapsulation.
    pub underlay_ifindex: u32,
    pub underlay_ip: Ipv4Key,
    /// 1 when an XDP program on the underlay filters and counts arrivals; else the underlay's
    /// TC program does.
    pub underlay_xdp: u32,
    /// 1 when the kernel can clear a packet's UDP-tunnel GSO state as eBPF strips the tunnel
    /// (`BPF_F_ADJ_ROOM_DECAP_L4_UDP`), so GSO super-packets for every endpoint are
    /// decapsulated in eBPF; 0: only those for endpoints that do not forward
    /// ([`ENDPOINT_FORWARDS`]).
    pub gso_decap: u32,
    /// The underlay interface's MAC. With `underlay_ip` it tells which overlay packets are this
    /// host's: a promiscuous or bridged underlay shows the programs other hosts' packets too.
    /// All zero for an interface without one; then the address alone decides.
    pub underlay_mac: [u8; 6],
    /// UDP port of the VXLAN data plane (host byte order): what overlay packets are sent to
    /// and recognised by. Sits where padding was, so the map value keeps its size.
    pub vxlan_port: u16,
    /// Broadcast and multicast frames per second each local endpoint may send (see
    /// `crate::flood`); 0: no limit.
    pub flood_pps: u32,
}

/// A [`PeerRoute`] flag: frames to and from this peer may cross in clear (both hosts trust the
/// path between them). Without it, and with [`crate::seal::CryptoPath::seal`] set, they must
/// be sealed.
pub const PEER_PLAIN: u16 = 1;

/// How to reach a live peer: the value of the peers map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    /// Underlay address ([`Ipv4Key`]) frames for this peer are sent to: the peer's own when it
    /// is reached directly, else the relay that is the first hop of the shortest path.
    pub next_hop: Ipv4Key,
    /// Largest outer IPv4 packet the path to this peer carries (through the relays, if any),
    /// as the hellos found it; 0 until learned. A container frame that would make a bigger
    /// one is answered with ICMP "fragmentation needed" instead of being sent into a hop
    /// that would drop it.
    pub mtu: u16,
    /// [`PEER_PLAIN`] or 0.
    pub flags: u16,
}

impl PeerRoute {
    pub const fn direct(peer: Ipv4Key) -> Self {
        Self::new(peer, 0)
    }

    pub const fn new(next_hop: Ipv4Key, mtu: u16) -> Self {
        Self {
            next_hop,
            mtu,
            flags: 0,
        }
    }

    /// Frames for this peer may cross in clear (see [`PEER_PLAIN`]).
    pub const fn plain(&self) -> bool {
        self.flags & PEER_PLAIN != 0
    }
}

/// What the underlay program notes of each peer's hellos: the value of the heard map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// When the last hello arrived (`bpf_ktime_get_ns`).
    pub at_ns: u64,
    /// When the largest hello of the current window arrived; a window ends
    /// [`LARGEST_WINDOW_NS`] after it, and the next hello starts a new one, so a path whose
    /// MTU shrank is seen to shrink.
    pub largest_at_ns: u64,
    /// IPv4 total length of that hello: the largest packet known to cross from the peer.
    pub largest: u32,
    pub reserved: u32,
}

/// How long the largest hello heard counts (see [`Heard::largest_at_ns`]): three rounds of
/// probes, which agents send once a second.
pub const LARGEST_WINDOW_NS: u64 = 3_000_000_000;

impl Heard {
    /// This record after a hello of IPv4 total length `len` arrived at `now`.
    pub const fn after(self, len: u32, now: u64) -> Self {
        let expired = now.saturating_sub(self.largest_at_ns) > LARGEST_WINDOW_NS;
        let (largest, largest_at_ns) = if expired || len >= self.largest {
            (len, now)
        } else {
            (self.largest, self.largest_at_ns)
        };
        Self {
            at_ns: now,
            largest_at_ns,
            largest,
            reserved: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), one u32, any bits valid.
unsafe impl aya::Pod for OverlaySubnet {}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 and two u32, no padding, any bits valid.
unsafe impl aya::Pod for Heard {}

#[cfg(feature = "user")]
// SAFETY: repr(C), a u32 and two u16, no padding, any bits valid.
unsafe impl aya::Pod for PeerRoute {}
#[cfg(feature = "user")]
// SAFETY: repr(C) of integers and byte arrays, no padding (6+1+1+4+4+4), any bits valid.
unsafe impl aya::Pod for Endpoint {}
#[cfg(feature = "user")]
// SAFETY: repr(C), seven u32, 6 bytes, a u16 and a u32, no padding, any bits valid.
unsafe impl aya::Pod for Config {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_has_no_padding() {
        assert_eq!(core::mem::size_of::<Endpoint>(), 20);
    }

    #[test]
    fn config_has_no_padding() {
        assert_eq!(core::mem::size_of::<Config>(), 40);
    }

    #[test]
    fn the_largest_hello_counts_for_its_window_then_a_smaller_one_takes_over() {
        let s = 1_000_000_000;
        let h = Heard::default().after(1000, 10 * s);
        assert_eq!((h.largest, h.at_ns), (1000, 10 * s));
        let h = h.after(58, 11 * s);
        assert_eq!(
            (h.largest, h.largest_at_ns, h.at_ns),
            (1000, 10 * s, 11 * s)
        );
        let h = h.after(1500, 12 * s);
        assert_eq!(h.largest, 1500);
        // The path shrinks: 1500 stops arriving; after the window, the next one counts.
        let h = h.after(1000, 14 * s);
        assert_eq!(h.largest, 1500);
        let h = h.after(1000, 15 * s + 1);
        assert_eq!((h.largest, h.largest_at_ns), (1000, 15 * s + 1));
        assert_eq!(core::mem::size_of::<Heard>(), 24);
        assert_eq!(core::mem::size_of::<PeerRoute>(), 8);
    }

    #[test]
    fn endpoint_macs_map_back_to_their_address() {
        let ip = [192, 168, 1, 10];
        assert_eq!(endpoint_mac_address(&endpoint_mac(ip)), Some(ip));
        assert_eq!(endpoint_mac_address(&[0x02, 0x42, 192, 168, 1, 10]), None);
    }

    #[test]
    fn keys_are_packet_byte_order() {
        let key = ipv4_key([192, 168, 1, 10]);
        assert_eq!(key.to_ne_bytes(), [192, 168, 1, 10]);
        assert_eq!(ipv4_octets(key), [192, 168, 1, 10]);
    }
}

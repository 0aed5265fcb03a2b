//! Per-CPU packet/byte counters: one slot per path a packet can take and per drop reason.
//!
//! [`CounterId`] is the one numbered list of both, read by the eBPF programs and the agent
//! alike (as Cilium's `drop_reasons.h`). Names starting with `drop_` are drop reasons, which
//! the metrics report as reasons of the drop families; every other name is a path.

/// One counter slot. The map is per-CPU, so each CPU adds to its own copy without atomics and
/// the agent sums the copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    /// Bytes of the container's Ethernet frame: what an endpoint sent, or what an overlay
    /// packet carries (the packet less its 50 bytes of outer Ethernet, IPv4, UDP and VXLAN),
    /// whichever program counts it and whether the kernel's VXLAN device or eBPF took the outer
    /// headers off, so a counter's bytes add up across paths. Only the counters made on an
    /// underlay packet before it is known to carry a frame for this host count the packet as it
    /// arrived ([`CounterId::counts_underlay_packet`]).
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}

/// Index of a slot in the counters map.
///
/// Append new slots at the end: the map is pinned and survives agent upgrades, so an existing
/// slot must keep its index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterId {
    /// Every frame that arrived on the underlay (counted by XDP, or by TC where no XDP runs).
    UnderlayRx = 0,
    /// Every frame the container-veth TC program saw.
    ContainerRx = 1,
    /// Overlay (VXLAN) packets from a live peer, passed on to be decapsulated.
    UnderlayOverlayPass = 2,
    /// Dropped: overlay packet for this host whose outer source is not a live peer.
    DropOverlayNotPeer = 3,
    /// ARP requests for a known endpoint the asker may talk to, answered in eBPF.
    ArpReplied = 4,
    /// Container frames handed to a container on this host.
    LocalDelivered = 5,
    /// Container frames sent to a remote host (eBPF-built headers or the VXLAN device).
    RemoteSent = 6,
    /// Decapsulated frames the overlay TC program saw.
    OverlayRx = 7,
    /// Decapsulated frames handed to a container on this host.
    OverlayDelivered = 8,
    /// Dropped: source IP or MAC (of IPv4, or the sender of an ARP request or probe) is not
    /// the sending endpoint's (anti-spoofing).
    DropSpoofed = 9,
    /// Dropped: source and destination are in different subnets that no rule opens to each
    /// other (isolation); also ARP requests and probes for such a destination.
    DropIsolated = 10,
    /// Dropped: IPv4 destination that is no endpoint (or, for a frame from another host, one
    /// on the host that sent it first, which never sends its own containers' frames away).
    DropUnknownDst = 11,
    /// Dropped: neither ARP nor IPv4 (IPv6, other ethertypes), or IPv4 to a group MAC that is
    /// no broadcast or multicast of its sender's subnet (see `crate::flood::kind`).
    DropNotIpv4Unicast = 12,
    /// Dropped: ARP that is not an IPv4-over-Ethernet request, or a request (not a probe) for
    /// an address no endpoint holds.
    DropArp = 13,
    /// Dropped: the sender's frame is malformed: too short for its headers, an IPv4 version
    /// other than 4, a header under 20 bytes, or a total length beyond the frame.
    DropMalformed = 14,
    /// Dropped: remote destination but no VXLAN device configured.
    DropNoTunnel = 15,
    /// Dropped: decapsulated frame whose inner source is an endpoint that another host (or this
    /// one) holds, not the sending peer, or whose source MAC is not that endpoint's.
    DropOverlaySpoofed = 16,
    /// Dropped: a redirect helper, or setting the tunnel key, failed (logged too).
    DropRedirectFailed = 17,
    /// Overlay frames decapsulated by the underlay TC program (eBPF encapsulation mode).
    UnderlayDecap = 18,
    /// Dropped: VXLAN from a peer with the I flag clear or another VNI.
    DropBadVxlan = 19,
    /// VXLAN packets arriving in IP fragments, left to the kernel to reassemble.
    OverlayFragment = 20,
    /// Container frames eBPF encapsulation left to the VXLAN device: too big for the underlay
    /// once wrapped (the device fragments the outer packet), or already marked as tunnelled
    /// (a tunnel inside the container), which the kernel refuses to wrap in eBPF.
    RemoteSentDevice = 21,
    /// Dropped: the underlay marked congestion (CE) on a packet whose sender does not do ECN,
    /// so the mark cannot be passed on (RFC 6040, as the kernel's tunnels do).
    DropCeOnNotEct = 22,
    /// Dropped: the kernel refused to pull headers into linear data, resize the packet or
    /// write its new headers (`bpf_skb_pull_data`, `bpf_skb_adjust_room`, `bpf_skb_store_bytes`:
    /// memory, or a packet shape the helper does not take). The sender did nothing wrong;
    /// logged too.
    DropKernelRefused = 23,
    /// Dropped: a frame on the VXLAN device without IPv4 tunnel metadata
    /// (`bpf_skb_get_tunnel_key` failed), so there is no outer source to check.
    DropNoTunnelKey = 24,
    /// Dropped: decapsulated frame whose inner source is no endpoint known here. Also what an
    /// endpoint that was just attached on a peer sends before gossip has told this host.
    DropOverlayUnknownSrc = 25,
    /// ARP probes (RFC 5227, sender address 0.0.0.0) for an address another endpoint holds,
    /// answered in eBPF so the prober sees the conflict.
    ArpProbeAnswered = 26,
    /// ARP probes left unanswered, which tells the prober the address is free: no other
    /// endpoint holds it, or it is the prober's own.
    ArpProbeUnanswered = 27,
    /// VXLAN packets on the underlay addressed to another host (IPv4 or MAC), which a
    /// promiscuous or bridged underlay shows: passed on untouched, never decapsulated or
    /// filtered here.
    UnderlayOtherHost = 28,
    /// GSO super-packets (TCP bulk) decapsulated in eBPF and handed to the container; they are
    /// counted in `underlay_decap` too.
    UnderlayDecapGso = 29,
    /// GSO super-packets left to the kernel's VXLAN device because their endpoint forwards
    /// (see `ENDPOINT_FORWARDS`): only that path clears their tunnel GSO state on this kernel.
    UnderlayGsoForwarding = 30,
    /// GSO super-packets left to the kernel's VXLAN device because `bpf_skb_adjust_room`
    /// refused to strip them (a packet shape or flag this kernel does not take): unchanged,
    /// delivered the kernel's way.
    UnderlayGsoRefused = 31,
    /// Link hellos from live peers, recorded as heard and dropped (see
    /// `weave_common::relay::HELLO_VNI`): who hears whom is what relaying routes on.
    LinkHello = 32,
    /// Overlay frames for a third host sent on towards it (relayed) without leaving the kernel.
    RelayForwarded = 33,
    /// Dropped: a frame that has passed as many relays as it may (a routing loop while
    /// routes disagree, or one built on purpose).
    DropRelayHopLimit = 34,
    /// Dropped: a frame to relay whose destination host is not a live peer here.
    DropRelayNoRoute = 35,
    /// Dropped: a frame to relay with an outer UDP checksum, which the relay would have to
    /// recompute; weave-agent's own frames carry none (RFC 7348 allows that over IPv4).
    DropRelayUdpChecksum = 36,
    /// Relayed frames (sent first by a host other than the outer source) for a container here,
    /// passed on to be delivered once their origin is known to be a live peer.
    RelayReceived = 37,
    /// Dropped: a relayed frame whose origin is not a live peer here (or is this host: a frame
    /// back where it started, which a loop through it brings).
    DropRelayOriginNotPeer = 38,
    /// Container packets too big for the path to their host (a hop with a smaller MTU than
    /// the underlay NIC), answered with ICMP "fragmentation needed" carrying the MTU that
    /// fits, so the container's stack sends smaller ones.
    IcmpFragNeeded = 39,
    /// Dropped: a container packet too big for the path to its host that no ICMP answer
    /// could be made for (IP options).
    DropTooBig = 40,
    /// Container frames for a peer whose traffic is sealed, handed to the agent's crypto path.
    SealToAgent = 41,
    /// Dropped: a frame to or from a peer whose traffic must be sealed while the agent's
    /// crypto path is down (the agent stopped, or not started yet). Never sent in clear.
    DropNoSession = 42,
    /// Sealed datagrams for this host, handed to the agent's crypto path to open.
    SealedReceived = 43,
    /// Sealed datagrams for a third host, sent on towards it unread.
    SealedRelayed = 44,
    /// Dropped: a plain overlay frame from a peer whose traffic must be sealed (forged, or
    /// from a peer that does not trust the path).
    DropNotSealed = 45,
    /// Frames the agent opened, handed to a container here.
    OpenedDelivered = 46,
    /// Frames from outside the overlay (a host process's own address, or a machine the host
    /// routes in) that entered it through an exposed address (`expose`).
    ExposedFromOutside = 47,
    /// Container frames for a destination outside the overlay, sent to the exposed address
    /// their container routes them through.
    ExposedToOutside = 48,
    /// Broadcast frames (to 255.255.255.255 or their subnet's broadcast address) that
    /// endpoints here sent, copied to the subnet's other members.
    BroadcastSent = 49,
    /// Multicast frames (224.0.0.0/4) that endpoints here sent, copied to the subnet's other
    /// members.
    MulticastSent = 50,
    /// Copies of broadcast frames handed to endpoints here (from this host or another).
    BroadcastDelivered = 51,
    /// Copies of multicast frames handed to endpoints here (from this host or another).
    MulticastDelivered = 52,
    /// Copies of broadcast frames sent to other hosts, one per host with members.
    BroadcastRemoteSent = 53,
    /// Copies of multicast frames sent to other hosts, one per host with members.
    MulticastRemoteSent = 54,
    /// Dropped: a broadcast or multicast frame over its endpoint's rate (`launch
    /// --flood-rate`), which keeps one container from flooding the mesh.
    DropRateLimited = 55,
    /// Broadcast frames from other hosts, copied to the members of their subnet here.
    BroadcastReceived = 56,
    /// Multicast frames from other hosts, copied to the members of their subnet here.
    MulticastReceived = 57,
    /// IPv6 neighbour solicitations answered from the endpoint map (as ARP is), so none leaves
    /// the host.
    Ipv6NdAnswered = 58,
    /// IPv6 frames handed from one container to another on this host.
    Ipv6LocalDelivered = 59,
    /// IPv6 frames sent towards another host (plain; sealed ones count as `seal_to_agent`).
    Ipv6RemoteSent = 60,
    /// IPv6 frames from other hosts handed to a container here.
    Ipv6Delivered = 61,
    /// Dropped: IPv6 the overlay does not carry: router solicitations and advertisements,
    /// multicast listener reports, duplicate address probes, and multicast beyond neighbour
    /// discovery (there is no router on the overlay, and neighbour discovery is answered here).
    DropIpv6Control = 62,
}

impl CounterId {
    /// All slots, in index order.
    pub const ALL: [Self; 63] = [
        Self::UnderlayRx,
        Self::ContainerRx,
        Self::UnderlayOverlayPass,
        Self::DropOverlayNotPeer,
        Self::ArpReplied,
        Self::LocalDelivered,
        Self::RemoteSent,
        Self::OverlayRx,
        Self::OverlayDelivered,
        Self::DropSpoofed,
        Self::DropIsolated,
        Self::DropUnknownDst,
        Self::DropNotIpv4Unicast,
        Self::DropArp,
        Self::DropMalformed,
        Self::DropNoTunnel,
        Self::DropOverlaySpoofed,
        Self::DropRedirectFailed,
        Self::UnderlayDecap,
        Self::DropBadVxlan,
        Self::OverlayFragment,
        Self::RemoteSentDevice,
        Self::DropCeOnNotEct,
        Self::DropKernelRefused,
        Self::DropNoTunnelKey,
        Self::DropOverlayUnknownSrc,
        Self::ArpProbeAnswered,
        Self::ArpProbeUnanswered,
        Self::UnderlayOtherHost,
        Self::UnderlayDecapGso,
        Self::UnderlayGsoForwarding,
        Self::UnderlayGsoRefused,
        Self::LinkHello,
        Self::RelayForwarded,
        Self::DropRelayHopLimit,
        Self::DropRelayNoRoute,
        Self::DropRelayUdpChecksum,
        Self::RelayReceived,
        Self::DropRelayOriginNotPeer,
        Self::IcmpFragNeeded,
        Self::DropTooBig,
        Self::SealToAgent,
        Self::DropNoSession,
        Self::SealedReceived,
        Self::SealedRelayed,
        Self::DropNotSealed,
        Self::OpenedDelivered,
        Self::ExposedFromOutside,
        Self::ExposedToOutside,
        Self::BroadcastSent,
        Self::MulticastSent,
        Self::BroadcastDelivered,
        Self::MulticastDelivered,
        Self::BroadcastRemoteSent,
        Self::MulticastRemoteSent,
        Self::DropRateLimited,
        Self::BroadcastReceived,
        Self::MulticastReceived,
        Self::Ipv6NdAnswered,
        Self::Ipv6LocalDelivered,
        Self::Ipv6RemoteSent,
        Self::Ipv6Delivered,
        Self::DropIpv6Control,
    ];

    /// Slots in the counters map: room to append counters without a map of another size,
    /// which an upgraded agent could not take over from the pins.
    pub const SLOTS: u32 = 64;

    /// Stable name used in `status` output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnderlayRx => "underlay_rx",
            Self::ContainerRx => "container_rx",
            Self::UnderlayOverlayPass => "underlay_overlay_pass",
            Self::DropOverlayNotPeer => "drop_overlay_not_peer",
            Self::ArpReplied => "arp_replied",
            Self::LocalDelivered => "local_delivered",
            Self::RemoteSent => "remote_sent",
            Self::OverlayRx => "overlay_rx",
            Self::OverlayDelivered => "overlay_delivered",
            Self::DropSpoofed => "drop_spoofed",
            Self::DropIsolated => "drop_isolated",
            Self::DropUnknownDst => "drop_unknown_dst",
            Self::DropNotIpv4Unicast => "drop_not_ipv4_unicast",
            Self::DropArp => "drop_arp",
            Self::DropMalformed => "drop_malformed",
            Self::DropNoTunnel => "drop_no_tunnel",
            Self::DropOverlaySpoofed => "drop_overlay_spoofed",
            Self::DropRedirectFailed => "drop_redirect_failed",
            Self::UnderlayDecap => "underlay_decap",
            Self::DropBadVxlan => "drop_bad_vxlan",
            Self::OverlayFragment => "overlay_fragment",
            Self::RemoteSentDevice => "remote_sent_device",
            Self::DropCeOnNotEct => "drop_ce_on_not_ect",
            Self::DropKernelRefused => "drop_kernel_refused",
            Self::DropNoTunnelKey => "drop_no_tunnel_key",
            Self::DropOverlayUnknownSrc => "drop_overlay_unknown_src",
            Self::ArpProbeAnswered => "arp_probe_answered",
            Self::ArpProbeUnanswered => "arp_probe_unanswered",
            Self::UnderlayOtherHost => "underlay_other_host",
            Self::UnderlayDecapGso => "underlay_decap_gso",
            Self::UnderlayGsoForwarding => "underlay_gso_forwarding",
            Self::UnderlayGsoRefused => "underlay_gso_refused",
            Self::LinkHello => "link_hello",
            Self::RelayForwarded => "relay_forwarded",
            Self::DropRelayHopLimit => "drop_relay_hop_limit",
            Self::DropRelayNoRoute => "drop_relay_no_route",
            Self::DropRelayUdpChecksum => "drop_relay_udp_checksum",
            Self::RelayReceived => "relay_received",
            Self::DropRelayOriginNotPeer => "drop_relay_origin_not_peer",
            Self::IcmpFragNeeded => "icmp_frag_needed",
            Self::DropTooBig => "drop_too_big",
            Self::SealToAgent => "seal_to_agent",
            Self::DropNoSession => "drop_no_session",
            Self::SealedReceived => "sealed_received",
            Self::SealedRelayed => "sealed_relayed",
            Self::DropNotSealed => "drop_not_sealed",
            Self::OpenedDelivered => "opened_delivered",
            Self::ExposedFromOutside => "exposed_from_outside",
            Self::ExposedToOutside => "exposed_to_outside",
            Self::BroadcastSent => "broadcast_sent",
            Self::MulticastSent => "multicast_sent",
            Self::BroadcastDelivered => "broadcast_delivered",
            Self::MulticastDelivered => "multicast_delivered",
            Self::BroadcastRemoteSent => "broadcast_remote_sent",
            Self::MulticastRemoteSent => "multicast_remote_sent",
            Self::DropRateLimited => "drop_rate_limited",
            Self::BroadcastReceived => "broadcast_received",
            Self::MulticastReceived => "multicast_received",
            Self::Ipv6NdAnswered => "ipv6_nd_answered",
            Self::Ipv6LocalDelivered => "ipv6_local_delivered",
            Self::Ipv6RemoteSent => "ipv6_remote_sent",
            Self::Ipv6Delivered => "ipv6_delivered",
            Self::DropIpv6Control => "drop_ipv6_control",
        }
    }

    /// Whether this counter's bytes are the underlay packet as it arrived (see
    /// [`Counter::bytes`]): the counters made on the outer headers, before the packet is known
    /// to carry a container frame for this host.
    pub const fn counts_underlay_packet(self) -> bool {
        matches!(
            self,
            Self::UnderlayRx
                | Self::UnderlayOverlayPass
                | Self::DropOverlayNotPeer
                | Self::OverlayFragment
                | Self::UnderlayOtherHost
                | Self::LinkHello
        )
    }

    /// The frame was copied to its receivers and goes no further itself: the program counts
    /// this and drops the original.
    pub const fn replicated(self) -> bool {
        matches!(
            self,
            Self::BroadcastSent
                | Self::MulticastSent
                | Self::BroadcastReceived
                | Self::MulticastReceived
        )
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dense_and_in_order() {
        for (i, id) in CounterId::ALL.iter().enumerate() {
            assert_eq!(id.index() as usize, i, "{id:?} is out of place");
        }
    }

    #[test]
    fn the_map_has_room_for_every_counter() {
        assert!(CounterId::ALL.len() as u32 <= CounterId::SLOTS);
    }

    /// The map is pinned across upgrades: a slot that moved would be read under another name.
    #[test]
    fn slots_keep_their_numbers() {
        let released = [
            "underlay_rx",
            "container_rx",
            "underlay_overlay_pass",
            "drop_overlay_not_peer",
            "arp_replied",
            "local_delivered",
            "remote_sent",
            "overlay_rx",
            "overlay_delivered",
            "drop_spoofed",
            "drop_isolated",
            "drop_unknown_dst",
            "drop_not_ipv4_unicast",
            "drop_arp",
            "drop_malformed",
            "drop_no_tunnel",
            "drop_overlay_spoofed",
            "drop_redirect_failed",
            "underlay_decap",
            "drop_bad_vxlan",
            "overlay_fragment",
            "remote_sent_device",
            "drop_ce_on_not_ect",
            "drop_kernel_refused",
            "drop_no_tunnel_key",
            "drop_overlay_unknown_src",
            "arp_probe_answered",
            "arp_probe_unanswered",
            "underlay_other_host",
            "underlay_decap_gso",
            "underlay_gso_forwarding",
            "underlay_gso_refused",
            "link_hello",
            "relay_forwarded",
            "drop_relay_hop_limit",
            "drop_relay_no_route",
            "drop_relay_udp_checksum",
            "relay_received",
            "drop_relay_origin_not_peer",
            "icmp_frag_needed",
            "drop_too_big",
            "seal_to_agent",
            "drop_no_session",
            "sealed_received",
            "sealed_relayed",
            "drop_not_sealed",
            "opened_delivered",
            "exposed_from_outside",
            "exposed_to_outside",
            "broadcast_sent",
            "multicast_sent",
            "broadcast_delivered",
            "multicast_delivered",
            "broadcast_remote_sent",
            "multicast_remote_sent",
            "drop_rate_limited",
            "broadcast_received",
            "multicast_received",
            "ipv6_nd_answered",
            "ipv6_local_delivered",
            "ipv6_remote_sent",
            "ipv6_delivered",
            "drop_ipv6_control",
        ];
        for (index, name) in released.iter().enumerate() {
            assert_eq!(CounterId::ALL[index].name(), *name, "slot {index}");
        }
    }

    #[test]
    fn names_are_unique() {
        for a in CounterId::ALL {
            for b in CounterId::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
    }
}

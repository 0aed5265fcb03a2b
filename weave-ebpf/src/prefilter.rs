//! The check every overlay packet meets first: UDP to the VXLAN port for this host must come
//! from a live peer. XDP makes it where the driver runs XDP natively; elsewhere (a veth
//! underlay) the underlay's TC program does, because generic XDP copies each multi-page packet
//! (every TCP super-packet, the host's own traffic included) into one linear buffer before the
//! program sees it.

use weave_common::endpoint::{Config, ipv4_key};

use crate::headers::{ETH_LEN, ETH_P_IP, EthHdr, IPPROTO_UDP, Ipv4Hdr, Packet, UdpHdr};

/// What an underlay arrival is to the overlay.
pub(crate) enum Arrival {
    /// Not VXLAN: the host's own traffic.
    Other,
    /// VXLAN for another host, by IPv4 or MAC destination: a promiscuous or bridged underlay
    /// shows it to us too. Not ours to filter or decapsulate; the kernel forwards it (a bridge)
    /// or drops it as another host's.
    OtherHost,
    /// VXLAN for this host from the underlay address `source` (an `Ipv4Key`), peer or not.
    Overlay(u32),
}

/// Classifies an underlay frame by its outer headers, against this host's underlay address
/// and MAC in `cfg` (a MAC of all zeros, for an interface without one, is not compared).
#[inline(always)]
pub(crate) fn arrival<P: Packet>(packet: &P, cfg: &Config) -> Arrival {
    let Some(eth) = packet.read::<EthHdr>(0) else {
        return Arrival::Other;
    };
    let Some(ip) = packet.read::<Ipv4Hdr>(ETH_LEN) else {
        return Arrival::Other;
    };
    // A later fragment has no UDP header: its payload could pass for any port.
    if eth.proto() != ETH_P_IP || ip.proto != IPPROTO_UDP || ip.is_later_fragment() {
        return Arrival::Other;
    }
    let ihl = usize::from(ip.ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Arrival::Other;
    }
    match packet.read::<UdpHdr>(ETH_LEN + ihl) {
        Some(udp) if u16::from_be_bytes(udp.dst) == cfg.vxlan_port => {}
        _ => return Arrival::Other,
    }
    let our_mac = cfg.underlay_mac == [0; 6] || eth.dst == cfg.underlay_mac;
    if ipv4_key(ip.dst) != cfg.underlay_ip || !our_mac {
        return Arrival::OtherHost;
    }
    Arrival::Overlay(ipv4_key(ip.src))
}

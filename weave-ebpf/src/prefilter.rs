//! The check every overlay packet meets first: UDP to the VXLAN port must come from a live peer.
//! XDP makes it where the driver runs XDP natively; elsewhere (a veth underlay) the underlay's
//! TC program does, because generic XDP copies each multi-page packet (every TCP super-packet,
//! the host's own traffic included) into one linear buffer before the program sees it.

use weave_common::{VXLAN_PORT, endpoint::ipv4_key};

use crate::headers::{ETH_LEN, ETH_P_IP, EthHdr, IPPROTO_UDP, Ipv4Hdr, Packet, UdpHdr};

/// Outer source address (an `Ipv4Key`) if this is a VXLAN packet to our port; None for
/// anything else.
#[inline(always)]
pub(crate) fn overlay_source<P: Packet>(packet: &P) -> Option<u32> {
    let eth: EthHdr = packet.read(0)?;
    if eth.proto() != ETH_P_IP {
        return None;
    }
    let ip: Ipv4Hdr = packet.read(ETH_LEN)?;
    // A later fragment has no UDP header: its payload could pass for any port.
    if ip.proto != IPPROTO_UDP || ip.is_later_fragment() {
        return None;
    }
    let ihl = usize::from(ip.ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let udp: UdpHdr = packet.read(ETH_LEN + ihl)?;
    (u16::from_be_bytes(udp.dst) == VXLAN_PORT).then(|| ipv4_key(ip.src))
}

//! XDP on the underlay (host) NIC: overlay packets from anyone but a live peer never reach the
//! VXLAN device. Everything else passes untouched.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use weave_common::{VXLAN_PORT, counters::CounterId, endpoint::ipv4_key};

use crate::{
    counters::count,
    headers::{ETH_LEN, ETH_P_IP, EthHdr, IPPROTO_UDP, Ipv4Hdr, UdpHdr, ptr_at},
    maps::is_peer,
};

#[xdp]
pub fn underlay_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let len = end.saturating_sub(start) as u64;
    count(CounterId::UnderlayRx, len);
    match overlay_source(start, end) {
        Some(source) if !is_peer(source) => {
            count(CounterId::DropOverlayNotPeer, len);
            xdp_action::XDP_DROP
        }
        Some(_) => {
            count(CounterId::UnderlayOverlayPass, len);
            xdp_action::XDP_PASS
        }
        None => xdp_action::XDP_PASS,
    }
}

/// Outer source address if this is a VXLAN packet to our port; None for anything else.
#[inline(always)]
fn overlay_source(start: usize, end: usize) -> Option<u32> {
    let eth: *mut EthHdr = ptr_at(start, end, 0)?;
    // SAFETY: ptr_at checked the header lies inside the packet.
    if unsafe { (*eth).proto() } != ETH_P_IP {
        return None;
    }
    let ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_LEN)?;
    // SAFETY: as above.
    let (ver_ihl, proto, src, later) = unsafe {
        (
            (*ip).ver_ihl,
            (*ip).proto,
            (*ip).src,
            (*ip).is_later_fragment(),
        )
    };
    // A later fragment has no UDP header: its payload could pass for any port.
    if proto != IPPROTO_UDP || later {
        return None;
    }
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let udp: *mut UdpHdr = ptr_at(start, end, ETH_LEN + ihl)?;
    // SAFETY: as above.
    let dst_port = u16::from_be_bytes(unsafe { (*udp).dst });
    (dst_port == VXLAN_PORT).then(|| ipv4_key(src))
}

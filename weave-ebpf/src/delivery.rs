//! What a frame from another host must be to reach a container here, the same whichever way
//! it was decapsulated: by the kernel's VXLAN device (`overlay_tc`) or in eBPF (`underlay_tc`),
//! and what a relay checks before it sends a frame on.

use weave_common::{
    counters::CounterId,
    endpoint::{Endpoint, ipv4_key},
};

use crate::{
    headers::{ETH_P_IP, EthHdr, Ipv4Hdr},
    maps::{endpoint, may_talk},
};

/// The local endpoint the inner frame (`eth`, `ip`, `room` bytes from the IPv4 header on) is
/// for, if it may go there: a frame [`sent_by`] the peer at underlay address `origin`, to a
/// local endpoint its sender may talk to. Else the drop reason.
#[inline(always)]
pub(crate) fn admit(
    eth: &EthHdr,
    ip: &Ipv4Hdr,
    room: u32,
    gso: bool,
    origin: u32,
) -> Result<Endpoint, CounterId> {
    let src = sent_by(eth, ip, room, gso, origin)?;
    let dst = endpoint(ipv4_key(ip.dst))
        .filter(|d| d.is_local())
        .ok_or(CounterId::DropUnknownDst)?;
    if !may_talk(&src, &dst) {
        return Err(CounterId::DropIsolated);
    }
    Ok(dst)
}

/// The endpoint that sent the inner frame, if the frame is what an endpoint on the peer at
/// underlay address `origin` sends: unicast IPv4, well-formed, from an endpoint that peer
/// hosts and with that endpoint's MAC. Else the drop reason.
#[inline(always)]
pub(crate) fn sent_by(
    eth: &EthHdr,
    ip: &Ipv4Hdr,
    room: u32,
    gso: bool,
    origin: u32,
) -> Result<Endpoint, CounterId> {
    if eth.proto() != ETH_P_IP || eth.dst[0] & 1 != 0 {
        return Err(CounterId::DropNotIpv4Unicast);
    }
    if !ip.is_sane(room, gso) {
        return Err(CounterId::DropMalformed);
    }
    // Unknown is not forged: an endpoint attached on the peer a moment ago sends before
    // gossip has brought it here.
    let src = endpoint(ipv4_key(ip.src)).ok_or(CounterId::DropOverlayUnknownSrc)?;
    if src.is_local() || src.peer != origin || src.mac != eth.src {
        return Err(CounterId::DropOverlaySpoofed);
    }
    Ok(src)
}

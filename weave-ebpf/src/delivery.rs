//! What a frame from another host must be to reach a container here, the same whichever way
//! it was decapsulated: by the kernel's VXLAN device (`overlay_tc`) or in eBPF (`underlay_tc`),
//! or opened by the agent (`tap_tc`), and what a relay checks before it sends a frame on.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT, helpers::generated::bpf_redirect_peer, programs::TcContext,
};
use weave_common::{
    counters::CounterId,
    endpoint::{Endpoint, ipv4_key},
};

use crate::{
    headers::{ETH_LEN, ETH_P_IP, EthHdr, Ipv4Hdr, is_gso, ptr_at},
    maps::{endpoint, may_talk},
};

const HEADERS_LEN: u32 = (ETH_LEN + core::mem::size_of::<Ipv4Hdr>()) as u32;

/// Hands the frame in `ctx` (Ethernet, then IPv4) to the local endpoint it is for, if it may go
/// there from the peer that `origin` names from its Ethernet header: the checks of [`admit`],
/// the endpoint's current MAC as destination, `bpf_redirect_peer`. Else the drop reason.
#[inline(always)]
pub(crate) fn deliver_local(
    ctx: &TcContext,
    origin: impl FnOnce(&EthHdr) -> Result<u32, CounterId>,
) -> Result<(), CounterId> {
    if ctx.data_end() - ctx.data() < HEADERS_LEN as usize && ctx.len() >= HEADERS_LEN {
        ctx.pull_data(HEADERS_LEN)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(CounterId::DropMalformed)?;
    let ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
    let room = ctx.len() - ETH_LEN as u32;
    // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
    unsafe {
        let origin = origin(&*eth)?;
        let dst = admit(&*eth, &*ip, room, is_gso(ctx), origin)?;
        (*eth).dst = dst.mac;
        if bpf_redirect_peer(dst.ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
    }
    Ok(())
}

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

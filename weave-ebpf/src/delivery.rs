//! What a frame from another host must be to reach a container here, the same whichever way
//! it was decapsulated: by the kernel's VXLAN device (`overlay_tc`) or in eBPF (`underlay_tc`),
//! or opened by the agent (`tap_tc`), and what a relay checks before it sends a frame on.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use weave_common::{
    counters::CounterId,
    endpoint::{Endpoint, ipv4_key},
};

use crate::{
    headers::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr, is_gso, ptr_at},
    ipv6::{admit6, hop},
    maps::{endpoint, exposed_behind, exposed_here, in_overlay, may_talk},
};

const HEADERS_LEN: u32 = (ETH_LEN + core::mem::size_of::<Ipv4Hdr>()) as u32;
const HEADERS6_LEN: u32 = (ETH_LEN + core::mem::size_of::<Ipv6Hdr>()) as u32;

/// Hands the frame in `ctx` (Ethernet, then IPv4 or IPv6) to the local endpoint it is for, if
/// it may go there from the peer that `origin` names from its Ethernet header: the checks of
/// [`admit`] (or [`admit6`]), the endpoint's current MAC as destination, `bpf_redirect_peer`.
/// Then `delivered` (IPv4) or `ipv6_delivered`; else the drop reason.
#[inline(always)]
pub(crate) fn deliver_local(
    ctx: &TcContext,
    delivered: CounterId,
    origin: impl FnOnce(&EthHdr) -> Result<u32, CounterId>,
) -> Result<CounterId, CounterId> {
    if ctx.data_end() - ctx.data() < HEADERS6_LEN as usize && ctx.len() >= HEADERS6_LEN {
        ctx.pull_data(HEADERS6_LEN)
            .map_err(|_| CounterId::DropKernelRefused)?;
    } else if ctx.data_end() - ctx.data() < HEADERS_LEN as usize && ctx.len() >= HEADERS_LEN {
        ctx.pull_data(HEADERS_LEN)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(CounterId::DropMalformed)?;
    let room = ctx.len() - ETH_LEN as u32;
    // SAFETY: ptr_at checked the header lies inside the packet.
    let origin = origin(unsafe { &*eth })?;
    // SAFETY: as above.
    if unsafe { (*eth).proto() } == ETH_P_IPV6 {
        let ip: *mut Ipv6Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
        // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
        let dst = unsafe {
            let dst = admit6(&*eth, &*ip, room, is_gso(ctx), origin)?;
            (*eth).dst = dst.mac;
            hop(&dst)
        };
        hand_to(&dst)?;
        return Ok(CounterId::Ipv6Delivered);
    }
    let ip: *mut Ipv4Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
    // SAFETY: ptr_at checked both headers lie inside the packet; TC may write packet data.
    let dst = unsafe {
        let dst = admit(&*eth, &*ip, room, is_gso(ctx), origin)?;
        (*eth).dst = dst.mac;
        dst
    };
    hand_to(&dst)?;
    Ok(delivered)
}

/// Redirects the frame, its Ethernet destination already `dst`'s MAC, to the local endpoint
/// `dst`: into its container's namespace past the backlog queue (`bpf_redirect_peer`), or, for
/// an exposed host address, whose interface is in this namespace, out of the veth end the
/// programs sit on, so it arrives on the host's side.
#[inline(always)]
pub(crate) fn hand_to(dst: &Endpoint) -> Result<(), CounterId> {
    // SAFETY: redirect helpers with no flags have no preconditions.
    let done = unsafe {
        if dst.exposed() || dst.service() {
            bpf_redirect(dst.ifindex, 0)
        } else {
            bpf_redirect_peer(dst.ifindex, 0)
        }
    };
    if done != i64::from(TC_ACT_REDIRECT) {
        return Err(CounterId::DropRedirectFailed);
    }
    Ok(())
}

/// The local endpoint the inner frame (`eth`, `ip`, `room` bytes from the IPv4 header on) is
/// for, if it may go there: a frame [`sent_by`] the peer at underlay address `origin`, to a
/// local endpoint its sender may talk to; a frame for a destination outside the overlay goes
/// to this host's exposed address in its sender's subnet, the gateway it was routed through
/// (found by subnet, not by the frame's MAC, which the sealed path does not keep). Else the
/// drop reason.
#[inline(always)]
pub(crate) fn admit(
    eth: &EthHdr,
    ip: &Ipv4Hdr,
    room: u32,
    gso: bool,
    origin: u32,
) -> Result<Endpoint, CounterId> {
    let src = sent_by(eth, ip, room, gso, origin)?;
    let dst = match endpoint(ipv4_key(ip.dst)) {
        Some(dst) if dst.is_local() => dst,
        Some(_) => return Err(CounterId::DropUnknownDst),
        // Outside to outside would make the overlay a transit network between two hosts' LANs.
        None if src.exposed() || in_overlay(ipv4_key(ip.dst)) => {
            return Err(CounterId::DropUnknownDst);
        }
        None => exposed_here(&src).ok_or(CounterId::DropUnknownDst)?,
    };
    if !may_talk(&src, &dst) {
        return Err(CounterId::DropIsolated);
    }
    Ok(dst)
}

/// The endpoint that sent the inner frame, if the frame is what an endpoint on the peer at
/// underlay address `origin` sends: unicast IPv4, well-formed, from an endpoint that peer
/// hosts and with that endpoint's MAC; or a frame from outside the overlay that entered it
/// through an exposed address of that peer (its source outside every overlay subnet, its MAC
/// the exposed endpoint's). Else the drop reason.
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
    let src = endpoint(ipv4_key(ip.src))
        .or_else(|| exposed_behind(&eth.src, ip.src))
        .ok_or(CounterId::DropOverlayUnknownSrc)?;
    if src.is_local() || src.peer != origin || src.mac != eth.src {
        return Err(CounterId::DropOverlaySpoofed);
    }
    Ok(src)
}

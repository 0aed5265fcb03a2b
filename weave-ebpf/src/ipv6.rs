//! IPv6 between endpoints (layouts and links in `weave_common::ipv6`): neighbour solicitations
//! answered from the endpoint map as ARP is, the sender checks of a container's frame, and
//! what a frame from another host must be to reach a container here. Who may talk is decided
//! by link, a link-local address being on its endpoint's link; the isolation rules name IPv4
//! subnets and do not open IPv6 links.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::generated::{bpf_csum_diff, bpf_redirect},
    programs::TcContext,
};
use weave_common::{
    counters::CounterId,
    endpoint::Endpoint,
    ipv6::{
        Endpoint6, IPPROTO_ICMPV6, NA_SOLICITED_OVERRIDE, ND_HOP_LIMIT, ND_LEN,
        ND_NEIGHBOUR_ADVERT, ND_NEIGHBOUR_SOLICIT, ND_OPT_SOURCE_LL, ND_OPT_TARGET_LL,
    },
};

use crate::{
    headers::{ETH_LEN, EthHdr, Ipv6Hdr, ptr_at},
    maps::{endpoint6, may_talk6},
};

pub(crate) const IPV6_LEN: usize = 40;
/// Ethernet, IPv6 and a solicitation or advertisement with one link-layer address option.
const ND_FRAME_LEN: usize = ETH_LEN + IPV6_LEN + ND_LEN;

/// A neighbour solicitation or advertisement with one link-layer address option.
#[repr(C)]
struct NdMsg {
    kind: u8,
    code: u8,
    csum: [u8; 2],
    flags: [u8; 4],
    target: [u8; 16],
    opt_kind: u8,
    opt_len: u8,
    opt_mac: [u8; 6],
}

/// `ep` as the delivery helpers take an endpoint: where it is and how it is reached.
#[inline(always)]
pub(crate) fn hop(ep: &Endpoint6) -> Endpoint {
    Endpoint {
        mac: ep.mac,
        prefix_len: 0,
        flags: ep.flags,
        ifindex: ep.ifindex,
        peer: ep.peer,
        subnet: 0,
    }
}

/// The local endpoint that owns `ifindex` and claims `ip`/`mac`, or a spoofing drop.
#[inline(always)]
pub(crate) fn sender6(ip: &[u8; 16], mac: &[u8; 6], ifindex: u32) -> Result<Endpoint6, CounterId> {
    match endpoint6(ip) {
        Some(ep) if ep.is_local() && ep.ifindex == ifindex && ep.mac == *mac => Ok(ep),
        _ => Err(CounterId::DropSpoofed),
    }
}

/// What a container's ICMPv6 message of type `kind` is to the overlay: a solicitation to
/// answer here, control traffic the overlay does not carry, or data (None).
#[inline(always)]
pub(crate) fn is_control(kind: u8) -> bool {
    // Router solicitation/advertisement, redirect, advertisements of its own (the programs
    // answer for every endpoint), multicast listener queries and reports (v1 and v2).
    matches!(kind, 130..=134 | ND_NEIGHBOUR_ADVERT | 137 | 143)
}

/// Answers a container's neighbour solicitation (for resolution, or a unicast reachability
/// check) in place and sends the advertisement back to it: the target's MAC, if the target
/// is an endpoint on the asker's link. A duplicate address probe (from `::`) gets silence, so
/// the container keeps its address; the agent turns the probes off on `ethwe` anyway.
#[inline(always)]
pub(crate) fn answer_solicitation(ctx: &TcContext, ifindex: u32) -> Result<CounterId, CounterId> {
    if ctx.len() as usize != ND_FRAME_LEN {
        return Err(CounterId::DropIpv6Control);
    }
    if ctx.data_end() - ctx.data() < ND_FRAME_LEN {
        ctx.pull_data(ND_FRAME_LEN as u32)
            .map_err(|_| CounterId::DropKernelRefused)?;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth: *mut EthHdr = ptr_at(start, end, 0).ok_or(CounterId::DropMalformed)?;
    let ip: *mut Ipv6Hdr = ptr_at(start, end, ETH_LEN).ok_or(CounterId::DropMalformed)?;
    let nd: *mut NdMsg = ptr_at(start, end, ETH_LEN + IPV6_LEN).ok_or(CounterId::DropMalformed)?;
    // SAFETY: ptr_at checked every header lies inside the packet; TC may write packet data.
    unsafe {
        if (*ip).next != IPPROTO_ICMPV6
            || (*nd).kind != ND_NEIGHBOUR_SOLICIT
            || (*nd).code != 0
            || (*ip).hop_limit != ND_HOP_LIMIT
            || u16::from_be_bytes((*ip).payload_len) as usize != ND_LEN
        {
            return Err(CounterId::DropMalformed);
        }
        if (*ip).src == [0; 16] {
            return Err(CounterId::DropIpv6Control);
        }
        if (*nd).opt_kind != ND_OPT_SOURCE_LL || (*nd).opt_len != 1 {
            return Err(CounterId::DropIpv6Control);
        }
        let asker = sender6(&(*ip).src, &(*eth).src, ifindex)?;
        if (*nd).opt_mac != (*eth).src {
            return Err(CounterId::DropSpoofed);
        }
        let target = endpoint6(&(*nd).target).ok_or(CounterId::DropUnknownDst)?;
        if !may_talk6(&asker, &target) {
            return Err(CounterId::DropIsolated);
        }
        // The solicitation becomes the advertisement: from the target, to the asker.
        (*ip).dst = (*ip).src;
        (*ip).src = (*nd).target;
        (*nd).kind = ND_NEIGHBOUR_ADVERT;
        (*nd).csum = [0; 2];
        (*nd).flags = NA_SOLICITED_OVERRIDE;
        (*nd).opt_kind = ND_OPT_TARGET_LL;
        (*nd).opt_mac = target.mac;
        (*eth).dst = (*eth).src;
        (*eth).src = target.mac;
        (*nd).csum = icmpv6_checksum(&mut *ip, &mut *nd)?;
        if bpf_redirect(ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
    }
    Ok(CounterId::Ipv6NdAnswered)
}

/// The checksum of the neighbour discovery message `nd` (its field zero) under `ip`.
#[inline(always)]
fn icmpv6_checksum(ip: &mut Ipv6Hdr, nd: &mut NdMsg) -> Result<[u8; 2], CounterId> {
    // The pseudo-header's length and next header, as 32-bit words.
    let mut tail = [0u8; 8];
    tail[3] = ND_LEN as u8;
    tail[7] = IPPROTO_ICMPV6;
    let addresses = (&mut ip.src as *mut [u8; 16]).cast::<u32>();
    let message = (nd as *mut NdMsg).cast::<u32>();
    // SAFETY: each pointer covers the bytes given (source and destination are adjacent in
    // the header); the helper only reads them.
    let sum = unsafe {
        let sum = bpf_csum_diff(core::ptr::null_mut(), 0, addresses, 32, 0);
        let sum = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            tail.as_mut_ptr().cast(),
            8,
            sum as u32,
        );
        bpf_csum_diff(core::ptr::null_mut(), 0, message, ND_LEN as u32, sum as u32)
    };
    if sum < 0 {
        return Err(CounterId::DropKernelRefused);
    }
    // The helper sums 32-bit words as loaded on this host; folded and stored the same way,
    // the result lands in network order (RFC 1071's byte-order independence).
    let mut folded = sum as u64 & 0xffff_ffff;
    folded = (folded & 0xffff) + (folded >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    Ok((!(folded as u16)).to_ne_bytes())
}

/// The local endpoint an IPv6 frame from the peer at underlay address `origin` is for, if it
/// may go there: unicast, from an endpoint (any of its addresses, link-local too) that peer
/// holds, with that endpoint's MAC, to a local endpoint on the same link. Else the drop
/// reason.
#[inline(always)]
pub(crate) fn admit6(
    eth: &EthHdr,
    ip: &Ipv6Hdr,
    room: u32,
    gso: bool,
    origin: u32,
) -> Result<Endpoint6, CounterId> {
    if eth.dst[0] & 1 != 0 || ip.dst[0] == 0xff {
        return Err(CounterId::DropIpv6Control);
    }
    if !ip.is_sane(room, gso) {
        return Err(CounterId::DropMalformed);
    }
    let src = endpoint6(&ip.src).ok_or(CounterId::DropOverlayUnknownSrc)?;
    if src.is_local() || src.peer != origin || src.mac != eth.src {
        return Err(CounterId::DropOverlaySpoofed);
    }
    let dst = match endpoint6(&ip.dst) {
        Some(dst) if dst.is_local() => dst,
        _ => return Err(CounterId::DropUnknownDst),
    };
    if !may_talk6(&src, &dst) {
        return Err(CounterId::DropIsolated);
    }
    Ok(dst)
}

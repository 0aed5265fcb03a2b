//! TC ingress on the agent's crypto (TAP) device: frames the agent opened, on their way into a
//! container here. The agent marks each with the host it came from (`weave_common::seal`'s
//! marked destination MAC); the frame then meets every check a frame from that host meets on
//! the plain path ([`crate::delivery::admit`]), so a peer that holds the password still cannot
//! send as another host's endpoint or past isolation.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT, helpers::generated::bpf_redirect_peer, macros::classifier,
    programs::TcContext,
};
use weave_common::{counters::CounterId, seal::marked_peer};

use crate::{
    counters::count,
    delivery::admit,
    headers::{ETH_LEN, EthHdr, Ipv4Hdr, is_gso, ptr_at},
    maps::is_peer,
    verdict::tc_verdict,
};

const HEADERS_LEN: u32 = (ETH_LEN + core::mem::size_of::<Ipv4Hdr>()) as u32;

#[classifier]
pub fn tap_tc(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    count(CounterId::OverlayRx, len);
    tc_verdict(&ctx, "tap_tc", deliver(&ctx), len)
}

#[inline(always)]
fn deliver(ctx: &TcContext) -> Result<CounterId, CounterId> {
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
        // Anything else on the device (the kernel's own IPv6 chatter) is not the agent's.
        let origin = marked_peer(&(*eth).dst).ok_or(CounterId::DropNotIpv4Unicast)?;
        if !is_peer(origin) {
            return Err(CounterId::DropOverlayNotPeer);
        }
        let dst = admit(&*eth, &*ip, room, is_gso(ctx), origin)?;
        (*eth).dst = dst.mac;
        if bpf_redirect_peer(dst.ifindex, 0) != i64::from(TC_ACT_REDIRECT) {
            return Err(CounterId::DropRedirectFailed);
        }
    }
    Ok(CounterId::OpenedDelivered)
}

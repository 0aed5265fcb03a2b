//! TC ingress on the VXLAN (collect_md) device: frames other hosts sent, already decapsulated
//! by the kernel. The tunnel's outer source must be a live peer that hosts the inner source
//! address; the destination must be a local endpoint the source may talk to (same subnet or a
//! pair an isolation rule opens). Broadcast and multicast are copied to the members here of
//! their sender's subnet (`flood`).

use aya_ebpf::{
    bindings::bpf_tunnel_key, helpers::generated::bpf_skb_get_tunnel_key, macros::classifier,
    programs::TcContext,
};
use weave_common::counters::CounterId;

use crate::{
    counters::count,
    delivery::deliver_local,
    flood,
    headers::{ETH_LEN, EthHdr, Ipv4Hdr, is_gso, ptr_at},
    maps::{config, crypto_path, is_peer, must_seal},
    verdict::tc_verdict,
};

#[classifier]
pub fn overlay_tc(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    count(CounterId::OverlayRx, len);
    tc_verdict(&ctx, "overlay_tc", deliver(&ctx), len)
}

/// The outer source address (an `Ipv4Key`) of the tunnel the frame came through, checked: the
/// overlay's VNI, from a live peer.
#[inline(always)]
fn tunnel_source(ctx: &TcContext) -> Result<u32, CounterId> {
    // SAFETY: a zeroed tunnel key is valid; the helper fills it.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the skb pointer is the program's context, the key a local of the size given.
    let got = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    // No IPv4 tunnel metadata: not from the device's receive path, no peer to blame.
    if got < 0 {
        return Err(CounterId::DropNoTunnelKey);
    }
    if key.tunnel_id != config().vni {
        return Err(CounterId::DropBadVxlan);
    }
    // SAFETY: an IPv4 tunnel (no BPF_F_TUNINFO_IPV6) fills remote_ipv4, in host byte order.
    let source = u32::to_be(unsafe { key.__bindgen_anon_1.remote_ipv4 });
    if !is_peer(source) {
        return Err(CounterId::DropOverlayNotPeer);
    }
    if must_seal(&crypto_path(), source) {
        return Err(CounterId::DropNotSealed);
    }
    Ok(source)
}

#[inline(always)]
fn deliver(ctx: &TcContext) -> Result<CounterId, CounterId> {
    let source = tunnel_source(ctx)?;
    if let Some(copied) = group_frame(ctx, source) {
        return copied;
    }
    deliver_local(ctx, CounterId::OverlayDelivered, |_| Ok(source))
}

/// A broadcast or multicast frame from `source`, copied to the members here; None for
/// unicast.
#[inline(always)]
fn group_frame(ctx: &TcContext, source: u32) -> Option<Result<CounterId, CounterId>> {
    const HEADERS_LEN: u32 = (ETH_LEN + core::mem::size_of::<Ipv4Hdr>()) as u32;
    if ctx.data_end() - ctx.data() < HEADERS_LEN as usize && ctx.len() >= HEADERS_LEN {
        if ctx.pull_data(HEADERS_LEN).is_err() {
            return Some(Err(CounterId::DropKernelRefused));
        }
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let eth = ptr_at::<EthHdr>(start, end, 0)?;
    let ip = ptr_at::<Ipv4Hdr>(start, end, ETH_LEN)?;
    let room = ctx.len() - ETH_LEN as u32;
    // SAFETY: ptr_at checked both headers lie inside the packet.
    unsafe { flood::from_peer(ctx, &*eth, &*ip, room, is_gso(ctx), source) }
}

//! XDP on the underlay (host) NIC, where its driver runs XDP natively: overlay packets from
//! anyone but a live peer are dropped before an skb exists. Everything else passes untouched.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use weave_common::counters::CounterId;

use crate::{counters::count, maps::is_peer, prefilter::overlay_source};

#[xdp]
pub fn underlay_xdp(ctx: XdpContext) -> u32 {
    let len = ctx.data_end().saturating_sub(ctx.data()) as u64;
    count(CounterId::UnderlayRx, len);
    match overlay_source(&ctx) {
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

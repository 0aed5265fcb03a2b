//! XDP on the underlay (host) NIC, where its driver runs XDP natively: overlay packets for this
//! host from anyone but a live peer are dropped before an skb exists. Everything else passes
//! untouched.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use weave_common::counters::CounterId;

use crate::{
    counters::count,
    maps::{config, is_peer},
    prefilter::{Arrival, arrival},
};

#[xdp]
pub fn underlay_xdp(ctx: XdpContext) -> u32 {
    let len = ctx.data_end().saturating_sub(ctx.data()) as u64;
    count(CounterId::UnderlayRx, len);
    match arrival(&ctx, &config()) {
        Arrival::Other => xdp_action::XDP_PASS,
        Arrival::OtherHost => {
            count(CounterId::UnderlayOtherHost, len);
            xdp_action::XDP_PASS
        }
        Arrival::Overlay(source) if !is_peer(source) => {
            count(CounterId::DropOverlayNotPeer, len);
            xdp_action::XDP_DROP
        }
        Arrival::Overlay(_) => {
            count(CounterId::UnderlayOverlayPass, len);
            xdp_action::XDP_PASS
        }
    }
}

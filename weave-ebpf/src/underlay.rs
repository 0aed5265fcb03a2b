//! XDP on the underlay (host) NIC: first look at every frame that arrives from other hosts.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use weave_common::counters::CounterId;

use crate::counters::count;

#[xdp]
pub fn underlay_xdp(ctx: XdpContext) -> u32 {
    let len = ctx.data_end().saturating_sub(ctx.data()) as u64;
    count(CounterId::UnderlayRx, len);
    xdp_action::XDP_PASS
}

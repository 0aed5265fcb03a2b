//! TC ingress on the agent's crypto (TAP) device: frames the agent opened, on their way into a
//! container here. The agent marks each with the host it came from (`weave_common::seal`'s
//! marked destination MAC); the frame then meets every check a frame from that host meets on
//! the plain path ([`crate::delivery::admit`]), so a peer that holds the password still cannot
//! send as another host's endpoint or past isolation. A broadcast or multicast frame gets its
//! group MAC back from its destination address and goes to the members here (`flood`).

use aya_ebpf::{macros::classifier, programs::TcContext};
use weave_common::{counters::CounterId, seal::marked_peer};

use crate::{counters::count, delivery::deliver_local, flood, maps::is_peer, verdict::tc_verdict};

#[classifier]
pub fn tap_tc(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    count(CounterId::OverlayRx, len);
    tc_verdict(&ctx, "tap_tc", deliver(&ctx), len)
}

#[inline(always)]
fn deliver(ctx: &TcContext) -> Result<CounterId, CounterId> {
    // A group frame lost its MAC to the mark; the peer's copy goes to every member here.
    let mark: [u8; 6] = ctx.load(0).map_err(|_| CounterId::DropMalformed)?;
    if let Some(origin) = marked_peer(&mark).filter(|o| is_peer(*o))
        && let Some(copied) = flood::opened_from_peer(ctx, origin)
    {
        return copied;
    }
    deliver_local(ctx, CounterId::OpenedDelivered, |eth| {
        // Anything else on the device (the kernel's own IPv6 chatter) is not the agent's.
        let origin = marked_peer(&eth.dst).ok_or(CounterId::DropNotIpv4Unicast)?;
        if !is_peer(origin) {
            return Err(CounterId::DropOverlayNotPeer);
        }
        Ok(origin)
    })
}

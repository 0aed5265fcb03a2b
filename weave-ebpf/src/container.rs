//! TC ingress on the host side of a container veth: every frame a container sends.

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use weave_common::counters::CounterId;

use crate::counters::count;

#[classifier]
pub fn container_tc(ctx: TcContext) -> i32 {
    count(CounterId::ContainerRx, u64::from(ctx.len()));
    TC_ACT_OK
}

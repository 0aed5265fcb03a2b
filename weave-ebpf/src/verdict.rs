//! Turning a TC program's outcome into counters and a TC action.

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use aya_log_ebpf::error;
use weave_common::counters::CounterId;

use crate::counters::count;

/// Counts what was done (the frame was redirected) or why the frame stops here: a drop
/// reason, or an ARP probe that silence answers.
#[inline(always)]
pub(crate) fn tc_verdict(
    ctx: &TcContext,
    program: &str,
    outcome: Result<CounterId, CounterId>,
    len: u64,
) -> i32 {
    match outcome {
        // The copies are out; the original goes no further.
        Ok(done) if done.replicated() => {
            count(done, len);
            TC_ACT_SHOT as i32
        }
        Ok(done) => {
            count(done, len);
            TC_ACT_REDIRECT as i32
        }
        Err(reason) => stop(ctx, program, reason, len),
    }
}

/// Counts `reason` for a frame of `len` bytes and drops it. The failures that should never
/// happen once the maps said the frame is good (a helper refusing) are also logged.
#[inline(always)]
pub(crate) fn stop(ctx: &TcContext, program: &str, reason: CounterId, len: u64) -> i32 {
    count(reason, len);
    match reason {
        CounterId::DropRedirectFailed => {
            error!(ctx, "{}: a redirect helper failed ({} bytes)", program, len);
        }
        CounterId::DropKernelRefused => {
            error!(
                ctx,
                "{}: the kernel refused to pull or resize a frame ({} bytes)", program, len
            );
        }
        _ => {}
    }
    TC_ACT_SHOT as i32
}

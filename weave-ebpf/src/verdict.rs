//! Turning a TC program's outcome into counters and a TC action.

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    programs::TcContext,
};
use aya_log_ebpf::error;
use weave_common::counters::CounterId;

use crate::counters::count;

/// Counts what was done (the frame was redirected) or why it was dropped. A failing redirect
/// helper should never happen once the maps said the target is valid, so it is also logged.
#[inline(always)]
pub(crate) fn tc_verdict(
    ctx: &TcContext,
    program: &str,
    outcome: Result<CounterId, CounterId>,
    len: u64,
) -> i32 {
    match outcome {
        Ok(done) => {
            count(done, len);
            TC_ACT_REDIRECT as i32
        }
        Err(reason) => {
            count(reason, len);
            if reason == CounterId::DropRedirectFailed {
                error!(
                    ctx,
                    "{}: a redirect or encapsulation helper failed ({} bytes)", program, len
                );
            }
            TC_ACT_SHOT as i32
        }
    }
}

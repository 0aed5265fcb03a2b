//! Per-CPU counters, indexed by `weave_common::counters::CounterId`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use weave_common::counters::{Counter, CounterId};

/// Pinned by name so the counts survive an agent restart.
#[map]
static WEAVE_COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(CounterId::SLOTS, 0);

/// Adds one packet of `bytes` to slot `id` on this CPU.
#[inline(always)]
pub(crate) fn count(id: CounterId, bytes: u64) {
    if let Some(slot) = WEAVE_COUNTERS.get_ptr_mut(id.index()) {
        // SAFETY: the pointer comes from a successful map lookup and the slot is this CPU's own,
        // so nothing else writes it concurrently (per-CPU maps are not shared between CPUs).
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += bytes;
        }
    }
}

//! Per-CPU packet/byte counters: one slot per path a packet can take and per drop reason.

/// One counter slot. The map is per-CPU, so each CPU adds to its own copy without atomics and
/// the agent sums the copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding, every bit pattern valid.
unsafe impl aya::Pod for Counter {}

/// Index of a slot in the counters map.
///
/// Append new slots at the end: the map is pinned and survives agent upgrades, so an existing
/// slot must keep its index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterId {
    /// Every frame the underlay XDP program saw.
    UnderlayRx = 0,
    /// Every frame the container-veth TC program saw.
    ContainerRx = 1,
}

impl CounterId {
    /// All slots, in index order.
    pub const ALL: [Self; 2] = [Self::UnderlayRx, Self::ContainerRx];

    /// Number of slots the counters map must hold.
    pub const SLOTS: u32 = Self::ALL.len() as u32;

    /// Stable name used in `status` output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnderlayRx => "underlay_rx",
            Self::ContainerRx => "container_rx",
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dense_and_in_order() {
        for (i, id) in CounterId::ALL.iter().enumerate() {
            assert_eq!(id.index() as usize, i, "{id:?} is out of place");
        }
    }

    #[test]
    fn names_are_unique() {
        for a in CounterId::ALL {
            for b in CounterId::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
    }
}

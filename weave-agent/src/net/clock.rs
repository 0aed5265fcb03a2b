//! Wall-clock time as gossip and rules carry it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970; 0 for a clock set before it (a host without a clock yet must not
/// make the agent fail, and 0 loses to every real timestamp).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

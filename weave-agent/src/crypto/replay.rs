//! Replay protection for one session's receiving side: a sliding window over the counters
//! seen (RFC 6479's bitmap, as WireGuard keeps it), so a datagram is accepted at most once
//! while the network may still reorder a window's worth of them.

/// Counters behind the highest seen that may still arrive late.
pub const WINDOW: u64 = 8192;
const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One more than the highest counter accepted (0: none yet).
    next: u64,
    bits: Box<[u64; WORDS]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            next: 0,
            bits: Box::new([0; WORDS]),
        }
    }
}

impl ReplayWindow {
    /// Accepts `counter` if it was never accepted and is not too old, and remembers it. Call
    /// only once the datagram authenticated, so forgeries cannot move the window.
    pub fn accept(&mut self, counter: u64) -> bool {
        if counter == u64::MAX {
            return false;
        }
        if counter >= self.next {
            self.forget_between(self.next, counter);
            self.next = counter + 1;
            self.set(counter);
            return true;
        }
        if self.next - counter > WINDOW {
            return false;
        }
        if self.is_set(counter) {
            return false;
        }
        self.set(counter);
        true
    }

    /// Clears the slots of counters `from..=to`, which are about to enter the window.
    fn forget_between(&mut self, from: u64, to: u64) {
        if to - from >= WINDOW {
            self.bits.fill(0);
            return;
        }
        for counter in from..=to {
            let (word, bit) = slot(counter);
            self.bits[word] &= !bit;
        }
    }

    fn set(&mut self, counter: u64) {
        let (word, bit) = slot(counter);
        self.bits[word] |= bit;
    }

    fn is_set(&self, counter: u64) -> bool {
        let (word, bit) = slot(counter);
        self.bits[word] & bit != 0
    }
}

fn slot(counter: u64) -> (usize, u64) {
    let at = counter % WINDOW;
    ((at / 64) as usize, 1 << (at % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counter_is_accepted_once_in_any_order_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3), "late but inside the window");
        assert!(!w.accept(3));
        assert!(!w.accept(5));
        assert!(w.accept(1));
    }

    #[test]
    fn counters_older_than_the_window_are_refused() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(WINDOW + 10));
        assert!(!w.accept(9), "more than a window behind");
        assert!(w.accept(11), "exactly a window behind");
        assert!(!w.accept(11));
    }

    #[test]
    fn a_jump_forgets_the_slots_it_reuses() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(7));
        // 7 + WINDOW shares 7's slot; it is new, and 7 is now too old.
        assert!(w.accept(7 + WINDOW));
        assert!(!w.accept(7));
        assert!(w.accept(8 + WINDOW));
        // A jump past a whole window clears everything, and old slots read as new counters.
        assert!(w.accept(10 * WINDOW));
        assert!(w.accept(10 * WINDOW - 1));
        assert!(!w.accept(u64::MAX));
    }

    /// Against a set of every counter seen: the window never accepts a repeat, and accepts
    /// every new counter within its reach.
    #[test]
    fn the_window_agrees_with_a_plain_set() {
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest = 0u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly forward, sometimes late, sometimes a repeat.
            let counter = match x % 8 {
                0 => highest.saturating_sub(x % (2 * WINDOW)),
                1 => seen.iter().next_back().copied().unwrap_or(0),
                _ => highest + x % 50,
            };
            let fresh = !seen.contains(&counter) && counter + WINDOW >= highest;
            assert_eq!(
                w.accept(counter),
                fresh,
                "counter {counter}, highest {highest}"
            );
            if fresh {
                seen.insert(counter);
                highest = highest.max(counter + 1);
            }
        }
    }
}

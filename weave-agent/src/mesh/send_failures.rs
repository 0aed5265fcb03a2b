//! Gossip sends that fail, logged without flooding. While an underlay is down every gossip
//! round fails to every peer (about 20 sends a second on a small mesh): one line per peer and
//! cause when it starts, a count of the repeats at most once a [`SUMMARY_EVERY`], one line
//! when it works again. Datagrams are lossy anyway; liveness is the failure detector's call.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

/// How often repeated failures of one kind are summed up in the log.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Streak {
    since: Instant,
    last_summary: Instant,
    unreported: u64,
    total: u64,
}

/// Failing sends by peer and cause.
#[derive(Debug, Default)]
pub struct SendFailures {
    streaks: BTreeMap<(SocketAddr, String), Streak>,
}

impl SendFailures {
    /// A send to `peer` failed for `cause`; the line to log, if one is due.
    pub fn failed(&mut self, peer: SocketAddr, cause: &str, now: Instant) -> Option<String> {
        let key = (peer, cause.to_owned());
        let Some(streak) = self.streaks.get_mut(&key) else {
            self.streaks.insert(
                key,
                Streak {
                    since: now,
                    last_summary: now,
                    unreported: 0,
                    total: 1,
                },
            );
            return Some(format!(
                "gossip to {peer} fails: {cause} (repeats are counted, not logged)"
            ));
        };
        streak.unreported += 1;
        streak.total += 1;
        if now.duration_since(streak.last_summary) < SUMMARY_EVERY {
            return None;
        }
        let line = format!(
            "gossip to {peer} still fails: {cause} ({} more in the last {} s)",
            streak.unreported,
            now.duration_since(streak.last_summary).as_secs()
        );
        streak.last_summary = now;
        streak.unreported = 0;
        Some(line)
    }

    /// A send to `peer` went out; the line to log if it had been failing.
    pub fn sent(&mut self, peer: SocketAddr, now: Instant) -> Option<String> {
        let ended: Vec<_> = self
            .streaks
            .keys()
            .filter(|(p, _)| *p == peer)
            .cloned()
            .collect();
        let lines: Vec<String> = ended
            .into_iter()
            .filter_map(|key| {
                let streak = self.streaks.remove(&key)?;
                Some(format!(
                    "gossip to {peer} works again after {} failed sends over {} s ({})",
                    streak.total,
                    now.duration_since(streak.since).as_secs(),
                    key.1
                ))
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outage of the fault-injection run: 20 failed sends a second to one peer for 30 s.
    #[test]
    fn an_outage_logs_a_line_or_two_not_one_per_send() {
        let peer: SocketAddr = "10.0.0.2:6783".parse().unwrap();
        let start = Instant::now();
        let mut failures = SendFailures::default();
        let mut lines = Vec::new();
        for i in 0..600u64 {
            let now = start + Duration::from_millis(50 * i);
            lines.extend(failures.failed(peer, "Network is unreachable", now));
        }
        assert_eq!(lines.len(), 1, "{lines:?}");
        // A minute in, one summary with the count.
        let later = start + SUMMARY_EVERY + Duration::from_secs(1);
        let summary = failures
            .failed(peer, "Network is unreachable", later)
            .unwrap();
        assert!(summary.contains("600 more"), "{summary}");
        let back = failures.sent(peer, later).unwrap();
        assert!(back.contains("after 601 failed sends"), "{back}");
        assert_eq!(failures.sent(peer, later), None, "reported once");
    }

    #[test]
    fn each_peer_and_cause_gets_its_own_first_line() {
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.2:6783".parse().unwrap(),
            "10.0.0.3:6783".parse().unwrap(),
        );
        let now = Instant::now();
        let mut failures = SendFailures::default();
        assert!(failures.failed(a, "unreachable", now).is_some());
        assert!(failures.failed(b, "unreachable", now).is_some());
        assert!(failures.failed(a, "no buffer space", now).is_some());
        assert!(failures.failed(a, "unreachable", now).is_none());
    }
}

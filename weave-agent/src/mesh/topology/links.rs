//! Whom this host hears directly, from the times the underlay program noted hellos, and how
//! that set is published in gossip.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};

/// Gossip key under which an agent publishes whom it hears.
pub const LINKS_KEY: &str = "links";
/// How often each live peer gets a hello.
pub const HELLO_INTERVAL: Duration = Duration::from_millis(250);
/// A peer is heard while its last hello is younger than this: five hellos, so a loaded host
/// that sends a few late does not flap its links, while a link that dies is noticed within
/// 1.5 s (this plus one interval), leaving room in the 3 s a relay's death may cost.
pub const HEARD_WINDOW: Duration = Duration::from_millis(1250);
/// Entries of the heard map older than this (peers long gone) are removed.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The peers heard within [`HEARD_WINDOW`] before `now_ns`, from (peer, last hello) pairs in
/// `bpf_ktime_get_ns` time.
pub fn heard_within(
    entries: impl IntoIterator<Item = (Ipv4Addr, u64)>,
    now_ns: u64,
    window: Duration,
) -> BTreeSet<Ipv4Addr> {
    let window = window.as_nanos() as u64;
    entries
        .into_iter()
        // A hello noted after `now_ns` was read (another CPU) is as fresh as can be.
        .filter(|(_, at)| now_ns.saturating_sub(*at) < window)
        .map(|(peer, _)| peer)
        .collect()
}

/// The gossip value for `links`: the addresses' 4 bytes each, in order, as base64. Binary,
/// because in a full mesh of 500 every agent holds 500 of these, and dotted quads would take
/// three times the memory.
pub fn encode(links: &BTreeSet<Ipv4Addr>) -> String {
    let bytes: Vec<u8> = links.iter().flat_map(|ip| ip.octets()).collect();
    STANDARD_NO_PAD.encode(bytes)
}

/// The addresses a `links` value names, sorted.
pub fn decode(value: &str) -> Result<Vec<Ipv4Addr>> {
    let bytes = STANDARD_NO_PAD
        .decode(value)
        .context("a links value that is not base64")?;
    if bytes.len() % 4 != 0 {
        bail!(
            "a links value of {} bytes, not whole addresses",
            bytes.len()
        );
    }
    let mut out: Vec<Ipv4Addr> = bytes
        .chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn only_recent_hellos_count_as_heard() {
        let (a, b, c) = (
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 3),
        );
        let now = 10_000 * MS;
        let heard = heard_within(
            [(a, now - 100 * MS), (b, now - 1300 * MS), (c, now + MS)],
            now,
            HEARD_WINDOW,
        );
        assert_eq!(heard, BTreeSet::from([a, c]));
    }

    #[test]
    fn links_read_back_as_published_and_garbage_is_refused() {
        let links = BTreeSet::from([Ipv4Addr::new(192, 168, 56, 101), Ipv4Addr::new(10, 1, 2, 3)]);
        let value = encode(&links);
        assert_eq!(
            decode(&value).unwrap(),
            links.into_iter().collect::<Vec<_>>()
        );
        assert!(decode(&encode(&BTreeSet::new())).unwrap().is_empty());
        assert!(decode("not base64!").is_err());
        assert!(decode(&STANDARD_NO_PAD.encode([1, 2, 3])).is_err());
    }
}

//! Whom this host hears directly, from what the underlay program noted of their hellos (when
//! the last came, the largest of the last few seconds), and how that is published in gossip.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use weave_common::endpoint::{Heard, LARGEST_WINDOW_NS};

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
/// Probes of the path MTU (hellos padded to a size, sent with DF) go to each peer once every
/// this many hello intervals: once a second.
pub const PROBE_EVERY: u32 = 4;
/// The smallest MTU an IPv4 path may have (RFC 791): a largest hello below it (only the small
/// hellos got through) says nothing of the MTU.
pub const MIN_MTU: u16 = 576;

/// One peer this host hears: its address and the largest hello (IPv4 total length) heard
/// from it lately, 0 when none of the probes got through yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Link {
    pub peer: Ipv4Addr,
    pub largest: u16,
}

/// The peers heard within `window` before `now_ns`, with the largest hello of each, from
/// (peer, record) pairs in `bpf_ktime_get_ns` time. A largest hello older than
/// [`LARGEST_WINDOW_NS`] no longer counts (probes stopped getting through): 0.
pub fn heard_within(
    entries: impl IntoIterator<Item = (Ipv4Addr, Heard)>,
    now_ns: u64,
    window: Duration,
) -> BTreeMap<Ipv4Addr, u16> {
    let window = window.as_nanos() as u64;
    entries
        .into_iter()
        // A hello noted after `now_ns` was read (another CPU) is as fresh as can be.
        .filter(|(_, h)| now_ns.saturating_sub(h.at_ns) < window)
        .map(|(peer, h)| {
            let recent = now_ns.saturating_sub(h.largest_at_ns) <= LARGEST_WINDOW_NS;
            let largest = if recent {
                u16::try_from(h.largest).unwrap_or(u16::MAX)
            } else {
                0
            };
            (peer, largest)
        })
        .collect()
}

/// The gossip value for `links`: per peer heard, its address (4 bytes) and the largest hello
/// from it (2, big-endian), in address order, as base64. Binary, because in a full mesh of
/// 500 every agent holds 500 of these, and text would take three times the memory.
pub fn encode(links: &BTreeMap<Ipv4Addr, u16>) -> String {
    let bytes: Vec<u8> = links
        .iter()
        .flat_map(|(ip, largest)| {
            let [a, b, c, d] = ip.octets();
            let [h, l] = largest.to_be_bytes();
            [a, b, c, d, h, l]
        })
        .collect();
    STANDARD_NO_PAD.encode(bytes)
}

/// The links a `links` value names, sorted by peer (one per peer).
pub fn decode(value: &str) -> Result<Vec<Link>> {
    let bytes = STANDARD_NO_PAD
        .decode(value)
        .context("a links value that is not base64")?;
    if bytes.len() % 6 != 0 {
        bail!("a links value of {} bytes, not whole links", bytes.len());
    }
    let mut out: Vec<Link> = bytes
        .chunks_exact(6)
        .map(|c| Link {
            peer: Ipv4Addr::new(c[0], c[1], c[2], c[3]),
            largest: u16::from_be_bytes([c[4], c[5]]),
        })
        .collect();
    out.sort_unstable();
    out.dedup_by_key(|l| l.peer);
    Ok(out)
}

/// IPv4 total lengths to probe a path with, largest first: the underlay MTU, then common
/// smaller ones (PPPoE, tunnels, 1280, ...) down to [`MIN_MTU`]. A coarse ladder: a hop of
/// 1100 is known as 1100, one of 1050 as 1000, a little conservative, found in one round.
pub fn probe_sizes(underlay_mtu: u16) -> Vec<u16> {
    let ladder = [
        1500, 1492, 1480, 1472, 1460, 1450, 1420, 1400, 1380, 1350, 1300, 1280, 1200, 1100, 1000,
        900, 800, 700, 576,
    ];
    let mut sizes = vec![underlay_mtu];
    sizes.extend(ladder.into_iter().filter(|s| *s < underlay_mtu));
    sizes
}

/// The probes one peer gets this round, given the largest of this host's hellos it reports
/// hearing (None: it does not hear this host at all). Full size confirmed: that one alone. A
/// narrower path known: the full size (has it widened?), the rung above what is known (has it
/// grown a little?) and the known size (is it still there?). Nothing known: the whole ladder.
pub fn probes_for(reported: Option<u16>, underlay_mtu: u16) -> Vec<u16> {
    let ladder = probe_sizes(underlay_mtu);
    match reported {
        Some(largest) if largest >= underlay_mtu => vec![underlay_mtu],
        Some(largest) if largest >= MIN_MTU => {
            let above = ladder.iter().rev().copied().find(|s| *s > largest);
            let mut sizes = vec![underlay_mtu];
            sizes.extend(above.filter(|s| *s != underlay_mtu));
            sizes.push(largest);
            sizes
        }
        _ => ladder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn heard(at: u64, largest: u32, largest_at: u64) -> Heard {
        Heard {
            at_ns: at,
            largest_at_ns: largest_at,
            largest,
            reserved: 0,
        }
    }

    #[test]
    fn only_recent_hellos_count_as_heard_and_only_recent_probes_as_largest() {
        let (a, b, c, d) = (
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 3),
            Ipv4Addr::new(10, 0, 0, 4),
        );
        let now = 10_000 * MS;
        let heard = heard_within(
            [
                (a, heard(now - 100 * MS, 1500, now - 500 * MS)),
                (b, heard(now - 1300 * MS, 1500, now - 1300 * MS)),
                (c, heard(now + MS, 1000, now)),
                (d, heard(now - 100 * MS, 1500, now - 4000 * MS)),
            ],
            now,
            HEARD_WINDOW,
        );
        assert_eq!(heard, BTreeMap::from([(a, 1500), (c, 1000), (d, 0)]));
    }

    #[test]
    fn links_read_back_as_published_and_garbage_is_refused() {
        let links = BTreeMap::from([
            (Ipv4Addr::new(192, 168, 56, 101), 1500),
            (Ipv4Addr::new(10, 1, 2, 3), 1000),
        ]);
        let value = encode(&links);
        let back: BTreeMap<Ipv4Addr, u16> = decode(&value)
            .unwrap()
            .into_iter()
            .map(|l| (l.peer, l.largest))
            .collect();
        assert_eq!(back, links);
        assert!(decode(&encode(&BTreeMap::new())).unwrap().is_empty());
        assert!(decode("not base64!").is_err());
        assert!(decode(&STANDARD_NO_PAD.encode([1, 2, 3, 4])).is_err());
    }

    #[test]
    fn a_known_path_gets_a_few_probes_and_an_unknown_one_the_ladder() {
        assert_eq!(probes_for(Some(1500), 1500), [1500]);
        assert_eq!(probes_for(Some(1000), 1500), [1500, 1100, 1000]);
        assert_eq!(probes_for(Some(1492), 1500), [1500, 1492]);
        assert_eq!(probes_for(None, 1500), probe_sizes(1500));
        assert_eq!(probes_for(Some(58), 1500), probe_sizes(1500));
    }

    #[test]
    fn probes_start_at_the_underlay_mtu_and_go_down_to_the_minimum() {
        assert_eq!(probe_sizes(1500)[..3], [1500, 1492, 1480]);
        let jumbo = probe_sizes(9000);
        assert_eq!((jumbo[0], jumbo[1]), (9000, 1500));
        assert_eq!(*jumbo.last().unwrap(), MIN_MTU);
        assert!(probe_sizes(1000).iter().all(|s| *s <= 1000));
    }
}

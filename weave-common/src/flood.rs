//! Broadcast and multicast inside a subnet: who gets a copy, and what a frame must be to be
//! copied.
//!
//! The agent writes one [`FloodSet`] per subnet: the veths of this host's endpoints in it and
//! the peers that hold endpoints in it. A container's broadcast or multicast frame is copied in
//! the kernel to every other local member and once to each of those peers, which copy it to
//! their own members; nobody sends a copy on, so a frame never comes back to its sender.

use crate::endpoint::Ipv4Key;

/// Most local endpoints one subnet's copies reach on a host (the eBPF loop's bound).
pub const FLOOD_LOCAL: usize = 64;
/// Most peers one subnet's copies reach.
pub const FLOOD_REMOTE: usize = 64;
/// Default limit of broadcast and multicast frames per second per endpoint (`launch
/// --flood-rate`).
pub const DEFAULT_FLOOD_PPS: u32 = 1_000;
/// How many frames over the rate an endpoint may send at once before the limit bites.
pub const FLOOD_BURST: u64 = 100;

/// Key of the flood map: a subnet, as [`crate::endpoint::Endpoint`] holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FloodKey {
    /// Network address ([`Ipv4Key`]).
    pub subnet: Ipv4Key,
    pub prefix_len: u32,
}

/// Who gets a copy of a subnet's broadcast and multicast frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodSet {
    pub local_count: u32,
    pub remote_count: u32,
    /// ifindexes of the host-side veths of this host's endpoints in the subnet.
    pub local: [u32; FLOOD_LOCAL],
    /// Underlay addresses ([`Ipv4Key`]) of the peers holding endpoints in the subnet.
    pub remote: [Ipv4Key; FLOOD_REMOTE],
}

impl Default for FloodSet {
    fn default() -> Self {
        Self {
            local_count: 0,
            remote_count: 0,
            local: [0; FLOOD_LOCAL],
            remote: [0; FLOOD_REMOTE],
        }
    }
}

/// What kind of frame is copied to a subnet's members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Broadcast,
    Multicast,
}

/// The kind of a frame to Ethernet destination `mac` and IPv4 destination `dst` from an
/// endpoint of subnet `subnet`/`prefix_len` (both [`Ipv4Key`]s), if it is one that crosses:
/// the broadcast MAC with the limited broadcast (255.255.255.255) or the subnet's own
/// broadcast address, or a multicast MAC with the IPv4 group it is derived from (RFC 1112).
/// None for anything else with the group bit set: another subnet's broadcast (which would
/// cross isolation) or a MAC and address that do not go together.
pub const fn kind(mac: &[u8; 6], dst: [u8; 4], subnet: Ipv4Key, prefix_len: u8) -> Option<Kind> {
    if is_broadcast_mac(mac) {
        let host = u32::from_be_bytes(dst);
        let network = u32::from_be_bytes(subnet.to_ne_bytes());
        let mask = if prefix_len == 0 {
            0
        } else if prefix_len >= 32 {
            u32::MAX
        } else {
            u32::MAX << (32 - prefix_len as u32)
        };
        if host == u32::MAX || (prefix_len < 31 && host == network | !mask) {
            return Some(Kind::Broadcast);
        }
        return None;
    }
    let group = dst[0] & 0xf0 == 0xe0;
    if group
        && mac[0] == 0x01
        && mac[1] == 0x00
        && mac[2] == 0x5e
        && mac[3] == dst[1] & 0x7f
        && mac[4] == dst[2]
        && mac[5] == dst[3]
    {
        return Some(Kind::Multicast);
    }
    None
}

/// The group MAC a frame to `dst` from an endpoint of `subnet`/`prefix_len` is sent to, if
/// [`kind`] lets it cross: what a frame that lost its MAC on the way (the sealed path marks
/// the MAC with the sending host) is given back.
pub const fn group_mac(dst: [u8; 4], subnet: Ipv4Key, prefix_len: u8) -> Option<[u8; 6]> {
    let mac = if dst[0] & 0xf0 == 0xe0 {
        [0x01, 0x00, 0x5e, dst[1] & 0x7f, dst[2], dst[3]]
    } else {
        [0xff; 6]
    };
    match kind(&mac, dst, subnet, prefix_len) {
        Some(_) => Some(mac),
        None => None,
    }
}

pub const fn is_broadcast_mac(mac: &[u8; 6]) -> bool {
    mac[0] == 0xff
        && mac[1] == 0xff
        && mac[2] == 0xff
        && mac[3] == 0xff
        && mac[4] == 0xff
        && mac[5] == 0xff
}

/// A rate limit as a virtual clock (GCRA): `next` is when the endpoint's next frame is due if
/// it sends at the rate. A frame is let through while `next` is at most [`FLOOD_BURST`]
/// intervals ahead of `now`; each one moves `next` on by one interval. The new `next`, or None
/// for a frame over the limit (which leaves `next` as it was). `pps` 0: no limit.
pub const fn admit_at_rate(next: u64, now: u64, pps: u32) -> Option<u64> {
    if pps == 0 {
        return Some(next);
    }
    let interval = 1_000_000_000 / pps as u64;
    let start = if next > now { next } else { now };
    if start - now > FLOOD_BURST * interval {
        return None;
    }
    Some(start + interval)
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u32, no padding, any bits valid.
unsafe impl aya::Pod for FloodKey {}
#[cfg(feature = "user")]
// SAFETY: repr(C) of u32s and u32 arrays, no padding, any bits valid.
unsafe impl aya::Pod for FloodSet {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ipv4_key;

    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn broadcasts_of_the_senders_own_subnet_cross_and_no_other() {
        let subnet = ipv4_key([10, 40, 1, 0]);
        assert_eq!(
            kind(&BCAST, [10, 40, 1, 255], subnet, 24),
            Some(Kind::Broadcast)
        );
        assert_eq!(kind(&BCAST, [255; 4], subnet, 24), Some(Kind::Broadcast));
        assert_eq!(kind(&BCAST, [10, 40, 2, 255], subnet, 24), None);
        assert_eq!(kind(&BCAST, [10, 40, 1, 7], subnet, 24), None);
        let wide = ipv4_key([10, 32, 0, 0]);
        assert_eq!(
            kind(&BCAST, [10, 47, 255, 255], wide, 12),
            Some(Kind::Broadcast)
        );
        // A /31 or /32 has no broadcast address of its own.
        assert_eq!(
            kind(&BCAST, [10, 0, 0, 1], ipv4_key([10, 0, 0, 0]), 31),
            None
        );
    }

    #[test]
    fn multicast_needs_the_mac_its_group_maps_to() {
        let subnet = ipv4_key([10, 40, 1, 0]);
        let mac = [0x01, 0x00, 0x5e, 0x01, 0x01, 0x01];
        assert_eq!(
            kind(&mac, [239, 1, 1, 1], subnet, 24),
            Some(Kind::Multicast)
        );
        // 239.129.1.1 maps to the same MAC (the top bit of the second byte is dropped).
        assert_eq!(
            kind(&mac, [239, 129, 1, 1], subnet, 24),
            Some(Kind::Multicast)
        );
        assert_eq!(kind(&mac, [239, 1, 1, 2], subnet, 24), None);
        assert_eq!(kind(&mac, [10, 1, 1, 1], subnet, 24), None);
        assert_eq!(kind(&BCAST, [239, 1, 1, 1], subnet, 24), None);
    }

    #[test]
    fn a_group_frame_gets_back_the_mac_it_was_sent_to() {
        let subnet = ipv4_key([10, 40, 1, 0]);
        assert_eq!(group_mac([10, 40, 1, 255], subnet, 24), Some(BCAST));
        assert_eq!(
            group_mac([239, 129, 2, 3], subnet, 24),
            Some([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03])
        );
        assert_eq!(group_mac([10, 40, 1, 7], subnet, 24), None);
        assert_eq!(group_mac([10, 40, 2, 255], subnet, 24), None);
    }

    #[test]
    fn the_rate_lets_a_burst_through_then_one_frame_per_interval() {
        let pps = 1_000;
        let interval = 1_000_000;
        let now = 5_000_000_000;
        let mut next = 0;
        let mut passed = 0;
        while let Some(n) = admit_at_rate(next, now, pps) {
            next = n;
            passed += 1;
        }
        assert_eq!(passed, FLOOD_BURST + 1);
        // Over the limit, the clock does not move; a millisecond later one more goes.
        assert_eq!(admit_at_rate(next, now, pps), None);
        assert!(admit_at_rate(next, now + interval, pps).is_some());
        assert_eq!(admit_at_rate(7, now, 0), Some(7));
    }

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<FloodKey>(), 8);
        assert_eq!(
            core::mem::size_of::<FloodSet>(),
            8 + 4 * (FLOOD_LOCAL + FLOOD_REMOTE)
        );
    }
}

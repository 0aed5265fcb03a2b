//! IPv6 on the overlay as the programs and the agent both see it: the endpoint map's layout
//! for IPv6 addresses, the links that decide who may talk to whom, and the neighbour
//! discovery the programs answer in place of the network, as they answer ARP.
//!
//! An endpoint's IPv6 addresses are its global ones (`attach 10.40.1.10/24,fd00:1::10/64`)
//! and its link-local one, which the kernel derives from the endpoint's MAC (EUI-64). Every
//! address maps to an [`Endpoint6`] naming the endpoint's *link*: the IPv6 subnet it was given,
//! or, for the link-local address of an endpoint with none, its IPv4 subnet written as an
//! IPv4-mapped IPv6 network (`::ffff:10.40.1.0/120`). Two addresses may talk when they share
//! a link, so link-local traffic stays inside the subnet, as on a switch, and no IPv6 subnet
//! can collide with an IPv4 one.

use crate::endpoint::Ipv4Key;

/// An IPv6 address as it sits in a packet (network byte order).
pub type Ipv6Key = [u8; 16];

/// An endpoint's IPv6 address on the overlay: where it lives and which link it is on. The
/// fields mean what [`crate::endpoint::Endpoint`]'s do.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint6 {
    pub mac: [u8; 6],
    /// Prefix length of [`Endpoint6::link`].
    pub link_prefix: u8,
    /// The flags of [`crate::endpoint::Endpoint`] (`ENDPOINT_LOCAL`, ...).
    pub flags: u8,
    /// Local: ifindex of the host-side veth. Remote: 0.
    pub ifindex: u32,
    /// Remote: underlay address of the peer hosting it. Local: 0.
    pub peer: Ipv4Key,
    /// Network address of the endpoint's link (see the module's text).
    pub link: Ipv6Key,
}

impl Endpoint6 {
    pub const fn is_local(&self) -> bool {
        self.flags & crate::endpoint::ENDPOINT_LOCAL != 0
    }

    /// Both addresses are on one link, so traffic between them is allowed.
    pub const fn same_link(&self, other: &Self) -> bool {
        self.link_prefix == other.link_prefix && eq16(&self.link, &other.link)
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C) of integers and byte arrays, no padding (6+1+1+4+4+16), any bits valid.
unsafe impl aya::Pod for Endpoint6 {}

const fn eq16(a: &Ipv6Key, b: &Ipv6Key) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `addr` with every bit past the first `prefix` cleared.
pub const fn network(addr: Ipv6Key, prefix: u8) -> Ipv6Key {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let bits = prefix as i32 - 8 * i as i32;
        out[i] = if bits >= 8 {
            addr[i]
        } else if bits <= 0 {
            0
        } else {
            addr[i] & (0xffu8 << (8 - bits))
        };
        i += 1;
    }
    out
}

/// The link of an endpoint with no IPv6 subnet: its IPv4 subnet (`subnet`, a network address
/// in packet order, and `prefix`) as an IPv4-mapped IPv6 network.
pub const fn ipv4_link(subnet: [u8; 4], prefix: u8) -> (Ipv6Key, u8) {
    let mut link = [0u8; 16];
    link[10] = 0xff;
    link[11] = 0xff;
    link[12] = subnet[0];
    link[13] = subnet[1];
    link[14] = subnet[2];
    link[15] = subnet[3];
    (link, 96 + prefix)
}

/// The link-local address the kernel gives an interface with `mac` (EUI-64, RFC 4291
/// appendix A): `fe80::` then the MAC with its universal/local bit flipped and `ff:fe` in the
/// middle.
pub const fn link_local(mac: [u8; 6]) -> Ipv6Key {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// The MAC the agent gives an endpoint with an IPv6 address only: `02:58:` then a 32-bit
/// FNV-1a hash of the whole address (`02:57:` is taken by IPv4-derived MACs). Not its last
/// four bytes: fd00:1::10 and fd00:2::10 would share a MAC, and so a link-local address.
pub const fn endpoint_mac6(addr: Ipv6Key) -> [u8; 6] {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < 16 {
        hash ^= addr[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    let h = hash.to_be_bytes();
    [0x02, 0x58, h[0], h[1], h[2], h[3]]
}

/// Next-header value of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 types of neighbour discovery (RFC 4861) and of the multicast listener protocol.
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_NEIGHBOUR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOUR_ADVERT: u8 = 136;
/// Option types: the sender's link-layer address (in a solicitation), the target's (in an
/// advertisement).
pub const ND_OPT_SOURCE_LL: u8 = 1;
pub const ND_OPT_TARGET_LL: u8 = 2;
/// An advertisement's flags word: solicited and override (not a router).
pub const NA_SOLICITED_OVERRIDE: [u8; 4] = [0x60, 0, 0, 0];
/// ICMPv6 length of a solicitation or advertisement with one link-layer address option.
pub const ND_LEN: usize = 32;
/// The hop limit neighbour discovery must carry (RFC 4861 7.1.1: anything else is forged
/// from off the link).
pub const ND_HOP_LIMIT: u8 = 255;

/// The ICMPv6 checksum of `message` (its checksum field zero) from `src` to `dst`, as it goes
/// into the packet.
pub fn icmpv6_checksum(src: &Ipv6Key, dst: &Ipv6Key, message: &[u8]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(src);
    add(dst);
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_keep_only_the_prefix() {
        let a: Ipv6Key = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        let mut want = [0u8; 16];
        want[0] = 0xfd;
        want[3] = 1;
        assert_eq!(network(a, 64), want);
        assert_eq!(network(a, 128), a);
        assert_eq!(network(a, 0), [0; 16]);
        // A prefix inside a byte keeps that byte's high bits.
        assert_eq!(network([0xff; 16], 12)[..2], [0xff, 0xf0]);
    }

    #[test]
    fn links_of_ipv4_subnets_are_apart_from_every_ipv6_link() {
        let (link, prefix) = ipv4_link([10, 40, 1, 0], 24);
        assert_eq!(prefix, 120);
        assert_eq!(&link[10..], &[0xff, 0xff, 10, 40, 1, 0]);
        let a = Endpoint6 {
            link,
            link_prefix: prefix,
            ..Endpoint6::default()
        };
        let (other, _) = ipv4_link([10, 40, 2, 0], 24);
        let b = Endpoint6 { link: other, ..a };
        assert!(a.same_link(&a));
        assert!(!a.same_link(&b));
        assert!(!a.same_link(&Endpoint6 {
            link_prefix: 64,
            ..a
        }));
        assert_eq!(core::mem::size_of::<Endpoint6>(), 32);
    }

    #[test]
    fn link_local_addresses_are_the_kernels_eui64() {
        // ip -6 addr of a link with MAC 02:57:0a:28:01:0a: fe80::57:aff:fe28:10a
        let ll = link_local([0x02, 0x57, 0x0a, 0x28, 0x01, 0x0a]);
        assert_eq!(
            ll,
            [
                0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x57, 0x0a, 0xff, 0xfe, 0x28, 0x01, 0x0a
            ]
        );
    }

    #[test]
    fn ipv6_only_macs_differ_between_subnets_and_stay_put() {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[3] = 1;
        a[15] = 0x10;
        let mut b = a;
        b[3] = 2;
        let (ma, mb) = (endpoint_mac6(a), endpoint_mac6(b));
        assert_eq!(&ma[..2], &[0x02, 0x58]);
        assert_ne!(ma, mb);
        assert_eq!(ma, endpoint_mac6(a));
        // Unicast and locally administered, as every endpoint MAC.
        assert_eq!(ma[0] & 0x03, 0x02);
    }

    #[test]
    fn the_checksum_verifies_to_zero() {
        let src = link_local([0x02, 0x57, 1, 2, 3, 4]);
        let dst = link_local([0x02, 0x57, 1, 2, 3, 5]);
        let mut msg = [0u8; ND_LEN];
        msg[0] = ND_NEIGHBOUR_ADVERT;
        msg[4] = 0x60;
        msg[8..24].copy_from_slice(&dst);
        let sum = icmpv6_checksum(&src, &dst, &msg);
        msg[2..4].copy_from_slice(&sum);
        assert_eq!(icmpv6_checksum(&src, &dst, &msg), [0, 0]);
    }
}

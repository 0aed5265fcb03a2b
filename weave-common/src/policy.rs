//! Isolation-rule map layout: which pairs of endpoint subnets may talk across subnets.

use crate::{
    endpoint::{Endpoint, Ipv4Key},
    ipv6::{Endpoint6, Ipv6Key},
};

/// How many allowed directions between subnets the policy map holds.
pub const POLICY_CAPACITY: u32 = 16_384;

/// One direction between two endpoint subnets. The agent writes both directions of every
/// allowed pair, so the programs need a single lookup per frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubnetPair {
    /// Network address of the sender's subnet ([`Ipv4Key`]).
    pub src_subnet: Ipv4Key,
    /// Network address of the receiver's subnet ([`Ipv4Key`]).
    pub dst_subnet: Ipv4Key,
    pub src_prefix: u8,
    pub dst_prefix: u8,
    /// Always zero: hash keys compare every byte.
    pub pad: [u8; 2],
}

impl SubnetPair {
    /// The pair from `src`'s subnet to `dst`'s subnet.
    // Inlined: eBPF programs cannot call functions across the crate boundary.
    #[inline(always)]
    pub const fn between(src: &Endpoint, dst: &Endpoint) -> Self {
        Self {
            src_subnet: src.subnet,
            dst_subnet: dst.subnet,
            src_prefix: src.prefix_len,
            dst_prefix: dst.prefix_len,
            pad: [0; 2],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u32 then four bytes, no padding (4+4+1+1+2), any bits valid.
unsafe impl aya::Pod for SubnetPair {}

/// One direction between two IPv6 links ([`Endpoint6::link`]): an IPv6 subnet, or the
/// IPv4-mapped form of an IPv4 subnet for the link-local addresses of containers without an
/// IPv6 address. Written like [`SubnetPair`], both directions of every allowed pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkPair {
    pub src_link: Ipv6Key,
    pub dst_link: Ipv6Key,
    pub src_prefix: u8,
    pub dst_prefix: u8,
    /// Always zero: hash keys compare every byte.
    pub pad: [u8; 2],
}

impl LinkPair {
    /// The pair from `src`'s link to `dst`'s link.
    #[inline(always)]
    pub const fn between(src: &Endpoint6, dst: &Endpoint6) -> Self {
        Self {
            src_link: src.link,
            dst_link: dst.link,
            src_prefix: src.link_prefix,
            dst_prefix: dst.link_prefix,
            pad: [0; 2],
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), byte arrays and bytes only (16+16+1+1+2), no padding, any bits valid.
unsafe impl aya::Pod for LinkPair {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_has_no_padding() {
        assert_eq!(core::mem::size_of::<SubnetPair>(), 12);
        assert_eq!(core::mem::size_of::<LinkPair>(), 36);
    }
}

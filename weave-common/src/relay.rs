//! Relayed overlay frames and link hellos: the VXLAN header as every host reads and writes it.
//!
//! A frame between two hosts that reach each other is plain VXLAN (RFC 7348): flags `0x08`,
//! the VNI, every reserved bit zero, which is what the kernel's VXLAN device accepts. A frame
//! a third host relays says who sent it first and how many relays it has passed, in bits the
//! RFC reserves: the low three bits of the flags byte count relays, and the origin's underlay
//! address sits in the three reserved bytes after the flags and the one after the VNI. The
//! last relay's address is the outer source, as any router's would be, so firewalls and
//! source-address filters on the way see an ordinary packet from a neighbour.
//!
//! ```text
//!  byte 0        1..4                 4..7     7
//!  0000 1hhh     origin[0..3]         VNI      origin[3]
//! ```
//!
//! The receiving host checks the inner source against the origin, as it checks a direct
//! frame's against the outer source, and puts the frame back into plain form before the
//! kernel's VXLAN device sees it.

use crate::endpoint::Ipv4Key;

/// The I flag: the VNI field is valid.
pub const VXLAN_FLAG_VNI: u8 = 0x08;
/// Bits of the flags byte that count the relays a frame has passed.
pub const RELAY_HOPS_MASK: u8 = 0x07;
/// Relays a frame may pass; one that would need another is dropped and counted. Routes from
/// shortest paths need far fewer; the limit bounds a loop while routes disagree.
pub const MAX_RELAY_HOPS: u8 = RELAY_HOPS_MASK;
/// VNI of a link hello: a datagram each agent sends every peer on the data port, which the
/// receiving host's underlay program records ([`crate::maps::HEARD`]) and drops. Who hears
/// whom directly is what relaying routes on.
pub const HELLO_VNI: u32 = 0x57_48_49;
/// Bytes of a hello datagram's UDP payload: the VXLAN header, then zeros. Hellos of other
/// sizes probe the path MTU: the receiver notes the largest that arrived.
pub const HELLO_LEN: usize = 16;

/// The VXLAN header of an overlay packet.
pub type VxlanHdr = [u8; 8];

/// The VNI the header carries.
#[inline(always)]
pub const fn vni(hdr: &VxlanHdr) -> u32 {
    u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]])
}

/// Relays the frame has passed.
#[inline(always)]
pub const fn hops(hdr: &VxlanHdr) -> u8 {
    hdr[0] & RELAY_HOPS_MASK
}

/// Underlay address of the host that sent the frame first, or 0 for a frame straight from
/// the outer source.
#[inline(always)]
pub const fn origin(hdr: &VxlanHdr) -> Ipv4Key {
    u32::from_ne_bytes([hdr[1], hdr[2], hdr[3], hdr[7]])
}

/// Marks the frame as relayed once more on behalf of `origin`.
#[inline(always)]
pub fn set_relayed(hdr: &mut VxlanHdr, origin: Ipv4Key, hops: u8) {
    let o = origin.to_ne_bytes();
    hdr[0] = VXLAN_FLAG_VNI | (hops & RELAY_HOPS_MASK);
    hdr[1] = o[0];
    hdr[2] = o[1];
    hdr[3] = o[2];
    hdr[7] = o[3];
}

/// Back to plain VXLAN: the reserved bits zero again, as the kernel's VXLAN device wants.
#[inline(always)]
pub fn clear_relayed(hdr: &mut VxlanHdr) {
    hdr[0] = VXLAN_FLAG_VNI;
    hdr[1] = 0;
    hdr[2] = 0;
    hdr[3] = 0;
    hdr[7] = 0;
}

/// The header of a plain frame (or, with [`HELLO_VNI`], a hello).
pub const fn plain(vni: u32) -> VxlanHdr {
    let v = vni.to_be_bytes();
    [VXLAN_FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ipv4_key;

    #[test]
    fn a_plain_header_is_rfc_7348_and_names_no_origin() {
        let hdr = plain(6784);
        assert_eq!(hdr, [0x08, 0, 0, 0, 0, 0x1a, 0x80, 0]);
        assert_eq!((vni(&hdr), hops(&hdr), origin(&hdr)), (6784, 0, 0));
    }

    #[test]
    fn relay_marks_keep_the_vni_and_read_back() {
        let mut hdr = plain(6784);
        let a = ipv4_key([192, 168, 56, 101]);
        set_relayed(&mut hdr, a, 3);
        assert_eq!((vni(&hdr), hops(&hdr), origin(&hdr)), (6784, 3, a));
        clear_relayed(&mut hdr);
        assert_eq!(hdr, plain(6784));
    }

    #[test]
    fn hop_counts_stay_within_their_bits() {
        let mut hdr = plain(1);
        set_relayed(&mut hdr, 1, MAX_RELAY_HOPS + 1);
        assert_eq!(hdr[0] & !RELAY_HOPS_MASK, VXLAN_FLAG_VNI);
        assert!(hops(&hdr) <= MAX_RELAY_HOPS);
    }
}

//! Packet headers as byte arrays (alignment 1, so any offset is a valid pointer) and bounds-
//! checked access the verifier accepts.

use core::mem::size_of;

use aya_ebpf::programs::{TcContext, XdpContext};

pub(crate) const ETH_LEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const ARP_REQUEST: u16 = 1;
pub(crate) const ARP_REPLY: u16 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

impl EthHdr {
    #[inline(always)]
    pub fn proto(&self) -> u16 {
        u16::from_be_bytes(self.proto)
    }
}

/// ECN field values in the IPv4 TOS byte (RFC 3168); CE is also the field's mask.
pub(crate) const ECN_NOT_ECT: u8 = 0;
pub(crate) const ECN_CE: u8 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub csum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// Version 4, a header length of at least 20 bytes, and a total length that fits in the
    /// `room` bytes the frame has from this header on: anything else is malformed, whatever
    /// its addresses say. A GSO super-packet's total length is the stack's own (0 with BIG
    /// TCP), so only its version and header length are checked.
    #[inline(always)]
    pub fn is_sane(&self, room: u32, gso: bool) -> bool {
        let ihl = u32::from(self.ver_ihl & 0x0f) * 4;
        let total = u32::from(u16::from_be_bytes(self.tot_len));
        self.ver_ihl >> 4 == 4 && ihl >= 20 && (gso || (total >= ihl && total <= room))
    }

    /// Fragment offset or more-fragments set: a piece of a larger datagram.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag) & 0x3fff != 0
    }

    /// The ECN field (RFC 3168): 0 Not-ECT, 1 or 2 ECT, 3 CE.
    #[inline(always)]
    pub fn ecn(&self) -> u8 {
        self.tos & ECN_CE
    }

    /// Marks congestion experienced, with the header checksum updated to match (RFC 1624).
    /// The header's ones'-complement sum stays the same, so a CHECKSUM_COMPLETE value over
    /// the packet stays valid.
    #[inline(always)]
    pub fn set_ce(&mut self) {
        let old = u16::from_be_bytes([self.ver_ihl, self.tos]);
        self.tos |= ECN_CE;
        let new = u16::from_be_bytes([self.ver_ihl, self.tos]);
        let mut sum = u32::from(!u16::from_be_bytes(self.csum)) + u32::from(!old) + u32::from(new);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        self.csum = (!(sum as u16)).to_be_bytes();
    }

    /// Sets the header checksum (RFC 791) for a 20-byte header as it now is.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.csum = [0, 0];
        // SAFETY: repr(C) of 20 bytes with alignment 1, so it reads as a byte array.
        let bytes: &[u8; 20] = unsafe { &*(self as *const Self).cast::<[u8; 20]>() };
        self.csum = internet_checksum(bytes, 0, 20).to_be_bytes();
    }

    /// A fragment after the first, which carries no transport header.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag) & 0x1fff != 0
    }
}

/// The fixed IPv6 header (RFC 8200).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    /// Version 6 and a payload that fits in the `room` bytes the frame has from this header
    /// on (a super-packet's length is the stack's own, as for IPv4).
    #[inline(always)]
    pub fn is_sane(&self, room: u32, gso: bool) -> bool {
        let payload = u32::from(u16::from_be_bytes(self.payload_len));
        self.vtc_flow[0] >> 4 == 6 && (gso || payload + 40 <= room)
    }

    /// The traffic class: DSCP and the ECN field, as IPv4's TOS byte holds them.
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (self.vtc_flow[0] << 4) | (self.vtc_flow[1] >> 4)
    }
}

/// RFC 1071 checksum over the `len` bytes of `buf` from `start` (an even count, the checksum
/// field in it zero): the IPv4 header's and ICMP's. The bounds are constants where it is
/// called, so the verifier sees a fixed loop.
#[inline(always)]
pub(crate) fn internet_checksum<const N: usize>(buf: &[u8; N], start: usize, len: usize) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < len {
        sum += u32::from(u16::from_be_bytes([buf[start + i], buf[start + i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// ARP for IPv4 over Ethernet.
#[repr(C)]
pub(crate) struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub op: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

impl ArpHdr {
    #[inline(always)]
    pub fn is_ipv4_ethernet(&self) -> bool {
        u16::from_be_bytes(self.htype) == 1
            && u16::from_be_bytes(self.ptype) == ETH_P_IP
            && self.hlen == 6
            && self.plen == 4
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UdpHdr {
    pub src: [u8; 2],
    pub dst: [u8; 2],
    pub len: [u8; 2],
    pub csum: [u8; 2],
}

/// A GSO super-packet, by the kernel's own test (`skb_is_gso`): a segment size is what makes
/// the stack cut a packet up on its way out and what `bpf_skb_adjust_room` treats differently.
/// `gso_segs` is only a count the stack fills in as it goes (1 on plain packets, 0 until
/// computed on some super-packets) and decides nothing.
#[inline(always)]
pub(crate) fn is_gso(ctx: &TcContext) -> bool {
    // SAFETY: the context pointer is the program's skb.
    unsafe { (*ctx.skb.skb).gso_size != 0 }
}

/// Pointer to a `T` at `offset` in the packet `[start, end)`, if it fits.
#[inline(always)]
pub(crate) fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Option<*mut T> {
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// A packet headers can be copied out of.
pub(crate) trait Packet {
    /// The `T` at `offset`, if the packet is long enough.
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
}

impl Packet for XdpContext {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let ptr = ptr_at::<T>(self.data(), self.data_end(), offset)?;
        // SAFETY: ptr_at checked the value lies inside the packet.
        Some(unsafe { ptr.read_unaligned() })
    }
}

impl Packet for TcContext {
    /// Straight from the linear data when the value is there, else through the load helper:
    /// an skb may keep even its headers in paged data, and pulling them in would copy the
    /// head of every cloned skb (all TCP data is cloned) just to look at it.
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        match ptr_at::<T>(self.data(), self.data_end(), offset) {
            // SAFETY: ptr_at checked the value lies inside the linear data.
            Some(ptr) => Some(unsafe { ptr.read_unaligned() }),
            None => self.load(offset).ok(),
        }
    }
}

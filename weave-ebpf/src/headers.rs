//! Packet headers as byte arrays (alignment 1, so any offset is a valid pointer) and bounds-
//! checked access the verifier accepts.

use core::mem::size_of;

pub(crate) const ETH_LEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const ARP_REQUEST: u16 = 1;
pub(crate) const ARP_REPLY: u16 = 2;

#[repr(C)]
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

#[repr(C)]
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
pub(crate) struct UdpHdr {
    pub src: [u8; 2],
    pub dst: [u8; 2],
    pub len: [u8; 2],
    pub csum: [u8; 2],
}

/// Pointer to a `T` at `offset` in the packet `[start, end)`, if it fits.
#[inline(always)]
pub(crate) fn ptr_at<T>(start: usize, end: usize, offset: usize) -> Option<*mut T> {
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

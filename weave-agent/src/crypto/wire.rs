//! The sealed datagram's clear header (layout in `weave_common::seal`), written and read
//! without a kernel: what the agent sends, and what it accepts from the network, which the
//! fuzzer feeds anything.

use std::net::Ipv4Addr;

use weave_common::{
    relay::VXLAN_FLAG_VNI,
    seal::{KIND_DATA, KIND_INITIATION, KIND_RESPONSE, SEALED_HEADER_LEN, SEALED_VNI},
};

/// Bytes of the header the AEAD authenticates: all of it but the VXLAN-shaped part, which
/// relays rewrite.
pub const AUTHENTICATED: std::ops::Range<usize> = 8..SEALED_HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Initiation,
    Response,
    Data,
}

impl Kind {
    const fn byte(self) -> u8 {
        match self {
            Self::Initiation => KIND_INITIATION,
            Self::Response => KIND_RESPONSE,
            Self::Data => KIND_DATA,
        }
    }

    const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            KIND_INITIATION => Some(Self::Initiation),
            KIND_RESPONSE => Some(Self::Response),
            KIND_DATA => Some(Self::Data),
            _ => None,
        }
    }
}

/// A sealed datagram's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The host the datagram is for (relays route on it).
    pub dest: Ipv4Addr,
    pub kind: Kind,
    /// Data: which chunk of how many of the sealed message this is.
    pub index: u8,
    pub count: u8,
    /// Handshakes: the sender's session index. Data: the receiver's.
    pub session: u32,
    /// Response: the initiator's session index. Data: the chunk's offset in the message.
    pub aux: u32,
    /// Data: the AEAD nonce.
    pub counter: u64,
}

impl Header {
    pub fn handshake(kind: Kind, dest: Ipv4Addr, session: u32, aux: u32) -> Self {
        Self {
            dest,
            kind,
            index: 0,
            count: 0,
            session,
            aux,
            counter: 0,
        }
    }

    /// Writes the header as a datagram sent straight to its destination starts (no relay
    /// marks).
    pub fn write(&self, out: &mut [u8; SEALED_HEADER_LEN]) {
        let vni = SEALED_VNI.to_be_bytes();
        out[..8].copy_from_slice(&[VXLAN_FLAG_VNI, 0, 0, 0, vni[1], vni[2], vni[3], 0]);
        out[8..12].copy_from_slice(&self.dest.octets());
        out[12..16].copy_from_slice(&[self.kind.byte(), self.index, self.count, 0]);
        out[16..20].copy_from_slice(&self.session.to_be_bytes());
        out[20..24].copy_from_slice(&self.aux.to_be_bytes());
        out[24..32].copy_from_slice(&self.counter.to_be_bytes());
    }

    /// The header a datagram's UDP payload starts with, if it is a sealed datagram's. The relay
    /// marks (hops, origin) are not read: the session says who sent it.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let h: &[u8; SEALED_HEADER_LEN] = payload.get(..SEALED_HEADER_LEN)?.try_into().ok()?;
        let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
        if h[0] & VXLAN_FLAG_VNI == 0 || vni != SEALED_VNI || h[15] != 0 {
            return None;
        }
        let kind = Kind::from_byte(h[12])?;
        let (index, count) = (h[13], h[14]);
        if kind == Kind::Data && (count == 0 || index >= count) {
            return None;
        }
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        Some(Self {
            dest: Ipv4Addr::new(h[8], h[9], h[10], h[11]),
            kind,
            index,
            count,
            session: word(16),
            aux: word(20),
            counter: u64::from_be_bytes(h[24..32].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let header = Header {
            dest: Ipv4Addr::new(10, 0, 0, 2),
            kind: Kind::Data,
            index: 3,
            count: 47,
            session: 0xdead_beef,
            aux: 4_284,
            counter: 1 << 40,
        };
        let mut out = [0; SEALED_HEADER_LEN];
        header.write(&mut out);
        assert_eq!(Header::parse(&out), Some(header));
        // A relay's marks do not change what the header says.
        let mut relayed = out;
        weave_common::relay::set_relayed(&mut relayed[..8].try_into().unwrap(), 7, 2);
        relayed[0] |= 2;
        assert_eq!(Header::parse(&relayed), Some(header));
    }

    #[test]
    fn other_datagrams_are_not_sealed_ones() {
        let mut out = [0; SEALED_HEADER_LEN];
        Header::handshake(Kind::Initiation, Ipv4Addr::new(10, 0, 0, 2), 1, 0).write(&mut out);
        assert!(Header::parse(&out).is_some());
        assert_eq!(Header::parse(&out[..31]), None, "short");
        let mut vxlan = out;
        vxlan[4..7].copy_from_slice(&[0, 0x1a, 0x80]);
        assert_eq!(Header::parse(&vxlan), None, "the overlay's VNI");
        let mut kind = out;
        kind[12] = 9;
        assert_eq!(Header::parse(&kind), None, "unknown kind");
        let mut chunk = out;
        chunk[12] = KIND_DATA;
        chunk[13..15].copy_from_slice(&[2, 2]);
        assert_eq!(Header::parse(&chunk), None, "chunk index past the count");
        let mut reserved = out;
        reserved[15] = 1;
        assert_eq!(Header::parse(&reserved), None);
    }
}

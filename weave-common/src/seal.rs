//! The encrypted data plane as the programs and the agent both see it: the sealed datagram's
//! clear header, the marks on frames crossing the agent's crypto device, and the crypto map.
//!
//! With a password, frames between two peers that do not both trust the path are sealed by
//! the agent (the crypto lives in userspace: this kernel has no ESP, WireGuard or kTLS). The
//! programs hand such frames to the agent's TAP device, and every sealed datagram for this
//! host too; relays send sealed datagrams on in the kernel without reading them (the seal is
//! end to end). A sealed datagram goes to the data port, as VXLAN does, and starts with a
//! VXLAN-shaped header of its own VNI, so a relay marks it as it marks a relayed frame:
//!
//! ```text
//!  0..8    flags 0x08 | hops, origin, SEALED_VNI     (see `crate::relay`; relays write here)
//!  8..12   destination host's underlay address         \
//!  12      kind: initiation, response or data           |
//!  13, 14  data: chunk index, chunk count               |  associated data: authenticated,
//!  15      zero                                         |  not encrypted
//!  16..20  sender's session index (handshakes), receiver's (data)
//!  20..24  response: the initiator's index; data: the chunk's offset in the message
//!  24..32  data: the counter (the AEAD nonce)          /
//!  32..    the Noise handshake message, or the chunk sealed (with its 16-byte tag)
//! ```

use crate::endpoint::Ipv4Key;

/// VNI of a sealed datagram ("WHS"), next to the link hello's.
pub const SEALED_VNI: u32 = 0x57_48_53;
/// Bytes before the sealed payload.
pub const SEALED_HEADER_LEN: usize = 32;
/// Offset of the destination host's address in the UDP payload.
pub const SEALED_DEST_OFFSET: usize = 8;
/// Bytes of an AEAD tag.
pub const SEALED_TAG_LEN: usize = 16;

/// Kinds of sealed datagram (byte 12).
pub const KIND_INITIATION: u8 = 1;
pub const KIND_RESPONSE: u8 = 2;
pub const KIND_DATA: u8 = 3;

/// First two bytes of the destination MAC the programs write on a container frame they hand
/// to the agent to seal (the destination host's address follows), and the agent on an opened
/// frame it hands back (the sending host's address follows). Locally administered, and never
/// an endpoint's MAC (those start `02:57`).
pub const SEAL_MARK: [u8; 2] = [0x02, 0x53];

/// The destination MAC that marks a frame for (or from) the host at `peer`.
pub const fn marked_mac(peer: Ipv4Key) -> [u8; 6] {
    let a = peer.to_ne_bytes();
    [SEAL_MARK[0], SEAL_MARK[1], a[0], a[1], a[2], a[3]]
}

/// The host a marked MAC names, if it is one.
pub const fn marked_peer(mac: &[u8; 6]) -> Option<Ipv4Key> {
    if mac[0] == SEAL_MARK[0] && mac[1] == SEAL_MARK[1] {
        Some(u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]]))
    } else {
        None
    }
}

/// The crypto path as the agent last reported it: the value at index 0 of the crypto map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoPath {
    /// 1: the mesh has a password; frames to peers without
    /// [`crate::endpoint::PEER_PLAIN`] must be sealed.
    /// Stays set after the agent stops, so the data path fails closed.
    pub seal: u32,
    /// The agent's TAP device, which frames to seal and sealed datagrams are handed to.
    pub tap_ifindex: u32,
    /// Until when (`bpf_ktime_get_ns`) the agent vouches that it reads the device: it renews
    /// this while it runs, so a killed agent's device is given nothing after a moment.
    pub alive_until_ns: u64,
}

impl CryptoPath {
    /// The device to hand sealed traffic to at time `now`, if the agent is reading it.
    pub const fn device(&self, now: u64) -> Option<u32> {
        if self.tap_ifindex != 0 && now < self.alive_until_ns {
            Some(self.tap_ifindex)
        } else {
            None
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u32 and a u64, no padding, any bits valid.
unsafe impl aya::Pod for CryptoPath {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::ipv4_key;

    #[test]
    fn marked_macs_name_their_host_and_are_never_endpoint_macs() {
        let peer = ipv4_key([10, 0, 0, 2]);
        let mac = marked_mac(peer);
        assert_eq!(marked_peer(&mac), Some(peer));
        assert_eq!(crate::endpoint::endpoint_mac_address(&mac), None);
        let endpoint = crate::endpoint::endpoint_mac([10, 0, 0, 2]);
        assert_eq!(marked_peer(&endpoint), None);
        assert_eq!(core::mem::size_of::<CryptoPath>(), 16);
    }

    #[test]
    fn the_device_is_given_traffic_only_while_the_agent_vouches_for_it() {
        let path = CryptoPath {
            seal: 1,
            tap_ifindex: 7,
            alive_until_ns: 100,
        };
        assert_eq!(path.device(99), Some(7));
        assert_eq!(path.device(100), None);
        assert_eq!(CryptoPath::default().device(0), None);
    }
}

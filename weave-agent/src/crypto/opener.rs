//! The receiving side of the crypto path without I/O: a datagram from the network in, and out
//! a refusal, a handshake for the table, a chunk kept, or a whole frame to hand back to the
//! kernel. Everything an attacker sends goes through here first (the fuzzer's target).

use std::{net::Ipv4Addr, time::Instant};

use weave_common::seal::marked_mac;

use super::{
    session::Refused,
    table::Table,
    tap::VNET_HDR_LEN,
    wire::{Header, Kind},
};

/// Largest message (virtio-net header and frame) a peer may send.
pub const MAX_MESSAGE: usize = VNET_HDR_LEN + 65_536;
/// Messages put back together at once (one per session sending to this worker, mostly).
const SLOTS: usize = 4;

/// What became of one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened<'a> {
    /// The last chunk of a message: the message (virtio-net header and frame, the frame's
    /// destination MAC marked with the sending host) from `peer`.
    Message { peer: Ipv4Addr, message: &'a [u8] },
    /// A chunk kept until the rest of its message arrives.
    Partial,
    /// A handshake message, for the table.
    Handshake(Header),
    /// Not opened: counted against `blame`. `unknown_session`: it names a session this host
    /// does not have (it restarted), so its sender needs a new handshake.
    Refused {
        blame: Ipv4Addr,
        unknown_session: bool,
        why: Option<Refused>,
    },
}

struct Slot {
    session: u32,
    /// The counter of chunk 0.
    base: u64,
    count: u8,
    got: u8,
    len: usize,
    buf: Vec<u8>,
}

pub struct Opener {
    slots: Vec<Slot>,
    next: usize,
}

impl Default for Opener {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    session: 0,
                    base: 0,
                    count: 0,
                    got: 0,
                    len: 0,
                    buf: vec![0; MAX_MESSAGE],
                })
                .collect(),
            next: 0,
        }
    }
}

impl Opener {
    /// Opens `datagram` (a UDP payload from underlay address `source`) in place.
    pub fn open<'a>(
        &'a mut self,
        table: &Table,
        source: Ipv4Addr,
        datagram: &mut [u8],
        now: Instant,
    ) -> Opened<'a> {
        let refused = |blame, unknown_session, why| Opened::Refused {
            blame,
            unknown_session,
            why,
        };
        let Some(header) = Header::parse(datagram) else {
            return refused(source, false, None);
        };
        if header.kind != Kind::Data {
            return Opened::Handshake(header);
        }
        let Some(session) = table.receiver(header.session) else {
            return refused(source, true, None);
        };
        let plain = match session.open(header.counter, datagram, now) {
            Ok(plain) => plain,
            Err(why) => return refused(session.peer, false, Some(why)),
        };
        let Some(base) = header.counter.checked_sub(u64::from(header.index)) else {
            return refused(session.peer, false, None);
        };
        let found = self
            .slots
            .iter()
            .position(|s| s.count != 0 && s.session == session.local_index && s.base == base);
        let at = found.unwrap_or_else(|| {
            let i = self.next;
            self.next = (i + 1) % SLOTS;
            let s = &mut self.slots[i];
            (s.session, s.base, s.count, s.got, s.len) =
                (session.local_index, base, header.count, 0, 0);
            i
        });
        let slot = &mut self.slots[at];
        let offset = header.aux as usize;
        if slot.count != header.count || offset + plain.len() > MAX_MESSAGE {
            // An authentic peer that cuts its messages inconsistently loses them.
            slot.count = 0;
            return refused(session.peer, false, None);
        }
        slot.buf[offset..offset + plain.len()].copy_from_slice(plain);
        slot.got += 1;
        if header.index + 1 == header.count {
            slot.len = offset + plain.len();
        }
        if slot.got < slot.count {
            return Opened::Partial;
        }
        slot.count = 0;
        if slot.len < VNET_HDR_LEN + 14 {
            return refused(session.peer, false, None);
        }
        // Marked with the host it came from, for the device's program to check.
        slot.buf[VNET_HDR_LEN..VNET_HDR_LEN + 6]
            .copy_from_slice(&marked_mac(u32::from_ne_bytes(session.peer.octets())));
        Opened::Message {
            peer: session.peer,
            message: &slot.buf[..slot.len],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::wire::Header;
    use weave_common::seal::marked_peer;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Two tables with a session between them: (sender A, receiver B).
    fn sessions() -> (Table, Table) {
        Table::connected_pair(A, B, [9; 32]).unwrap()
    }

    /// `message` sealed by `a` for B in chunks of `chunk` bytes.
    fn chunks(a: &Table, message: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let sender = a.sender(B, Instant::now()).unwrap();
        let count = message.len().div_ceil(chunk);
        let first = sender.session.take_counters(count as u64).unwrap();
        (0..count)
            .map(|i| {
                let part = &message[i * chunk..message.len().min((i + 1) * chunk)];
                let header = Header {
                    dest: B,
                    kind: Kind::Data,
                    index: i as u8,
                    count: count as u8,
                    session: sender.session.remote_index,
                    aux: (i * chunk) as u32,
                    counter: first + i as u64,
                };
                sender.session.sealed(&header, part)
            })
            .collect()
    }

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn a_message_comes_back_whole_in_any_chunk_order_marked_with_its_sender() {
        let (a, b) = sessions();
        let sent = message(5000);
        let mut parts = chunks(&a, &sent, 1400);
        parts.swap(0, 2);
        let mut opener = Opener::default();
        let now = Instant::now();
        let last = parts.len() - 1;
        for (i, part) in parts.iter_mut().enumerate() {
            let opened = opener.open(&b, A, part, now);
            if i < last {
                assert_eq!(opened, Opened::Partial);
                continue;
            }
            let Opened::Message { peer, message } = opened else {
                panic!("{opened:?}");
            };
            assert_eq!(peer, A);
            let mac: [u8; 6] = message[VNET_HDR_LEN..VNET_HDR_LEN + 6].try_into().unwrap();
            assert_eq!(marked_peer(&mac), Some(u32::from_ne_bytes(A.octets())));
            assert_eq!(message[VNET_HDR_LEN + 6..], sent[VNET_HDR_LEN + 6..]);
        }
    }

    #[test]
    fn what_is_not_authentic_fresh_and_known_is_refused_and_blamed() {
        let (a, b) = sessions();
        let mut opener = Opener::default();
        let now = Instant::now();
        let stranger = Ipv4Addr::new(10, 0, 0, 9);
        let good = chunks(&a, &message(100), 1400).remove(0);
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        assert!(matches!(
            opener.open(&b, A, &mut flipped, now),
            Opened::Refused {
                blame: A,
                why: Some(Refused::Forged),
                ..
            }
        ));
        let mut unknown = good.clone();
        unknown[20..24].copy_from_slice(&[0xff; 4]);
        unknown[16..20].copy_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            opener.open(&b, stranger, &mut unknown, now),
            Opened::Refused { blame, unknown_session: true, .. } if blame == stranger
        ));
        assert!(matches!(
            opener.open(&b, stranger, &mut [0u8; 10], now),
            Opened::Refused { blame, unknown_session: false, .. } if blame == stranger
        ));
        let mut once = good.clone();
        assert!(matches!(
            opener.open(&b, A, &mut once, now),
            Opened::Message { .. }
        ));
        let mut twice = good;
        assert!(matches!(
            opener.open(&b, A, &mut twice, now),
            Opened::Refused {
                why: Some(Refused::Replayed),
                ..
            }
        ));
    }
}

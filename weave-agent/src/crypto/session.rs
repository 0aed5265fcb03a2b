//! One session's transport: AES-256-GCM (ring) under the keys a handshake made, the counter as
//! nonce (Noise's: four zero bytes, then the counter big-endian), the clear header as
//! associated data, and the replay window on the receiving side.

use std::{
    net::Ipv4Addr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use weave_common::seal::{SEALED_HEADER_LEN, SEALED_TAG_LEN};

use super::{
    handshake::Keys,
    replay::ReplayWindow,
    wire::{AUTHENTICATED, Header},
};

/// A session is replaced after this long (WireGuard's REKEY_AFTER_TIME) ...
pub const REKEY_AFTER: Duration = Duration::from_secs(120);
/// ... and refused after this (REJECT_AFTER_TIME), in both directions.
pub const REJECT_AFTER: Duration = Duration::from_secs(180);
/// Messages per session before it must be replaced (REJECT_AFTER_MESSAGES), far below where
/// AES-GCM's nonces would wrap.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

pub struct Session {
    /// The host at the other end.
    pub peer: Ipv4Addr,
    /// The index this host gave the session (datagrams to us carry it) and the peer's.
    pub local_index: u32,
    pub remote_index: u32,
    pub created: Instant,
    /// This host started the handshake.
    pub initiator: bool,
    send: LessSafeKey,
    recv: LessSafeKey,
    next_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
}

/// Why a datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not authentic: another key, a flipped bit, a forgery.
    Forged,
    /// Authentic, but opened before.
    Replayed,
    /// The session is too old to take it.
    Expired,
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

impl Session {
    pub fn new(
        peer: Ipv4Addr,
        local_index: u32,
        remote_index: u32,
        keys: &Keys,
        initiator: bool,
        now: Instant,
    ) -> Self {
        Self {
            peer,
            local_index,
            remote_index,
            created: now,
            initiator,
            send: key(&keys.send),
            recv: key(&keys.recv),
            next_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
        }
    }

    /// The session may still carry traffic at `now`.
    pub fn usable(&self, now: Instant) -> bool {
        now.duration_since(self.created) < REJECT_AFTER
            && self.next_counter.load(Ordering::Relaxed) < REJECT_AFTER_MESSAGES
    }

    /// The session is due to be replaced at `now` (by its initiator; the responder too, a
    /// little later, should the initiator not).
    pub fn due(&self, now: Instant) -> bool {
        let after = if self.initiator {
            REKEY_AFTER
        } else {
            REKEY_AFTER + Duration::from_secs(10)
        };
        now.duration_since(self.created) >= after
    }

    /// Takes `n` consecutive counters for the chunks of one message: the first, or None when
    /// the session has sent all it may.
    pub fn take_counters(&self, n: u64) -> Option<u64> {
        let first = self.next_counter.fetch_add(n, Ordering::Relaxed);
        (first.checked_add(n)? <= REJECT_AFTER_MESSAGES).then_some(first)
    }

    /// Seals `datagram[SEALED_HEADER_LEN..len]` in place, the header before it (already
    /// written, `counter` in it) authenticated, and appends the tag: the datagram's length.
    pub fn seal(&self, counter: u64, datagram: &mut [u8], len: usize) -> usize {
        let (header, rest) = datagram.split_at_mut(SEALED_HEADER_LEN);
        let body = &mut rest[..len - SEALED_HEADER_LEN];
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&header[AUTHENTICATED]), body)
            .expect("AES-GCM seals any message under 64 GiB");
        rest[len - SEALED_HEADER_LEN..][..SEALED_TAG_LEN].copy_from_slice(tag.as_ref());
        len + SEALED_TAG_LEN
    }

    /// A whole datagram: `header` (its counter the nonce) and `payload` sealed after it. The
    /// engine seals into its own buffers; this is for the tests and the fuzzer.
    pub fn sealed(&self, header: &Header, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; SEALED_HEADER_LEN + payload.len() + SEALED_TAG_LEN];
        header.write(
            (&mut out[..SEALED_HEADER_LEN])
                .try_into()
                .expect("header room"),
        );
        out[SEALED_HEADER_LEN..][..payload.len()].copy_from_slice(payload);
        self.seal(header.counter, &mut out, SEALED_HEADER_LEN + payload.len());
        out
    }

    /// Opens a data datagram (header, ciphertext, tag) in place: the plaintext, if it is
    /// authentic, fresh, and the session still takes it.
    pub fn open<'a>(
        &self,
        counter: u64,
        datagram: &'a mut [u8],
        now: Instant,
    ) -> Result<&'a [u8], Refused> {
        if datagram.len() < SEALED_HEADER_LEN + SEALED_TAG_LEN {
            return Err(Refused::Forged);
        }
        if !self.usable(now) {
            return Err(Refused::Expired);
        }
        let (header, body) = datagram.split_at_mut(SEALED_HEADER_LEN);
        let plain = self
            .recv
            .open_in_place(nonce(counter), Aad::from(&header[AUTHENTICATED]), body)
            .map_err(|_| Refused::Forged)?;
        let fresh = self.replay.lock().expect("replay window").accept(counter);
        if !fresh {
            return Err(Refused::Replayed);
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::wire::Kind;

    fn pair() -> (Session, Session) {
        let now = Instant::now();
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let a = Session::new(
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            2,
            &Keys { send: k1, recv: k2 },
            true,
            now,
        );
        let b = Session::new(
            Ipv4Addr::new(10, 0, 0, 1),
            2,
            1,
            &Keys { send: k2, recv: k1 },
            false,
            now,
        );
        (a, b)
    }

    fn datagram(a: &Session, text: &[u8]) -> (u64, Vec<u8>) {
        let counter = a.take_counters(1).unwrap();
        let header = Header {
            dest: Ipv4Addr::new(10, 0, 0, 2),
            kind: Kind::Data,
            index: 0,
            count: 1,
            session: a.remote_index,
            aux: 0,
            counter,
        };
        (counter, a.sealed(&header, text))
    }

    #[test]
    fn a_sealed_datagram_opens_once_and_hides_its_text() {
        let (a, b) = pair();
        let now = Instant::now();
        let (counter, sealed) = datagram(&a, b"marker marker marker");
        assert!(!sealed.windows(6).any(|w| w == b"marker"));
        let mut copy = sealed.clone();
        assert_eq!(
            b.open(counter, &mut copy, now),
            Ok(&b"marker marker marker"[..])
        );
        let mut again = sealed.clone();
        assert_eq!(b.open(counter, &mut again, now), Err(Refused::Replayed));
    }

    #[test]
    fn any_flipped_bit_of_header_or_body_is_refused() {
        let (a, b) = pair();
        let now = Instant::now();
        let (counter, sealed) = datagram(&a, b"0123456789");
        // The VXLAN-shaped first 8 bytes are the relays' to rewrite; the rest is authentic.
        for byte in 8..sealed.len() {
            let mut bad = sealed.clone();
            bad[byte] ^= 0x01;
            assert_eq!(
                b.open(counter, &mut bad, now),
                Err(Refused::Forged),
                "byte {byte}"
            );
        }
        let mut good = sealed.clone();
        assert!(
            b.open(counter, &mut good, now).is_ok(),
            "none of that moved the window"
        );
        let mut wrong_counter = sealed.clone();
        assert_eq!(
            b.open(counter + 1, &mut wrong_counter, now),
            Err(Refused::Forged)
        );
    }

    #[test]
    fn an_old_session_takes_nothing_and_is_due_before_it_expires() {
        let (a, b) = pair();
        let (counter, sealed) = datagram(&a, b"late");
        let later = a.created + REKEY_AFTER;
        assert!(a.due(later) && !b.due(later), "the initiator rekeys first");
        assert!(b.due(later + Duration::from_secs(10)));
        let mut copy = sealed;
        assert_eq!(
            b.open(counter, &mut copy, a.created + REJECT_AFTER),
            Err(Refused::Expired)
        );
    }

    #[test]
    fn counters_run_out_instead_of_repeating() {
        let (a, _) = pair();
        assert_eq!(a.take_counters(3), Some(0));
        assert_eq!(a.take_counters(2), Some(3));
        a.next_counter
            .store(REJECT_AFTER_MESSAGES - 1, Ordering::Relaxed);
        assert_eq!(a.take_counters(2), None);
    }
}

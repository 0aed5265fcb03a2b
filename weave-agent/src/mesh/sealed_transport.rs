//! Gossip datagrams authenticated and encrypted under a key derived from the mesh password
//! (`--password`), as a chitchat transport.
//!
//! Datagram: `WA1` | 24-byte random nonce | XChaCha20-Poly1305(plaintext, aad = `WA1`), where
//! plaintext = sender instance (u64) | counter (u64) | send time in ms (u64) | zstd(message).
//! A receiver drops, and counts with the source address, anything that does not decrypt, was
//! sent more than [`MAX_AGE`] ago, or repeats or predates a counter already seen from that
//! sender instance.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use argon2::Argon2;
use async_trait::async_trait;
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead as _, KeyInit as _, Payload},
};
use chitchat::{
    ChitchatMessage, Deserializable as _, Serializable as _,
    transport::{Socket, Transport},
};

use crate::net::clock::unix_millis;

const MAGIC: &[u8; 3] = b"WA1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 24;
/// Every peer derives the same key, so the salt is fixed; it ties the key to this use.
const KDF_SALT: &[u8] = b"weave-agent gossip key v1";
/// Datagrams sent longer ago than this (or this far in the future) are refused as replays.
const MAX_AGE: Duration = Duration::from_secs(60);
/// Sender instances remembered for replay protection.
const MAX_INSTANCES: usize = 4096;
const MAX_DATAGRAM: usize = 65_507;

/// Derives the 256-bit gossip key from the password with Argon2id.
pub fn derive_key(password: &str) -> Result<[u8; 32]> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    let mut key = [0u8; 32];
    Argon2::default()
        .hash_password_into(password.as_bytes(), KDF_SALT, &mut key)
        .map_err(|err| anyhow!("deriving the gossip key: {err}"))?;
    Ok(key)
}

/// Datagrams refused, by source address.
#[derive(Debug, Default, Clone)]
pub struct AuthFailures {
    pub total: u64,
    pub by_source: BTreeMap<IpAddr, u64>,
}

pub struct SealedTransport {
    cipher: Arc<XChaCha20Poly1305>,
    failures: Arc<Mutex<AuthFailures>>,
}

impl SealedTransport {
    pub fn new(key: &[u8; 32], failures: Arc<Mutex<AuthFailures>>) -> Self {
        Self {
            cipher: Arc::new(XChaCha20Poly1305::new(key.into())),
            failures,
        }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("binding {listen_addr}/UDP for gossip"))?;
        Ok(Box::new(SealedSocket {
            socket,
            sealer: Sealer::with_cipher(Arc::clone(&self.cipher))?,
            opener: Opener::with_cipher(Arc::clone(&self.cipher)),
            failures: Arc::clone(&self.failures),
            buf: vec![0u8; MAX_DATAGRAM],
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    sealer: Sealer,
    opener: Opener,
    failures: Arc<Mutex<AuthFailures>>,
    buf: Vec<u8>,
}

/// The sending half: seals message bodies with this socket's instance id and counter.
pub struct Sealer {
    cipher: Arc<XChaCha20Poly1305>,
    /// Random per socket, so a restarted peer's counters start afresh without being replays.
    instance: u64,
    counter: u64,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Result<Self> {
        Self::with_cipher(Arc::new(XChaCha20Poly1305::new(key.into())))
    }

    fn with_cipher(cipher: Arc<XChaCha20Poly1305>) -> Result<Self> {
        let mut instance = [0u8; 8];
        getrandom::fill(&mut instance).map_err(|e| anyhow!("no randomness: {e}"))?;
        Ok(Self {
            cipher,
            instance: u64::from_be_bytes(instance),
            counter: 0,
        })
    }

    /// One datagram carrying `body` (zstd-compressed gossip), stamped `now_ms`.
    pub fn seal(&mut self, body: &[u8], now_ms: u64) -> Result<Vec<u8>> {
        self.counter += 1;
        seal(&self.cipher, [self.instance, self.counter, now_ms], body)
    }
}

/// The receiving half: opens datagrams and remembers counters for replay protection.
pub struct Opener {
    cipher: Arc<XChaCha20Poly1305>,
    /// Highest counter seen per sender instance, and when.
    seen: HashMap<u64, (u64, Instant)>,
}

impl Opener {
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_cipher(Arc::new(XChaCha20Poly1305::new(key.into())))
    }

    fn with_cipher(cipher: Arc<XChaCha20Poly1305>) -> Self {
        Self {
            cipher,
            seen: HashMap::new(),
        }
    }

    /// The gossip message a datagram received at `now_ms` carries, or why it is refused.
    pub fn accept(
        &mut self,
        datagram: &[u8],
        now_ms: u64,
    ) -> Result<ChitchatMessage, &'static str> {
        let opened = open(&self.cipher, datagram).ok_or("not sealed with our password")?;
        if now_ms.abs_diff(opened.sent_ms) > MAX_AGE.as_millis() as u64 {
            return Err("sent too long ago or in the future (a replay?)");
        }
        if !self.fresh(opened.instance, opened.counter) {
            return Err("replayed");
        }
        // Bounded: a small datagram must not inflate into unbounded memory.
        zstd::bulk::decompress(&opened.body, MAX_DATAGRAM * 16)
            .ok()
            .and_then(|raw| ChitchatMessage::deserialize(&mut raw.as_slice()).ok())
            .ok_or("authentic but not a gossip message")
    }
}

/// What a datagram carries once opened.
#[derive(Debug, PartialEq, Eq)]
struct Opened {
    instance: u64,
    counter: u64,
    sent_ms: u64,
    body: Vec<u8>,
}

/// Seals a message body into one datagram.
fn seal(cipher: &XChaCha20Poly1305, header: [u64; 3], body: &[u8]) -> Result<Vec<u8>> {
    let mut plaintext = Vec::with_capacity(HEADER_LEN + body.len());
    for word in header {
        plaintext.extend_from_slice(&word.to_be_bytes());
    }
    plaintext.extend_from_slice(body);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| anyhow!("no randomness: {e}"))?;
    let payload = Payload {
        msg: &plaintext,
        aad: MAGIC,
    };
    let sealed = cipher
        .encrypt(&XNonce::from(nonce), payload)
        .map_err(|_| anyhow!("sealing a gossip datagram"))?;
    let mut datagram = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    datagram.extend_from_slice(MAGIC);
    datagram.extend_from_slice(&nonce);
    datagram.extend_from_slice(&sealed);
    Ok(datagram)
}

/// Opens a datagram, or None if it is not authentic under this key.
fn open(cipher: &XChaCha20Poly1305, datagram: &[u8]) -> Option<Opened> {
    if datagram.len() < MAGIC.len() + NONCE_LEN + TAG_LEN + HEADER_LEN
        || &datagram[..MAGIC.len()] != MAGIC
    {
        return None;
    }
    let (nonce, sealed) = datagram[MAGIC.len()..].split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let payload = Payload {
        msg: sealed,
        aad: MAGIC,
    };
    let plain = cipher.decrypt(&XNonce::from(nonce), payload).ok()?;
    let word = |i: usize| {
        let bytes: [u8; 8] = plain[i * 8..i * 8 + 8].try_into().expect("8 bytes");
        u64::from_be_bytes(bytes)
    };
    Some(Opened {
        instance: word(0),
        counter: word(1),
        sent_ms: word(2),
        body: plain[HEADER_LEN..].to_vec(),
    })
}

impl Opener {
    /// Accepts a counter from `instance` only if it is newer than any seen before.
    fn fresh(&mut self, instance: u64, counter: u64) -> bool {
        if let Some((last, _)) = self.seen.get(&instance)
            && counter <= *last
        {
            return false;
        }
        if self.seen.len() >= MAX_INSTANCES
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(instance, (counter, Instant::now()));
        true
    }
}

impl SealedSocket {
    fn refuse(&self, from: SocketAddr, why: &str) {
        let mut failures = self.failures.lock().expect("auth failure lock");
        failures.total += 1;
        *failures.by_source.entry(from.ip()).or_default() += 1;
        tracing::debug!(%from, "dropped gossip datagram: {why}");
    }
}

#[async_trait]
impl Socket for SealedSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> Result<()> {
        // Gossip is text-heavy and compresses well, which leaves room for the sealing
        // overhead within the datagram size chitchat fills up to.
        let body = zstd::bulk::compress(&message.serialize_to_vec(), 1)?;
        let datagram = self.sealer.seal(&body, unix_millis())?;
        self.socket.send_to(&datagram, to).await.with_context(|| {
            format!(
                "sending a sealed gossip datagram of {} bytes to {to}",
                datagram.len()
            )
        })?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(got) => got,
                // ICMP errors from earlier sends surface here; they are not fatal.
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(err) => return Err(err).context("receiving gossip"),
            };
            match self.opener.accept(&self.buf[..len], unix_millis()) {
                Ok(message) => return Ok((from, message)),
                Err(why) => self.refuse(from, why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(password: &str) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&derive_key(password).unwrap()).into())
    }

    #[test]
    fn sealed_datagrams_open_only_with_the_same_password() {
        let (ours, theirs) = (cipher("secret"), cipher("guess"));
        let datagram = seal(&ours, [7, 1, 1000], b"hello gossip").unwrap();
        assert!(
            !datagram.windows(5).any(|w| w == b"hello"),
            "plaintext visible"
        );
        let opened = open(&ours, &datagram).unwrap();
        assert_eq!(
            opened,
            Opened {
                instance: 7,
                counter: 1,
                sent_ms: 1000,
                body: b"hello gossip".to_vec()
            }
        );
        assert!(open(&theirs, &datagram).is_none());
        let mut tampered = datagram.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&ours, &tampered).is_none());
        assert!(open(&ours, b"WA1short").is_none());
    }

    #[test]
    fn replays_stale_and_non_gossip_datagrams_are_refused() {
        let key = derive_key("secret").unwrap();
        let (mut sealer, mut opener) = (Sealer::new(&key).unwrap(), Opener::new(&key));
        let now = 1_000_000;
        let message = chitchat::ChitchatMessage::BadCluster;
        let body = zstd::bulk::compress(&message.serialize_to_vec(), 1).unwrap();
        let first = sealer.seal(&body, now).unwrap();
        assert!(opener.accept(&first, now).is_ok());
        assert_eq!(opener.accept(&first, now).unwrap_err(), "replayed");
        let late = sealer.seal(&body, now).unwrap();
        assert!(
            opener
                .accept(&late, now + 61_000)
                .unwrap_err()
                .contains("too long ago")
        );
        let junk = sealer.seal(b"not zstd", now).unwrap();
        assert!(
            opener
                .accept(&junk, now)
                .unwrap_err()
                .contains("not a gossip message")
        );
    }

    #[test]
    fn the_same_password_gives_the_same_key_and_empty_is_refused() {
        assert_eq!(derive_key("secret").unwrap(), derive_key("secret").unwrap());
        assert_ne!(derive_key("secret").unwrap(), derive_key("Secret").unwrap());
        assert!(derive_key("").is_err());
    }
}

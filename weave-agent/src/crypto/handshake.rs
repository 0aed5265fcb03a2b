//! Session keys from Noise IKpsk1 (snow): each agent has a static X25519 key pair, whose
//! public half its peers learn from the password-sealed gossip; the password itself is the
//! pre-shared key, mixed in with the first message (psk1), so a responder refuses a host
//! without it at once. The initiator's
//! first message carries a timestamp that must grow from one handshake to the next, so a
//! recorded one cannot be replayed to reset a session (as WireGuard's TAI64N). Ephemeral keys
//! on both sides give forward secrecy.

use anyhow::{Context as _, Result, anyhow, bail};
use snow::{Builder, HandshakeState, params::NoiseParams};

/// The Noise protocol name: X25519, AES-GCM (AES-NI here), SHA-256.
pub const PATTERN: &str = "Noise_IKpsk1_25519_AESGCM_SHA256";
/// Ties handshakes to this protocol's use: a peer of another program cannot pass.
const PROLOGUE: &[u8] = b"weave-agent data plane v1";
/// Bytes of the initiation (e, s, payload of timestamp and index) and of the response (e,
/// payload of both indices), each with their tags.
pub const INITIATION_LEN: usize = 32 + 48 + 12 + 16;
pub const RESPONSE_LEN: usize = 32 + 8 + 16;

fn params() -> NoiseParams {
    PATTERN.parse().expect("the pattern name is valid")
}

/// This agent's static key pair and the mesh's pre-shared key.
#[derive(Clone)]
pub struct Identity {
    private: [u8; 32],
    pub public: [u8; 32],
    psk: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish()
    }
}

/// A static X25519 key pair, as stored in the state directory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StaticPair {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

/// The two transport keys a handshake ends with, from this side's point of view.
pub struct Keys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

/// An initiation sent, waiting for its response.
pub struct Initiating {
    state: HandshakeState,
    pub local_index: u32,
}

/// What answering an initiation gives.
pub struct Responded {
    /// The initiator's static public key, which says which peer it is.
    pub remote_static: [u8; 32],
    pub timestamp: u64,
    pub initiator_index: u32,
    pub keys: Keys,
    pub message: Vec<u8>,
}

impl Identity {
    /// The identity of the static key pair `pair` (private, public) under pre-shared key `psk`.
    pub fn new(pair: StaticPair, psk: [u8; 32]) -> Self {
        Self {
            private: pair.private,
            public: pair.public,
            psk,
        }
    }

    /// A fresh static key pair.
    pub fn generate_pair() -> Result<StaticPair> {
        let pair = Builder::new(params())
            .generate_keypair()
            .map_err(|e| anyhow!("generating a key pair: {e}"))?;
        Ok(StaticPair {
            private: pair
                .private
                .as_slice()
                .try_into()
                .context("a private key of another size")?,
            public: pair
                .public
                .as_slice()
                .try_into()
                .context("a public key of another size")?,
        })
    }

    /// Starts a handshake with the peer whose static public key is `remote`.
    pub fn initiate(
        &self,
        remote: &[u8; 32],
        local_index: u32,
        timestamp: u64,
    ) -> Result<(Initiating, Vec<u8>)> {
        let mut state = Builder::new(params())
            .local_private_key(&self.private)
            .and_then(|b| b.remote_public_key(remote))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.psk(1, &self.psk))
            .and_then(|b| b.build_initiator())
            .map_err(|e| anyhow!("starting a handshake: {e}"))?;
        let mut payload = [0u8; 12];
        payload[..8].copy_from_slice(&timestamp.to_be_bytes());
        payload[8..].copy_from_slice(&local_index.to_be_bytes());
        let mut message = vec![0u8; INITIATION_LEN];
        let len = state
            .write_message(&payload, &mut message)
            .map_err(|e| anyhow!("writing a handshake initiation: {e}"))?;
        message.truncate(len);
        Ok((Initiating { state, local_index }, message))
    }

    /// Answers an initiation as the responder, with session index `local_index`.
    pub fn respond(&self, initiation: &[u8], local_index: u32) -> Result<Responded> {
        let mut state = Builder::new(params())
            .local_private_key(&self.private)
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.psk(1, &self.psk))
            .and_then(|b| b.build_responder())
            .map_err(|e| anyhow!("answering a handshake: {e}"))?;
        let mut payload = [0u8; 64];
        let len = state
            .read_message(initiation, &mut payload)
            .map_err(|e| anyhow!("the initiation does not open: {e}"))?;
        if len != 12 {
            bail!("an initiation with a payload of {len} bytes");
        }
        let timestamp = u64::from_be_bytes(payload[..8].try_into()?);
        let initiator_index = u32::from_be_bytes(payload[8..12].try_into()?);
        let remote_static: [u8; 32] = state
            .get_remote_static()
            .context("the initiation carried no static key")?
            .try_into()?;
        let mut reply = [0u8; 8];
        reply[..4].copy_from_slice(&local_index.to_be_bytes());
        reply[4..].copy_from_slice(&initiator_index.to_be_bytes());
        let mut message = vec![0u8; RESPONSE_LEN];
        let len = state
            .write_message(&reply, &mut message)
            .map_err(|e| anyhow!("writing a handshake response: {e}"))?;
        message.truncate(len);
        let (initiator_to_responder, responder_to_initiator) = state.dangerously_get_raw_split();
        Ok(Responded {
            remote_static,
            timestamp,
            initiator_index,
            keys: Keys {
                send: responder_to_initiator,
                recv: initiator_to_responder,
            },
            message,
        })
    }
}

impl Initiating {
    /// Completes the handshake with the responder's answer: its session index and the keys.
    pub fn finish(mut self, response: &[u8]) -> Result<(u32, Keys)> {
        let mut payload = [0u8; 64];
        let len = self
            .state
            .read_message(response, &mut payload)
            .map_err(|e| anyhow!("the response does not open: {e}"))?;
        if len != 8 {
            bail!("a response with a payload of {len} bytes");
        }
        let responder_index = u32::from_be_bytes(payload[..4].try_into()?);
        let echoed = u32::from_be_bytes(payload[4..8].try_into()?);
        if echoed != self.local_index {
            bail!("the response answers another initiation");
        }
        let (initiator_to_responder, responder_to_initiator) =
            self.state.dangerously_get_raw_split();
        Ok((
            responder_index,
            Keys {
                send: initiator_to_responder,
                recv: responder_to_initiator,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(psk: u8) -> Identity {
        Identity::new(Identity::generate_pair().unwrap(), [psk; 32])
    }

    #[test]
    fn both_sides_end_with_matching_keys_and_learn_each_other() {
        let (a, b) = (identity(1), identity(1));
        let (pending, init) = a.initiate(&b.public, 11, 1_000).unwrap();
        assert_eq!(init.len(), INITIATION_LEN);
        let answer = b.respond(&init, 22).unwrap();
        assert_eq!(answer.message.len(), RESPONSE_LEN);
        assert_eq!(answer.remote_static, a.public);
        assert_eq!((answer.timestamp, answer.initiator_index), (1_000, 11));
        let (responder_index, keys) = pending.finish(&answer.message).unwrap();
        assert_eq!(responder_index, 22);
        assert_eq!(keys.send, answer.keys.recv);
        assert_eq!(keys.recv, answer.keys.send);
        assert_ne!(keys.send, keys.recv);
    }

    #[test]
    fn a_host_without_the_password_cannot_complete_a_handshake() {
        let (a, b) = (identity(1), identity(2));
        let (_, init) = a.initiate(&b.public, 1, 1).unwrap();
        assert!(
            b.respond(&init, 2).is_err(),
            "the responder checks the password at once"
        );
        // Nor can a host with the password but not the key the initiator meant answer it.
        let c = identity(1);
        let (pending, init) = a.initiate(&c.public, 1, 2).unwrap();
        assert!(identity(1).respond(&init, 3).is_err());
        let answer = c
            .respond(&a.initiate(&c.public, 1, 3).unwrap().1, 4)
            .unwrap();
        assert!(
            pending.finish(&answer.message).is_err(),
            "an answer to another initiation"
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_spoils_an_initiation() {
        let (a, b) = (identity(1), identity(1));
        let (_, init) = a.initiate(&b.public, 1, 1).unwrap();
        for byte in 0..init.len() {
            let mut bad = init.clone();
            bad[byte] ^= 0x10;
            assert!(b.respond(&bad, 2).is_err(), "byte {byte}");
        }
    }

    #[test]
    fn every_handshake_makes_new_keys() {
        let (a, b) = (identity(1), identity(1));
        let run = |ts| {
            let (pending, init) = a.initiate(&b.public, 1, ts).unwrap();
            let answer = b.respond(&init, 2).unwrap();
            pending.finish(&answer.message).unwrap().1.send
        };
        assert_ne!(run(1), run(2));
    }
}

//! The encrypted data plane. With a password, frames between peers that do not both trust the
//! path are sealed here, in userspace (this kernel has no ESP, WireGuard or kTLS): the programs
//! hand them to the agent's TAP device, the engine seals them under a session with the
//! destination host and sends UDP datagrams to its data port; the destination's underlay
//! program hands them to its engine, which opens them and writes the frames back into its
//! device, where `tap_tc` checks and delivers them. Relays send sealed datagrams on in the
//! kernel without opening them: the seal is end to end.
//!
//! - `handshake`: Noise IKpsk1 (snow), the session keys; `session`: AES-256-GCM under them
//! - `wire`: the clear header; `replay`: the receive window; `table`: sessions per peer;
//!   `opener`: a datagram in, a frame (or why not) out
//! - `tap`: the device; `engine`: the threads that move frames
//! - `trust`: who may talk in clear; `keys`: the static key pair and the password's key

pub mod engine;
pub mod handshake;
pub mod keys;
pub mod opener;
pub mod replay;
pub mod session;
pub mod table;
pub mod tap;
pub mod trust;
pub mod wire;

/// The crypto path's TAP device.
pub const TAP_DEVICE: &str = "weave-seal";
/// Worker threads (and device queues): one per core of the test machines.
pub const WORKERS: usize = 2;

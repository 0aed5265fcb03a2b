//! The mesh: who the peers are and what they publish, over chitchat gossip, sealed with the
//! password where one is set.

pub mod bench_peer;
pub mod counting_transport;
pub mod gossip;
pub mod keys;
pub mod peer_addr;
pub mod sealed_transport;
pub mod send_failures;
pub mod topology;

//! Service discovery: every agent runs a DNS server for the containers of its host, answering
//! `NAME.weave.local` (and reverse names) from the names the mesh gossips, and forwarding the
//! rest to the host's resolvers.
//!
//! Containers reach it at [`SERVICE_ADDRESS`], the same on every host: a route in each
//! container sends it out of `ethwe`, where the container program hands it to a host-side
//! interface as it hands frames to an exposed address (the endpoint is flagged as the
//! agent's service, which every local endpoint may talk to and no remote one).

pub mod answer;
pub mod batch;
pub mod forward;
pub mod packet_cache;
pub mod server;
pub mod upstream;
pub mod zone;

use std::net::Ipv4Addr;

/// Where containers send their queries: link-local, so no network a host routes can hold it,
/// and the same on every host.
pub const SERVICE_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 53, 53);

//! weave-agent: containers on different hosts on one virtual network, forwarded in the kernel.
//!
//! A library so the fuzz targets (`weave-agent/fuzz`) can reach the parsers that face the
//! network and the control socket; the `weave-agent` binary is a thin `main` over it.
//!
//! Rooms by capability:
//! - `cli`: what users type and what they see
//! - `control`: the daemon: composition, shared state, the socket, endpoints, reconcile
//! - `mesh`: gossip, its transports and key codec, peers by name
//! - `datapath`: the eBPF object: loading, pinning, maps
//! - `host`: the machine around the agent: netlink, routes, namespaces, Docker
//! - `net`: pure types: addresses, names, isolation rules
//! - `ipam`: automatic addresses, the pure part: the ownership ring and the allocator (the
//!   daemon's side is `control::ipam`)
//! - `plugins`: the CNI plugin a container runtime runs (the daemon's side is `control::cni`)

pub mod cli;
pub mod control;
pub mod crypto;
pub mod datapath;
pub mod dns;
pub mod host;
pub mod ipam;
pub mod mesh;
pub mod net;
pub mod plugins;

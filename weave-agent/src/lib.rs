//! weave-agent: containers on different hosts on one virtual network, forwarded in the kernel.
//!
//! A library so the fuzz targets (`weave-agent/fuzz`) can reach the parsers that face the
//! network and the control socket; the `weave-agent` binary is a thin `main` over it.

pub mod addressing;
pub mod api;
pub mod bpffs;
pub mod cli;
pub mod commands;
pub mod container;
pub mod daemon;
pub mod datapath;
pub mod docker;
pub mod gossip;
pub mod location;
pub mod metrics;
pub mod netlink;
pub mod policy;
pub mod run_args;
pub mod sealed_transport;
pub mod state;

//! The control plane: the daemon and what it does between the CLI, the mesh and the data
//! path. `daemon` composes; the other modules each do one job.

pub mod agent;
pub mod api;
pub mod client;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod dns;
pub mod docker_driver;
pub mod docker_events;
pub mod endpoints;
pub mod expose;
pub mod forwarding_watch;
pub mod ipam;
pub mod ipv6_only;
pub mod links;
pub mod location;
pub mod log_file;
pub mod metrics;
pub mod peers;
pub mod ready;
pub mod reconcile;
pub mod rule_set;
pub mod rules;
pub mod server;
pub mod state;
pub mod status;
pub mod sync;
pub mod withdraw;

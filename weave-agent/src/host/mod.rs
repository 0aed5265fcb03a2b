//! The host around the agent: netlink, routes, the underlay, container namespaces, Docker.

pub mod docker;
pub mod exposed;
pub mod forwarding;
pub mod netlink;
pub mod netns;
pub mod peer_mtu;
pub mod routes;
pub mod run_spec;
pub mod underlay;

//! Partial meshes: who reaches whom directly, and the shortest paths over those links, which
//! the data path follows to relay frames between hosts that cannot reach each other.
//!
//! Each agent sends every live peer a link hello on the data port ([`hello`]); the receiving
//! host's underlay program notes the sender as heard. Each agent publishes whom it hears
//! ([`links`]) under one gossip key, its own direct links only, so what a peer publishes grows
//! with its neighbours, never with the mesh. A link counts when both ends hear each other;
//! every agent runs a breadth-first search over those links ([`routes`]) and writes the first
//! hop towards each peer into the peers map.

pub mod hello;
pub mod links;
pub mod routes;

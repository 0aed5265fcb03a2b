//! Automatic addresses (IPAM), the pure part (the daemon persists, gossips and serves it in
//! `control::ipam`): who owns which part of the allocation
//! range (`ring`, a CRDT that gossip carries), which address to hand out and what to give a
//! peer that asks for space (`allocator`), one peer's space and its decisions (`space`),
//! what a command asks for (`request`: a CIDR, `net:CIDR`, `net:default`), and how full a
//! subnet is across the mesh (`usage`). A randomized
//! simulation (`simulation`, tests only) checks that no address is ever owned or allocated
//! twice.
//!
//! How the range is first claimed: a peer launched without peers may claim the whole range
//! when it first needs space (or a peer asks it for some); peers that join get space by
//! donation. Two meshes that each claimed the range apart have rings of different origins,
//! which refuse to merge, so joining them is refused instead of duplicating addresses.

pub mod allocator;
pub mod request;
pub mod ring;
#[cfg(test)]
mod simulation;
pub mod space;
pub mod usage;

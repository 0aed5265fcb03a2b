//! Pure types of the overlay: addresses, names, isolation rules. No I/O here, so everything is
//! tested without a kernel.

pub mod addressing;
pub mod clock;
pub mod exposure;
pub mod ipv6;
pub mod names;
pub mod policy;

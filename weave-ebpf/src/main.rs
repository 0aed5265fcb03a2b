//! weave-agent's data path. One module per attach point; the agent loads this object, attaches
//! the programs and fills the maps. Built by `cargo xtask build-ebpf` for `bpfel-unknown-none`.
//!
//! - `container`: TC ingress on the host side of each container veth (frames containers send)
//! - `overlay`: TC ingress on the VXLAN device (frames other hosts sent, decapsulated)
//! - `underlay`: XDP on the host NIC where its driver runs XDP natively (drops overlay packets
//!   from non-peers; `prefilter` is that check)
//! - `underlay_tc`: TC ingress on the host NIC (the same check where no XDP runs; decapsulates
//!   overlay frames itself when the agent encapsulates in eBPF, `encap` building the headers
//!   on the sending side)
//! - `tap_tc`: TC ingress on the agent's crypto device (frames the agent opened)
//! - `flood`: broadcast and multicast copies to a subnet's members, shared by `container` and
//!   `overlay`
//! - `ipv6`: neighbour discovery answered, and IPv6 checks shared by the programs
//! - `delivery`: the checks a frame from another host meets before it reaches a container,
//!   shared by `overlay` and `underlay_tc`
#![no_std]
#![no_main]

mod container;
mod counters;
mod delivery;
mod encap;
mod flood;
mod headers;
mod icmp;
mod ipv6;
mod maps;
mod overlay;
mod prefilter;
mod tap_tc;
mod underlay;
mod underlay_tc;
mod verdict;

/// The kernel only lets GPL-compatible programs call some helpers (e.g. redirects).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this; it exists to satisfy no_std.
    loop {}
}

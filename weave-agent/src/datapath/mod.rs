//! The eBPF data path: loading the embedded object, attaching and pinning the programs, and
//! the map operations the control plane drives. It knows nothing of the control socket's
//! wire format: it reports in its own types, which `control` turns into answers.
//!
//! Maps and links are pinned under the namespace's pin directory, so the data path keeps
//! running while the agent is stopped and `reset` can remove it without the agent.

pub mod bpffs;
mod kernel;
mod loader;
mod maps;
mod report;

use std::path::PathBuf;

use aya::Ebpf;

pub use loader::{OverlaySettings, remove_pins};

/// Whether XDP runs on the underlay; where it does not, the underlay's TC program filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UnderlayXdp {
    Native,
    /// The underlay is a veth: native XDP there costs its peer TSO, generic XDP copies every
    /// multi-page packet.
    NotOnVeth,
    /// The driver has no native XDP, and generic XDP would cost as on a veth.
    NoDriverSupport,
}

pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    underlay: String,
    underlay_xdp: UnderlayXdp,
    /// Interface the overlay TC program is attached to, once it is.
    overlay: Option<String>,
    ebpf_encap: bool,
    /// GSO super-packets for every endpoint are decapsulated in eBPF, those for endpoints
    /// that forward too (see [`kernel_clears_tunnel_gso`]).
    gso_decap: bool,
}

/// A loaded program and where it runs, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramReport {
    pub name: &'static str,
    /// The kernel's id for the program (0 if it cannot be read).
    pub id: u32,
    pub attached: String,
}

/// One counter summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterTotal {
    pub packets: u64,
    pub bytes: u64,
}

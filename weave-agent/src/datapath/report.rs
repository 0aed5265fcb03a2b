//! What the data path tells about itself: the programs' own log lines, and where each
//! program runs.

use weave_common::programs;

use super::{Datapath, ProgramReport, UnderlayXdp};
use crate::net::names::HOST_VETH_PREFIX;

impl Datapath {
    /// Starts reading what the programs log (aya-log) into the agent's log. Only failures
    /// that should never happen are logged in eBPF; everything else is counted.
    pub fn start_logging(&mut self) {
        let logger = match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => logger,
            Err(err) => {
                tracing::warn!("eBPF logging unavailable: {err}");
                return;
            }
        };
        // SAFETY: the logger owns its ring buffer's descriptor, which stays open and the same
        // for as long as the AsyncFd owns the logger.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
        };
        let mut logger = match registered {
            Ok(logger) => logger,
            Err(err) => {
                tracing::warn!("eBPF logging unavailable: {err}");
                return;
            }
        };
        tokio::spawn(async move {
            while let Ok(mut ready) = logger.readable_mut().await {
                ready.get_inner_mut().flush();
                ready.clear_ready();
            }
        });
    }

    /// Every program of the object and where it runs.
    pub fn programs(&self) -> Vec<ProgramReport> {
        [
            (programs::UNDERLAY_XDP, self.underlay_xdp_use()),
            (
                programs::CONTAINER_TC,
                format!("tc ingress of container veths ({HOST_VETH_PREFIX}*), pinned"),
            ),
            (
                programs::OVERLAY_TC,
                match &self.overlay {
                    Some(dev) => format!("tc ingress of {dev}, pinned"),
                    None => "loaded; no VXLAN device yet".to_owned(),
                },
            ),
            (programs::UNDERLAY_TC, self.underlay_tc_use()),
        ]
        .into_iter()
        .map(|(name, attached)| ProgramReport {
            name,
            id: self
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map_or(0, |info| info.id()),
            attached,
        })
        .collect()
    }

    fn underlay_xdp_use(&self) -> String {
        let (iface, tc) = (&self.underlay, programs::UNDERLAY_TC);
        match self.underlay_xdp {
            UnderlayXdp::Native => format!("xdp on {iface}, native mode, pinned"),
            UnderlayXdp::NotOnVeth => {
                format!("loaded; not attached: {iface} is a veth ({tc} filters instead)")
            }
            UnderlayXdp::NoDriverSupport => {
                format!("loaded; not attached: no native XDP on {iface} ({tc} filters instead)")
            }
        }
    }

    fn underlay_tc_use(&self) -> String {
        let mut jobs = Vec::new();
        if self.underlay_xdp != UnderlayXdp::Native {
            jobs.push("peer filter");
        }
        match (self.ebpf_encap, self.gso_decap) {
            (true, true) => jobs.push("eBPF decapsulation, GSO too"),
            (true, false) => jobs.push(
                "eBPF decapsulation, GSO too except for endpoints that forward (the VXLAN \
                 device clears their tunnel GSO state; the kernel lacks \
                 BPF_F_ADJ_ROOM_DECAP_L4_UDP)",
            ),
            _ => {}
        }
        jobs.push("link hellos and MTU probes, relaying for third hosts");
        format!(
            "tc ingress of {}, pinned ({})",
            self.underlay,
            jobs.join(", ")
        )
    }
}

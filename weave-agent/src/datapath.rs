//! The eBPF data path: loading the embedded object, attaching and pinning, reading counters.
//!
//! Maps and links are pinned under the namespace's pin directory, so the data path keeps
//! running while the agent is stopped and `reset` can remove it without the agent.

use std::{
    collections::BTreeMap,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuArray,
    programs::{
        ProgramError, SchedClassifier, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use weave_common::{
    counters::{Counter, CounterId},
    maps, programs,
};

use crate::{api, netlink::Link};

#[cfg(weave_ebpf_missing)]
compile_error!(
    "the eBPF object target/ebpf/weave-ebpf.o is missing: run `cargo xtask build-ebpf` first \
     (weave-agent embeds the object it builds)"
);
#[cfg(weave_ebpf_missing)]
static OBJECT: &[u8] = &[];
#[cfg(not(weave_ebpf_missing))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("WEAVE_EBPF_OBJECT"));

/// Pin name of the XDP link on the underlay interface.
const UNDERLAY_LINK_PIN: &str = "link_underlay_xdp";

pub struct Datapath {
    ebpf: Ebpf,
    underlay: String,
    xdp_mode: XdpMode,
}

impl Datapath {
    /// Loads the programs (so the verifier checks all of them now, not at first use) and
    /// attaches the XDP program to the underlay, replacing our own earlier attachment.
    pub fn load(pin_dir: &Path, underlay: &Link) -> Result<Self> {
        fs::create_dir_all(pin_dir)
            .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)
            .context("loading the eBPF object into the kernel")?;

        let tc: &mut SchedClassifier = program(&mut ebpf, programs::CONTAINER_TC)?.try_into()?;
        tc.load()
            .with_context(|| format!("verifier rejected {}", programs::CONTAINER_TC))?;

        // Native XDP on a veth turns off TSO on its peer and halves TCP throughput; generic
        // mode does not. Real NICs get whatever the driver does best.
        let xdp_mode = if underlay.is_veth() {
            XdpMode::Skb
        } else {
            XdpMode::Default
        };
        let xdp: &mut Xdp = program(&mut ebpf, programs::UNDERLAY_XDP)?.try_into()?;
        xdp.load()
            .with_context(|| format!("verifier rejected {}", programs::UNDERLAY_XDP))?;
        let link_pin = pin_dir.join(UNDERLAY_LINK_PIN);
        remove_pinned_link(&link_pin)?;
        let link_id = xdp
            .attach_to_if_index(underlay.index, xdp_mode)
            .map_err(|err| attach_error(err, &underlay.name))?;
        let link = FdLink::try_from(xdp.take_link(link_id)?).context(
            "the kernel attached XDP without a bpf_link, so the attachment cannot be pinned \
             (needs Linux 5.9 or later)",
        )?;
        link.pin(&link_pin)
            .with_context(|| format!("pinning the XDP link at {}", link_pin.display()))?;
        tracing::info!(iface = %underlay.name, mode = ?xdp_mode, "attached {}", programs::UNDERLAY_XDP);

        Ok(Self {
            ebpf,
            underlay: underlay.name.clone(),
            xdp_mode,
        })
    }

    pub fn programs(&self) -> Vec<api::Program> {
        let mode = match self.xdp_mode {
            XdpMode::Skb => "generic (skb) mode",
            _ => "driver's choice of mode",
        };
        [
            (
                programs::UNDERLAY_XDP,
                format!("xdp on {}, {mode}, pinned", self.underlay),
            ),
            (
                programs::CONTAINER_TC,
                "loaded; tc ingress of container veths".to_owned(),
            ),
        ]
        .into_iter()
        .map(|(name, attached)| api::Program {
            name: name.to_owned(),
            id: self
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map_or(0, |info| info.id()),
            attached,
        })
        .collect()
    }

    /// Sums of the per-CPU counters, by counter name.
    pub fn counters(&self) -> Result<BTreeMap<String, api::Counter>> {
        let map = self
            .ebpf
            .map(maps::COUNTERS)
            .with_context(|| format!("the eBPF object has no {} map", maps::COUNTERS))?;
        let counters: PerCpuArray<_, Counter> = PerCpuArray::try_from(map)?;
        CounterId::ALL
            .iter()
            .map(|id| {
                let per_cpu = counters
                    .get(&id.index(), 0)
                    .with_context(|| format!("reading counter {}", id.name()))?;
                let total = per_cpu
                    .iter()
                    .fold(api::Counter::default(), |acc, c| api::Counter {
                        packets: acc.packets + c.packets,
                        bytes: acc.bytes + c.bytes,
                    });
                Ok((id.name().to_owned(), total))
            })
            .collect()
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("the embedded eBPF object has no program {name}; rebuild it"))
}

fn attach_error(err: ProgramError, iface: &str) -> anyhow::Error {
    let busy = matches!(
        &err,
        ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EBUSY)
            || e.io_error.raw_os_error() == Some(libc::EEXIST)
    );
    if busy {
        anyhow!(
            "{iface} already has an XDP program that weave-agent did not attach; it will not \
             replace it. Remove it (`ip link set dev {iface} xdp off`) or choose another \
             interface with --iface"
        )
    } else {
        anyhow::Error::new(err).context(format!("attaching XDP to {iface}"))
    }
}

/// Drops a pinned link; the kernel detaches it once nothing else holds it.
fn remove_pinned_link(path: &Path) -> Result<()> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            link.unpin()
                .with_context(|| format!("removing old pinned link {}", path.display()))?;
            Ok(())
        }
        Err(_) if !path.exists() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("opening pinned link {}", path.display())),
    }
}

/// Removes every pin of this namespace: links detach, maps are freed once unused.
/// Returns the pins removed.
pub fn remove_pins(pin_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("reading pin directory {}", pin_dir.display()));
        }
    };
    let mut removed = Vec::new();
    for entry in entries {
        let path = entry?.path();
        fs::remove_file(&path).with_context(|| format!("removing pin {}", path.display()))?;
        removed.push(path);
    }
    fs::remove_dir(pin_dir)
        .with_context(|| format!("removing pin directory {}", pin_dir.display()))?;
    Ok(removed)
}

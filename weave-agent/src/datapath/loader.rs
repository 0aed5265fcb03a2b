//! Loading the object, attaching the programs, and pinning what must outlive the agent.

use std::{
    fs,
    io::ErrorKind,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{
        ProgramError, SchedClassifier, Xdp, XdpMode,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions, TcAttachType},
        xdp::XdpLink,
    },
};
use weave_common::{
    OVERLAY_VNI,
    endpoint::{Config, ENCAP_EBPF, ENCAP_VXLAN_DEVICE, Heard, PeerRoute, ipv4_key},
    maps, programs,
    seal::CryptoPath,
};

use super::{Datapath, UnderlayXdp, kernel::kernel_clears_tunnel_gso};
use crate::host::underlay::Link;

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
/// Pin names of TC links are this plus the interface name.
const TC_LINK_PIN_PREFIX: &str = "link_tc_";

impl Datapath {
    /// Loads the programs (so the verifier checks all of them now, not at first use) and
    /// attaches the XDP program to the underlay where its driver runs XDP natively, replacing
    /// our own earlier attachment.
    ///
    /// With `adopt_underlay`, a pinned XDP link from an earlier agent on the same interface
    /// gets the new program atomically instead of being replaced.
    pub fn load(pin_dir: &Path, underlay: &Link, adopt_underlay: bool) -> Result<Self> {
        fs::create_dir_all(pin_dir)
            .with_context(|| format!("creating pin directory {}", pin_dir.display()))?;
        forget_resized_maps(pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)
            .context("loading the eBPF object into the kernel")?;

        let tc: &mut SchedClassifier = program(&mut ebpf, programs::CONTAINER_TC)?.try_into()?;
        tc.load()
            .with_context(|| format!("verifier rejected {}", programs::CONTAINER_TC))?;

        let underlay_xdp = attach_underlay_xdp(&mut ebpf, pin_dir, underlay, adopt_underlay)?;
        for name in [
            programs::OVERLAY_TC,
            programs::UNDERLAY_TC,
            programs::TAP_TC,
        ] {
            let tc: &mut SchedClassifier = program(&mut ebpf, name)?.try_into()?;
            tc.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }

        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            underlay: underlay.name.clone(),
            underlay_xdp,
            overlay: None,
            ebpf_encap: false,
            gso_decap: false,
        })
    }

    /// Attaches `program` to TC ingress of `iface`, pinned as link_tc_<iface>. An existing pinned
    /// link (from an earlier agent) gets the new program atomically, so no frame goes
    /// unprocessed during an agent restart.
    fn attach_tc(&mut self, program_name: &str, iface: &str) -> Result<()> {
        let pin = self.pin_dir.join(format!("{TC_LINK_PIN_PREFIX}{iface}"));
        let tc: &mut SchedClassifier = program(&mut self.ebpf, program_name)?.try_into()?;
        if replace_in_place::<SchedClassifierLink>(&pin, |link| {
            let id = tc.attach_to_link(link)?;
            tc.take_link(id).map(drop)
        }) {
            return Ok(());
        }
        remove_pinned_link(&pin)?;
        let link_id = tc
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .with_context(|| format!("attaching {program_name} to TC ingress of {iface}"))?;
        let link = FdLink::try_from(tc.take_link(link_id)?)
            .context("TC attached without a bpf_link (tcx needs Linux 6.6 or later)")?;
        link.pin(&pin)
            .with_context(|| format!("pinning the TC link at {}", pin.display()))?;
        Ok(())
    }

    /// Attaches the container program to a container's host-side veth.
    pub fn attach_container(&mut self, veth: &str) -> Result<()> {
        self.attach_tc(programs::CONTAINER_TC, veth)
    }

    /// Drops the pinned TC link of a container veth (the veth itself may already be gone).
    pub fn detach_container(&mut self, veth: &str) -> Result<()> {
        remove_pinned_link(&self.pin_dir.join(format!("{TC_LINK_PIN_PREFIX}{veth}")))
    }

    /// Attaches the program that delivers opened frames to the crypto path's TAP device.
    pub fn attach_tap(&mut self, tap: &str) -> Result<()> {
        self.attach_tc(programs::TAP_TC, tap)
    }

    /// Tells the programs whether frames must be sealed (the mesh has a password). Until the
    /// crypto path vouches for its device, sealed traffic is dropped and counted.
    pub fn set_sealing(&mut self, seal: bool) -> Result<()> {
        let mut map: Array<&mut MapData, CryptoPath> =
            Array::try_from(self.map_mut(maps::CRYPTO)?)?;
        map.set(
            0,
            CryptoPath {
                seal: u32::from(seal),
                ..CryptoPath::default()
            },
            0,
        )?;
        Ok(())
    }

    /// Attaches the decapsulation program to the VXLAN device and the underlay's TC program, and
    /// tells the container program how to send remote traffic: through that device, or
    /// (`ebpf_encap`) with headers built in eBPF and sent out of the underlay, whose TC program
    /// then decapsulates arrivals.
    pub fn attach_overlay(
        &mut self,
        vxlan: &str,
        vxlan_ifindex: u32,
        underlay: &Link,
        underlay_ip: Ipv4Addr,
        settings: &OverlaySettings,
    ) -> Result<()> {
        let OverlaySettings {
            vxlan_port,
            ebpf_encap,
            flood_pps,
        } = *settings;
        self.attach_tc(programs::OVERLAY_TC, vxlan)?;
        self.attach_tc(programs::UNDERLAY_TC, &underlay.name)?;
        let underlay_xdp = u32::from(self.underlay_xdp == UnderlayXdp::Native);
        let gso_decap = ebpf_encap && kernel_clears_tunnel_gso();
        let mut config: Array<&mut MapData, Config> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        config.set(
            0,
            Config {
                vxlan_ifindex,
                vni: OVERLAY_VNI,
                encap: if ebpf_encap {
                    ENCAP_EBPF
                } else {
                    ENCAP_VXLAN_DEVICE
                },
                underlay_ifindex: underlay.index,
                underlay_ip: ipv4_key(underlay_ip.octets()),
                underlay_xdp,
                gso_decap: u32::from(gso_decap),
                underlay_mac: underlay.mac.unwrap_or_default(),
                vxlan_port,
                flood_pps,
            },
            0,
        )?;
        self.overlay = Some(vxlan.to_owned());
        self.ebpf_encap = ebpf_encap;
        self.gso_decap = gso_decap;
        Ok(())
    }
}

/// How the overlay's frames are carried, as `launch` set it.
#[derive(Debug, Clone, Copy)]
pub struct OverlaySettings {
    /// UDP port of the VXLAN data plane.
    pub vxlan_port: u16,
    /// Encapsulate and decapsulate in eBPF (else through the VXLAN device).
    pub ebpf_encap: bool,
    /// Broadcast and multicast frames per second each endpoint may send; 0: no limit.
    pub flood_pps: u32,
}

/// Loads the XDP program and attaches it to the underlay where its driver runs XDP
/// natively, replacing our own earlier attachment (in place, with `adopt_underlay`).
fn attach_underlay_xdp(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    underlay: &Link,
    adopt_underlay: bool,
) -> Result<UnderlayXdp> {
    let xdp: &mut Xdp = program(ebpf, programs::UNDERLAY_XDP)?.try_into()?;
    xdp.load()
        .with_context(|| format!("verifier rejected {}", programs::UNDERLAY_XDP))?;
    let link_pin = pin_dir.join(UNDERLAY_LINK_PIN);
    let xdp_use = if underlay.is_veth() {
        // Native XDP on a veth turns off TSO on its peer and halves TCP throughput; generic
        // XDP copies every multi-page packet (each TCP super-packet, the host's own too)
        // into one buffer first, measured at -14% host TCP. The TC program filters instead.
        remove_pinned_link(&link_pin)?;
        tracing::info!(iface = %underlay.name, "veth underlay: no XDP; {} filters overlay packets", programs::UNDERLAY_TC);
        UnderlayXdp::NotOnVeth
    } else if adopt_underlay
        && replace_in_place::<XdpLink>(&link_pin, |link| {
            // Only the pin may hold the link, or detaching by unpinning would not detach.
            let id = xdp.attach_to_link(link)?;
            xdp.take_link(id).map(drop)
        })
    {
        tracing::info!(iface = %underlay.name, "replaced the program of the pinned XDP link in place");
        UnderlayXdp::Native
    } else {
        remove_pinned_link(&link_pin)?;
        match xdp.attach_to_if_index(underlay.index, XdpMode::Driver) {
            Ok(link_id) => {
                let link = FdLink::try_from(xdp.take_link(link_id)?).context(
                    "the kernel attached XDP without a bpf_link, so the attachment cannot be \
                     pinned (needs Linux 5.9 or later)",
                )?;
                link.pin(&link_pin)
                    .with_context(|| format!("pinning the XDP link at {}", link_pin.display()))?;
                tracing::info!(iface = %underlay.name, "attached {} in native mode", programs::UNDERLAY_XDP);
                UnderlayXdp::Native
            }
            Err(err) if no_native_xdp(&err) => {
                tracing::info!(iface = %underlay.name, "no native XDP in this driver; {} filters overlay packets", programs::UNDERLAY_TC);
                UnderlayXdp::NoDriverSupport
            }
            Err(err) => return Err(attach_error(err, &underlay.name)),
        }
    };
    Ok(xdp_use)
}

/// Removes pinned maps whose value is not this build's (an earlier build's: the config before
/// fields were appended, the peer map before it held routes, the heard map before it held
/// hello sizes): the verifier checks every access against the pinned map's value size, so
/// this build's programs could not load with them. They are made anew: the agent writes the
/// config at attach and the peers at the first sync, about a second in (until then overlay
/// packets from peers are dropped as not from a peer, once, on this upgrade), and the heard
/// map fills with the next hellos.
fn forget_resized_maps(pin_dir: &Path) -> Result<()> {
    let layouts = [
        (maps::CONFIG, std::mem::size_of::<Config>()),
        (maps::PEERS, std::mem::size_of::<PeerRoute>()),
        (maps::HEARD, std::mem::size_of::<Heard>()),
        (maps::CRYPTO, std::mem::size_of::<CryptoPath>()),
    ];
    for (name, value_size) in layouts {
        let pin = pin_dir.join(name);
        match aya::maps::MapInfo::from_pin(&pin) {
            Ok(info) if info.value_size() as usize != value_size => {
                tracing::info!("the pinned {name} is an earlier build's; making it anew");
                fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("the embedded eBPF object has no program {name}; rebuild it"))
}

/// The driver has no native XDP (the kernel would only offer generic mode).
fn no_native_xdp(err: &ProgramError) -> bool {
    matches!(
        err,
        ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EOPNOTSUPP)
    )
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

/// Gives the link pinned at `pin` a new program atomically (bpf_link_update). False if there is
/// no such link or it cannot be updated (e.g. its interface is gone), so the caller attaches
/// afresh.
fn replace_in_place<L>(pin: &Path, attach: impl FnOnce(L) -> Result<(), ProgramError>) -> bool
where
    L: aya::programs::links::Link + TryFrom<FdLink>,
{
    let Ok(pinned) = PinnedLink::from_pin(pin) else {
        return false;
    };
    let Ok(link) = L::try_from(FdLink::from(pinned)) else {
        return false;
    };
    match attach(link) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!("cannot update pinned link {}: {err}", pin.display());
            false
        }
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

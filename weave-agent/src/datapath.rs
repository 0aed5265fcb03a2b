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

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{
        ProgramError, SchedClassifier, Xdp, XdpMode,
        links::{FdLink, LinkOrder, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions, TcAttachType},
        xdp::XdpLink,
    },
};
use weave_common::{
    OVERLAY_VNI,
    counters::{Counter, CounterId},
    endpoint::{Config, ENCAP_EBPF, ENCAP_VXLAN_DEVICE, Endpoint, Ipv4Key, ipv4_key, ipv4_octets},
    maps,
    policy::{POLICY_CAPACITY, SubnetPair},
    programs,
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
/// Pin names of TC links are this plus the interface name.
const TC_LINK_PIN_PREFIX: &str = "link_tc_";

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
    /// GSO super-packets are decapsulated in eBPF too (see [`kernel_clears_tunnel_gso`]).
    gso_decap: bool,
}

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
        forget_resized_config(pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)
            .context("loading the eBPF object into the kernel")?;

        let tc: &mut SchedClassifier = program(&mut ebpf, programs::CONTAINER_TC)?.try_into()?;
        tc.load()
            .with_context(|| format!("verifier rejected {}", programs::CONTAINER_TC))?;

        let xdp: &mut Xdp = program(&mut ebpf, programs::UNDERLAY_XDP)?.try_into()?;
        xdp.load()
            .with_context(|| format!("verifier rejected {}", programs::UNDERLAY_XDP))?;
        let link_pin = pin_dir.join(UNDERLAY_LINK_PIN);
        let underlay_xdp = if underlay.is_veth() {
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
                    link.pin(&link_pin).with_context(|| {
                        format!("pinning the XDP link at {}", link_pin.display())
                    })?;
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
        for name in [programs::OVERLAY_TC, programs::UNDERLAY_TC] {
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
        ebpf_encap: bool,
    ) -> Result<()> {
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
                pad: [0; 2],
            },
            0,
        )?;
        self.overlay = Some(vxlan.to_owned());
        self.ebpf_encap = ebpf_encap;
        self.gso_decap = gso_decap;
        Ok(())
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no {name} map"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the eBPF object has no {name} map"))
    }

    fn endpoints_map(&mut self) -> Result<HashMap<&mut MapData, Ipv4Key, Endpoint>> {
        Ok(HashMap::try_from(self.map_mut(maps::ENDPOINTS)?)?)
    }

    pub fn set_endpoint(&mut self, ip: Ipv4Addr, endpoint: Endpoint) -> Result<()> {
        self.endpoints_map()?
            .insert(ipv4_key(ip.octets()), endpoint, 0)
            .with_context(|| format!("writing endpoint {ip} to the map"))
    }

    pub fn remove_endpoint(&mut self, ip: Ipv4Addr) -> Result<()> {
        match self.endpoints_map()?.remove(&ipv4_key(ip.octets())) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing endpoint {ip} from the map")),
        }
    }

    /// Every entry of the endpoint map, as the kernel has it.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, Endpoint)>> {
        let map: HashMap<&MapData, Ipv4Key, Endpoint> =
            HashMap::try_from(self.map(maps::ENDPOINTS)?)?;
        map.iter()
            .map(|entry| {
                let (key, ep) = entry?;
                Ok((Ipv4Addr::from(ipv4_octets(key)), ep))
            })
            .collect()
    }

    /// Makes the peer map hold exactly `peers`.
    pub fn set_peers(&mut self, peers: &std::collections::BTreeSet<Ipv4Addr>) -> Result<()> {
        let keys = peers.iter().map(|p| ipv4_key(p.octets())).collect();
        hold_exactly::<Ipv4Key, u32>(self.map_mut(maps::PEERS)?, &keys)
    }

    /// Makes the policy map hold exactly `pairs`: the cross-subnet directions rules allow.
    pub fn set_policy(&mut self, pairs: &std::collections::BTreeSet<SubnetPair>) -> Result<()> {
        // Removals come first, so a map too small for the rules loses allowed directions,
        // never keeps ones that a rule closed.
        hold_exactly::<SubnetPair, u8>(self.map_mut(maps::POLICY)?, pairs).with_context(|| {
            format!(
                "writing {} allowed directions between subnets into the policy map, which \
                 holds {POLICY_CAPACITY}; if the rules allow more, narrow them",
                pairs.len()
            )
        })
    }

    /// Underlay addresses in the kernel's peer map.
    pub fn peers(&self) -> Result<Vec<Ipv4Addr>> {
        let map: HashMap<&MapData, Ipv4Key, u32> = HashMap::try_from(self.map(maps::PEERS)?)?;
        map.keys()
            .map(|key| Ok(Ipv4Addr::from(ipv4_octets(key?))))
            .collect()
    }

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

    pub fn programs(&self) -> Vec<api::Program> {
        let (iface, tc) = (&self.underlay, programs::UNDERLAY_TC);
        let xdp = match self.underlay_xdp {
            UnderlayXdp::Native => format!("xdp on {iface}, native mode, pinned"),
            UnderlayXdp::NotOnVeth => {
                format!("loaded; not attached: {iface} is a veth ({tc} filters instead)")
            }
            UnderlayXdp::NoDriverSupport => {
                format!("loaded; not attached: no native XDP on {iface} ({tc} filters instead)")
            }
        };
        [
            (programs::UNDERLAY_XDP, xdp),
            (
                programs::CONTAINER_TC,
                "tc ingress of container veths (vethwe*), pinned".to_owned(),
            ),
            (
                programs::OVERLAY_TC,
                match &self.overlay {
                    Some(dev) => format!("tc ingress of {dev}, pinned"),
                    None => "loaded; no VXLAN device yet".to_owned(),
                },
            ),
            (programs::UNDERLAY_TC, {
                let mut jobs = Vec::new();
                if self.underlay_xdp != UnderlayXdp::Native {
                    jobs.push("peer filter");
                }
                match (self.ebpf_encap, self.gso_decap) {
                    (true, true) => jobs.push("eBPF decapsulation, GSO too"),
                    (true, false) => jobs.push(
                        "eBPF decapsulation; GSO via the VXLAN device, the kernel \
                             lacks BPF_F_ADJ_ROOM_DECAP_L4_UDP",
                    ),
                    _ => {}
                }
                if jobs.is_empty() {
                    jobs.push("passes everything on");
                }
                format!(
                    "tc ingress of {}, pinned ({})",
                    self.underlay,
                    jobs.join(", ")
                )
            }),
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
        let map = self.map(maps::COUNTERS)?;
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

/// Removes a pinned config map whose value is not this build's [`Config`] (an earlier build's,
/// before fields were appended): the verifier checks every access against the pinned map's
/// value size, so this build's programs could not load with it. It is made anew, and
/// [`Datapath::attach_overlay`] writes it whole on every start anyway.
fn forget_resized_config(pin_dir: &Path) -> Result<()> {
    let pin = pin_dir.join(maps::CONFIG);
    match aya::maps::MapInfo::from_pin(&pin) {
        Ok(info) if info.value_size() as usize != std::mem::size_of::<Config>() => {
            tracing::info!(
                "the pinned {} is an earlier build's; making it anew",
                maps::CONFIG
            );
            fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))
        }
        _ => Ok(()),
    }
}

/// Where the kernel describes itself, including every flag its helpers take.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Whether this kernel's bpf_skb_adjust_room can clear a packet's UDP-tunnel GSO state while
/// eBPF strips the tunnel (`BPF_F_ADJ_ROOM_DECAP_L4_UDP`, newer than Linux 6.18). Without it a
/// decapsulated super-packet would keep that state, which breaks it if the container forwards
/// it to a NIC with tunnel offloads, so such packets are left to the kernel VXLAN device.
fn kernel_clears_tunnel_gso() -> bool {
    fs::File::open(KERNEL_BTF)
        .and_then(|btf| btf_names(btf, "BPF_F_ADJ_ROOM_DECAP_L4_UDP"))
        .unwrap_or(false)
}

/// Whether `name` is a whole string in a BTF blob's string section (NUL-separated names); an
/// enumerator's name is there exactly when the kernel has the enumerator. Read in chunks: the
/// kernel's BTF is megabytes, which the agent should not keep as resident memory.
fn btf_names(mut btf: impl std::io::Read, name: &str) -> std::io::Result<bool> {
    let needle = [b"\0", name.as_bytes(), b"\0"].concat();
    let mut window = Vec::with_capacity(64 * 1024 + needle.len());
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let read = btf.read(&mut chunk)?;
        if read == 0 {
            return Ok(false);
        }
        window.extend_from_slice(&chunk[..read]);
        if window.windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        // Keep the tail, which may hold the start of a match that continues in the next chunk.
        let keep = window.len().min(needle.len() - 1);
        window.drain(..window.len() - keep);
    }
}

/// Makes a hash map used as a set hold exactly `wanted` (value 1), touching only the keys
/// that differ, so lookups of unchanged keys never miss.
fn hold_exactly<K, V>(
    map: &mut aya::maps::Map,
    wanted: &std::collections::BTreeSet<K>,
) -> Result<()>
where
    K: aya::Pod + Ord,
    V: aya::Pod + From<u8>,
{
    let mut map: HashMap<&mut MapData, K, V> = HashMap::try_from(map)?;
    let present: Vec<K> = map.keys().collect::<Result<_, _>>()?;
    for key in &present {
        if !wanted.contains(key) {
            map.remove(key)?;
        }
    }
    for key in wanted {
        if !present.contains(key) {
            map.insert(*key, V::from(1), 0)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_names_finds_whole_names_only() {
        let btf: &[u8] = b"\x9f\xeb\x01\0BPF_F_ADJ_ROOM_FIXED_GSO\0BPF_F_ADJ_ROOM_DECAP_L3_IPV4\0";
        let names = |name| btf_names(btf, name).unwrap();
        assert!(names("BPF_F_ADJ_ROOM_DECAP_L3_IPV4"));
        assert!(!names("BPF_F_ADJ_ROOM_DECAP_L4_UDP"));
        // A prefix or suffix of a name is not the name.
        assert!(!names("ADJ_ROOM_FIXED_GSO"));
        assert!(!names("BPF_F_ADJ_ROOM_FIXED"));
    }

    /// Reads one byte at a time: every match straddles a chunk boundary.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn btf_names_finds_a_name_split_across_reads() {
        let btf = b"\0AB\0BPF_F_ADJ_ROOM_DECAP_L4_UDP\0";
        assert!(btf_names(Trickle(btf), "BPF_F_ADJ_ROOM_DECAP_L4_UDP").unwrap());
        assert!(!btf_names(Trickle(btf), "BPF_F_ADJ_ROOM_DECAP_L3_IPV4").unwrap());
    }

    #[test]
    fn the_running_kernel_names_its_adjust_room_flags() {
        if !Path::new(KERNEL_BTF).exists() {
            eprintln!("{KERNEL_BTF} missing: this kernel has no BTF, nothing to check");
            return;
        }
        let names = |name| btf_names(fs::File::open(KERNEL_BTF).unwrap(), name).unwrap();
        // In every kernel with BTF (since Linux 4.20): the probe would find a present flag.
        assert!(names("BPF_F_ADJ_ROOM_ENCAP_L4_UDP"));
        assert!(!names("BPF_F_ADJ_ROOM_NO_SUCH_FLAG"));
    }
}

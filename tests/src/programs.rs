//! The eBPF programs run in the kernel on crafted frames, one at a time, through
//! `BPF_PROG_TEST_RUN`: no namespace, no link, nothing attached. The kernel builds an skb from
//! the frame (on the loopback device, or the `ifindex` device of the context), runs the program
//! once and hands back its return code and the frame as the program left it. Redirect helpers
//! only record their target there, so a redirect shows as `TC_ACT_REDIRECT` and nothing more.
//!
//! Each [`Programs`] has maps of its own: the object's maps are declared pinned, so they are
//! pinned in a bpffs mounted for it alone in a temporary directory, which goes when it drops.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{SchedClassifier, Xdp},
};
use weave_common::{
    counters::{Counter, CounterId},
    endpoint::{Config, Endpoint, Heard, Ipv4Key, PeerRoute, ipv4_key},
    ipv6::{Endpoint6, Ipv6Key},
    maps,
    policy::{LinkPair, SubnetPair},
    programs,
};

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

/// The object `cargo xtask build-ebpf` writes: `WEAVE_EBPF_OBJECT`, else target/ebpf/ next to
/// the test's own target directory (target/debug/deps/<test> -> target/ebpf/weave-ebpf.o).
pub fn object_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WEAVE_EBPF_OBJECT") {
        return PathBuf::from(path);
    }
    let profile = crate::profile_dir();
    let target = profile.parent().expect("target/<profile> has a parent");
    target.join("ebpf").join("weave-ebpf.o")
}

/// A bpffs of our own, mounted on a fresh temporary directory; unmounted (with every pin in
/// it) and removed on drop, also when a test fails half-way.
struct Bpffs {
    dir: PathBuf,
    mounted: bool,
}

impl Bpffs {
    fn mount() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weave-programs-{}-{n}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut fs = Self {
            dir,
            mounted: false,
        };
        let target = CString::new(fs.dir.as_os_str().as_bytes())?;
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        ensure!(
            rc == 0,
            "mounting bpffs on {}: {} (the program tests need root)",
            fs.dir.display(),
            std::io::Error::last_os_error()
        );
        fs.mounted = true;
        Ok(fs)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if self.mounted {
            let target = CString::new(self.dir.as_os_str().as_bytes()).expect("no NUL in a path");
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// `struct __sk_buff` as BPF_PROG_TEST_RUN takes it for context: it accepts only a few fields
/// (mark, priority, ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size,
/// hwtstamp) and refuses the call if any other byte is set. `ifindex` picks the device the skb
/// arrives on (0: loopback); it must exist in the caller's network namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct Skb {
    pub ingress_ifindex: u32,
    pub ifindex: u32,
    pub gso_segs: u32,
    pub gso_size: u32,
}

impl Skb {
    /// Size of the kernel's `struct __sk_buff` (Linux 5.16 and later).
    const SIZE: usize = 192;

    fn bytes(&self) -> [u8; Self::SIZE] {
        let mut ctx = [0u8; Self::SIZE];
        for (offset, value) in [
            (36, self.ingress_ifindex),
            (40, self.ifindex),
            (164, self.gso_segs),
            (176, self.gso_size),
        ] {
            ctx[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        }
        ctx
    }
}

/// What one run of a program did.
#[derive(Debug)]
pub struct Run {
    /// The program's return code (TC_ACT_* or XDP_*).
    pub code: i32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The counters that moved, in slot order, by how much.
    pub counted: Vec<(CounterId, Counter)>,
}

/// The eBPF object loaded with maps of its own and the programs the test runs.
pub struct Programs {
    // Dropped before the bpffs its maps are pinned in.
    ebpf: Ebpf,
    _bpffs: Bpffs,
}

impl Programs {
    /// Loads the object built by `cargo xtask build-ebpf` and, through the verifier, `names`.
    pub fn load(names: &[&str]) -> Result<Self> {
        let object = object_path();
        let bytes = match fs::read(&object) {
            Ok(bytes) => bytes,
            Err(err) => bail!(
                "cannot read the eBPF object {} ({err}): build it with `cargo xtask build-ebpf`",
                object.display()
            ),
        };
        let bpffs = Bpffs::mount()?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&bpffs.dir)
            .load(&bytes)
            .with_context(|| format!("loading {}", object.display()))?;
        for name in names {
            let program = ebpf
                .program_mut(name)
                .with_context(|| format!("{} has no program {name}", object.display()))?;
            let loaded = if *name == programs::UNDERLAY_XDP {
                <&mut Xdp>::try_from(program)?.load()
            } else {
                <&mut SchedClassifier>::try_from(program)?.load()
            };
            loaded.with_context(|| format!("the verifier rejected {name}"))?;
        }
        Ok(Self {
            ebpf,
            _bpffs: bpffs,
        })
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("no map {name}"))
    }

    pub fn set_config(&mut self, config: Config) -> Result<()> {
        let mut map: Array<&mut MapData, Config> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        Ok(map.set(0, config, 0)?)
    }

    pub fn add_endpoint(&mut self, ip: [u8; 4], endpoint: Endpoint) -> Result<()> {
        let mut map: HashMap<&mut MapData, Ipv4Key, Endpoint> =
            HashMap::try_from(self.map_mut(maps::ENDPOINTS)?)?;
        Ok(map.insert(ipv4_key(ip), endpoint, 0)?)
    }

    pub fn add_endpoint6(&mut self, ip: Ipv6Key, endpoint: Endpoint6) -> Result<()> {
        let mut map: HashMap<&mut MapData, Ipv6Key, Endpoint6> =
            HashMap::try_from(self.map_mut(maps::ENDPOINTS6)?)?;
        Ok(map.insert(ip, endpoint, 0)?)
    }

    /// Makes `ip` a live peer reached directly.
    pub fn add_peer(&mut self, ip: [u8; 4]) -> Result<()> {
        self.add_peer_via(ip, ip)
    }

    /// Makes `ip` a live peer whose frames go to `next_hop`.
    pub fn add_peer_via(&mut self, ip: [u8; 4], next_hop: [u8; 4]) -> Result<()> {
        self.add_peer_route(ip, next_hop, 0)
    }

    /// Makes `ip` a live peer whose frames go to `next_hop` over a path of MTU `mtu`.
    pub fn add_peer_route(&mut self, ip: [u8; 4], next_hop: [u8; 4], mtu: u16) -> Result<()> {
        let mut map: HashMap<&mut MapData, Ipv4Key, PeerRoute> =
            HashMap::try_from(self.map_mut(maps::PEERS)?)?;
        Ok(map.insert(ipv4_key(ip), PeerRoute::new(ipv4_key(next_hop), mtu), 0)?)
    }

    /// Opens the direction `pair`, as the agent does for both directions of an allowed rule.
    pub fn allow(&mut self, pair: SubnetPair) -> Result<()> {
        let mut map: HashMap<&mut MapData, SubnetPair, u8> =
            HashMap::try_from(self.map_mut(maps::POLICY)?)?;
        Ok(map.insert(pair, 1, 0)?)
    }

    /// Opens the direction `pair` between two IPv6 links.
    pub fn allow6(&mut self, pair: LinkPair) -> Result<()> {
        let mut map: HashMap<&mut MapData, LinkPair, u8> =
            HashMap::try_from(self.map_mut(maps::POLICY6)?)?;
        Ok(map.insert(pair, 1, 0)?)
    }

    /// The heard map: each peer whose link hello arrived, and what its hellos showed.
    pub fn heard(&self) -> Result<Vec<([u8; 4], Heard)>> {
        let map: HashMap<&MapData, Ipv4Key, Heard> =
            HashMap::try_from(self.ebpf.map(maps::HEARD).context("no heard map")?)?;
        map.iter()
            .map(|entry| {
                let (key, at) = entry?;
                Ok((key.to_ne_bytes(), at))
            })
            .collect()
    }

    /// Every counter slot, summed over the CPUs.
    pub fn counters(&self) -> Result<Vec<(CounterId, Counter)>> {
        let map = self.ebpf.map(maps::COUNTERS).context("no counters map")?;
        let counters: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
        CounterId::ALL
            .iter()
            .map(|&id| {
                let total =
                    counters
                        .get(&id.index(), 0)?
                        .iter()
                        .fold(Counter::default(), |acc, c| Counter {
                            packets: acc.packets + c.packets,
                            bytes: acc.bytes + c.bytes,
                        });
                Ok((id, total))
            })
            .collect()
    }

    /// Runs program `name` once on `frame` with the skb fields of `skb` (None for XDP, which
    /// takes no context here).
    pub fn run(&self, name: &str, frame: &[u8], skb: Option<Skb>) -> Result<Run> {
        let before = self.counters()?;
        let ctx = skb.map(|skb| skb.bytes());
        // Room for what a program may add (encapsulation adds 50 bytes).
        let mut out = vec![0u8; frame.len() + 256];
        let program = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx.as_ref().map(|c| &c[..]),
            ..TestRunOptions::default()
        };
        let result = if name == programs::UNDERLAY_XDP {
            <&Xdp>::try_from(program)?.test_run(opts)
        } else {
            <&SchedClassifier>::try_from(program)?.test_run(opts)
        }
        .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        out.truncate(result.data_size_out as usize);
        let counted = self
            .counters()?
            .into_iter()
            .zip(before)
            .filter(|((_, after), (_, before))| after != before)
            .map(|((id, after), (_, before))| {
                let moved = Counter {
                    packets: after.packets - before.packets,
                    bytes: after.bytes - before.bytes,
                };
                (id, moved)
            })
            .collect();
        Ok(Run {
            code: result.return_value as i32,
            frame: out,
            counted,
        })
    }
}

impl Run {
    /// The run returned `code` and moved exactly the counters `ids`, each by one packet of
    /// the bytes [`Counter::bytes`] defines: the container frame, `frame_len` less the VXLAN
    /// encapsulation when `underlay` (the frame came in on the underlay), except for the
    /// counters that count the underlay packet itself.
    pub fn assert(&self, code: i32, ids: &[CounterId], frame_len: usize, underlay: bool) {
        if let Some(mismatch) = self.mismatch(code, ids, frame_len, underlay) {
            panic!("{mismatch}");
        }
    }

    /// What [`Run::assert`] would fail with, if anything.
    pub fn mismatch(
        &self,
        code: i32,
        ids: &[CounterId],
        frame_len: usize,
        underlay: bool,
    ) -> Option<String> {
        let expected: Vec<(CounterId, Counter)> = CounterId::ALL
            .iter()
            .filter(|id| ids.contains(id))
            .map(|&id| {
                let inner = if underlay && !id.counts_underlay_packet() {
                    frame_len - crate::frames::VXLAN_OVERHEAD
                } else {
                    frame_len
                };
                let bytes = inner as u64;
                (id, Counter { packets: 1, bytes })
            })
            .collect();
        if (self.code, names(&self.counted)) != (code, names(&expected)) {
            return Some(format!(
                "returned {} counting {:?}; want {code} counting {:?}",
                self.code,
                names(&self.counted),
                names(&expected)
            ));
        }
        (self.counted != expected).then(|| {
            format!(
                "packets and bytes: counted {:?}, want {:?}",
                self.counted, expected
            )
        })
    }
}

fn names(counted: &[(CounterId, Counter)]) -> Vec<&'static str> {
    counted.iter().map(|(id, _)| id.name()).collect()
}

/// Skips nothing: the program tests need root (bpffs, BPF_PROG_TEST_RUN) and the object.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the eBPF program tests load programs and mount bpffs: run them as root"
    );
    assert!(
        Path::new(&object_path()).is_file(),
        "{} does not exist: build it first with `cargo xtask build-ebpf`",
        object_path().display()
    );
}

//! `cargo xtask bench`: the overlay against the bare underlay and kernel VXLAN + bridge, side by
//! side on namespace hosts, plus control-plane timings. Writes target/bench/overlay.json.
//!
//! Each path gets its own pair of hosts on a switch of its own (a bridge namespace, 1500-MTU
//! veths: the underlay the tests use), so every path crosses the same kind of underlay and
//! nothing one path installs (programs, VXLAN devices, routes) touches another's packets. Paths
//! are measured interleaved, round by round, and each figure is the median of the rounds.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};
use weave_tests::{Container, Host, Segment, spawn_in, unique_name, wait_for_line};

use crate::{agent_path, build_agent, ebpf, progress, setup, target_dir, wireguard::BoringtunBed};

mod cni;
mod dns;

const ROUNDS: usize = 5;
const TCP_SECONDS: &str = "4";
const UDP_SECONDS: &str = "3";
const RR_COUNT: &str = "10000";
const REACHABLE_SAMPLES: usize = 20;
const LEARN_ENDPOINTS: u64 = 1000;
/// `weave` is the agent's default (`--encap ebpf`: eBPF-built VXLAN for single packets, the
/// kernel VXLAN device for GSO bulk); `weave_vxlan_device` sends everything through the device
/// (`--encap vxlan`). `routed` is no overlay at all: containers behind veths, hosts routing
/// between them, the floor for any overlay whose containers sit behind a veth.
/// `weave_relayed` is `weave` between two hosts a firewall cuts apart, through a third host
/// that relays in the kernel. `weave_encrypted` is `weave` with a password (container traffic
/// sealed by the agents), `boringtun` userspace WireGuard between the two hosts (see
/// [`crate::wireguard`]): the encrypted path's reference. `exposed_host` is a process in the
/// host namespace of A, which exposes an address, to a container on B; `exposed_laptop` a
/// machine that runs no agent, routed to the subnet through A, to that container;
/// `exposed_laptop_masq` the same through an address exposed with `--masquerade` (nftables
/// SNAT on A).
const PATHS: [&str; 12] = [
    "bare",
    "routed",
    "vxlan_bridge",
    "weave",
    "weave_ipv6",
    "weave_vxlan_device",
    "weave_relayed",
    "weave_encrypted",
    "boringtun",
    "exposed_host",
    "exposed_laptop",
    "exposed_laptop_masq",
];
/// The `weave` path with another agent binary (`--reference`).
const REFERENCE: &str = "weave_reference";
/// The encrypted path with another agent binary (`--only encrypted --reference`).
const ENCRYPTED_REFERENCE: &str = "weave_encrypted_reference";
/// `tcp_gbps` has client and server pinned to the two cores (see [`pinned`]);
/// `tcp_unpinned_gbps` leaves them to the scheduler, as users run.
/// `cpu_s_per_gb`: CPU seconds (all of the machine's, both hosts and every agent) per GB of
/// the pinned single-stream run.
const FIGURES: [&str; 7] = [
    "tcp_gbps",
    "cpu_s_per_gb",
    "tcp_unpinned_gbps",
    "tcp8_gbps",
    "rr_p50_us",
    "rr_p99_us",
    "udp64_kpps",
];

/// Each path's figures, one value per round.
type Samples = BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>>;
/// Ratios by name (`weave_vs_bare`), each figure's median of per-round ratios.
type Ratios = BTreeMap<String, BTreeMap<&'static str, f64>>;

/// Where a path's traffic goes: server and client namespaces and the server's address.
struct Path {
    server: String,
    client: String,
    address: String,
}

/// Parts of the benchmark `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Throughput and latency of the paths, the control-plane timings and the DNS part
    /// (everything but scale).
    Overlay,
    /// 8 hosts x 50 endpoints: convergence, memory, idle CPU.
    Scale,
    /// Attach to reachable only, with an explicit and with an automatic address.
    Attach,
    /// The DNS server against dnsmasq, and names appearing and going on another host
    /// (writes target/bench/dns.json).
    Dns,
    /// CNI ADD latency against the reference bridge + host-local plugins (writes
    /// target/bench/cni.json).
    Cni,
    /// The encrypted path against bare, weave and boringtun only, 5 rounds (writes
    /// target/bench/encrypted.json): the quick loop for work on the crypto path.
    Encrypted,
    /// The weave path over IPv6 against the same containers over IPv4, 5 rounds (writes
    /// target/bench/ipv6.json).
    Ipv6,
}

pub fn run(only: Option<Part>, reference: Option<std::path::PathBuf>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark makes namespaces: run it as root"
    );
    let started = Instant::now();
    setup::run()?;
    setup::ensure_bench_tools()?;
    let reference = reference
        .map(|path| {
            let path = std::path::absolute(&path)
                .with_context(|| format!("--reference {}", path.display()))?;
            ensure!(
                path.is_file(),
                "--reference {}: no such file; give a weave-agent binary",
                path.display()
            );
            Ok(path)
        })
        .transpose()?;
    ebpf::build()?;
    build_agent(true)?;
    let agent = agent_path(true);
    // SAFETY: single-threaded here; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("WEAVE_AGENT_BIN", &agent) };

    let out = target_dir().join("bench").join("overlay.json");
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    if only == Some(Part::Scale) {
        let scale = scale_step()?;
        let path = target_dir().join("bench").join("scale.json");
        std::fs::write(&path, serde_json::to_string_pretty(&scale)?)?;
        println!(
            "wrote {} in {:.0}s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    if only == Some(Part::Cni) {
        let report = json!({"cni": cni::run(&agent)?, "machine": machine()});
        let path = target_dir().join("bench").join("cni.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!(
            "wrote {} in {:.0}s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    if only == Some(Part::Dns) {
        let report = json!({"dns": dns::run()?, "machine": machine()});
        let path = target_dir().join("bench").join("dns.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!("wrote {}", path.display());
        return Ok(());
    }

    if only == Some(Part::Encrypted) {
        return encrypted_only(started, reference.as_ref());
    }
    if only == Some(Part::Ipv6) {
        return ipv6_only(started);
    }

    if only == Some(Part::Attach) {
        let weave = WeaveBed::new(&[], None)?;
        let step = progress::step(format!(
            "bench: attach with and without an address -> reachable ({REACHABLE_SAMPLES} samples each)"
        ));
        let (explicit, automatic) = attach_with_and_without_address(&weave)?;
        step.finish();
        let report = json!({
            "attach_explicit_from_start_ms": explicit,
            "attach_automatic_from_start_ms": automatic,
            "attach_explicit_from_start_ms_p50": median(&explicit),
            "attach_automatic_from_start_ms_p50": median(&automatic),
            "attach_automatic_minus_explicit_ms": median(&automatic) - median(&explicit),
            "machine": machine(),
        });
        let path = target_dir().join("bench").join("attach.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
        println!(
            "from attach's start to reachable: explicit address {:.1} ms, automatic {:.1} ms \
             (difference {:+.1} ms; goal <= 5); wrote {}",
            median(&explicit),
            median(&automatic),
            median(&automatic) - median(&explicit),
            path.display()
        );
        return Ok(());
    }

    let step = progress::step("bench: building the testbeds");
    let bare = Segment::new(&unique_name("bb"), 2)?;
    let routed = KernelBed::routed()?;
    let vx = KernelBed::vxlan_bridge()?;
    let weave = WeaveBed::new(&[], None)?;
    let weave_device = WeaveBed::new(&["--encap", "vxlan"], None)?;
    let weave_relayed = WeaveBed::relayed()?;
    let weave_encrypted = WeaveBed::new(&["--password", "bench"], None)?;
    let boringtun = BoringtunBed::new()?;
    let exposed = ExposedBed::new()?;
    let weave_reference = reference
        .as_ref()
        .map(|bin| WeaveBed::new(&[], Some(bin)))
        .transpose()?;
    let mut paths = BTreeMap::from([
        (
            "bare",
            Path {
                server: bare.hosts[0].name.clone(),
                client: bare.hosts[1].name.clone(),
                address: "192.168.56.101".into(),
            },
        ),
        (
            "routed",
            Path {
                server: routed.c1.name.clone(),
                client: routed.c2.name.clone(),
                address: "10.20.1.10".into(),
            },
        ),
        (
            "vxlan_bridge",
            Path {
                server: vx.c1.name.clone(),
                client: vx.c2.name.clone(),
                address: "10.10.0.1".into(),
            },
        ),
        ("weave", weave.path()),
        ("weave_ipv6", weave.path6()),
        ("weave_vxlan_device", weave_device.path()),
        ("weave_relayed", weave_relayed.path()),
        ("weave_encrypted", weave_encrypted.path()),
        ("boringtun", {
            let (server, client, address) = boringtun.path();
            Path {
                server,
                client,
                address,
            }
        }),
        ("exposed_host", exposed.path(Client::Host, Subnet::Routed)),
        (
            "exposed_laptop",
            exposed.path(Client::Laptop, Subnet::Routed),
        ),
        (
            "exposed_laptop_masq",
            exposed.path(Client::Laptop, Subnet::Masqueraded),
        ),
    ]);
    let mut measured = PATHS.to_vec();
    if let Some(bed) = &weave_reference {
        paths.insert(REFERENCE, bed.path());
        measured.push(REFERENCE);
    }
    step.finish();

    let samples = measure(&paths, &measured)?;
    let medians = medians_of(&samples);

    let step = progress::step(format!(
        "bench: attach -> reachable ({REACHABLE_SAMPLES} samples)"
    ));
    let reach = attach_to_reachable(&weave)?;
    step.finish();
    let step = progress::step(format!(
        "bench: attach with and without an address -> reachable ({REACHABLE_SAMPLES} samples each)"
    ));
    let (explicit, automatic) = attach_with_and_without_address(&weave)?;
    step.finish();
    let super_packets = weave.super_packets();
    let relayed = weave_relayed.relay_counters();
    let sealed = weave_encrypted.seal_counters();
    drop((bare, routed, vx, weave, weave_device, weave_relayed));
    let exposed_counters = exposed.counters();
    drop((weave_encrypted, boringtun, exposed));
    drop(weave_reference);
    let step = progress::step(format!(
        "bench: learning {LEARN_ENDPOINTS} remote endpoints"
    ));
    let learn_ms = learn_endpoints(&agent)?;
    step.finish();
    let dns = dns::run()?;
    let cni = cni::run(&agent)?;
    let scale = match only {
        None => scale_step()?,
        _ => Value::Null,
    };

    let mut ours: Vec<_> = ["weave", "weave_vxlan_device"]
        .iter()
        .flat_map(|ours| ["bare", "routed", "vxlan_bridge"].map(|base| (*ours, base)))
        .collect();
    // IPv6's target: single-stream TCP at least 0.95x IPv4 between the same containers.
    ours.push(("weave_ipv6", "weave"));
    // Relaying's targets: single-stream TCP at least 0.8x the direct path, rr_p50 at most 1.5x.
    ours.push(("weave_relayed", "weave"));
    ours.push(("weave_relayed", "bare"));
    // Encryption's targets: single-stream TCP at least 0.25x bare and at least boringtun's,
    // rr_p50 at most 2x weave's.
    ours.push(("weave_encrypted", "bare"));
    ours.push(("weave_encrypted", "weave"));
    ours.push(("weave_encrypted", "boringtun"));
    // Expose's figures, against container to container and against the bare underlay; the
    // masqueraded path against the routed one is what conntrack's SNAT costs.
    for path in ["exposed_host", "exposed_laptop", "exposed_laptop_masq"] {
        ours.push((path, "weave"));
        ours.push((path, "bare"));
    }
    ours.push(("exposed_laptop_masq", "exposed_laptop"));
    if samples.contains_key(REFERENCE) {
        ours.push(("weave", REFERENCE));
        ours.push((REFERENCE, "bare"));
        ours.push((REFERENCE, "vxlan_bridge"));
    }
    let ratios = ratio_table(&samples, &ours);
    // What no overlay at all achieves against vxlan_bridge on this machine: a target stated
    // against vxlan_bridge that these miss is out of reach for any overlay here.
    let references = ratio_table(
        &samples,
        &[("bare", "vxlan_bridge"), ("routed", "vxlan_bridge")],
    );
    let report = json!({
        "paths": medians,
        "ratios": ratios,
        "reference_ratios": references,
        "control_plane": {
            "attach_to_reachable_ms_p50": median(&reach),
            "attach_to_reachable_ms_max": reach.iter().copied().fold(0.0, f64::max),
            "learn_1000_endpoints_ms": learn_ms,
            // From the command's start: IPAM's goal is automatic at most 5 ms above explicit.
            "attach_explicit_from_start_ms_p50": median(&explicit),
            "attach_automatic_from_start_ms_p50": median(&automatic),
            "attach_automatic_minus_explicit_ms": median(&automatic) - median(&explicit),
        },
        "dns": dns,
        "cni": cni,
        "scale": scale,
        "weave_receiver_super_packets": super_packets,
        "weave_relayed_counters": relayed,
        "weave_encrypted_counters": sealed,
        "exposed_counters": exposed_counters,
        "samples": samples,
        "rounds": ROUNDS,
        "machine": machine(),
        "agent": agent.display().to_string(),
        "reference": reference.map(|r| r.display().to_string()),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    print_table(&measured, &medians, &ratios, &references);
    println!(
        "attach -> reachable: median {:.0} ms over {REACHABLE_SAMPLES} samples; \
         learning {LEARN_ENDPOINTS} remote endpoints: {learn_ms:.0} ms",
        median(&reach)
    );
    println!(
        "from attach's start to reachable: explicit address {:.1} ms, automatic {:.1} ms \
         (difference {:+.1} ms; goal <= 5)",
        median(&explicit),
        median(&automatic),
        median(&automatic) - median(&explicit)
    );
    println!(
        "wrote {} in {:.0}s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every figure of every path in `measured`, [`ROUNDS`] rounds, the paths interleaved in
/// each round so that a slow spell of the machine hits them all alike.
fn measure(paths: &BTreeMap<&str, Path>, measured: &[&'static str]) -> Result<Samples> {
    let mut samples = Samples::new();
    for round in 1..=ROUNDS {
        for &name in measured {
            let step = progress::step(format!("bench round {round}/{ROUNDS}: {name}"));
            let path = &paths[name];
            let figures = samples.entry(name).or_default();
            let mut add = |figure, value| figures.entry(figure).or_default().push(value);
            let busy = busy_seconds()?;
            let gbps = iperf_tcp(path, 1, Pinning::Pinned)?;
            let cpu = busy_seconds()? - busy;
            add("tcp_gbps", gbps);
            add(
                "cpu_s_per_gb",
                cpu / (gbps * TCP_SECONDS.parse::<f64>()? / 8.0),
            );
            add("tcp_unpinned_gbps", iperf_tcp(path, 1, Pinning::Unpinned)?);
            add("tcp8_gbps", iperf_tcp(path, 8, Pinning::Pinned)?);
            let (p50, p99) = request_response(path)?;
            add("rr_p50_us", p50);
            add("rr_p99_us", p99);
            add("udp64_kpps", udp64(path)?);
            step.finish();
        }
    }
    Ok(samples)
}

fn medians_of(samples: &Samples) -> BTreeMap<&'static str, BTreeMap<&'static str, f64>> {
    samples
        .iter()
        .map(|(path, figs)| (*path, figs.iter().map(|(f, v)| (*f, median(v))).collect()))
        .collect()
}

/// `--only encrypted`: the paths the encrypted path's goals are stated against, and nothing
/// else, so that a change to the crypto path is measured in minutes.
///
/// `reference`: another agent binary, measured encrypted in the same rounds
/// (`weave_encrypted_reference`), so that a change to the crypto path is judged against the
/// build before it at one moment of the VM.
fn encrypted_only(started: Instant, reference: Option<&std::path::PathBuf>) -> Result<()> {
    let step = progress::step("bench: building the testbeds");
    let bare = Segment::new(&unique_name("bb"), 2)?;
    let weave = WeaveBed::new(&[], None)?;
    let weave_encrypted = WeaveBed::new(&["--password", "bench"], None)?;
    let encrypted_reference = reference
        .map(|agent| WeaveBed::new(&["--password", "bench"], Some(agent)))
        .transpose()?;
    let boringtun = BoringtunBed::new()?;
    let (server, client, address) = boringtun.path();
    let mut paths = BTreeMap::from([
        (
            "bare",
            Path {
                server: bare.hosts[0].name.clone(),
                client: bare.hosts[1].name.clone(),
                address: "192.168.56.101".into(),
            },
        ),
        ("weave", weave.path()),
        ("weave_encrypted", weave_encrypted.path()),
        (
            "boringtun",
            Path {
                server,
                client,
                address,
            },
        ),
    ]);
    let mut measured = vec!["bare", "weave", "weave_encrypted", "boringtun"];
    let mut pairs = vec![
        ("weave_encrypted", "bare"),
        ("weave_encrypted", "weave"),
        ("weave_encrypted", "boringtun"),
    ];
    if let Some(bed) = &encrypted_reference {
        paths.insert(ENCRYPTED_REFERENCE, bed.path());
        measured.push(ENCRYPTED_REFERENCE);
        pairs.push(("weave_encrypted", ENCRYPTED_REFERENCE));
    }
    step.finish();
    let samples = measure(&paths, &measured)?;
    let sealed = weave_encrypted.seal_counters();
    let medians = medians_of(&samples);
    let ratios = ratio_table(&samples, &pairs);
    let report = json!({
        "paths": medians,
        "ratios": ratios,
        "weave_encrypted_counters": sealed,
        "samples": samples,
        "rounds": ROUNDS,
        "reference": reference.map(|r| r.display().to_string()),
        "machine": machine(),
    });
    print_table(&measured, &medians, &ratios, &Ratios::new());
    write_report("encrypted", &report, started)
}

/// `--only ipv6`: the weave path's two address families between the same two containers,
/// so that IPv6 is judged against IPv4 at one moment of the VM.
fn ipv6_only(started: Instant) -> Result<()> {
    let step = progress::step("bench: building the testbed");
    let weave = WeaveBed::new(&[], None)?;
    let paths = BTreeMap::from([("weave", weave.path()), ("weave_ipv6", weave.path6())]);
    let measured = ["weave", "weave_ipv6"];
    step.finish();
    let samples = measure(&paths, &measured)?;
    let medians = medians_of(&samples);
    let ratios = ratio_table(&samples, &[("weave_ipv6", "weave")]);
    let report = json!({
        "paths": medians,
        "ratios": ratios,
        "weave_receiver_super_packets": weave.super_packets(),
        "samples": samples,
        "rounds": ROUNDS,
        "machine": machine(),
    });
    print_table(&measured, &medians, &ratios, &Ratios::new());
    write_report("ipv6", &report, started)
}

/// Writes `report` as target/bench/NAME.json and says so, with the run's time.
fn write_report(name: &str, report: &Value, started: Instant) -> Result<()> {
    let out = target_dir().join("bench").join(format!("{name}.json"));
    std::fs::write(&out, serde_json::to_string_pretty(report)?)?;
    println!(
        "wrote {} in {:.0}s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The scale run as a progress step, its figures printed against the goals.
fn scale_step() -> Result<Value> {
    let step = progress::step(format!(
        "bench: scale, {SCALE_HOSTS} hosts x {SCALE_ENDPOINTS} endpoints"
    ));
    let scale = scale()?;
    step.finish();
    println!(
        "scale {SCALE_HOSTS}x{SCALE_ENDPOINTS}: converged {:.0} ms after the last attach (goal <= 5000); \
         agent RSS max {:.1} MB (goal <= 40); idle CPU max {:.2}% per agent (goal <= 1)",
        scale["converge_after_last_attach_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        scale["rss_mb_max"].as_f64().unwrap_or(f64::NAN),
        scale["idle_cpu_percent_max"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(scale)
}

/// `ours` against `base` for each pair, each figure as the median of the per-round ratios, as
/// the targets are stated: paths measured next to each other in one round share that moment's
/// speed of the VM, which drifts.
fn ratio_table(samples: &Samples, pairs: &[(&str, &str)]) -> Ratios {
    pairs
        .iter()
        .map(|(ours, base)| {
            let r = FIGURES
                .iter()
                .map(|f| {
                    let per_round: Vec<f64> = samples[ours][f]
                        .iter()
                        .zip(&samples[base][f])
                        .map(|(ours, base)| ours / base)
                        .collect();
                    (*f, median(&per_round))
                })
                .collect();
            (format!("{ours}_vs_{base}"), r)
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "kernel": kernel.trim(),
    })
}

fn print_table(
    measured: &[&str],
    medians: &BTreeMap<&str, BTreeMap<&str, f64>>,
    ratios: &Ratios,
    references: &Ratios,
) {
    // Each column as wide as its name (and a space), at least 12.
    let cell = |f: &str, text: String| format!("{text:>w$}", w = (f.len() + 1).max(12));
    let header: String = FIGURES.map(|f| cell(f, f.to_owned())).join("");
    println!("\n{:<34}{header}", "path");
    let row = |values: &BTreeMap<&str, f64>| -> String {
        FIGURES
            .iter()
            .map(|f| cell(f, format!("{:.2}", values[f])))
            .collect()
    };
    for path in measured {
        println!("{path:<34}{}", row(&medians[path]));
    }
    let print_ratios = |ratios: &Ratios| {
        for (name, r) in ratios {
            println!("{name:<34}{}", row(r));
        }
    };
    print_ratios(ratios);
    if !references.is_empty() {
        println!("no overlay, for reference:");
        print_ratios(references);
    }
    println!();
}

/// CPU time the whole machine has spent busy (not idle or waiting on I/O), in seconds.
fn busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .context("an empty /proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    ensure!(ticks.len() >= 8, "an unexpected /proc/stat");
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy / per_second)
}

fn output_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    weave_tests::run_ok("ip", all)
}

/// Client on CPU 0, server on CPU 1, when there are two: left to the scheduler, the two
/// processes wandered between the cores and single-stream TCP of one path moved by 30% from run
/// to run; pinned, by under 10%. Each program's softirq work still runs where the kernel puts it.
fn pinned() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// `program args` as a command line that runs on `cpu` when [`pinned`].
fn on_cpu<'a>(cpu: &'a str, program: &'a str, args: &[&'a str]) -> (&'a str, Vec<&'a str>) {
    if !pinned() {
        return (program, args.to_vec());
    }
    let mut all = vec!["-c", cpu, program];
    all.extend_from_slice(args);
    ("taskset", all)
}

/// Whether a measurement pins client and server to a core each (where [`pinned`] allows).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pinning {
    Pinned,
    Unpinned,
}

fn iperf_json(path: &Path, pinning: Pinning, client_args: &[&str]) -> Result<Value> {
    let (mut server, mut lines) = spawn_in(&path.server, "iperf3", &["-s", "-1", "--forceflush"])?;
    wait_for_line(&mut lines, "Server listening")?;
    let mut args = vec!["-c", path.address.as_str(), "-J"];
    if pinning == Pinning::Pinned && pinned() {
        // The client's "-A client,server" sets both ends for this test.
        args.extend_from_slice(&["-A", "0,1"]);
    }
    args.extend_from_slice(client_args);
    let text = output_in(&path.client, "iperf3", &args);
    let _ = server.kill();
    let _ = server.wait();
    Ok(serde_json::from_str(&text?)?)
}

fn iperf_tcp(path: &Path, streams: u32, pinning: Pinning) -> Result<f64> {
    let streams = streams.to_string();
    let report = iperf_json(path, pinning, &["-t", TCP_SECONDS, "-P", &streams])?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .with_context(|| format!("no TCP result from iperf3: {report}"))
}

/// Packets per second the receiver got, in thousands, for 64-byte UDP payloads sent as fast as
/// the sender can.
fn udp64(path: &Path) -> Result<f64> {
    let report = iperf_json(
        path,
        Pinning::Pinned,
        &["-u", "-b", "0", "-l", "64", "-t", UDP_SECONDS],
    )?;
    let sum = &report["end"]["sum"];
    let (Some(packets), Some(lost), Some(seconds)) = (
        sum["packets"].as_f64(),
        sum["lost_packets"].as_f64(),
        sum["seconds"].as_f64(),
    ) else {
        bail!("no UDP result from iperf3: {report}");
    };
    Ok((packets - lost) / seconds / 1e3)
}

fn xtask_exe() -> Result<String> {
    Ok(std::env::current_exe()?
        .to_str()
        .context("xtask path is not UTF-8")?
        .to_owned())
}

fn request_response(path: &Path) -> Result<(f64, f64)> {
    let exe = xtask_exe()?;
    let addr = match path.address.contains(':') {
        true => format!("[{}]:7000", path.address),
        false => format!("{}:7000", path.address),
    };
    let (program, args) = on_cpu("1", &exe, &["rr-server", &addr]);
    let (mut server, mut lines) = spawn_in(&path.server, program, &args)?;
    wait_for_line(&mut lines, "ready")?;
    let (program, args) = on_cpu("0", &exe, &["rr-client", &addr, RR_COUNT]);
    let out = output_in(&path.client, program, &args);
    let _ = server.wait();
    let out = out?;
    let mut parts = out.split_whitespace().map(str::parse::<f64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(p50)), Some(Ok(p99))) => Ok((p50, p99)),
        _ => bail!("rr-client printed {out:?}"),
    }
}

/// Two hosts on a switch with a container each, wired by the kernel alone (no agent).
struct KernelBed {
    c1: Container,
    c2: Container,
    seg: Segment,
}

impl KernelBed {
    fn hosts_and_containers(prefix: &str) -> Result<Self> {
        let seg = Segment::new(&unique_name(prefix), 2)?;
        let c1 = Container::new(&unique_name(prefix), &seg.hosts[0])?;
        let c2 = Container::new(&unique_name(prefix), &seg.hosts[1])?;
        Ok(Self { c1, c2, seg })
    }

    fn hosts(&self) -> (&Host, &Host) {
        (&self.seg.hosts[0], &self.seg.hosts[1])
    }

    /// The hosts route between their containers' networks (10.20.1.0/24 and 10.20.2.0/24)
    /// over the underlay: what a container behind a veth costs without any overlay.
    fn routed() -> Result<Self> {
        let bed = Self::hosts_and_containers("br")?;
        let (c1, c2, hosts) = (&bed.c1, &bed.c2, bed.hosts());
        for (host, ctr, net, other_net, other_host) in [
            (hosts.0, c1, "1", "2", "192.168.56.102"),
            (hosts.1, c2, "2", "1", "192.168.56.101"),
        ] {
            // The same MTU as weave's ethwe, so both send the same segments.
            host.ip([
                "link", "add", "vc0", "mtu", "1450", "type", "veth", "peer", "name", "eth0",
                "netns", &ctr.name,
            ])?;
            host.ip(["addr", "add", &format!("10.20.{net}.1/24"), "dev", "vc0"])?;
            host.ip(["link", "set", "vc0", "up"])?;
            host.ip([
                "route",
                "add",
                &format!("10.20.{other_net}.0/24"),
                "via",
                other_host,
            ])?;
            ensure!(
                host.exec("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?
                    .status
                    .success(),
                "cannot enable forwarding in {}",
                host.name
            );
            ctr.ip(["addr", "add", &format!("10.20.{net}.10/24"), "dev", "eth0"])?;
            ctr.ip(["link", "set", "eth0", "up"])?;
            ctr.ip(["route", "add", "default", "via", &format!("10.20.{net}.1")])?;
        }
        ensure!(
            c2.ping("10.20.1.10", 1)?,
            "the routed testbed does not pass traffic"
        );
        Ok(bed)
    }

    /// Each host has a Linux bridge holding a kernel VXLAN device (static remote) and the
    /// container's veth: the classic kernel overlay (flannel, Docker overlay, Weave fastdp's
    /// shape).
    fn vxlan_bridge() -> Result<Self> {
        let bed = Self::hosts_and_containers("bv")?;
        let (c1, c2, hosts) = (&bed.c1, &bed.c2, bed.hosts());
        for (host, ctr, local, remote, addr) in [
            (
                hosts.0,
                c1,
                "192.168.56.101",
                "192.168.56.102",
                "10.10.0.1/24",
            ),
            (
                hosts.1,
                c2,
                "192.168.56.102",
                "192.168.56.101",
                "10.10.0.2/24",
            ),
        ] {
            host.ip([
                "link", "add", "vx0", "type", "vxlan", "id", "42", "local", local, "remote",
                remote, "dstport", "4789", "dev", "eth0",
            ])?;
            host.ip(["link", "add", "br0", "type", "bridge"])?;
            host.ip([
                "link", "add", "vc0", "mtu", "1450", "type", "veth", "peer", "name", "eth0",
                "netns", &ctr.name,
            ])?;
            for dev in ["vx0", "vc0"] {
                host.ip(["link", "set", dev, "master", "br0", "up"])?;
            }
            host.ip(["link", "set", "br0", "up"])?;
            ctr.ip(["addr", "add", addr, "dev", "eth0"])?;
            ctr.ip(["link", "set", "eth0", "up"])?;
        }
        ensure!(
            c2.ping("10.10.0.1", 1)?,
            "the VXLAN + bridge testbed does not pass traffic"
        );
        Ok(bed)
    }
}

/// Two hosts on a switch with weave-agent and a container each.
struct WeaveBed {
    c1: Container,
    c2: Container,
    seg: Segment,
}

impl WeaveBed {
    /// Traffic from the container on host B to the one on host A.
    fn path(&self) -> Path {
        Path {
            server: self.c1.name.clone(),
            client: self.c2.name.clone(),
            address: "192.168.1.10".into(),
        }
    }

    /// The same containers over IPv6 (this tree's agent only: an earlier one has none).
    fn path6(&self) -> Path {
        Path {
            address: "fd00:1::10".into(),
            ..self.path()
        }
    }

    /// `agent`: the binary the hosts run, when not this tree's.
    fn new(launch_args: &[&str], agent: Option<&std::path::PathBuf>) -> Result<Self> {
        let mut seg = Segment::new(&unique_name("bw"), 2)?;
        if let Some(bin) = agent {
            for host in &mut seg.hosts {
                host.use_agent(bin.clone());
            }
        }
        let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
        let mut launch = vec!["launch"];
        launch.extend_from_slice(launch_args);
        a.agent_ok(&launch)?;
        launch.push("192.168.56.101");
        b.agent_ok(&launch)?;
        let c1 = Container::new(&unique_name("bwc"), a)?;
        let c2 = Container::new(&unique_name("bwc"), b)?;
        // IPv6 beside IPv4 ([`WeaveBed::path6`]), for this tree's agent.
        let (first, second) = match agent {
            None => (
                "192.168.1.10/24,fd00:1::10/64",
                "192.168.1.20/24,fd00:1::20/64",
            ),
            Some(_) => ("192.168.1.10/24", "192.168.1.20/24"),
        };
        a.attach(first, &c1)?;
        b.attach(second, &c2)?;
        a.wait_for_remote(1)?;
        b.wait_for_remote(1)?;
        // With a password, the first ping may find no session yet: the handshake is under way.
        weave_tests::wait_until(
            Duration::from_secs(10),
            "the weave testbed passing traffic",
            || c2.ping("192.168.1.10", 1),
        )?;
        Ok(Self { c1, c2, seg })
    }

    /// Three hosts on a switch whose bridge drops everything between hosts 1 and 3 (nftables,
    /// as the relay tests); containers on 1 and 3, so their traffic crosses host 2, which
    /// relays it. Returns once the relayed path passes traffic.
    fn relayed() -> Result<Self> {
        let seg = Segment::new(&unique_name("br"), 3)?;
        seg.cut(1, 3)?;
        let (a, b, c) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
        a.agent_ok(&["launch"])?;
        b.agent_ok(&["join", "192.168.56.101"])?;
        c.agent_ok(&["join", "192.168.56.102"])?;
        let c1 = Container::new(&unique_name("brc"), a)?;
        let c2 = Container::new(&unique_name("brc"), c)?;
        a.attach("192.168.1.10/24", &c1)?;
        c.attach("192.168.1.20/24", &c2)?;
        a.wait_for_remote(1)?;
        c.wait_for_remote(1)?;
        weave_tests::wait_until(Duration::from_secs(10), "the relayed path", || {
            c2.ping("192.168.1.10", 1)
        })?;
        let relays = b.counter_packets("relay_forwarded")?;
        ensure!(
            relays > 0,
            "the relayed testbed's traffic does not cross host 2"
        );
        Ok(Self { c1, c2, seg })
    }

    /// What the relay (host 2) of a [`WeaveBed::relayed`] bed forwarded.
    fn relay_counters(&self) -> Value {
        let relay = &self.seg.hosts[1];
        json!({
            "relay_forwarded": relay.counter_packets("relay_forwarded").ok(),
            "drop_relay_hop_limit": relay.counter_packets("drop_relay_hop_limit").ok(),
        })
    }

    /// What the encrypted bed's hosts sealed and opened, and what they refused.
    fn seal_counters(&self) -> Value {
        let counters = |host: &Host| {
            json!({
                "seal_to_agent": host.counter_packets("seal_to_agent").ok(),
                "sealed_received": host.counter_packets("sealed_received").ok(),
                "opened_delivered": host.counter_packets("opened_delivered").ok(),
                "drop_no_session": host.counter_packets("drop_no_session").ok(),
            })
        };
        json!({
            "server": counters(&self.seg.hosts[0]),
            "client": counters(&self.seg.hosts[1]),
        })
    }

    /// The host whose container serves (A).
    fn server_host(&self) -> &Host {
        &self.seg.hosts[0]
    }

    /// How the server host took the super-packets it received: the ways of `underlay_tc`
    /// (null for an agent too old to count them).
    fn super_packets(&self) -> Value {
        let host = self.server_host();
        let mut out = serde_json::Map::new();
        for name in [
            "underlay_decap_gso",
            "underlay_gso_forwarding",
            "underlay_gso_refused",
        ] {
            out.insert(name.to_owned(), host.counter_packets(name).ok().into());
        }
        out.into()
    }
}

/// Who the client of an [`ExposedBed`] path is.
#[derive(Clone, Copy)]
enum Client {
    /// A process in the host namespace of A.
    Host,
    /// The third host, which runs no agent.
    Laptop,
}

/// Which exposed subnet of an [`ExposedBed`] a path goes to.
#[derive(Clone, Copy)]
enum Subnet {
    /// 192.168.1.0/24, exposed as 192.168.1.1 without NAT: the laptop's address reaches the
    /// container, which answers through A.
    Routed,
    /// 192.168.2.0/24, exposed as 192.168.2.1 with `--masquerade`.
    Masqueraded,
}

/// Three hosts on a switch: A exposes two addresses (one masqueraded), B has a container in
/// each subnet, the laptop runs no agent and routes both subnets through A.
struct ExposedBed {
    routed: Container,
    masqueraded: Container,
    seg: Segment,
}

impl ExposedBed {
    fn new() -> Result<Self> {
        let seg = Segment::new(&unique_name("bx"), 3)?;
        let (a, b, laptop) = (&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]);
        a.agent_ok(&["launch"])?;
        b.agent_ok(&["join", "192.168.56.101"])?;
        let routed = Container::new(&unique_name("bxc"), b)?;
        let masqueraded = Container::new(&unique_name("bxc"), b)?;
        b.attach("192.168.1.20/24", &routed)?;
        b.attach("192.168.2.20/24", &masqueraded)?;
        a.agent_ok(&["expose", "192.168.1.1/24"])?;
        a.agent_ok(&["expose", "192.168.2.1/24", "--masquerade"])?;
        for net in ["192.168.1.0/24", "192.168.2.0/24"] {
            laptop.ip(["route", "add", net, "via", "192.168.56.101"])?;
        }
        for (ctr, address) in [(&routed, "192.168.1.20"), (&masqueraded, "192.168.2.20")] {
            for client in [a, laptop] {
                weave_tests::wait_until(
                    Duration::from_secs(10),
                    &format!(
                        "{} reaching {address} through the exposed host",
                        client.name
                    ),
                    || {
                        Ok(client
                            .exec("ping", &["-c", "1", "-W", "1", address])?
                            .status
                            .success())
                    },
                )
                .with_context(|| format!("the exposed testbed, container {}", ctr.name))?;
            }
        }
        Ok(Self {
            routed,
            masqueraded,
            seg,
        })
    }

    fn path(&self, client: Client, subnet: Subnet) -> Path {
        let (server, address) = match subnet {
            Subnet::Routed => (&self.routed, "192.168.1.20"),
            Subnet::Masqueraded => (&self.masqueraded, "192.168.2.20"),
        };
        let client = match client {
            Client::Host => &self.seg.hosts[0],
            Client::Laptop => &self.seg.hosts[2],
        };
        Path {
            server: server.name.clone(),
            client: client.name.clone(),
            address: address.into(),
        }
    }

    /// What entered and left the overlay through A's exposed addresses.
    fn counters(&self) -> Value {
        let a = &self.seg.hosts[0];
        json!({
            "exposed_from_outside": a.counter_packets("exposed_from_outside").ok(),
            "exposed_to_outside": self.seg.hosts[1].counter_packets("exposed_to_outside").ok(),
        })
    }
}

fn now_micros() -> Result<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros())
}

/// Makes `ctr` retry ARP on `ethwe` every 10 ms, so a probe's own timer does not dominate
/// what the attach measurements time.
fn quick_arp(ctr: &Container) -> Result<()> {
    output_in(
        &ctr.name,
        "sysctl",
        &[
            "-q",
            "-w",
            "net.ipv4.neigh.ethwe.retrans_time_ms=10",
            "net.ipv4.neigh.ethwe.mcast_solicit=100",
        ],
    )?;
    Ok(())
}

/// Milliseconds from `attach` returning on host A to the first answer a container on host B
/// gets from the new address. B's ARP retries every 10 ms, so its own timer does not dominate.
fn attach_to_reachable(bed: &WeaveBed) -> Result<Vec<f64>> {
    let exe = xtask_exe()?;
    quick_arp(&bed.c2)?;
    let mut samples = Vec::new();
    for i in 0..REACHABLE_SAMPLES {
        let ctr = Container::new(&unique_name("bwr"), bed.server_host())?;
        let (mut echo, mut lines) = spawn_in(&ctr.name, &exe, &["udp-echo", "7001"])?;
        wait_for_line(&mut lines, "ready")?;
        let ip = format!("192.168.1.{}", 100 + i);
        let target = format!("{ip}:7001");
        let (mut probe, mut answers) = spawn_in(&bed.c2.name, &exe, &["probe", &target])?;
        wait_for_line(&mut answers, "probing")?;
        bed.server_host().attach(&format!("{ip}/24"), &ctr)?;
        let attached = now_micros()?;
        let reply: u128 = answers
            .next()
            .context("the probe ended without an answer")??
            .trim()
            .parse()?;
        probe.wait()?;
        samples.push((reply.saturating_sub(attached)) as f64 / 1e3);
        let _ = echo.kill();
        let _ = echo.wait();
        bed.server_host().agent_ok(&["detach", &ctr.spec()])?;
    }
    Ok(samples)
}

/// Milliseconds from the start of `attach` on host A to the first answer a container on host B
/// gets from the new address, per sample for an explicit address and for one `attach` picks
/// itself (IPAM), interleaved. Timed from the command's start, not its return, since the
/// allocation happens inside it. Returns (explicit, automatic).
fn attach_with_and_without_address(bed: &WeaveBed) -> Result<(Vec<f64>, Vec<f64>)> {
    let exe = xtask_exe()?;
    let (server_host, client_host) = (bed.server_host(), &bed.seg.hosts[1]);
    // A client in the allocation range's default subnet, which the automatic addresses are in.
    let client = Container::new(&unique_name("bwa"), client_host)?;
    client_host.attach("10.47.255.200/12", &client)?;
    quick_arp(&client)?;
    // The lowest free address, which every automatic attach gets again once detached.
    let warm = Container::new(&unique_name("bwa"), server_host)?;
    let out = server_host.agent_ok(&["attach", &warm.spec()])?;
    let auto_ip = out
        .split_whitespace()
        .find_map(|w| w.strip_suffix("/12"))
        .with_context(|| format!("attach printed no address of the range: {out}"))?
        .to_owned();
    server_host.agent_ok(&["detach", &warm.spec()])?;
    let mut explicit = Vec::new();
    let mut automatic = Vec::new();
    for _ in 0..REACHABLE_SAMPLES {
        for auto in [false, true] {
            let ctr = Container::new(&unique_name("bwa"), server_host)?;
            let (mut echo, mut lines) = spawn_in(&ctr.name, &exe, &["udp-echo", "7001"])?;
            wait_for_line(&mut lines, "ready")?;
            // One address each way, reused every sample, and the client's neighbour cache
            // emptied first: neither way starts from an entry the other lacks.
            let ip = if auto {
                auto_ip.clone()
            } else {
                "10.47.255.100".to_owned()
            };
            output_in(&client.name, "ip", &["neigh", "flush", "dev", "ethwe"])?;
            let target = format!("{ip}:7001");
            let (mut probe, mut answers) = spawn_in(&client.name, &exe, &["probe", &target])?;
            wait_for_line(&mut answers, "probing")?;
            let started = now_micros()?;
            let out = if auto {
                server_host.agent_ok(&["attach", &ctr.spec()])?
            } else {
                server_host.agent_ok(&["attach", &format!("{ip}/12"), &ctr.spec()])?
            };
            ensure!(
                out.contains(&format!("{ip}/12")),
                "attach gave {out}, not {ip}"
            );
            let reply: u128 = answers
                .next()
                .context("the probe ended without an answer")??
                .trim()
                .parse()?;
            probe.wait()?;
            let ms = (reply.saturating_sub(started)) as f64 / 1e3;
            if auto {
                automatic.push(ms);
            } else {
                explicit.push(ms);
            }
            let _ = echo.kill();
            let _ = echo.wait();
            server_host.agent_ok(&["detach", &ctr.spec()])?;
        }
    }
    Ok((explicit, automatic))
}

/// Milliseconds until an agent's map holds the endpoints a bench peer publishes over gossip.
fn learn_endpoints(bin: &std::path::Path) -> Result<f64> {
    let seg = Segment::new(&unique_name("bl"), 2)?;
    let agent = &seg.hosts[0];
    agent.agent_ok(&["launch"])?;
    let count = LEARN_ENDPOINTS.to_string();
    let start = Instant::now();
    let (mut peer, mut lines) = spawn_in(
        &seg.hosts[1].name,
        bin.to_str().context("path")?,
        &[
            "bench-peer",
            "--address",
            "192.168.56.102",
            "--seed",
            "192.168.56.101",
            "--endpoints",
            &count,
        ],
    )?;
    wait_for_line(&mut lines, "publishing")?;
    let took = weave_tests::wait_until(Duration::from_secs(60), "learning the endpoints", || {
        Ok(agent.endpoint_counts()?.1 == LEARN_ENDPOINTS)
    });
    let elapsed = start.elapsed();
    let _ = peer.kill();
    let _ = peer.wait();
    took?;
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// Hosts and endpoints per host of the scale run (issue: 8 x 50).
const SCALE_HOSTS: usize = 8;
const SCALE_ENDPOINTS: usize = 50;
/// How long the agents are watched idle for their CPU use.
const IDLE_SECONDS: u64 = 10;

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_mb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// 8 hosts x 50 endpoints: time from the last attach until every host's maps hold every other
/// host's endpoints (then a ping from each host to each other host checks reachability), the
/// agents' resident memory, and their CPU use while idle.
fn scale() -> Result<Value> {
    let seg = Segment::new(&unique_name("sc"), SCALE_HOSTS)?;
    seg.hosts[0].agent_ok(&["launch"])?;
    for host in &seg.hosts[1..] {
        host.agent_ok(&["join", "192.168.56.101"])?;
    }
    let mut containers: Vec<Vec<Container>> = Vec::new();
    for (i, host) in seg.hosts.iter().enumerate() {
        let mut on_host = Vec::new();
        for j in 1..=SCALE_ENDPOINTS {
            let container = Container::new(&format!("{}e{j}", host.name), host)?;
            host.attach(&format!("10.50.{}.{j}/16", i + 1), &container)?;
            on_host.push(container);
        }
        containers.push(on_host);
    }
    let last_attach = Instant::now();
    let remote = ((SCALE_HOSTS - 1) * SCALE_ENDPOINTS) as u64;
    weave_tests::wait_until(Duration::from_secs(60), "the mesh converging", || {
        for host in &seg.hosts {
            if host.endpoint_counts()?.1 != remote {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let converge_ms = last_attach.elapsed().as_secs_f64() * 1e3;
    for (i, from) in containers.iter().enumerate() {
        for j in (0..SCALE_HOSTS).filter(|j| *j != i) {
            // A different endpoint of each host each time.
            let target = format!("10.50.{}.{}", j + 1, (i % SCALE_ENDPOINTS) + 1);
            ensure!(
                from[j % SCALE_ENDPOINTS].ping(&target, 1)?,
                "{target} is not reachable from host {}",
                i + 1
            );
        }
    }

    let pids: Vec<u32> = seg
        .hosts
        .iter()
        .map(|h| h.agent_pid())
        .collect::<Result<_>>()?;
    let rss: Vec<f64> = pids.iter().map(|p| rss_mb(*p)).collect::<Result<_>>()?;
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_>>()?;
    let idle = Instant::now();
    // Measuring idleness is the point here: nothing to wait for but time.
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    let seconds = idle.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| Ok((cpu_ticks(*p)? - b) as f64 / ticks_per_second / seconds * 100.0))
        .collect::<Result<_>>()?;
    drop(containers);
    Ok(json!({
        "hosts": SCALE_HOSTS,
        "endpoints_per_host": SCALE_ENDPOINTS,
        "converge_after_last_attach_ms": converge_ms,
        "rss_mb_max": rss.iter().copied().fold(0.0, f64::max),
        "rss_mb": rss,
        "idle_cpu_percent_max": cpu.iter().copied().fold(0.0, f64::max),
        "idle_cpu_percent": cpu,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_medians_of_per_round_ratios_not_ratios_of_medians() {
        let figures = |rounds: [f64; 3]| FIGURES.map(|f| (f, rounds.to_vec())).into();
        let samples = Samples::from([
            ("weave", figures([10.0, 30.0, 20.0])),
            ("bare", figures([20.0, 20.0, 10.0])),
        ]);
        let table = ratio_table(&samples, &[("weave", "bare")]);
        assert_eq!(table.keys().collect::<Vec<_>>(), ["weave_vs_bare"]);
        // Per round 0.5, 1.5 and 2.0; the medians alone (20 and 20) would say 1.0.
        for f in FIGURES {
            assert_eq!(table["weave_vs_bare"][f], 1.5, "{f}");
        }
    }
}

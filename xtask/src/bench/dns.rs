//! The agent's DNS server from one container, against Debian's dnsmasq answering the same name
//! in the same run (queries per second with a window in flight, p50/p99 latency one at a
//! time), and how long after `attach`/`run` returns a name resolves on another host, and after
//! `detach`/`docker rm -f` returns it is gone there.
//!
//! dnsmasq sits one veth away from the client container, on a link of its own; the agent's
//! server is one veth and one eBPF redirect away: the reference's path is no longer than ours.

use std::{
    io::{BufReader, Lines as LinesOf},
    process::{Child, ChildStdout},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use weave_tests::{Container, Segment, docker, spawn_in, unique_name, wait_for_line};

use super::{median, now_micros, on_cpu, output_in, pinned, xtask_exe};
use crate::{dockerd, progress};

/// What a spawned helper prints, line by line.
type Lines = LinesOf<BufReader<ChildStdout>>;

const ROUNDS: usize = 5;
/// Queries per latency run (one in flight) and per rate run (`WINDOW` in flight).
const LATENCY_QUERIES: &str = "5000";
const RATE_QUERIES: &str = "200000";
const WINDOW: &str = "32";
/// Samples of a name appearing and going, per way of attaching.
const NETNS_SAMPLES: usize = 10;
const DOCKER_SAMPLES: usize = 5;
const AGENT_SERVER: &str = "169.254.53.53:53";
const REFERENCE_SERVER: &str = "10.99.0.1:53";
const NAME: &str = "web.weave.local";
const WEB_IP: &str = "192.168.1.20";

/// Two agents; on B a container named `web`, on A the client container, which also reaches a
/// dnsmasq namespace that answers `web.weave.local` with the same address.
struct DnsBed {
    client: Container,
    seg: Segment,
    dnsmasq: Child,
    _web: Container,
    _reference: Container,
}

impl DnsBed {
    fn new() -> Result<Self> {
        let seg = Segment::new(&unique_name("bd"), 2)?;
        let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
        a.agent_ok(&["launch"])?;
        b.agent_ok(&["join", "192.168.56.101"])?;
        let client = Container::new(&unique_name("bdc"), a)?;
        a.attach("192.168.1.10/24", &client)?;
        let web = Container::new(&unique_name("bdw"), b)?;
        b.agent_ok(&[
            "attach",
            "--dns-name",
            "web",
            &format!("{WEB_IP}/24"),
            &web.spec(),
        ])?;

        let reference = Container::new(&unique_name("bdr"), a)?;
        client.ip([
            "link",
            "add",
            "dref0",
            "type",
            "veth",
            "peer",
            "name",
            "dref1",
            "netns",
            &reference.name,
        ])?;
        client.ip(["addr", "add", "10.99.0.2/30", "dev", "dref0"])?;
        client.ip(["link", "set", "dref0", "up"])?;
        reference.ip(["addr", "add", "10.99.0.1/30", "dev", "dref1"])?;
        reference.ip(["link", "set", "dref1", "up"])?;
        let record = format!("--host-record={NAME},{WEB_IP}");
        let (dnsmasq, mut lines) = spawn_in(
            &reference.name,
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--log-facility=/dev/stdout",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=10.99.0.1",
                &record,
                "--pid-file=",
                "--user=root",
            ],
        )
        .context("starting dnsmasq (`cargo xtask setup` installs dnsmasq-base)")?;
        wait_for_line(&mut lines, "started")?;
        let bed = Self {
            client,
            seg,
            dnsmasq,
            _web: web,
            _reference: reference,
        };
        // Both servers answer the name before anything is timed.
        for server in [AGENT_SERVER, REFERENCE_SERVER] {
            bed.wait_for(server, NAME, true)?;
        }
        Ok(bed)
    }

    /// When `name` first resolved (or was first NXDOMAIN) at `server` from the client, in µs
    /// since the epoch, asking from now on.
    fn wait_for(&self, server: &str, name: &str, present: bool) -> Result<u128> {
        let (child, lines) = self.start_waiting(server, name, present)?;
        finish_waiting(child, lines)
    }

    fn start_waiting(&self, server: &str, name: &str, present: bool) -> Result<(Child, Lines)> {
        let exe = xtask_exe()?;
        let way = if present { "present" } else { "absent" };
        let (child, mut lines) =
            spawn_in(&self.client.name, &exe, &["dns-wait", server, name, way])?;
        wait_for_line(&mut lines, "asking")?;
        Ok((child, lines))
    }

    /// (answers per second, p50 µs, p99 µs, lost) from the client to `server`. The client
    /// runs on CPU 0 and both servers on CPU 1 (see [`pin_servers`]), as the TCP bench pins
    /// its ends: left to the scheduler, a server on the client's core answered in 7 µs and on
    /// the other in 60-80, at random, whichever server it was.
    fn load(&self, server: &str, queries: &str, window: &str) -> Result<(f64, f64, f64, f64)> {
        let exe = xtask_exe()?;
        let (program, args) = on_cpu(
            "0",
            &exe,
            &["dns-load", server, NAME, WEB_IP, queries, window],
        );
        let out = output_in(&self.client.name, program, &args)?;
        let figures: Vec<f64> = out
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("dns-load printed {out:?}"))?;
        ensure!(figures.len() == 4, "dns-load printed {out:?}");
        Ok((figures[0], figures[1], figures[2], figures[3]))
    }

    /// Milliseconds from `attach --dns-name` on B returning to the name resolving on A, and
    /// from `detach` returning to NXDOMAIN on A.
    fn netns_names(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let b = &self.seg.hosts[1];
        let (mut appear, mut go) = (Vec::new(), Vec::new());
        for i in 0..NETNS_SAMPLES {
            let ctr = Container::new(&unique_name("bdn"), b)?;
            let short = format!("n{i}");
            let name = format!("{short}.weave.local");
            let waiting = self.start_waiting(AGENT_SERVER, &name, true)?;
            b.agent_ok(&["attach", "--dns-name", &short, &ctr.spec()])?;
            appear.push(since(now_micros()?, finish_waiting(waiting.0, waiting.1)?));
            let waiting = self.start_waiting(AGENT_SERVER, &name, false)?;
            b.agent_ok(&["detach", &ctr.spec()])?;
            go.push(since(now_micros()?, finish_waiting(waiting.0, waiting.1)?));
        }
        Ok((appear, go))
    }

    /// The same for `run --name` and `docker rm -f`.
    fn docker_names(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let _engine = dockerd::ensure()?;
        docker::ensure_image()?;
        let b = &self.seg.hosts[1];
        let (mut appear, mut go) = (Vec::new(), Vec::new());
        for _ in 0..DOCKER_SAMPLES {
            let container = docker::Named::new(unique_name("bdd"));
            let name = format!("{}.weave.local", container.0);
            let waiting = self.start_waiting(AGENT_SERVER, &name, true)?;
            b.agent_ok(&["run", "--name", &container.0, docker::IMAGE, "sleep", "600"])?;
            appear.push(since(now_micros()?, finish_waiting(waiting.0, waiting.1)?));
            let waiting = self.start_waiting(AGENT_SERVER, &name, false)?;
            docker::docker_ok(&["rm", "-f", &container.0])?;
            go.push(since(now_micros()?, finish_waiting(waiting.0, waiting.1)?));
        }
        Ok((appear, go))
    }
}

/// Both servers on CPU 1, every thread of them (where there are two cores): the agent of the
/// client's host and dnsmasq.
fn pin_servers(bed: &DnsBed) -> Result<()> {
    if !pinned() {
        return Ok(());
    }
    let agent = bed.seg.hosts[0].agent_pid()?.to_string();
    let dnsmasq = bed.dnsmasq.id().to_string();
    for pid in [agent, dnsmasq] {
        weave_tests::run_ok("taskset", ["-a", "-p", "-c", "1", &pid])
            .with_context(|| format!("pinning {pid} to CPU 1"))?;
    }
    Ok(())
}

impl Drop for DnsBed {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
    }
}

fn finish_waiting(mut child: Child, mut lines: Lines) -> Result<u128> {
    let line = lines.next().context("dns-wait ended without an answer");
    let status = child.wait()?;
    let at = line??;
    ensure!(status.success(), "dns-wait failed: {status}");
    Ok(at.trim().parse()?)
}

/// Milliseconds from `from` to `at` (both µs since the epoch); 0 when the answer came first,
/// which a command's return racing its own effect allows.
fn since(from: u128, at: u128) -> f64 {
    at.saturating_sub(from) as f64 / 1e3
}

/// Runs the DNS part of the bench; prints its figures and returns them.
pub fn run() -> Result<Value> {
    let step = progress::step("bench: dns, building the testbed");
    let bed = DnsBed::new()?;
    pin_servers(&bed)?;
    step.finish();
    let mut rows: Vec<[f64; 6]> = Vec::new();
    for round in 1..=ROUNDS {
        let step = progress::step(format!(
            "bench dns round {round}/{ROUNDS}: agent and dnsmasq"
        ));
        let (_, ours_p50, ours_p99, _) = bed.load(AGENT_SERVER, LATENCY_QUERIES, "1")?;
        let (_, ref_p50, ref_p99, _) = bed.load(REFERENCE_SERVER, LATENCY_QUERIES, "1")?;
        let (ours_qps, ..) = bed.load(AGENT_SERVER, RATE_QUERIES, WINDOW)?;
        let (ref_qps, ..) = bed.load(REFERENCE_SERVER, RATE_QUERIES, WINDOW)?;
        rows.push([ours_qps, ours_p50, ours_p99, ref_qps, ref_p50, ref_p99]);
        step.finish();
    }
    let column = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<_>>();
    let ratio = |ours: usize, reference: usize| {
        median(
            &rows
                .iter()
                .map(|r| r[ours] / r[reference])
                .collect::<Vec<_>>(),
        )
    };

    let step = progress::step(format!(
        "bench dns: names appearing and going ({NETNS_SAMPLES} netns, {DOCKER_SAMPLES} Docker)"
    ));
    let (netns_appear, netns_go) = bed.netns_names()?;
    let (docker_appear, docker_go) = bed.docker_names()?;
    step.finish();
    drop(bed);

    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let report = json!({
        "agent": {"qps": median(&column(0)), "p50_us": median(&column(1)), "p99_us": median(&column(2))},
        "dnsmasq": {"qps": median(&column(3)), "p50_us": median(&column(4)), "p99_us": median(&column(5))},
        "agent_vs_dnsmasq": {"qps": ratio(0, 3), "p50_us": ratio(1, 4), "p99_us": ratio(2, 5)},
        "window": WINDOW,
        "rounds": rows,
        "name_appears_after_attach_ms": netns_appear,
        "name_goes_after_detach_ms": netns_go,
        "name_appears_after_docker_run_ms": docker_appear,
        "name_goes_after_docker_rm_ms": docker_go,
        "name_appears_ms_max": max(&netns_appear).max(max(&docker_appear)),
        "name_goes_ms_max": max(&netns_go).max(max(&docker_go)),
    });
    println!(
        "dns from one container: agent {:.0} q/s, p50 {:.0} µs, p99 {:.0} µs; dnsmasq {:.0} q/s, \
         p50 {:.0} µs, p99 {:.0} µs (agent/dnsmasq: q/s {:.2}x, p50 {:.2}x, p99 {:.2}x; goal \
         q/s >= 1, latencies <= 1)",
        report["agent"]["qps"].as_f64().unwrap_or(f64::NAN),
        report["agent"]["p50_us"].as_f64().unwrap_or(f64::NAN),
        report["agent"]["p99_us"].as_f64().unwrap_or(f64::NAN),
        report["dnsmasq"]["qps"].as_f64().unwrap_or(f64::NAN),
        report["dnsmasq"]["p50_us"].as_f64().unwrap_or(f64::NAN),
        report["dnsmasq"]["p99_us"].as_f64().unwrap_or(f64::NAN),
        ratio(0, 3),
        ratio(1, 4),
        ratio(2, 5),
    );
    println!(
        "dns names on the other host: appear at most {:.0} ms after attach/run returns, go at \
         most {:.0} ms after detach/docker rm -f returns (goal <= 1000)",
        report["name_appears_ms_max"].as_f64().unwrap_or(f64::NAN),
        report["name_goes_ms_max"].as_f64().unwrap_or(f64::NAN),
    );
    Ok(report)
}

//! Test hosts made of network namespaces, driving the real `weave-agent` binary through
//! `ip netns exec` exactly as a user would.
//!
//! Everything a [`Host`] creates (its namespace, links, agent state and bpffs pins) is removed
//! when it is dropped, also when a test fails half-way.

use std::{
    ffi::OsStr,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Lines},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub mod capture;
pub mod cni;
pub mod crafted;
pub mod docker;
pub mod frames;
pub mod podman;
pub mod programs;
pub mod walkthrough;

use anyhow::{Context as _, Result, bail, ensure};

/// Where the agent keeps per-namespace state and pins (documented in the README).
pub const STATE_ROOT: &str = "/run/weave-agent";
pub const PIN_ROOT: &str = "/sys/fs/bpf/weave-agent";
/// Where agents keep what outlives a reboot: the address allocations.
pub const DATA_ROOT: &str = "/var/lib/weave-agent";

/// The agent binary under test: `WEAVE_AGENT_BIN`, else `weave-agent` next to the test's
/// own target directory (target/debug/deps/<test> -> target/debug/weave-agent).
pub fn agent_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WEAVE_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    profile_dir().join("weave-agent")
}

/// target/<profile>, found from the running test binary (target/<profile>/deps/<test>).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// Fails the test with a clear message unless we can make namespaces.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "integration tests create network namespaces and load eBPF: run them as root \
         (`cargo xtask test` does)"
    );
    let bin = agent_bin();
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (`cargo xtask build` or `cargo xtask test`)",
        bin.display()
    );
}

/// A namespace name unique to this process and call, short enough for tools' limits.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("wt{}{}{tag}", std::process::id() % 100_000, n)
}

/// Runs a command, returning its output whatever the exit status.
pub fn run<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd.output()
        .with_context(|| format!("running {program} (is it installed? `cargo xtask setup`)"))
}

/// Runs a command and fails unless it exits 0.
pub fn run_ok<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = run(program, &args)?;
    ensure!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS ARGS...`, which must succeed; returns stdout.
fn ip_in<I, S>(ns: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), ns.into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
    run_ok("ip", all)
}

/// Loads the nftables ruleset `rules` in namespace `ns` (`nft -f`); fails with nft's
/// complaint if it refuses them.
fn load_nft_in(ns: &str, rules: &str) -> Result<()> {
    let file = std::env::temp_dir().join(format!("{ns}-{}.nft", std::process::id()));
    std::fs::write(&file, rules).with_context(|| format!("writing {}", file.display()))?;
    let loaded = exec_in(ns, "nft", &["-f", file.to_str().context("temp path")?]);
    let _ = std::fs::remove_file(&file);
    let loaded = loaded?;
    ensure!(
        loaded.status.success(),
        "nft refused the rules in {ns}: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    Ok(())
}

/// Runs a program inside namespace `ns` (`ip netns exec`), whatever its exit status.
fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<Output> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Creates network namespace `name` with loopback up. `ip netns add` can fail spuriously
/// right after other namespaces were deleted ("Bind /proc/self/ns/net ... failed"), so retry.
fn add_netns(name: &str) -> Result<()> {
    let mut last = String::new();
    for _ in 0..5 {
        let out = run("ip", ["netns", "add", name])?;
        if out.status.success() {
            return run_ok("ip", ["-n", name, "link", "set", "lo", "up"]).map(drop);
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if last.contains("File exists") {
            break;
        }
        // The failed attempt may have left the mount point behind.
        let _ = run("ip", ["netns", "del", name]);
    }
    bail!("ip netns add {name} failed: {last}")
}

/// A network namespace standing in for a host, with its own agent.
pub struct Host {
    pub name: String,
    /// Print each command as a user would type it, with its output (the demo).
    pub verbose: bool,
    /// The agent binary this host runs, when not [`agent_bin`] (a reference build the
    /// benchmark compares with).
    agent: Option<PathBuf>,
}

impl Host {
    /// Creates the host's namespace with loopback up.
    pub fn new(name: &str) -> Result<Self> {
        add_netns(name)?;
        Ok(Self {
            name: name.to_owned(),
            verbose: false,
            agent: None,
        })
    }

    /// Runs `bin` as this host's agent from now on, instead of [`agent_bin`].
    pub fn use_agent(&mut self, bin: PathBuf) {
        self.agent = Some(bin);
    }

    /// Loads an nftables ruleset inside the host (a firewall in the switch, say).
    pub fn load_nft(&self, rules: &str) -> Result<()> {
        load_nft_in(&self.name, rules)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ip_in(&self.name, args)
    }

    /// Runs a program inside the host (`ip netns exec`), whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = exec_in(&self.name, program, args)?;
        if self.verbose {
            self.show(program, args, &out);
        }
        Ok(out)
    }

    /// Runs `weave-agent ARGS...` inside the host, whatever its exit status.
    pub fn agent(&self, args: &[&str]) -> Result<Output> {
        let out = self.agent_quiet(args)?;
        if self.verbose {
            self.show("weave-agent", args, &out);
        }
        Ok(out)
    }

    /// Like [`Host::agent`], never shown in the transcript (for polling).
    fn agent_quiet(&self, args: &[&str]) -> Result<Output> {
        self.agent_via(&[], args)
    }

    /// `weave-agent ARGS...` inside the host behind a wrapper command (`env VAR=...`,
    /// `setpriv ...`), whatever its exit status; never shown in the transcript.
    pub fn agent_via(&self, wrapper: &[&str], args: &[&str]) -> Result<Output> {
        let bin = self.agent.clone().unwrap_or_else(agent_bin);
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(wrapper);
        all.push(bin.to_str().context("agent path is not UTF-8")?);
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `weave-agent ARGS...` and fails unless it exits 0; returns stdout.
    pub fn agent_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.agent(args)?;
        ensure!(
            out.status.success(),
            "`weave-agent {}` in {} failed ({}): {}{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `weave-agent status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.agent_quiet(&["status", "--json"])?;
        ensure!(
            out.status.success(),
            "status in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).with_context(|| format!("status --json gave: {text}"))
    }

    /// Packets counted so far in counter `name`, as `status` reports it.
    pub fn counter_packets(&self, name: &str) -> Result<u64> {
        let status = self.status()?;
        status["counters"][name]["packets"]
            .as_u64()
            .with_context(|| format!("no counter {name} in status: {status}"))
    }

    pub fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.name)
    }

    /// Where the agent keeps what survives a reboot (the address allocations).
    pub fn data_dir(&self) -> PathBuf {
        Path::new(DATA_ROOT).join(&self.name)
    }

    pub fn pin_dir(&self) -> PathBuf {
        Path::new(PIN_ROOT).join(&self.name)
    }

    fn show(&self, program: &str, args: &[&str], out: &Output) {
        show(&self.name, program, args, out);
    }
}

/// Prints a command as a user would type it at `prompt`, then its output.
pub(crate) fn show(prompt: &str, program: &str, args: &[&str], out: &Output) {
    let mut text = format!("{prompt}$ {program} {}\n", args.join(" "));
    for stream in [&out.stdout, &out.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            let _ = writeln!(text, "    {line}");
        }
    }
    if !out.status.success() {
        let _ = writeln!(text, "    ({})", out.status);
    }
    print!("{text}");
}

impl Drop for Host {
    fn drop(&mut self) {
        // The agent's own reset first (stops it, detaches its programs, removes its state),
        // then whatever a crashed agent or test left behind.
        let _ = run(
            "ip",
            [
                OsStr::new("netns"),
                OsStr::new("exec"),
                OsStr::new(&self.name),
                agent_bin().as_os_str(),
                OsStr::new("reset"),
            ],
        );
        let _ = std::fs::remove_dir_all(self.pin_dir());
        let _ = std::fs::remove_dir_all(self.state_dir());
        let _ = std::fs::remove_dir_all(self.data_dir());
        let _ = std::fs::remove_dir_all(etc_netns(&self.name));
        let _ = run("ip", ["netns", "del", &self.name]);
    }
}

/// Where `ip netns exec NAME` finds the files it binds over /etc (resolv.conf).
pub fn etc_netns(name: &str) -> PathBuf {
    Path::new("/etc/netns").join(name)
}

/// A container: a network namespace of its own that the agent gives an `ethwe`.
pub struct Container {
    pub name: String,
    /// Where it runs, for the transcript.
    pub host: String,
    pub verbose: bool,
}

impl Container {
    pub fn new(name: &str, host: &Host) -> Result<Self> {
        add_netns(name)?;
        Ok(Self {
            name: name.to_owned(),
            host: host.name.clone(),
            verbose: host.verbose,
        })
    }

    /// The CONTAINER argument naming it for `weave-agent attach`.
    pub fn spec(&self) -> String {
        format!("netns:{}", self.name)
    }

    /// Runs a program inside the container, whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        let out = run("ip", &all)?;
        if self.verbose {
            show(
                &format!("[{} on {}]", self.name, self.host),
                program,
                args,
                &out,
            );
        }
        Ok(out)
    }

    /// Loads an nftables ruleset inside the container (NAT for a router container, say).
    pub fn load_nft(&self, rules: &str) -> Result<()> {
        load_nft_in(&self.name, rules)
    }

    /// True if `count` pings to `ip` all get an answer.
    pub fn ping(&self, ip: &str, count: u32) -> Result<bool> {
        let count = count.to_string();
        let out = self.exec("ping", &["-c", &count, "-i", "0.2", "-W", "1", ip])?;
        Ok(out.status.success())
    }

    /// `ip -n NAME ARGS...`
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        ip_in(&self.name, args)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(etc_netns(&self.name));
        let _ = run("ip", ["netns", "del", &self.name]);
    }
}

/// Starts `program` in namespace `ns` with stdout piped (stderr discarded); returns the child
/// and its stdout lines.
pub fn spawn_in(
    ns: &str,
    program: &str,
    args: &[&str],
) -> Result<(Child, Lines<BufReader<ChildStdout>>)> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program} in {ns}"))?;
    let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    Ok((child, lines))
}

/// Reads lines until one contains `marker` (a server saying it is ready).
pub fn wait_for_line(lines: &mut Lines<BufReader<ChildStdout>>, marker: &str) -> Result<()> {
    for line in lines {
        if line?.contains(marker) {
            return Ok(());
        }
    }
    bail!("the program exited before saying {marker:?}")
}

/// Polls `check` until it returns true or `within` passes; returns how long it took.
/// A readiness check, not a sleep: it returns as soon as the condition holds.
pub fn wait_until(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if check()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("{what}: not done within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Host {
    /// `weave-agent attach CIDR netns:CONTAINER`, which must succeed.
    pub fn attach(&self, cidr: &str, container: &Container) -> Result<String> {
        self.agent_ok(&["attach", cidr, &container.spec()])
    }

    /// A new container `name` on this host with `cidr` attached.
    pub fn container(&self, name: &str, cidr: &str) -> Result<Container> {
        let container = Container::new(name, self)?;
        self.attach(cidr, &container)?;
        Ok(container)
    }

    /// Entries in the kernel endpoint map (local, remote), as `status` reads them.
    pub fn endpoint_counts(&self) -> Result<(u64, u64)> {
        let status = self.status()?;
        let get = |kind: &str| {
            status["endpoints"][kind]
                .as_u64()
                .with_context(|| format!("no endpoints.{kind} in status: {status}"))
        };
        Ok((get("local")?, get("remote")?))
    }

    /// The addresses `ipam --json` says this host handed out.
    pub fn allocated(&self) -> Result<std::collections::BTreeSet<String>> {
        let ipam: serde_json::Value = serde_json::from_str(&self.agent_ok(&["ipam", "--json"])?)?;
        Ok(ipam["allocations"]
            .as_array()
            .context("ipam --json has no allocations")?
            .iter()
            .filter_map(|a| a["address"].as_str().map(str::to_owned))
            .collect())
    }

    /// Waits until this host's maps hold `remote` remote endpoints.
    pub fn wait_for_remote(&self, remote: u64) -> Result<Duration> {
        wait_until(
            Duration::from_secs(10),
            &format!("{} learning {remote} remote endpoints", self.name),
            || Ok(self.endpoint_counts()?.1 == remote),
        )
    }

    /// The entry for the peer at `address` in what a listing command prints as JSON (`peers
    /// --json`, `status connections --json`); an error if it is not listed.
    pub fn listed_peer(&self, command: &[&str], address: &str) -> Result<serde_json::Value> {
        self.find_listed_peer(command, address)?
            .with_context(|| format!("{address} is not listed by {command:?}"))
    }

    /// [`Host::listed_peer`], or None while the peer is not listed (not learned yet).
    pub fn find_listed_peer(
        &self,
        command: &[&str],
        address: &str,
    ) -> Result<Option<serde_json::Value>> {
        let list: serde_json::Value = serde_json::from_str(&self.agent_ok(command)?)?;
        Ok(list
            .as_array()
            .with_context(|| format!("{command:?} printed no list: {list}"))?
            .iter()
            .find(|p| p["address"] == address)
            .cloned())
    }

    /// This host's peer name (its underlay MAC), from `status`.
    pub fn agent_name(&self) -> Result<String> {
        let status = self.status()?;
        Ok(status["peer_name"]
            .as_str()
            .context("status has no peer_name")?
            .to_owned())
    }

    /// Pid of this host's agent, from `status`.
    pub fn agent_pid(&self) -> Result<u32> {
        let status = self.status()?;
        let pid = status["pid"].as_u64().context("status has no pid")?;
        Ok(u32::try_from(pid)?)
    }
}

/// A "physical" segment joining several hosts: a switch namespace with a bridge and one veth
/// per host (`eth0` inside the host, address 192.168.56.(100+i)/24). The bridge is test
/// scaffolding standing for the underlay switch; the hosts themselves have none.
pub struct Segment {
    pub hosts: Vec<Host>,
    switch: Host,
}

impl Segment {
    pub fn new(prefix: &str, count: usize) -> Result<Self> {
        let switch = Host::new(&format!("{prefix}sw"))?;
        switch.ip(["link", "add", "br0", "type", "bridge"])?;
        switch.ip(["link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        for i in 1..=count {
            let host = Host::new(&format!("{prefix}h{i}"))?;
            plug(&switch, &host, i, None)?;
            hosts.push(host);
        }
        Ok(Self { hosts, switch })
    }

    /// `count` hosts with agents running: host 1 launched, the others joined to it.
    pub fn mesh(prefix: &str, count: usize) -> Result<Self> {
        let seg = Self::new(prefix, count)?;
        seg.hosts[0].agent_ok(&["launch"])?;
        for host in &seg.hosts[1..] {
            host.agent_ok(&["join", "192.168.56.101"])?;
        }
        Ok(seg)
    }

    /// Host `index` (from 0) "reboots": its agent dies with kill -9, its namespace goes (taking
    /// its links and containers' `ethwe` with it), and so does what a reboot wipes (the state
    /// in /run and the pins in bpffs). It comes back with the same NIC MAC and address and no
    /// agent running.
    pub fn reboot(&self, index: usize) -> Result<()> {
        let host = &self.hosts[index];
        let mac = host.ip(["-j", "link", "show", "eth0"])?;
        let mac: serde_json::Value = serde_json::from_str(&mac)?;
        let mac = mac[0]["address"]
            .as_str()
            .context("eth0 has no MAC")?
            .to_owned();
        if let Ok(pid) = host.agent_pid() {
            run_ok("kill", ["-9", &pid.to_string()])?;
        }
        run_ok("ip", ["netns", "del", &host.name])?;
        let _ = std::fs::remove_dir_all(host.state_dir());
        let _ = std::fs::remove_dir_all(host.pin_dir());
        // The switch port goes once the namespace is really gone.
        let port = format!("p{}", index + 1);
        wait_until(
            Duration::from_secs(10),
            "the old host's links to go",
            || {
                Ok(
                    !run("ip", ["-n", &self.switch.name, "link", "show", &port])?
                        .status
                        .success(),
                )
            },
        )?;
        add_netns(&host.name)?;
        plug(&self.switch, host, index + 1, Some(&mac))
    }

    /// One container per host (host i gets `cidr(i)`), returned once every host's maps hold
    /// all the others' endpoints.
    pub fn attach_one_each(
        &self,
        prefix: &str,
        cidr: impl Fn(usize) -> String,
    ) -> Result<Vec<Container>> {
        let mut containers = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let container = Container::new(&format!("{prefix}c{}", i + 1), host)?;
            host.attach(&cidr(i), &container)?;
            containers.push(container);
        }
        for host in &self.hosts {
            host.wait_for_remote(self.hosts.len() as u64 - 1)?;
        }
        Ok(containers)
    }

    /// A firewall on the switch drops every frame between hosts `i` and `j` (numbered from 1,
    /// as the switch ports `p<i>`), both ways: nftables on its bridge, in a table of its own
    /// (`bridge cut`) that [`Segment::lift_cut`] removes.
    pub fn cut(&self, i: usize, j: usize) -> Result<()> {
        self.switch.load_nft(&format!(
            "table bridge cut {{
                chain forward {{
                    type filter hook forward priority 0;
                    iifname \"p{i}\" oifname \"p{j}\" drop
                    iifname \"p{j}\" oifname \"p{i}\" drop
                }}
            }}"
        ))
    }

    /// Removes the firewall [`Segment::cut`] made.
    pub fn lift_cut(&self) -> Result<()> {
        let out = self
            .switch
            .exec("nft", &["delete", "table", "bridge", "cut"])?;
        ensure!(
            out.status.success(),
            "lifting the firewall on the switch failed"
        );
        Ok(())
    }

    /// Name of the switch namespace (to cut or inspect the wire).
    pub fn switch(&self) -> &Host {
        &self.switch
    }
}

/// Connects `host` to the switch as port p`i`: `eth0` with 192.168.56.(100+i)/24.
fn plug(switch: &Host, host: &Host, i: usize, mac: Option<&str>) -> Result<()> {
    let port = format!("p{i}");
    switch.ip([
        "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
    ])?;
    switch.ip(["link", "set", &port, "master", "br0", "up"])?;
    if let Some(mac) = mac {
        host.ip(["link", "set", "eth0", "address", mac])?;
    }
    host.ip([
        "addr",
        "add",
        &format!("192.168.56.{}/24", 100 + i),
        "dev",
        "eth0",
    ])?;
    host.ip(["link", "set", "eth0", "up"])?;
    Ok(())
}

/// Two hosts on one underlay segment: a veth pair named `eth0` on both ends, addresses
/// 192.168.56.101/24 and .102/24 (the Weave walkthrough's hosts).
pub fn two_hosts(a: &str, b: &str) -> Result<(Host, Host)> {
    let host_a = Host::new(a)?;
    let host_b = Host::new(b)?;
    host_a.ip([
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b,
    ])?;
    for (host, addr) in [
        (&host_a, "192.168.56.101/24"),
        (&host_b, "192.168.56.102/24"),
    ] {
        host.ip(["addr", "add", addr, "dev", "eth0"])?;
        host.ip(["link", "set", "eth0", "up"])?;
    }
    Ok((host_a, host_b))
}

/// XDP program attached to `dev` in `host`, as the kernel reports it over netlink
/// (`ip -d -j link`): (program name, attach mode; 1 = driver, 2 = generic/skb).
pub fn xdp_attachment(host: &Host, dev: &str) -> Result<Option<(String, u64)>> {
    let text = host.ip(["-d", "-j", "link", "show", "dev", dev])?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let xdp = &json[0]["xdp"];
    if xdp.is_null() {
        return Ok(None);
    }
    let name = xdp["prog"]["name"].as_str().unwrap_or_default().to_owned();
    let mode = xdp["mode"].as_u64().unwrap_or_default();
    Ok(Some((name, mode)))
}

/// Bytes of TCP bulk per transfer in the tests that check data arrives intact.
pub const BULK: usize = 30_000_000;

/// Prints "ready", takes one connection on argv[1]:5201 and prints how many bytes came and
/// their SHA-256.
const SINK: &str = r#"
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(1); s.settimeout(30)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(30)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)
"#;

/// Sends argv[2] pseudo-random bytes (or argv[3] repeated) to argv[1]:5201 in large writes (so
/// the sender's TCP builds super-packets) and prints their count and SHA-256.
const SOURCE: &str = r#"
import hashlib, random, socket, sys
n = int(sys.argv[2])
if len(sys.argv) > 3:
    data = (sys.argv[3].encode() * (n // len(sys.argv[3]) + 1))[:n]
else:
    data = random.Random(21).randbytes(n)
c = socket.create_connection((sys.argv[1], 5201), timeout=30)
c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"#;

/// Sends `bytes` bytes of TCP from `from` to `to_ip`, received by a sink in namespace
/// `sink_ns` listening on `sink_ip`; fails unless every byte arrived unchanged.
pub fn bulk(
    from: &Container,
    to_ip: &str,
    sink_ns: &str,
    sink_ip: &str,
    bytes: usize,
) -> Result<()> {
    bulk_of(from, to_ip, sink_ns, sink_ip, bytes, None)
}

/// [`bulk`] of `marker` repeated, for a capture to look for.
pub fn bulk_of(
    from: &Container,
    to_ip: &str,
    sink_ns: &str,
    sink_ip: &str,
    bytes: usize,
    marker: Option<&str>,
) -> Result<()> {
    bulk_with(
        |args| from.exec("python3", args),
        to_ip,
        sink_ns,
        sink_ip,
        bytes,
        marker,
    )
}

/// [`bulk`] from any namespace `from_ns` (a host, or a machine that runs no agent).
pub fn bulk_from(
    from_ns: &str,
    to_ip: &str,
    sink_ns: &str,
    sink_ip: &str,
    bytes: usize,
) -> Result<()> {
    bulk_with(
        |args| exec_in(from_ns, "python3", args),
        to_ip,
        sink_ns,
        sink_ip,
        bytes,
        None,
    )
}

fn bulk_with(
    send: impl FnOnce(&[&str]) -> Result<Output>,
    to_ip: &str,
    sink_ns: &str,
    sink_ip: &str,
    bytes: usize,
    marker: Option<&str>,
) -> Result<()> {
    let (mut sink, mut lines) = spawn_in(sink_ns, "python3", &["-c", SINK, sink_ip])?;
    wait_for_line(&mut lines, "ready")?;
    let bytes = bytes.to_string();
    let mut args = vec!["-c", SOURCE, to_ip, &bytes];
    args.extend(marker);
    let sent = send(&args)?;
    let received = lines.next().transpose()?.unwrap_or_default();
    let _ = sink.kill();
    let _ = sink.wait();
    let sent_text = String::from_utf8_lossy(&sent.stdout);
    ensure!(
        sent.status.success(),
        "sending failed: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    ensure!(
        sent_text.trim() == received.trim(),
        "sent {:?}, received {:?}",
        sent_text.trim(),
        received.trim()
    );
    Ok(())
}

/// 100 pings a second for `seconds`, from `from` to `to`, in the background.
pub fn start_pinging(from: &Container, to: &str, seconds: u32) -> Result<Child> {
    let count = (seconds * 100).to_string();
    Command::new("ip")
        .args(["netns", "exec", &from.name, "ping", "-i", "0.01", "-W", "1"])
        .args(["-c", &count, to])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ping")
}

/// (transmitted, received) from ping's summary.
pub fn ping_result(child: Child) -> Result<(u64, u64)> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in: {text}"))?;
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    Ok((numbers[0], numbers[1]))
}

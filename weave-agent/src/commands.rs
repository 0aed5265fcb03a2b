//! What each subcommand does on the CLI side.

use std::{
    fs::{self, OpenOptions},
    io::{ErrorKind, Read as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Command as Process, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    addressing::Cidr,
    api::{self, Request, Response, Unreachable},
    bpffs,
    cli::{Cli, Command, Encap, LaunchArgs, OutputArgs, PolicyCommand},
    container, daemon, datapath, gossip,
    location::Location,
    netlink,
    policy::{Action, Subnet},
    run_args::RunSpec,
};

/// How long `stop` waits for the daemon to exit after it agreed to.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptor number at which a launched daemon finds its readiness pipe.
const READY_FD: i32 = 3;

pub fn run(cli: Cli) -> Result<()> {
    let loc = Location::resolve(cli.state_dir.clone())?;
    let global = cli_state_dir_args(&cli);
    match cli.command {
        Command::Launch(args) if args.foreground => daemon::run(&args, &loc),
        Command::Launch(args) => launch(&global, &args, &loc),
        Command::Status(out) => status(&loc, out),
        Command::Stop => {
            let pid = stop(&loc)?;
            println!("weave-agent (pid {pid}) stopped; the data path stays attached");
            Ok(())
        }
        Command::Reset => {
            // Pins live in the host's mount namespace; enter it while still single-threaded.
            bpffs::enter_host_mount_namespace()?;
            reset(&loc)
        }
        Command::Join { addr, mut launch } => join(&global, &addr, &mut launch, &loc),
        Command::Run {
            cidr,
            docker_args,
            mtu,
        } => run_container(&loc, &cidr, &docker_args, mtu),
        Command::Attach {
            cidr,
            container,
            mtu,
        } => attach(&loc, &cidr, &container, mtu),
        Command::Detach { container } => detach(&loc, &container),
        Command::Ps(out) => ps(&loc, out),
        Command::BenchPeer {
            address,
            seed,
            endpoints,
        } => gossip::bench_peer(address, &seed, endpoints),
        Command::Peers(out) => peers(&loc, out),
        Command::Policy(command) => policy(&loc, command),
    }
}

fn policy(loc: &Location, command: PolicyCommand) -> Result<()> {
    let allow = matches!(command, PolicyCommand::Allow(_));
    let (request, out) = match command {
        PolicyCommand::Allow(pair) | PolicyCommand::Deny(pair) => {
            // Checked here too, so a typo is reported before anything is sent.
            let a: Subnet = pair.a.parse()?;
            let b: Subnet = pair.b.parse()?;
            let action = if allow { Action::Allow } else { Action::Deny };
            let request = Request::PolicySet {
                action,
                a: a.to_string(),
                b: b.to_string(),
            };
            (request, None)
        }
        PolicyCommand::List(out) => (Request::PolicyList, Some(out)),
    };
    let Response::Rules { rules } = api::call_agent(&loc.socket(), &request)? else {
        bail!("the agent answered the policy request with something else");
    };
    match out {
        Some(out) if out.json => println!("{}", serde_json::to_string_pretty(&rules)?),
        Some(_) => {
            for rule in &rules {
                println!("{} {} {}", rule.a, rule.b, rule.action);
            }
        }
        // allow/deny: silent on success, like `ip route add`.
        None => {}
    }
    Ok(())
}

/// Tells the running agent to connect to `addr`, or launches one that does.
fn join(global: &[String], addr: &str, launch_args: &mut LaunchArgs, loc: &Location) -> Result<()> {
    gossip::peer_addr(addr)?;
    match api::call(
        &loc.socket(),
        &Request::Join {
            peer: addr.to_owned(),
        },
    ) {
        Ok(Response::Joined { address }) => {
            println!("joining the mesh through {address}");
            Ok(())
        }
        Ok(Response::Error { message }) => bail!("the agent refused: {message}"),
        Ok(other) => bail!("the agent answered join with {other:?}"),
        Err(Unreachable::NoAgent) => {
            launch_args.peers.push(addr.to_owned());
            launch(global, launch_args, loc)
        }
        Err(Unreachable::Other(err)) => Err(err),
    }
}

fn attach(loc: &Location, cidr: &str, container_arg: &str, mtu: Option<u32>) -> Result<()> {
    // Refuse bad input before anything is changed anywhere.
    let parsed: Cidr = cidr.parse()?;
    let netns = container::netns_path(container_arg)?;
    let request = Request::Attach {
        cidr: parsed.to_string(),
        container: container_arg.to_owned(),
        netns,
        mtu,
    };
    let Response::Attached { endpoint } = api::call_agent(&loc.socket(), &request)? else {
        bail!("the agent answered attach with something else");
    };
    println!(
        "{} {} {} (ethwe, MTU {})",
        endpoint.container, endpoint.mac, endpoint.cidr, endpoint.mtu
    );
    Ok(())
}

fn detach(loc: &Location, container_arg: &str) -> Result<()> {
    let request = Request::Detach {
        container: container_arg.to_owned(),
        netns: container::netns_path(container_arg).ok().flatten(),
    };
    let Response::Detached { endpoints } = api::call_agent(&loc.socket(), &request)? else {
        bail!("the agent answered detach with something else");
    };
    for ep in endpoints {
        println!("{} {} {} detached", ep.container, ep.mac, ep.cidr);
    }
    Ok(())
}

fn ps(loc: &Location, out: OutputArgs) -> Result<()> {
    let Response::Endpoints { endpoints } = api::call_agent(&loc.socket(), &Request::Ps)? else {
        bail!("the agent answered ps with something else");
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&endpoints)?);
        return Ok(());
    }
    for ep in endpoints {
        println!("{} {} {}", ep.container, ep.mac, ep.cidr);
    }
    Ok(())
}

fn peers(loc: &Location, out: OutputArgs) -> Result<()> {
    let Response::Peers { peers } = api::call_agent(&loc.socket(), &Request::Peers)? else {
        bail!("the agent answered peers with something else");
    };
    if out.json {
        let list: Vec<_> = peers
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "address": p.address, "state": p.state}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for p in peers {
        let name = if p.name.is_empty() {
            "-".to_owned()
        } else {
            format!("{}({})", p.name, p.nickname)
        };
        println!("{name} {} {}", p.address, p.state);
    }
    Ok(())
}

/// `run`: the full container id alone on stdout, so `id=$(weave-agent run ...)` works.
fn run_container(
    loc: &Location,
    cidr: &str,
    docker_args: &[String],
    mtu: Option<u32>,
) -> Result<()> {
    // Refuse bad input before Docker creates anything.
    let parsed: Cidr = cidr.parse()?;
    let spec = RunSpec::parse(docker_args)?;
    let request = Request::Run {
        cidr: parsed.to_string(),
        spec: Box::new(spec),
        mtu,
    };
    let Response::Ran { id } = api::call_agent(&loc.socket(), &request)? else {
        bail!("the agent answered run with something else");
    };
    println!("{id}");
    Ok(())
}

/// Global flags the daemon must see exactly as this invocation did.
fn cli_state_dir_args(cli: &Cli) -> Vec<String> {
    cli.state_dir
        .iter()
        .flat_map(|dir| ["--state-dir".to_owned(), dir.display().to_string()])
        .collect()
}

/// Starts the daemon in the background and returns once it answers on its socket.
fn launch(global: &[String], args: &LaunchArgs, loc: &Location) -> Result<()> {
    if let Ok(Response::Status(status)) = api::call(&loc.socket(), &Request::Status) {
        bail!(
            "an agent is already running in network namespace {} (pid {}); \
             `weave-agent stop` first to relaunch it",
            loc.netns,
            status.pid
        );
    }
    loc.create_state_dir()?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(loc.log_file())
        .with_context(|| format!("opening log file {}", loc.log_file().display()))?;
    let (mut ready_read, ready_write) = std::io::pipe().context("creating the readiness pipe")?;

    let mut daemon = Process::new(std::env::current_exe().context("locating this executable")?);
    daemon.args(global).arg("launch").arg("--foreground");
    if let Some(iface) = &args.iface {
        daemon.args(["--iface", iface]);
    }
    if let Some(name) = &args.name {
        daemon.args(["--name", name]);
    }
    if let Some(addr) = args.metrics_addr {
        daemon.arg("--metrics-addr").arg(addr.to_string());
    }
    if args.encap == Encap::Vxlan {
        daemon.args(["--encap", "vxlan"]);
    }
    // The password travels in the environment, never on the daemon's command line.
    match &args.password {
        Some(password) => daemon.env("WEAVE_PASSWORD", password),
        None => daemon.env_remove("WEAVE_PASSWORD"),
    };
    if let Some(file) = &args.password_file {
        daemon.arg("--password-file").arg(file);
    }
    daemon
        .args(&args.peers)
        .env(daemon::READY_FD_ENV, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let write_fd = ready_write.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls: dup2 and setsid.
    unsafe {
        daemon.pre_exec(move || {
            // dup2 clears close-on-exec on the copy, so the daemon inherits exactly this end;
            // if the pipe already sits at READY_FD, dup2 is a no-op and we clear it ourselves.
            let moved = if write_fd == READY_FD {
                libc::fcntl(READY_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(write_fd, READY_FD)
            };
            if moved < 0 || libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = daemon.spawn().context("starting the agent daemon")?;
    drop(ready_write);

    // EOF comes when the daemon has reported, or died without reporting.
    let mut report = String::new();
    ready_read
        .read_to_string(&mut report)
        .context("waiting for the agent to start")?;
    if report.trim() != "ready" {
        let _ = child.wait();
        let reason = report
            .trim()
            .strip_prefix("error: ")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("it exited early; see {}", loc.log_file().display()));
        bail!("the agent failed to start: {reason}");
    }
    // Ready was reported after the socket was bound; prove it answers before returning.
    let Response::Status(status) = api::call_agent(&loc.socket(), &Request::Status)? else {
        bail!("the agent started but answered status with something else");
    };
    println!(
        "weave-agent {} started (pid {}) in network namespace {}: underlay {} {}",
        status.version, status.pid, status.netns, status.underlay.name, status.underlay.address
    );
    Ok(())
}

fn status(loc: &Location, out: OutputArgs) -> Result<()> {
    let Response::Status(status) = api::call_agent(&loc.socket(), &Request::Status)? else {
        bail!("the agent answered status with something else");
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let s = &status;
    println!("        Version: weave-agent {} (pid {})", s.version, s.pid);
    println!("      Peer name: {} ({})", s.peer_name, s.nickname);
    println!("      Namespace: {}", s.netns);
    println!(
        "       Underlay: {} (index {}) {}, MTU {}{}",
        s.underlay.name,
        s.underlay.ifindex,
        s.underlay.address,
        s.underlay.mtu,
        s.underlay
            .kind
            .as_deref()
            .map(|k| format!(", {k}"))
            .unwrap_or_default()
    );
    println!("          State: {}", s.state_dir);
    println!("           Pins: {}", s.pin_dir);
    println!("       Programs:");
    for p in &s.programs {
        println!("                 {} (id {}): {}", p.name, p.id, p.attached);
    }
    println!(
        "        Overlay: {} (VXLAN external, UDP 6784), ethwe MTU {}",
        s.vxlan, s.mtu
    );
    println!(
        "      Endpoints: {} local, {} remote (kernel map)",
        s.endpoints.local, s.endpoints.remote
    );
    if s.peers.is_empty() {
        println!("          Peers: none (`weave-agent join ADDR` connects to one)");
    }
    for (i, p) in s.peers.iter().enumerate() {
        let label = if i == 0 { "Peers:" } else { "" };
        println!(
            "{label:>16} {}({}) {} {} ({} endpoints)",
            p.name, p.nickname, p.address, p.state, p.endpoints
        );
    }
    println!(
        "     Encryption: {}",
        if s.encryption {
            "on (password set)"
        } else {
            "off"
        }
    );
    if s.auth_failures > 0 {
        let sources: Vec<String> = s
            .auth_failure_sources
            .iter()
            .map(|(ip, n)| format!("{ip} ({n})"))
            .collect();
        println!(
            "  Auth failures: {} gossip datagrams refused, from {}",
            s.auth_failures,
            sources.join(", ")
        );
    }
    for conflict in &s.conflicts {
        println!("       Conflict: {conflict}");
    }
    println!("       Counters:");
    for (name, c) in &s.counters {
        println!(
            "                 {name:<22} {:>12} packets {:>14} bytes",
            c.packets, c.bytes
        );
    }
    Ok(())
}

/// Asks the daemon to exit and waits until it has. Returns its pid.
fn stop(loc: &Location) -> Result<u32> {
    let Response::Status(status) = api::call_agent(&loc.socket(), &Request::Status)? else {
        bail!("the agent answered status with something else");
    };
    // Opened before asking it to stop, so a recycled pid can never be mistaken for it.
    let exited = PidFd::open(status.pid)?;
    let Response::ShuttingDown { pid } = api::call_agent(&loc.socket(), &Request::Shutdown)? else {
        bail!("the agent answered stop with something else");
    };
    if !exited.wait(STOP_TIMEOUT)? {
        bail!(
            "the agent (pid {pid}) did not exit within {}s; see {}",
            STOP_TIMEOUT.as_secs(),
            loc.log_file().display()
        );
    }
    if loc.socket().exists() {
        bail!(
            "the agent (pid {pid}) exited but left {} behind",
            loc.socket().display()
        );
    }
    Ok(pid)
}

/// A process handle that becomes readable when the process has exited (pidfd_open(2)).
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: u32) -> Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("watching agent process {pid}"));
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// True once the process has exited, false if `timeout` passed first.
    fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: one valid pollfd, count 1.
            let ready = unsafe { libc::poll(&mut poll, 1, millis) };
            if ready >= 0 {
                return Ok(ready == 1);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != ErrorKind::Interrupted {
                return Err(err).context("waiting for the agent to exit");
            }
        }
    }
}

/// Stops the agent if it runs, then removes its pins (detaching its programs) and state.
fn reset(loc: &Location) -> Result<()> {
    match api::call(&loc.socket(), &Request::Status) {
        Ok(_) => {
            stop(loc)?;
        }
        Err(Unreachable::NoAgent) => {}
        Err(Unreachable::Other(err)) => return Err(err),
    }
    let pins = datapath::remove_pins(&loc.pin_dir)?;
    let links = remove_links()?;
    match fs::remove_dir_all(&loc.state_dir) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => {
            return Err(err)
                .with_context(|| format!("removing state directory {}", loc.state_dir.display()));
        }
    }
    println!(
        "weave-agent reset in network namespace {}: removed {} pins, {} links and {}",
        loc.netns,
        pins.len(),
        links.len(),
        loc.state_dir.display()
    );
    Ok(())
}

/// Deletes the links the agent makes in this namespace: the VXLAN device and the host ends of
/// container veths (deleting those removes `ethwe` in the containers too).
fn remove_links() -> Result<Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let handle = netlink::connect()?;
        let mut removed = Vec::new();
        for link in netlink::links(&handle).await? {
            let ours = link.name == daemon::VXLAN_DEVICE || link.name.starts_with("vethwe");
            if ours && netlink::delete_link(&handle, &link.name).await? {
                removed.push(link.name);
            }
        }
        Ok(removed)
    })
}

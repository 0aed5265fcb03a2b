//! The daemon's life cycle from the CLI: launch it in the background, stop it, reset
//! everything it made.

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

use super::args::{Cli, Encap, IpallocInit, LaunchArgs};
use crate::{
    control::{
        api::{Request, Response},
        client::{self as api, Unreachable, unexpected},
        config::{DEFAULT_RANGE, DaemonConfig, DnsConfig, Encapsulation, IpamConfig},
        location::Location,
        ready::READY_FD_ENV,
    },
    datapath,
    host::netlink,
    ipam::space::Init,
    net::names::{VXLAN_DEVICE, is_overlay_veth},
};

/// How long `stop` waits for the daemon to exit after it agreed to.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptor number at which a launched daemon finds its readiness pipe.
const READY_FD: i32 = 3;

/// What the daemon is started with, from the flags (the password file read here, so a
/// missing file is reported before anything starts).
pub fn daemon_config(args: &LaunchArgs) -> Result<DaemonConfig> {
    let dns = if args.no_dns {
        None
    } else {
        Some(DnsConfig {
            domain: crate::dns::zone::parse_domain(
                args.dns_domain
                    .as_deref()
                    .unwrap_or(crate::dns::zone::DEFAULT_DOMAIN),
            )
            .context("--dns-domain takes a domain, e.g. weave.local")?,
            upstreams: args
                .dns_upstream
                .as_deref()
                .map(crate::dns::upstream::parse_list)
                .transpose()?,
        })
    };
    Ok(DaemonConfig {
        dns,
        peers: args.peers.clone(),
        iface: args.iface.clone(),
        nickname: args.name.clone(),
        password: password(args)?,
        encapsulation: match args.encap {
            Encap::Ebpf => Encapsulation::Ebpf,
            Encap::Vxlan => Encapsulation::VxlanDevice,
        },
        metrics_addr: args.metrics_addr,
        docker_plugin: (!args.no_docker_plugin).then(|| args.docker_plugin.clone()),
        flood_pps: args.flood_rate,
        port: args.port,
        trusted_subnets: crate::crypto::trust::parse_trusted(
            args.trusted_subnets.as_deref().unwrap_or_default(),
        )
        .context(
            "--trusted-subnets takes CIDRs separated by commas, e.g. 10.1.0.0/16,192.168.56.0/24",
        )?,
        ipam: IpamConfig {
            range: args
                .ipalloc_range
                .as_deref()
                .unwrap_or(DEFAULT_RANGE)
                .parse()
                .context("--ipalloc-range takes a network, e.g. 10.32.0.0/12")?,
            default_subnet: args
                .ipalloc_default_subnet
                .as_deref()
                .map(str::parse)
                .transpose()
                .context("--ipalloc-default-subnet takes a network, e.g. 10.32.0.0/16")?,
            init: args.ipalloc_init.map(|init| match init {
                IpallocInit::Seed => Init::Seed,
                IpallocInit::Observer => Init::Observer,
            }),
        },
    })
}

/// The mesh password from --password / WEAVE_PASSWORD or --password-file, if any.
fn password(args: &LaunchArgs) -> Result<Option<String>> {
    if let Some(password) = &args.password {
        return Ok(Some(password.clone()));
    }
    let Some(file) = &args.password_file else {
        return Ok(None);
    };
    let text = fs::read_to_string(file)
        .with_context(|| format!("reading the password file {}", file.display()))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        bail!("{} holds no password on its first line", file.display());
    }
    Ok(Some(password))
}

/// Global flags the daemon must see exactly as this invocation did.
pub fn cli_state_dir_args(cli: &Cli) -> Vec<String> {
    cli.state_dir
        .iter()
        .flat_map(|dir| ["--state-dir".to_owned(), dir.display().to_string()])
        .collect()
}

/// Starts the daemon in the background and returns once it answers on its socket.
pub fn launch(global: &[String], args: &LaunchArgs, loc: &Location) -> Result<()> {
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
    let (ready_read, ready_write) = std::io::pipe().context("creating the readiness pipe")?;
    let mut daemon = daemon_command(global, args)?;
    daemon
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    hand_down_ready_pipe(&mut daemon, ready_write.as_raw_fd());
    let child = daemon.spawn().context("starting the agent daemon")?;
    drop(ready_write);
    await_ready(ready_read, child, loc)?;
    // Ready was reported after the socket was bound; prove it answers before returning.
    let Response::Status(status) = api::call_agent(&loc.socket(), &Request::Status)? else {
        return Err(unexpected("status"));
    };
    println!(
        "weave-agent {} started (pid {}) in network namespace {}: underlay {} {}",
        status.version, status.pid, status.netns, status.underlay.name, status.underlay.address
    );
    Ok(())
}

/// This executable as a foreground daemon with the same flags.
fn daemon_command(global: &[String], args: &LaunchArgs) -> Result<Process> {
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
    if args.no_docker_plugin {
        daemon.arg("--no-docker-plugin");
    } else {
        daemon.args(["--docker-plugin", &args.docker_plugin]);
    }
    if args.encap == Encap::Vxlan {
        daemon.args(["--encap", "vxlan"]);
    }
    daemon.arg("--port").arg(args.port.to_string());
    daemon.arg("--flood-rate").arg(args.flood_rate.to_string());
    if let Some(trusted) = &args.trusted_subnets {
        daemon.args(["--trusted-subnets", trusted]);
    }
    if let Some(range) = &args.ipalloc_range {
        daemon.args(["--ipalloc-range", range]);
    }
    if let Some(subnet) = &args.ipalloc_default_subnet {
        daemon.args(["--ipalloc-default-subnet", subnet]);
    }
    match args.ipalloc_init {
        Some(IpallocInit::Seed) => daemon.args(["--ipalloc-init", "seed"]),
        Some(IpallocInit::Observer) => daemon.args(["--ipalloc-init", "observer"]),
        None => &mut daemon,
    };
    // The password travels in the environment, never on the daemon's command line.
    match &args.password {
        Some(password) => daemon.env("WEAVE_PASSWORD", password),
        None => daemon.env_remove("WEAVE_PASSWORD"),
    };
    if let Some(file) = &args.password_file {
        daemon.arg("--password-file").arg(file);
    }
    if let Some(value) = library_backtraces(std::env::var_os("RUST_LIB_BACKTRACE").as_deref()) {
        daemon.env("RUST_LIB_BACKTRACE", value);
    }
    daemon
        .args(&args.peers)
        .env(READY_FD_ENV, READY_FD.to_string());
    Ok(daemon)
}

/// RUST_LIB_BACKTRACE for the daemon. A RUST_BACKTRACE=1 in the shell that ran `launch`
/// would otherwise make every error the daemon logs carry a 30-line backtrace (anyhow
/// captures one per error), hundreds of lines a second while the underlay is down. Panics
/// keep their backtraces (RUST_BACKTRACE); errors get one only when asked for with
/// RUST_LIB_BACKTRACE itself.
fn library_backtraces(asked: Option<&std::ffi::OsStr>) -> Option<&'static str> {
    asked.is_none().then_some("0")
}

/// Makes the pipe's write end the daemon's descriptor [`READY_FD`], and the daemon the
/// leader of a session of its own, so it outlives this command and its terminal.
fn hand_down_ready_pipe(daemon: &mut Process, write_fd: i32) {
    // SAFETY: between fork and exec only async-signal-safe calls: dup2, fcntl and setsid.
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
}

/// Waits for the daemon's report; EOF comes when it has reported, or died without reporting.
fn await_ready(
    mut ready_read: std::io::PipeReader,
    mut child: std::process::Child,
    loc: &Location,
) -> Result<()> {
    let mut report = String::new();
    ready_read
        .read_to_string(&mut report)
        .context("waiting for the agent to start")?;
    if report.trim() == "ready" {
        return Ok(());
    }
    let _ = child.wait();
    let reason = report
        .trim()
        .strip_prefix("error: ")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("it exited early; see {}", loc.log_file().display()));
    bail!("the agent failed to start: {reason}")
}

/// Asks the daemon to exit and waits until it has. Returns its pid.
pub fn stop(loc: &Location) -> Result<u32> {
    let Response::Status(status) = api::call_agent(&loc.socket(), &Request::Status)? else {
        return Err(unexpected("status"));
    };
    // Opened before asking it to stop, so a recycled pid can never be mistaken for it.
    let exited = PidFd::open(status.pid)?;
    let Response::ShuttingDown { pid } = api::call_agent(&loc.socket(), &Request::Shutdown)? else {
        return Err(unexpected("stop"));
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

/// Stops the agent if it runs, then removes its pins (detaching its programs), links, routes,
/// NAT table and state.
pub fn reset(loc: &Location) -> Result<()> {
    match api::call(&loc.socket(), &Request::Status) {
        Ok(_) => {
            stop(loc)?;
        }
        Err(Unreachable::NoAgent) => {}
        Err(Unreachable::Other(err)) => return Err(err),
    }
    let pins = datapath::remove_pins(&loc.pin_dir)?;
    let links = remove_links()?;
    let routes = remove_mtu_routes()?;
    crate::host::exposed::remove_nat()?;
    for dir in [&loc.state_dir, &loc.data_dir] {
        match fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("removing {}", dir.display()));
            }
        }
    }
    println!(
        "weave-agent reset in network namespace {}: removed {} pins, {} links, {routes} MTU \
         routes, {} and {} (the address allocations)",
        loc.netns,
        pins.len(),
        links.len(),
        loc.state_dir.display(),
        loc.data_dir.display()
    );
    Ok(())
}

/// Deletes the host routes the agent made for narrow paths to peers (`host::peer_mtu`).
fn remove_mtu_routes() -> Result<usize> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let handle = netlink::connect()?;
        crate::host::peer_mtu::remove_all(&handle).await
    })
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
            let ours = link.name == VXLAN_DEVICE || is_overlay_veth(&link.name);
            if ours && netlink::delete_link(&handle, &link.name).await? {
                removed.push(link.name);
            }
        }
        Ok(removed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RUST_BACKTRACE=1 in the launching shell must not give every logged error of the
    /// daemon a backtrace; RUST_LIB_BACKTRACE, set on purpose, is passed on as it is.
    #[test]
    fn the_daemon_logs_error_backtraces_only_when_asked() {
        assert_eq!(library_backtraces(None), Some("0"));
        assert_eq!(library_backtraces(Some("1".as_ref())), None);
        let daemon = daemon_command(&[], &LaunchArgs::default()).unwrap();
        let lib = daemon
            .get_envs()
            .find(|(k, _)| *k == "RUST_LIB_BACKTRACE")
            .and_then(|(_, v)| v);
        match std::env::var_os("RUST_LIB_BACKTRACE") {
            None => assert_eq!(lib, Some("0".as_ref())),
            Some(_) => assert_eq!(lib, None, "the user's own setting is inherited"),
        }
    }
}

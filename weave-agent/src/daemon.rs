//! The agent daemon: owns the data path and answers the control socket until told to stop.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::Write as _,
    os::{
        fd::{FromRawFd as _, RawFd},
        unix::fs::PermissionsExt as _,
    },
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    api::{self, Request, Response},
    bpffs,
    cli::LaunchArgs,
    datapath::Datapath,
    location::Location,
    netlink,
};

/// Environment variable naming the pipe on which a foreground daemon reports readiness to the
/// `launch` that started it: one line, `ready` or `error: ...`.
pub const READY_FD_ENV: &str = "WEAVE_AGENT_READY_FD";

/// Runs the daemon in this process until it is stopped.
pub fn run(args: &LaunchArgs, loc: &Location) -> Result<()> {
    let mut ready = take_ready_pipe();
    let result = run_inner(args, loc, &mut ready);
    if let (Err(err), Some(pipe)) = (&result, ready.as_mut()) {
        // The launching CLI prints this; it is also in the log.
        let _ = writeln!(pipe, "error: {err:#}");
    }
    result
}

fn run_inner(args: &LaunchArgs, loc: &Location, ready: &mut Option<File>) -> Result<()> {
    loc.create_state_dir()?;
    // Held until the process exits; `stop` waits for the kernel to release it.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(loc.lock_file())
        .with_context(|| format!("opening {}", loc.lock_file().display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => bail!(
            "an agent is already running in network namespace {} (`weave-agent status` shows \
             it; `weave-agent stop` stops it)",
            loc.netns
        ),
        Err(TryLockError::Error(err)) => {
            return Err(err).context("locking the state directory");
        }
    }
    // Still single-threaded: the only time entering another mount namespace is allowed.
    bpffs::enter_host_mount_namespace()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(args, loc, ready));
    drop(lock);
    result
}

struct Agent {
    status: api::Status,
    datapath: Mutex<Datapath>,
    shutdown: watch::Sender<bool>,
}

async fn serve(args: &LaunchArgs, loc: &Location, ready: &mut Option<File>) -> Result<()> {
    let handle = netlink::connect()?;
    let links = netlink::links(&handle).await?;
    let default_oif = netlink::default_route_oif(&handle).await?;
    let underlay = netlink::select_underlay(&links, default_oif, args.iface.as_deref())?.clone();
    let datapath = Datapath::load(&loc.pin_dir, &underlay)?;

    let (ip, prefix) = underlay
        .ipv4
        .expect("select_underlay guarantees an IPv4 address");
    let status = api::Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        peer_name: underlay.mac_string().unwrap_or_else(|| loc.netns.clone()),
        nickname: args.name.clone().unwrap_or_else(|| loc.netns.clone()),
        netns: loc.netns.clone(),
        state_dir: loc.state_dir.display().to_string(),
        pin_dir: loc.pin_dir.display().to_string(),
        underlay: api::Underlay {
            name: underlay.name.clone(),
            ifindex: underlay.index,
            address: format!("{ip}/{prefix}"),
            mtu: underlay.mtu,
            kind: underlay.kind.clone(),
        },
        programs: datapath.programs(),
        counters: Default::default(),
    };

    let socket = loc.socket();
    let listener = bind_socket(&socket)?;
    let (shutdown, mut stopping) = watch::channel(false);
    let agent = Arc::new(Agent {
        status,
        datapath: Mutex::new(datapath),
        shutdown,
    });
    tracing::info!(
        netns = %loc.netns,
        underlay = %underlay.name,
        socket = %socket.display(),
        "agent ready"
    );
    if let Some(mut pipe) = ready.take() {
        let _ = pipe.write_all(b"ready\n");
    }

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = Arc::clone(&agent);
                    tokio::spawn(async move {
                        if let Err(err) = handle_connection(&agent, stream).await {
                            tracing::warn!("control connection: {err:#}");
                        }
                    });
                }
                Err(err) => tracing::warn!("accepting a control connection: {err}"),
            },
            _ = stopping.changed() => break,
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    let _ = fs::remove_file(&socket);
    tracing::info!(
        "agent stopped; the data path stays attached (pinned in {}); `weave-agent reset` removes it",
        loc.pin_dir.display()
    );
    Ok(())
}

/// Binds the control socket, root-only. The state-directory lock proves no live daemon owns an
/// existing socket file, so it is a leftover of a crash and can go.
fn bind_socket(socket: &Path) -> Result<UnixListener> {
    match fs::remove_file(socket) {
        Ok(()) => tracing::debug!("removed stale socket {}", socket.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", socket.display())),
    }
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", socket.display()))?;
    Ok(listener)
}

async fn handle_connection(agent: &Agent, stream: UnixStream) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => respond(agent, request),
        Err(err) => Response::Error {
            message: format!("malformed request: {err}"),
        },
    };
    let mut reply = serde_json::to_string(&response)?;
    reply.push('\n');
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await?;
    if matches!(response, Response::ShuttingDown { .. }) {
        let _ = agent.shutdown.send(true);
    }
    Ok(())
}

fn respond(agent: &Agent, request: Request) -> Response {
    match request {
        Request::Status => {
            let datapath = agent.datapath.lock().expect("datapath lock poisoned");
            match datapath.counters() {
                Ok(counters) => {
                    let mut status = agent.status.clone();
                    status.counters = counters;
                    Response::Status(Box::new(status))
                }
                Err(err) => Response::Error {
                    message: format!("{err:#}"),
                },
            }
        }
        Request::Shutdown => Response::ShuttingDown {
            pid: agent.status.pid,
        },
    }
}

/// Takes the readiness pipe handed down by `launch`, if any, so children do not inherit it.
fn take_ready_pipe() -> Option<File> {
    let fd: RawFd = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    // SAFETY: called before any other thread exists, so nothing reads the environment
    // concurrently.
    unsafe { std::env::remove_var(READY_FD_ENV) };
    // SAFETY: `launch` placed the pipe's write end at this descriptor for us alone; checking it
    // is open keeps a stray variable from making us own a descriptor that is not ours.
    // Close-on-exec from here on, so nothing the daemon starts inherits it.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return None;
    }
    // SAFETY: see above; we are the only owner from here on.
    Some(unsafe { File::from_raw_fd(fd) })
}

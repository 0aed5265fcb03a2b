//! The agent daemon: owns the data path and answers the control socket until told to stop.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File, OpenOptions, TryLockError},
    io::Write as _,
    net::{Ipv4Addr, SocketAddr},
    os::{
        fd::{FromRawFd as _, RawFd},
        unix::fs::PermissionsExt as _,
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use chitchat::transport::UdpTransport;
use futures_util::StreamExt as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{Mutex, watch},
};
use weave_common::{
    OVERLAY_OVERHEAD, VXLAN_PORT,
    endpoint::{Endpoint, ipv4_octets},
    policy::SubnetPair,
};

use crate::{
    addressing::{Cidr, format_mac},
    api::{self, Request, Response},
    bpffs,
    cli::{Encap, LaunchArgs},
    container,
    datapath::Datapath,
    gossip::{self, Gossip, PeerView},
    location::{self, Location},
    metrics::{self, CountingTransport, GossipTraffic},
    netlink,
    policy::{self, Action, Rule, Subnet},
    run_args::RunSpec,
    sealed_transport::{self, AuthFailures, SealedTransport},
    state::{self, LocalEndpoint, State},
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

/// Name of the overlay's VXLAN device (Weave's fastdp used the same).
pub const VXLAN_DEVICE: &str = "vxlan-6784";
/// How often the view of the mesh is reconciled into the maps even without a change from
/// chitchat's watcher: the safety net for what it does not report, and how vanished container
/// veths are noticed. Every round costs CPU on every host (measured: 250 ms made an idle
/// agent of the 8 x 50 scale run use 1.4 % of a core, 500 ms 0.7 %).
const SYNC_INTERVAL: Duration = Duration::from_millis(500);
/// How often a configured peer that is not live is contacted again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// After a start, remote entries left in the pinned maps by the previous agent are kept this
/// long, so traffic keeps flowing while gossip reconverges.
const ADOPTION_GRACE: Duration = Duration::from_secs(5);
/// How often the agent looks for a Docker engine while none answers.
const DOCKER_RETRY: Duration = Duration::from_secs(2);

struct Agent {
    loc: Location,
    base: api::Status,
    gossip: Gossip,
    /// Gossip datagrams refused by the sealed transport (stays empty without a password).
    auth_failures: Arc<std::sync::Mutex<AuthFailures>>,
    /// Gossip messages and bytes through the transport, for metrics.
    traffic: Arc<GossipTraffic>,
    inner: Mutex<Inner>,
    shutdown: watch::Sender<bool>,
}

struct Inner {
    datapath: Datapath,
    netlink: rtnetlink::Handle,
    state: State,
    /// Default `ethwe` MTU.
    mtu: u32,
    peers: Vec<PeerView>,
    conflicts: Vec<String>,
    /// Remote endpoints as last written to the map.
    remote: BTreeMap<Ipv4Addr, Endpoint>,
    /// Remote entries found in the pinned map at start (left by the previous agent), kept for
    /// [`ADOPTION_GRACE`] even if gossip has not confirmed them yet.
    adopted: BTreeSet<Ipv4Addr>,
    started: Instant,
    last_contact: BTreeMap<SocketAddr, Instant>,
    /// The peer map as last written by the sync; None when it must be written again.
    peers_written: Option<BTreeSet<Ipv4Addr>>,
    /// The policy map as last written; None until the first sync writes it.
    policy: Option<BTreeSet<SubnetPair>>,
    /// On-link routes the rules put in each local endpoint's container, as last made.
    routes: BTreeMap<Ipv4Addr, BTreeSet<Subnet>>,
}

async fn serve(args: &LaunchArgs, loc: &Location, ready: &mut Option<File>) -> Result<()> {
    let handle = netlink::connect()?;
    let links = netlink::links(&handle).await?;
    let default_oif = netlink::default_route_oif(&handle).await?;
    let underlay = netlink::select_underlay(&links, default_oif, args.iface.as_deref())?.clone();
    let mut state = state::load(&loc.state_dir)?;
    let adopt = state.underlay.as_deref() == Some(underlay.name.as_str());
    let mut datapath = Datapath::load(&loc.pin_dir, &underlay, adopt)?;
    datapath.start_logging();
    state.underlay = Some(underlay.name.clone());
    for peer in &args.peers {
        gossip::peer_addr(peer)?;
        if !state.peers.contains(peer) {
            state.peers.push(peer.clone());
        }
    }

    let mtu = underlay.mtu.saturating_sub(OVERLAY_OVERHEAD);
    let vxlan_index = netlink::ensure_vxlan(&handle, VXLAN_DEVICE, VXLAN_PORT, mtu).await?;
    let (ip, prefix) = underlay
        .ipv4
        .expect("select_underlay guarantees an IPv4 address");
    datapath.attach_overlay(
        VXLAN_DEVICE,
        vxlan_index,
        &underlay,
        ip,
        args.encap == Encap::Ebpf,
    )?;
    let peer_name = underlay.mac_string().unwrap_or_else(|| loc.netns.clone());
    let nickname = args.name.clone().unwrap_or_else(|| loc.netns.clone());
    let password = password(args)?;
    let programs = datapath.programs();
    let mut inner = Inner {
        datapath,
        netlink: handle,
        state,
        mtu,
        peers: Vec::new(),
        conflicts: Vec::new(),
        remote: BTreeMap::new(),
        adopted: BTreeSet::new(),
        started: Instant::now(),
        last_contact: BTreeMap::new(),
        peers_written: None,
        policy: None,
        routes: BTreeMap::new(),
    };
    adopt_endpoints(&mut inner).await?;
    state::save(&loc.state_dir, &inner.state)?;

    // Our endpoints and rules are in the very first state peers see of this generation: after a
    // restart they never see us alive without them, so they never withdraw them.
    let initial: Vec<(String, String)> = inner
        .state
        .endpoints
        .iter()
        .map(|e| gossip::endpoint_key_value(&e.cidr, &e.container))
        .chain(
            inner
                .state
                .rules
                .iter()
                .map(|r| (r.gossip_key(), r.gossip_value())),
        )
        .collect();
    let auth_failures = Arc::new(std::sync::Mutex::new(AuthFailures::default()));
    let transport: Box<dyn chitchat::transport::Transport> = match &password {
        Some(password) => {
            let key = sealed_transport::derive_key(password)?;
            Box::new(SealedTransport::new(&key, Arc::clone(&auth_failures)))
        }
        None => Box::new(UdpTransport),
    };
    let traffic = Arc::new(GossipTraffic::default());
    let transport = CountingTransport::new(transport, Arc::clone(&traffic));
    let gossip = Gossip::start(&peer_name, &nickname, ip, initial, &transport).await?;

    let base = api::Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        peer_name,
        nickname,
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
        programs,
        vxlan: VXLAN_DEVICE.to_owned(),
        mtu,
        endpoints: api::EndpointCounts::default(),
        peers: Vec::new(),
        conflicts: Vec::new(),
        encryption: password.is_some(),
        auth_failures: 0,
        auth_failure_sources: BTreeMap::new(),
        counters: Default::default(),
    };
    let socket = loc.socket();
    let listener = bind_socket(&socket)?;
    let (shutdown, mut stopping) = watch::channel(false);
    let agent = Arc::new(Agent {
        loc: loc.clone(),
        base,
        gossip,
        auth_failures,
        traffic,
        inner: Mutex::new(inner),
        shutdown,
    });
    let metrics_addr = args.metrics_addr.unwrap_or(metrics::DEFAULT_ADDR);
    let metrics = match tokio::net::TcpListener::bind(metrics_addr).await {
        Ok(listener) => {
            let scrape = {
                let agent = Arc::clone(&agent);
                move || {
                    let agent = Arc::clone(&agent);
                    async move { metrics::render(&status(&agent).await?, &agent.traffic) }
                }
            };
            Some(tokio::spawn(metrics::serve(
                listener,
                scrape,
                agent.shutdown.subscribe(),
            )))
        }
        Err(err) => {
            // Metrics are worth a warning, not a data path without an agent.
            tracing::warn!("not serving metrics on {metrics_addr}: {err}");
            None
        }
    };
    let sync = tokio::spawn(sync_loop(Arc::clone(&agent)));
    let docker = tokio::spawn(docker_loop(Arc::clone(&agent)));
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
    let _ = agent.shutdown.send(true);
    let _ = sync.await;
    let _ = docker.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let _ = fs::remove_file(&socket);
    tracing::info!(
        "agent stopped; the data path stays attached (pinned in {}); `weave-agent reset` removes it",
        loc.pin_dir.display()
    );
    Ok(())
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

/// Takes over the endpoints the previous agent attached: those whose veth still exists keep
/// forwarding (their pinned TC links get the new program in place) and are published again;
/// the others are cleaned out of the maps and the state.
async fn adopt_endpoints(inner: &mut Inner) -> Result<()> {
    let mut kept = Vec::new();
    for ep in std::mem::take(&mut inner.state.endpoints) {
        match netlink::link_index(&inner.netlink, &ep.host_veth).await? {
            Some(index) => {
                inner.datapath.attach_container(&ep.host_veth)?;
                inner
                    .datapath
                    .set_endpoint(ep.cidr.ip, ep.cidr.local_endpoint(index))?;
                tracing::info!(cidr = %ep.cidr, container = %ep.container, "adopted endpoint");
                kept.push(ep);
            }
            None => {
                tracing::info!(cidr = %ep.cidr, container = %ep.container, "container gone; dropping its endpoint");
                inner.datapath.detach_container(&ep.host_veth)?;
                inner.datapath.remove_endpoint(ep.cidr.ip)?;
                keep_dormant(inner, &ep);
            }
        }
    }
    inner.state.endpoints = kept;
    // Local entries no state knows of are leftovers of a crash between map write and save.
    let ours: BTreeSet<Ipv4Addr> = inner.state.endpoints.iter().map(|e| e.cidr.ip).collect();
    for (ip, ep) in inner.datapath.endpoints()? {
        if ep.is_local() && !ours.contains(&ip) {
            inner.datapath.remove_endpoint(ip)?;
        } else if !ep.is_local() {
            inner.remote.insert(ip, ep);
            inner.adopted.insert(ip);
        }
    }
    Ok(())
}

/// Reconciles the maps with the mesh: remote endpoints and peers from the live view, local
/// endpoints whose container vanished withdrawn, configured peers contacted until they answer.
async fn sync_loop(agent: Arc<Agent>) {
    let mut changes = agent.gossip.watcher().await;
    let key_set = Arc::new(tokio::sync::Notify::new());
    let _subscription = agent.gossip.on_key_set(key_set.clone()).await;
    let mut stopping = agent.shutdown.subscribe();
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            _ = key_set.notified() => {}
            _ = changes.changed() => {}
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Err(err) = sync_once(&agent).await {
            tracing::warn!("syncing the mesh into the data path: {err:#}");
        }
    }
}

async fn sync_once(agent: &Agent) -> Result<()> {
    let peers = agent.gossip.peers().await;
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;

    // Containers that died took their veth with them: withdraw their addresses. One cheap
    // lookup per endpoint rather than a dump of every link, since this runs every round.
    let vanished: Vec<LocalEndpoint> = inner
        .state
        .endpoints
        .iter()
        .filter(|ep| !link_exists(&ep.host_veth))
        .cloned()
        .collect();
    for ep in &vanished {
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "container gone; withdrawing its address");
        remove_endpoint(inner, &agent.gossip, ep).await?;
        keep_dormant(inner, ep);
    }
    if !vanished.is_empty() {
        state::save(&agent.loc.state_dir, &inner.state)?;
    }

    let local: BTreeSet<Ipv4Addr> = inner.state.endpoints.iter().map(|e| e.cidr.ip).collect();
    // An address attached here since it was last seen on a peer (or adopted from the pinned
    // map) has a local entry in the map now: it must not be removed below as a stale remote.
    inner.remote.retain(|ip, _| !local.contains(ip));
    inner.adopted.retain(|ip| !local.contains(ip));
    let desired = gossip::desired(&peers, &local);
    if inner.started.elapsed() >= ADOPTION_GRACE {
        inner.adopted.clear();
    }
    for (ip, ep) in &desired.endpoints {
        if inner.remote.get(ip) != Some(ep) {
            inner.datapath.set_endpoint(*ip, *ep)?;
            inner.remote.insert(*ip, *ep);
        }
    }
    let stale: Vec<Ipv4Addr> = inner
        .remote
        .keys()
        .filter(|ip| !desired.endpoints.contains_key(ip) && !inner.adopted.contains(ip))
        .copied()
        .collect();
    for ip in stale {
        inner.datapath.remove_endpoint(ip)?;
        inner.remote.remove(&ip);
    }
    if inner.adopted.is_empty() {
        if inner.peers_written.as_ref() != Some(&desired.peers) {
            inner.datapath.set_peers(&desired.peers)?;
            inner.peers_written = Some(desired.peers.clone());
        }
    } else {
        // Adopted entries still point at their peers: keep those peers too for now.
        let mut peers_now: BTreeSet<Ipv4Addr> = inner.datapath.peers()?.into_iter().collect();
        peers_now.extend(&desired.peers);
        inner.datapath.set_peers(&peers_now)?;
        inner.peers_written = None;
    }
    for conflict in &desired.conflicts {
        if !inner.conflicts.contains(conflict) {
            tracing::warn!("address conflict: {conflict}");
        }
    }
    inner.conflicts = desired.conflicts;

    // Configured peers that are not live get another gossip round, once a second.
    let live: BTreeSet<SocketAddr> = peers
        .iter()
        .filter(|p| p.alive)
        .map(|p| p.address)
        .collect();
    for peer in &inner.state.peers {
        let Ok(addr) = gossip::peer_addr(peer) else {
            continue;
        };
        let due = inner
            .last_contact
            .get(&addr)
            .is_none_or(|at| at.elapsed() >= RETRY_INTERVAL);
        if !live.contains(&addr) && addr != agent.gossip.self_address() && due {
            if let Err(err) = agent.gossip.contact(addr) {
                tracing::debug!("contacting {addr}: {err:#}");
            }
            inner.last_contact.insert(addr, Instant::now());
        }
    }
    // Last, so that a policy the map cannot hold does not also stop the peers' upkeep.
    let policy = sync_policy(inner, &agent.gossip, &agent.loc, &peers).await;
    inner.peers = peers;
    policy
}

/// Adopts newer isolation rules from the mesh, then makes the policy map and the containers'
/// routes match the rules and the endpoint subnets known now.
async fn sync_policy(
    inner: &mut Inner,
    gossip: &Gossip,
    loc: &Location,
    peers: &[PeerView],
) -> Result<()> {
    let merged: Vec<Rule> = policy::merge(
        inner
            .state
            .rules
            .iter()
            .chain(peers.iter().flat_map(|p| &p.rules)),
    )
    .into_values()
    .collect();
    if merged != inner.state.rules {
        for rule in merged.iter().filter(|r| !inner.state.rules.contains(r)) {
            tracing::info!(a = %rule.a, b = %rule.b, action = %rule.action, by = %rule.by, "isolation rule");
            gossip.publish_rule(rule).await;
        }
        inner.state.rules = merged;
        state::save(&loc.state_dir, &inner.state)?;
    }

    let subnets: BTreeSet<Subnet> = inner
        .state
        .endpoints
        .iter()
        .map(|e| e.cidr.subnet())
        .chain(
            inner
                .remote
                .values()
                .map(|e| Subnet::new(Ipv4Addr::from(ipv4_octets(e.subnet)), e.prefix_len)),
        )
        .collect();
    let pairs = policy::allowed_pairs(&inner.state.rules, &subnets);
    if inner.policy.as_ref() != Some(&pairs) {
        inner.datapath.set_policy(&pairs)?;
        inner.policy = Some(pairs);
    }

    let endpoints: BTreeSet<Ipv4Addr> = inner.state.endpoints.iter().map(|e| e.cidr.ip).collect();
    inner.routes.retain(|ip, _| endpoints.contains(ip));
    for ep in &inner.state.endpoints {
        let wanted = policy::routes_for(&inner.state.rules, &ep.cidr.subnet());
        if inner.routes.get(&ep.cidr.ip) == Some(&wanted) {
            continue;
        }
        match container::sync_routes(&ep.netns, wanted.clone()).await {
            Ok(()) => {
                inner.routes.insert(ep.cidr.ip, wanted);
            }
            // Tried again next round; the container may be going away.
            Err(err) => tracing::warn!(cidr = %ep.cidr, "routes for isolation rules: {err:#}"),
        }
    }
    Ok(())
}

/// `policy allow|deny A B`: the new rule supersedes any earlier word on the pair, here and, by
/// gossip, on every host.
async fn set_rule(agent: &Agent, action: Action, a: &str, b: &str) -> Result<Vec<api::RuleInfo>> {
    let (a, b): (Subnet, Subnet) = (a.parse()?, b.parse()?);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    {
        let mut inner = agent.inner.lock().await;
        let mut rule = Rule::new(a, b, action, now, &agent.base.peer_name)?;
        // Later than anything said about the pair, even if another host's clock runs ahead.
        if let Some(last) = inner.state.rules.iter().find(|r| r.pair() == rule.pair()) {
            let at_ms = now.max(last.at_ms.saturating_add(1));
            rule = Rule::new(a, b, action, at_ms, &agent.base.peer_name).with_context(|| {
                format!(
                    "the rule for {a} and {b} from {} is dated {} ms after 1970 and cannot be \
                     superseded; check that host's clock",
                    last.by, last.at_ms
                )
            })?;
        }
        inner.state.rules.retain(|r| r.pair() != rule.pair());
        inner.state.rules.push(rule.clone());
        inner.state.rules.sort_by_key(Rule::pair);
        state::save(&agent.loc.state_dir, &inner.state)?;
        agent.gossip.publish_rule(&rule).await;
        tracing::info!(a = %rule.a, b = %rule.b, action = %rule.action, "isolation rule set here");
    }
    // Into this host's data path now rather than at the next tick.
    sync_once(agent).await?;
    Ok(rule_infos(&*agent.inner.lock().await))
}

fn rule_infos(inner: &Inner) -> Vec<api::RuleInfo> {
    inner
        .state
        .rules
        .iter()
        .map(|r| api::RuleInfo {
            a: r.a.to_string(),
            b: r.b.to_string(),
            action: r.action.to_string(),
            at_ms: r.at_ms,
            by: r.by.clone(),
        })
        .collect()
}

/// An interface of that name exists in the agent's namespace.
fn link_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// A Docker container that stopped keeps its address for when it starts again.
fn keep_dormant(inner: &mut Inner, ep: &LocalEndpoint) {
    if ep.docker_id.is_some() && !inner.state.dormant.iter().any(|d| d.cidr == ep.cidr) {
        inner.state.dormant.push(ep.clone());
    }
}

/// Follows Docker's events while Docker runs: a container of ours that dies is withdrawn from
/// the mesh at once, one that starts again gets its address back, one that is removed is
/// forgotten. Without Docker this waits quietly; netns and pid attachments do not need it.
async fn docker_loop(agent: Arc<Agent>) {
    let mut stopping = agent.shutdown.subscribe();
    loop {
        if let Ok(docker) = crate::docker::connect().await {
            tracing::debug!("following Docker events");
            // Containers that started while we were not looking.
            let dormant: Vec<String> = {
                let inner = agent.inner.lock().await;
                inner
                    .state
                    .dormant
                    .iter()
                    .filter_map(|d| d.docker_id.clone())
                    .collect()
            };
            for id in dormant {
                container_started(&agent, &docker, &id).await;
            }
            let mut events = crate::docker::events(&docker);
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            let id = event.actor.and_then(|a| a.id).unwrap_or_default();
                            match event.action.as_deref() {
                                Some("start") => container_started(&agent, &docker, &id).await,
                                Some("die") => container_died(&agent, &id, false).await,
                                Some("destroy") => container_died(&agent, &id, true).await,
                                _ => {}
                            }
                        }
                        Some(Err(err)) => {
                            tracing::debug!("Docker events: {err}");
                            break;
                        }
                        None => break,
                    },
                    _ = stopping.changed() => return,
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(DOCKER_RETRY) => {}
            _ = stopping.changed() => return,
        }
    }
}

async fn container_died(agent: &Agent, id: &str, destroyed: bool) {
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;
    let gone: Vec<LocalEndpoint> = inner
        .state
        .endpoints
        .iter()
        .filter(|e| e.docker_id.as_deref() == Some(id))
        .cloned()
        .collect();
    for ep in &gone {
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "container died; withdrawing its address");
        if let Err(err) = remove_endpoint(inner, &agent.gossip, ep).await {
            tracing::warn!("withdrawing {}: {err:#}", ep.cidr);
        }
        keep_dormant(inner, ep);
    }
    let before = inner.state.dormant.len();
    if destroyed {
        inner
            .state
            .dormant
            .retain(|d| d.docker_id.as_deref() != Some(id));
    }
    if (!gone.is_empty() || inner.state.dormant.len() != before)
        && let Err(err) = state::save(&agent.loc.state_dir, &inner.state)
    {
        tracing::warn!("{err:#}");
    }
}

async fn container_started(agent: &Agent, docker: &bollard::Docker, id: &str) {
    let dormant = {
        let mut inner = agent.inner.lock().await;
        let found = inner
            .state
            .dormant
            .iter()
            .position(|d| d.docker_id.as_deref() == Some(id));
        found.map(|i| inner.state.dormant.remove(i))
    };
    let Some(ep) = dormant else {
        return;
    };
    let result = async {
        let container = crate::docker::inspect(docker, id)
            .await?
            .filter(|c| c.pid != 0)
            .context("the container is not running")?;
        let target = Target {
            label: ep.container.clone(),
            netns: container.netns(),
            docker_id: Some(container.id),
        };
        attach_endpoint(agent, ep.cidr, &target, Some(ep.mtu)).await
    }
    .await;
    match result {
        Ok(_) => {
            tracing::info!(cidr = %ep.cidr, container = %ep.container, "container started again; address restored")
        }
        Err(err) => {
            tracing::warn!(cidr = %ep.cidr, container = %ep.container, "restoring the address: {err:#}");
            let mut inner = agent.inner.lock().await;
            keep_dormant(&mut inner, &ep);
        }
    }
}

/// Withdraws a local endpoint everywhere: gossip, map, TC link, veth, state.
async fn remove_endpoint(inner: &mut Inner, gossip: &Gossip, ep: &LocalEndpoint) -> Result<()> {
    gossip.withdraw(ep.cidr.ip).await;
    inner.datapath.remove_endpoint(ep.cidr.ip)?;
    inner.datapath.detach_container(&ep.host_veth)?;
    // Deleting the host end deletes `ethwe` in the container with it.
    netlink::delete_link(&inner.netlink, &ep.host_veth).await?;
    inner.state.endpoints.retain(|e| e.cidr.ip != ep.cidr.ip);
    Ok(())
}

fn endpoint_info(ep: &LocalEndpoint) -> api::EndpointInfo {
    api::EndpointInfo {
        container: ep.container.clone(),
        mac: format_mac(&ep.cidr.mac()),
        cidr: ep.cidr.to_string(),
        host_veth: ep.host_veth.clone(),
        mtu: ep.mtu,
    }
}

fn peer_infos(inner: &Inner) -> Vec<api::PeerInfo> {
    let mut out: Vec<api::PeerInfo> = inner
        .peers
        .iter()
        .map(|p| api::PeerInfo {
            name: p.name.clone(),
            nickname: p.nickname.clone(),
            address: p.address.ip().to_string(),
            state: if p.alive { "alive" } else { "dead" }.to_owned(),
            endpoints: p.endpoints.len(),
            generation: p.generation,
        })
        .collect();
    for peer in &inner.state.peers {
        let Ok(addr) = gossip::peer_addr(peer) else {
            continue;
        };
        if !inner.peers.iter().any(|p| p.address == addr) {
            out.push(api::PeerInfo {
                name: String::new(),
                nickname: String::new(),
                address: addr.ip().to_string(),
                state: "connecting".to_owned(),
                endpoints: 0,
                generation: 0,
            });
        }
    }
    out
}

/// The container an endpoint is attached to.
struct Target {
    /// As the user named it (netns:NAME, pid:PID, a path, a Docker name or short id).
    label: String,
    netns: PathBuf,
    docker_id: Option<String>,
}

/// Refuses an address already used here or anywhere in the mesh, naming where.
async fn check_free(agent: &Agent, ip: Ipv4Addr) -> Result<()> {
    let peers = agent.gossip.peers().await;
    check_free_here(&*agent.inner.lock().await, ip)?;
    for peer in &peers {
        if let Some(ep) = peer.endpoints.iter().find(|e| e.cidr.ip == ip) {
            bail!(
                "{ip} is already in use: attached to {} on peer {} ({}, {})",
                ep.container,
                peer.name,
                peer.nickname,
                if peer.alive { "alive" } else { "dead" }
            );
        }
    }
    Ok(())
}

fn check_free_here(inner: &Inner, ip: Ipv4Addr) -> Result<()> {
    if let Some(ep) = inner.state.endpoints.iter().find(|e| e.cidr.ip == ip) {
        bail!("{ip} is already in use: attached here to {}", ep.container);
    }
    Ok(())
}

/// `attach`: to a namespace, or (without one) to a running Docker container by name or id.
async fn attach(
    agent: &Agent,
    cidr: &str,
    container: &str,
    netns: Option<PathBuf>,
    mtu: Option<u32>,
) -> Result<api::EndpointInfo> {
    let cidr: Cidr = cidr.parse()?;
    let target =
        match netns {
            Some(netns) => Target {
                label: container.to_owned(),
                netns,
                docker_id: None,
            },
            None => {
                let docker = crate::docker::connect().await?;
                let found = crate::docker::inspect(&docker, container).await?.with_context(|| {
                format!(
                    "no container {container:?}: not a Docker container name or id, and not \
                     netns:NAME, pid:PID or a netns path"
                )
            })?;
                if found.pid == 0 {
                    bail!("container {container} is not running");
                }
                Target {
                    label: container.to_owned(),
                    netns: found.netns(),
                    docker_id: Some(found.id),
                }
            }
        };
    attach_endpoint(agent, cidr, &target, mtu).await
}

/// `run`: creates and starts the container through Docker, attaches it, and removes it again
/// if attaching fails. Returns the full container id.
async fn run_container(
    agent: &Agent,
    cidr: &str,
    spec: &RunSpec,
    mtu: Option<u32>,
) -> Result<String> {
    let cidr: Cidr = cidr.parse()?;
    check_free(agent, cidr.ip).await?;
    let docker = crate::docker::connect().await?;
    let id =
        crate::docker::create_and_start(&docker, spec, &agent.base.peer_name, &cidr.to_string())
            .await?;
    let attached = async {
        let container = crate::docker::inspect(&docker, &id)
            .await?
            .filter(|c| c.pid != 0)
            .context("the container exited right after it started")?;
        let target = Target {
            label: spec
                .name
                .clone()
                .unwrap_or_else(|| crate::docker::short_id(&id).to_owned()),
            netns: container.netns(),
            docker_id: Some(id.clone()),
        };
        attach_endpoint(agent, cidr, &target, mtu).await
    }
    .await;
    if let Err(err) = attached {
        let _ = crate::docker::remove(&docker, &id).await;
        return Err(err.context(format!(
            "attaching {cidr} to the new container failed, so it was removed again"
        )));
    }
    Ok(id)
}

async fn attach_endpoint(
    agent: &Agent,
    cidr: Cidr,
    target: &Target,
    mtu: Option<u32>,
) -> Result<api::EndpointInfo> {
    check_free(agent, cidr.ip).await?;
    // ethwe must land in a container, never in a host: ours, or the machine's initial one.
    if location::same_namespace(&target.netns, Path::new("/proc/self/ns/net"))
        || location::same_namespace(&target.netns, Path::new("/proc/1/ns/net"))
    {
        bail!(
            "{} is the host's own network namespace; containers need one of their own",
            target.label
        );
    }
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;
    // Again under the lock the endpoint is recorded under: an attach of the same address that
    // passed check_free at the same time may have got in first.
    check_free_here(inner, cidr.ip)?;
    let netns = target.netns.as_path();
    let container = target.label.as_str();
    if let Some(ep) = inner.state.endpoints.iter().find(|e| {
        e.netns == netns
            || e.container == container
            || (e.docker_id.is_some() && e.docker_id == target.docker_id)
    }) {
        bail!(
            "{container} already has {} on ethwe; detach it first",
            ep.cidr
        );
    }
    let mtu = mtu.unwrap_or(inner.mtu);
    let host = cidr.host_veth();
    let temp = cidr.peer_temp_name();
    // A leftover of a crash mid-attach would make the create fail.
    netlink::delete_link(&inner.netlink, &host).await?;
    let index = netlink::create_veth(&inner.netlink, &host, &temp, mtu).await?;
    let ep = LocalEndpoint {
        cidr,
        container: container.to_owned(),
        netns: netns.to_owned(),
        host_veth: host.clone(),
        mtu,
        docker_id: target.docker_id.clone(),
    };
    let result: Result<()> = async {
        container::move_into(&inner.netlink, &temp, netns).await?;
        container::configure_ethwe(netns, temp.clone(), cidr, mtu).await?;
        inner
            .datapath
            .set_endpoint(cidr.ip, cidr.local_endpoint(index))?;
        inner.datapath.attach_container(&host)?;
        netlink::set_up(&inner.netlink, index).await?;
        Ok(())
    }
    .await;
    if let Err(err) = result {
        // Leave nothing half-made behind.
        let _ = inner.datapath.remove_endpoint(cidr.ip);
        let _ = inner.datapath.detach_container(&host);
        let _ = netlink::delete_link(&inner.netlink, &host).await;
        return Err(err);
    }
    agent.gossip.publish(&cidr, container).await;
    inner.state.dormant.retain(|d| d.cidr != cidr);
    inner.state.endpoints.push(ep.clone());
    state::save(&agent.loc.state_dir, &inner.state)?;
    tracing::info!(%cidr, container, "attached");
    Ok(endpoint_info(&ep))
}

async fn detach(
    agent: &Agent,
    container: &str,
    netns: Option<&Path>,
) -> Result<Vec<api::EndpointInfo>> {
    // A Docker name resolves to the id the endpoint recorded.
    let docker_id = match netns {
        Some(_) => None,
        None => match crate::docker::connect().await {
            Ok(docker) => crate::docker::inspect(&docker, container)
                .await
                .ok()
                .flatten()
                .map(|c| c.id),
            Err(_) => None,
        },
    };
    let matches = |e: &LocalEndpoint| {
        e.container == container
            || netns.is_some_and(|n| n == e.netns)
            || (e.docker_id.is_some() && e.docker_id == docker_id)
    };
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;
    let matching: Vec<LocalEndpoint> = inner
        .state
        .endpoints
        .iter()
        .filter(|e| matches(e))
        .cloned()
        .collect();
    let dormant = inner.state.dormant.len();
    inner.state.dormant.retain(|e| !matches(e));
    if matching.is_empty() && inner.state.dormant.len() == dormant {
        bail!("{container} has no endpoint on this host (`weave-agent ps` lists them)");
    }
    for ep in &matching {
        remove_endpoint(inner, &agent.gossip, ep).await?;
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "detached");
    }
    state::save(&agent.loc.state_dir, &inner.state)?;
    Ok(matching.iter().map(endpoint_info).collect())
}

async fn join(agent: &Agent, peer: &str) -> Result<String> {
    let addr = gossip::peer_addr(peer)?;
    let mut inner = agent.inner.lock().await;
    if !inner.state.peers.iter().any(|p| p == peer) {
        inner.state.peers.push(peer.to_owned());
        state::save(&agent.loc.state_dir, &inner.state)?;
    }
    agent.gossip.contact(addr)?;
    inner.last_contact.insert(addr, Instant::now());
    Ok(addr.to_string())
}

async fn status(agent: &Agent) -> Result<api::Status> {
    let inner = agent.inner.lock().await;
    let mut status = agent.base.clone();
    status.counters = inner.datapath.counters()?;
    let entries = inner.datapath.endpoints()?;
    status.endpoints = api::EndpointCounts {
        local: entries.iter().filter(|(_, e)| e.is_local()).count(),
        remote: entries.iter().filter(|(_, e)| !e.is_local()).count(),
    };
    status.peers = peer_infos(&inner);
    status.conflicts = inner.conflicts.clone();
    let failures = agent
        .auth_failures
        .lock()
        .expect("auth failure lock")
        .clone();
    status.auth_failures = failures.total;
    status.auth_failure_sources = failures
        .by_source
        .iter()
        .map(|(ip, n)| (ip.to_string(), *n))
        .collect();
    Ok(status)
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
    let mut line = Vec::new();
    // One byte over the limit is enough to know it is too long.
    BufReader::new(read)
        .take(api::MAX_REQUEST as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    let response = match api::parse_request(&line) {
        Ok(request) => respond(agent, request)
            .await
            .unwrap_or_else(|err| Response::Error {
                message: format!("{err:#}"),
            }),
        Err(err) => Response::Error {
            message: format!("{err:#}"),
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

async fn respond(agent: &Agent, request: Request) -> Result<Response> {
    Ok(match request {
        Request::Status => Response::Status(Box::new(status(agent).await?)),
        Request::Shutdown => Response::ShuttingDown {
            pid: agent.base.pid,
        },
        Request::Attach {
            cidr,
            container,
            netns,
            mtu,
        } => Response::Attached {
            endpoint: attach(agent, &cidr, &container, netns, mtu).await?,
        },
        Request::Run { cidr, spec, mtu } => Response::Ran {
            id: run_container(agent, &cidr, &spec, mtu).await?,
        },
        Request::Detach { container, netns } => Response::Detached {
            endpoints: detach(agent, &container, netns.as_deref()).await?,
        },
        Request::Ps => Response::Endpoints {
            endpoints: agent
                .inner
                .lock()
                .await
                .state
                .endpoints
                .iter()
                .map(endpoint_info)
                .collect(),
        },
        Request::Peers => Response::Peers {
            peers: peer_infos(&*agent.inner.lock().await),
        },
        Request::Join { peer } => Response::Joined {
            address: join(agent, &peer).await?,
        },
        Request::PolicySet { action, a, b } => Response::Rules {
            rules: set_rule(agent, action, &a, &b).await?,
        },
        Request::PolicyList => Response::Rules {
            rules: rule_infos(&*agent.inner.lock().await),
        },
    })
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

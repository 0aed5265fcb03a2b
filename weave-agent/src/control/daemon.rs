//! The daemon's composition root: takes the namespace's lock, builds the data path, gossip
//! and the shared state, starts the tasks, and serves the control socket until told to stop.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions, TryLockError},
    io::Write as _,
    net::Ipv4Addr,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use chitchat::transport::{Transport, UdpTransport};
use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
    sync::{Mutex, watch},
};
use weave_common::{OVERLAY_OVERHEAD, data_port};

use super::{
    agent::{Agent, Inner},
    api,
    config::{DaemonConfig, Encapsulation},
    dns, docker_events, endpoints, expose, forwarding_watch,
    ipam::store::Ipam,
    links,
    location::Location,
    log_file, metrics, peers, ready, server, state, status, sync,
};
use crate::{
    crypto::{self, engine::Engine, handshake::Identity, table::Table, tap::Tap, trust},
    datapath::{Datapath, OverlaySettings, bpffs},
    dns::server as dns_server,
    host::{
        netlink, routes,
        underlay::{self, Link},
    },
    mesh::{
        counting_transport::{CountingTransport, GossipTraffic},
        gossip::Gossip,
        peer_addr::{PeerBook, PeerSpec},
        sealed_transport::{self, AuthFailures, SealedTransport},
        topology::{
            hello::Hellos,
            links::{LINKS_KEY, encode as encode_links},
        },
    },
    net::names::VXLAN_DEVICE,
};

/// Runs the daemon in this process until it is stopped.
pub fn run(config: &DaemonConfig, loc: &Location) -> Result<()> {
    let mut ready = ready::take_ready_pipe();
    let result = run_locked(config, loc, &mut ready);
    if let (Err(err), Some(pipe)) = (&result, ready.as_mut()) {
        // The launching CLI prints this; it is also in the log.
        let _ = writeln!(pipe, "error: {err:#}");
    }
    result
}

fn run_locked(config: &DaemonConfig, loc: &Location, ready: &mut Option<File>) -> Result<()> {
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
    // Before anything else is logged: a daemon that runs for months must not fill the disk.
    log_file::bound(&loc.log_file())?;
    // The resolv.conf `ip netns exec` shows this namespace's processes: gone from view once
    // the daemon is in the host's mount namespace.
    let mut config = config.clone();
    if let Some(dns) = &mut config.dns {
        dns.upstreams
            .get_or_insert_with(crate::dns::upstream::from_host);
    }
    let config = &config;
    // Still single-threaded: the only time entering another mount namespace is allowed.
    bpffs::enter_host_mount_namespace()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let (agent, listener, dns_sockets) = start(config, loc).await?;
        serve(agent, listener, dns_sockets, config, ready).await
    });
    drop(lock);
    result
}

/// Everything up to a bound control socket: the data path attached, endpoints adopted,
/// gossip started with them.
async fn start(
    config: &DaemonConfig,
    loc: &Location,
) -> Result<(Arc<Agent>, UnixListener, Option<dns_server::Sockets>)> {
    let handle = netlink::connect()?;
    let links = netlink::links(&handle).await?;
    let default_oif = routes::default_route_oif(&handle).await?;
    let underlay = underlay::select_underlay(&links, default_oif, config.iface.as_deref())?.clone();
    let mut state = state::load(&loc.state_dir)?;
    let adopt = state.underlay.as_deref() == Some(underlay.name.as_str());
    state.underlay = Some(underlay.name.clone());
    for peer in &config.peers {
        PeerSpec::parse(peer, config.port)?;
        if !state.peers.contains(peer) {
            state.peers.push(peer.clone());
        }
    }
    let address = underlay
        .ipv4
        .expect("select_underlay guarantees an IPv4 address");
    let mtu = underlay.mtu.saturating_sub(OVERLAY_OVERHEAD);
    let mut datapath =
        load_datapath(&handle, loc, &underlay, address.0, adopt, mtu, config).await?;
    let crypto = start_crypto(config, loc, &underlay, address.0, &mut datapath)?;
    let peer_name = underlay.mac_string().unwrap_or_else(|| loc.netns.clone());
    let ipam = Ipam::load(
        &loc.ipam_file(),
        &peer_name,
        &config.ipam,
        !state.peers.is_empty(),
    )?;
    let mut inner = Inner {
        datapath,
        netlink: handle,
        state,
        mtu,
        peers: Vec::new(),
        conflicts: Vec::new(),
        written: Default::default(),
        started: Instant::now(),
        last_contact: BTreeMap::new(),
        routes: BTreeMap::new(),
        routes6: BTreeMap::new(),
        pending: Vec::new(),
        pending6: Vec::new(),
        claimed6: std::collections::BTreeSet::new(),
        topology: Default::default(),
        links: Default::default(),
        next_hops: BTreeMap::new(),
        // Filled from the kernel at the first sync: a restarted agent takes over its routes.
        mtu_routes: BTreeMap::new(),
        mtu_routes_read: false,
        plain: Default::default(),
        ipam,
    };
    expose::restore(&mut inner).await?;
    endpoints::adopt_endpoints(&mut inner).await?;
    super::ipv6_only::adopt(&mut inner).await?;
    state::save(&loc.state_dir, &inner.state)?;
    let (service, sockets) = match &config.dns {
        Some(dns_config) => {
            let (service, sockets) = dns::prepare(&mut inner, dns_config).await?;
            (Some(service), Some(sockets))
        }
        None => (None, None),
    };
    let agent = start_gossip(
        config,
        loc,
        &underlay,
        address,
        peer_name,
        inner,
        (crypto, service),
    )
    .await?;
    dns::refresh(&agent, &*agent.inner.lock().await);
    let listener = server::bind_socket(&loc.socket())?;
    Ok((agent, listener, sockets))
}

async fn load_datapath(
    handle: &rtnetlink::Handle,
    loc: &Location,
    underlay: &Link,
    ip: Ipv4Addr,
    adopt: bool,
    mtu: u32,
    config: &DaemonConfig,
) -> Result<Datapath> {
    let mut datapath = Datapath::load(&loc.pin_dir, underlay, adopt)?;
    datapath.start_logging();
    let vxlan_port = data_port(config.port);
    let vxlan_index = netlink::ensure_vxlan(handle, VXLAN_DEVICE, vxlan_port, mtu).await?;
    datapath.attach_overlay(
        VXLAN_DEVICE,
        vxlan_index,
        underlay,
        ip,
        &OverlaySettings {
            vxlan_port,
            ebpf_encap: config.encapsulation == Encapsulation::Ebpf,
            flood_pps: config.flood_pps,
        },
    )?;
    Ok(datapath)
}

/// With a password: the crypto path's device, its program, and the engine, with this
/// agent's key pair (made once, kept in the state directory). The programs drop sealed
/// traffic until the engine vouches for its device.
fn start_crypto(
    config: &DaemonConfig,
    loc: &Location,
    underlay: &Link,
    ip: Ipv4Addr,
    datapath: &mut Datapath,
) -> Result<Option<Engine>> {
    datapath.set_sealing(config.password.is_some())?;
    let Some(password) = &config.password else {
        return Ok(None);
    };
    let pair = crypto::keys::load_or_create(&loc.state_dir)?;
    let identity = Identity::new(pair, crypto::keys::derive_psk(password)?);
    let tap = Tap::create(crypto::TAP_DEVICE, crypto::WORKERS)?;
    datapath.attach_tap(&tap.name)?;
    let engine = Engine::start(
        tap,
        Table::new(identity),
        &loc.pin_dir,
        ip,
        underlay.mtu,
        data_port(config.port),
    )?;
    tracing::info!(
        device = crypto::TAP_DEVICE,
        "container traffic to peers is encrypted"
    );
    Ok(Some(engine))
}

/// Starts gossip with this host's endpoints and rules already in its first state: after a
/// restart, peers never see the new generation alive without them, so they never withdraw
/// them.
async fn start_gossip(
    config: &DaemonConfig,
    loc: &Location,
    underlay: &Link,
    address: (Ipv4Addr, u8),
    peer_name: String,
    mut inner: Inner,
    (crypto, dns): (Option<Engine>, Option<Arc<dns_server::Service>>),
) -> Result<Arc<Agent>> {
    let ip = address.0;
    let nickname = config.nickname.clone().unwrap_or_else(|| loc.netns.clone());
    inner.links = links::heard_now(&mut inner.datapath)?;
    let initial: Vec<(String, String)> = inner
        .state
        .endpoints
        .iter()
        .map(|e| crate::mesh::keys::endpoint_key_value(&e.cidr, &e.mac(), &e.container))
        .chain(inner.state.endpoints.iter().filter_map(|e| {
            let routes = &e.expose.as_ref()?.routes;
            Some(crate::mesh::keys::via_key_value(e.cidr.ip, routes))
        }))
        .chain(inner.state.endpoints.iter().filter_map(|e| {
            Some(crate::mesh::keys::ipv6_key_value(
                e.cidr.ip,
                e.ipv6.as_ref()?,
            ))
        }))
        .chain(
            inner
                .state
                .ipv6_only
                .iter()
                .map(|e| crate::mesh::keys::ipv6_only_key_value(&e.cidr)),
        )
        .chain(
            inner
                .state
                .rules
                .iter()
                .map(|r| (r.gossip_key(), r.gossip_value())),
        )
        .chain(
            named_addresses(&inner.state)
                .into_iter()
                .map(|ip| crate::mesh::keys::names_key_value(ip, &inner.state.names_of(ip))),
        )
        .chain([(LINKS_KEY.to_owned(), encode_links(&inner.links.heard))])
        .chain(crypto.iter().flat_map(|engine| {
            let public = engine.shared.table.read().expect("table").public_key();
            [
                (trust::SEAL_KEY.to_owned(), trust::encode_key(&public)),
                (
                    trust::TRUSTED_KEY.to_owned(),
                    trust::encode_trusted(&config.trusted_subnets),
                ),
            ]
        }))
        .collect();
    let auth_failures = Arc::new(std::sync::Mutex::new(AuthFailures::default()));
    let transport: Box<dyn Transport> = match &config.password {
        Some(password) => {
            let key = sealed_transport::derive_key(password)?;
            Box::new(SealedTransport::new(&key, Arc::clone(&auth_failures)))
        }
        None => Box::new(UdpTransport),
    };
    let traffic = Arc::new(GossipTraffic::default());
    let transport = CountingTransport::new(transport, Arc::clone(&traffic));
    let gossip = Gossip::start(&peer_name, &nickname, ip, config.port, initial, &transport).await?;
    let base = base_status(loc, underlay, address, &inner, peer_name, nickname, config);
    let (shutdown, _) = watch::channel(false);
    Ok(Arc::new(Agent {
        loc: loc.clone(),
        base,
        gossip,
        auth_failures,
        traffic,
        peer_book: PeerBook::new(config.port),
        resolve_now: tokio::sync::Notify::new(),
        resync: tokio::sync::Notify::new(),
        inner: Mutex::new(inner),
        shutdown,
        crypto: crypto.map(std::sync::Mutex::new),
        trusted: config.trusted_subnets.clone(),
        synced: tokio::sync::Notify::new(),
        ipam_changed: tokio::sync::Notify::new(),
        attaches: Default::default(),
        dns,
    }))
}

/// Addresses this host gives DNS names to.
fn named_addresses(state: &state::State) -> std::collections::BTreeSet<Ipv4Addr> {
    state
        .endpoints
        .iter()
        .filter(|e| e.dns_name.is_some())
        .map(|e| e.cidr.ip)
        .chain(state.dns_records.keys().copied())
        .collect()
}

/// The parts of `status` that stay as they are while the agent runs.
fn base_status(
    loc: &Location,
    underlay: &Link,
    address: (Ipv4Addr, u8),
    inner: &Inner,
    peer_name: String,
    nickname: String,
    config: &DaemonConfig,
) -> api::Status {
    let (ip, prefix) = address;
    api::Status {
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
        programs: status::programs(&inner.datapath),
        vxlan: VXLAN_DEVICE.to_owned(),
        gossip_port: config.port,
        data_port: data_port(config.port),
        mtu: inner.mtu,
        endpoints: api::EndpointCounts::default(),
        peers: Vec::new(),
        connections: Vec::new(),
        conflicts: Vec::new(),
        encryption: config.password.is_some(),
        auth_failures: 0,
        auth_failure_sources: BTreeMap::new(),
        counters: Default::default(),
        ipam: Default::default(),
        dns: Default::default(),
    }
}

/// Starts the tasks, reports readiness, and answers the socket until a stop request or a
/// signal; then lets every task finish.
async fn serve(
    agent: Arc<Agent>,
    listener: UnixListener,
    dns_sockets: Option<dns_server::Sockets>,
    config: &DaemonConfig,
    ready: &mut Option<File>,
) -> Result<()> {
    let metrics = metrics::spawn(&agent, config.metrics_addr).await;
    let hellos = Hellos::bind(agent.gossip.self_ip()).await?;
    let tasks = [
        tokio::spawn(sync::sync_loop(Arc::clone(&agent))),
        tokio::spawn(docker_events::docker_loop(Arc::clone(&agent))),
        tokio::spawn(forwarding_watch::watch_loop(Arc::clone(&agent))),
        tokio::spawn(peers::resolve_loop(Arc::clone(&agent))),
        tokio::spawn(links::link_loop(Arc::clone(&agent), hellos)),
    ];
    let docker_plugin = config
        .docker_plugin
        .as_deref()
        .and_then(|name| spawn_docker_plugin(&agent, name));
    let dns_task = match (&agent.dns, dns_sockets) {
        (Some(service), Some(sockets)) => Some(dns_server::spawn(
            Arc::clone(service),
            sockets,
            agent.shutdown.subscribe(),
        )?),
        _ => None,
    };
    tracing::info!(
        netns = %agent.loc.netns,
        underlay = %agent.base.underlay.name,
        socket = %agent.loc.socket().display(),
        "agent ready"
    );
    if let Some(mut pipe) = ready.take() {
        let _ = pipe.write_all(b"ready\n");
    }
    accept_until_stopped(&agent, listener).await?;
    let _ = agent.shutdown.send(true);
    for task in tasks {
        let _ = task.await;
    }
    if let Some(thread) = dns_task {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    if let Some(plugin) = docker_plugin {
        let _ = plugin.await;
    }
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(crypto) = &agent.crypto {
        crypto.lock().expect("crypto engine").stop();
        tracing::info!("encrypted traffic stops with the agent: it is never sent in clear");
    }
    let _ = fs::remove_file(agent.loc.socket());
    tracing::info!(
        "agent stopped; the data path stays attached (pinned in {}); `weave-agent reset` removes it",
        agent.loc.pin_dir.display()
    );
    Ok(())
}

async fn accept_until_stopped(agent: &Arc<Agent>, listener: UnixListener) -> Result<()> {
    let mut stopping = agent.shutdown.subscribe();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = Arc::clone(agent);
                    tokio::spawn(async move {
                        if let Err(err) = server::handle_connection(&agent, stream).await {
                            tracing::warn!("control connection: {err:#}");
                        }
                    });
                }
                Err(err) => tracing::warn!("accepting a control connection: {err}"),
            },
            _ = stopping.changed() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
        }
    }
}

/// Serves Docker's network and IPAM driver protocols, if no other agent on this machine does
/// already (one engine, one driver; the tests' namespace hosts all share one engine).
fn spawn_docker_plugin(agent: &Arc<Agent>, name: &str) -> Option<tokio::task::JoinHandle<()>> {
    let path = crate::plugins::docker::socket_path(name);
    match crate::plugins::docker::claim(&path) {
        Ok(Some(listener)) => {
            tracing::info!(socket = %path.display(), "serving Docker's network and IPAM driver");
            Some(tokio::spawn(crate::plugins::docker::serve(
                Arc::clone(agent),
                listener,
                path,
            )))
        }
        Ok(None) => {
            tracing::info!(
                socket = %path.display(),
                "another agent serves Docker's network driver on this machine"
            );
            None
        }
        Err(err) => {
            tracing::warn!("not serving Docker's network driver: {err:#}");
            None
        }
    }
}

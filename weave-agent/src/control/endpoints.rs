//! The life cycle of local endpoints: attach (to a namespace or a Docker container), run,
//! detach, and adopting what a previous agent attached.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result, bail};

use super::{
    agent::{Agent, Inner, Pending},
    api, dns, forwarding_watch, ipam, ipv6_only,
    location::same_namespace,
    state::LocalEndpoint,
    status::endpoint_info,
    sync,
    withdraw::{keep_dormant, remove_endpoint},
};
use crate::{
    host::{docker, netlink, netns, run_spec::RunSpec},
    ipam::request::AddressRequest,
    net::{
        addressing::{Cidr, Cidr6},
        names::CONTAINER_IFACE,
    },
};

/// The container an endpoint is attached to.
pub struct Target {
    /// As the user named it (netns:NAME, pid:PID, a path, a Docker name or short id).
    pub label: String,
    pub netns: PathBuf,
    pub docker_id: Option<String>,
    /// The full DNS name it gets, if any.
    pub dns_name: Option<String>,
    /// The interface it gets: `ethwe`, or what a CNI runtime asked for.
    pub iface: String,
    /// For a Docker network driver's endpoint: the namespace (Docker's own) where the
    /// container end of the veth waits, configured but without its address, for Docker to
    /// move it into the sandbox at Join. None: the agent puts it into `netns` itself.
    pub left_for_docker: Option<PathBuf>,
    /// It gets the route `224.0.0.0/4` through its interface, so its multicast crosses the
    /// overlay (as Weave gives containers).
    pub multicast_route: bool,
}

/// Refuses an address already used here or anywhere in the mesh, naming where.
pub(super) async fn check_free(agent: &Agent, ip: Ipv4Addr) -> Result<()> {
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
    if let Some(p) = inner.pending.iter().find(|p| p.cidr.ip == ip) {
        bail!(
            "{ip} is already in use: being attached here to {}",
            p.container
        );
    }
    Ok(())
}

/// `attach`: to a namespace, or (without one) to a running Docker container by name or id,
/// one address after the other (a container that has an address already gets one more). If
/// one fails, those this attach added are taken back: nothing half made.
pub async fn attach(
    agent: &Agent,
    addresses: &str,
    container: &str,
    netns: Option<PathBuf>,
    mtu: Option<u32>,
    dns_name: Option<String>,
    multicast_route: bool,
) -> Result<Vec<api::EndpointInfo>> {
    let (requests, ipv6) = crate::ipam::request::parse_with_ipv6(addresses)?;
    let mut target = match netns {
        Some(netns) => Target {
            label: container.to_owned(),
            netns,
            docker_id: None,
            dns_name: None,
            iface: CONTAINER_IFACE.to_owned(),
            left_for_docker: None,
            multicast_route,
        },
        None => Target {
            multicast_route,
            ..docker_target(agent, container).await?
        },
    };
    if let Some(name) = dns_name {
        if agent.dns.is_none() {
            bail!("--dns-name needs the DNS server, and this agent was launched with --no-dns");
        }
        target.dns_name = dns::name_for(agent, &name)?;
    }
    match (requests.is_empty(), ipv6) {
        (true, Some(cidr)) => Ok(vec![ipv6_only::attach(agent, &target, cidr, mtu).await?]),
        _ => attach_dual(agent, &requests, ipv6, &target, mtu).await,
    }
}

/// [`attach_target`], then the IPv6 address `ipv6` beside the first IPv4 one; all of it taken
/// back if the IPv6 address cannot be given.
pub async fn attach_dual(
    agent: &Agent,
    requests: &[AddressRequest],
    ipv6: Option<Cidr6>,
    target: &Target,
    mtu: Option<u32>,
) -> Result<Vec<api::EndpointInfo>> {
    let mut done = attach_target(agent, requests, target, mtu).await?;
    if let Some(cidr) = ipv6 {
        match give_ipv6(agent, target, cidr).await {
            Ok(()) => {
                if let Some(first) = done.first_mut() {
                    first.ipv6 = Some(cidr.to_string());
                }
            }
            Err(err) => {
                take_back(agent, &done).await;
                return Err(err);
            }
        }
    }
    Ok(done)
}

/// Gives the container `target` (attached already, by its first address) the IPv6 address
/// `cidr`: on its `ethwe`, in its state and in gossip, then in the maps by a sync round.
pub(super) async fn give_ipv6(agent: &Agent, target: &Target, cidr: Cidr6) -> Result<()> {
    let (first, iface) = claim_ipv6(agent, target, cidr).await?;
    if let Err(err) = netns::add_ethwe_address6(&target.netns, iface, cidr).await {
        agent.inner.lock().await.claimed6.remove(&cidr.ip);
        return Err(err);
    }
    keep_ipv6(agent, target, first, cidr).await
}

/// The IPv4 address of `target` an IPv6 address is kept with (its first, or the one that took
/// over from it), and its interface; refused if `cidr` is somebody's already or the container
/// has an IPv6 address. The address is claimed until [`keep_ipv6`] (or the caller, failing)
/// lets go of it, so two attaches cannot both take it while the agent's lock is let go.
pub(super) async fn claim_ipv6(
    agent: &Agent,
    target: &Target,
    cidr: Cidr6,
) -> Result<(Ipv4Addr, String)> {
    let mut inner = agent.inner.lock().await;
    if let Some(by) = ipv6_holder(&inner, cidr.ip) {
        bail!("{} is already in use by {by}", cidr.ip);
    }
    let theirs = || {
        inner
            .state
            .endpoints
            .iter()
            .filter(|e| e.netns == target.netns && e.expose.is_none())
    };
    if let Some(held) = theirs().find_map(|e| e.ipv6) {
        bail!(
            "{} has the IPv6 address {held} already: one per container for now",
            target.label
        );
    }
    let first = theirs()
        .min_by_key(|e| e.mac_from.is_some())
        .with_context(|| format!("{} has no IPv4 address to give {cidr} beside", target.label))?;
    let found = (first.cidr.ip, first.iface.clone());
    inner.claimed6.insert(cidr.ip);
    Ok(found)
}

/// Who holds the IPv6 address `ip` here or on a live peer, if anybody does.
pub(super) fn ipv6_holder(inner: &Inner, ip: std::net::Ipv6Addr) -> Option<String> {
    let here = inner
        .state
        .endpoints
        .iter()
        .filter_map(|e| Some((e.ipv6?.ip, e.container.as_str())))
        .chain(
            inner
                .state
                .ipv6_only
                .iter()
                .chain(&inner.pending6)
                .chain(&inner.state.dormant6)
                .map(|e| (e.cidr.ip, e.container.as_str())),
        )
        .chain(inner.claimed6.iter().map(|ip| (*ip, "an attach under way")));
    let there = inner.peers.iter().filter(|p| p.alive).flat_map(|p| {
        p.ipv6
            .values()
            .chain(&p.ipv6_only)
            .map(move |c| (c.ip, p.name.as_str()))
    });
    here.chain(there)
        .find(|(held, _)| *held == ip)
        .map(|(_, by)| by.to_owned())
}

/// Records `cidr` as the IPv6 address of `target` (kept with its IPv4 address `first`): in
/// its state and in gossip, then in the maps by a sync round.
pub(super) async fn keep_ipv6(
    agent: &Agent,
    target: &Target,
    first: Ipv4Addr,
    cidr: Cidr6,
) -> Result<()> {
    {
        let mut inner = agent.inner.lock().await;
        let inner = &mut *inner;
        inner.claimed6.remove(&cidr.ip);
        // Detached (or its container gone) meanwhile: nothing to publish it with.
        let ep = inner
            .state
            .endpoints
            .iter_mut()
            .find(|e| e.cidr.ip == first)
            .with_context(|| {
                format!(
                    "{} went away before {cidr} could be given to it",
                    target.label
                )
            })?;
        ep.ipv6 = Some(cidr);
        agent.save(inner)?;
        agent.gossip.publish_ipv6(first, Some(&cidr)).await;
    }
    tracing::info!(%cidr, container = %target.label, "attached IPv6");
    sync::sync_once(agent).await
}

/// The addresses `requests` ask for, one after the other, attached to `target`; those added
/// are taken back if one fails.
pub async fn attach_target(
    agent: &Agent,
    requests: &[AddressRequest],
    target: &Target,
    mtu: Option<u32>,
) -> Result<Vec<api::EndpointInfo>> {
    let holder = target
        .docker_id
        .clone()
        .unwrap_or_else(|| target.label.clone());
    let mut done = Vec::new();
    for request in requests {
        let attached = async {
            let (cidr, _) = ipam::address_for(agent, request, &holder).await?;
            let attached = attach_endpoint(agent, cidr, target, mtu).await;
            ipam::finished(agent, cidr.ip).await;
            attached
        }
        .await;
        match attached {
            Ok(info) => done.push(info),
            Err(err) => {
                take_back(agent, &done).await;
                return Err(err);
            }
        }
    }
    Ok(done)
}

/// Withdraws the endpoints an attach that failed half-way had made.
pub(super) async fn take_back(agent: &Agent, made: &[api::EndpointInfo]) {
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;
    for info in made {
        let Some(ep) = inner
            .state
            .endpoints
            .iter()
            .find(|e| e.cidr.to_string() == info.cidr)
            .cloned()
        else {
            continue;
        };
        if let Err(err) = remove_endpoint(inner, &agent.gossip, &ep).await {
            tracing::warn!(cidr = %ep.cidr, "taking back an address of a failed attach: {err:#}");
        }
    }
    if let Err(err) = agent.save(inner) {
        tracing::warn!("{err:#}");
    }
}

async fn docker_target(agent: &Agent, container: &str) -> Result<Target> {
    let engine = docker::connect().await?;
    let found = docker::inspect(&engine, container)
        .await?
        .with_context(|| {
            format!(
                "no container {container:?}: not a Docker container name or id, and not \
                 netns:NAME, pid:PID or a netns path"
            )
        })?;
    if found.pid == 0 {
        bail!("container {container} is not running");
    }
    Ok(Target {
        label: container.to_owned(),
        netns: found.netns(),
        dns_name: docker_dns_name(agent, &found.name),
        docker_id: Some(found.id),
        iface: CONTAINER_IFACE.to_owned(),
        left_for_docker: None,
        multicast_route: true,
    })
}

/// A Docker container's name as a DNS name, if it makes one (Docker allows `_` and `.`,
/// which DNS labels do not): such containers simply get none.
fn docker_dns_name(agent: &Agent, docker_name: &str) -> Option<String> {
    let name = docker_name.trim_start_matches('/');
    match dns::name_for(agent, name) {
        Ok(full) => full,
        Err(err) => {
            tracing::info!("container {name} gets no DNS name: {err:#}");
            None
        }
    }
}

/// `run`: creates and starts the container through Docker, attaches it, and removes it again
/// if attaching fails. Returns the full container id.
pub async fn run_container(
    agent: &Agent,
    cidr: &str,
    spec: &RunSpec,
    mtu: Option<u32>,
    multicast_route: bool,
) -> Result<String> {
    let (requests, ipv6) = crate::ipam::request::parse_with_ipv6(cidr)?;
    if let (true, Some(alone)) = (requests.is_empty(), ipv6) {
        // No IPv4 address to allocate, and no DNS server to give: the agent's is on IPv4.
        let engine = docker::connect().await?;
        return run_with(agent, &engine, (None, Some(alone)), spec, mtu, false).await;
    }
    let [request] = requests.as_slice() else {
        bail!("{cidr}: run takes one IPv4 address (and one IPv6 beside it)");
    };
    let engine = docker::connect().await?;
    let holder = format!("run:{}", spec.name.as_deref().unwrap_or("unnamed"));
    // The agent's DNS server, unless the user chose resolvers; its domain is searched first.
    let mut spec = spec.clone();
    if let Some(service) = &agent.dns {
        if spec.dns.is_empty() {
            spec.dns.push(service.address.to_string());
        }
        spec.dns_search.insert(0, service.domain.clone());
    }
    let spec = &spec;
    let (cidr, _) = ipam::address_for(agent, request, &holder).await?;
    let ran = run_with(
        agent,
        &engine,
        (Some(cidr), ipv6),
        spec,
        mtu,
        multicast_route,
    )
    .await;
    ipam::finished(agent, cidr.ip).await;
    ran
}

/// Creates and starts the container of `spec`, then attaches `cidr` (with `ipv6` beside it),
/// or `ipv6` alone; the container is removed again if attaching fails.
async fn run_with(
    agent: &Agent,
    engine: &bollard::Docker,
    (cidr, ipv6): (Option<Cidr>, Option<Cidr6>),
    spec: &RunSpec,
    mtu: Option<u32>,
    multicast_route: bool,
) -> Result<String> {
    match (cidr, ipv6) {
        (Some(cidr), _) => check_free(agent, cidr.ip).await?,
        (None, Some(alone)) => {
            if let Some(by) = ipv6_holder(&*agent.inner.lock().await, alone.ip) {
                bail!("{} is already in use by {by}", alone.ip);
            }
        }
        (None, None) => bail!("run was given no address"),
    }
    let label = cidr
        .map(|c| c.to_string())
        .into_iter()
        .chain(ipv6.map(|c| c.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    let id = docker::create_and_start(engine, spec, &agent.base.peer_name, &label).await?;
    let attached = async {
        let container = docker::inspect(engine, &id)
            .await?
            .filter(|c| c.pid != 0)
            .context("the container exited right after it started")?;
        let target = Target {
            label: spec
                .name
                .clone()
                .unwrap_or_else(|| docker::short_id(&id).to_owned()),
            netns: container.netns(),
            docker_id: Some(id.clone()),
            dns_name: cidr.and(docker_dns_name(agent, &container.name)),
            iface: CONTAINER_IFACE.to_owned(),
            left_for_docker: None,
            multicast_route,
        };
        let Some(cidr) = cidr else {
            let alone = ipv6.context("run was given no address")?;
            return ipv6_only::attach(agent, &target, alone, mtu)
                .await
                .map(|_| ());
        };
        let done = attach_endpoint(agent, cidr, &target, mtu).await?;
        if let Some(v6) = ipv6
            && let Err(err) = give_ipv6(agent, &target, v6).await
        {
            take_back(agent, std::slice::from_ref(&done)).await;
            return Err(err);
        }
        Ok(())
    }
    .await;
    if let Err(err) = attached {
        let _ = docker::remove(engine, &id).await;
        return Err(err.context(format!(
            "attaching {label} to the new container failed, so it was removed again"
        )));
    }
    Ok(id)
}

/// Gives `target` an `ethwe` with `cidr`. The container's namespace is entered without the
/// agent's lock (see [`super::agent`]); the address is reserved meanwhile.
pub async fn attach_endpoint(
    agent: &Agent,
    cidr: Cidr,
    target: &Target,
    mtu: Option<u32>,
) -> Result<api::EndpointInfo> {
    agent.attaches.fetch_add(1, Ordering::SeqCst);
    let counted = decrement_on_drop(&agent.attaches);
    check_free(agent, cidr.ip).await?;
    refuse_host_namespace(target)?;
    let (handle, mtu, first) = reserve(agent, cidr, target, mtu).await?;
    let made = match &first {
        None => {
            let service = agent.dns.as_ref().map(|s| s.address);
            match make_ethwe(&handle, cidr, target, mtu, service).await {
                Ok(index) => {
                    // Before the map entry exists: a router container's super-packets must
                    // never take the eBPF way, not even for the first moments.
                    let forwards = match &target.left_for_docker {
                        None => forwarding_watch::look(&target.netns, &target.iface, cidr.ip).await,
                        Some(_) => vec![
                            "not in its container yet (Docker moves it in at Join), so taken \
                             to forward"
                                .to_owned(),
                        ],
                    };
                    let wire = Wire {
                        index,
                        host_veth: cidr.host_veth(),
                        mac_from: None,
                        forwards,
                    };
                    record(agent, cidr, target, mtu, wire).await
                }
                Err(err) => Err(err),
            }
        }
        Some(first) => add_to(agent, &handle, cidr, target, first).await,
    };
    if made.is_err() {
        // Leave nothing half-made behind: the veth this attach made, or the address it added.
        match &first {
            None => {
                let _ = netlink::delete_link(&handle, &cidr.host_veth()).await;
            }
            Some(_) => {
                let _ =
                    netns::remove_ethwe_address(&target.netns, target.iface.clone(), cidr).await;
            }
        }
        agent.inner.lock().await.pending.retain(|p| p.cidr != cidr);
    }
    let ep = made?;
    tracing::info!(%cidr, container = %ep.container, "attached");
    // Its subnet's routes and policy pairs now, not at the next tick (as `policy` does). In
    // a burst of attaches only the last one waits for that round, which covers the others
    // (each of which still wakes the sync loop): a round per attach made 100 concurrent
    // attaches take 7.5 s instead of 4.2 s (debug build, one host; 5.0 s with this).
    drop(counted);
    if agent.attaches.load(Ordering::SeqCst) > 0 {
        agent.resync.notify_one();
    } else if let Err(err) = sync::sync_once(agent).await {
        tracing::warn!("syncing after attaching {cidr}: {err:#}");
    }
    Ok(endpoint_info(&ep))
}

/// `ethwe` must land in a container, never in a host: ours, or the machine's initial one.
pub(super) fn refuse_host_namespace(target: &Target) -> Result<()> {
    if same_namespace(&target.netns, Path::new("/proc/self/ns/net"))
        || same_namespace(&target.netns, Path::new("/proc/1/ns/net"))
    {
        bail!(
            "{} is the host's own network namespace; containers need one of their own",
            target.label
        );
    }
    Ok(())
}

/// Decrements `count` when dropped: an attach that fails early is no longer under way.
fn decrement_on_drop(count: &AtomicUsize) -> impl Drop + '_ {
    struct Decrement<'a>(&'a AtomicUsize);
    impl Drop for Decrement<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Decrement(count)
}

/// Takes the address and the container for this attach, or says who has them. Returns the
/// container's first endpoint here when it has one already: the new address joins its
/// `ethwe`.
async fn reserve(
    agent: &Agent,
    cidr: Cidr,
    target: &Target,
    mtu: Option<u32>,
) -> Result<(rtnetlink::Handle, u32, Option<LocalEndpoint>)> {
    let mut inner = agent.inner.lock().await;
    // Again under the lock: an attach of the same address that passed check_free at the same
    // time may have got in first.
    check_free_here(&inner, cidr.ip)?;
    let (netns, label) = (target.netns.as_path(), target.label.as_str());
    let same = |ns: &Path, container: &str, docker_id: &Option<String>| {
        ns == netns || container == label || (docker_id.is_some() && *docker_id == target.docker_id)
    };
    let first = inner
        .state
        .endpoints
        .iter()
        .filter(|e| e.expose.is_none() && same(&e.netns, &e.container, &e.docker_id))
        // Its first address, or (that one detached) any other: each names the veth and MAC.
        .min_by_key(|e| e.mac_from.is_some())
        .cloned();
    if let Some(p) = inner
        .pending
        .iter()
        .find(|p| same(&p.netns, &p.container, &p.docker_id))
    {
        bail!("{label} is being attached to {} right now", p.cidr);
    }
    if let Some(alone) = inner
        .state
        .ipv6_only
        .iter()
        .chain(&inner.pending6)
        .find(|e| same(&e.netns, &e.container, &e.docker_id))
    {
        bail!(
            "{label} is attached by {} alone: detach it, then attach both ({cidr},{})",
            alone.cidr,
            alone.cidr
        );
    }
    inner.pending.push(Pending {
        cidr,
        netns: netns.to_owned(),
        container: label.to_owned(),
        docker_id: target.docker_id.clone(),
    });
    let mtu = first.as_ref().map_or(mtu.unwrap_or(inner.mtu), |f| f.mtu);
    Ok((inner.netlink.clone(), mtu, first))
}

/// One more address on the `ethwe` of the container whose endpoint `first` is: same veth,
/// same MAC, same forwarding.
async fn add_to(
    agent: &Agent,
    handle: &rtnetlink::Handle,
    cidr: Cidr,
    target: &Target,
    first: &LocalEndpoint,
) -> Result<LocalEndpoint> {
    let index = netlink::link_index(handle, &first.host_veth)
        .await?
        .with_context(|| {
            format!(
                "{} has lost its veth {}; detach it and attach again",
                target.label, first.host_veth
            )
        })?;
    netns::add_ethwe_address(&target.netns, first.iface.clone(), cidr).await?;
    let wire = Wire {
        index,
        host_veth: first.host_veth.clone(),
        mac_from: Some(first.mac_from.unwrap_or(first.cidr.ip)),
        forwards: first.forwards.clone(),
    };
    record(agent, cidr, target, first.mtu, wire).await
}

/// Where an endpoint's frames come and go: the host end of its veth, the address its MAC is
/// derived from when not its own, and whether it forwards.
struct Wire {
    index: u32,
    host_veth: String,
    mac_from: Option<Ipv4Addr>,
    forwards: Vec<String>,
}

/// The veth pair, its far end configured as `ethwe` inside the container. Returns the host
/// end's index.
async fn make_ethwe(
    handle: &rtnetlink::Handle,
    cidr: Cidr,
    target: &Target,
    mtu: u32,
    service: Option<Ipv4Addr>,
) -> Result<u32> {
    let netns = target.netns.as_path();
    let (host, temp) = (cidr.host_veth(), cidr.peer_temp_name());
    // A leftover of a crash mid-attach would make the create fail.
    netlink::delete_link(handle, &host).await?;
    if let Some(waiting) = &target.left_for_docker {
        let index = netns::create_veth_into(handle, &host, &temp, mtu, waiting).await?;
        netns::configure_waiting_end(waiting, temp, cidr, mtu).await?;
        return Ok(index);
    }
    let index = netns::create_veth_into(handle, &host, &temp, mtu, netns).await?;
    let multicast = target.multicast_route;
    netns::configure_ethwe(
        netns,
        temp,
        target.iface.clone(),
        cidr,
        mtu,
        service,
        multicast,
    )
    .await?;
    Ok(index)
}

/// Puts the endpoint into the maps, gossip and the state: it forwards from here on.
async fn record(
    agent: &Agent,
    cidr: Cidr,
    target: &Target,
    mtu: u32,
    wire: Wire,
) -> Result<LocalEndpoint> {
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;
    let index = wire.index;
    let ep = LocalEndpoint {
        cidr,
        container: target.label.clone(),
        netns: target.netns.clone(),
        host_veth: wire.host_veth,
        mtu,
        docker_id: target.docker_id.clone(),
        forwards: wire.forwards,
        expose: None,
        dns_name: target.dns_name.clone(),
        mac_from: wire.mac_from,
        ipv6: None,
        iface: target.iface.clone(),
        no_multicast_route: !target.multicast_route,
    };
    let first_of_veth = !inner
        .state
        .endpoints
        .iter()
        .any(|e| e.host_veth == ep.host_veth);
    let host = &ep.host_veth;
    let wired: Result<()> = async {
        inner.datapath.set_endpoint(cidr.ip, ep.map_entry(index))?;
        inner.datapath.attach_container(host)?;
        netlink::set_up(&inner.netlink, index).await
    }
    .await;
    if let Err(err) = wired {
        let _ = inner.datapath.remove_endpoint(cidr.ip);
        if first_of_veth {
            let _ = inner.datapath.detach_container(host);
        }
        return Err(err);
    }
    // The map entry is local now, whatever a peer said of the address before.
    inner.written.remote.remove(&cidr.ip);
    inner.written.adopted.remove(&cidr.ip);
    agent.gossip.publish(&cidr, &ep.mac(), &target.label).await;
    inner.pending.retain(|p| p.cidr != cidr);
    inner.state.dormant.retain(|d| d.cidr != cidr);
    inner.state.endpoints.push(ep.clone());
    agent.save(inner)?;
    agent
        .gossip
        .publish_names(cidr.ip, &inner.state.names_of(cidr.ip))
        .await;
    dns::refresh(agent, inner);
    Ok(ep)
}

/// `detach`: every address of the container, or only `address` (an IP or its CIDR).
pub async fn detach(
    agent: &Agent,
    container: &str,
    netns: Option<&Path>,
    address: Option<&str>,
) -> Result<Vec<api::EndpointInfo>> {
    let only: Option<std::net::IpAddr> = address
        .map(|a| {
            let ip = a.split('/').next().unwrap_or(a).trim();
            let ip = ip.strip_prefix("ip:").unwrap_or(ip);
            ip.parse()
                .with_context(|| format!("{a:?} is no address (give 10.32.0.7 or 10.32.0.7/12)"))
        })
        .transpose()?;
    // A Docker name resolves to the id the endpoint recorded.
    let docker_id = match netns {
        Some(_) => None,
        None => match docker::connect().await {
            Ok(engine) => docker::inspect(&engine, container)
                .await
                .ok()
                .flatten()
                .map(|c| c.id),
            Err(_) => None,
        },
    };
    // An exposed address is no container's: `hide` takes it back.
    let matches = |e: &LocalEndpoint| {
        (e.expose.is_none() && e.container == container
            || netns.is_some_and(|n| n == e.netns)
            || (e.docker_id.is_some() && e.docker_id == docker_id))
            && only.is_none_or(|ip| ip == e.cidr.ip)
    };
    let (mut detached, mut any) = detach_matching(agent, matches).await?;
    let (alone, picked) = ipv6_only::detach_matching(agent, |e| {
        (e.container == container
            || netns.is_some_and(|n| n == e.netns)
            || (e.docker_id.is_some() && e.docker_id == docker_id))
            && only.is_none_or(|ip| ip == e.cidr.ip)
    })
    .await?;
    any |= picked;
    detached.extend(alone);
    if !any
        && let Some(std::net::IpAddr::V6(ip)) = only
        && let Some(with) = agent
            .inner
            .lock()
            .await
            .state
            .endpoints
            .iter()
            .find(|e| e.ipv6.is_some_and(|c| c.ip == ip) && e.container == container)
    {
        bail!(
            "{ip} is kept with {} and cannot be detached alone yet: detach the container and \
             attach it again without it",
            with.cidr.ip
        );
    }
    if !any {
        match only {
            Some(ip) => {
                bail!("{container} has no address {ip} on this host (`weave-agent ps` lists them)")
            }
            None => bail!("{container} has no endpoint on this host (`weave-agent ps` lists them)"),
        }
    }
    Ok(detached)
}

/// Detaches every endpoint `matches` picks and forgets the dormant ones it picks. Returns
/// those detached, and whether it picked anything at all.
pub async fn detach_matching(
    agent: &Agent,
    matches: impl Fn(&LocalEndpoint) -> bool,
) -> Result<(Vec<api::EndpointInfo>, bool)> {
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
    let any = !matching.is_empty() || inner.state.dormant.len() != dormant;
    for ep in &matching {
        remove_endpoint(inner, &agent.gossip, ep).await?;
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "detached");
    }
    if any {
        agent.save(inner)?;
        ipam::release_unheld(inner)?;
        agent.ipam_changed.notify_waiters();
    }
    Ok((matching.iter().map(endpoint_info).collect(), any))
}

/// Takes over the endpoints the previous agent attached: those whose veth still exists keep
/// forwarding (their pinned TC links get the new program in place) and are published again;
/// the others are cleaned out of the maps and the state.
pub async fn adopt_endpoints(inner: &mut Inner) -> Result<()> {
    let mut kept = Vec::new();
    for ep in std::mem::take(&mut inner.state.endpoints) {
        match netlink::link_index(&inner.netlink, &ep.host_veth).await? {
            Some(index) => {
                inner.datapath.attach_container(&ep.host_veth)?;
                inner
                    .datapath
                    .set_endpoint(ep.cidr.ip, ep.map_entry(index))?;
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
            inner.written.remote.insert(ip, ep);
            inner.written.adopted.insert(ip);
        }
    }
    // The adopted entries point at these peers; the plan keeps them through the grace.
    inner.written.adopted_peers = inner.datapath.peers()?.into_iter().collect();
    inner.written.adopted6 = inner
        .datapath
        .endpoints6()?
        .into_iter()
        .filter(|(_, ep)| !ep.is_local())
        .collect();
    Ok(())
}

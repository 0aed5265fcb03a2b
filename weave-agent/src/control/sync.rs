//! The sync loop: the mesh's view, reconciled into the maps (see [`super::reconcile`]),
//! whenever chitchat reports a change, a peer's key arrives, or the safety-net tick fires.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use weave_common::{
    endpoint::{ENDPOINT_FORWARDS, ENDPOINT_LOCAL, Endpoint},
    ipv6::{Endpoint6, Ipv6Key},
};

use super::{
    agent::{Agent, Inner},
    peers,
    reconcile::{self, MapOp, MapWriter, View},
    rules,
    state::{Ipv6Endpoint, LocalEndpoint},
    withdraw::{keep_dormant, remove_endpoint},
};
use crate::{
    crypto::{table::PeerConfig, trust},
    datapath::Datapath,
    host::peer_mtu,
    mesh::{gossip::PeerView, topology::routes::Route},
    net::{addressing::Cidr6, ipv6},
};

/// How often the view of the mesh is reconciled into the maps even without a change from
/// chitchat's watcher: the safety net for what it does not report, and how vanished container
/// veths are noticed. Every round costs CPU on every host (measured: 250 ms made an idle
/// agent of the 8 x 50 scale run use 1.4 % of a core, 500 ms 0.7 %).
const SYNC_INTERVAL: Duration = Duration::from_millis(500);

pub async fn sync_loop(agent: Arc<Agent>) {
    let mut changes = agent.gossip.watcher().await;
    let key_set = Arc::new(tokio::sync::Notify::new());
    let _subscription = agent.gossip.on_key_set(key_set.clone()).await;
    let mut stopping = agent.shutdown.subscribe();
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    loop {
        tokio::select! {
            _ = key_set.notified() => {}
            _ = agent.resync.notified() => {}
            _ = changes.changed() => {}
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        if let Err(err) = sync_once(&agent).await {
            tracing::warn!("syncing the mesh into the data path: {err:#}");
        }
    }
}

/// One round: vanished containers withdrawn, rules adopted, the maps reconciled, configured
/// peers contacted; then, without the lock, the containers' routes.
pub async fn sync_once(agent: &Agent) -> Result<()> {
    let peers = agent.gossip.peers().await;
    let (maps, routes, mtu_routes) = {
        let mut guard = agent.inner.lock().await;
        let inner = &mut *guard;
        withdraw_vanished(agent, inner).await?;
        rules::adopt_rules(agent, inner, &peers).await?;
        update_routes(agent, inner, &peers);
        update_sealing(agent, inner, &peers);
        // The address space first: a peer whose ring it refuses this round is left out of
        // the plan at once.
        inner.peers.clone_from(&peers);
        if let Err(err) = super::ipam::sync(agent, inner, &peers).await {
            tracing::warn!("syncing the address space: {err:#}");
        }
        let maps = apply_plan(inner, &peers);
        peers::contact_configured(agent, inner, &peers);
        inner.peers = peers;
        super::dns::refresh(agent, inner);
        agent.synced.notify_waiters();
        (maps, rules::route_work(inner), wanted_mtu_routes(inner))
    };
    rules::sync_routes(agent, routes).await;
    sync_mtu_routes(agent, mtu_routes).await;
    maps
}

/// The MTU routes the host should have: one per peer reached directly over a path narrower
/// than the underlay NIC.
fn wanted_mtu_routes(inner: &Inner) -> BTreeMap<Ipv4Addr, u32> {
    inner
        .next_hops
        .iter()
        .filter(|(_, path)| path.route == Route::Direct && path.mtu != 0)
        .map(|(peer, path)| (*peer, u32::from(path.mtu)))
        .collect()
}

/// Makes the host's MTU routes `wanted`, touching only those that differ from what the
/// kernel holds (read once, at the first sync, so a restarted agent takes over its own).
async fn sync_mtu_routes(agent: &Agent, wanted: BTreeMap<Ipv4Addr, u32>) {
    let (handle, made) = {
        let mut inner = agent.inner.lock().await;
        if !inner.mtu_routes_read {
            match peer_mtu::list(&inner.netlink).await {
                Ok(found) => {
                    inner.mtu_routes = found;
                    inner.mtu_routes_read = true;
                }
                Err(err) => tracing::warn!("listing the MTU routes: {err:#}"),
            }
        }
        (inner.netlink.clone(), inner.mtu_routes.clone())
    };
    if made == wanted {
        return;
    }
    let oif = agent.base.underlay.ifindex;
    let mut now = made.clone();
    for peer in made.keys().filter(|p| !wanted.contains_key(p)) {
        match peer_mtu::remove(&handle, *peer).await {
            Ok(()) => {
                tracing::info!(%peer, "the path to the peer is full size again; MTU route removed");
                now.remove(peer);
            }
            Err(err) => tracing::warn!("{err:#}"),
        }
    }
    for (peer, mtu) in wanted.iter().filter(|(p, m)| made.get(p) != Some(m)) {
        match peer_mtu::set(&handle, *peer, oif, *mtu).await {
            Ok(()) => {
                tracing::info!(%peer, mtu, "MTU route to the peer: the host's own packets fit the narrow hop");
                now.insert(*peer, *mtu);
            }
            Err(err) => tracing::warn!("{err:#}"),
        }
    }
    agent.inner.lock().await.mtu_routes = now;
}

/// Containers that died took their veth with them: withdraw their addresses. One cheap
/// lookup per endpoint rather than a dump of every link, since this runs every round.
async fn withdraw_vanished(agent: &Agent, inner: &mut Inner) -> Result<()> {
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
    let alone: Vec<Ipv6Endpoint> = inner
        .state
        .ipv6_only
        .iter()
        .filter(|ep| !link_exists(&ep.host_veth))
        .cloned()
        .collect();
    for ep in &alone {
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "container gone; withdrawing its address");
        super::ipv6_only::remove(inner, &agent.gossip, ep).await?;
        super::ipv6_only::keep_dormant(inner, ep);
    }
    if !vanished.is_empty() || !alone.is_empty() {
        agent.save(inner)?;
    }
    Ok(())
}

/// Computes how frames reach each live peer, and the path MTU, from the links they publish and
/// whom this host hears, and says which changed. A path MTU the underlay NIC's own MTU already
/// enforces is not written (0): only a narrower hop needs the data path's answer.
fn update_routes(agent: &Agent, inner: &mut Inner, peers: &[PeerView]) {
    let me = agent.gossip.self_ip();
    let mut live = BTreeSet::new();
    for peer in peers.iter().filter(|p| p.alive) {
        if let IpAddr::V4(ip) = peer.address.ip() {
            inner.topology.update(ip, peer.links.as_deref());
            live.insert(ip);
        }
    }
    inner.topology.retain(|ip| live.contains(ip));
    let heard: BTreeSet<Ipv4Addr> = inner.links.heard.keys().copied().collect();
    let underlay_mtu = u16::try_from(agent.base.underlay.mtu).unwrap_or(u16::MAX);
    let mut routes = inner.topology.routes(me, &heard, &live);
    for path in routes.values_mut() {
        if path.mtu >= underlay_mtu {
            path.mtu = 0;
        }
    }
    for (peer, path) in &routes {
        let before = inner.next_hops.get(peer);
        let route_changed = before.map_or(path.route != Route::Direct, |b| b.route != path.route);
        if route_changed {
            match path.route {
                Route::Direct => tracing::info!(%peer, "reaching the peer directly"),
                Route::Via(relay) => {
                    tracing::info!(%peer, %relay, "reaching the peer through a relay")
                }
            }
        }
        if before.map_or(path.mtu != 0, |b| b.mtu != path.mtu) {
            tracing::info!(%peer, mtu = path.mtu, underlay_mtu, "path MTU to the peer (0: the underlay's)");
        }
    }
    inner.next_hops = routes;
}

/// Decides which live peers' frames may cross in clear, and gives the crypto path the others:
/// their keys and how to reach them. Without a password nothing is sealed.
fn update_sealing(agent: &Agent, inner: &mut Inner, peers: &[PeerView]) {
    let Some(crypto) = &agent.crypto else {
        inner.plain.clear();
        return;
    };
    let me = agent.gossip.self_ip();
    let mut plain = BTreeSet::new();
    let mut sealed = Vec::new();
    for peer in peers.iter().filter(|p| p.alive) {
        let IpAddr::V4(ip) = peer.address.ip() else {
            continue;
        };
        let path = inner.next_hops.get(&ip);
        let direct = path.is_none_or(|p| p.route == Route::Direct);
        if trust::plain(me, &agent.trusted, ip, peer.trusted.as_deref(), direct) {
            plain.insert(ip);
            continue;
        }
        let Some(key) = peer.seal_key.as_deref() else {
            continue;
        };
        match trust::parse_key(key) {
            Ok(public) => sealed.push(PeerConfig {
                address: ip,
                public,
                next_hop: path.map_or(ip, |p| p.route.next_hop(ip)),
                mtu: path.map_or(0, |p| p.mtu),
            }),
            Err(err) => tracing::warn!(peer = %ip, "{err:#}"),
        }
    }
    for ip in plain.difference(&inner.plain) {
        tracing::info!(peer = %ip, "both hosts trust the path: traffic with the peer crosses in clear");
    }
    inner.plain = plain;
    let engine = crypto.lock().expect("crypto engine");
    engine
        .shared
        .table
        .write()
        .expect("session table")
        .set_peers(&sealed);
}

/// Applies this round's plan (see [`reconcile::apply_ops`]) and notes its conflicts.
fn apply_plan(inner: &mut Inner, peers: &[PeerView]) -> Result<()> {
    let local: BTreeSet<Ipv4Addr> = inner.state.endpoints.iter().map(|e| e.cidr.ip).collect();
    let local_subnets = inner
        .state
        .endpoints
        .iter()
        .map(|e| e.cidr.subnet())
        .collect();
    let exposed_here = inner
        .state
        .endpoints
        .iter()
        .filter(|e| e.expose.is_some())
        .map(|e| (e.cidr.subnet(), e.cidr.ip))
        .collect();
    let refused = inner.ipam.refused.keys().cloned().collect();
    let mut local_ports: BTreeMap<_, BTreeSet<u32>> = BTreeMap::new();
    for ep in &inner.state.endpoints {
        // A veth Docker has not had made yet (its driver's endpoint before Join) has none.
        if let Some(ifindex) = ifindex_of(&ep.host_veth) {
            local_ports
                .entry(ep.cidr.subnet())
                .or_default()
                .insert(ifindex);
        }
    }
    let local6 = local_ipv6(&inner.state.endpoints, &inner.state.ipv6_only);
    let view = View {
        local6: &local6,
        peers,
        local: &local,
        local_subnets: &local_subnets,
        local_ports: &local_ports,
        exposed_here: &exposed_here,
        rules: &inner.state.rules,
        routes: &inner.next_hops,
        plain: &inner.plain,
        refused: &refused,
    };
    let plan = reconcile::plan(&view, &inner.written, inner.started.elapsed());
    let applied = reconcile::apply_ops(&mut inner.datapath, &mut inner.written, &plan.ops);
    for conflict in &plan.conflicts {
        if !inner.conflicts.contains(conflict) {
            tracing::warn!("address conflict: {conflict}");
        }
    }
    inner.conflicts = plan.conflicts;
    applied
}

/// The IPv6 entries of this host's endpoints: each container's (veth's) once, from the entry
/// of the address that carries its IPv6 address, else of its first address (the MAC, which
/// its link-local address comes from, is the same on every one); and of the containers
/// attached by an IPv6 address alone.
fn local_ipv6(endpoints: &[LocalEndpoint], only: &[Ipv6Endpoint]) -> BTreeMap<Ipv6Key, Endpoint6> {
    let mut by_veth: BTreeMap<&str, &LocalEndpoint> = BTreeMap::new();
    for ep in endpoints {
        let better = |held: &LocalEndpoint| {
            (ep.ipv6.is_some(), ep.mac_from.is_none())
                > (held.ipv6.is_some(), held.mac_from.is_none())
        };
        match by_veth.get(ep.host_veth.as_str()) {
            Some(held) if !better(held) => {}
            _ => {
                by_veth.insert(&ep.host_veth, ep);
            }
        }
    }
    let entries: Vec<(Endpoint, Option<&Cidr6>)> = by_veth
        .values()
        .filter_map(|ep| Some((ep.map_entry(ifindex_of(&ep.host_veth)?), ep.ipv6.as_ref())))
        .collect();
    let mut map = ipv6::map_of(entries.iter().map(|(ep, cidr)| (ep, *cidr)));
    for ep in only {
        let Some(ifindex) = ifindex_of(&ep.host_veth) else {
            continue;
        };
        // Taken to forward: the forwarding probe reads IPv4 settings (see `Ipv6Endpoint`).
        let flags = ENDPOINT_LOCAL | ENDPOINT_FORWARDS;
        map.extend(ipv6::only_entries(&ep.cidr, flags, ifindex, 0));
    }
    map
}

impl MapWriter for Datapath {
    fn apply(&mut self, op: &MapOp) -> Result<()> {
        match op {
            MapOp::SetEndpoint(ip, ep) => self.set_endpoint(*ip, *ep),
            MapOp::RemoveEndpoint(ip) => self.remove_endpoint(*ip),
            MapOp::ForgetRemote(_) => Ok(()),
            MapOp::SetPeers(peers) => self.set_peers(peers),
            MapOp::SetPolicy(pairs) => self.set_policy(pairs),
            MapOp::SetPolicy6(pairs) => self.set_policy6(pairs),
            MapOp::SetSubnets(subnets) => self.set_subnets(subnets),
            MapOp::SetFlood(flood) => self.set_flood(flood),
            MapOp::SetEndpoints6(six) => self.set_endpoints6(six),
        }
    }
}

/// An interface of that name exists in the agent's namespace.
fn link_exists(name: &str) -> bool {
    ifindex_of(name).is_some()
}

/// The index of the interface of that name in the agent's namespace, if there is one.
fn ifindex_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

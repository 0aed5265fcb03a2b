//! What `status`, `ps` and `peers` answer, assembled from the agent's state.

use anyhow::Result;

use super::{
    agent::{Agent, Inner},
    api,
    state::LocalEndpoint,
};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use crate::{
    datapath::Datapath,
    mesh::{gossip::PeerView, topology::routes::Route},
    net::addressing::format_mac,
};

pub async fn status(agent: &Agent) -> Result<api::Status> {
    let inner = agent.inner.lock().await;
    let mut status = agent.base.clone();
    status.counters = counters(&inner.datapath)?;
    let entries = inner.datapath.endpoints()?;
    status.endpoints = api::EndpointCounts {
        // The agent's DNS service is no endpoint of anyone's.
        // Containers attached by IPv6 alone have no IPv4 entry: counted from the state and
        // the peers' gossip, and as forwarding (see `Ipv6Endpoint`).
        local: entries
            .iter()
            .filter(|(_, e)| e.is_local() && !e.service())
            .count()
            + inner.state.ipv6_only.len(),
        remote: entries.iter().filter(|(_, e)| !e.is_local()).count()
            + inner
                .peers
                .iter()
                .filter(|p| p.alive)
                .map(|p| p.ipv6_only.len())
                .sum::<usize>(),
        forwarding: entries
            .iter()
            .filter(|(_, e)| e.is_local() && e.forwards())
            .count()
            + inner.state.ipv6_only.len(),
    };
    status.peers = peer_infos(agent, &inner);
    status.connections = connections(agent, &inner);
    status.conflicts = inner.conflicts.clone();
    status.ipam = super::ipam::info(&inner.ipam);
    status.ipam.subnets = super::ipam::subnet_usage(&inner);
    status.dns = dns_info(agent);
    drop(inner);
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

fn counters(datapath: &Datapath) -> Result<std::collections::BTreeMap<String, api::Counter>> {
    Ok(datapath
        .counters()?
        .into_iter()
        .map(|(name, c)| {
            let counter = api::Counter {
                packets: c.packets,
                bytes: c.bytes,
            };
            (name.to_owned(), counter)
        })
        .collect())
}

/// The programs as `status` shows them.
pub fn programs(datapath: &Datapath) -> Vec<api::Program> {
    datapath
        .programs()
        .into_iter()
        .map(|p| api::Program {
            name: p.name.to_owned(),
            id: p.id,
            attached: p.attached,
        })
        .collect()
}

pub fn endpoint_info(ep: &LocalEndpoint) -> api::EndpointInfo {
    api::EndpointInfo {
        container: ep.container.clone(),
        mac: format_mac(&ep.mac()),
        cidr: ep.cidr.to_string(),
        host_veth: ep.host_veth.clone(),
        mtu: ep.mtu,
        forwards: ep.forwards.clone(),
        expose: ep.expose.as_ref().map(|x| api::ExposeInfo {
            interface: ep.cidr.exposed_iface(),
            routes: x.routes.iter().map(ToString::to_string).collect(),
            masquerade: x.masquerade,
        }),
        dns_name: ep.dns_name.clone(),
        ipv6: ep.ipv6.map(|c| c.to_string()),
    }
}

pub fn endpoint_infos(inner: &Inner) -> Vec<api::EndpointInfo> {
    let alone = inner
        .state
        .ipv6_only
        .iter()
        .map(super::ipv6_only::endpoint_info);
    inner
        .state
        .endpoints
        .iter()
        .map(endpoint_info)
        .chain(alone)
        .collect()
}

/// The route to a live peer at `ip`, as `peers` shows it: `direct` or `via` (with the relay's
/// address and nickname); nothing for a peer that is not live.
fn route_of(inner: &Inner, ip: Option<Ipv4Addr>) -> (String, Option<String>, Option<String>) {
    match ip.and_then(|ip| inner.next_hops.get(&ip)).map(|p| p.route) {
        None => (String::new(), None, None),
        Some(Route::Direct) => ("direct".to_owned(), None, None),
        Some(Route::Via(relay)) => {
            let nickname = inner
                .peers
                .iter()
                .find(|p| p.address.ip() == IpAddr::V4(relay))
                .map(|p| p.nickname.clone());
            ("via".to_owned(), Some(relay.to_string()), nickname)
        }
    }
}

fn v4(addr: std::net::SocketAddr) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// The sessions of the crypto path, by peer.
fn session_infos(agent: &Agent) -> BTreeMap<Ipv4Addr, api::SessionInfo> {
    let Some(crypto) = &agent.crypto else {
        return BTreeMap::new();
    };
    let engine = crypto.lock().expect("crypto engine");
    let reports = engine
        .shared
        .table
        .read()
        .expect("session table")
        .report(std::time::Instant::now());
    reports
        .into_iter()
        .map(|r| {
            let info = api::SessionInfo {
                age_ms: r.session_age.map(|d| d.as_millis() as u64),
                handshakes: r.handshakes,
                sealed_bytes: r.sealed_bytes,
                opened_bytes: r.opened_bytes,
                refused: r.refused,
                dropped_no_session: r.no_session,
            };
            (r.address, info)
        })
        .collect()
}

/// How container traffic with peer `p` crosses: see [`api::PeerInfo::encryption`].
fn encryption_of(agent: &Agent, inner: &Inner, p: &PeerView) -> String {
    if agent.crypto.is_none() {
        return String::new();
    }
    match v4(p.address) {
        Some(ip) if inner.plain.contains(&ip) => "trusted",
        _ if p.seal_key.is_none() => "waiting",
        _ => "sealed",
    }
    .to_owned()
}

/// The mesh's peers, and the configured ones that have not answered yet (`connecting`, or
/// `resolving` while a host name has no address yet).
pub fn peer_infos(agent: &Agent, inner: &Inner) -> Vec<api::PeerInfo> {
    let mut sessions = session_infos(agent);
    let mut out: Vec<api::PeerInfo> = inner
        .peers
        .iter()
        .map(|p| {
            let (route, via, via_nickname) = if p.alive {
                route_of(inner, v4(p.address))
            } else {
                (String::new(), None, None)
            };
            api::PeerInfo {
                name: p.name.clone(),
                nickname: p.nickname.clone(),
                address: p.address.ip().to_string(),
                state: if p.alive { "alive" } else { "dead" }.to_owned(),
                endpoints: p.endpoints.len() + p.ipv6_only.len(),
                generation: p.generation,
                route,
                via,
                via_nickname,
                encryption: encryption_of(agent, inner, p),
                session: v4(p.address).and_then(|ip| sessions.remove(&ip)),
            }
        })
        .collect();
    for peer in &inner.state.peers {
        let (address, state) = match agent.peer_book.address(peer) {
            Some(addr) if inner.peers.iter().any(|p| p.address == addr) => continue,
            Some(addr) => (addr.ip().to_string(), "connecting"),
            None => (peer.clone(), "resolving"),
        };
        out.push(api::PeerInfo {
            name: String::new(),
            nickname: String::new(),
            address,
            state: state.to_owned(),
            endpoints: 0,
            generation: 0,
            route: String::new(),
            via: None,
            via_nickname: None,
            encryption: String::new(),
            session: None,
        });
    }
    out
}

/// The link to each peer: whether both ends hear each other, and if not, which half is
/// missing. The configured peers that have not answered come last, as in `peers`.
pub fn connections(agent: &Agent, inner: &Inner) -> Vec<api::ConnectionInfo> {
    let me = agent.gossip.self_ip();
    let links = &inner.links;
    let mut out: Vec<api::ConnectionInfo> = inner
        .peers
        .iter()
        .map(|p| {
            let ip = v4(p.address);
            let heard_ms_ago = ip
                .and_then(|ip| links.last.get(&ip))
                .map(|at| links.read_at_ns.saturating_sub(*at) / 1_000_000);
            let heard = ip.is_some_and(|ip| links.heard.contains_key(&ip));
            let hears_us = ip.is_some_and(|ip| inner.topology.hears_from(ip, me).is_some());
            let path = ip.and_then(|ip| inner.next_hops.get(&ip));
            let mtu = path.map(|p| p.mtu).filter(|m| *m != 0);
            let (state, via) = match path.map(|p| p.route) {
                _ if !p.alive => ("dead", None),
                Some(Route::Via(relay)) => ("relayed", Some(relay.to_string())),
                Some(Route::Direct) if heard && hears_us => ("direct", None),
                _ => ("trying", None),
            };
            let reason = (state != "direct").then(|| {
                if !p.alive {
                    "no gossip heartbeat from it".to_owned()
                } else if !heard {
                    match heard_ms_ago {
                        Some(ms) => format!("no hello from it for {:.1} s", ms as f64 / 1000.0),
                        None => "no hello from it yet".to_owned(),
                    }
                } else if !hears_us {
                    "it does not hear our hellos".to_owned()
                } else {
                    "the link is new; routes follow at the next sync".to_owned()
                }
            });
            api::ConnectionInfo {
                name: p.name.clone(),
                nickname: p.nickname.clone(),
                address: p.address.ip().to_string(),
                state: state.to_owned(),
                via,
                reason,
                heard_ms_ago,
                hears_us,
                mtu,
            }
        })
        .collect();
    for p in peer_infos(agent, inner)
        .into_iter()
        .filter(|p| p.state == "connecting" || p.state == "resolving")
    {
        out.push(api::ConnectionInfo {
            name: String::new(),
            nickname: String::new(),
            address: p.address,
            reason: Some(format!(
                "configured, {}",
                if p.state == "connecting" {
                    "not answering gossip"
                } else {
                    "its name does not resolve yet"
                }
            )),
            state: p.state,
            via: None,
            heard_ms_ago: None,
            hears_us: false,
            mtu: None,
        });
    }
    out
}

fn dns_info(agent: &Agent) -> api::DnsInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(service) = &agent.dns else {
        return api::DnsInfo::default();
    };
    let c = &service.counters;
    api::DnsInfo {
        enabled: true,
        address: Some(service.address),
        domain: service.domain.clone(),
        upstreams: service.upstreams.iter().map(ToString::to_string).collect(),
        records: service.zone().len(),
        answered: c.answered.load(Relaxed),
        forwarded: c.forwarded.load(Relaxed),
        upstream_failed: c.upstream_failed.load(Relaxed),
        malformed: c.malformed.load(Relaxed),
    }
}

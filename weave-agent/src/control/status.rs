//! What `status`, `ps` and `peers` answer, assembled from the agent's state.

use anyhow::Result;

use super::{
    agent::{Agent, Inner},
    api,
    state::LocalEndpoint,
};
use crate::{datapath::Datapath, net::addressing::format_mac};

pub async fn status(agent: &Agent) -> Result<api::Status> {
    let inner = agent.inner.lock().await;
    let mut status = agent.base.clone();
    status.counters = counters(&inner.datapath)?;
    let entries = inner.datapath.endpoints()?;
    status.endpoints = api::EndpointCounts {
        local: entries.iter().filter(|(_, e)| e.is_local()).count(),
        remote: entries.iter().filter(|(_, e)| !e.is_local()).count(),
        forwarding: entries
            .iter()
            .filter(|(_, e)| e.is_local() && e.forwards())
            .count(),
    };
    status.peers = peer_infos(agent, &inner);
    status.conflicts = inner.conflicts.clone();
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
        mac: format_mac(&ep.cidr.mac()),
        cidr: ep.cidr.to_string(),
        host_veth: ep.host_veth.clone(),
        mtu: ep.mtu,
        forwards: ep.forwards.clone(),
    }
}

pub fn endpoint_infos(inner: &Inner) -> Vec<api::EndpointInfo> {
    inner.state.endpoints.iter().map(endpoint_info).collect()
}

/// The mesh's peers, and the configured ones that have not answered yet (`connecting`, or
/// `resolving` while a host name has no address yet).
pub fn peer_infos(agent: &Agent, inner: &Inner) -> Vec<api::PeerInfo> {
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
        });
    }
    out
}

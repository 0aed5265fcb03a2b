//! Isolation rules as the sync loop keeps them: adopted from the mesh, and turned into on-link
//! routes inside the containers they concern. (Rules made here: `rule_set`; the policy map
//! itself comes from the reconcile plan.)

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};

use anyhow::Result;

use super::{
    agent::{Agent, Inner},
    api,
};
use crate::{
    host::{netns, routes::RouteHolder},
    mesh::gossip::PeerView,
    net::{
        addressing::Cidr,
        exposure::{self, ContainerRoute},
        names::EXPOSED_LABEL,
        policy::{self, Rule, Subnet},
    },
};

pub fn rule_infos(inner: &Inner) -> Vec<api::RuleInfo> {
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

/// Adopts newer rules from the mesh: kept, saved and republished, so a rule outlives the agent
/// that made it.
pub async fn adopt_rules(agent: &Agent, inner: &mut Inner, peers: &[PeerView]) -> Result<()> {
    let merged: Vec<Rule> = policy::merge(
        inner
            .state
            .rules
            .iter()
            .chain(peers.iter().flat_map(|p| &p.rules)),
    )
    .into_values()
    .collect();
    if merged == inner.state.rules {
        return Ok(());
    }
    for rule in merged.iter().filter(|r| !inner.state.rules.contains(r)) {
        tracing::info!(a = %rule.a, b = %rule.b, action = %rule.action, by = %rule.by, "isolation rule");
        agent.gossip.publish_rule(rule).await;
    }
    inner.state.rules = merged;
    agent.save(inner)
}

/// Routes one endpoint needs changed: its address, namespace and interface, and the routes it
/// should have.
pub struct RouteWork {
    ip: Ipv4Addr,
    netns: PathBuf,
    holder: RouteHolder,
    wanted: BTreeSet<ContainerRoute>,
}

/// The endpoints whose routes differ from what the rules and the exposed addresses of the
/// mesh want. An exposed address gets the on-link routes of its rules on its interface in the
/// host, so the host answers what a rule lets in; never a route through an exposed address.
pub fn route_work(inner: &mut Inner) -> Vec<RouteWork> {
    let endpoints: BTreeSet<Ipv4Addr> = inner.state.endpoints.iter().map(|e| e.cidr.ip).collect();
    inner.routes.retain(|ip, _| endpoints.contains(ip));
    let exposures = exposures(inner);
    inner
        .state
        .endpoints
        .iter()
        .filter_map(|ep| {
            let subnet = ep.cidr.subnet();
            let on_link = policy::routes_for(&inner.state.rules, &subnet);
            let (holder, wanted) = if ep.expose.is_some() {
                let wanted = on_link.into_iter().map(ContainerRoute::on_link).collect();
                (RouteHolder::exposed(ep.cidr.exposed_iface()), wanted)
            } else {
                let wanted = exposure::container_routes(
                    &subnet,
                    &on_link,
                    exposures
                        .iter()
                        .map(|(cidr, routes)| (*cidr, routes.as_slice())),
                );
                (RouteHolder::container(), wanted)
            };
            (inner.routes.get(&ep.cidr.ip) != Some(&wanted)).then(|| RouteWork {
                ip: ep.cidr.ip,
                netns: ep.netns.clone(),
                holder,
                wanted,
            })
        })
        .collect()
}

/// Every exposed address in the mesh (here and on live peers) with the networks it routes.
fn exposures(inner: &Inner) -> Vec<(Cidr, Vec<Subnet>)> {
    let here = inner
        .state
        .endpoints
        .iter()
        .filter_map(|ep| Some((ep.cidr, ep.expose.as_ref()?.routes.clone())));
    let there = inner.peers.iter().filter(|p| p.alive).flat_map(|peer| {
        peer.endpoints
            .iter()
            .filter(|ep| ep.container == EXPOSED_LABEL)
            .map(|ep| {
                let routes = peer.exposed_routes.get(&ep.cidr.ip).cloned();
                (ep.cidr, routes.unwrap_or_default())
            })
    });
    here.chain(there).collect()
}

/// Makes the routes inside each container, without the agent's lock, then records them.
pub async fn sync_routes(agent: &Agent, work: Vec<RouteWork>) {
    for job in work {
        match netns::sync_routes(&job.netns, job.holder, job.wanted.clone()).await {
            Ok(()) => {
                let mut inner = agent.inner.lock().await;
                // Only while the endpoint is still there: a detach meanwhile took its routes.
                if inner.state.endpoints.iter().any(|e| e.cidr.ip == job.ip) {
                    inner.routes.insert(job.ip, job.wanted);
                }
            }
            // Tried again next round; the container may be going away.
            Err(err) => {
                tracing::warn!(ip = %job.ip, "routes for isolation rules and exposed addresses: {err:#}")
            }
        }
    }
}

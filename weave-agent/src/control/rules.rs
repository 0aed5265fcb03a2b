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
    host::netns,
    mesh::gossip::PeerView,
    net::policy::{self, Rule, Subnet},
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

/// Routes one container needs changed: its endpoint, namespace and the routes it should have.
pub struct RouteWork {
    ip: Ipv4Addr,
    netns: PathBuf,
    wanted: BTreeSet<Subnet>,
}

/// The containers whose on-link routes differ from what the rules want.
pub fn route_work(inner: &mut Inner) -> Vec<RouteWork> {
    let endpoints: BTreeSet<Ipv4Addr> = inner.state.endpoints.iter().map(|e| e.cidr.ip).collect();
    inner.routes.retain(|ip, _| endpoints.contains(ip));
    inner
        .state
        .endpoints
        .iter()
        .filter_map(|ep| {
            let wanted = policy::routes_for(&inner.state.rules, &ep.cidr.subnet());
            (inner.routes.get(&ep.cidr.ip) != Some(&wanted)).then(|| RouteWork {
                ip: ep.cidr.ip,
                netns: ep.netns.clone(),
                wanted,
            })
        })
        .collect()
}

/// Makes the routes inside each container, without the agent's lock, then records them.
pub async fn sync_routes(agent: &Agent, work: Vec<RouteWork>) {
    for job in work {
        match netns::sync_routes(&job.netns, job.wanted.clone()).await {
            Ok(()) => {
                let mut inner = agent.inner.lock().await;
                // Only while the endpoint is still there: a detach meanwhile took its routes.
                if inner.state.endpoints.iter().any(|e| e.cidr.ip == job.ip) {
                    inner.routes.insert(job.ip, job.wanted);
                }
            }
            // Tried again next round; the container may be going away.
            Err(err) => tracing::warn!(ip = %job.ip, "routes for isolation rules: {err:#}"),
        }
    }
}

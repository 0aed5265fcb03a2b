//! Isolation rules in the control plane: set here, adopted from the mesh, and turned into
//! on-link routes inside the containers they concern. (The policy map itself comes from the
//! reconcile plan.)

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, Result};

use super::{
    agent::{Agent, Inner},
    api, sync,
};
use crate::{
    host::netns,
    mesh::gossip::PeerView,
    net::{
        clock::unix_millis,
        policy::{self, Action, Rule, Subnet},
    },
};

/// `policy allow|deny A B`: the new rule supersedes any earlier word on the pair, here and, by
/// gossip, on every host.
pub async fn set_rule(
    agent: &Agent,
    action: Action,
    a: &str,
    b: &str,
) -> Result<Vec<api::RuleInfo>> {
    let (a, b): (Subnet, Subnet) = (a.parse()?, b.parse()?);
    let now = unix_millis();
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
        agent.save(&inner)?;
        agent.gossip.publish_rule(&rule).await;
        tracing::info!(a = %rule.a, b = %rule.b, action = %rule.action, "isolation rule set here");
    }
    // Into this host's data path now rather than at the next tick.
    sync::sync_once(agent).await?;
    Ok(rule_infos(&*agent.inner.lock().await))
}

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

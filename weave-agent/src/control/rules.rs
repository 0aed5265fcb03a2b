//! Isolation rules as the sync loop keeps them: adopted from the mesh, and turned into on-link
//! routes inside the containers they concern. (Rules made here: `rule_set`; the policy map
//! itself comes from the reconcile plan.)

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::Result;

use super::{
    agent::{Agent, Inner},
    api,
    state::LocalEndpoint,
};
use crate::{
    host::{netns, routes::RouteHolder},
    mesh::gossip::PeerView,
    net::{
        addressing::Cidr,
        exposure::{self, ContainerRoute},
        names::{CONTAINER_IFACE, EXPOSED_LABEL},
        policy::{self, Rule, Subnet, Subnet6},
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

/// Routes one holder needs changed: its veth (a container's addresses share one), namespace
/// and interface, and the routes it should have.
pub struct RouteWork {
    veth: String,
    netns: PathBuf,
    holder: RouteHolder,
    wanted: BTreeSet<ContainerRoute>,
    /// The on-link routes the IPv6 rules open to a container with an IPv6 address.
    wanted6: BTreeSet<Subnet6>,
}

/// The endpoints whose routes differ from what the rules and the exposed addresses of the
/// mesh want. An exposed address gets the on-link routes of its rules on its interface in the
/// host, so the host answers what a rule lets in; never a route through an exposed address.
/// A container with several addresses gets the routes of all its subnets on its one `ethwe`,
/// one route per network (its first address's, where two subnets route a network apart).
pub fn route_work(inner: &mut Inner) -> Vec<RouteWork> {
    let veths: BTreeSet<&str> = inner
        .state
        .endpoints
        .iter()
        .map(|e| e.host_veth.as_str())
        .chain(inner.state.ipv6_only.iter().map(|e| e.host_veth.as_str()))
        .collect();
    inner.routes.retain(|veth, _| veths.contains(veth.as_str()));
    inner
        .routes6
        .retain(|veth, _| veths.contains(veth.as_str()));
    let exposures = exposures(inner);
    let mut work: Vec<RouteWork> = Vec::new();
    // A Docker driver's endpoint has no namespace until Docker moves its veth in: nothing to
    // route in yet.
    let mut endpoints: Vec<&LocalEndpoint> = inner
        .state
        .endpoints
        .iter()
        .filter(|e| e.netns.exists())
        .collect();
    // First addresses first: theirs win a network two subnets route apart.
    endpoints.sort_by_key(|e| e.mac_from.is_some());
    for ep in endpoints {
        let subnet = ep.cidr.subnet();
        let on_link = policy::routes_for(&inner.state.rules, &subnet);
        let (holder, wanted): (RouteHolder, BTreeSet<ContainerRoute>) = if ep.expose.is_some() {
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
            (RouteHolder::container(&ep.iface), wanted)
        };
        match work.iter_mut().find(|w| w.veth == ep.host_veth) {
            Some(job) => {
                for route in wanted {
                    if !job.wanted.iter().any(|r| r.to == route.to) {
                        job.wanted.insert(route);
                    }
                }
            }
            None => work.push(RouteWork {
                veth: ep.host_veth.clone(),
                netns: ep.netns.clone(),
                holder,
                wanted,
                wanted6: BTreeSet::new(),
            }),
        }
        if let (Some(cidr), Some(job)) = (ep.ipv6, work.iter_mut().find(|w| w.veth == ep.host_veth))
        {
            let own = Subnet6::new(cidr.ip, cidr.prefix);
            job.wanted6
                .extend(policy::routes_for6(&inner.state.rules, &own));
        }
    }
    // A container attached by IPv6 alone has the IPv6 rules' routes only.
    for ep in inner.state.ipv6_only.iter().filter(|e| e.netns.exists()) {
        let own = Subnet6::new(ep.cidr.ip, ep.cidr.prefix);
        work.push(RouteWork {
            veth: ep.host_veth.clone(),
            netns: ep.netns.clone(),
            holder: RouteHolder::container(CONTAINER_IFACE),
            wanted: BTreeSet::new(),
            wanted6: policy::routes_for6(&inner.state.rules, &own),
        });
    }
    // The kernel's own route to each subnet the holder has an address in stays the only one.
    for job in &mut work {
        let own: Vec<Subnet> = inner
            .state
            .endpoints
            .iter()
            .filter(|e| e.host_veth == job.veth)
            .map(|e| e.cidr.subnet())
            .collect();
        job.wanted.retain(|r| !own.contains(&r.to));
    }
    work.retain(|job| {
        inner.routes.get(&job.veth) != Some(&job.wanted)
            || inner.routes6.get(&job.veth).unwrap_or(&BTreeSet::new()) != &job.wanted6
    });
    work
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
        let iface = job.holder.iface.clone();
        let v4 = netns::sync_routes(&job.netns, job.holder, job.wanted.clone()).await;
        let done = match v4 {
            Ok(()) => netns::sync_routes6(&job.netns, iface, job.wanted6.clone()).await,
            Err(err) => Err(err),
        };
        match done {
            Ok(()) => {
                let mut inner = agent.inner.lock().await;
                // Only while the holder is still there: a detach meanwhile took its routes.
                let state = &inner.state;
                if state.endpoints.iter().any(|e| e.host_veth == job.veth)
                    || state.ipv6_only.iter().any(|e| e.host_veth == job.veth)
                {
                    inner.routes6.insert(job.veth.clone(), job.wanted6);
                    inner.routes.insert(job.veth, job.wanted);
                }
            }
            // Tried again next round; the container may be going away.
            Err(err) => {
                tracing::warn!(veth = %job.veth, "routes for isolation rules and exposed addresses: {err:#}")
            }
        }
    }
}

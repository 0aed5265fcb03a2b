//! Following Docker's events while Docker runs: a container of ours that dies is withdrawn
//! from the mesh at once, one that starts again gets its address back, one that is removed is
//! forgotten. Without Docker this waits quietly; netns and pid attachments do not need it.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt as _;

use super::{
    agent::Agent,
    endpoints::{Target, attach_endpoint, give_ipv6},
    state::{Ipv6Endpoint, LocalEndpoint},
    withdraw::{keep_dormant, remove_endpoint},
};
use crate::{host::docker, net::names::CONTAINER_IFACE};

/// How often the agent looks for a Docker engine while none answers.
const DOCKER_RETRY: Duration = Duration::from_secs(2);

pub async fn docker_loop(agent: Arc<Agent>) {
    let mut stopping = agent.shutdown.subscribe();
    loop {
        if let Ok(engine) = docker::connect().await {
            tracing::debug!("following Docker events");
            if follow(&agent, &engine, &mut stopping).await.is_break() {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(DOCKER_RETRY) => {}
            _ = stopping.changed() => return,
        }
    }
}

/// Follows one engine's events until its stream ends (continue) or the agent stops (break).
async fn follow(
    agent: &Agent,
    engine: &bollard::Docker,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> std::ops::ControlFlow<()> {
    // Containers that started while we were not looking.
    let dormant: std::collections::BTreeSet<String> = {
        let inner = agent.inner.lock().await;
        let state = &inner.state;
        state
            .dormant
            .iter()
            .filter_map(|d| d.docker_id.clone())
            .chain(state.dormant6.iter().filter_map(|d| d.docker_id.clone()))
            .collect()
    };
    for id in dormant {
        container_started(agent, engine, &id).await;
    }
    let mut events = docker::events(engine);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    let id = event.actor.and_then(|a| a.id).unwrap_or_default();
                    match event.action.as_deref() {
                        Some("start") => container_started(agent, engine, &id).await,
                        Some("die") => container_died(agent, &id, false).await,
                        Some("destroy") => container_died(agent, &id, true).await,
                        _ => {}
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!("Docker events: {err}");
                    return std::ops::ControlFlow::Continue(());
                }
                None => return std::ops::ControlFlow::Continue(()),
            },
            _ = stopping.changed() => return std::ops::ControlFlow::Break(()),
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
    // Attached by IPv6 alone: withdrawn, and kept for a restart the same way.
    let alone: Vec<_> = inner
        .state
        .ipv6_only
        .iter()
        .filter(|e| e.docker_id.as_deref() == Some(id))
        .cloned()
        .collect();
    for ep in &alone {
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "container died; withdrawing its address");
        if let Err(err) = super::ipv6_only::remove(inner, &agent.gossip, ep).await {
            tracing::warn!("withdrawing {}: {err:#}", ep.cidr);
        }
        super::ipv6_only::keep_dormant(inner, ep);
    }
    let before = inner.state.dormant.len();
    let before6 = inner.state.dormant6.len();
    if destroyed {
        inner
            .state
            .dormant
            .retain(|d| d.docker_id.as_deref() != Some(id));
        inner
            .state
            .dormant6
            .retain(|d| d.docker_id.as_deref() != Some(id));
    }
    if (!gone.is_empty()
        || !alone.is_empty()
        || inner.state.dormant.len() != before
        || inner.state.dormant6.len() != before6)
        && let Err(err) = agent.save(inner)
    {
        tracing::warn!("{err:#}");
    }
}

/// Gives a container that started again every address it had, its first one first (which
/// makes `ethwe`, with the MAC derived from it).
async fn container_started(agent: &Agent, engine: &bollard::Docker, id: &str) {
    let mut dormant: Vec<LocalEndpoint> = {
        let mut inner = agent.inner.lock().await;
        let (theirs, others) = std::mem::take(&mut inner.state.dormant)
            .into_iter()
            .partition(|d| d.docker_id.as_deref() == Some(id));
        inner.state.dormant = others;
        theirs
    };
    dormant.sort_by_key(|ep| ep.mac_from.is_some());
    for ep in dormant {
        restore(agent, engine, id, ep).await;
    }
    let alone: Vec<Ipv6Endpoint> = {
        let mut inner = agent.inner.lock().await;
        let (theirs, others) = std::mem::take(&mut inner.state.dormant6)
            .into_iter()
            .partition(|d| d.docker_id.as_deref() == Some(id));
        inner.state.dormant6 = others;
        theirs
    };
    for ep in alone {
        restore6(agent, engine, id, ep).await;
    }
}

/// What the container `id` that started again is attached as: its new namespace, the rest as
/// `target` has it.
async fn started_again(
    engine: &bollard::Docker,
    id: &str,
    target: Target,
) -> anyhow::Result<Target> {
    let container = docker::inspect(engine, id)
        .await?
        .filter(|c| c.pid != 0)
        .context("the container is not running")?;
    Ok(Target {
        netns: container.netns(),
        docker_id: Some(container.id),
        ..target
    })
}

/// [`restore`] for a container attached by an IPv6 address alone.
async fn restore6(agent: &Agent, engine: &bollard::Docker, id: &str, ep: Ipv6Endpoint) {
    let result = async {
        let as_before = Target {
            label: ep.container.clone(),
            netns: ep.netns.clone(),
            docker_id: ep.docker_id.clone(),
            dns_name: None,
            iface: CONTAINER_IFACE.to_owned(),
            left_for_docker: None,
            multicast_route: false,
        };
        let target = started_again(engine, id, as_before).await?;
        super::ipv6_only::attach(agent, &target, ep.cidr, Some(ep.mtu)).await
    }
    .await;
    match result {
        Ok(_) => {
            tracing::info!(cidr = %ep.cidr, container = %ep.container, "container started again; address restored")
        }
        Err(err) => {
            tracing::warn!(cidr = %ep.cidr, container = %ep.container, "restoring the address: {err:#}");
            let mut inner = agent.inner.lock().await;
            super::ipv6_only::keep_dormant(&mut inner, &ep);
        }
    }
}

async fn restore(agent: &Agent, engine: &bollard::Docker, id: &str, ep: LocalEndpoint) {
    let result = async {
        let as_before = Target {
            label: ep.container.clone(),
            netns: ep.netns.clone(),
            docker_id: ep.docker_id.clone(),
            dns_name: ep.dns_name.clone(),
            iface: ep.iface.clone(),
            left_for_docker: None,
            multicast_route: !ep.no_multicast_route,
        };
        let target = started_again(engine, id, as_before).await?;
        attach_endpoint(agent, ep.cidr, &target, Some(ep.mtu)).await?;
        anyhow::Ok(target)
    }
    .await;
    match result {
        Ok(target) => {
            tracing::info!(cidr = %ep.cidr, container = %ep.container, "container started again; address restored");
            // The new namespace holds none of the old one's addresses: the IPv6 one comes
            // back too. Should another container have taken it meanwhile, the IPv4 address
            // stays restored and the log says why the IPv6 one is not.
            if let Some(v6) = ep.ipv6
                && let Err(err) = give_ipv6(agent, &target, v6).await
            {
                tracing::warn!(%v6, container = %ep.container, "restoring the IPv6 address: {err:#}");
            }
        }
        Err(err) => {
            tracing::warn!(cidr = %ep.cidr, container = %ep.container, "restoring the address: {err:#}");
            let mut inner = agent.inner.lock().await;
            keep_dormant(&mut inner, &ep);
        }
    }
}

//! Keeps each local endpoint's "forwards" mark (see `host::forwarding`) true to its container:
//! a watcher per endpoint listens to the container's netlink notifications and looks again on
//! each one, so switching forwarding on or off takes effect within a fraction of a second,
//! with no polling cost while nothing changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::task::JoinHandle;

use super::agent::Agent;
use crate::host::{
    forwarding::{self, Changes},
    netlink,
};

/// How often the set of endpoints is compared with the set of watchers. An endpoint's first
/// mark comes from the attach itself (see [`look`]), so this only bounds how long a change
/// made right after the attach can go unseen.
const WATCHERS_INTERVAL: Duration = Duration::from_millis(250);

/// One endpoint as a watcher knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Watched {
    ip: Ipv4Addr,
    host_veth: String,
    netns: PathBuf,
    iface: String,
}

/// Why the container in `netns`, whose `ethwe` holds `address`, may send a received packet on.
/// A container that cannot be looked at is taken to forward: the kernel's way is right for
/// every container, eBPF's only for those that do not forward.
pub async fn look(netns: &Path, iface: &str, address: Ipv4Addr) -> Vec<String> {
    match forwarding::probe(netns, iface.to_owned(), address).await {
        Ok(facts) => facts.reasons(),
        Err(err) => vec![format!("not known ({err:#}), so taken to forward")],
    }
}

/// Starts a watcher for each endpoint attached, ends it when the endpoint goes.
pub async fn watch_loop(agent: Arc<Agent>) {
    let mut watchers: BTreeMap<Watched, JoinHandle<()>> = BTreeMap::new();
    let mut stopping = agent.shutdown.subscribe();
    let mut tick = tokio::time::interval(WATCHERS_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => break,
        }
        let attached: BTreeSet<Watched> = {
            let inner = agent.inner.lock().await;
            inner
                .state
                .endpoints
                .iter()
                // The host behind an exposed address forwards by design: nothing to watch. A
                // Docker driver's endpoint is watched once Docker has made its namespace.
                .filter(|e| e.expose.is_none() && e.netns.exists())
                .map(|e| Watched {
                    ip: e.cidr.ip,
                    host_veth: e.host_veth.clone(),
                    netns: e.netns.clone(),
                    iface: e.iface.clone(),
                })
                .collect()
        };
        watchers.retain(|w, task| {
            let keep = attached.contains(w);
            if !keep {
                task.abort();
            }
            keep
        });
        for w in attached {
            watchers
                .entry(w.clone())
                .or_insert_with(|| tokio::spawn(watch(Arc::clone(&agent), w)));
        }
    }
    for task in watchers.values() {
        task.abort();
    }
}

/// Subscribes first and looks second, so no change can fall between the two; then looks again
/// after every notification.
async fn watch(agent: Arc<Agent>, w: Watched) {
    let mut changes = match Changes::subscribe(&w.netns).await {
        Ok(changes) => Some(changes),
        Err(err) => {
            tracing::warn!(ip = %w.ip, "cannot watch the container's forwarding: {err:#}");
            None
        }
    };
    loop {
        let reasons = match changes {
            Some(_) => look(&w.netns, &w.iface, w.ip).await,
            None => vec!["not watched, so taken to forward".to_owned()],
        };
        if let Err(err) = mark(&agent, &w, reasons).await {
            tracing::warn!(ip = %w.ip, "updating the endpoint's forwarding mark: {err:#}");
        }
        let Some(feed) = changes.as_mut() else {
            return;
        };
        if let Err(err) = feed.next().await {
            tracing::warn!(ip = %w.ip, "watching the container's forwarding: {err:#}");
            changes = None;
        }
    }
}

/// Records `reasons` for the endpoint and rewrites its map entry if its mark changed; nothing
/// if the endpoint has gone meanwhile.
async fn mark(agent: &Agent, w: &Watched, reasons: Vec<String>) -> Result<()> {
    let mut guard = agent.inner.lock().await;
    let inner = &mut *guard;
    let Some(ep) = inner
        .state
        .endpoints
        .iter_mut()
        .find(|e| e.cidr.ip == w.ip && e.host_veth == w.host_veth)
    else {
        return Ok(());
    };
    if ep.forwards == reasons {
        return Ok(());
    }
    let index = netlink::link_index(&inner.netlink, &w.host_veth)
        .await?
        .with_context(|| format!("{} is gone", w.host_veth))?;
    if reasons.is_empty() {
        tracing::info!(cidr = %ep.cidr, "the container no longer forwards");
    } else {
        tracing::info!(cidr = %ep.cidr, why = %reasons.join("; "), "the container forwards");
    }
    ep.forwards = reasons;
    let entry = ep.map_entry(index);
    inner.datapath.set_endpoint(w.ip, entry)?;
    agent.save(inner)
}

//! Configured peers: joining, contacting the ones not live yet, resolving host names in the
//! background (never under the lock, never on the gossip task).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::agent::{Agent, Inner};
use crate::mesh::{
    gossip::PeerView,
    peer_addr::{PeerSpec, system_resolver},
};

/// How often a configured peer that is not live is contacted again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often host names among the configured peers are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// `join ADDR`: remembers the peer and contacts it now (once resolved, for a host name).
pub async fn join(agent: &Agent, peer: &str) -> Result<String> {
    PeerSpec::parse(peer, agent.peer_book.default_port())?;
    let mut inner = agent.inner.lock().await;
    if !inner.state.peers.iter().any(|p| p == peer) {
        inner.state.peers.push(peer.to_owned());
        agent.save(&inner)?;
    }
    let Some(addr) = agent.peer_book.address(peer) else {
        agent.resolve_now.notify_one();
        return Ok(format!("{peer} (resolving)"));
    };
    agent
        .gossip
        .contact(addr)
        .with_context(|| format!("contacting {addr}"))?;
    inner.last_contact.insert(addr, Instant::now());
    Ok(addr.to_string())
}

/// Configured peers that are not live get another gossip round, once a second.
pub fn contact_configured(agent: &Agent, inner: &mut Inner, peers: &[PeerView]) {
    let live: BTreeSet<SocketAddr> = peers
        .iter()
        .filter(|p| p.alive)
        .map(|p| p.address)
        .collect();
    for peer in &inner.state.peers {
        let Some(addr) = agent.peer_book.address(peer) else {
            continue;
        };
        let due = inner
            .last_contact
            .get(&addr)
            .is_none_or(|at| at.elapsed() >= RETRY_INTERVAL);
        if !live.contains(&addr) && addr != agent.gossip.self_address() && due {
            if let Err(err) = agent.gossip.contact(addr) {
                tracing::debug!("contacting {addr}: {err:#}");
            }
            inner.last_contact.insert(addr, Instant::now());
        }
    }
}

/// Resolves the configured host names every [`RESOLVE_INTERVAL`], and at once after a `join`
/// of one.
pub async fn resolve_loop(agent: Arc<Agent>) {
    let mut stopping = agent.shutdown.subscribe();
    let mut tick = tokio::time::interval(RESOLVE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = agent.resolve_now.notified() => {}
            _ = stopping.changed() => return,
        }
        let configured = agent.inner.lock().await.state.peers.clone();
        tokio::select! {
            () = agent.peer_book.refresh(&configured, system_resolver) => {}
            _ = stopping.changed() => return,
        }
    }
}

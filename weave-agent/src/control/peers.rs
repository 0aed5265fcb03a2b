//! Configured peers: joining, contacting the ones not live yet, resolving host names in the
//! background (never under the lock, never on the gossip task).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::agent::{Agent, Inner};
use crate::mesh::{
    gossip::PeerView,
    peer_addr::{PeerSpec, system_resolver},
};

/// How often a configured peer that is not live is contacted again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often host names among the configured peers are resolved again.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// `join ADDR`: remembers the peer, contacts it now (once resolved, for a host name) and
/// waits up to [`JOIN_VERDICT_WAIT`] for its answer. A peer of a mesh that claimed the
/// address range apart is refused: forgotten again, and the error says what to do. Returns
/// the address contacted and whether the peer answered.
pub async fn join(agent: &Agent, peer: &str) -> Result<(String, bool)> {
    PeerSpec::parse(peer, agent.peer_book.default_port())?;
    let (address, newly_configured) = {
        let mut inner = agent.inner.lock().await;
        let newly_configured = !inner.state.peers.iter().any(|p| p == peer);
        if newly_configured {
            inner.state.peers.push(peer.to_owned());
            agent.save(&inner)?;
        }
        (contact_now(agent, &mut inner, peer)?, newly_configured)
    };
    let Ok(addr) = address.parse::<SocketAddr>() else {
        // Still resolving: no address to wait for.
        return Ok((address, false));
    };
    match verdict(agent, addr).await {
        Verdict::Accepted => Ok((address, true)),
        Verdict::NoAnswer => Ok((address, false)),
        Verdict::Refused(message) => {
            if newly_configured {
                let mut inner = agent.inner.lock().await;
                inner.state.peers.retain(|p| p != peer);
                agent.save(&inner)?;
            }
            bail!("{message}; {peer} is not kept among the configured peers")
        }
    }
}

/// How long `join` waits for the peer to answer: a few gossip rounds.
const JOIN_VERDICT_WAIT: Duration = Duration::from_secs(5);

enum Verdict {
    Accepted,
    Refused(String),
    NoAnswer,
}

/// What the sync rounds make of the peer at `addr`: live with its ring taken in, refused, or
/// not heard within [`JOIN_VERDICT_WAIT`].
async fn verdict(agent: &Agent, addr: SocketAddr) -> Verdict {
    let deadline = tokio::time::Instant::now() + JOIN_VERDICT_WAIT;
    loop {
        // Registered before the look, so a round ending in between still wakes us.
        let synced = agent.synced.notified();
        tokio::pin!(synced);
        synced.as_mut().enable();
        {
            let inner = agent.inner.lock().await;
            // A round takes in the rings of the peers it saw live, so a live peer here has
            // had its verdict.
            if let Some(peer) = inner.peers.iter().find(|p| p.alive && p.address == addr) {
                return match inner.ipam.refused.get(&peer.name) {
                    Some(message) => Verdict::Refused(message.clone()),
                    None => Verdict::Accepted,
                };
            }
        }
        if tokio::time::timeout_at(deadline, synced).await.is_err() {
            return Verdict::NoAnswer;
        }
    }
}

/// `connect [--replace] PEER...`: adds the peers to the configured ones (or makes them the
/// whole list) and contacts them now. Every peer is checked before anything changes. Returns
/// the configured peers.
pub async fn connect(agent: &Agent, peers: &[String], replace: bool) -> Result<Vec<String>> {
    for peer in peers {
        PeerSpec::parse(peer, agent.peer_book.default_port())?;
    }
    let mut inner = agent.inner.lock().await;
    if replace {
        inner.state.peers.clear();
    }
    for peer in peers {
        if !inner.state.peers.contains(peer) {
            inner.state.peers.push(peer.clone());
        }
    }
    agent.save(&inner)?;
    for peer in peers {
        contact_now(agent, &mut inner, peer)?;
    }
    Ok(inner.state.peers.clone())
}

/// `forget PEER...`: stops retrying the peers and drops them from the configured ones (a
/// live peer stays in the mesh as long as it gossips; it is only no longer called). Every
/// peer must be configured, as typed; nothing changes otherwise. Returns the configured peers.
pub async fn forget(agent: &Agent, peers: &[String]) -> Result<Vec<String>> {
    let mut inner = agent.inner.lock().await;
    if let Some(unknown) = peers.iter().find(|p| !inner.state.peers.contains(p)) {
        bail!(
            "{unknown} is not a configured peer (configured: {}); give it as it was given to \
             launch, join or connect",
            if inner.state.peers.is_empty() {
                "none".to_owned()
            } else {
                inner.state.peers.join(", ")
            }
        );
    }
    inner.state.peers.retain(|p| !peers.contains(p));
    agent.save(&inner)?;
    Ok(inner.state.peers.clone())
}

/// Contacts a configured peer at once, or has its name resolved first.
fn contact_now(agent: &Agent, inner: &mut Inner, peer: &str) -> Result<String> {
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

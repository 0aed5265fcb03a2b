//! Automatic addresses in the daemon: this host's address space (`ipam::space`) persisted in
//! the data directory before anything uses it, its ring gossiped and merged with the peers',
//! requests for space answered, and addresses handed to `attach` and `run`.
//!
//! An address stays allocated while an endpoint here holds it (attached, or dormant: a
//! stopped Docker container that gets it back on restart) or an attach is under way with it;
//! every other allocation is released, so detach, `docker rm` and a crash mid-attach never
//! leak one.

pub mod store;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

pub use store::info;

use super::agent::{Agent, Inner};
use crate::{
    ipam::{
        request::AddressRequest,
        ring::{MergeError, Ring},
        space::{Allocated, Space},
    },
    mesh::gossip::PeerView,
    net::{addressing::Cidr, policy::Subnet},
};

/// How long an allocation waits for another host to give space before it gives up. 5 s was
/// too short for a donor busy with its own burst: with 100 concurrent attaches on each of
/// three hosts, next to the other IPAM tests, 2 runs in 5 gave up while the donors' sync
/// rounds waited on the kernel's rtnetlink lock. Only a subnet that is really full waits it
/// out.
const SPACE_WAIT: Duration = Duration::from_secs(15);

/// The addresses endpoints here hold (attached, dormant, being attached).
fn held_here(inner: &Inner) -> BTreeSet<Ipv4Addr> {
    inner
        .state
        .endpoints
        .iter()
        .chain(&inner.state.dormant)
        .map(|e| e.cidr.ip)
        .chain(inner.pending.iter().map(|p| p.cidr.ip))
        .collect()
}

/// Every address any endpoint in the mesh holds, as the last sync saw it, and this host's.
fn taken(inner: &Inner) -> BTreeSet<u32> {
    inner
        .peers
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|e| u32::from(e.cidr.ip)))
        .chain(held_here(inner).into_iter().map(u32::from))
        .collect()
}

/// Releases the allocations no endpoint here holds any more, at once (a detach, a CNI DEL),
/// so `ipam` shows them free and they may be handed out again before the next sync round.
pub fn release_unheld(inner: &mut Inner) -> Result<()> {
    let held = held_here(inner);
    if inner.ipam.sweep(&held) {
        inner.ipam.save()?;
    }
    Ok(())
}

fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    // A nonce only tells two claims apart; a failed draw falls back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        return crate::net::clock::unix_millis();
    }
    u64::from_le_bytes(bytes)
}

/// One sync round: the peers' rings taken in, their requests for space answered, stale
/// allocations released, the result saved and published. True if the space changed.
pub async fn sync(agent: &Agent, inner: &mut Inner, peers: &[PeerView]) -> Result<bool> {
    let mut changed = false;
    for peer in peers.iter().filter(|p| p.alive) {
        let Some(json) = &peer.ring else { continue };
        let ring: Ring = match serde_json::from_str(json) {
            Ok(ring) => ring,
            Err(err) => {
                tracing::debug!(peer = %peer.name, "an unreadable address ring: {err}");
                continue;
            }
        };
        match inner.ipam.space.merge(&ring) {
            Ok(merged) => {
                changed |= merged.changed;
                if !merged.conflicts.is_empty() {
                    inner.ipam.conflicting_writes += merged.conflicts.len() as u64;
                    tracing::error!(
                        peer = %peer.name,
                        tokens = ?merged.conflicts,
                        "two writes of the address ring disagree: a host lost its allocations, \
                         or `rmpeer` removed a live host"
                    );
                }
                inner.ipam.refused.remove(&peer.name);
            }
            Err(err) => {
                let message = refusal(&peer.nickname, &err);
                if inner
                    .ipam
                    .refused
                    .insert(peer.name.clone(), message.clone())
                    .is_none()
                {
                    tracing::error!("{message}");
                }
            }
        }
    }
    let taken = taken(inner);
    for peer in peers
        .iter()
        .filter(|p| p.alive && !inner.ipam.refused.contains_key(&p.name))
    {
        for (subnet, request) in &peer.wants {
            let key = (peer.name.clone(), *subnet, request.clone());
            if inner.ipam.answered.contains(&key) {
                continue;
            }
            inner.ipam.answered.insert(key);
            if let Some((lo, hi)) = inner.ipam.space.give(&peer.name, subnet, &taken, nonce()) {
                tracing::info!(
                    peer = %peer.nickname,
                    %subnet,
                    from = %Ipv4Addr::from(lo),
                    addresses = hi - u64::from(lo),
                    "gave address space"
                );
                changed = true;
            }
        }
    }
    changed |= inner.ipam.sweep(&held_here(inner));
    if changed {
        inner.ipam.save()?;
        agent.ipam_changed.notify_waiters();
    }
    if let Some(json) = inner.ipam.ring_to_publish() {
        agent.gossip.publish_ring(&json).await;
    }
    Ok(changed)
}

fn refusal(nickname: &str, err: &MergeError) -> String {
    match err {
        MergeError::OriginDiffers { ours, theirs } => format!(
            "peer {nickname} belongs to a mesh that claimed the address range apart from this \
             one (its ring began at {}, ours at {}): both hand out the same addresses, so \
             this host neither shares addresses with it nor reaches its containers. Reset the agents of one side (`weave-agent \
             reset`) and attach their containers again, or give the two meshes different \
             --ipalloc-range",
            theirs.peer, ours.peer
        ),
        MergeError::RangeDiffers { theirs, .. } => format!(
            "peer {nickname} allocates from another range ({}..{}): every host of a mesh \
             needs the same --ipalloc-range",
            Ipv4Addr::from(theirs.0),
            Ipv4Addr::from(u32::try_from(theirs.1 - 1).unwrap_or(u32::MAX))
        ),
    }
}

/// The address an attach or run asked for: the CIDR given, or one allocated for `holder`.
/// The second value is true if it was allocated here; the caller calls [`finished`] when
/// the attach is over, so a failed one frees it.
pub async fn address_for(
    agent: &Agent,
    request: &AddressRequest,
    holder: &str,
) -> Result<(Cidr, bool)> {
    let subnet = {
        let inner = agent.inner.lock().await;
        let space = &inner.ipam.space;
        request.subnet_in(&space.range, &space.default_subnet)?
    };
    let Some(subnet) = subnet else {
        let AddressRequest::Explicit(cidr) = request else {
            unreachable!("only an explicit address has no subnet");
        };
        let mut inner = agent.inner.lock().await;
        inner.ipam.space.mark_used(cidr.ip, holder);
        inner.ipam.in_flight.insert(cidr.ip);
        inner.ipam.save()?;
        return Ok((*cidr, false));
    };
    let deadline = Instant::now() + SPACE_WAIT;
    let mut asked: Option<Vec<String>> = None;
    loop {
        let changed = agent.ipam_changed.notified();
        let outcome = {
            let mut guard = agent.inner.lock().await;
            let inner = &mut *guard;
            let held = held_here(inner);
            inner.ipam.sweep(&held);
            let taken = taken(inner);
            let outcome = inner
                .ipam
                .space
                .allocate(holder, &subnet, &taken, nonce())?;
            if let Allocated::Address(cidr) = &outcome {
                inner.ipam.in_flight.insert(cidr.ip);
            }
            inner.ipam.save()?;
            if let Some(json) = inner.ipam.ring_to_publish() {
                agent.gossip.publish_ring(&json).await;
            }
            outcome
        };
        match outcome {
            Allocated::Address(cidr) => {
                if asked.is_some() {
                    agent.gossip.withdraw_want(&subnet).await;
                }
                tracing::info!(%cidr, %holder, "allocated");
                return Ok((cidr, true));
            }
            Allocated::AskPeers(owners) => {
                // A new request id each round: what was given may have gone to another attach.
                agent
                    .gossip
                    .publish_want(&subnet, &format!("{:016x}", nonce()))
                    .await;
                asked = Some(owners);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
            agent.gossip.withdraw_want(&subnet).await;
            let owners = asked.unwrap_or_default();
            if owners.is_empty() {
                bail!(
                    "no address in {subnet}: no host has claimed the range yet and none gave \
                     space within {}s. The first host of a mesh claims it (launched without \
                     peers, or with --ipalloc-init seed); is it reachable?",
                    SPACE_WAIT.as_secs()
                );
            }
            bail!(
                "no free address in {subnet} on this host, and the hosts that own the rest of \
                 it ({}) gave none within {}s: it may be full",
                owners.join(", "),
                SPACE_WAIT.as_secs()
            );
        }
    }
}

/// The attach with `ip` is over: a failed one's allocation is released by the next sweep,
/// a finished one's is held by its endpoint.
pub async fn finished(agent: &Agent, ip: Ipv4Addr) {
    let mut guard = agent.inner.lock().await;
    let inner = &mut *guard;
    inner.ipam.in_flight.remove(&ip);
    let held = held_here(inner);
    if inner.ipam.sweep(&held)
        && let Err(err) = inner.ipam.save()
    {
        tracing::warn!("saving the address allocations: {err:#}");
    }
}

/// `rmpeer PEER`: a host gone for good gives up its address ranges. Refused for a peer that is
/// alive (its containers still hold its addresses) or that owns nothing.
pub async fn remove_peer(agent: &Agent, peer: &str) -> Result<crate::control::api::Response> {
    let peers = agent.gossip.peers().await;
    let mut guard = agent.inner.lock().await;
    let inner = &mut *guard;
    let known = peers.iter().find(|p| p.name == peer || p.nickname == peer);
    let name = known.map_or(peer, |p| p.name.as_str()).to_owned();
    let nickname = known.map_or(peer, |p| p.nickname.as_str()).to_owned();
    if name == inner.ipam.space.me {
        bail!("{peer} is this host: run rmpeer on another host, once this one is gone for good");
    }
    if known.is_some_and(|p| p.alive) {
        bail!(
            "peer {nickname} ({name}) is alive: rmpeer is for a host that is gone for good,              whose containers hold no address any more; stop or reset its agent first"
        );
    }
    let owned = |space: &Space, who: &str| -> u64 {
        space
            .ring
            .ranges_of(who)
            .iter()
            .map(|(lo, hi)| hi - u64::from(*lo))
            .sum()
    };
    if owned(&inner.ipam.space, &name) == 0 && !inner.ipam.space.ring.tombstones.contains(&name) {
        bail!("{peer} owns no addresses in this host's view of the range: nothing to remove");
    }
    let before = owned(&inner.ipam.space, &inner.ipam.space.me.clone());
    inner.ipam.space.remove_peer(&name)?;
    inner.ipam.save()?;
    let after = owned(&inner.ipam.space, &inner.ipam.space.me.clone());
    if let Some(json) = inner.ipam.ring_to_publish() {
        agent.gossip.publish_ring(&json).await;
    }
    agent.ipam_changed.notify_waiters();
    tracing::info!(peer = %name, taken_over = after - before, "removed peer");
    Ok(crate::control::api::Response::PeerRemoved {
        name,
        nickname,
        taken_over: after - before,
    })
}

/// `ipam`: the ring as this host sees it, and its own allocations.
pub fn listing(inner: &Inner) -> crate::control::api::Response {
    let space = &inner.ipam.space;
    let nickname = |name: &str| nickname_of(inner, name);
    let ranges = space
        .ring
        .entries
        .iter()
        .map(|(token, entry)| {
            let (_, end) = space.ring.span(*token);
            crate::control::api::RangeInfo {
                first: Ipv4Addr::from(*token).to_string(),
                last: Ipv4Addr::from(u32::try_from(end - 1).unwrap_or(u32::MAX)).to_string(),
                addresses: end - u64::from(*token),
                owner: entry.owner.clone(),
                nickname: nickname(&entry.owner),
            }
        })
        .collect();
    let allocations = space
        .allocated
        .iter()
        .map(|(ip, holder)| crate::control::api::AllocationInfo {
            address: ip.to_string(),
            holder: holder.clone(),
        })
        .collect();
    let mut info = info(&inner.ipam);
    info.subnets = subnet_usage(inner);
    crate::control::api::Response::Ipam {
        info,
        ranges,
        allocations,
    }
}

/// How `ipam` names a peer: "(this host)", or its nickname where this host knows it.
fn nickname_of(inner: &Inner, name: &str) -> String {
    if name == inner.ipam.space.me {
        return "(this host)".to_owned();
    }
    inner
        .peers
        .iter()
        .find(|p| p.name == name)
        .map_or_else(String::new, |p| p.nickname.clone())
}

/// How full each subnet in use is across the mesh, as `ipam` and `status` show it.
pub fn subnet_usage(inner: &Inner) -> Vec<crate::control::api::SubnetUsageInfo> {
    let space = &inner.ipam.space;
    let nickname = |name: &str| nickname_of(inner, name);
    let in_use = in_use(inner);
    subnets_in_use(inner)
        .iter()
        .map(|subnet| {
            let u = crate::ipam::usage::usage(&space.ring, subnet, &in_use);
            crate::control::api::SubnetUsageInfo {
                subnet: subnet.to_string(),
                addresses: u.addresses,
                used: u.used,
                free: u.free,
                owners: u
                    .shares
                    .into_iter()
                    .map(|share| crate::control::api::ShareInfo {
                        nickname: nickname(&share.owner),
                        owner: share.owner,
                        owned: share.owned,
                        used: share.used,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Every address in use anywhere: held by an endpoint in the mesh, or handed out here (an
/// attach under way, a stopped container's).
fn in_use(inner: &Inner) -> BTreeSet<u32> {
    let mut all = taken(inner);
    all.extend(inner.ipam.space.allocated.keys().map(|ip| u32::from(*ip)));
    all
}

/// The default subnet, then every other subnet inside the range that an endpoint anywhere in
/// the mesh (or here, stopped or being attached) has an address in.
fn subnets_in_use(inner: &Inner) -> Vec<Subnet> {
    let space = &inner.ipam.space;
    let mut others: BTreeSet<Subnet> = inner
        .peers
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|e| e.cidr))
        .chain(inner.state.endpoints.iter().map(|e| e.cidr))
        .chain(inner.state.dormant.iter().map(|e| e.cidr))
        .chain(inner.pending.iter().map(|p| p.cidr))
        .map(|cidr| cidr.subnet())
        .filter(|subnet| space.range.contains(subnet))
        .collect();
    others.remove(&space.default_subnet);
    std::iter::once(space.default_subnet)
        .chain(others)
        .collect()
}

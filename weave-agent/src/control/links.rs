//! The link loop: a hello to every live peer each [`HELLO_INTERVAL`], and whom this host
//! hears, read from the heard map, published in gossip whenever it changes.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use anyhow::Result;
use tokio::time::MissedTickBehavior;
use weave_common::data_port;

use super::agent::{Agent, Links};
use crate::datapath::Datapath;
use crate::mesh::topology::{
    hello::Hellos,
    links::{self, FORGET_AFTER, HEARD_WINDOW, HELLO_INTERVAL, PROBE_EVERY},
};
use crate::net::clock::monotonic_ns;

pub async fn link_loop(agent: Arc<Agent>, hellos: Hellos) {
    let mut stopping = agent.shutdown.subscribe();
    let mut tick = tokio::time::interval(HELLO_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // What start_gossip published from the pinned map, so an unchanged set is not sent again.
    let mut published: Option<BTreeMap<Ipv4Addr, u16>> =
        Some(agent.inner.lock().await.links.heard.clone());
    let mut round: u32 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        let targets = live_data_addresses(&agent).await;
        hellos.send(targets.iter().copied()).await;
        round = round.wrapping_add(1);
        if round.is_multiple_of(PROBE_EVERY) {
            probe(&agent, &hellos, &targets).await;
        }
        let heard = match read_heard(&agent).await {
            Ok(heard) => heard,
            Err(err) => {
                tracing::warn!("reading the heard map: {err:#}");
                continue;
            }
        };
        // Only a mesh with cuts needs the extra round: where every live peer is heard,
        // chitchat's own picks all work (measured: the round cost an idle agent of the 8 x 50
        // scale run 0.4 % of a core).
        let cut = targets.iter().any(|t| match t.ip() {
            IpAddr::V4(ip) => !heard.contains_key(&ip),
            IpAddr::V6(_) => false,
        });
        if cut {
            gossip_with_one_heard(&agent, &heard).await;
        }
        if published.as_ref() != Some(&heard) {
            tracing::info!(
                heard = %heard
                    .iter()
                    .map(|(peer, largest)| format!("{peer}({largest})"))
                    .collect::<Vec<_>>()
                    .join(" "),
                "peers heard directly changed (largest hello of each)"
            );
            agent.gossip.publish_links(&links::encode(&heard)).await;
            published = Some(heard);
            agent.resync.notify_one();
        }
    }
}

/// One gossip round with a peer this host hears, picked at random, while some live peer is not
/// heard. chitchat picks its partners among all live peers, knowing nothing of links; in a
/// mesh cut into parts most of its picks fail, and what one host publishes would crawl. A
/// round along a link that works keeps every host's view converging
/// (tests/topology_simulation.rs models both).
async fn gossip_with_one_heard(agent: &Agent, heard: &BTreeMap<Ipv4Addr, u16>) {
    if heard.is_empty() {
        return;
    }
    let mut pick = [0u8; 8];
    if getrandom::fill(&mut pick).is_err() {
        return;
    }
    let nth = (u64::from_ne_bytes(pick) % heard.len() as u64) as usize;
    let Some(ip) = heard.keys().nth(nth) else {
        return;
    };
    let address = {
        let inner = agent.inner.lock().await;
        inner
            .peers
            .iter()
            .find(|p| p.alive && p.address.ip() == IpAddr::V4(*ip))
            .map(|p| p.address)
    };
    if let Some(address) = address
        && let Err(err) = agent.gossip.contact(address)
    {
        tracing::debug!(%address, "gossip round with a heard peer: {err:#}");
    }
}

/// Probes the path MTU to each of `targets` (data-port addresses), as many as what the peer
/// reports hearing from this host calls for (`links::probes_for`): one packet a second to a
/// peer confirmed at full size, three to one behind a narrower hop.
async fn probe(agent: &Agent, hellos: &Hellos, targets: &[SocketAddr]) {
    let me = agent.gossip.self_ip();
    let underlay_mtu = u16::try_from(agent.base.underlay.mtu).unwrap_or(u16::MAX);
    let plan: Vec<(SocketAddr, Vec<u16>)> = {
        let inner = agent.inner.lock().await;
        targets
            .iter()
            .filter_map(|t| match t.ip() {
                IpAddr::V4(ip) => {
                    let reported = inner.topology.hears_from(ip, me);
                    Some((*t, links::probes_for(reported, underlay_mtu)))
                }
                IpAddr::V6(_) => None,
            })
            .collect()
    };
    for (target, sizes) in plan {
        hellos.probe(&[target], &sizes).await;
    }
}

/// Where each live peer takes hellos: its underlay address and data port (its gossip port + 1,
/// whatever `--port` it was launched with).
async fn live_data_addresses(agent: &Agent) -> Vec<SocketAddr> {
    let inner = agent.inner.lock().await;
    inner
        .peers
        .iter()
        .filter(|p| p.alive)
        .filter_map(|p| match p.address.ip() {
            IpAddr::V4(ip) => Some(SocketAddr::from((ip, data_port(p.address.port())))),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Reads the heard map into [`Links`] and returns the peers heard within the window; entries
/// of peers silent for [`FORGET_AFTER`] are removed.
async fn read_heard(agent: &Agent) -> Result<BTreeMap<Ipv4Addr, u16>> {
    let mut inner = agent.inner.lock().await;
    let links = heard_now(&mut inner.datapath)?;
    let heard = links.heard.clone();
    inner.links = links;
    Ok(heard)
}

/// Whom this host hears, from the heard map as it is now; entries of peers silent for
/// [`FORGET_AFTER`] are removed. The map is pinned, so an agent that just started reads what
/// the data path heard while it was away, and publishes it with its first gossip: a relay's
/// peers never see its new generation hear no one.
pub fn heard_now(datapath: &mut Datapath) -> Result<Links> {
    let entries = datapath.heard()?;
    let now = monotonic_ns();
    let forget = FORGET_AFTER.as_nanos() as u64;
    for (peer, heard) in &entries {
        if now.saturating_sub(heard.at_ns) > forget {
            datapath.forget_heard(*peer)?;
        }
    }
    Ok(Links {
        heard: links::heard_within(entries.iter().copied(), now, HEARD_WINDOW),
        last: entries.into_iter().map(|(p, h)| (p, h.at_ns)).collect(),
        read_at_ns: now,
    })
}

//! Containers attached by an IPv6 address alone (`attach fd00:1::10/64 CONTAINER`): a veth of
//! their own whose `ethwe` MAC comes from that address, the container program on its host
//! end, the address and its link-local one in the IPv6 map, and `ep6only:` in gossip. They
//! meet every IPv6 check the dual-stack containers meet; nothing of IPv4 concerns them.

use anyhow::{Result, bail};

use super::{
    agent::{Agent, Inner},
    api,
    endpoints::{Target, ipv6_holder, refuse_host_namespace},
    state::Ipv6Endpoint,
    sync,
};
use crate::{
    host::{netlink, netns},
    mesh::gossip::Gossip,
    net::addressing::{Cidr6, format_mac},
};

/// What `ps` says of such an endpoint: it is marked as forwarding (see [`Ipv6Endpoint`]).
const FORWARDS: &str = "attached by IPv6 alone, taken to forward (the probe reads IPv4)";

pub fn endpoint_info(ep: &Ipv6Endpoint) -> api::EndpointInfo {
    api::EndpointInfo {
        container: ep.container.clone(),
        mac: format_mac(&ep.cidr.mac()),
        cidr: ep.cidr.to_string(),
        host_veth: ep.host_veth.clone(),
        mtu: ep.mtu,
        forwards: vec![FORWARDS.to_owned()],
        expose: None,
        dns_name: None,
        ipv6: None,
    }
}

/// Attaches `target` by `cidr` alone. The container must have no endpoint here yet: an IPv6
/// address beside IPv4 ones goes with the first IPv4 address (`attach V4,V6`).
pub async fn attach(
    agent: &Agent,
    target: &Target,
    cidr: Cidr6,
    mtu: Option<u32>,
) -> Result<api::EndpointInfo> {
    refuse_host_namespace(target)?;
    if target.left_for_docker.is_some() {
        bail!("a Docker network of weave-agent's driver needs an IPv4 subnet beside the IPv6 one");
    }
    if target.dns_name.is_some() {
        bail!(
            "a container attached by an IPv6 address alone gets no DNS name (no AAAA records yet)"
        );
    }
    let ep = {
        let mut inner = agent.inner.lock().await;
        if let Some(by) = ipv6_holder(&inner, cidr.ip) {
            bail!("{} is already in use by {by}", cidr.ip);
        }
        let taken = inner.state.endpoints.iter().any(|e| {
            e.expose.is_none() && (e.netns == target.netns || e.container == target.label)
        }) || inner
            .pending
            .iter()
            .any(|p| p.netns == target.netns || p.container == target.label)
            || inner
                .state
                .ipv6_only
                .iter()
                .chain(&inner.pending6)
                .any(|e| e.netns == target.netns || e.container == target.label);
        // The MAC (and so the veth's name and the link-local address) is a 32-bit hash of the
        // address: another container's, here or on a peer, must not share it.
        let mac = cidr.mac();
        let clash = inner
            .state
            .ipv6_only
            .iter()
            .chain(&inner.pending6)
            .map(|e| (e.cidr, e.container.as_str()))
            .chain(
                inner
                    .peers
                    .iter()
                    .filter(|p| p.alive)
                    .flat_map(|p| p.ipv6_only.iter().map(move |c| (*c, p.name.as_str()))),
            )
            .find(|(other, _)| other.mac() == mac);
        if let Some((other, by)) = clash {
            bail!(
                "{cidr} would get the MAC {} that {other} (of {by}) has: the MAC is a hash of \
                 the address, and these two meet; give another address",
                format_mac(&mac)
            );
        }
        if taken {
            bail!(
                "{} has an address here already: an IPv6 address goes beside the first IPv4 \
                 one (detach it, then attach both, e.g. 10.40.1.10/24,{cidr})",
                target.label
            );
        }
        let ep = Ipv6Endpoint {
            cidr,
            container: target.label.clone(),
            netns: target.netns.clone(),
            host_veth: cidr.host_veth(),
            mtu: mtu.unwrap_or(inner.mtu),
            docker_id: target.docker_id.clone(),
        };
        // Held while the veth is made outside the lock, so nobody else takes the address or
        // the container meanwhile.
        inner.pending6.push(ep.clone());
        ep
    };
    let handle = agent.inner.lock().await.netlink.clone();
    let made = async {
        // A leftover of a crash mid-attach would make the create fail.
        netlink::delete_link(&handle, &ep.host_veth).await?;
        let temp = cidr.peer_temp_name();
        let index =
            netns::create_veth_into(&handle, &ep.host_veth, &temp, ep.mtu, &target.netns).await?;
        netns::configure_ethwe6(&target.netns, temp, target.iface.clone(), cidr, ep.mtu).await?;
        let mut inner = agent.inner.lock().await;
        inner.datapath.attach_container(&ep.host_veth)?;
        inner.state.ipv6_only.push(ep.clone());
        if let Err(err) = agent.save(&inner) {
            inner.state.ipv6_only.retain(|e| e.cidr.ip != cidr.ip);
            let _ = inner.datapath.detach_container(&ep.host_veth);
            return Err(err);
        }
        anyhow::Ok(index)
    }
    .await;
    agent
        .inner
        .lock()
        .await
        .pending6
        .retain(|e| e.cidr.ip != cidr.ip);
    let index = match made {
        Ok(index) => index,
        Err(err) => {
            let _ = netlink::delete_link(&handle, &ep.host_veth).await;
            return Err(err);
        }
    };
    agent.gossip.publish_ipv6_only(&cidr, true).await;
    // The map entries first, then the link up (as for IPv4): the container's first frames,
    // its link-local address among them, find it known.
    let live = async {
        sync::sync_once(agent).await?;
        netlink::set_up(&handle, index).await
    }
    .await;
    if let Err(err) = live {
        let mut inner = agent.inner.lock().await;
        let _ = remove(&mut inner, &agent.gossip, &ep).await;
        let _ = agent.save(&inner);
        return Err(err);
    }
    tracing::info!(%cidr, container = %ep.container, "attached by IPv6 alone");
    Ok(endpoint_info(&ep))
}

/// Withdraws `ep` everywhere: gossip, TC link, veth (and `ethwe` with it), state.
pub async fn remove(inner: &mut Inner, gossip: &Gossip, ep: &Ipv6Endpoint) -> Result<()> {
    gossip.publish_ipv6_only(&ep.cidr, false).await;
    inner.datapath.detach_container(&ep.host_veth)?;
    netlink::delete_link(&inner.netlink, &ep.host_veth).await?;
    inner.state.ipv6_only.retain(|e| e.cidr.ip != ep.cidr.ip);
    Ok(())
}

/// A stopped Docker container's endpoint is kept for when it starts again.
pub fn keep_dormant(inner: &mut Inner, ep: &Ipv6Endpoint) {
    if ep.docker_id.is_some() && !inner.state.dormant6.iter().any(|d| d.cidr == ep.cidr) {
        inner.state.dormant6.push(ep.clone());
    }
}

/// Detaches every endpoint `matches` picks (and forgets the dormant ones it picks); returns
/// those detached, and whether it picked anything at all.
pub async fn detach_matching(
    agent: &Agent,
    matches: impl Fn(&Ipv6Endpoint) -> bool,
) -> Result<(Vec<api::EndpointInfo>, bool)> {
    let mut inner = agent.inner.lock().await;
    let inner = &mut *inner;
    let dormant = inner.state.dormant6.len();
    inner.state.dormant6.retain(|e| !matches(e));
    let forgot = inner.state.dormant6.len() != dormant;
    let picked: Vec<Ipv6Endpoint> = inner
        .state
        .ipv6_only
        .iter()
        .filter(|e| matches(e))
        .cloned()
        .collect();
    for ep in &picked {
        remove(inner, &agent.gossip, ep).await?;
        tracing::info!(cidr = %ep.cidr, container = %ep.container, "detached");
    }
    if !picked.is_empty() || forgot {
        agent.save(inner)?;
    }
    let any = !picked.is_empty() || forgot;
    Ok((picked.iter().map(endpoint_info).collect(), any))
}

/// At start: those whose veth is still there keep forwarding (the new program on their TC
/// link); the others are forgotten.
pub async fn adopt(inner: &mut Inner) -> Result<()> {
    let mut kept = Vec::new();
    for ep in std::mem::take(&mut inner.state.ipv6_only) {
        if netlink::link_index(&inner.netlink, &ep.host_veth)
            .await?
            .is_some()
        {
            inner.datapath.attach_container(&ep.host_veth)?;
            tracing::info!(cidr = %ep.cidr, container = %ep.container, "adopted endpoint");
            kept.push(ep);
        } else {
            tracing::info!(cidr = %ep.cidr, container = %ep.container, "container gone; dropping its endpoint");
            inner.datapath.detach_container(&ep.host_veth)?;
            keep_dormant(inner, &ep);
        }
    }
    inner.state.ipv6_only = kept;
    Ok(())
}

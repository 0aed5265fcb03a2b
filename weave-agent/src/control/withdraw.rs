//! Withdrawing a local endpoint, whoever notices it should go: `detach`, a container that
//! died (Docker's events), or one whose veth vanished (the sync loop).

use anyhow::Result;

use super::{agent::Inner, state::LocalEndpoint};
use crate::{
    host::{netlink, netns},
    mesh::gossip::Gossip,
};

/// Withdraws a local endpoint everywhere: gossip, map, TC link, veth, state. Of a container
/// with other addresses here, only this address goes: off its `ethwe`, the veth stays.
pub async fn remove_endpoint(inner: &mut Inner, gossip: &Gossip, ep: &LocalEndpoint) -> Result<()> {
    gossip.withdraw(ep.cidr.ip).await;
    if ep.expose.is_some() {
        gossip.withdraw_via(ep.cidr.ip).await;
    }
    inner.datapath.remove_endpoint(ep.cidr.ip)?;
    let shared = inner
        .state
        .endpoints
        .iter()
        .any(|e| e.host_veth == ep.host_veth && e.cidr.ip != ep.cidr.ip);
    if shared {
        // A container that is gone took the address with it.
        if let Err(err) = netns::remove_ethwe_address(&ep.netns, ep.iface.clone(), ep.cidr).await {
            tracing::debug!(cidr = %ep.cidr, "taking the address off ethwe: {err:#}");
        }
        // The IPv6 address stays on ethwe with the container's other addresses: one of them
        // carries it in the state and in gossip from now on.
        if let Some(v6) = ep.ipv6
            && let Some(heir) = inner
                .state
                .endpoints
                .iter_mut()
                .find(|e| e.host_veth == ep.host_veth && e.cidr.ip != ep.cidr.ip)
        {
            heir.ipv6 = Some(v6);
            gossip.publish_ipv6(heir.cidr.ip, Some(&v6)).await;
        }
    } else {
        inner.datapath.detach_container(&ep.host_veth)?;
        // Deleting the host end deletes `ethwe` in the container (or the exposed interface)
        // with it.
        netlink::delete_link(&inner.netlink, &ep.host_veth).await?;
    }
    inner.state.endpoints.retain(|e| e.cidr.ip != ep.cidr.ip);
    // What `dns-add` gave the address stays; the container's own name goes with it.
    gossip
        .publish_names(ep.cidr.ip, &inner.state.names_of(ep.cidr.ip))
        .await;
    Ok(())
}

/// A Docker container that stopped keeps its address for when it starts again.
pub fn keep_dormant(inner: &mut Inner, ep: &LocalEndpoint) {
    if ep.docker_id.is_some() && !inner.state.dormant.iter().any(|d| d.cidr == ep.cidr) {
        inner.state.dormant.push(ep.clone());
    }
}

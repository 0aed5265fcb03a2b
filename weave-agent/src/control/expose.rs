//! `expose` and `hide`: the host's own addresses on the overlay. An exposed address is a local
//! endpoint like a container's (map entry, gossip, isolation), on an interface in the host's
//! namespace (`host::exposed`); its subnet's containers on every host get routes through it
//! to the networks it serves (`net::exposure`), and the host masquerades what leaves through
//! it.

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use super::{
    agent::{Agent, Inner},
    api,
    endpoints::check_free,
    ipam,
    state::LocalEndpoint,
    status::endpoint_info,
    sync,
    withdraw::remove_endpoint,
};
use crate::{
    host::{exposed, netlink},
    ipam::request::AddressRequest,
    net::{
        addressing::Cidr,
        exposure::{self, Exposure},
        names::EXPOSED_LABEL,
        policy::Subnet,
    },
};

/// Why an exposed address counts as forwarding: the host routes what comes in behind it, so
/// its super-packets must keep the kernel's receive path (see `ENDPOINT_FORWARDS`).
const HOST_FORWARDS: &str = "the host routes for its exposed address";

/// `expose ADDRESS`: gives this host an address on the overlay, the one given or one
/// allocated (`net:CIDR`, `net:default`). Returns the endpoint and whether IPv4 forwarding
/// had to be turned on.
pub async fn expose(
    agent: &Agent,
    address: &str,
    routes: Option<&[String]>,
    masquerade: bool,
) -> Result<(api::EndpointInfo, bool)> {
    let request: AddressRequest = address.parse()?;
    let given: Option<Vec<Subnet>> = routes
        .map(|list| {
            list.iter()
                .map(|r| r.parse().with_context(|| format!("--routes {r}")))
                .collect::<Result<_>>()
        })
        .transpose()?;
    let (cidr, _) = ipam::address_for(agent, &request, EXPOSED_LABEL).await?;
    let exposed = expose_at(agent, cidr, given, routes.is_some(), masquerade).await;
    ipam::finished(agent, cidr.ip).await;
    exposed
}

async fn expose_at(
    agent: &Agent,
    cidr: Cidr,
    given: Option<Vec<Subnet>>,
    routes_given: bool,
    masquerade: bool,
) -> Result<(api::EndpointInfo, bool)> {
    check_free(agent, cidr.ip).await?;
    let mut guard = agent.inner.lock().await;
    let inner = &mut *guard;
    if let Some(ep) = inner
        .state
        .endpoints
        .iter()
        .find(|e| e.expose.is_some() && e.cidr.subnet() == cidr.subnet())
    {
        bail!(
            "{} is exposed here already as {}; `hide {}` first to change it",
            cidr.subnet(),
            ep.cidr,
            ep.cidr
        );
    }
    // Again under the lock: an attach of the same address may have got in meanwhile.
    if let Some(ep) = inner.state.endpoints.iter().find(|e| e.cidr.ip == cidr.ip) {
        bail!(
            "{} is already in use: attached here to {}",
            cidr.ip,
            ep.container
        );
    }
    if inner.pending.iter().any(|p| p.cidr.ip == cidr.ip) {
        bail!("{} is already in use: being attached here", cidr.ip);
    }
    let exposure = Exposure {
        routes: match given {
            Some(routes) => routes,
            None => connected(inner, cidr).await?,
        },
        routes_given,
        masquerade,
    };
    let ep = LocalEndpoint {
        cidr,
        container: EXPOSED_LABEL.to_owned(),
        netns: PathBuf::from("/proc/self/ns/net"),
        host_veth: cidr.exposed_veth(),
        mtu: inner.mtu,
        docker_id: None,
        forwards: vec![HOST_FORWARDS.to_owned()],
        expose: Some(exposure),
        dns_name: None,
        mac_from: None,
        ipv6: None,
        iface: cidr.exposed_iface(),
        // The host keeps its own multicast routing.
        no_multicast_route: false,
    };
    let turned_on = match wire(inner, &ep).await {
        Ok(turned_on) => turned_on,
        Err(err) => {
            // Leave nothing half-made behind.
            let _ = inner.datapath.remove_endpoint(cidr.ip);
            let _ = inner.datapath.detach_container(&ep.host_veth);
            let _ = netlink::delete_link(&inner.netlink, &ep.host_veth).await;
            let _ = apply_nat(inner);
            return Err(err);
        }
    };
    publish(agent, &ep).await;
    inner.state.dormant.retain(|d| d.cidr != cidr);
    inner.state.endpoints.push(ep.clone());
    agent.save(inner)?;
    drop(guard);
    tracing::info!(%cidr, "exposed");
    if turned_on {
        tracing::info!("turned on IPv4 forwarding, which exposing needs");
    }
    // The routes in containers and the subnet map now, not at the next tick.
    if let Err(err) = sync::sync_once(agent).await {
        tracing::warn!("syncing after exposing {cidr}: {err:#}");
    }
    Ok((endpoint_info(&ep), turned_on))
}

/// The host's directly connected networks outside the overlay, as `cidr`'s default routes.
async fn connected(inner: &Inner, cidr: Cidr) -> Result<Vec<Subnet>> {
    let addresses = netlink::ipv4_addresses(&inner.netlink).await?;
    let mut overlay: BTreeSet<Subnet> = inner
        .peers
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|e| e.cidr.subnet()))
        .chain(inner.state.endpoints.iter().map(|e| e.cidr.subnet()))
        .collect();
    overlay.insert(cidr.subnet());
    Ok(exposure::connected_networks(&addresses, &overlay))
}

/// The interface, the map entry, the programs, forwarding and NAT for `ep`; true if IPv4
/// forwarding had to be turned on.
async fn wire(inner: &mut Inner, ep: &LocalEndpoint) -> Result<bool> {
    let index = exposed::make_interface(&inner.netlink, ep.cidr, ep.mtu).await?;
    inner
        .datapath
        .set_endpoint(ep.cidr.ip, ep.map_entry(index))?;
    inner.datapath.attach_container(&ep.host_veth)?;
    let turned_on = exposed::enable_forwarding()?;
    let mut all: Vec<(Cidr, bool)> = nat_entries(inner);
    all.push((ep.cidr, ep.expose.as_ref().is_some_and(|x| x.masquerade)));
    exposed::load_nft(&exposure::nat_ruleset(&all))?;
    // The map entry is local now, whatever a peer said of the address before.
    inner.written.remote.remove(&ep.cidr.ip);
    inner.written.adopted.remove(&ep.cidr.ip);
    Ok(turned_on)
}

fn nat_entries(inner: &Inner) -> Vec<(Cidr, bool)> {
    inner
        .state
        .endpoints
        .iter()
        .filter_map(|e| Some((e.cidr, e.expose.as_ref()?.masquerade)))
        .collect()
}

/// Makes the NAT table match the exposed addresses in the state.
fn apply_nat(inner: &Inner) -> Result<()> {
    exposed::load_nft(&exposure::nat_ruleset(&nat_entries(inner)))
}

async fn publish(agent: &Agent, ep: &LocalEndpoint) {
    agent
        .gossip
        .publish(&ep.cidr, &ep.mac(), EXPOSED_LABEL)
        .await;
    if let Some(x) = &ep.expose {
        agent.gossip.publish_via(ep.cidr.ip, &x.routes).await;
    }
}

/// `hide [CIDR]`: takes back one exposed address (given as its CIDR or bare address), or all.
pub async fn hide(agent: &Agent, cidr: Option<&str>) -> Result<Vec<api::EndpointInfo>> {
    let wanted: Option<Ipv4Addr> = cidr
        .map(|text| match text.split_once('/') {
            Some(_) => text.parse::<Cidr>().map(|c| c.ip),
            None => text
                .parse::<Ipv4Addr>()
                .with_context(|| format!("{text:?} is not an IPv4 address or CIDR")),
        })
        .transpose()?;
    let mut guard = agent.inner.lock().await;
    let inner = &mut *guard;
    let exposed: Vec<LocalEndpoint> = inner
        .state
        .endpoints
        .iter()
        .filter(|e| e.expose.is_some())
        .cloned()
        .collect();
    let chosen: Vec<LocalEndpoint> = exposed
        .iter()
        .filter(|e| wanted.is_none_or(|ip| e.cidr.ip == ip))
        .cloned()
        .collect();
    if chosen.is_empty() {
        let listed: Vec<String> = exposed.iter().map(|e| e.cidr.to_string()).collect();
        match (cidr, listed.is_empty()) {
            (Some(text), true) => bail!("{text} is not exposed: this host exposes nothing"),
            (Some(text), false) => bail!(
                "{text} is not exposed; this host exposes {}",
                listed.join(", ")
            ),
            (None, _) => bail!("this host exposes nothing"),
        }
    }
    for ep in &chosen {
        remove_endpoint(inner, &agent.gossip, ep).await?;
        tracing::info!(cidr = %ep.cidr, "hidden");
    }
    agent.save(inner)?;
    apply_nat(inner)?;
    drop(guard);
    if let Err(err) = sync::sync_once(agent).await {
        tracing::warn!("syncing after hiding: {err:#}");
    }
    Ok(chosen.iter().map(endpoint_info).collect())
}

/// At start: the exposed addresses of the state get their interface back if it went (a
/// reboot), their default routes looked up again, forwarding and the NAT table as they
/// should be. Before the endpoints are adopted, which then find the interfaces there.
pub async fn restore(inner: &mut Inner) -> Result<()> {
    let exposed: Vec<Cidr> = inner
        .state
        .endpoints
        .iter()
        .filter(|e| e.expose.is_some())
        .map(|e| e.cidr)
        .collect();
    if exposed.is_empty() {
        // A table left by a crash between `hide` and its save is removed all the same.
        return apply_nat(inner);
    }
    for cidr in exposed {
        let mtu = inner.mtu;
        exposed::make_interface(&inner.netlink, cidr, mtu)
            .await
            .with_context(|| format!("restoring the exposed address {cidr}"))?;
        let routes = connected(inner, cidr).await?;
        if let Some(x) = inner
            .state
            .endpoints
            .iter_mut()
            .find(|e| e.cidr == cidr)
            .and_then(|e| e.expose.as_mut())
            && !x.routes_given
        {
            x.routes = routes;
        }
    }
    if exposed::enable_forwarding()? {
        tracing::info!("turned on IPv4 forwarding, which the exposed addresses need");
    }
    apply_nat(inner)
}

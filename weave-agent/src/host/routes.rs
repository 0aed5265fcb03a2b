//! Routes in containers: the on-link routes isolation rules open, and the host's default
//! route (which picks the underlay).

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope},
};

/// Output interface of the IPv4 default route in the main table, if any.
pub async fn default_route_oif(handle: &Handle) -> Result<Option<u32>> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = routes.try_next().await.context("listing routes")? {
        if route.header.destination_prefix_length != 0 {
            continue;
        }
        if let Some(oif) = route.attributes.iter().find_map(|attr| match attr {
            RouteAttribute::Oif(oif) => Some(*oif),
            _ => None,
        }) {
            return Ok(Some(oif));
        }
    }
    Ok(None)
}

/// Protocol number marking the routes the agent adds in containers (`ip route` shows `proto
/// static`), so it lists and removes only its own and never the kernel's subnet route.
const ROUTE_PROTOCOL: RouteProtocol = RouteProtocol::Static;

/// Destinations (network, prefix) of the agent's on-link routes through `oif`.
pub async fn agent_routes(handle: &Handle, oif: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(route) = routes.try_next().await.context("listing routes")? {
        if route.header.protocol != ROUTE_PROTOCOL
            || !route.attributes.contains(&RouteAttribute::Oif(oif))
        {
            continue;
        }
        let destination = route.attributes.iter().find_map(|attr| match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        out.push((
            destination.unwrap_or(Ipv4Addr::UNSPECIFIED),
            route.header.destination_prefix_length,
        ));
    }
    Ok(out)
}

fn on_link_route(
    network: Ipv4Addr,
    prefix: u8,
    oif: u32,
) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(network, prefix)
        .output_interface(oif)
        .scope(RouteScope::Link)
        .protocol(ROUTE_PROTOCOL)
        .build()
}

/// Adds (or keeps) an on-link route to `network/prefix` through `oif`.
pub async fn add_on_link_route(
    handle: &Handle,
    network: Ipv4Addr,
    prefix: u8,
    oif: u32,
) -> Result<()> {
    handle
        .route()
        .add(on_link_route(network, prefix, oif))
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the route {network}/{prefix}"))
}

/// Removes the agent's on-link route to `network/prefix` through `oif`, if it is there.
pub async fn delete_on_link_route(
    handle: &Handle,
    network: Ipv4Addr,
    prefix: u8,
    oif: u32,
) -> Result<()> {
    match handle
        .route()
        .del(on_link_route(network, prefix, oif))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ESRCH => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing the route {network}/{prefix}")),
    }
}

//! Routes in containers: the on-link routes isolation rules open and those through exposed
//! addresses; and the host's default route (which picks the underlay).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::net::{
    exposure::ContainerRoute,
    policy::{Subnet, Subnet6},
};
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

/// Metric of the routes through an exposed address: above the kernel's own (0), so a route
/// the container has already (Docker's default route, its `eth0` subnet) stays in charge of
/// its destinations; the agent's route serves what nothing else routes.
const GATEWAY_ROUTE_METRIC: u32 = 1024;

/// Which interface of a namespace holds the agent's routes, and the metric of on-link ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteHolder {
    pub iface: String,
    on_link_metric: u32,
}

impl RouteHolder {
    /// A container's `ethwe` (or the interface a CNI runtime named): its on-link routes are
    /// the kernel's default metric, as they always were.
    pub fn container(iface: &str) -> Self {
        Self {
            iface: iface.to_owned(),
            on_link_metric: 0,
        }
    }

    /// An exposed address's interface in the host's namespace: its on-link routes (the
    /// subnets a rule opens to it) sit above the kernel's metric, so a route the host has
    /// already (another exposed subnet, a LAN) stays in charge, and `replace` can never
    /// overwrite the kernel's own route to it.
    pub fn exposed(iface: String) -> Self {
        Self {
            iface,
            on_link_metric: GATEWAY_ROUTE_METRIC,
        }
    }
}

/// The agent's routes through `oif` (on link, or through a gateway).
pub async fn agent_routes(handle: &Handle, oif: u32) -> Result<Vec<ContainerRoute>> {
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
        let inet = |want: fn(&RouteAttribute) -> Option<&RouteAddress>| {
            route.attributes.iter().find_map(|attr| match want(attr) {
                Some(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            })
        };
        let destination = inet(|a| match a {
            RouteAttribute::Destination(d) => Some(d),
            _ => None,
        });
        let via = inet(|a| match a {
            RouteAttribute::Gateway(g) => Some(g),
            _ => None,
        });
        out.push(ContainerRoute {
            to: Subnet::new(
                destination.unwrap_or(Ipv4Addr::UNSPECIFIED),
                route.header.destination_prefix_length,
            ),
            via,
        });
    }
    Ok(out)
}

fn route_message(
    route: &ContainerRoute,
    oif: u32,
    holder: &RouteHolder,
) -> rtnetlink::packet_route::route::RouteMessage {
    let builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.to.network, route.to.prefix)
        .output_interface(oif)
        .protocol(ROUTE_PROTOCOL);
    match route.via {
        None if holder.on_link_metric == 0 => builder.scope(RouteScope::Link).build(),
        None => builder
            .priority(holder.on_link_metric)
            .scope(RouteScope::Link)
            .build(),
        Some(gateway) => builder
            .gateway(gateway)
            .priority(GATEWAY_ROUTE_METRIC)
            .scope(RouteScope::Universe)
            .build(),
    }
}

/// Protocol number of the route to the agent's DNS server in a container: not the agent's
/// usual one, so syncing a container's routes to the rules never removes it.
const SERVICE_ROUTE_PROTOCOL: RouteProtocol = RouteProtocol::Other(53);

/// In a container: the route to the agent's service address `ip` out of `oif` (`ethwe`), on
/// link, so the container program answers its ARP and hands its frames to the agent.
pub async fn add_service_route(handle: &Handle, ip: Ipv4Addr, oif: u32) -> Result<()> {
    add_on_link(handle, (ip, 32), oif, SERVICE_ROUTE_PROTOCOL)
        .await
        .with_context(|| format!("adding the route to the DNS server {ip}"))
}

/// Adds (or replaces) the on-link route to `network`/`prefix` through `oif`, of `protocol`.
async fn add_on_link(
    handle: &Handle,
    (network, prefix): (Ipv4Addr, u8),
    oif: u32,
    protocol: RouteProtocol,
) -> Result<(), rtnetlink::Error> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(network, prefix)
        .output_interface(oif)
        .protocol(protocol)
        .scope(RouteScope::Link)
        .build();
    handle.route().add(route).replace().execute().await
}

/// Adds the route `224.0.0.0/4` through `oif`, as `ip route add 224.0.0.0/4 dev ethwe` would
/// (`proto boot`): the container's multicast goes over the overlay. The agent's route sync
/// lists only its own protocol's routes, so this one stays.
pub async fn add_multicast_route(handle: &Handle, oif: u32) -> Result<()> {
    add_on_link(
        handle,
        (Ipv4Addr::new(224, 0, 0, 0), 4),
        oif,
        RouteProtocol::Boot,
    )
    .await
    .context("adding the multicast route 224.0.0.0/4")
}

/// Adds (or keeps) `route` through `oif`.
pub async fn add_route(
    handle: &Handle,
    route: &ContainerRoute,
    oif: u32,
    holder: &RouteHolder,
) -> Result<()> {
    handle
        .route()
        .add(route_message(route, oif, holder))
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the route {}", describe(route)))
}

/// Removes the agent's `route` through `oif`, if it is there.
pub async fn delete_route(
    handle: &Handle,
    route: &ContainerRoute,
    oif: u32,
    holder: &RouteHolder,
) -> Result<()> {
    match handle
        .route()
        .del(route_message(route, oif, holder))
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ESRCH => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing the route {}", describe(route))),
    }
}

fn describe(route: &ContainerRoute) -> String {
    match route.via {
        None => route.to.to_string(),
        Some(gw) => format!("{} via {gw}", route.to),
    }
}

/// The agent's IPv6 routes through `oif`: the on-link routes IPv6 isolation rules open.
pub async fn agent_routes6(handle: &Handle, oif: u32) -> Result<Vec<Subnet6>> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(route) = routes.try_next().await.context("listing IPv6 routes")? {
        if route.header.protocol != ROUTE_PROTOCOL
            || !route.attributes.contains(&RouteAttribute::Oif(oif))
        {
            continue;
        }
        let destination = route.attributes.iter().find_map(|attr| match attr {
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(*ip),
            _ => None,
        });
        out.push(Subnet6::new(
            destination.unwrap_or(Ipv6Addr::UNSPECIFIED),
            route.header.destination_prefix_length,
        ));
    }
    Ok(out)
}

fn route_message6(to: &Subnet6, oif: u32) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(to.network, to.prefix)
        .output_interface(oif)
        .protocol(ROUTE_PROTOCOL)
        .build()
}

/// Adds (or keeps) the on-link IPv6 route to `to` through `oif`.
pub async fn add_route6(handle: &Handle, to: &Subnet6, oif: u32) -> Result<()> {
    handle
        .route()
        .add(route_message6(to, oif))
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the route {to}"))
}

/// Removes the agent's IPv6 route to `to` through `oif`, if it is there.
pub async fn delete_route6(handle: &Handle, to: &Subnet6, oif: u32) -> Result<()> {
    match handle.route().del(route_message6(to, oif)).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ESRCH => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing the route {to}")),
    }
}

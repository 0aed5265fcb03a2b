//! Host routes that carry a narrow path's MTU: `PEER/32 dev UNDERLAY mtu lock N`, through the
//! gateway the host's own route to the peer uses, marked with a protocol number of the agent's
//! own (`ip route` shows `proto 87`). With one, the kernel cuts what the host itself sends the
//! peer to fit the hop that would drop anything bigger: gossip datagrams (fragmented), the
//! VXLAN device's output (its outer packets fragmented, DF being clear). A switch port with a
//! small MTU never says so; without the route, big gossip messages to that peer would vanish.

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{Context as _, Result};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol},
};

/// `proto 87` ('W'): only routes with it are the agent's to change or remove.
const PROTOCOL: RouteProtocol = RouteProtocol::Other(87);
/// RTAX_MTU: the lock keeps the kernel from raising the MTU again on its own.
const LOCK_MTU: u32 = 1 << 2;
/// RT_TABLE_MAIN, where the host's routes (and the agent's) are.
const MAIN_TABLE: u8 = 254;

/// The agent's MTU routes: peer -> MTU.
pub async fn list(handle: &Handle) -> Result<BTreeMap<Ipv4Addr, u32>> {
    let mut out = BTreeMap::new();
    for route in main_routes(handle).await? {
        if route.header.protocol != PROTOCOL || route.header.destination_prefix_length != 32 {
            continue;
        }
        let (Some(peer), Some(mtu)) = (destination(&route), mtu(&route)) else {
            continue;
        };
        out.insert(peer, mtu);
    }
    Ok(out)
}

/// Routes `peer` out of `oif` with path MTU `mtu`, through the gateway (if any) of the most
/// specific route the host has to it.
pub async fn set(handle: &Handle, peer: Ipv4Addr, oif: u32, mtu: u32) -> Result<()> {
    let gateway = gateway_to(handle, peer).await?;
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(peer, 32)
        .output_interface(oif)
        .protocol(PROTOCOL);
    if let Some(gateway) = gateway {
        builder = builder.gateway(gateway);
    }
    let mut message = builder.build();
    message.attributes.push(RouteAttribute::Metrics(vec![
        RouteMetric::Lock(LOCK_MTU),
        RouteMetric::Mtu(mtu),
    ]));
    handle
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the route to {peer} with MTU {mtu}"))
}

/// Removes the agent's MTU route to `peer`, if it is there.
pub async fn remove(handle: &Handle, peer: Ipv4Addr) -> Result<()> {
    let message = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(peer, 32)
        .protocol(PROTOCOL)
        .build();
    match handle.route().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ESRCH => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing the MTU route to {peer}")),
    }
}

/// Removes every MTU route of the agent (`reset`); returns how many there were.
pub async fn remove_all(handle: &Handle) -> Result<usize> {
    let routes = list(handle).await?;
    for peer in routes.keys() {
        remove(handle, *peer).await?;
    }
    Ok(routes.len())
}

async fn main_routes(handle: &Handle) -> Result<Vec<RouteMessage>> {
    let routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let routes: Vec<RouteMessage> = routes.try_collect().await.context("listing routes")?;
    Ok(routes
        .into_iter()
        .filter(|r| r.header.table == MAIN_TABLE)
        .collect())
}

/// The gateway of the most specific route (not one of the agent's) that covers `peer`.
async fn gateway_to(handle: &Handle, peer: Ipv4Addr) -> Result<Option<Ipv4Addr>> {
    let mut best: Option<(u8, Option<Ipv4Addr>)> = None;
    for route in main_routes(handle).await? {
        if route.header.protocol == PROTOCOL {
            continue;
        }
        let prefix = route.header.destination_prefix_length;
        let network = destination(&route).unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(peer) & mask != u32::from(network) & mask {
            continue;
        }
        if best.is_none_or(|(p, _)| prefix > p) {
            let gateway = route.attributes.iter().find_map(|attr| match attr {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => Some(*gw),
                _ => None,
            });
            best = Some((prefix, gateway));
        }
    }
    Ok(best.and_then(|(_, gateway)| gateway))
}

fn destination(route: &RouteMessage) -> Option<Ipv4Addr> {
    route.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn mtu(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Metrics(metrics) => metrics.iter().find_map(|m| match m {
            RouteMetric::Mtu(mtu) => Some(*mtu),
            _ => None,
        }),
        _ => None,
    })
}

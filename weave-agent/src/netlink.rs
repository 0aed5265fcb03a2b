//! Kernel network configuration through rtnetlink: finding the underlay interface.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, bail};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo},
        route::{RouteAddress, RouteAttribute, RouteProtocol, RouteScope},
    },
};

/// What the agent needs to know about an interface to use it as the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub loopback: bool,
    /// rtnetlink link kind, e.g. "veth"; None for plain hardware NICs.
    pub kind: Option<String>,
    /// First IPv4 address and its prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    /// Container-side and host-side overlay veths are never an underlay.
    fn is_overlay_veth(&self) -> bool {
        self.name.starts_with("vethwe") || self.name == "ethwe"
    }

    pub fn mac_string(&self) -> Option<String> {
        self.mac.map(|m| {
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )
        })
    }
}

pub fn connect() -> Result<Handle> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening a netlink (rtnetlink) socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Interfaces of this namespace with their first IPv4 address.
pub async fn links(handle: &Handle) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await.context("listing links")? {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            kind: None,
            ipv4: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Address(addr) => link.mac = addr.try_into().ok(),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind_name(&kind));
                        }
                    }
                }
                _ => {}
            }
        }
        links.push(link);
    }
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
        let v4 = msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
                Some(*ip)
            }
            _ => None,
        });
        if let (Some(ip), Some(link)) = (v4, links.iter_mut().find(|l| l.index == msg.header.index))
            && link.ipv4.is_none()
        {
            link.ipv4 = Some((ip, msg.header.prefix_len));
        }
    }
    Ok(links)
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Veth => "veth".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Index of the link called `name`, if there is one.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut stream = handle.link().get().match_name(name.to_owned()).execute();
    match stream.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers a lookup of a missing name with ENODEV.
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ENODEV => Ok(None),
        Err(err) => Err(err).with_context(|| format!("looking up link {name}")),
    }
}

/// Creates a veth pair `host` <-> `peer` in this namespace; returns the host end's index.
pub async fn create_veth(handle: &Handle, host: &str, peer: &str, mtu: u32) -> Result<u32> {
    handle
        .link()
        .add(LinkVeth::new(host, peer).mtu(mtu).build())
        .execute()
        .await
        .with_context(|| format!("creating veth pair {host}/{peer}"))?;
    link_index(handle, host)
        .await?
        .with_context(|| format!("{host} vanished right after it was created"))
}

pub async fn move_to_netns(handle: &Handle, name: &str, netns_fd: i32) -> Result<()> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_name(name)
                .setns_by_fd(netns_fd)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("moving {name} into the container's namespace"))
}

/// Renames link `index` and sets its MAC and MTU (the link must be down to be renamed).
pub async fn configure_link(
    handle: &Handle,
    index: u32,
    name: &str,
    mac: &[u8; 6],
    mtu: u32,
) -> Result<()> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(name)
                .address(mac.to_vec())
                .mtu(mtu)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("configuring {name}"))
}

pub async fn add_address(handle: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .with_context(|| format!("adding {ip}/{prefix}"))
}

pub async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("bringing link {index} up"))
}

/// Deletes link `name`; true if it existed.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool> {
    let Some(index) = link_index(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ENODEV => Ok(false),
        Err(err) => Err(err).with_context(|| format!("deleting {name}")),
    }
}

/// The overlay's VXLAN device: external (collect_md) mode, so the eBPF program picks the
/// remote per packet with a tunnel key; no learning, no static remotes, no FDB.
/// Reuses an existing one. Returns its index.
pub async fn ensure_vxlan(handle: &Handle, name: &str, port: u16, mtu: u32) -> Result<u32> {
    if let Some(index) = link_index(handle, name).await? {
        return Ok(index);
    }
    handle
        .link()
        .add(
            LinkVxlan::new(name, 0)
                .port(port)
                .collect_metadata(true)
                .learning(false)
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("creating VXLAN device {name} (UDP {port}, external mode)"))?;
    link_index(handle, name)
        .await?
        .with_context(|| format!("{name} vanished right after it was created"))
}

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

/// Picks the underlay: `requested` if given, else the default route's interface, else the only
/// non-loopback interface with an IPv4 address.
pub fn select_underlay<'a>(
    links: &'a [Link],
    default_oif: Option<u32>,
    requested: Option<&str>,
) -> Result<&'a Link> {
    let chosen = if let Some(name) = requested {
        links.iter().find(|l| l.name == name).with_context(|| {
            format!("no interface named {name} in this network namespace (`ip link` lists them)")
        })?
    } else if let Some(link) = default_oif.and_then(|oif| links.iter().find(|l| l.index == oif)) {
        link
    } else {
        let candidates: Vec<&Link> = links
            .iter()
            .filter(|l| !l.loopback && !l.is_overlay_veth() && l.ipv4.is_some())
            .collect();
        match candidates.as_slice() {
            [only] => *only,
            [] => bail!(
                "no underlay interface: no default route and no non-loopback interface with an \
                 IPv4 address; give one an address or name it with --iface"
            ),
            many => {
                let mut names: Vec<&str> = many.iter().map(|l| l.name.as_str()).collect();
                names.sort_unstable();
                bail!(
                    "cannot choose the underlay interface: no default route and several \
                     interfaces with IPv4 addresses ({}); choose one with --iface",
                    names.join(", ")
                )
            }
        }
    };
    if chosen.loopback {
        bail!(
            "{} is a loopback interface and cannot carry the overlay",
            chosen.name
        );
    }
    if chosen.ipv4.is_none() {
        bail!(
            "{} has no IPv4 address; the overlay reaches peers over IPv4, so add one \
             (`ip addr add ADDR/LEN dev {}`) or choose another interface with --iface",
            chosen.name,
            chosen.name
        );
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, ipv4: Option<&str>) -> Link {
        Link {
            index,
            name: name.to_owned(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            mtu: 1500,
            loopback: name == "lo",
            kind: None,
            ipv4: ipv4.map(|ip| (ip.parse().unwrap(), 24)),
        }
    }

    fn sample() -> Vec<Link> {
        vec![
            link(1, "lo", Some("127.0.0.1")),
            link(2, "eth0", Some("192.168.56.101")),
            link(3, "eth1", None),
            link(4, "vethwe1234", Some("10.9.9.9")),
        ]
    }

    #[test]
    fn default_route_interface_wins() {
        let links = sample();
        let mut with_addr = links.clone();
        with_addr[2].ipv4 = Some(("10.0.0.1".parse().unwrap(), 8));
        assert_eq!(
            select_underlay(&with_addr, Some(3), None).unwrap().name,
            "eth1"
        );
    }

    #[test]
    fn only_addressed_interface_is_picked_and_overlay_veths_ignored() {
        assert_eq!(select_underlay(&sample(), None, None).unwrap().name, "eth0");
    }

    #[test]
    fn several_candidates_are_ambiguous_and_named() {
        let mut links = sample();
        links[2].ipv4 = Some(("10.0.0.1".parse().unwrap(), 8));
        let err = select_underlay(&links, None, None).unwrap_err().to_string();
        assert!(
            err.contains("eth0, eth1") && err.contains("--iface"),
            "{err}"
        );
    }

    #[test]
    fn requested_interface_must_exist_and_have_ipv4() {
        let links = sample();
        let err = select_underlay(&links, None, Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no interface named nope"), "{err}");
        let err = select_underlay(&links, None, Some("eth1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("eth1 has no IPv4 address"), "{err}");
        assert_eq!(
            select_underlay(&links, Some(3), Some("eth0")).unwrap().name,
            "eth0"
        );
    }

    #[test]
    fn nothing_usable_is_an_error() {
        let links = vec![link(1, "lo", Some("127.0.0.1"))];
        let err = select_underlay(&links, None, None).unwrap_err().to_string();
        assert!(err.contains("no underlay interface"), "{err}");
    }
}

//! Kernel network configuration through rtnetlink: links, addresses, the VXLAN device.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, bail};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkUnspec, LinkVeth, LinkVxlan,
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo},
    },
};

use super::underlay::Link;
use crate::net::exposure::HostAddress;

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
        let v4 = ipv4_of(&msg);
        if let (Some(ip), Some(link)) = (v4, links.iter_mut().find(|l| l.index == msg.header.index))
            && link.ipv4.is_none()
        {
            link.ipv4 = Some((ip, msg.header.prefix_len));
        }
    }
    Ok(links)
}

/// Every IPv4 address of this namespace, with the interface it is on.
pub async fn ipv4_addresses(handle: &Handle) -> Result<Vec<HostAddress>> {
    let names: Vec<(u32, String)> = links(handle)
        .await?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let mut out = Vec::new();
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs.try_next().await.context("listing addresses")? {
        let v4 = ipv4_of(&msg);
        let iface = names.iter().find(|(i, _)| *i == msg.header.index);
        if let (Some(ip), Some((_, iface))) = (v4, iface) {
            out.push(HostAddress {
                iface: iface.clone(),
                ip,
                prefix: msg.header.prefix_len,
            });
        }
    }
    Ok(out)
}

/// The IPv4 address an address message carries, if it is one.
fn ipv4_of(msg: &rtnetlink::packet_route::address::AddressMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) => {
            Some(*ip)
        }
        _ => None,
    })
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

/// Creates a veth pair whose `peer` end is born inside the namespace `netns_fd` refers to:
/// moving an existing link between namespaces waits for an RCU grace period, measured at
/// 26 ms of a 45 ms attach. Returns the host end's index.
pub async fn create_veth_into(
    handle: &Handle,
    host: &str,
    peer: &str,
    mtu: u32,
    netns_fd: i32,
) -> Result<u32> {
    let mut msg = LinkVeth::new(host, peer).mtu(mtu).build();
    let mut placed = false;
    for attr in &mut msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else {
            continue;
        };
        for info in infos {
            if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))) = info {
                peer_msg.attributes.push(LinkAttribute::NetNsFd(netns_fd));
                peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
                placed = true;
            }
        }
    }
    if !placed {
        bail!("the veth request has no peer to place in the container's namespace");
    }
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .with_context(|| format!("creating veth pair {host}/{peer} into the container"))?;
    link_index(handle, host)
        .await?
        .with_context(|| format!("{host} vanished right after it was created"))
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

pub async fn add_address(
    handle: &Handle,
    index: u32,
    ip: impl Into<IpAddr>,
    prefix: u8,
) -> Result<()> {
    let ip: IpAddr = ip.into();
    handle
        .address()
        .add(index, ip, prefix)
        .execute()
        .await
        .with_context(|| format!("adding {ip}/{prefix}"))
}

/// Removes `ip` from link `index`; nothing to do if the link does not hold it.
pub async fn remove_address(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<()> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream.try_next().await.context("listing addresses")? {
        if ipv4_of(&msg) == Some(ip) {
            return handle
                .address()
                .del(msg)
                .execute()
                .await
                .with_context(|| format!("removing {ip}"));
        }
    }
    Ok(())
}

/// Adds `ip/prefix` to link `index`, or keeps it if it is there already.
pub async fn replace_address(handle: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .replace()
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
/// Reuses an existing one on the same port. Returns its index.
pub async fn ensure_vxlan(handle: &Handle, name: &str, port: u16, mtu: u32) -> Result<u32> {
    if let Some(index) = link_index(handle, name).await? {
        match vxlan_port(handle, index).await? {
            Some(existing) if existing != port => bail!(
                "the VXLAN device {name} left by an earlier launch uses UDP {existing}, not \
                 {port}; to move the mesh to other ports, `weave-agent reset` first (on every \
                 host, with the same --port at the next launch)"
            ),
            _ => return Ok(index),
        }
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

/// The UDP port of VXLAN device `index`, if it reports one.
async fn vxlan_port(handle: &Handle, index: u32) -> Result<Option<u16>> {
    let mut stream = handle.link().get().match_index(index).execute();
    let Some(msg) = stream
        .try_next()
        .await
        .context("reading the VXLAN device")?
    else {
        return Ok(None);
    };
    Ok(msg.attributes.into_iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.into_iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::Vxlan(vxlan)) => vxlan.into_iter().find_map(|v| match v {
                InfoVxlan::Port(port) => Some(port),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    }))
}

//! Containers as network namespaces: naming them, and configuring `ethwe` inside them.

use std::{
    collections::BTreeSet,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use nix::sched::{CloneFlags, setns};

use super::{
    netlink,
    routes::{self, RouteHolder},
};
use crate::net::{
    addressing::{Cidr, Cidr6},
    exposure::ContainerRoute,
    policy::Subnet6,
};

/// The network namespace file a CONTAINER argument stands for; None for anything else, which
/// is taken for a Docker container name or id.
pub fn netns_path(container: &str) -> Result<Option<PathBuf>> {
    let Some(path) = reference(container)? else {
        return Ok(None);
    };
    if !path.exists() {
        bail!("{container}: {} does not exist", path.display());
    }
    Ok(Some(path))
}

/// The namespace file a CONTAINER argument names, without looking at the file system.
pub fn reference(container: &str) -> Result<Option<PathBuf>> {
    let path = if let Some(name) = container.strip_prefix("netns:") {
        // A name, not a path: `netns:../x` or `netns:/x` would leave /run/netns.
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            bail!("{container:?}: expected netns:NAME, a name under /run/netns");
        }
        Path::new("/run/netns").join(name)
    } else if let Some(pid) = container.strip_prefix("pid:") {
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("{container:?}: expected pid:<number>"))?;
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    } else if container.starts_with('/') {
        PathBuf::from(container)
    } else {
        return Ok(None);
    };
    Ok(Some(path))
}

/// Runs `work` with a netlink handle inside the network namespace `netns`.
///
/// setns(CLONE_NEWNET) changes only the calling thread, so a dedicated thread enters the
/// namespace, runs its own small runtime (netlink sockets belong to the namespace they are
/// opened in) and ends; no pooled thread is ever left in a container's namespace.
pub async fn in_netns<F, Fut, T>(netns: &Path, work: F) -> Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
    T: Send + 'static,
{
    on_thread_in(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let handle = netlink::connect()?;
            work(handle).await
        })
    })
    .await
}

/// Runs `work` on a thread of its own that has entered the network namespace `netns`, and
/// ends the thread after it (see [`in_netns`]). What `work` opens there (sockets) stays in
/// that namespace wherever it is used later.
pub async fn on_thread_in<F, T>(netns: &Path, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            let run = || -> Result<T> {
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .context("entering the container's network namespace")?;
                work()
            };
            let _ = done.send(run());
        })
        .context("starting a thread for the container namespace")?;
    result
        .await
        .context("the container namespace thread died")?
}

/// Inside the container: renames the veth end `temp` to `iface` (`ethwe`, or the name a CNI
/// runtime asked for), gives it the address-derived MAC, the MTU and the address (which adds
/// only the subnet route), and brings it up.
///
/// With `service`, also the route to the agent's DNS server at that address; with
/// `multicast`, the route `224.0.0.0/4` through the interface.
pub async fn configure_ethwe(
    netns: &Path,
    temp: String,
    iface: String,
    cidr: Cidr,
    mtu: u32,
    service: Option<std::net::Ipv4Addr>,
    multicast: bool,
) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let index = name_container_end(&handle, &temp, &iface, &cidr.mac(), mtu).await?;
        netlink::add_address(&handle, index, cidr.ip, cidr.prefix).await?;
        ipv6_on_the_overlay(&iface)?;
        netlink::set_up(&handle, index).await?;
        if let Some(ip) = service {
            routes::add_service_route(&handle, ip, index).await?;
        }
        if multicast {
            routes::add_multicast_route(&handle, index).await?;
        }
        Ok(())
    })
    .await
}

/// Inside the container: the veth end `temp` renamed `iface`, with `mac` and `mtu`, unless the
/// container has an `iface` already. Returns its index.
async fn name_container_end(
    handle: &rtnetlink::Handle,
    temp: &str,
    iface: &str,
    mac: &[u8; 6],
    mtu: u32,
) -> Result<u32> {
    if netlink::link_index(handle, iface).await?.is_some() {
        bail!("the container already has an interface {iface}; detach it first");
    }
    let index = netlink::link_index(handle, temp)
        .await?
        .with_context(|| format!("{temp} did not arrive in the container"))?;
    netlink::configure_link(handle, index, iface, mac, mtu).await?;
    Ok(index)
}

/// Renames the container end `temp` to `iface` with the MAC derived from `cidr`, an IPv6
/// address alone, and brings it up: a container attached by an IPv6 address only.
pub async fn configure_ethwe6(
    netns: &Path,
    temp: String,
    iface: String,
    cidr: Cidr6,
    mtu: u32,
) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let index = name_container_end(&handle, &temp, &iface, &cidr.mac(), mtu).await?;
        ipv6_on_the_overlay(&iface)?;
        netlink::add_address(&handle, index, cidr.ip, cidr.prefix).await?;
        netlink::set_up(&handle, index).await
    })
    .await
}

/// IPv6 on the container's interface as the overlay carries it, set before the link comes
/// up (its link-local address is made then): no router advertisements (there is no router
/// on the overlay, and one a container sent would be dropped anyway), and no duplicate
/// address detection (the programs answer neighbour solicitations for every endpoint,
/// so a probe could only ever be answered by the address's own holder; the mesh refuses
/// an address held twice before it reaches a container).
fn ipv6_on_the_overlay(iface: &str) -> Result<()> {
    for (key, value) in [
        ("accept_ra", "0"),
        ("accept_dad", "0"),
        ("disable_ipv6", "0"),
    ] {
        let path = format!("/proc/sys/net/ipv6/conf/{iface}/{key}");
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // A kernel without IPv6 has no such files: the container simply has none.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err).with_context(|| format!("writing {value} to {path}")),
        }
    }
    Ok(())
}

/// Gives the container's `ethwe` (`iface`) its IPv6 address (no duplicate detection: see
/// [`ipv6_on_the_overlay`]).
pub async fn add_ethwe_address6(netns: &Path, iface: String, cidr: Cidr6) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let index = netlink::link_index(&handle, &iface)
            .await?
            .with_context(|| format!("the container has no interface {iface}"))?;
        ipv6_on_the_overlay(&iface)?;
        netlink::add_address(&handle, index, cidr.ip, cidr.prefix).await
    })
    .await
}

/// The container end of a Docker driver's veth, where it waits for Docker to move it into
/// the sandbox: the address-derived MAC and the MTU (Docker gives it the name, the address
/// and the routes once it is inside).
pub async fn configure_waiting_end(netns: &Path, temp: String, cidr: Cidr, mtu: u32) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let index = netlink::link_index(&handle, &temp)
            .await?
            .with_context(|| format!("{temp} did not arrive in Docker's namespace"))?;
        netlink::configure_link(&handle, index, &temp, &cidr.mac(), mtu).await
    })
    .await
}

/// Gives the container's `ethwe` (`iface`) one more address (a second subnet, say).
pub async fn add_ethwe_address(netns: &Path, iface: String, cidr: Cidr) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let index = netlink::link_index(&handle, &iface)
            .await?
            .with_context(|| format!("the container has no interface {iface}"))?;
        netlink::add_address(&handle, index, cidr.ip, cidr.prefix).await
    })
    .await
}

/// Takes one address off the container's `ethwe`, leaving the others (and the kernel's
/// subnet route goes with it).
pub async fn remove_ethwe_address(netns: &Path, iface: String, cidr: Cidr) -> Result<()> {
    in_netns(netns, move |handle| async move {
        match netlink::link_index(&handle, &iface).await? {
            Some(index) => netlink::remove_address(&handle, index, cidr.ip).await,
            None => Ok(()),
        }
    })
    .await
}

/// A veth pair whose container end (`peer`) is created inside the namespace (by fd, valid
/// for any netns file). Returns the host end's index.
pub async fn create_veth_into(
    handle: &rtnetlink::Handle,
    host: &str,
    peer: &str,
    mtu: u32,
    netns: &Path,
) -> Result<u32> {
    let ns = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    netlink::create_veth_into(handle, host, peer, mtu, ns.as_raw_fd()).await
}

/// Inside the container (or, for an exposed address, the host): makes the agent's routes
/// through the holder's interface exactly `wanted` (on link to the networks isolation rules
/// open to it, through exposed addresses to networks outside the overlay). The kernel's own
/// subnet route is never touched.
pub async fn sync_routes(
    netns: &Path,
    holder: RouteHolder,
    wanted: BTreeSet<ContainerRoute>,
) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let iface = &holder.iface;
        let index = netlink::link_index(&handle, iface)
            .await?
            .with_context(|| format!("the namespace has no {iface} interface"))?;
        let present: BTreeSet<ContainerRoute> = routes::agent_routes(&handle, index)
            .await?
            .into_iter()
            .collect();
        for gone in present.difference(&wanted) {
            routes::delete_route(&handle, gone, index, &holder).await?;
        }
        for new in wanted.difference(&present) {
            routes::add_route(&handle, new, index, &holder).await?;
        }
        Ok(())
    })
    .await
}

/// Makes the agent's IPv6 routes through `iface` in `netns` exactly `wanted` (on link).
pub async fn sync_routes6(netns: &Path, iface: String, wanted: BTreeSet<Subnet6>) -> Result<()> {
    in_netns(netns, move |handle| async move {
        let index = netlink::link_index(&handle, &iface)
            .await?
            .with_context(|| format!("the namespace has no {iface} interface"))?;
        let present: BTreeSet<Subnet6> = routes::agent_routes6(&handle, index)
            .await?
            .into_iter()
            .collect();
        for gone in present.difference(&wanted) {
            routes::delete_route6(&handle, gone, index).await?;
        }
        for new in wanted.difference(&present) {
            routes::add_route6(&handle, new, index).await?;
        }
        Ok(())
    })
    .await
}

/// What a container's interface holds, as `CHECK` compares it with the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSeen {
    pub mac: Option<[u8; 6]>,
    pub addresses: BTreeSet<Cidr>,
}

/// The interface `iface` in `netns` (None if it has none) and its IPv4 addresses.
pub async fn interface_seen(netns: &Path, iface: String) -> Result<Option<InterfaceSeen>> {
    in_netns(netns, move |handle| async move {
        let Some(link) = netlink::links(&handle)
            .await?
            .into_iter()
            .find(|l| l.name == iface)
        else {
            return Ok(None);
        };
        let addresses = netlink::ipv4_addresses(&handle)
            .await?
            .into_iter()
            .filter(|a| a.iface == iface)
            .map(|a| Cidr {
                ip: a.ip,
                prefix: a.prefix,
            })
            .collect();
        Ok(Some(InterfaceSeen {
            mac: link.mac,
            addresses,
        }))
    })
    .await
}

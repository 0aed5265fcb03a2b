//! What Docker asks of the agent through the network and IPAM driver (`plugins::docker`):
//! endpoints whose veth the agent makes and Docker moves into the container, and addresses
//! from the agent's IPAM. An endpoint is listed by `ps` as `docker-net:ENDPOINT-ID`.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result, bail};

use super::{
    agent::Agent,
    endpoints::{self, Target},
    ipam,
    location::same_namespace,
};
use crate::{
    ipam::request::AddressRequest,
    net::{
        addressing::{Cidr, Cidr6, format_mac},
        names::CONTAINER_IFACE,
        policy::Subnet,
    },
};

/// What `ps` shows as the container of a Docker driver endpoint, before Docker's endpoint id.
pub const LABEL_PREFIX: &str = "docker-net:";
/// Where dockerd writes its pid: its network namespace is where Docker looks for the veth
/// end it moves into a sandbox.
const DOCKERD_PID: &str = "/var/run/docker.pid";

fn label(endpoint_id: &str) -> String {
    format!("{LABEL_PREFIX}{endpoint_id}")
}

/// The namespace dockerd runs in, when it is another than the agent's (every namespace host
/// of the tests shares the machine's one engine).
fn dockerd_netns() -> Option<PathBuf> {
    let pid = std::fs::read_to_string(DOCKERD_PID).ok()?;
    let path = PathBuf::from(format!("/proc/{}/ns/net", pid.trim()));
    path.exists().then_some(path)
}

/// `CreateEndpoint`: the veth for `address` (as Docker's IPAM, or this driver's, gave it),
/// the endpoint in the maps and the mesh. Returns its MAC.
pub async fn create_endpoint(
    agent: &Agent,
    endpoint_id: &str,
    (address, address_ipv6): (&str, &str),
    requested_mac: &str,
) -> Result<String> {
    let label = label(endpoint_id);
    if let Some(ep) = agent
        .inner
        .lock()
        .await
        .state
        .endpoints
        .iter()
        .find(|e| e.container == label)
    {
        return Ok(format_mac(&ep.mac()));
    }
    let cidr: Cidr = address
        .parse()
        .with_context(|| format!("Docker gave the endpoint the address {address:?}"))?;
    let ipv6: Option<Cidr6> = (!address_ipv6.is_empty())
        .then(|| address_ipv6.parse())
        .transpose()
        .with_context(|| format!("Docker gave the endpoint the IPv6 address {address_ipv6:?}"))?;
    let mac = format_mac(&cidr.mac());
    if !requested_mac.is_empty() && !requested_mac.eq_ignore_ascii_case(&mac) {
        bail!(
            "weave-agent derives a container's MAC from its address ({mac} for {cidr}), which \
             its anti-spoofing checks; leave --mac-address out"
        );
    }
    let waiting = dockerd_netns()
        .filter(|ns| !same_namespace(ns, Path::new("/proc/self/ns/net")))
        .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net"));
    let target = Target {
        label: label.clone(),
        // Docker names the sandbox only at Join; until then no path is the container's.
        netns: PathBuf::from(format!("/run/docker/netns/pending-{endpoint_id}")),
        docker_id: None,
        dns_name: None,
        iface: format!("{CONTAINER_IFACE}0"),
        left_for_docker: Some(waiting),
        // Docker gives the interface its routes at Join (`protocol::joined`).
        multicast_route: false,
    };
    let done =
        endpoints::attach_target(agent, &[AddressRequest::Explicit(cidr)], &target, None).await?;
    // Docker puts the IPv6 address on the interface itself at Join (moving it into the
    // sandbox would drop one put there now): only the mesh is told here.
    if let Some(v6) = ipv6 {
        let kept = async {
            let (first, _) = endpoints::claim_ipv6(agent, &target, v6).await?;
            endpoints::keep_ipv6(agent, &target, first, v6).await
        }
        .await;
        if let Err(err) = kept {
            endpoints::take_back(agent, &done).await;
            return Err(err);
        }
    }
    Ok(mac)
}

/// `Join`: the sandbox is known now. Returns the veth end Docker is to move in.
pub async fn join(agent: &Agent, endpoint_id: &str, sandbox_key: &str) -> Result<String> {
    let label = label(endpoint_id);
    let mut guard = agent.inner.lock().await;
    let inner = &mut *guard;
    let Some(ep) = inner
        .state
        .endpoints
        .iter_mut()
        .find(|e| e.container == label)
    else {
        bail!("no endpoint {endpoint_id} here: CreateEndpoint went to another agent?");
    };
    ep.netns = PathBuf::from(sandbox_key);
    let temp = ep.cidr.peer_temp_name();
    agent.save(inner)?;
    Ok(temp)
}

/// `DeleteEndpoint`: the endpoint goes (none is no error: Docker retries).
pub async fn delete_endpoint(agent: &Agent, endpoint_id: &str) -> Result<()> {
    let label = label(endpoint_id);
    endpoints::detach_matching(agent, |e| e.expose.is_none() && e.container == label).await?;
    Ok(())
}

/// `RequestPool`: the subnet asked for, inside the allocation range, or the default subnet.
/// It is the pool's id too, and the gateway to report is its network address (the subnet
/// written alike): the driver gives containers no gateway, so Docker need not take one of
/// its addresses.
pub async fn request_pool(agent: &Agent, pool: &str, v6: bool) -> Result<Subnet> {
    if v6 {
        bail!("weave-agent's IPAM serves IPv4 only");
    }
    let inner = agent.inner.lock().await;
    let space = &inner.ipam.space;
    let subnet: Subnet = if pool.is_empty() {
        space.default_subnet
    } else {
        pool.parse()
            .with_context(|| format!("--subnet {pool} is not an IPv4 CIDR"))?
    };
    if !space.range.contains(&subnet) {
        bail!(
            "--subnet {subnet} is not inside this mesh's --ipalloc-range {}; use Docker's own \
             IPAM for it (leave --ipam-driver out)",
            space.range
        );
    }
    Ok(subnet)
}

/// `RequestAddress`: `address` if Docker names one (`--ip`), else the next free one of the
/// pool, held until the endpoint takes it or Docker releases it.
pub async fn request_address(agent: &Agent, pool_id: &str, address: &str) -> Result<String> {
    let subnet: Subnet = pool_id
        .parse()
        .with_context(|| format!("unknown pool {pool_id:?}"))?;
    let request = if address.is_empty() {
        AddressRequest::Subnet(subnet)
    } else {
        let ip: Ipv4Addr = address
            .parse()
            .with_context(|| format!("Docker asked for the address {address:?}"))?;
        AddressRequest::Explicit(Cidr {
            ip,
            prefix: subnet.prefix,
        })
    };
    // A holder of its own per request: allocating again for the same holder answers what it
    // holds already, which would give two endpoints one address.
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    let holder = format!(
        "docker-ipam:{}-{}",
        crate::net::clock::unix_millis(),
        REQUESTS.fetch_add(1, Ordering::Relaxed)
    );
    let (cidr, _) = ipam::address_for(agent, &request, &holder).await?;
    Ok(cidr.to_string())
}

/// `ReleaseAddress`: free unless an endpoint here holds it.
pub async fn release_address(agent: &Agent, address: &str) -> Result<()> {
    let ip: Ipv4Addr = address
        .split('/')
        .next()
        .unwrap_or(address)
        .parse()
        .with_context(|| format!("Docker released the address {address:?}"))?;
    ipam::finished(agent, ip).await;
    Ok(())
}

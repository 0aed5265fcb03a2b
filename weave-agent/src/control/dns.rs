//! The daemon's side of DNS: the service endpoint on this host, the names it publishes, the
//! zone the server answers from, and the `dns`, `dns-add` and `dns-remove` requests.

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc};

use anyhow::{Context as _, Result, bail};
use weave_common::endpoint::ENDPOINT_SERVICE;

use super::{agent::Agent, agent::Inner, api, config::DnsConfig};
use crate::{
    dns::{
        SERVICE_ADDRESS,
        server::{Service, Sockets},
        upstream,
        zone::{self, Zone},
    },
    host::exposed,
    net::{
        addressing::Cidr,
        names::{DNS_IFACE, DNS_VETH},
        policy::Subnet,
    },
};

/// The server's endpoint and sockets, made before the daemon says it is ready (after the
/// endpoints are adopted, which would take the service's map entry for a leftover).
pub async fn prepare(inner: &mut Inner, config: &DnsConfig) -> Result<(Arc<Service>, Sockets)> {
    let cidr = Cidr {
        ip: SERVICE_ADDRESS,
        prefix: 32,
    };
    let index = exposed::make_pair(&inner.netlink, cidr, DNS_IFACE, DNS_VETH, inner.mtu)
        .await
        .context("making the DNS server's interface")?;
    inner.datapath.attach_container(DNS_VETH)?;
    let mut entry = cidr.local_endpoint(index);
    entry.flags |= ENDPOINT_SERVICE;
    inner.datapath.set_endpoint(cidr.ip, entry)?;
    relax_reverse_path_filter();
    let sockets = Sockets::bind(SERVICE_ADDRESS, DNS_IFACE)?;
    // Read at start, before the daemon left this namespace's view of /etc (see `daemon`).
    let upstreams = config.upstreams.clone().unwrap_or_default();
    if upstreams.is_empty() {
        tracing::warn!(
            "no upstream resolver (none in {}, no --dns-upstream): names outside {} get SERVFAIL",
            upstream::RESOLV_CONF,
            config.domain
        );
    }
    let service = Service::new(SERVICE_ADDRESS, config.domain.clone(), upstreams);
    Ok((Arc::new(service), sockets))
}

/// Queries arrive on the DNS interface from container addresses the host routes elsewhere
/// (or not at all): strict reverse-path filtering there would drop them all.
fn relax_reverse_path_filter() {
    let path = format!("/proc/sys/net/ipv4/conf/{DNS_IFACE}/rp_filter");
    if let Err(err) = std::fs::write(&path, "0") {
        tracing::warn!("turning off reverse-path filtering on {DNS_IFACE}: {err}");
    }
    let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap_or_default();
    if all.trim() == "1" {
        tracing::warn!(
            "net.ipv4.conf.all.rp_filter is 1 (strict), which overrides {DNS_IFACE}'s: containers' \
             DNS queries will be dropped; set it to 2 (loose)"
        );
    }
}

/// The zone from what this host and the live peers publish; reverse names of the address
/// range and of every subnet in use are answered here.
pub fn refresh(agent: &Agent, inner: &Inner) {
    let Some(service) = &agent.dns else {
        return;
    };
    let mut records: Vec<(Ipv4Addr, String)> = Vec::new();
    let mut reverse: BTreeSet<Subnet> = BTreeSet::from([inner.ipam.space.range]);
    for ep in &inner.state.endpoints {
        reverse.insert(ep.cidr.subnet());
        if let Some(name) = &ep.dns_name {
            records.push((ep.cidr.ip, name.clone()));
        }
    }
    for (ip, names) in &inner.state.dns_records {
        records.extend(names.iter().map(|n| (*ip, n.clone())));
    }
    for peer in inner.peers.iter().filter(|p| p.alive) {
        reverse.extend(peer.endpoints.iter().map(|e| e.cidr.subnet()));
        for (ip, names) in &peer.names {
            records.extend(names.iter().map(|n| (*ip, n.clone())));
        }
    }
    service.set_zone(Zone::new(
        &service.domain,
        records,
        reverse.into_iter().collect(),
    ));
}

/// The full name for a container named `name`, if the agent serves names.
pub fn name_for(agent: &Agent, name: &str) -> Result<Option<String>> {
    match &agent.dns {
        Some(service) => Ok(Some(zone::qualify(name, &service.domain)?)),
        None => Ok(None),
    }
}

/// `dns-add IP... -h NAME` (or `dns-remove`): changes the names this host gives to `ips`.
pub async fn change(
    agent: &Agent,
    ips: &[Ipv4Addr],
    name: &str,
    add: bool,
) -> Result<Vec<api::DnsRecord>> {
    let Some(service) = &agent.dns else {
        bail!("this agent serves no names: it was launched with --no-dns");
    };
    let full = zone::qualify(name, &service.domain)?;
    let mut inner = agent.inner.lock().await;
    for ip in ips {
        let names = inner.state.dns_records.entry(*ip).or_default();
        if add {
            names.insert(full.clone());
        } else if !names.remove(&full) {
            bail!("{ip} has no name {full} given with dns-add");
        }
        if names.is_empty() {
            inner.state.dns_records.remove(ip);
        }
    }
    agent.save(&inner)?;
    for ip in ips {
        agent
            .gossip
            .publish_names(*ip, &inner.state.names_of(*ip))
            .await;
    }
    refresh(agent, &inner);
    Ok(listing(agent))
}

/// Every name the server answers, as `weave-agent dns` lists them.
pub fn listing(agent: &Agent) -> Vec<api::DnsRecord> {
    let Some(service) = &agent.dns else {
        return Vec::new();
    };
    service
        .zone()
        .records()
        .map(|(name, ip)| api::DnsRecord {
            name: name.to_owned(),
            ip,
        })
        .collect()
}

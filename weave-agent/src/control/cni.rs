//! What a CNI runtime asks of the agent through the plugin (`plugins::cni`): ADD, DEL, CHECK
//! and GC of attachments, each the endpoints of one runtime container id on one of its
//! interfaces. The agent does the work as for `attach`; addresses come from its IPAM.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Result, bail};

use super::{
    agent::Agent,
    api::{self, CniAttachment, CniDns},
    endpoints::{self, Target},
    state::LocalEndpoint,
    status::endpoint_info,
};
use crate::{
    host::{netlink, netns},
    ipam::request::{needs_ipv4, parse_with_ipv6},
    net::addressing::{Cidr, format_mac},
};

/// What `ps` shows as the container of a CNI attachment, before the runtime's id.
pub const LABEL_PREFIX: &str = "cni:";

/// One runtime container's interface, as ADD named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub label: String,
    pub iface: String,
}

/// The label of the runtime's container `container_id`.
fn label(container_id: &str) -> String {
    format!("{LABEL_PREFIX}{container_id}")
}

impl Attachment {
    /// Refuses what the kernel would refuse as an interface name, and an empty id.
    pub fn new(container_id: &str, iface: &str) -> Result<Self> {
        if container_id.is_empty() || container_id.contains(char::is_whitespace) {
            bail!("the container id {container_id:?} is empty or holds white space");
        }
        valid_iface(iface)?;
        Ok(Self {
            label: label(container_id),
            iface: iface.to_owned(),
        })
    }

    fn holds(&self, ep: &LocalEndpoint) -> bool {
        ep.expose.is_none() && ep.container == self.label && ep.iface == self.iface
    }
}

/// The kernel's rules for a link name: 1 to 15 bytes, no `/`, `:` or white space, not `.`
/// or `..`.
fn valid_iface(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        bail!(
            "{name:?} cannot name an interface: 1 to 15 characters, no '/', ':' or white \
             space"
        );
    }
    Ok(())
}

/// ADD: the attachment's endpoints, made now, or as an earlier ADD made them.
pub async fn add(
    agent: &Agent,
    attachment: &Attachment,
    netns: PathBuf,
    addresses: &str,
    dns_name: Option<String>,
    mtu: Option<u32>,
) -> Result<Vec<api::EndpointInfo>> {
    let (requests, ipv6) = parse_with_ipv6(addresses)?;
    needs_ipv4("the CNI plugin", &requests, ipv6.as_ref())?;
    {
        let inner = agent.inner.lock().await;
        let existing: Vec<api::EndpointInfo> = inner
            .state
            .endpoints
            .iter()
            .filter(|e| attachment.holds(e))
            .map(endpoint_info)
            .collect();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let target = Target {
        label: attachment.label.clone(),
        netns,
        docker_id: None,
        // A runtime's name that makes no DNS name (Podman allows `_`) just gets none.
        dns_name: dns_name.and_then(|name| super::dns::name_for(agent, &name).ok().flatten()),
        iface: attachment.iface.clone(),
        left_for_docker: None,
        multicast_route: true,
    };
    endpoints::attach_dual(agent, &requests, ipv6, &target, mtu).await
}

/// DEL: the attachment's endpoints go (its addresses are freed); none is no error, as the
/// spec asks.
pub async fn del(agent: &Agent, attachment: &Attachment) -> Result<Vec<api::EndpointInfo>> {
    let (detached, _) = endpoints::detach_matching(agent, |e| attachment.holds(e)).await?;
    Ok(detached)
}

/// GC: every CNI attachment the runtime no longer has goes.
pub async fn gc(agent: &Agent, keep: &[CniAttachment]) -> Result<Vec<api::EndpointInfo>> {
    let kept: BTreeSet<(String, &str)> = keep
        .iter()
        .map(|a| (label(&a.container_id), a.iface.as_str()))
        .collect();
    let (detached, _) = endpoints::detach_matching(agent, |e| {
        e.expose.is_none()
            && e.container.starts_with(LABEL_PREFIX)
            && !kept.contains(&(e.container.clone(), e.iface.as_str()))
    })
    .await?;
    Ok(detached)
}

/// CHECK: the attachment is recorded, its host veth is there, and the container's interface
/// has the MAC and exactly the addresses recorded.
pub async fn check(agent: &Agent, attachment: &Attachment, netns: &std::path::Path) -> Result<()> {
    let (recorded, handle) = {
        let inner = agent.inner.lock().await;
        let recorded: Vec<LocalEndpoint> = inner
            .state
            .endpoints
            .iter()
            .filter(|e| attachment.holds(e))
            .cloned()
            .collect();
        (recorded, inner.netlink.clone())
    };
    let Some(first) = recorded.first() else {
        bail!(
            "no attachment of {} on {} here: none was added, or its interface went and the \
             agent withdrew it (ADD it again)",
            attachment.label,
            attachment.iface
        );
    };
    let veth = netlink::link_index(&handle, &first.host_veth)
        .await?
        .is_some();
    let seen = netns::interface_seen(netns, attachment.iface.clone()).await?;
    verdict(&recorded, veth, seen.as_ref())
}

/// The agent's name server for a CNI result, when it runs one.
pub fn dns(agent: &Agent) -> Option<CniDns> {
    agent.dns.as_ref().map(|service| CniDns {
        nameserver: service.address,
        domain: service.domain.clone(),
    })
}

/// What CHECK concludes from the record and what the kernel shows.
fn verdict(
    recorded: &[LocalEndpoint],
    veth_present: bool,
    seen: Option<&netns::InterfaceSeen>,
) -> Result<()> {
    let Some(first) = recorded.first() else {
        bail!("nothing recorded");
    };
    if !veth_present {
        bail!(
            "the veth of the container's {} is gone (its host end was {})",
            first.iface,
            first.host_veth
        );
    }
    let Some(seen) = seen else {
        bail!("the container has no interface {}", first.iface);
    };
    if seen.mac != Some(first.mac()) {
        bail!(
            "{} has MAC {}, not {}",
            first.iface,
            seen.mac
                .map_or_else(|| "none".to_owned(), |m| format_mac(&m)),
            format_mac(&first.mac())
        );
    }
    let wanted: BTreeSet<Cidr> = recorded.iter().map(|e| e.cidr).collect();
    if seen.addresses != wanted {
        let list = |set: &BTreeSet<Cidr>| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "{} holds [{}], not [{}]",
            first.iface,
            list(&seen.addresses),
            list(&wanted)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(cidr: &str) -> LocalEndpoint {
        LocalEndpoint {
            cidr: cidr.parse().unwrap(),
            container: "cni:abc".into(),
            netns: "/run/netns/x".into(),
            host_veth: "vethwe0a200001".into(),
            mtu: 1410,
            docker_id: None,
            forwards: Vec::new(),
            expose: None,
            dns_name: None,
            mac_from: None,
            ipv6: None,
            iface: "eth0".into(),
            no_multicast_route: false,
        }
    }

    #[test]
    fn interface_names_the_kernel_would_refuse_are_refused() {
        for bad in ["", ".", "..", "a/b", "eth:0", "eth 0", "sixteen-letters!"] {
            assert!(Attachment::new("abc", bad).is_err(), "{bad:?}");
        }
        assert!(Attachment::new("", "eth0").is_err());
        let a = Attachment::new("abc", "eth0").unwrap();
        assert_eq!(a.label, "cni:abc");
        assert!(a.holds(&endpoint("10.32.0.1/12")));
        assert!(
            !Attachment::new("abc", "eth1")
                .unwrap()
                .holds(&endpoint("10.32.0.1/12"))
        );
    }

    #[test]
    fn check_passes_only_when_the_kernel_shows_what_was_recorded() {
        let eps = [endpoint("10.32.0.1/12")];
        let healthy = netns::InterfaceSeen {
            mac: Some(eps[0].mac()),
            addresses: BTreeSet::from(["10.32.0.1/12".parse().unwrap()]),
        };
        verdict(&eps, true, Some(&healthy)).unwrap();
        let gone = verdict(&eps, true, None).unwrap_err().to_string();
        assert!(gone.contains("no interface eth0"), "{gone}");
        assert!(verdict(&eps, false, Some(&healthy)).is_err());
        let other_mac = netns::InterfaceSeen {
            mac: Some([2, 0, 0, 0, 0, 1]),
            ..healthy.clone()
        };
        assert!(verdict(&eps, true, Some(&other_mac)).is_err());
        let more = netns::InterfaceSeen {
            addresses: BTreeSet::from([
                "10.32.0.1/12".parse().unwrap(),
                "10.32.0.9/12".parse().unwrap(),
            ]),
            ..healthy
        };
        let msg = verdict(&eps, true, Some(&more)).unwrap_err().to_string();
        assert!(msg.contains("10.32.0.9/12"), "{msg}");
    }
}

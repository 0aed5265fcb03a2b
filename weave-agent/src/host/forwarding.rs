//! Whether a container can send a packet it received on `ethwe` on, unsegmented: the one
//! thing that decides if its GSO super-packets may be decapsulated in eBPF on a kernel that
//! cannot clear their tunnel GSO state (see `weave_common::endpoint::ENDPOINT_FORWARDS`).
//!
//! The data path hands a container only packets addressed to its own `ethwe` address, so IP
//! forwarding alone sends none of them on: the kernel delivers them locally. That matters,
//! because IPv4 forwarding is on in most containers: a new namespace copies the host's
//! `ip_forward` (`net.core.devconf_inherit_init_net` 0, the default), and Docker hosts have
//! it on. What does send a received packet on, as the kernel has it, and what is checked:
//! - IP forwarding on `ethwe` (`net.ipv4.conf.ethwe.forwarding`, which `ip_forward` sets)
//!   together with something that sends a packet for the container's own address elsewhere:
//!   netfilter rules (an nftables table, or a legacy iptables `nat` or `mangle` table: DNAT,
//!   TPROXY-less redirects, marks for policy routing), IPVS services, policy routing rules
//!   beyond the kernel's three, or the address no longer on `ethwe`;
//! - `ethwe` enslaved (bridge, bond, team, VRF): its master may pass the packet to a port;
//! - devices stacked on `ethwe` (VLAN, macvlan, ipvlan): they take its packets as their own
//!   and may forward them in turn;
//! - an XDP program on `ethwe` (generic XDP runs on redirected packets and may send them back
//!   out), a `clsact`/`ingress` qdisc (tc filters and actions may redirect or mirror) and TCX
//!   programs on `ethwe`'s ingress.
//!
//! A packet read by a socket and written again is a new packet, with no GSO state to break.

use std::{net::Ipv4Addr, os::fd::AsRawFd as _, path::Path};

use anyhow::{Context as _, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, IpVersion,
    packet_route::{
        address::AddressAttribute,
        link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
        rule::RuleAttribute,
        tc::TcAttribute,
    },
    sys::{
        Socket, SocketAddr,
        protocols::{NETLINK_NETFILTER, NETLINK_ROUTE},
    },
};
use tokio::io::{Interest, unix::AsyncFd};

use super::netns::{in_netns, on_thread_in};

/// What a probe of the container's namespace found on and around `ethwe`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The container's interface on the overlay (`ethwe`, or a CNI runtime's name).
    pub iface: String,
    /// `net.ipv4.conf.ethwe.forwarding` is 1.
    pub ip_forwarding: bool,
    /// What may send a packet for the container's own address elsewhere once forwarding is
    /// on (netfilter rules, IPVS, policy routing, the address gone from `ethwe`).
    pub redirectors: Vec<String>,
    /// Name of the device `ethwe` is enslaved to.
    pub master: Option<String>,
    /// Devices stacked on `ethwe`.
    pub uppers: Vec<String>,
    pub xdp: bool,
    /// Kind of an ingress-side qdisc on `ethwe` (`clsact` or `ingress`).
    pub ingress_qdisc: Option<String>,
    /// Programs attached to `ethwe`'s TCX ingress.
    pub tcx_programs: usize,
}

impl Facts {
    /// Why the container may send a received packet on; empty when it cannot.
    pub fn reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ip_forwarding && !self.redirectors.is_empty() {
            out.push(format!(
                "IPv4 forwarding on {}, and {}",
                self.iface,
                self.redirectors.join(", ")
            ));
        }
        if let Some(master) = &self.master {
            out.push(format!("{} is enslaved to {master}", self.iface));
        }
        for upper in &self.uppers {
            out.push(format!("{upper} is stacked on {}", self.iface));
        }
        if self.xdp {
            out.push(format!("an XDP program on {}", self.iface));
        }
        if let Some(kind) = &self.ingress_qdisc {
            out.push(format!(
                "a {kind} qdisc on {} (tc may redirect)",
                self.iface
            ));
        }
        if self.tcx_programs > 0 {
            out.push(format!("TCX programs on {}'s ingress", self.iface));
        }
        out
    }
}

/// Looks at `ethwe`, which should hold `address`, in the network namespace `netns`.
pub async fn probe(netns: &Path, iface: String, address: Ipv4Addr) -> Result<Facts> {
    in_netns(netns, move |handle| async move {
        probe_here(&handle, iface, address).await
    })
    .await
}

/// [`probe`], from inside the namespace.
async fn probe_here(handle: &Handle, iface: String, address: Ipv4Addr) -> Result<Facts> {
    let mut facts = Facts {
        ip_forwarding: read_flag(&format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))?,
        ..Facts::default()
    };
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing links")?;
    let ethwe = links
        .iter()
        .find(|m| link_name(m).as_deref() == Some(iface.as_str()))
        .with_context(|| format!("the container has no interface {iface}"))?;
    let index = ethwe.header.index;
    look_at_ethwe(&mut facts, ethwe, &links);
    facts.ingress_qdisc = ingress_qdisc(handle, index).await?;
    facts.tcx_programs = match SchedClassifier::query_tcx(&iface, TcAttachType::Ingress) {
        Ok((_, programs)) => programs.len(),
        // No TCX in the kernel, or none on the device: nothing attached that way.
        Err(_) => 0,
    };
    if facts.ip_forwarding {
        facts.redirectors = redirectors(handle, index, &iface, address).await?;
    }
    facts.iface = iface;
    Ok(facts)
}

fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// `ethwe`'s master and XDP program, and the devices stacked on it, from the namespace's
/// `links`.
fn look_at_ethwe(facts: &mut Facts, ethwe: &LinkMessage, links: &[LinkMessage]) {
    let index = ethwe.header.index;
    for attr in &ethwe.attributes {
        match attr {
            LinkAttribute::Controller(master) => {
                facts.master = Some(
                    links
                        .iter()
                        .find(|m| m.header.index == *master)
                        .and_then(link_name)
                        .unwrap_or_else(|| format!("link {master}")),
                );
            }
            LinkAttribute::Xdp(xdp) => {
                facts.xdp = xdp.iter().any(|x| {
                    matches!(x, LinkXdp::Attached(a) if *a != XdpAttached::None)
                        || matches!(x, LinkXdp::ProgId(id) if *id != 0)
                });
            }
            _ => {}
        }
    }
    // A device stacked on ethwe names it as its link; one whose link is in another namespace
    // (ethwe's own veth peer, say) says so with a namespace id.
    for msg in links.iter().filter(|m| m.header.index != index) {
        let on_ethwe = msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Link(l) if *l == index));
        let elsewhere = msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
        if on_ethwe && !elsewhere {
            facts
                .uppers
                .push(link_name(msg).unwrap_or_else(|| format!("link {}", msg.header.index)));
        }
    }
}

async fn ingress_qdisc(handle: &Handle, index: u32) -> Result<Option<String>> {
    let mut qdiscs = handle.qdisc().get().index(index as i32).execute();
    while let Some(msg) = qdiscs.try_next().await.context("listing qdiscs")? {
        if msg.header.index != index as i32 {
            continue;
        }
        for attr in msg.attributes {
            if let TcAttribute::Kind(kind) = attr
                && (kind == "clsact" || kind == "ingress")
            {
                return Ok(Some(kind));
            }
        }
    }
    Ok(None)
}

/// The kernel's own policy routing rules (priority, table): local, main, default.
const DEFAULT_RULES: [(u32, u32); 3] = [(0, 255), (32766, 254), (32767, 253)];

/// What may send a packet for `address` on `ethwe` (link `index`) elsewhere.
async fn redirectors(
    handle: &Handle,
    index: u32,
    iface: &str,
    address: Ipv4Addr,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let tables = nftables_tables().unwrap_or(0);
    if tables > 0 {
        out.push(format!("{tables} nftables tables"));
    }
    // /proc/thread-self: /proc/self/net would show the namespace of the process's main thread.
    let legacy =
        std::fs::read_to_string("/proc/thread-self/net/ip_tables_names").unwrap_or_default();
    for table in legacy.lines().filter(|t| matches!(*t, "nat" | "mangle")) {
        out.push(format!("an iptables {table} table"));
    }
    let ipvs = std::fs::read_to_string("/proc/thread-self/net/ip_vs").unwrap_or_default();
    if ipvs
        .lines()
        .any(|l| l.starts_with("TCP") || l.starts_with("UDP"))
    {
        out.push("IPVS services".to_owned());
    }
    let mut rules = handle.rule().get(IpVersion::V4).execute();
    let mut custom = 0;
    while let Some(rule) = rules.try_next().await.context("listing routing rules")? {
        let priority = rule.attributes.iter().find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        });
        let table = rule
            .attributes
            .iter()
            .find_map(|a| match a {
                RuleAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(rule.header.table));
        if !DEFAULT_RULES.contains(&(priority.unwrap_or(0), table)) {
            custom += 1;
        }
    }
    if custom > 0 {
        out.push(format!("{custom} policy routing rules"));
    }
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut held = false;
    while let Some(msg) = addresses.try_next().await.context("listing addresses")? {
        held |= msg.header.index == index
            && msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(ip) if *ip == address));
    }
    if !held {
        out.push(format!("{address} is not on {iface}"));
    }
    Ok(out)
}

/// nfnetlink: the nf_tables subsystem and its "get tables" request.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;

/// How many nftables tables this namespace has (iptables-nft's included). One dump request
/// on a netfilter netlink socket: no crate for nf_tables speaks it without linking libnftnl
/// or running `nft`, and counting the answers is all that is needed.
fn nftables_tables() -> Result<usize> {
    let mut socket = Socket::new(NETLINK_NETFILTER).context("opening a netfilter socket")?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&20u32.to_ne_bytes());
    request.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    request.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel fills it in
    request.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]); // nfgenmsg: any family
    socket.send(&request, 0)?;
    let mut tables = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is valid for its length; recv writes at most that much.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("reading nftables tables");
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
            match kind {
                k if k == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE => tables += 1,
                k if k == libc::NLMSG_DONE as u16 => return Ok(tables),
                // nf_tables is not loaded, or refuses: no tables it could hold.
                k if k == libc::NLMSG_ERROR as u16 => return Ok(tables),
                _ => {}
            }
            let step = (len.max(16) + 3) & !3;
            rest = rest.get(step..).unwrap_or_default();
        }
    }
}

fn read_flag(path: &str) -> Result<bool> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text.trim() != "0")
}

/// Netlink notifications from a container's namespace that may change what [`probe`] finds:
/// device configuration (forwarding), links (masters, stacked devices, XDP), addresses,
/// routing rules, qdiscs and nftables. TCX attachments, legacy iptables and IPVS send none;
/// they are seen at the next probe another change causes.
pub struct Changes {
    route: AsyncFd<Socket>,
    netfilter: Option<AsyncFd<Socket>>,
}

impl Changes {
    /// Subscribes in `netns`. A socket belongs to the namespace it was opened in, so they are
    /// opened on a thread inside it ([`on_thread_in`]) and then read from anywhere.
    pub async fn subscribe(netns: &Path) -> Result<Self> {
        let (route, netfilter) = on_thread_in(netns, || {
            let route = listen(
                NETLINK_ROUTE,
                &[
                    libc::RTNLGRP_IPV4_NETCONF,
                    libc::RTNLGRP_LINK,
                    libc::RTNLGRP_IPV4_IFADDR,
                    libc::RTNLGRP_IPV4_RULE,
                    libc::RTNLGRP_TC,
                ],
            )?;
            // A kernel without nf_tables has no tables to watch.
            let netfilter = listen(NETLINK_NETFILTER, &[libc::NFNLGRP_NFTABLES as u32]).ok();
            Ok((route, netfilter))
        })
        .await?;
        Ok(Self {
            route: register(route)?,
            netfilter: netfilter.map(register).transpose()?,
        })
    }

    /// Waits for the next notification, then takes every one queued behind it: one probe
    /// answers them all.
    pub async fn next(&mut self) -> Result<()> {
        match &self.netfilter {
            Some(netfilter) => tokio::select! {
                got = drain(&self.route) => got,
                got = drain(netfilter) => got,
            },
            None => drain(&self.route).await,
        }
    }
}

/// A non-blocking netlink socket of `protocol` in this namespace, in multicast `groups`.
fn listen(protocol: isize, groups: &[u32]) -> Result<Socket> {
    let mut socket = Socket::new(protocol).context("opening a netlink socket")?;
    socket.bind_auto().context("binding a netlink socket")?;
    for group in groups {
        socket
            .add_membership(*group)
            .with_context(|| format!("joining netlink group {group}"))?;
    }
    socket.set_non_blocking(true)?;
    Ok(socket)
}

fn register(socket: Socket) -> Result<AsyncFd<Socket>> {
    // SAFETY: the socket owns its descriptor, which stays open and the same until the AsyncFd
    // (its owner from here on) is dropped.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("registering a netlink socket")
}

/// Waits until `socket` has a notification, then reads all it has.
async fn drain(socket: &AsyncFd<Socket>) -> Result<()> {
    let mut guard = socket.readable().await?;
    let mut buf = [0u8; 8192];
    loop {
        let fd = guard.get_inner().as_raw_fd();
        // SAFETY: buf is valid for its length; recv writes at most that much.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            continue;
        }
        match std::io::Error::last_os_error() {
            err if err.kind() == std::io::ErrorKind::WouldBlock => {
                guard.clear_ready();
                return Ok(());
            }
            // Notifications were lost: something changed, which the probe will show.
            err if err.raw_os_error() == Some(libc::ENOBUFS) => {}
            err => return Err(err).context("reading netlink notifications"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_that_only_receives_has_no_reasons() {
        assert!(Facts::default().reasons().is_empty());
    }

    /// Forwarding is on in most containers (inherited from the host); it sends nothing
    /// addressed to the container on unless something redirects it.
    #[test]
    fn ip_forwarding_alone_is_no_reason() {
        let forwarding = Facts {
            ip_forwarding: true,
            ..Facts::default()
        };
        assert!(forwarding.reasons().is_empty());
        let redirected = Facts {
            redirectors: vec!["1 nftables tables".into()],
            ..forwarding.clone()
        };
        assert_eq!(redirected.reasons().len(), 1);
        let not_forwarding = Facts {
            ip_forwarding: false,
            ..redirected
        };
        assert!(not_forwarding.reasons().is_empty());
    }

    #[test]
    fn every_other_way_to_send_a_packet_on_is_a_reason() {
        let facts = Facts {
            master: Some("br0".into()),
            uppers: vec!["ethwe.5".into()],
            xdp: true,
            ingress_qdisc: Some("clsact".into()),
            tcx_programs: 1,
            ..Facts::default()
        };
        let reasons = facts.reasons();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("br0")));
        assert!(reasons.iter().any(|r| r.contains("ethwe.5")));
    }
}

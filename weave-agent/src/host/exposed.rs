//! What exposing an address asks of the host: the interface that holds it, IPv4 forwarding,
//! and the NAT table (`net::exposure` decides what goes in it).

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::netlink;
use crate::net::addressing::Cidr;

/// Makes (or keeps) the veth pair of exposed address `cidr`: the interface that holds the
/// address on the host's side, with the address-derived MAC the programs deliver to, and its
/// peer, where the programs sit. Returns the peer's index. Idempotent, so a restarted agent
/// can call it on what the last one made.
pub async fn make_interface(handle: &rtnetlink::Handle, cidr: Cidr, mtu: u32) -> Result<u32> {
    make_pair(
        handle,
        cidr,
        &cidr.exposed_iface(),
        &cidr.exposed_veth(),
        mtu,
    )
    .await
}

/// Makes (or keeps) a veth pair whose end `iface` holds `cidr` in the host's namespace with
/// the address-derived MAC, its peer `veth` being where the programs sit; returns the peer's
/// index. An exposed address's interface, or the one of the agent's DNS server.
pub async fn make_pair(
    handle: &rtnetlink::Handle,
    cidr: Cidr,
    iface: &str,
    veth: &str,
    mtu: u32,
) -> Result<u32> {
    let existing = netlink::link_index(handle, veth).await?;
    let index = match existing {
        Some(index) => index,
        None => {
            // Half a pair (a crash mid-expose) would make the create fail.
            netlink::delete_link(handle, iface).await?;
            netlink::create_veth(handle, veth, iface, mtu).await?
        }
    };
    let holder = netlink::link_index(handle, iface)
        .await?
        .with_context(|| format!("{iface}, the peer of {veth}, is missing"))?;
    if existing.is_none() {
        // While it is still down: a MAC is set on a link that is not running.
        netlink::configure_link(handle, holder, iface, &cidr.mac(), mtu).await?;
    }
    netlink::replace_address(handle, holder, cidr.ip, cidr.prefix).await?;
    netlink::set_up(handle, holder).await?;
    netlink::set_up(handle, index).await?;
    Ok(index)
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns IPv4 forwarding on in this namespace; true if it was off (the caller says so).
pub fn enable_forwarding() -> Result<bool> {
    let now =
        std::fs::read_to_string(IP_FORWARD).with_context(|| format!("reading {IP_FORWARD}"))?;
    if now.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1").with_context(|| format!("turning on {IP_FORWARD}"))?;
    Ok(true)
}

/// Loads an nftables script (`nft -f -`), which nft applies as one transaction.
pub fn load_nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "running nft for the exposed addresses' NAT rules: install nftables \
             (`apt-get install nftables`, or `cargo xtask setup`)",
        )?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(script.as_bytes())
        .context("writing the NAT rules to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the NAT rules for the exposed addresses: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes the agent's NAT table, if nft is there to have made one (`reset`).
pub fn remove_nat() -> Result<()> {
    let installed = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        return Ok(());
    }
    load_nft(&crate::net::exposure::nat_ruleset(&[]))
}

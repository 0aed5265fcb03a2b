//! IPv6 on the overlay between namespace hosts: an IPv6 address beside the IPv4 one, the
//! link-local address every container has, neighbour discovery answered in eBPF, and the
//! same anti-spoofing and isolation as for IPv4.

use anyhow::{Context as _, Result, ensure};
use std::time::Duration;

use weave_tests::{BULK, Container, Host, Segment, bulk, require_root, unique_name, wait_until};

/// The container's link-local address on `ethwe`, as its kernel made it.
fn link_local(ctr: &Container) -> Result<String> {
    let out = ctr.ip(["-6", "-o", "addr", "show", "dev", "ethwe", "scope", "link"])?;
    let addr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .with_context(|| format!("no link-local address on ethwe of {}: {out}", ctr.name))?;
    Ok(addr.to_owned())
}

/// The MAC of the container's `ethwe`.
fn ethwe_mac(ctr: &Container) -> Result<String> {
    Ok(ctr
        .ip(["-o", "link", "show", "ethwe"])?
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("{} has no MAC", ctr.name))?
        .to_owned())
}

/// `from` sends to `to` (the address of `target`) by a route to `network` through `ethwe` and a
/// neighbour entry for `target`'s MAC made by hand, past the agent's routes and neighbour
/// answers: `host`'s data path must drop every ping as isolated.
fn dropped_as_isolated(
    host: &Host,
    from: &Container,
    network: &str,
    to: &str,
    target: &Container,
) -> Result<()> {
    let family = if to.contains(':') { "-6" } else { "-4" };
    from.ip([family, "route", "add", network, "dev", "ethwe"])?;
    let mac = ethwe_mac(target)?;
    from.ip([
        family, "neigh", "replace", to, "lladdr", &mac, "dev", "ethwe",
    ])?;
    let isolated = host.counter_packets("drop_isolated")?;
    ensure!(
        !from.ping(to, 2)?,
        "{} reached {to} across the isolation",
        from.name
    );
    ensure!(host.counter_packets("drop_isolated")? >= isolated + 2);
    Ok(())
}

fn sysctl(ctr: &Container, key: &str) -> Result<String> {
    let out = ctr.exec("sysctl", &["-n", key])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn ipv6_crosses_hosts_within_its_link_and_nowhere_else() -> Result<()> {
    require_root();
    let prefix = unique_name("v6");
    let seg = Segment::mesh(&prefix, 2)?;
    let [h1, h2] = [&seg.hosts[0], &seg.hosts[1]];
    let c1 = h1.container(&format!("{prefix}c1"), "10.40.1.1/24,fd00:1::1/64")?;
    let _c4 = h1.container(&format!("{prefix}c4"), "10.40.1.4/24,fd00:1::4/64")?;
    let c2 = h2.container(&format!("{prefix}c2"), "10.40.1.2/24,fd00:1::2/64")?;
    let d2 = h2.container(&format!("{prefix}d2"), "10.40.2.2/24,fd00:2::2/64")?;
    h1.wait_for_remote(2)?;
    h2.wait_for_remote(2)?;

    // IPv6 stays on, routers ignored, and the address is the one asked for.
    ensure!(sysctl(&c1, "net.ipv6.conf.ethwe.disable_ipv6")? == "0");
    ensure!(sysctl(&c1, "net.ipv6.conf.ethwe.accept_ra")? == "0");
    let addrs = c1.ip(["-6", "addr", "show", "dev", "ethwe"])?;
    ensure!(addrs.contains("fd00:1::1/64"), "c1's ethwe: {addrs}");
    let ps = h1.agent_ok(&["ps"])?;
    ensure!(
        ps.contains("fd00:1::1/64"),
        "ps does not show the IPv6 address:\n{ps}"
    );

    // Across hosts and on one host, neighbour discovery answered by the programs.
    ensure!(
        c2.ping("fd00:1::1", 3)?,
        "fd00:1::2 on h2 cannot ping fd00:1::1 on h1"
    );
    ensure!(
        c1.ping("fd00:1::4", 3)?,
        "fd00:1::1 cannot ping fd00:1::4 on its own host"
    );
    ensure!(h2.counter_packets("ipv6_nd_answered")? > 0);
    ensure!(h2.counter_packets("ipv6_remote_sent")? >= 3);
    ensure!(h1.counter_packets("ipv6_delivered")? >= 3);
    ensure!(h1.counter_packets("ipv6_local_delivered")? >= 3);

    // Bulk TCP over IPv6 arrives whole, its super-packets stripped in eBPF as IPv4's are.
    let stripped = h1.counter_packets("underlay_decap_gso")?;
    bulk(&c2, "fd00:1::1", &c1.name, "fd00:1::1", BULK)?;
    ensure!(
        h1.counter_packets("underlay_decap_gso")? > stripped,
        "no IPv6 super-packet was decapsulated in eBPF"
    );

    // Link-local addresses work across hosts, between containers of one link.
    let c1_ll = link_local(&c1)?;
    ensure!(
        c2.ping(&format!("{c1_ll}%ethwe"), 3)?,
        "c2 cannot ping c1's link-local address {c1_ll}"
    );

    // A spoofed source: an address the agent did not give c2.
    c2.ip([
        "-6",
        "addr",
        "add",
        "fd00:1::99/64",
        "dev",
        "ethwe",
        "nodad",
    ])?;
    let spoofed = h2.counter_packets("drop_spoofed")?;
    let out = c2.exec(
        "ping",
        &["-c", "2", "-W", "1", "-I", "fd00:1::99", "fd00:1::1"],
    )?;
    ensure!(!out.status.success(), "a spoofed IPv6 source got an answer");
    ensure!(h2.counter_packets("drop_spoofed")? > spoofed);
    // Else the kernel may pick it as the source of what c2 sends next.
    c2.ip(["-6", "addr", "del", "fd00:1::99/64", "dev", "ethwe"])?;

    // Another IPv6 subnet is isolated, also when its frames are sent straight to the MAC.
    dropped_as_isolated(h2, &d2, "fd00:1::/64", "fd00:1::1", &c1)?;
    // ... while its own subnet's member still answers.
    ensure!(c2.ping("fd00:1::1", 2)?);

    // The IPv6 address outlives the detach of the IPv4 address it came with, while the
    // container keeps another one.
    h1.attach("10.40.7.1/24", &c1)?;
    h1.agent_ok(&["detach", "10.40.1.1", &format!("netns:{}", c1.name)])?;
    let ps = h1.agent_ok(&["ps"])?;
    ensure!(
        ps.contains("10.40.7.1/24 fd00:1::1/64") && !ps.contains("10.40.1.1/"),
        "{ps}"
    );
    wait_until(Duration::from_secs(10), "fd00:1::1 reached again", || {
        c2.ping("fd00:1::1", 1)
    })?;
    Ok(())
}

/// `policy` opens and closes IPv6 subnets as it does IPv4 ones, with the on-link route in the
/// containers; an IPv4 rule decides for the link-local addresses of containers without IPv6.
#[test]
fn isolation_rules_open_ipv6_subnets_and_ipv4_rules_link_local_addresses() -> Result<()> {
    require_root();
    let prefix = unique_name("v6p");
    let seg = Segment::mesh(&prefix, 2)?;
    let [h1, h2] = [&seg.hosts[0], &seg.hosts[1]];
    let c1 = h1.container(&format!("{prefix}c1"), "10.40.1.1/24,fd00:1::1/64")?;
    let f1 = h1.container(&format!("{prefix}f1"), "10.40.4.4/24")?;
    let d2 = h2.container(&format!("{prefix}d2"), "10.40.2.2/24,fd00:2::2/64")?;
    let e2 = h2.container(&format!("{prefix}e2"), "10.40.3.3/24")?;
    h1.wait_for_remote(2)?;
    h2.wait_for_remote(2)?;
    let route = |ctr: &Container| ctr.ip(["-6", "route", "show", "fd00:1::/64"]);
    ensure!(
        !d2.ping("fd00:1::1", 1)?,
        "fd00:2::2 reached fd00:1::1 with no rule"
    );
    ensure!(route(&d2)?.trim().is_empty(), "{}", route(&d2)?);

    h1.agent_ok(&["policy", "allow", "fd00:1::/64", "fd00:2::/64"])?;
    wait_until(Duration::from_secs(10), "the IPv6 rule in force", || {
        d2.ping("fd00:1::1", 1)
    })?;
    ensure!(c1.ping("fd00:2::2", 2)?, "the rule opens both directions");
    ensure!(
        route(&d2)?.contains("dev ethwe proto static"),
        "d2's route: {}",
        route(&d2)?
    );
    // IPv4 between the two stays closed: the rule names the IPv6 subnets only.
    dropped_as_isolated(h2, &d2, "10.40.1.0/24", "10.40.1.1", &c1)?;

    // Link-local addresses of containers without IPv6 follow the IPv4 rules.
    let f1_ll = format!("{}%ethwe", link_local(&f1)?);
    let isolated = h2.counter_packets("drop_isolated")?;
    ensure!(!e2.ping(&f1_ll, 1)?, "{f1_ll} answered across subnets");
    ensure!(h2.counter_packets("drop_isolated")? > isolated);
    h2.agent_ok(&["policy", "allow", "10.40.3.0/24", "10.40.4.0/24"])?;
    wait_until(
        Duration::from_secs(10),
        "the IPv4 rule for link-local",
        || e2.ping(&f1_ll, 1),
    )?;

    h2.agent_ok(&["policy", "deny", "fd00:2::/64", "fd00:1::/64"])?;
    wait_until(
        Duration::from_secs(10),
        "the IPv6 rule closed again",
        || Ok(!d2.ping("fd00:1::1", 1)? && route(&d2)?.trim().is_empty()),
    )?;
    // The closed pair's frames sent to the MAC anyway are dropped in the data path.
    dropped_as_isolated(h2, &d2, "fd00:1::/64", "fd00:1::1", &c1)?;
    Ok(())
}

/// With a password, IPv6 is sealed like any frame and opened frames meet the same checks.
#[test]
fn ipv6_is_sealed_with_a_password() -> Result<()> {
    require_root();
    let prefix = unique_name("v6s");
    let seg = Segment::new(&prefix, 2)?;
    let [h1, h2] = [&seg.hosts[0], &seg.hosts[1]];
    h1.agent_ok(&["launch", "--password", "v6-test-password"])?;
    h2.agent_ok(&["join", "--password", "v6-test-password", "192.168.56.101"])?;
    let _c1 = h1.container(&format!("{prefix}c1"), "10.40.1.1/24,fd00:1::1/64")?;
    let c2 = h2.container(&format!("{prefix}c2"), "10.40.1.2/24,fd00:1::2/64")?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    // Until a session stands, sealed frames are dropped, never sent in clear.
    wait_until(Duration::from_secs(10), "a sealed IPv6 path", || {
        c2.ping("fd00:1::1", 1)
    })?;
    let sealed = h2.counter_packets("seal_to_agent")?;
    let opened = h1.counter_packets("ipv6_delivered")?;
    ensure!(c2.ping("fd00:1::1", 3)?);
    ensure!(h2.counter_packets("seal_to_agent")? >= sealed + 3);
    ensure!(h1.counter_packets("ipv6_delivered")? >= opened + 3);
    ensure!(
        h2.counter_packets("ipv6_remote_sent")? == 0,
        "IPv6 went to a sealed peer in clear"
    );
    Ok(())
}

/// A container attached by an IPv6 address alone: its MAC from that address, reached from
/// dual-stack and IPv6-only containers on the other host, its link-local address too; isolated
/// from another IPv6 subnet until a rule opens it; kept across an agent restart; gone with
/// detach.
#[test]
fn a_container_with_an_ipv6_address_alone_is_on_the_overlay() -> Result<()> {
    require_root();
    let prefix = unique_name("v6o");
    let seg = Segment::mesh(&prefix, 2)?;
    let [h1, h2] = [&seg.hosts[0], &seg.hosts[1]];
    let a1 = h1.container(&format!("{prefix}a1"), "fd00:1::30/64")?;
    let e1 = h1.container(&format!("{prefix}e1"), "fd00:2::50/64")?;
    let c2 = h2.container(&format!("{prefix}c2"), "10.40.1.2/24,fd00:1::2/64")?;
    let d2 = h2.container(&format!("{prefix}d2"), "fd00:1::40/64")?;

    let link = a1.ip(["-o", "link", "show", "ethwe"])?;
    ensure!(link.contains("link/ether 02:58:"), "a1's ethwe: {link}");
    let v4 = a1.ip(["-4", "-o", "addr", "show", "dev", "ethwe"])?;
    ensure!(v4.trim().is_empty(), "a1 has IPv4: {v4}");
    let ps = h1.agent_ok(&["ps"])?;
    ensure!(
        ps.lines()
            .any(|l| l.contains(&a1.name) && l.contains("02:58:") && l.contains("fd00:1::30/64")),
        "{ps}"
    );

    wait_until(
        Duration::from_secs(10),
        "fd00:1::30 from a dual-stack container",
        || c2.ping("fd00:1::30", 1),
    )?;
    ensure!(
        d2.ping("fd00:1::30", 3)?,
        "IPv6-only to IPv6-only across hosts"
    );
    let a1_ll = link_local(&a1)?;
    ensure!(
        d2.ping(&format!("{a1_ll}%ethwe"), 3)?,
        "d2 cannot ping a1's link-local address {a1_ll}"
    );

    // Another IPv6 subnet: isolated, even sent straight to the MAC; a rule opens it.
    dropped_as_isolated(h1, &e1, "fd00:1::/64", "fd00:1::30", &a1)?;
    e1.ip(["-6", "route", "del", "fd00:1::/64", "dev", "ethwe"])?;
    h1.agent_ok(&["policy", "allow", "fd00:1::/64", "fd00:2::/64"])?;
    wait_until(
        Duration::from_secs(10),
        "the rule opening fd00:2::/64",
        || d2.ping("fd00:2::50", 1),
    )?;

    // Not beside IPv4 addresses given later: the MAC would have to change.
    let out = h1.agent(&["attach", "10.40.1.30/24", &a1.spec()])?;
    let text = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && text.contains("alone"), "{text}");

    // An agent restart keeps it, and the data path forwards meanwhile.
    h1.agent_ok(&["stop"])?;
    ensure!(d2.ping("fd00:1::30", 2)?, "the pinned data path forwards");
    h1.agent_ok(&["launch"])?;
    ensure!(h1.agent_ok(&["ps"])?.contains("fd00:1::30/64"));
    wait_until(
        Duration::from_secs(10),
        "fd00:1::30 after the restart",
        || d2.ping("fd00:1::30", 1),
    )?;

    // h2 counts h1's two IPv6-only containers, then one after the detach.
    let h1_endpoints = || -> Result<u64> {
        let status = h2.status()?;
        let peer = status["peers"]
            .as_array()
            .context("status lists no peers")?
            .iter()
            .find(|p| p["address"] == "192.168.56.101")
            .context("h2's status does not list h1")?;
        peer["endpoints"].as_u64().context("no endpoint count")
    };
    wait_until(Duration::from_secs(10), "h2 counting both of h1's", || {
        Ok(h1_endpoints()? == 2)
    })?;
    h1.agent_ok(&["detach", &a1.spec()])?;
    ensure!(!h1.agent_ok(&["ps"])?.contains("fd00:1::30"));
    wait_until(
        Duration::from_secs(10),
        "fd00:1::30 withdrawn from h2's view",
        || Ok(h1_endpoints()? == 1),
    )?;
    ensure!(
        a1.ip(["link", "show", "ethwe"]).is_err(),
        "ethwe stayed in a1 after detach"
    );
    Ok(())
}

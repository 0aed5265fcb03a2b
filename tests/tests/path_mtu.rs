//! A hop narrower than the hosts' NICs: the switch port of one host at MTU 1000 while both
//! NICs are at 1500, so the switch drops any bigger frame, both ways, and says nothing (a
//! switch never sends ICMP). The agents find the path MTU with their probes; containers get
//! ICMP "fragmentation needed" from eBPF and send smaller packets; gossip crosses in
//! fragments that fit.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use weave_tests::{Host, Segment, bulk, require_root, unique_name, wait_until};

const A: &str = "192.168.56.101";
const B: &str = "192.168.56.102";

/// The path MTU `host` reports towards the peer at `address` (`status connections`).
fn path_mtu(host: &Host, address: &str) -> Result<Option<u64>> {
    let peer = host.listed_peer(&["status", "connections", "--json"], address)?;
    Ok(peer["mtu"].as_u64())
}

#[test]
fn a_narrow_hop_is_found_and_containers_and_gossip_fit_through_it() -> Result<()> {
    require_root();
    let seg = Segment::new(&unique_name("pm"), 2)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    seg.switch().ip(["link", "set", "p2", "mtu", "1000"])?;
    // The hop holds: small frames cross, full-size ones do not.
    let ping = |size: &str| -> Result<bool> {
        let out = a.exec("ping", &["-c", "1", "-W", "1", "-M", "do", "-s", size, B])?;
        Ok(out.status.success())
    };
    ensure!(ping("900")?, "small pings do not cross the switch");
    ensure!(
        !ping("1400")?,
        "the narrow port lets a full-size frame through"
    );

    a.agent_ok(&["launch"])?;
    b.agent_ok(&["join", A])?;
    let tag = unique_name("pm");
    let ca = a.container(&format!("{tag}a"), "10.40.1.1/24")?;
    let cb = b.container(&format!("{tag}b"), "10.40.1.2/24")?;
    // A 10,000-byte ping, tried at once: its fragments of 1450 bytes are answered with
    // "fragmentation needed" once the agents know the path, and a later ping is fragmented to
    // fit.
    let first_try = Instant::now();
    let took = wait_until(Duration::from_secs(5), "a 10,000-byte ping through", || {
        let out = cb.exec("ping", &["-c", "1", "-W", "1", "-s", "10000", "10.40.1.1"])?;
        Ok(out.status.success())
    })?;
    eprintln!("ping -s 10000 answered {took:?} after the first try, right after the attach");
    ensure!(first_try.elapsed() <= Duration::from_secs(5));
    ensure!(
        path_mtu(a, B)? == Some(1000) && path_mtu(b, A)? == Some(1000),
        "status connections should show the path MTU of 1000 both ways"
    );
    ensure!(
        b.counter_packets("icmp_frag_needed")? > 0,
        "no fragmentation-needed answer was counted"
    );

    // TCP meets the hop as it would on a real network: one segment per packet (veths would
    // otherwise carry super-packets past any MTU check of the container's own).
    cb.ip(["link", "set", "ethwe", "gso_max_segs", "1"])?;
    bulk(&cb, "10.40.1.1", &ca.name, "10.40.1.1", 1_000_000)?;

    // Gossip across the hop: 120 rules make the state far bigger than one 1000-byte frame.
    for i in 0..120 {
        a.agent_ok(&[
            "policy",
            "allow",
            &format!("10.60.{i}.0/24"),
            &format!("10.61.{i}.0/24"),
        ])?;
    }
    wait_until(Duration::from_secs(10), "B learning all 120 rules", || {
        let rules: serde_json::Value =
            serde_json::from_str(&b.agent_ok(&["policy", "list", "--json"])?)?;
        Ok(rules.as_array().map_or(0, Vec::len) >= 120)
    })?;
    let routes = a.ip(["route", "show", "proto", "87"])?;
    ensure!(
        routes.contains(B) && routes.contains("mtu lock 1000"),
        "A should route B with the path MTU: {routes}"
    );
    Ok(())
}

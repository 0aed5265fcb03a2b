//! Isolation rules: `policy allow` opens two subnets to each other on every host, enforced by
//! the eBPF data path with on-link routes added in the containers; `policy deny` closes it
//! again; a third subnet stays isolated throughout.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Container, Host, Segment, require_root, unique_name, wait_until};

/// The acceptance bound: a rule is in force on every host this long after the command returns.
const RULE_DEADLINE: Duration = Duration::from_secs(1);

/// One quick ping: the answer arrives in well under a millisecond when the path is open, so a
/// short timeout keeps the polling fine-grained.
fn reaches(from: &Container, ip: &str) -> Result<bool> {
    Ok(from
        .exec("ping", &["-c", "1", "-W", "0.1", ip])?
        .status
        .success())
}

fn has_route(container: &Container, network: &str) -> Result<bool> {
    let routes = container.ip(["route", "show", network])?;
    Ok(routes.contains("dev ethwe") && routes.contains("proto static"))
}

/// Waits until every (from, to) path is open (or closed); the time from `since`.
fn paths_become(
    open: bool,
    paths: &[(&Container, &str)],
    since: Instant,
    what: &str,
) -> Result<Duration> {
    for (from, to) in paths {
        wait_until(Duration::from_secs(5), what, || {
            Ok(reaches(from, to)? == open)
        })
        .with_context(|| format!("{} -> {to}", from.name))?;
        eprintln!("{} -> {to}: {:?}", from.name, since.elapsed());
    }
    Ok(since.elapsed())
}

fn rules(host: &Host) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &host.agent_ok(&["policy", "list", "--json"])?,
    )?)
}

#[test]
fn allow_opens_a_pair_of_subnets_everywhere_and_deny_closes_it() -> Result<()> {
    require_root();
    let prefix = unique_name("r");
    let seg = Segment::mesh(&prefix, 3)?;
    let [h1, h2, h3] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let c2 = h2.container(&format!("{prefix}c2"), "192.168.2.20/24")?;
    let c3 = h3.container(&format!("{prefix}c3"), "192.168.2.30/24")?;
    let c4 = h3.container(&format!("{prefix}c4"), "192.168.3.40/24")?;
    for host in [h1, h2] {
        host.wait_for_remote(3)?;
    }
    h3.wait_for_remote(2)?;

    // Default: isolated, and the containers do not even have a route to each other.
    ensure!(!has_route(&c1, "192.168.2.0/24")?);
    c4.ip(["route", "add", "192.168.1.0/24", "dev", "ethwe"])?;
    ensure!(
        !reaches(&c4, "192.168.1.10")?,
        "different subnets talk without a rule"
    );
    ensure!(
        h3.counter_packets("drop_isolated")? > 0,
        "the isolation drop was not counted"
    );

    // Made on h2: h1 and h3 learn it by gossip alone.
    let bad = h2.agent(&["policy", "allow", "192.168.1.7/24", "192.168.2.0/24"])?;
    ensure!(!bad.status.success(), "a CIDR with host bits was accepted");
    ensure!(
        String::from_utf8_lossy(&bad.stderr).contains("192.168.1.0/24"),
        "the error does not name the network: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    h2.agent_ok(&["policy", "allow", "192.168.2.0/24", "192.168.1.0/24"])?;
    let since = Instant::now();
    let opened = paths_become(
        true,
        &[
            (&c1, "192.168.2.20"),
            (&c1, "192.168.2.30"),
            (&c3, "192.168.1.10"),
            (&c2, "192.168.1.10"),
        ],
        since,
        "the allow rule opening the path",
    )?;
    eprintln!("allow in force on all hosts after {opened:?}");
    ensure!(
        opened <= RULE_DEADLINE,
        "allow took {opened:?} to reach every host (goal {RULE_DEADLINE:?})"
    );
    for (container, network) in [
        (&c1, "192.168.2.0/24"),
        (&c2, "192.168.1.0/24"),
        (&c3, "192.168.1.0/24"),
    ] {
        ensure!(
            has_route(container, network)?,
            "{} has no on-link route to {network}",
            container.name
        );
    }
    // The third subnet is not part of the rule: no route, and forced traffic is dropped.
    ensure!(!has_route(&c4, "192.168.2.0/24")?);
    ensure!(
        !reaches(&c4, "192.168.1.10")?,
        "a subnet outside the rule got through"
    );
    for host in [h1, h3] {
        let list = rules(host)?;
        ensure!(
            list.as_array().is_some_and(|l| l.len() == 1)
                && list[0]["a"] == "192.168.1.0/24"
                && list[0]["b"] == "192.168.2.0/24"
                && list[0]["action"] == "allow",
            "{} lists {list}",
            host.name
        );
    }

    // Closed again from another host; routes go with it.
    h1.agent_ok(&["policy", "deny", "192.168.1.0/24", "192.168.2.0/24"])?;
    let since = Instant::now();
    let closed = paths_become(
        false,
        &[
            (&c1, "192.168.2.20"),
            (&c1, "192.168.2.30"),
            (&c2, "192.168.1.10"),
            (&c3, "192.168.1.10"),
        ],
        since,
        "the deny rule closing the path",
    )?;
    eprintln!("deny in force on all hosts after {closed:?}");
    ensure!(
        closed <= RULE_DEADLINE,
        "deny took {closed:?} to reach every host (goal {RULE_DEADLINE:?})"
    );
    wait_until(Duration::from_secs(5), "routes removed", || {
        Ok(!has_route(&c1, "192.168.2.0/24")?
            && !has_route(&c2, "192.168.1.0/24")?
            && !has_route(&c3, "192.168.1.0/24")?)
    })?;
    // The data path itself refuses, not just the missing route.
    c2.ip(["route", "add", "192.168.1.0/24", "dev", "ethwe"])?;
    let before = h2.counter_packets("drop_isolated")?;
    ensure!(
        !reaches(&c2, "192.168.1.10")?,
        "deny did not close the path"
    );
    ensure!(h2.counter_packets("drop_isolated")? > before);
    let list = rules(h3)?;
    ensure!(list[0]["action"] == "deny", "h3 lists {list}");
    Ok(())
}

/// More allowed directions than the policy map holds: the agent's log says what to do, and the
/// rest of its upkeep goes on (a host that joins afterwards is seen alive).
#[test]
fn a_policy_too_big_for_the_map_stops_nothing_else() -> Result<()> {
    require_root();
    let prefix = unique_name("rb");
    let seg = Segment::new(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    h1.agent_ok(&["launch"])?;
    h1.agent_ok(&["policy", "allow", "10.0.0.0/9", "10.128.0.0/9"])?;
    // 91 /30 networks on each side: 2 x 91 x 91 = 16562 directions, the map holds 16384.
    let mut containers = Vec::new();
    for side in [0, 128] {
        for n in 0..91 {
            let name = format!("{prefix}c{side}x{n}");
            containers.push(h1.container(&name, &format!("10.{side}.{n}.1/30"))?);
        }
    }
    h2.agent_ok(&["join", "192.168.56.101"])?;
    wait_until(Duration::from_secs(10), "h1 seeing h2 alive", || {
        let peers: serde_json::Value = serde_json::from_str(&h1.agent_ok(&["peers", "--json"])?)?;
        Ok(peers.as_array().is_some_and(|peers| {
            peers
                .iter()
                .any(|p| p["address"] == "192.168.56.102" && p["state"] == "alive")
        }))
    })?;
    let log = std::fs::read_to_string(h1.state_dir().join("agent.log"))?;
    ensure!(
        log.contains("writing 16562 allowed directions between subnets into the policy map")
            && log.contains("narrow them"),
        "no advice in the log:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    Ok(())
}

/// A container attached while a rule is in force has the rule's route when `attach` returns,
/// as `policy allow` itself syncs at once: it used to wait for the next sync tick (500 ms).
#[test]
fn an_endpoint_attached_under_a_rule_has_its_routes_when_attach_returns() -> Result<()> {
    require_root();
    let prefix = unique_name("q");
    let seg = Segment::mesh(&prefix, 1)?;
    let host = &seg.hosts[0];
    host.agent_ok(&["policy", "allow", "192.168.1.0/24", "192.168.2.0/24"])?;
    // Several attaches: any one of them may happen to land just after a tick.
    let attaches = (10..18).map(|n| {
        let (net, other) = if n % 2 == 0 { (1, 2) } else { (2, 1) };
        (
            format!("192.168.{net}.{n}/24"),
            format!("192.168.{other}.0/24"),
        )
    });
    for (i, (cidr, other)) in attaches.enumerate() {
        let (cidr, other) = (cidr.as_str(), other.as_str());
        let container = host.container(&format!("{prefix}c{i}"), cidr)?;
        ensure!(
            has_route(&container, other)?,
            "{cidr} had no route to {other} when attach returned"
        );
    }
    Ok(())
}

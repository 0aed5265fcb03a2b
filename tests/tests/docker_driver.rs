//! The Docker network and IPAM driver: `docker network create -d weave-agent` on the engine
//! the namespace hosts share, its containers reaching netns containers on both hosts.

use anyhow::{Context as _, Result, ensure};
use weave_tests::{
    Container, Host, Segment,
    docker::{self, Named, docker, docker_ok},
    require_root, unique_name,
};

/// A Docker network removed on drop (after the containers on it: drop those first).
struct Network(String);

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

fn pings(container: &str, ip: &str) -> Result<bool> {
    Ok(
        docker(&["exec", container, "ping", "-c", "2", "-W", "1", ip])?
            .status
            .success(),
    )
}

/// A container started on Docker network `network`, removed on drop.
fn run_on(name: &str, network: &str) -> Result<Named> {
    let named = Named::new(name.to_owned());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        docker::IMAGE,
        "sleep",
        "600",
    ])?;
    Ok(named)
}

fn driver_endpoints(host: &Host) -> Result<Vec<String>> {
    let ps: serde_json::Value = serde_json::from_str(&host.agent_ok(&["ps", "--json"])?)?;
    Ok(ps
        .as_array()
        .context("ps --json is no list")?
        .iter()
        .filter(|e| {
            e["container"]
                .as_str()
                .is_some_and(|c| c.starts_with("docker-net:"))
        })
        .filter_map(|e| e["cidr"].as_str().map(str::to_owned))
        .collect())
}

fn address_on(container: &str, network: &str) -> Result<String> {
    docker_ok(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ])
    .map(|s| s.trim().to_owned())
}

#[test]
fn docker_networks_of_the_driver_reach_containers_on_both_hosts() -> Result<()> {
    require_root();
    docker::require()?;
    docker::ensure_image()?;
    let prefix = unique_name("k");
    // A driver name of this test's own: other tests' agents serve the default one.
    let driver = format!("{prefix}drv");
    let seg = Segment::new(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    a.agent_ok(&["launch", "--docker-plugin", &driver])?;
    // One engine, one driver: B, asking for the same name, finds A serving it.
    b.agent_ok(&["join", "192.168.56.101", "--docker-plugin", &driver])?;
    let log = std::fs::read_to_string(b.state_dir().join("agent.log"))?;
    ensure!(
        log.contains("another agent serves Docker's network driver"),
        "B claimed the driver A serves: {log}"
    );
    let on_a = Container::new(&format!("{prefix}na"), a)?;
    let on_b = Container::new(&format!("{prefix}nb"), b)?;
    a.attach("10.50.1.10/24", &on_a)?;
    b.attach("10.50.1.20/24", &on_b)?;

    // Docker's own IPAM hands out the addresses, in a subnet outside the allocation range.
    let net = Network(format!("{prefix}net"));
    docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.50.1.0/24",
        &net.0,
    ])?;
    let c1 = run_on(&format!("{prefix}c1"), &net.0)?;
    let ip1 = address_on(&c1.0, &net.0)?;
    ensure!(ip1.starts_with("10.50.1."), "c1 got {ip1:?}");
    ensure!(
        driver_endpoints(a)? == [format!("{ip1}/24")],
        "A's agent lists {:?}",
        driver_endpoints(a)?
    );
    let ethwe = docker_ok(&["exec", &c1.0, "ip", "addr", "show", "ethwe0"])?;
    ensure!(ethwe.contains(&format!("{ip1}/24")), "{ethwe}");
    b.wait_for_remote(2)?;
    for target in ["10.50.1.10", "10.50.1.20"] {
        ensure!(pings(&c1.0, target)?, "c1 cannot reach {target}");
    }
    ensure!(
        on_b.ping(&ip1, 2)?,
        "B's container cannot reach c1 at {ip1}"
    );
    // A second container of the network: it reaches both hosts' and the first one.
    let c1b = run_on(&format!("{prefix}c1b"), &net.0)?;
    let ip1b = address_on(&c1b.0, &net.0)?;
    ensure!(ip1b != ip1, "both got {ip1}");
    b.wait_for_remote(3)?;
    for target in ["10.50.1.10", "10.50.1.20", ip1.as_str()] {
        ensure!(pings(&c1b.0, target)?, "c1b cannot reach {target}");
    }
    drop(c1b);
    b.wait_for_remote(2)?;

    // disconnect withdraws it everywhere; connect brings it back.
    docker_ok(&["network", "disconnect", &net.0, &c1.0])?;
    ensure!(
        driver_endpoints(a)?.is_empty(),
        "still listed after disconnect"
    );
    b.wait_for_remote(1)?;
    docker_ok(&["network", "connect", &net.0, &c1.0])?;
    let ip1 = address_on(&c1.0, &net.0)?;
    b.wait_for_remote(2)?;
    ensure!(
        on_b.ping(&ip1, 2)?,
        "B's container cannot reach c1 again at {ip1}"
    );
    drop(c1);
    ensure!(
        driver_endpoints(a)?.is_empty(),
        "still listed after docker rm -f"
    );
    drop(net);

    // This driver's IPAM: the address comes from the agent's allocation range.
    let net2 = Network(format!("{prefix}net2"));
    docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--ipam-driver",
        &driver,
        "--subnet",
        "10.32.2.0/24",
        &net2.0,
    ])?;
    let peer2 = Container::new(&format!("{prefix}nb2"), b)?;
    b.agent_ok(&["attach", "net:10.32.2.0/24", &peer2.spec()])?;
    let c2 = run_on(&format!("{prefix}c2"), &net2.0)?;
    let ip2 = address_on(&c2.0, &net2.0)?;
    ensure!(ip2.starts_with("10.32.2."), "c2 got {ip2:?}");
    ensure!(
        a.allocated()?.contains(&ip2),
        "A's IPAM does not hold {ip2}"
    );
    let peer2_ip = peer2.ip(["-4", "-o", "addr", "show", "dev", "ethwe"])?;
    let peer2_ip = peer2_ip
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .context("no address on the peer")?
        .to_owned();
    ensure!(pings(&c2.0, &peer2_ip)?, "c2 cannot reach {peer2_ip} on B");
    drop(c2);
    ensure!(
        !a.allocated()?.contains(&ip2),
        "{ip2} still allocated after docker rm -f"
    );
    drop(net2);
    ensure!(
        driver_endpoints(a)?.is_empty(),
        "endpoints left: {:?}",
        driver_endpoints(a)?
    );
    Ok(())
}

/// A network with an IPv6 subnet beside the IPv4 one: Docker's IPAM gives the container both,
/// Docker puts them on its interface, and the mesh reaches the IPv6 one.
#[test]
fn an_ipv6_network_of_the_driver_reaches_across_hosts() -> Result<()> {
    require_root();
    docker::require()?;
    docker::ensure_image()?;
    let prefix = unique_name("k6");
    let driver = format!("{prefix}drv");
    let seg = Segment::new(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    a.agent_ok(&["launch", "--docker-plugin", &driver])?;
    b.agent_ok(&["join", "192.168.56.101", "--docker-plugin", &driver])?;
    let on_b = Container::new(&format!("{prefix}nb"), b)?;
    b.attach("10.50.3.20/24,fd00:3::20/64", &on_b)?;
    let net = Network(format!("{prefix}net"));
    docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--ipv6",
        "--subnet",
        "10.50.3.0/24",
        "--subnet",
        "fd00:3::/64",
        &net.0,
    ])?;
    let c1 = run_on(&format!("{prefix}c1"), &net.0)?;
    let ip6 = docker_ok(&[
        "inspect",
        "--format",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").GlobalIPv6Address}}}}",
            net.0
        ),
        &c1.0,
    ])?
    .trim()
    .to_owned();
    ensure!(ip6.starts_with("fd00:3::"), "c1 got {ip6:?}");
    let ps: serde_json::Value = serde_json::from_str(&a.agent_ok(&["ps", "--json"])?)?;
    ensure!(
        ps.as_array()
            .context("ps --json is no list")?
            .iter()
            .any(|e| e["ipv6"] == format!("{ip6}/64").as_str()),
        "A's agent does not list {ip6}: {ps}"
    );
    b.wait_for_remote(1)?;
    ensure!(
        on_b.ping(&ip6, 3)?,
        "B's container cannot reach c1 at {ip6}"
    );
    ensure!(pings(&c1.0, "fd00:3::20")?, "c1 cannot reach fd00:3::20");
    drop(c1);
    ensure!(
        !a.agent_ok(&["ps"])?.contains(&ip6),
        "A still lists {ip6} after docker rm -f"
    );
    Ok(())
}

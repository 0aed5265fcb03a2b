//! The Weave walkthrough on two namespace hosts: what `cargo xtask demo` shows and what the
//! integration tests check, from one piece of code.

use anyhow::{Result, ensure};

use crate::{Container, Host, docker, two_hosts};

/// Hosts and containers of a finished walkthrough, for further checks. Dropping it removes
/// everything.
pub struct Walkthrough {
    // Containers first: they are dropped before the hosts that reset the agents.
    pub c1: Container,
    pub c2: Container,
    pub c3: Container,
    pub a: Host,
    pub b: Host,
}

/// Host A launches, host B joins A's underlay address; 192.168.1.10/24 on A and
/// 192.168.1.20/24 on B ping each other both ways; 192.168.2.30/24 on B cannot reach
/// 192.168.1.10; host A exposed as 192.168.1.1 reaches 192.168.1.20 until `hide`. Fails if
/// any of that does not hold.
pub fn run(a: &str, b: &str, verbose: bool) -> Result<Walkthrough> {
    let (mut host_a, mut host_b) = two_hosts(a, b)?;
    host_a.verbose = verbose;
    host_b.verbose = verbose;
    let c1 = Container::new(&format!("{a}-c1"), &host_a)?;
    let c2 = Container::new(&format!("{b}-c2"), &host_b)?;
    let c3 = Container::new(&format!("{b}-c3"), &host_b)?;

    host_a.agent_ok(&["launch"])?;
    host_b.agent_ok(&["join", "192.168.56.101"])?;
    host_a.attach("192.168.1.10/24", &c1)?;
    host_b.attach("192.168.1.20/24", &c2)?;
    host_b.attach("192.168.2.30/24", &c3)?;
    // Gossip carries each side's endpoints to the other.
    host_a.wait_for_remote(2)?;
    host_b.wait_for_remote(1)?;
    host_b.agent_ok(&["peers"])?;
    host_a.agent_ok(&["ps"])?;

    ensure!(
        c1.ping("192.168.1.20", 3)?,
        "192.168.1.10 on {a} cannot reach 192.168.1.20 on {b}"
    );
    ensure!(
        c2.ping("192.168.1.10", 3)?,
        "192.168.1.20 on {b} cannot reach 192.168.1.10 on {a}"
    );
    ensure!(
        !c3.ping("192.168.1.10", 2)?,
        "192.168.2.30 reached 192.168.1.10 across subnets"
    );
    // Even routing the other subnet through ethwe does not help: the data path drops it.
    c3.exec("ip", &["route", "add", "192.168.1.0/24", "dev", "ethwe"])?;
    ensure!(
        !c3.ping("192.168.1.10", 2)?,
        "192.168.2.30 reached 192.168.1.10 through its own route"
    );
    host_a.agent_ok(&["status"])?;
    // The walkthrough's second promise: the host itself on the overlay, then off it again.
    host_a.agent_ok(&["expose", "192.168.1.1/24"])?;
    host_b.wait_for_remote(2)?;
    ensure!(
        host_a
            .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", "192.168.1.20"])?
            .status
            .success(),
        "host {a}, exposed as 192.168.1.1, cannot reach 192.168.1.20 on {b}"
    );
    host_a.agent_ok(&["hide"])?;
    host_b.wait_for_remote(1)?;
    // The overlay device: external (collect_md) mode, no learning, no remotes; no bridge.
    host_a.exec("ip", &["-d", "link", "show", "vxlan-6784"])?;
    Ok(Walkthrough {
        c1,
        c2,
        c3,
        a: host_a,
        b: host_b,
    })
}

/// The walkthrough with real Docker containers, as Weave users know it.
pub struct DockerWalkthrough {
    // Containers first: removed before the hosts reset their agents.
    pub on_a: docker::Named,
    pub on_b: docker::Named,
    /// 192.168.2.30/24 on B: another subnet.
    pub other: docker::Named,
    /// Full ids `run` printed.
    pub id_a: String,
    pub id_b: String,
    pub a: Host,
    pub b: Host,
}

/// Host A launches, host B joins; `weave-agent run 192.168.1.20/24 --name ... -it IMAGE sh` on
/// B and `... 192.168.1.10/24 ...` on A print container ids; the containers ping each other
/// with `docker exec`. Fails if any of that does not hold.
pub fn run_docker(a: &str, b: &str, verbose: bool) -> Result<DockerWalkthrough> {
    docker::require()?;
    let (mut host_a, mut host_b) = two_hosts(a, b)?;
    host_a.verbose = verbose;
    host_b.verbose = verbose;
    host_a.agent_ok(&["launch"])?;
    host_b.agent_ok(&["join", "192.168.56.101"])?;
    let on_b = docker::Named::new(format!("{b}-wet"));
    let id_b = run_container(&host_b, "192.168.1.20/24", &on_b)?;
    let on_a = docker::Named::new(format!("{a}-wet"));
    let id_a = run_container(&host_a, "192.168.1.10/24", &on_a)?;
    host_a.wait_for_remote(1)?;
    host_b.wait_for_remote(1)?;
    for (name, peer) in [(&on_a.0, "192.168.1.20"), (&on_b.0, "192.168.1.10")] {
        let out = show_docker(verbose, &["exec", name, "ping", "-c", "3", "-W", "1", peer])?;
        ensure!(out.status.success(), "{name} cannot reach {peer}");
    }
    show_docker(verbose, &["exec", &on_b.0, "ip", "addr", "show", "ethwe"])?;
    let other = docker::Named::new(format!("{b}-other"));
    run_container(&host_b, "192.168.2.30/24", &other)?;
    let out = show_docker(
        verbose,
        &[
            "exec",
            &other.0,
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "192.168.1.10",
        ],
    )?;
    ensure!(
        !out.status.success(),
        "192.168.2.30 reached 192.168.1.10 across subnets"
    );
    Ok(DockerWalkthrough {
        on_a,
        on_b,
        other,
        id_a,
        id_b,
        a: host_a,
        b: host_b,
    })
}

/// `weave-agent run CIDR --name NAME -it IMAGE sh` on `host`; returns the id it printed.
fn run_container(host: &Host, cidr: &str, name: &docker::Named) -> Result<String> {
    let id = host.agent_ok(&["run", cidr, "--name", &name.0, "-it", docker::IMAGE, "sh"])?;
    Ok(id.trim().to_owned())
}

/// `docker ARGS...`, shown in the transcript when `verbose`.
pub fn show_docker(verbose: bool, args: &[&str]) -> Result<std::process::Output> {
    let out = docker::docker(args)?;
    if verbose {
        crate::show("docker-host", "docker", args, &out);
    }
    Ok(out)
}

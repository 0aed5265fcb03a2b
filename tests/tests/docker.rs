//! Real Docker containers on namespace hosts sharing one Docker engine: `run`, attach/detach/ps
//! by container name, restarts and removal followed through Docker's events.

use std::time::Duration;

use anyhow::{Result, ensure};
use weave_tests::{
    docker::{self, Named, docker, docker_ok},
    require_root, two_hosts, unique_name, wait_until, walkthrough,
};

fn pings(container: &str, ip: &str) -> Result<bool> {
    Ok(
        docker(&["exec", container, "ping", "-c", "2", "-W", "1", ip])?
            .status
            .success(),
    )
}

#[test]
fn docker_walkthrough_restart_keeps_the_address_and_rm_withdraws_it() -> Result<()> {
    require_root();
    let w = walkthrough::run_docker(&unique_name("a"), &unique_name("b"), false)?;
    for id in [&w.id_a, &w.id_b] {
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "run printed {id:?}, not a full container id"
        );
    }
    // ethwe inside the container: the address, MTU 1450; Docker's own network untouched.
    let addr = docker_ok(&["exec", &w.on_b.0, "ip", "addr", "show", "ethwe"])?;
    assert!(
        addr.contains("inet 192.168.1.20/24") && addr.contains("mtu 1450"),
        "{addr}"
    );
    // Each agent lists only what it attached, although both share the engine.
    let ps_b = w.b.agent_ok(&["ps"])?;
    assert!(
        ps_b.contains(&w.on_b.0) && !ps_b.contains(&w.on_a.0),
        "{ps_b}"
    );

    // docker restart: the container comes back with its address and is reachable again.
    docker_ok(&["restart", "-t", "1", &w.on_b.0])?;
    wait_until(
        Duration::from_secs(10),
        "address restored after docker restart",
        || {
            Ok(w.b.agent_ok(&["ps"])?.contains("192.168.1.20/24")
                && docker(&["exec", &w.on_b.0, "ip", "addr", "show", "ethwe"])?
                    .status
                    .success())
        },
    )?;
    // Host A learns the address again through gossip; connectivity itself is the check.
    wait_until(
        Duration::from_secs(10),
        "reaching 192.168.1.20 after docker restart",
        || pings(&w.on_a.0, "192.168.1.20"),
    )?;

    // docker rm -f: the address is withdrawn from the mesh.
    docker_ok(&["rm", "-f", &w.on_b.0])?;
    // Only B's other container (192.168.2.30) stays known to A.
    w.a.wait_for_remote(1)?;
    assert!(!w.b.agent_ok(&["ps"])?.contains("192.168.1.20"));
    assert!(!pings(&w.on_a.0, "192.168.1.20")?);
    Ok(())
}

#[test]
fn attach_detach_and_ps_by_docker_name() -> Result<()> {
    require_root();
    docker::require()?;
    let (a, _b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    a.agent_ok(&["launch"])?;
    let ctr = Named::new(format!("{}-plain", a.name));
    docker_ok(&["run", "-d", "--name", &ctr.0, "-it", docker::IMAGE, "sh"])?;
    let out = a.agent_ok(&["attach", "192.168.1.30/24", &ctr.0])?;
    assert!(out.contains("192.168.1.30/24"), "{out}");
    let ps = a.agent_ok(&["ps"])?;
    assert!(
        ps.contains(&format!("{} 02:57:c0:a8:01:1e 192.168.1.30/24", ctr.0)),
        "{ps}"
    );
    let addr = docker_ok(&["exec", &ctr.0, "ip", "addr", "show", "ethwe"])?;
    assert!(addr.contains("192.168.1.30/24"), "{addr}");

    a.agent_ok(&["detach", &ctr.0])?;
    assert!(
        !docker(&["exec", &ctr.0, "ip", "link", "show", "ethwe"])?
            .status
            .success()
    );
    assert!(!a.agent_ok(&["ps"])?.contains(&ctr.0));

    // A name Docker does not know is an error that says what CONTAINER may be.
    let out = a.agent(&["attach", "192.168.1.31/24", "no-such-container-xyz"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("netns:NAME"), "{err}");
    Ok(())
}

/// The addresses on `ethwe` in Docker container `ctr`, with its MAC, as `ip addr` shows them.
fn ethwe_of(ctr: &str) -> Result<String> {
    docker_ok(&["exec", ctr, "ip", "addr", "show", "ethwe"])
}

#[test]
fn a_docker_container_with_two_addresses_gets_both_back_after_a_restart() -> Result<()> {
    require_root();
    docker::require()?;
    let (a, _b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    a.agent_ok(&["launch"])?;
    let ctr = Named::new(format!("{}-two", a.name));
    docker_ok(&["run", "-d", "--name", &ctr.0, "-it", docker::IMAGE, "sh"])?;
    a.agent_ok(&["attach", "192.168.1.32/24", &ctr.0])?;
    a.agent_ok(&["attach", "192.168.7.32/24", &ctr.0])?;
    // Both on one ethwe, both listed with the MAC of the first.
    let ps = a.agent_ok(&["ps"])?;
    for cidr in ["192.168.1.32/24", "192.168.7.32/24"] {
        assert!(
            ps.contains(&format!("{} 02:57:c0:a8:01:20 {cidr}", ctr.0)),
            "{ps}"
        );
    }
    let both = |text: &str| {
        text.contains("inet 192.168.1.32/24")
            && text.contains("inet 192.168.7.32/24")
            && text.contains("02:57:c0:a8:01:20")
    };
    let addr = ethwe_of(&ctr.0)?;
    assert!(both(&addr), "{addr}");

    // docker restart: both come back, the MAC still the first's.
    docker_ok(&["restart", "-t", "1", &ctr.0])?;
    wait_until(
        Duration::from_secs(10),
        "both addresses restored after docker restart",
        || {
            let out = docker(&["exec", &ctr.0, "ip", "addr", "show", "ethwe"])?;
            Ok(both(&String::from_utf8_lossy(&out.stdout)))
        },
    )?;

    // One address goes, the other stays on ethwe.
    a.agent_ok(&["detach", "192.168.7.32", &ctr.0])?;
    let addr = ethwe_of(&ctr.0)?;
    assert!(
        addr.contains("inet 192.168.1.32/24") && !addr.contains("192.168.7.32"),
        "{addr}"
    );
    let ps = a.agent_ok(&["ps"])?;
    assert!(
        ps.contains("192.168.1.32/24") && !ps.contains("192.168.7.32"),
        "{ps}"
    );
    a.agent_ok(&["detach", &ctr.0])?;
    assert!(!a.agent_ok(&["ps"])?.contains(&ctr.0));
    Ok(())
}

#[test]
fn run_with_an_ipv6_address_beside_ipv4_or_alone_keeps_it_after_a_restart() -> Result<()> {
    require_root();
    docker::require()?;
    let (a, b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    a.agent_ok(&["launch"])?;
    b.agent_ok(&["join", "192.168.56.101"])?;
    let on_a = Named::new(format!("{}-v6", a.name));
    let on_b = Named::new(format!("{}-v6", b.name));
    for (host, ctr, cidr) in [
        (&a, &on_a, "192.168.1.50/24,fd00:1::50/64"),
        (&b, &on_b, "192.168.1.51/24,fd00:1::51/64"),
    ] {
        host.agent_ok(&["run", cidr, "--name", &ctr.0, "-dit", docker::IMAGE, "sh"])?;
    }
    a.wait_for_remote(1)?;
    b.wait_for_remote(1)?;
    let has_v6 = |ctr: &str| -> Result<bool> {
        let out = docker(&["exec", ctr, "ip", "-6", "addr", "show", "ethwe"])?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("inet6 fd00:1::50/64"))
    };
    ensure!(has_v6(&on_a.0)?, "{}", ethwe_of(&on_a.0)?);
    let ps = a.agent_ok(&["ps"])?;
    ensure!(ps.contains("fd00:1::50/64"), "{ps}");
    wait_until(Duration::from_secs(10), "IPv6 across hosts", || {
        pings(&on_b.0, "fd00:1::50")
    })?;

    // docker restart: a new namespace, and the IPv6 address comes back with the IPv4 one.
    docker_ok(&["restart", "-t", "1", &on_a.0])?;
    wait_until(
        Duration::from_secs(10),
        "the IPv6 address restored after docker restart",
        || has_v6(&on_a.0),
    )?;
    wait_until(
        Duration::from_secs(10),
        "IPv6 across hosts after docker restart",
        || pings(&on_b.0, "fd00:1::50"),
    )?;
    ensure!(pings(&on_b.0, "192.168.1.50")?, "IPv4 after the restart");

    // An IPv6 address alone: the MAC from it, reached across hosts, given back after a
    // restart as the dual-stack container's addresses are.
    let alone = Named::new(format!("{}-v6only", a.name));
    a.agent_ok(&[
        "run",
        "fd00:1::52/64",
        "--name",
        &alone.0,
        "-dit",
        docker::IMAGE,
        "sh",
    ])?;
    let link = docker_ok(&["exec", &alone.0, "ip", "link", "show", "ethwe"])?;
    ensure!(link.contains("link/ether 02:58:"), "{link}");
    wait_until(Duration::from_secs(10), "fd00:1::52 across hosts", || {
        pings(&on_b.0, "fd00:1::52")
    })?;
    docker_ok(&["restart", "-t", "1", &alone.0])?;
    wait_until(
        Duration::from_secs(10),
        "fd00:1::52 across hosts after docker restart",
        || pings(&on_b.0, "fd00:1::52"),
    )?;
    ensure!(
        a.agent_ok(&["ps"])?.contains("fd00:1::52/64"),
        "ps lost fd00:1::52 across the restart"
    );
    Ok(())
}

#[test]
fn run_that_cannot_attach_removes_the_container_again() -> Result<()> {
    require_root();
    docker::require()?;
    let (a, _b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    a.agent_ok(&["launch"])?;
    // `true` exits at once: there is no running container to attach to.
    let ctr = Named::new(format!("{}-quick", a.name));
    let out = a.agent(&[
        "run",
        "192.168.1.40/24",
        "--name",
        &ctr.0,
        docker::IMAGE,
        "true",
    ])?;
    assert!(
        !out.status.success(),
        "run of an exiting container succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed again"), "{err}");
    assert!(
        !docker(&["inspect", &ctr.0])?.status.success(),
        "the container was left behind"
    );
    // Bad input is refused before Docker creates anything.
    let out = a.agent(&[
        "run",
        "192.168.1.0/24",
        "--name",
        &ctr.0,
        docker::IMAGE,
        "sh",
    ])?;
    assert!(!out.status.success());
    assert!(!docker(&["inspect", &ctr.0])?.status.success());
    Ok(())
}

#[test]
fn without_docker_run_says_so_and_netns_attach_still_works() -> Result<()> {
    require_root();
    let (a, _b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    // An agent pointed at a Docker socket where nothing listens.
    let out = a.agent_via(
        &["env", "DOCKER_HOST=unix:///nonexistent/docker.sock"],
        &["launch"],
    )?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = a.agent(&["run", "192.168.1.50/24", docker::IMAGE, "sh"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Docker is not running"),
        "{err}"
    );
    let c = weave_tests::Container::new(&format!("{}c", a.name), &a)?;
    a.attach("192.168.1.50/24", &c)?;
    Ok(())
}

/// Many tests start at once on a machine without the image: every one must find it built,
/// none may trip over another's half-built tree (this failed with `File exists`).
#[test]
fn the_test_image_builds_once_when_many_tests_ask_at_once() -> Result<()> {
    require_root();
    docker::require()?;
    let image = format!("weave-test-race-{}:latest", std::process::id());
    let _ = docker(&["rmi", "-f", &image]);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let builders: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| docker::ensure_image_named(&image)))
            .collect();
        builders.into_iter().map(|b| b.join().unwrap()).collect()
    });
    let inspected = docker(&["image", "inspect", &image])?.status.success();
    let _ = docker(&["rmi", "-f", &image]);
    for result in results {
        result?;
    }
    ensure!(inspected, "{image} was not built");
    Ok(())
}

//! Automatic addresses: `attach` without an address, `net:CIDR` and `net:default` hand out
//! addresses of the range that no two hosts ever both hand out; the first host claims the
//! range, the others get space from it; meshes that claimed apart refuse each other's rings.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Container, Host, Segment, require_root, unique_name, wait_until};

/// The CIDRs `ps --json` lists on `host`.
fn listed(host: &Host) -> Result<Vec<String>> {
    let ps: serde_json::Value = serde_json::from_str(&host.agent_ok(&["ps", "--json"])?)?;
    Ok(ps
        .as_array()
        .context("ps --json printed no list")?
        .iter()
        .filter_map(|e| e["cidr"].as_str().map(str::to_owned))
        .collect())
}

fn ip_of(cidr: &str) -> Result<Ipv4Addr> {
    Ok(cidr.split('/').next().unwrap_or_default().parse()?)
}

fn inside(cidr: &str, network: [u8; 4], prefix: u32) -> Result<bool> {
    let ip = u32::from(ip_of(cidr)?);
    let mask = u32::MAX << (32 - prefix);
    Ok(ip & mask == u32::from(Ipv4Addr::from(network)))
}

#[test]
fn attach_without_an_address_hands_out_distinct_addresses_on_every_host() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::mesh(&prefix, 3)?;
    const PER_HOST: usize = 10;
    // Every host's attaches at once: the observers ask the seed for space meanwhile.
    let containers: Vec<Vec<Container>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = seg
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| {
                let prefix = &prefix;
                scope.spawn(move || -> Result<Vec<Container>> {
                    let mut made = Vec::new();
                    let attaches: Vec<_> = (0..PER_HOST)
                        .map(|i| Container::new(&format!("{prefix}h{h}c{i}"), host))
                        .collect::<Result<_>>()?;
                    std::thread::scope(|inner| {
                        let runs: Vec<_> = attaches
                            .iter()
                            .map(|c| inner.spawn(move || host.agent_ok(&["attach", &c.spec()])))
                            .collect();
                        for run in runs {
                            run.join().expect("attach thread")?;
                        }
                        Ok::<_, anyhow::Error>(())
                    })?;
                    made.extend(attaches);
                    Ok(made)
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("host thread"))
            .collect::<Result<_>>()
    })?;
    let mut all = BTreeSet::new();
    for host in &seg.hosts {
        let cidrs = listed(host)?;
        ensure!(cidrs.len() == PER_HOST, "{} lists {cidrs:?}", host.name);
        for cidr in cidrs {
            ensure!(
                cidr.ends_with("/12") && inside(&cidr, [10, 32, 0, 0], 12)?,
                "{cidr} is not an address of 10.32.0.0/12"
            );
            ensure!(all.insert(cidr.clone()), "{cidr} handed out twice");
        }
        let status = host.status()?;
        ensure!(
            status["ipam"]["claimed"] == true && status["conflicts"] == serde_json::json!([]),
            "{}: {}",
            host.name,
            status["ipam"]
        );
    }
    // Reachable across hosts: the last container of C to the first of A and of B.
    for host in &seg.hosts {
        host.wait_for_remote((2 * PER_HOST) as u64)?;
    }
    let from = &containers[2][PER_HOST - 1];
    for target in [&containers[0][0], &containers[1][0]] {
        let ip = target.ip(["-4", "-o", "addr", "show", "dev", "ethwe"])?;
        let ip = ip
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .context("no address on ethwe")?
            .to_owned();
        ensure!(
            from.ping(ip_of(&ip)?.to_string().as_str(), 2)?,
            "{} cannot reach {ip}",
            from.name
        );
    }
    Ok(())
}

#[test]
fn subnets_explicit_addresses_and_freed_addresses() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    // net:CIDR on the observer: space of that subnet comes from the seed.
    let c1 = Container::new(&format!("{prefix}c1"), b)?;
    let out = b.agent_ok(&["attach", "net:10.32.5.0/24", &c1.spec()])?;
    let got = listed(b)?;
    ensure!(
        got.len() == 1 && got[0].ends_with("/24") && inside(&got[0], [10, 32, 5, 0], 24)?,
        "net:10.32.5.0/24 gave {got:?} ({out})"
    );
    ensure!(
        !got[0].starts_with("10.32.5.0/"),
        "the network address was handed out"
    );
    // An explicit address inside the range is honoured, and never handed out again.
    let c2 = Container::new(&format!("{prefix}c2"), a)?;
    a.attach("10.32.0.1/12", &c2)?;
    let c3 = Container::new(&format!("{prefix}c3"), a)?;
    a.agent_ok(&["attach", "net:default", &c3.spec()])?;
    let on_a = listed(a)?;
    ensure!(
        on_a.iter().filter(|c| c.starts_with("10.32.0.1/")).count() == 1,
        "the explicit address was handed out again: {on_a:?}"
    );
    // Freed by detach, an address goes to the next attach at once.
    let freed = on_a
        .iter()
        .find(|c| !c.starts_with("10.32.0.1/"))
        .context("no allocated address on A")?
        .clone();
    a.agent_ok(&["detach", &c3.spec()])?;
    let c4 = Container::new(&format!("{prefix}c4"), a)?;
    a.agent_ok(&["attach", &c4.spec()])?;
    let again = listed(a)?;
    ensure!(
        again.contains(&freed),
        "{freed} was not handed out again: {again:?}"
    );
    // Outside the range: refused, naming both.
    let c5 = Container::new(&format!("{prefix}c5"), a)?;
    let out = a.agent(&["attach", "net:10.50.0.0/24", &c5.spec()])?;
    let message = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && message.contains("10.50.0.0/24")
            && message.contains("10.32.0.0/12"),
        "attach outside the range: {message}"
    );
    Ok(())
}

#[test]
fn meshes_that_claimed_the_range_apart_refuse_each_others_rings() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::new(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    // Both launched alone, both seeds, both claim by allocating.
    a.agent_ok(&["launch"])?;
    b.agent_ok(&["launch"])?;
    let ca = Container::new(&format!("{prefix}ca"), a)?;
    let cb = Container::new(&format!("{prefix}cb"), b)?;
    a.agent_ok(&["attach", &ca.spec()])?;
    b.agent_ok(&["attach", &cb.spec()])?;
    b.agent_ok(&["connect", "192.168.56.101"])?;
    for host in [a, b] {
        wait_until(Duration::from_secs(10), "the refusal in status", || {
            let refused = &host.status()?["ipam"]["refused"];
            Ok(refused.as_array().is_some_and(|r| {
                r.iter().any(|m| {
                    m.as_str()
                        .is_some_and(|m| m.contains("claimed the address range apart"))
                })
            }))
        })
        .with_context(|| format!("{} never reported the other mesh", host.name))?;
    }
    Ok(())
}

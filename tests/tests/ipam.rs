//! Automatic addresses: `attach` without an address, `net:CIDR` and `net:default` hand out
//! addresses of the range that no two hosts ever both hand out; the first host claims the
//! range, the others get space from it; meshes that claimed apart refuse each other's rings.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Container, Host, Segment, require_root, run_ok, unique_name, wait_until};

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
    const PER_HOST: usize = 100;
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
    // Every host sees the whole mesh's use of the default subnet, and each owner's share.
    for host in &seg.hosts {
        let ipam: serde_json::Value = serde_json::from_str(&host.agent_ok(&["ipam", "--json"])?)?;
        let default = &ipam["info"]["subnets"][0];
        let addresses = (1u64 << 20) - 2;
        ensure!(
            default["subnet"] == "10.32.0.0/12"
                && default["addresses"] == addresses
                && default["used"] == (3 * PER_HOST) as u64
                && default["free"] == addresses - (3 * PER_HOST) as u64,
            "{}: {default}",
            host.name
        );
        let owners = default["owners"].as_array().context("no owners")?;
        let owned: u64 = owners.iter().filter_map(|o| o["owned"].as_u64()).sum();
        ensure!(
            owners.len() == 3
                && owned == addresses
                && owners.iter().all(|o| o["used"] == PER_HOST as u64),
            "{}: each host allocates from what it owns: {owners:?}",
            host.name
        );
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
    // Both handed out the range's first address: reaching each other's would be a conflict.
    ensure!(
        listed(a)? == listed(b)?,
        "the two seeds allocated {:?} and {:?}",
        listed(a)?,
        listed(b)?
    );
    // `join` of a running agent waits for the peer's answer and refuses it.
    let out = b.agent(&["join", "192.168.56.101"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("claimed the address range apart"),
        "join of a mesh seeded apart: {out:?}"
    );
    ensure!(
        stderr.contains("weave-agent reset"),
        "the refusal says what to do: {stderr}"
    );
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
        // The refused peer's containers are not reached, so its duplicate is no conflict.
        let conflicts = &host.status()?["conflicts"];
        ensure!(
            conflicts == &serde_json::json!([]),
            "{} reaches the refused mesh's addresses: {conflicts}",
            host.name
        );
    }
    Ok(())
}

/// Attaches `count` new containers without an address on `host`, all at once.
fn attach_many(host: &Host, prefix: &str, count: usize) -> Result<Vec<Container>> {
    let made: Vec<Container> = (0..count)
        .map(|i| Container::new(&format!("{prefix}{i}"), host))
        .collect::<Result<_>>()?;
    std::thread::scope(|scope| {
        let runs: Vec<_> = made
            .iter()
            .map(|c| scope.spawn(move || host.agent_ok(&["attach", &c.spec()])))
            .collect();
        runs.into_iter()
            .try_for_each(|run| run.join().expect("attach thread").map(drop))
    })?;
    Ok(made)
}

fn ipam_status(host: &Host) -> Result<serde_json::Value> {
    Ok(host.status()?["ipam"].clone())
}

#[test]
fn rmpeer_on_two_hosts_at_once_gives_each_range_one_owner() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::mesh(&prefix, 3)?;
    let [a, b, c] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    let _on_a = attach_many(a, &format!("{prefix}a"), 3)?;
    let _on_b = attach_many(b, &format!("{prefix}b"), 3)?;
    let _on_c = attach_many(c, &format!("{prefix}c"), 3)?;
    ensure!(
        ipam_status(b)?["owned"].as_u64() > Some(0),
        "B owns no addresses to reclaim"
    );
    // B is gone for good.
    let b_name = b.agent_name()?;
    let pid = b.agent_pid()?;
    run_ok("kill", ["-9", &pid.to_string()])?;
    b.ip(["link", "set", "eth0", "down"])?;
    for host in [a, c] {
        wait_until(Duration::from_secs(10), "B declared dead", || {
            Ok(host.agent_ok(&["peers"])?.contains("192.168.56.102 dead"))
        })?;
    }
    // The alive check refuses a live peer: C is alive.
    let out = a.agent(&["rmpeer", &c.name])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is alive"),
        "rmpeer of a live peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (on_a, on_c) = std::thread::scope(|scope| {
        let on_a = scope.spawn(|| a.agent_ok(&["rmpeer", &b.name]));
        let on_c = scope.spawn(|| c.agent_ok(&["rmpeer", &b.name]));
        (on_a.join().expect("thread"), on_c.join().expect("thread"))
    });
    on_a?;
    on_c?;
    // Once the rings agree, A and C own the whole range between them, and no write clashed.
    let range = 1u64 << 20;
    wait_until(
        Duration::from_secs(10),
        "the range owned by A and C alone",
        || {
            let (sa, sc) = (ipam_status(a)?, ipam_status(c)?);
            Ok(sa["owned"].as_u64().unwrap_or(0) + sc["owned"].as_u64().unwrap_or(0) == range)
        },
    )?;
    for host in [a, c] {
        let status = ipam_status(host)?;
        ensure!(
            status["conflicting_writes"] == 0 && status["removed"][0] == b_name,
            "{}: {status}",
            host.name
        );
    }
    // New addresses on both survivors never clash.
    let _more_a = attach_many(a, &format!("{prefix}x"), 4)?;
    let _more_c = attach_many(c, &format!("{prefix}y"), 4)?;
    let mut all = BTreeSet::new();
    for host in [a, c] {
        for cidr in listed(host)? {
            ensure!(all.insert(cidr.clone()), "{cidr} handed out twice");
        }
    }
    Ok(())
}

#[test]
fn a_killed_agent_hands_out_nothing_twice_and_leaks_nothing() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let _on_a = attach_many(a, &format!("{prefix}a"), 2)?;
    // Attaches under way on B when its agent dies.
    let doomed: Vec<Container> = (0..8)
        .map(|i| Container::new(&format!("{prefix}d{i}"), b))
        .collect::<Result<_>>()?;
    std::thread::scope(|scope| -> Result<()> {
        let runs: Vec<_> = doomed
            .iter()
            .map(|c| scope.spawn(move || b.agent(&["attach", &c.spec()])))
            .collect();
        wait_until(Duration::from_secs(10), "some attaches done", || {
            Ok(!listed(b)?.is_empty())
        })?;
        let pid = b.agent_pid()?;
        run_ok("kill", ["-9", &pid.to_string()])?;
        for run in runs {
            // Some finished, some were cut off: either is fine here.
            let _ = run.join().expect("attach thread");
        }
        Ok(())
    })?;
    b.agent_ok(&["join", "192.168.56.101"])?;
    // What the restarted agent holds is what its containers hold.
    wait_until(Duration::from_secs(10), "allocations matching ps", || {
        let allocated = ipam_status(b)?["allocated"].as_u64();
        Ok(allocated == Some(listed(b)?.len() as u64))
    })?;
    let _more = attach_many(b, &format!("{prefix}m"), 4)?;
    let mut all = BTreeSet::new();
    for host in [a, b] {
        for cidr in listed(host)? {
            ensure!(all.insert(cidr.clone()), "{cidr} handed out twice");
        }
        // `ipam` lists exactly the addresses `ps` shows, and the ring covers the range once.
        let ipam: serde_json::Value = serde_json::from_str(&host.agent_ok(&["ipam", "--json"])?)?;
        let mut allocated: Vec<String> = ipam["allocations"]
            .as_array()
            .context("ipam --json has no allocations")?
            .iter()
            .filter_map(|a| a["address"].as_str().map(str::to_owned))
            .collect();
        let mut held: Vec<String> = listed(host)?
            .iter()
            .map(|c| ip_of(c).map(|ip| ip.to_string()))
            .collect::<Result<_>>()?;
        allocated.sort();
        held.sort();
        ensure!(
            allocated == held,
            "{}: ipam {allocated:?}, ps {held:?}",
            host.name
        );
        let covered: u64 = ipam["ranges"]
            .as_array()
            .context("ipam --json has no ranges")?
            .iter()
            .filter_map(|r| r["addresses"].as_u64())
            .sum();
        ensure!(
            covered == 1 << 20,
            "{}: the ring covers {covered}",
            host.name
        );
    }
    Ok(())
}

#[test]
fn a_full_subnet_is_refused_and_nothing_is_left_half_made() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::new(&prefix, 1)?;
    let a = &seg.hosts[0];
    a.agent_ok(&["launch", "--ipalloc-range", "10.32.9.0/28"])?;
    // 14 host addresses: the exposed one and 13 containers fill it.
    let out = a.agent_ok(&["expose", "net:default"])?;
    ensure!(
        out.contains("10.32.9.1/28 exposed"),
        "expose net:default: {out}"
    );
    let _full = attach_many(a, &format!("{prefix}f"), 13)?;
    let links_before = a.ip(["-o", "link", "show"])?.lines().count();
    let last = Container::new(&format!("{prefix}x"), a)?;
    let out = a.agent(&["attach", &last.spec()])?;
    let message = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && message.contains("no free address in 10.32.9.0/28"),
        "attach into a full /28: {message}"
    );
    ensure!(
        a.ip(["-o", "link", "show"])?.lines().count() == links_before,
        "the refused attach left a link"
    );
    ensure!(
        !last.ip(["-o", "link", "show"])?.contains("ethwe"),
        "the refused attach left an ethwe"
    );
    ensure!(
        ipam_status(a)?["allocated"] == 14,
        "allocations: {}",
        ipam_status(a)?
    );
    Ok(())
}

#[test]
fn both_sides_of_a_partition_allocate_and_the_healed_mesh_has_no_duplicate() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::mesh(&prefix, 3)?;
    let [a, b, c] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    // Each host gets space first; then A is cut off from B and C.
    let mut first = Vec::new();
    for (host, tag) in [(a, "a"), (b, "b"), (c, "c")] {
        first.extend(attach_many(host, &format!("{prefix}{tag}0"), 1)?);
    }
    seg.cut(1, 2)?;
    seg.cut(1, 3)?;
    for host in [b, c] {
        wait_until(Duration::from_secs(10), "A declared dead", || {
            Ok(host.agent_ok(&["peers"])?.contains("192.168.56.101 dead"))
        })?;
    }
    let _on_a = attach_many(a, &format!("{prefix}pa"), 25)?;
    let _on_b = attach_many(b, &format!("{prefix}pb"), 25)?;
    let _on_c = attach_many(c, &format!("{prefix}pc"), 25)?;
    seg.lift_cut()?;
    for host in [a, b, c] {
        wait_until(Duration::from_secs(15), "the mesh healed", || {
            Ok(!host.agent_ok(&["peers"])?.contains(" dead"))
        })?;
    }
    let mut all = BTreeSet::new();
    for host in [a, b, c] {
        for cidr in listed(host)? {
            ensure!(all.insert(cidr.clone()), "{cidr} handed out twice");
        }
    }
    ensure!(all.len() == 78, "{} addresses listed", all.len());
    for host in [a, b, c] {
        wait_until(Duration::from_secs(10), "every endpoint learned", || {
            Ok(host.endpoint_counts()?.1 == 52)
        })?;
        let status = host.status()?;
        ensure!(
            status["conflicts"] == serde_json::json!([])
                && status["ipam"]["conflicting_writes"] == 0,
            "{}: conflicts {} ipam {}",
            host.name,
            status["conflicts"],
            status["ipam"]
        );
    }
    Ok(())
}

#[test]
fn the_address_space_survives_a_reboot() -> Result<()> {
    require_root();
    let prefix = unique_name("i");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let on_a = attach_many(a, &format!("{prefix}a"), 2)?;
    // One after the other: two concurrent attaches on B may both ask A for space, and A may
    // answer the second ask after B's first allocation made it stale (a second donation,
    // harmless: no address is owned twice). Arriving after `b_owned` is read, it made B own
    // more after the reboot than "before" in one run in about eight.
    let on_b = [
        attach_many(b, &format!("{prefix}b0"), 1)?,
        attach_many(b, &format!("{prefix}b1"), 1)?,
    ];
    let owned = |host: &Host| -> Result<u64> {
        ipam_status(host)?["owned"]
            .as_u64()
            .context("no ipam.owned in status")
    };
    let (a_owned, b_owned) = (owned(a)?, owned(b)?);
    ensure!(b_owned > 0, "B got no space");
    // Both reboot, one after the other: /run and the containers go, /var/lib stays.
    drop((on_a, on_b));
    seg.reboot(0)?;
    a.agent_ok(&["launch"])?;
    seg.reboot(1)?;
    b.agent_ok(&["join", "192.168.56.101"])?;
    for (host, before) in [(a, a_owned), (b, b_owned)] {
        ensure!(
            owned(host)? == before,
            "{} owns {} after the reboot, {before} before",
            host.name,
            owned(host)?
        );
        // What the containers held went with them.
        wait_until(Duration::from_secs(10), "allocations released", || {
            Ok(ipam_status(host)?["allocated"] == 0)
        })?;
    }
    // The seed came back with its ring, not a new claim: the two still agree.
    let _again = attach_many(b, &format!("{prefix}c"), 2)?;
    for host in [a, b] {
        let status = ipam_status(host)?;
        ensure!(
            status["refused"] == serde_json::json!([]) && status["conflicting_writes"] == 0,
            "{}: {status}",
            host.name
        );
    }
    ensure!(owned(b)? == b_owned, "B needed new space after its reboot");
    Ok(())
}

/// The addresses `ethwe` holds in `c`.
fn ethwe_addresses(c: &Container) -> Result<BTreeSet<String>> {
    let text = c.ip(["-4", "-o", "addr", "show", "dev", "ethwe"])?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "inet");
            words.nth(1).map(str::to_owned)
        })
        .collect())
}

/// A container given addresses in two subnets (one `attach`), and a third from the range (a
/// second `attach`), reaches the containers of both subnets and stays isolated from neither's
/// neighbours; its MAC stays its first address's; after an agent restart all still work;
/// detaching one address leaves the others working, detaching the container takes the rest.
#[test]
fn a_container_with_addresses_in_two_subnets_reaches_both_and_keeps_one_when_the_other_goes()
-> Result<()> {
    require_root();
    let prefix = unique_name("m");
    let seg = Segment::mesh(&prefix, 2)?;
    let (a, b) = (&seg.hosts[0], &seg.hosts[1]);
    let one = b.container(&format!("{prefix}o"), "10.40.1.20/24")?;
    let two = b.container(&format!("{prefix}t"), "10.40.2.20/24")?;
    let multi = Container::new(&format!("{prefix}m"), a)?;
    let out = a.agent_ok(&["attach", "10.40.1.10/24", "10.40.2.10/24", &multi.spec()])?;
    ensure!(out.lines().count() == 2, "attach printed {out}");
    // A second attach to a container that has addresses gives it one more.
    let out = a.agent_ok(&["attach", "net:default", &multi.spec()])?;
    let third = out
        .split_whitespace()
        .find(|w| w.ends_with("/12"))
        .with_context(|| format!("no address of the range in {out}"))?
        .to_owned();
    let all: BTreeSet<String> = ["10.40.1.10/24", "10.40.2.10/24", &third]
        .map(str::to_owned)
        .into();
    ensure!(
        listed(a)?.into_iter().collect::<BTreeSet<_>>() == all,
        "ps lists {:?}",
        listed(a)?
    );
    assert_eq!(ethwe_addresses(&multi)?, all);
    let mac = "02:57:0a:28:01:0a";
    let link = multi.ip(["link", "show", "dev", "ethwe"])?;
    ensure!(link.contains(mac), "not the first address's MAC: {link}");

    let reaches_both = || -> Result<bool> {
        Ok(multi.ping("10.40.1.20", 1)?
            && multi.ping("10.40.2.20", 1)?
            && one.ping("10.40.1.10", 1)?
            && two.ping("10.40.2.10", 1)?)
    };
    wait_until(
        Duration::from_secs(10),
        "both subnets reaching the container",
        reaches_both,
    )?;
    // Isolation holds per address: 10.40.1.20, routed at the other subnet, is dropped.
    one.ip(["route", "add", "10.40.2.0/24", "dev", "ethwe"])?;
    ensure!(
        !one.ping("10.40.2.10", 1)?,
        "10.40.1.20 reached the container's address in 10.40.2.0/24"
    );

    // A restarted agent adopts all three on the one veth.
    a.agent_ok(&["stop"])?;
    a.agent_ok(&["launch"])?;
    ensure!(reaches_both()?, "not every address works after a restart");
    ensure!(listed(a)?.len() == 3, "ps lists {:?}", listed(a)?);

    // One address goes: the others keep working, on the same ethwe.
    a.agent_ok(&["detach", "10.40.2.10", &multi.spec()])?;
    let left: BTreeSet<String> = ["10.40.1.10/24", &third].map(str::to_owned).into();
    assert_eq!(ethwe_addresses(&multi)?, left);
    ensure!(
        multi.ip(["link", "show", "dev", "ethwe"])?.contains(mac),
        "ethwe changed"
    );
    ensure!(
        multi.ping("10.40.1.20", 1)?,
        "the address kept stopped working"
    );
    wait_until(Duration::from_secs(10), "B forgetting 10.40.2.10", || {
        Ok(b.endpoint_counts()?.1 == 2)
    })?;
    ensure!(
        !two.ping("10.40.2.10", 1)?,
        "the detached address still answers"
    );
    // The rest goes with the container.
    a.agent_ok(&["detach", &multi.spec()])?;
    ensure!(listed(a)?.is_empty(), "ps lists {:?}", listed(a)?);
    ensure!(
        multi.ip(["link", "show", "dev", "ethwe"]).is_err(),
        "ethwe is still there"
    );
    Ok(())
}

//! The CNI plugin, driven as a runtime drives it (the spec's example configurations, each
//! operation, error objects) and by a real runtime: Podman with its CNI backend.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use weave_tests::{
    Container, Host, Segment,
    cni::{Invocation, invoke, validate_error, validate_result},
    podman::{IMAGE, Podman},
    require_root, unique_name, wait_until,
};

/// SPEC.md's example configuration for `version` (0.4.0's carries `args`, 1.0.0's
/// `runtimeConfig`), with this plugin's type and IPAM: the keys meant for other plugins
/// (`bridge`, `keyA`, the example's `dns`) must be tolerated.
fn spec_example(version: &str) -> Value {
    let mut conf = json!({
        "cniVersion": version,
        "name": "dbnet",
        "type": "weave-agent",
        "bridge": "cni0",
        "keyA": ["some more", "plugin specific", "configuration"],
        "ipam": {"type": "weave-agent", "subnet": "10.32.1.0/24"},
        "dns": {"nameservers": ["10.1.0.1"]},
    });
    if version == "0.4.0" {
        conf["args"] = json!({"labels": {"appVersion": "1.0"}});
    } else {
        conf["runtimeConfig"] =
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    }
    conf
}

fn call<'a>(command: &'a str, id: &'a str, netns: &'a str) -> Invocation<'a> {
    Invocation {
        command,
        container_id: id,
        netns,
        ifname: "eth0",
        args: "IgnoreUnknown=1;K8S_POD_NAME=db",
    }
}

fn containers_listed(host: &Host) -> Result<Vec<String>> {
    let ps: Value = serde_json::from_str(&host.agent_ok(&["ps", "--json"])?)?;
    Ok(ps
        .as_array()
        .context("ps --json is no list")?
        .iter()
        .filter_map(|e| e["container"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn the_spec_operations_on_its_example_configurations() -> Result<()> {
    require_root();
    let prefix = unique_name("n");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    // A neighbour on the other host, in the examples' subnet.
    let peer = Container::new(&format!("{prefix}peer"), b)?;
    b.agent_ok(&["attach", "net:10.32.1.0/24", &peer.spec()])?;

    let version = invoke(a, &call("VERSION", "", ""), &json!({"cniVersion": "1.0.0"}))?;
    ensure!(version.ok, "VERSION failed: {}", version.stdout);
    let supported: BTreeSet<String> = version.json()?["supportedVersions"]
        .as_array()
        .context("no supportedVersions")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        ensure!(supported.contains(v), "{v} not in {supported:?}");
    }

    for v in ["0.4.0", "1.0.0"] {
        let conf = spec_example(v);
        let ctr = Container::new(&format!("{prefix}c{}", v.replace('.', "")), a)?;
        let netns = format!("/run/netns/{}", ctr.name);
        let id = format!("{prefix}-{v}");
        let add = invoke(a, &call("ADD", &id, &netns), &conf)?;
        ensure!(add.ok, "{v} ADD failed: {} {}", add.stdout, add.stderr);
        let result = add.json()?;
        validate_result(v, &result).with_context(|| format!("{v} ADD result {result}"))?;
        let cidr = result["ips"][0]["address"]
            .as_str()
            .context("no address")?
            .to_owned();
        ensure!(
            cidr.starts_with("10.32.1.") && cidr.ends_with("/24"),
            "{v}: {cidr}"
        );
        ensure!(result["interfaces"][0]["name"] == "eth0", "{result}");
        ensure!(
            result["interfaces"][0]["sandbox"] == netns.as_str(),
            "{result}"
        );
        ensure!(
            result["dns"]["nameservers"][0] == "169.254.53.53",
            "{result}"
        );
        ensure!(
            containers_listed(a)?.contains(&format!("cni:{id}")),
            "ps does not list cni:{id}"
        );
        // The container's eth0 holds it, and the neighbour on the other host reaches it.
        let ip = cidr.split('/').next().context("cidr")?.to_owned();
        ensure!(
            ctr.ip(["-4", "-o", "addr", "show", "dev", "eth0"])?
                .contains(&cidr)
        );
        ensure!(
            peer.ping(&ip, 2)?,
            "{v}: the other host's container cannot reach {ip}"
        );
        // The name from K8S_POD_NAME answers on the other host.
        wait_until(Duration::from_secs(5), "db in the other host's DNS", || {
            let dns = b.agent_ok(&["dns", "--json"])?;
            Ok(dns.contains("db.weave.local") && dns.contains(&ip))
        })?;

        let check = invoke(a, &call("CHECK", &id, &netns), &conf)?;
        ensure!(
            check.ok && check.stdout.is_empty(),
            "{v} CHECK: {} {}",
            check.stdout,
            check.stderr
        );
        // ADD again: the same attachment, not a second address.
        let again = invoke(a, &call("ADD", &id, &netns), &conf)?;
        ensure!(
            again.ok && again.json()?["ips"] == result["ips"],
            "{v} ADD again: {}",
            again.stdout
        );

        // Its interface deleted by hand: CHECK fails with this plugin's code, as a spec error.
        ctr.ip(["link", "del", "eth0"])?;
        let broken = invoke(a, &call("CHECK", &id, &netns), &conf)?;
        ensure!(!broken.ok, "{v} CHECK passed without eth0");
        validate_error(v, &broken.json()?, 101)?;
        ensure!(broken.stdout.contains("eth0"), "{}", broken.stdout);

        let del = invoke(a, &call("DEL", &id, &netns), &conf)?;
        ensure!(
            del.ok && del.stdout.is_empty(),
            "{v} DEL: {} {}",
            del.stdout,
            del.stderr
        );
        // DEL again, and with the namespace gone: nothing to do, no error.
        let del_again = invoke(a, &call("DEL", &id, ""), &conf)?;
        ensure!(del_again.ok, "{v} second DEL: {}", del_again.stdout);
        ensure!(
            !containers_listed(a)?.contains(&format!("cni:{id}")),
            "ps still lists cni:{id}"
        );
        ensure!(
            !a.allocated()?.contains(&ip),
            "{ip} is still allocated after DEL"
        );
    }

    // CHECK did not exist before 0.4.0: the spec's "incompatible version".
    let old = invoke(
        a,
        &call("CHECK", "x", "/run/netns/none"),
        &spec_example("0.3.1"),
    )?;
    ensure!(!old.ok, "CHECK of a 0.3.1 configuration passed");
    validate_error("0.3.1", &old.json()?, 1)?;
    // Another IPAM plugin: an invalid configuration, saying what to give instead.
    let mut host_local = spec_example("1.0.0");
    host_local["ipam"] = json!({"type": "host-local", "subnet": "10.1.0.0/16"});
    let refused = invoke(a, &call("ADD", "y", "/run/netns/none"), &host_local)?;
    ensure!(!refused.ok, "ADD with host-local passed");
    validate_error("1.0.0", &refused.json()?, 7)?;
    ensure!(refused.stdout.contains("host-local"), "{}", refused.stdout);

    // 1.1.0: STATUS while the agent runs; GC takes what the runtime no longer lists.
    let mut v11 = spec_example("1.0.0");
    v11["cniVersion"] = json!("1.1.0");
    let status = invoke(a, &call("STATUS", "", ""), &v11)?;
    ensure!(status.ok, "STATUS: {} {}", status.stdout, status.stderr);
    let kept = Container::new(&format!("{prefix}kept"), a)?;
    let stale = Container::new(&format!("{prefix}stale"), a)?;
    for (id, c) in [("kept", &kept), ("stale", &stale)] {
        let netns = format!("/run/netns/{}", c.name);
        let add = invoke(a, &call("ADD", id, &netns), &v11)?;
        ensure!(add.ok, "1.1.0 ADD: {}", add.stdout);
        validate_result("1.1.0", &add.json()?)?;
    }
    v11["cni.dev/valid-attachments"] = json!([{"containerID": "kept", "ifname": "eth0"}]);
    let gc = invoke(a, &call("GC", "", ""), &v11)?;
    ensure!(gc.ok, "GC: {} {}", gc.stdout, gc.stderr);
    let listed = containers_listed(a)?;
    ensure!(
        listed.contains(&"cni:kept".to_owned()) && !listed.contains(&"cni:stale".to_owned()),
        "after GC: {listed:?}"
    );
    Ok(())
}

/// An IPv6 address beside the IPv4 one, as a runtime asks for both (`runtimeConfig.ips`): both
/// in the result and on the interface, reached from the other host, and gone with DEL.
#[test]
fn an_add_with_an_ipv6_address_gives_it_beside_the_ipv4_one() -> Result<()> {
    require_root();
    let prefix = unique_name("n6");
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let peer = b.container(&format!("{prefix}peer"), "10.32.1.2/24,fd00:1::2/64")?;
    let ctr = Container::new(&format!("{prefix}c"), a)?;
    let netns = format!("/run/netns/{}", ctr.name);
    let mut conf = spec_example("1.0.0");
    conf["runtimeConfig"] = json!({"ips": ["10.32.1.7/24", "fd00:1::7/64"]});
    let add = invoke(a, &call("ADD", "six", &netns), &conf)?;
    ensure!(add.ok, "ADD failed: {} {}", add.stdout, add.stderr);
    let result = add.json()?;
    validate_result("1.0.0", &result).with_context(|| format!("ADD result {result}"))?;
    let ips: Vec<&str> = result["ips"]
        .as_array()
        .context("no ips")?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .collect();
    ensure!(ips == ["10.32.1.7/24", "fd00:1::7/64"], "{result}");
    ensure!(
        ctr.ip(["-6", "-o", "addr", "show", "dev", "eth0"])?
            .contains("fd00:1::7/64")
    );
    a.wait_for_remote(1)?;
    wait_until(
        Duration::from_secs(10),
        "fd00:1::7 from the other host",
        || peer.ping("fd00:1::7", 1),
    )?;
    let check = invoke(a, &call("CHECK", "six", &netns), &conf)?;
    ensure!(check.ok, "CHECK: {} {}", check.stdout, check.stderr);
    let del = invoke(a, &call("DEL", "six", &netns), &conf)?;
    ensure!(del.ok, "DEL: {} {}", del.stdout, del.stderr);
    ensure!(
        !peer.ping("fd00:1::7", 1)?,
        "fd00:1::7 still answers after DEL"
    );
    Ok(())
}

/// The plugin's configuration as a runtime hands it over: the list's first plugin, with the
/// list's name and version.
fn plugin_conf(podman: &Podman) -> Result<Value> {
    let list: Value = serde_json::from_str(&std::fs::read_to_string(
        podman.conf_dir().join("10-weave.conflist"),
    )?)?;
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    Ok(conf)
}

#[test]
fn podman_containers_on_two_hosts_reach_each_other() -> Result<()> {
    require_root();
    let prefix = unique_name("n");
    let podman = Podman::new(&prefix)?;
    let seg = Segment::mesh(&prefix, 2)?;
    let [a, b] = [&seg.hosts[0], &seg.hosts[1]];
    let (conf_dir, bin_dir) = (podman.conf_dir(), podman.bin_dir());
    let install = [
        "cni",
        "install",
        "--conf-dir",
        conf_dir.to_str().context("utf-8")?,
        "--bin-dir",
        bin_dir.to_str().context("utf-8")?,
    ];
    a.agent_ok(&install)?;
    let names = [format!("{prefix}pa"), format!("{prefix}pb")];
    let mut ips = Vec::new();
    for (host, name) in [(a, &names[0]), (b, &names[1])] {
        podman.ok(
            host,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "weave",
                IMAGE,
                "sleep",
                "600",
            ],
        )?;
        let ip = podman.inspect(host, name, "{{.NetworkSettings.Networks.weave.IPAddress}}")?;
        let octets = ip.parse::<std::net::Ipv4Addr>()?.octets();
        ensure!(
            octets[0] == 10 && (32..48).contains(&octets[1]),
            "{name} got {ip:?}, outside 10.32.0.0/12"
        );
        ips.push(ip);
    }
    ensure!(ips[0] != ips[1], "both got {}", ips[0]);
    for (host, name, other) in [(a, &names[0], &ips[1]), (b, &names[1], &ips[0])] {
        host.wait_for_remote(1)?;
        let ping = podman.run(host, &["exec", name, "ping", "-c", "2", "-W", "1", other])?;
        ensure!(
            ping.status.success(),
            "{name} cannot reach {other}: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }

    // A host port through the chained portmap plugin: B's host reaches A's container at
    // A's underlay address. The DNAT needs A's host on the overlay, as Weave's weave-kube
    // exposes it.
    a.agent_ok(&["expose", "net:default"])?;
    let web = format!("{prefix}web");
    podman.ok(
        a,
        &[
            "run",
            "-d",
            "--name",
            &web,
            "-p",
            "18080:8080",
            "--network",
            "weave",
            IMAGE,
            "sh",
            "-c",
            "while true; do echo hello | nc -l -p 8080; done",
        ],
    )?;
    wait_until(Duration::from_secs(10), "the host port answering", || {
        let out = b.exec(
            "timeout",
            &[
                "3",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/192.168.56.101/18080 && head -1 <&3",
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "hello")
    })?;
    podman.ok(a, &["rm", "--force", "--time", "0", &web])?;

    // CHECK, as a runtime would send it for B's container: healthy, then without eth0.
    let conf = plugin_conf(&podman)?;
    let id = podman.inspect(b, &names[1], "{{.Id}}")?;
    let netns = podman.inspect(b, &names[1], "{{.NetworkSettings.SandboxKey}}")?;
    let check = Invocation {
        command: "CHECK",
        container_id: &id,
        netns: &netns,
        ifname: "eth0",
        args: "",
    };
    let healthy = invoke(b, &check, &conf)?;
    ensure!(
        healthy.ok,
        "CHECK of a healthy container: {}",
        healthy.stdout
    );
    weave_tests::run_ok(
        "nsenter",
        [
            format!("--net={netns}"),
            "ip".into(),
            "link".into(),
            "del".into(),
            "eth0".into(),
        ],
    )?;
    let broken = invoke(b, &check, &conf)?;
    ensure!(!broken.ok, "CHECK passed with eth0 deleted");
    validate_error("1.0.0", &broken.json()?, 101)?;

    // `podman rm` runs DEL: A's address is free again at once.
    podman.ok(a, &["rm", "--force", "--time", "0", &names[0]])?;
    ensure!(
        !a.allocated()?.contains(&ips[0]),
        "{} still allocated after podman rm",
        ips[0]
    );
    ensure!(
        !containers_listed(a)?.iter().any(|c| c.starts_with("cni:")),
        "ps still lists a CNI container on {}",
        a.name
    );
    podman.ok(b, &["rm", "--force", "--time", "0", &names[1]])?;
    ensure!(
        containers_listed(b)?.is_empty(),
        "ps on {} after podman rm",
        b.name
    );
    Ok(())
}

/// The files under `dir`, recursively, with their sizes left out (state files are rewritten).
fn files_under(dir: &std::path::Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path.display().to_string());
        }
    }
    Ok(out)
}

#[test]
fn adds_and_dels_by_the_hundred_leave_nothing_behind() -> Result<()> {
    require_root();
    const CYCLES: usize = 200;
    let prefix = unique_name("n");
    let seg = Segment::mesh(&prefix, 2)?;
    let conf = json!({"cniVersion": "1.0.0", "name": "weave", "type": "weave-agent"});
    let ctrs: Vec<Container> = seg
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Container::new(&format!("{prefix}c{i}"), h))
        .collect::<Result<_>>()?;
    // One cycle first: the first allocation claims address space, and ipam.json, which
    // keeps that claim, is meant to stay.
    for (host, ctr) in seg.hosts.iter().zip(&ctrs) {
        let netns = format!("/run/netns/{}", ctr.name);
        ensure!(invoke(host, &call("ADD", "warm-up", &netns), &conf)?.ok);
        ensure!(invoke(host, &call("DEL", "warm-up", &netns), &conf)?.ok);
    }
    let before: Vec<(BTreeSet<String>, String)> = seg
        .hosts
        .iter()
        .map(|h| -> Result<_> {
            let mut files = files_under(&h.state_dir())?;
            files.extend(files_under(&h.data_dir())?);
            Ok((files, h.ip(["-o", "link", "show"])?))
        })
        .collect::<Result<_>>()?;
    std::thread::scope(|scope| {
        let jobs: Vec<_> = seg
            .hosts
            .iter()
            .zip(&ctrs)
            .map(|(host, ctr)| {
                let conf = &conf;
                scope.spawn(move || -> Result<()> {
                    let netns = format!("/run/netns/{}", ctr.name);
                    for i in 0..CYCLES {
                        let id = format!("churn-{i}");
                        let add = invoke(host, &call("ADD", &id, &netns), conf)?;
                        ensure!(add.ok, "ADD {i} on {}: {}", host.name, add.stdout);
                        let del = invoke(host, &call("DEL", &id, &netns), conf)?;
                        ensure!(del.ok, "DEL {i} on {}: {}", host.name, del.stdout);
                    }
                    Ok(())
                })
            })
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().expect("churn thread"))
    })?;
    for ((host, ctr), (files, links)) in seg.hosts.iter().zip(&ctrs).zip(&before) {
        ensure!(
            containers_listed(host)?.is_empty(),
            "{}: ps lists endpoints",
            host.name
        );
        ensure!(
            host.endpoint_counts()?.0 == 0,
            "{}: local map entries left",
            host.name
        );
        let ipam = &host.status()?["ipam"];
        ensure!(ipam["allocated"] == 0, "{}: {ipam}", host.name);
        ensure!(
            host.ip(["-o", "link", "show"])? == *links,
            "{}: links changed",
            host.name
        );
        let mut now = files_under(&host.state_dir())?;
        now.extend(files_under(&host.data_dir())?);
        ensure!(
            now == *files,
            "{}: files {:?} became {now:?}",
            host.name,
            files
        );
        let inside = ctr.ip(["-o", "link", "show"])?;
        ensure!(
            inside.lines().count() == 1,
            "left in the container: {inside}"
        );
    }
    Ok(())
}

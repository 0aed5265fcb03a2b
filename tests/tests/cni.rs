//! The CNI plugin, driven as a runtime drives it (the spec's example configurations, each
//! operation, error objects) and by a real runtime: Podman with its CNI backend.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use weave_tests::{
    Container, Host, Segment,
    cni::{Invocation, invoke, validate_error, validate_result},
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

/// The addresses `ipam --json` says this host handed out.
fn allocated(host: &Host) -> Result<BTreeSet<String>> {
    let ipam: Value = serde_json::from_str(&host.agent_ok(&["ipam", "--json"])?)?;
    Ok(ipam["allocations"]
        .as_array()
        .context("no allocations")?
        .iter()
        .filter_map(|a| a["address"].as_str().map(str::to_owned))
        .collect())
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
            !allocated(a)?.contains(&ip),
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

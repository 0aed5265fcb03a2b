//! Reliability: restarting an agent (gracefully or after kill -9) while containers ping each
//! other 100 times a second loses no ping.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{
    Host, Segment, ping_result, require_root, start_pinging, unique_name, wait_until,
};

/// How an agent is taken down before it is launched again.
#[derive(Clone, Copy, Debug)]
enum Down {
    Stop,
    Kill,
}

fn restart(host: &Host, how: Down) -> Result<()> {
    match how {
        Down::Stop => {
            host.agent_ok(&["stop"])?;
        }
        Down::Kill => {
            let pid = host.agent_pid()?;
            let out = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .output()?;
            ensure!(out.status.success(), "kill -9 {pid} failed");
            // Dead once it is gone or a zombie (its files, the lock among them, are closed);
            // reaping is up to whoever adopted it.
            wait_until(
                Duration::from_secs(5),
                "the killed agent to be gone",
                || {
                    Ok(std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .map_or(true, |stat| stat.contains(") Z ")))
                },
            )?;
        }
    }
    // No peer argument: the agent finds the peers to rejoin in its state.
    host.agent_ok(&["launch"])?;
    Ok(())
}

fn restart_loses_no_ping(tag: &str, which: usize, how: Down) -> Result<()> {
    require_root();
    let prefix = unique_name(tag);
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let _c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    ensure!(
        c1.ping("192.168.1.20", 2)?,
        "no connectivity before the restart"
    );

    let pinging = start_pinging(&c1, "192.168.1.20", 8)?;
    // Under way before the agent goes down: the first replies are in.
    let host = &seg.hosts[which];
    let before = host.agent_pid()?;
    wait_until(Duration::from_secs(5), "ping under way", || {
        Ok(h1.counter_packets("remote_sent")? > 10)
    })?;
    let down = std::time::Instant::now();
    restart(host, how)?;
    eprintln!("{how:?} + launch took {:?}", down.elapsed());
    ensure!(host.agent_pid()? != before, "the agent did not restart");
    // Both sides must settle on the new generation while the ping still runs.
    wait_until(Duration::from_secs(5), "the peers alive again", || {
        Ok(peers_alive(h1)? && peers_alive(h2)?)
    })?;
    let (sent, received) = ping_result(pinging)?;
    eprintln!(
        "{how:?} + launch on host {}: {received}/{sent} pings answered",
        which + 1
    );
    ensure!(sent >= 700, "ping sent only {sent}");
    ensure!(
        sent == received,
        "{} of {sent} pings lost across {how:?} + launch; drops on h1: {}; on h2: {}",
        sent - received,
        drops(h1)?,
        drops(h2)?
    );
    // And the mesh is whole afterwards: both maps still hold the other endpoint.
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;
    Ok(())
}

/// The non-zero drop counters of `host`, for the failure message.
fn drops(host: &Host) -> Result<String> {
    let status = host.status()?;
    let counters = status["counters"].as_object().context("no counters")?;
    Ok(counters
        .iter()
        .filter(|(name, c)| name.starts_with("drop_") && c["packets"].as_u64() != Some(0))
        .map(|(name, c)| format!("{name}={}", c["packets"]))
        .collect::<Vec<_>>()
        .join(" "))
}

fn peers_alive(host: &Host) -> Result<bool> {
    let peers: serde_json::Value = serde_json::from_str(&host.agent_ok(&["peers", "--json"])?)?;
    Ok(peers
        .as_array()
        .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p["state"] == "alive")))
}

#[test]
fn stop_and_launch_of_the_sender_host_loses_no_ping() -> Result<()> {
    restart_loses_no_ping("ra", 0, Down::Stop)
}

#[test]
fn stop_and_launch_of_the_receiver_host_loses_no_ping() -> Result<()> {
    restart_loses_no_ping("rb", 1, Down::Stop)
}

#[test]
fn kill_and_launch_of_the_sender_host_loses_no_ping() -> Result<()> {
    restart_loses_no_ping("rc", 0, Down::Kill)
}

#[test]
fn kill_and_launch_of_the_receiver_host_loses_no_ping() -> Result<()> {
    restart_loses_no_ping("rd", 1, Down::Kill)
}

/// `bpftool -j KIND show ...ARGS`, parsed; None when bpftool refuses (no such object).
fn bpftool(args: &[&str]) -> Result<Option<serde_json::Value>> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = Command::new("bpftool").args(&all).output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&out.stdout)?))
}

#[test]
fn reset_leaves_nothing_the_kernel_can_see() -> Result<()> {
    require_root();
    let prefix = unique_name("rz");
    let seg = Segment::mesh(&prefix, 2)?;
    let h1 = &seg.hosts[0];
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let c2 = h1.container(&format!("{prefix}c2"), "192.168.2.10/24")?;
    h1.agent_ok(&["policy", "allow", "192.168.1.0/24", "192.168.2.0/24"])?;
    wait_until(Duration::from_secs(5), "the rule's route", || {
        Ok(c1
            .ip(["route", "show", "192.168.2.0/24"])?
            .contains("ethwe"))
    })?;

    // What the kernel holds for h1's agent, by id, taken before the reset.
    let status = h1.status()?;
    let programs: Vec<u64> = status["programs"]
        .as_array()
        .context("programs")?
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect();
    ensure!(programs.len() >= 4, "programs: {}", status["programs"]);
    let (mut maps, mut links) = (Vec::new(), Vec::new());
    for pin in std::fs::read_dir(h1.pin_dir())? {
        let pin = pin?.path();
        let pin = pin.to_str().context("pin path")?;
        if let Some(map) = bpftool(&["map", "show", "pinned", pin])? {
            maps.push(map["id"].as_u64().context("map id")?);
        } else if let Some(link) = bpftool(&["link", "show", "pinned", pin])? {
            links.push(link["id"].as_u64().context("link id")?);
        }
    }
    ensure!(
        !maps.is_empty() && !links.is_empty(),
        "maps {maps:?} links {links:?}"
    );

    h1.agent_ok(&["reset"])?;

    wait_until(
        Duration::from_secs(5),
        "programs, maps and links freed",
        || {
            for id in &programs {
                if bpftool(&["prog", "show", "id", &id.to_string()])?.is_some() {
                    return Ok(false);
                }
            }
            for id in &maps {
                if bpftool(&["map", "show", "id", &id.to_string()])?.is_some() {
                    return Ok(false);
                }
            }
            for id in &links {
                if bpftool(&["link", "show", "id", &id.to_string()])?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&h1.ip(["-j", "link"])?)?
        .as_array()
        .context("links")?
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        names
            .iter()
            .all(|n| n != "vxlan-6784" && !n.starts_with("vethwe")),
        "links left in h1: {names:?}"
    );
    let attached = h1.exec("bpftool", &["-j", "net", "show"])?;
    let attached: serde_json::Value = serde_json::from_slice(&attached.stdout)?;
    for kind in ["xdp", "tc"] {
        ensure!(
            attached[0][kind].as_array().is_some_and(Vec::is_empty),
            "{kind} attachments left in h1: {attached}"
        );
    }
    for container in [&c1, &c2] {
        ensure!(
            !container.ip(["link"])?.contains("ethwe"),
            "{} still has ethwe (and its routes)",
            container.name
        );
    }
    ensure!(
        !h1.pin_dir().exists(),
        "pins left in {}",
        h1.pin_dir().display()
    );
    ensure!(
        !h1.state_dir().exists(),
        "state left in {}",
        h1.state_dir().display()
    );
    Ok(())
}

/// Remote endpoints in `host`'s maps, as `status` counts them, and its conflicts.
fn remote_and_conflicts(host: &Host) -> Result<(u64, Vec<String>)> {
    let status = host.status()?;
    let conflicts = status["conflicts"]
        .as_array()
        .context("conflicts")?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    Ok((
        status["endpoints"]["remote"].as_u64().context("remote")?,
        conflicts,
    ))
}

#[test]
fn a_rebooted_host_rejoins_and_no_stale_endpoint_survives() -> Result<()> {
    require_root();
    let prefix = unique_name("rr");
    let seg = Segment::mesh(&prefix, 3)?;
    let [h1, h2, h3] = [&seg.hosts[0], &seg.hosts[1], &seg.hosts[2]];
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    let old = h3.container(&format!("{prefix}c3"), "192.168.1.30/24")?;
    for host in [h1, h2, h3] {
        host.wait_for_remote(2)?;
    }
    let generation = |host: &Host| -> Result<Option<u64>> {
        let status = host.status()?;
        Ok(status["peers"]
            .as_array()
            .context("peers")?
            .iter()
            .find(|p| p["address"] == "192.168.56.103")
            .and_then(|p| p["generation"].as_u64()))
    };
    let before = generation(h1)?.context("h1 does not list h3")?;

    seg.reboot(2)?;
    drop(old);
    h3.agent_ok(&["join", "192.168.56.101"])?;
    let new = h3.container(&format!("{prefix}c4"), "192.168.1.40/24")?;

    // Everyone has exactly the new endpoint of h3, under a newer generation; .30 is gone.
    for host in [h1, h2] {
        wait_until(
            Duration::from_secs(10),
            "the rebooted host's new endpoints",
            || {
                Ok(
                    host.endpoint_counts()?.1 == 2 && new.ping("192.168.1.10", 1)? && {
                        let gen_now = generation(h1)?;
                        gen_now.is_some_and(|g| g > before)
                    },
                )
            },
        )?;
        ensure!(
            !c1.ping("192.168.1.30", 1)?,
            "the rebooted host's old endpoint still answers"
        );
    }
    ensure!(c1.ping("192.168.1.40", 2)? && c2.ping("192.168.1.40", 2)?);
    ensure!(
        remote_and_conflicts(h1)?.1.is_empty(),
        "conflicts after the reboot"
    );
    Ok(())
}

#[test]
fn a_partition_heals_by_itself_and_reports_double_claims() -> Result<()> {
    require_root();
    let prefix = unique_name("rp");
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let c1 = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let _c2 = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    h1.wait_for_remote(1)?;
    h2.wait_for_remote(1)?;

    // Cut h2's cable at the switch for 10 s.
    let cut = std::time::Instant::now();
    seg.switch().ip(["link", "set", "p2", "down"])?;
    for host in [h1, h2] {
        wait_until(
            Duration::from_secs(8),
            "each side seeing the other dead",
            || Ok(!peers_alive(host)? && host.endpoint_counts()?.1 == 0),
        )?;
    }
    // Both sides hand out the same address while they cannot see each other.
    let _d1 = h1.container(&format!("{prefix}d1"), "192.168.1.99/24")?;
    let _d2 = h2.container(&format!("{prefix}d2"), "192.168.1.99/24")?;
    // The rest of the 10 s: the scenario's length, not a wait for readiness.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed()));
    seg.switch().ip(["link", "set", "p2", "up"])?;
    let healed = std::time::Instant::now();

    wait_until(Duration::from_secs(5), "the mesh reconverging", || {
        Ok(peers_alive(h1)? && peers_alive(h2)? && c1.ping("192.168.1.20", 1)?)
    })?;
    eprintln!("reconverged {:?} after healing", healed.elapsed());
    for host in [h1, h2] {
        wait_until(Duration::from_secs(5), "the double claim reported", || {
            let (_, conflicts) = remote_and_conflicts(host)?;
            Ok(conflicts.iter().any(|c| c.contains("192.168.1.99")))
        })
        .with_context(|| format!("on {}", host.name))?;
    }
    Ok(())
}

#[test]
fn a_container_gone_while_the_agent_was_down_is_withdrawn_everywhere() -> Result<()> {
    require_root();
    let prefix = unique_name("rg");
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let _stays = h1.container(&format!("{prefix}c1"), "192.168.1.10/24")?;
    let goes = h1.container(&format!("{prefix}c2"), "192.168.1.11/24")?;
    let far = h2.container(&format!("{prefix}c3"), "192.168.1.20/24")?;
    h1.agent_ok(&["policy", "allow", "192.168.1.0/24", "192.168.9.0/24"])?;
    h2.wait_for_remote(2)?;

    h1.agent_ok(&["stop"])?;
    drop(goes);
    h1.agent_ok(&["launch"])?;

    // The survivor is adopted and still reachable; the vanished one is gone on both hosts.
    h2.wait_for_remote(1)?;
    ensure!(
        far.ping("192.168.1.10", 2)?,
        "the adopted endpoint is unreachable"
    );
    let ps = h1.agent_ok(&["ps"])?;
    ensure!(
        ps.contains("192.168.1.10/24") && !ps.contains("192.168.1.11"),
        "ps after the restart: {ps}"
    );
    ensure!(
        h1.endpoint_counts()?.0 == 1,
        "stale local entry in h1's map"
    );
    // The rule is still known (from the state file; h2 keeps it too).
    let rules = h1.agent_ok(&["policy", "list"])?;
    ensure!(
        rules.contains("192.168.1.0/24 192.168.9.0/24 allow"),
        "rules after the restart: {rules}"
    );
    Ok(())
}

/// An address detached on one host while another host's agent was down, and attached on that
/// host right after its relaunch: the relaunched agent adopted the address from its pinned map
/// as remote, and must not remove the entry, local by now, once the adoption grace ends.
#[test]
fn an_address_moved_to_a_relaunched_host_stays_reachable() -> Result<()> {
    require_root();
    let prefix = unique_name("rm");
    let seg = Segment::mesh(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let old = h2.container(&format!("{prefix}c1"), "192.168.1.5/24")?;
    let far = h2.container(&format!("{prefix}c2"), "192.168.1.20/24")?;
    h1.wait_for_remote(2)?;

    h1.agent_ok(&["stop"])?;
    h2.agent_ok(&["detach", &old.spec()])?;
    h1.agent_ok(&["launch"])?;
    let _moved = h1.container(&format!("{prefix}c3"), "192.168.1.5/24")?;
    wait_until(
        Duration::from_secs(5),
        "the moved address reachable",
        || far.ping("192.168.1.5", 1),
    )?;
    // 7 s of pings outlast the relaunched agent's 5 s adoption grace.
    let (sent, received) = ping_result(start_pinging(&far, "192.168.1.5", 7)?)?;
    ensure!(
        sent == received,
        "{} of {sent} pings to the moved address lost; drops on h1: {}",
        sent - received,
        drops(h1)?
    );
    Ok(())
}

/// An underlay that goes down makes every gossip send fail, some 20 a second. With
/// RUST_BACKTRACE=1 in the shell that launched the agent, each used to be logged with a
/// 30-line backtrace (350 lines a second); now the outage costs a line per peer and cause.
#[test]
fn an_underlay_outage_logs_a_line_per_peer_not_one_per_send() -> Result<()> {
    require_root();
    let prefix = unique_name("rl");
    let seg = Segment::new(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    let shell = ["env", "RUST_BACKTRACE=1"];
    for (host, args) in [(h1, vec!["launch"]), (h2, vec!["join", "192.168.56.101"])] {
        let out = host.agent_via(&shell, &args)?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until(Duration::from_secs(10), "the two peers alive", || {
        Ok(peers_alive(h1)? && peers_alive(h2)?)
    })?;
    let log = h2.state_dir().join("agent.log");
    let before = std::fs::read_to_string(&log)?.len();
    h2.ip(["link", "set", "eth0", "down"])?;
    // The outage's length, not a wait for readiness.
    std::thread::sleep(Duration::from_secs(3));
    let during = std::fs::read_to_string(&log)?[before..].to_owned();
    h2.ip(["link", "set", "eth0", "up"])?;
    eprintln!("logged during the outage:\n{during}");
    ensure!(
        !during.to_lowercase().contains("backtrace"),
        "errors were logged with backtraces"
    );
    let lines = during.lines().count();
    ensure!(lines <= 10, "{lines} lines in 3 s of outage");
    ensure!(
        during.contains("gossip to 192.168.56.101:6783 fails"),
        "the failing sends were not reported at all"
    );
    Ok(())
}

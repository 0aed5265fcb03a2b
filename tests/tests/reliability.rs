//! Reliability: restarting an agent (gracefully or after kill -9) while containers ping each
//! other 100 times a second loses no ping.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Container, Host, Segment, require_root, unique_name, wait_until};

/// 100 pings a second for `seconds`, from `from` to `to`, in the background.
fn start_pinging(from: &Container, to: &str, seconds: u32) -> Result<Child> {
    let count = (seconds * 100).to_string();
    Command::new("ip")
        .args(["netns", "exec", &from.name, "ping", "-i", "0.01", "-W", "1"])
        .args(["-c", &count, to])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ping")
}

/// (transmitted, received) from ping's summary.
fn ping_result(child: Child) -> Result<(u64, u64)> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in: {text}"))?;
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    Ok((numbers[0], numbers[1]))
}

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
    let seg = Segment::new(&prefix, 2)?;
    let (h1, h2) = (&seg.hosts[0], &seg.hosts[1]);
    h1.agent_ok(&["launch"])?;
    h2.agent_ok(&["join", "192.168.56.101"])?;
    let c1 = Container::new(&format!("{prefix}c1"), h1)?;
    let c2 = Container::new(&format!("{prefix}c2"), h2)?;
    h1.attach("192.168.1.10/24", &c1)?;
    h2.attach("192.168.1.20/24", &c2)?;
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

//! The configured peers as Weave users manage them: `connect [--replace] PEER...` and
//! `forget PEER...`, kept across restarts.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Host, Segment, require_root, unique_name, wait_until};

/// Counts, on the switch, gossip datagrams to host 3 (which runs no agent and never answers):
/// how often it is being retried.
const WATCH: &str = "table bridge watch {
    chain forward {
        type filter hook forward priority 0;
        ip daddr 192.168.56.103 udp dport 6783 counter
    }
}";

/// Gossip datagrams to host 3 so far.
fn calls_to_host3(switch: &Host) -> Result<u64> {
    let listed = switch.exec("nft", &["list", "table", "bridge", "watch"])?;
    let text = String::from_utf8_lossy(&listed.stdout);
    let packets = text
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .with_context(|| format!("no counter in {text}"))?;
    Ok(packets.parse()?)
}

/// No gossip datagram goes to host 3 over `window` (retries run every second, so three
/// seconds would see at least two). Watching for something not to happen takes the time.
fn host3_left_alone(switch: &Host, window: Duration, after: &str) -> Result<()> {
    let before = calls_to_host3(switch)?;
    std::thread::sleep(window);
    let later = calls_to_host3(switch)?;
    ensure!(
        later == before,
        "after {after}, host 3 was still called: {before} -> {later} datagrams"
    );
    Ok(())
}

fn configured(out: &str) -> &str {
    out.trim().trim_start_matches("configured peers: ")
}

#[test]
fn forget_stops_the_retries_for_good_and_connect_replace_swaps_the_list() -> Result<()> {
    require_root();
    let seg = Segment::new(&unique_name("pl"), 3)?;
    seg.switch().load_nft(WATCH)?;
    let (a, b, switch) = (&seg.hosts[0], &seg.hosts[1], seg.switch());
    let window = Duration::from_secs(3);
    a.agent_ok(&["launch"])?;
    b.agent_ok(&["launch"])?;

    let out = a.agent_ok(&["connect", "192.168.56.103"])?;
    ensure!(configured(&out) == "192.168.56.103", "connect said {out:?}");
    wait_until(Duration::from_secs(5), "host 3 being called", || {
        Ok(calls_to_host3(switch)? >= 2)
    })?;

    let out = a.agent_ok(&["forget", "192.168.56.103"])?;
    ensure!(configured(&out) == "none", "forget said {out:?}");
    host3_left_alone(switch, window, "forget")?;
    a.agent_ok(&["stop"])?;
    a.agent_ok(&["launch"])?;
    host3_left_alone(switch, window, "forget and a restart")?;
    let peers = a.agent_ok(&["peers", "--json"])?;
    ensure!(
        !peers.contains("192.168.56.103"),
        "a forgotten peer is listed: {peers}"
    );

    let unknown = a.agent(&["forget", "192.168.56.99"])?;
    ensure!(
        !unknown.status.success()
            && String::from_utf8_lossy(&unknown.stderr).contains("not a configured peer"),
        "forgetting a peer never configured should be refused and say so"
    );

    a.agent_ok(&["connect", "192.168.56.103"])?;
    let out = a.agent_ok(&["connect", "--replace", "192.168.56.102"])?;
    ensure!(
        configured(&out) == "192.168.56.102",
        "connect --replace said {out:?}"
    );
    wait_until(
        Duration::from_secs(5),
        "host 2 joining through the new list",
        || {
            let peers: serde_json::Value =
                serde_json::from_str(&a.agent_ok(&["peers", "--json"])?)?;
            Ok(peers.as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["address"] == "192.168.56.102" && p["state"] == "alive")
            }))
        },
    )?;
    host3_left_alone(switch, window, "connect --replace")?;
    Ok(())
}

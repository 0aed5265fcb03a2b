//! The agent's life cycle on namespace hosts: launch attaches the underlay programs (no XDP on a
//! veth, checked with the kernel), traffic moves the counters, stop leaves the pinned data path
//! running, reset removes it.

use anyhow::Result;
use weave_tests::{Host, require_root, two_hosts, unique_name, xdp_attachment};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn launch_attaches_counts_traffic_stop_keeps_it_reset_removes_it() -> Result<()> {
    require_root();
    let (a, b) = two_hosts(&unique_name("a"), &unique_name("b"))?;

    // One agent per namespace on the same machine, no flags.
    a.agent_ok(&["launch"])?;
    b.agent_ok(&["launch"])?;

    // On a veth underlay no XDP program runs (generic XDP would copy every TCP super-packet,
    // native XDP would cost the peer its TSO): the kernel lists none, and the TC program does
    // the filtering and counting instead.
    for host in [&a, &b] {
        assert_eq!(
            xdp_attachment(host, "eth0")?,
            None,
            "XDP on {}/eth0",
            host.name
        );
    }

    let status = a.status()?;
    assert_eq!(status["underlay"]["name"], "eth0");
    assert_eq!(status["underlay"]["address"], "192.168.56.101/24");
    assert_eq!(status["netns"], a.name.as_str());

    let before = a.counter_packets("underlay_rx")?;
    let ping = b.exec(
        "ping",
        &["-c", "5", "-i", "0.2", "-W", "2", "192.168.56.101"],
    )?;
    assert!(ping.status.success(), "ping failed: {}", stderr(&ping));
    let after = a.counter_packets("underlay_rx")?;
    assert!(
        after >= before + 5,
        "5 echo requests crossed a's underlay TC program but underlay_rx went {before} -> {after}"
    );

    // stop returns only once the daemon is gone and its socket with it.
    let pid = status["pid"].as_u64().expect("status has a pid");
    a.agent_ok(&["stop"])?;
    assert!(
        !a.state_dir().join("agent.sock").exists(),
        "socket left behind"
    );
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "daemon {pid} still running after stop: {state}"
    );
    let out = a.agent(&["status"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no agent running here"),
        "{}",
        stderr(&out)
    );

    // The pinned data path keeps working without the daemon...
    assert!(a.pin_dir().exists(), "pins gone after stop");
    let ping = b.exec(
        "ping",
        &["-c", "2", "-i", "0.2", "-W", "2", "192.168.56.101"],
    )?;
    assert!(ping.status.success(), "ping failed: {}", stderr(&ping));

    // ...and a relaunch adopts the pinned counters, which kept counting while it was down.
    a.agent_ok(&["launch"])?;
    assert!(
        a.counter_packets("underlay_rx")? >= after + 2,
        "the pinned program stopped counting while the agent was down"
    );

    // reset removes everything: no pins, no state.
    a.agent_ok(&["reset"])?;
    assert!(!a.pin_dir().exists(), "pins left after reset");
    assert!(!a.state_dir().exists(), "state left after reset");
    Ok(())
}

#[test]
fn commands_without_an_agent_say_how_to_start_one() -> Result<()> {
    require_root();
    let host = Host::new(&unique_name("n"))?;
    for cmd in [&["status"][..], &["stop"], &["status", "--json"]] {
        let out = host.agent(cmd)?;
        assert!(!out.status.success(), "{cmd:?} succeeded without an agent");
        assert!(
            stderr(&out).contains("no agent running here; start one with `weave-agent launch`"),
            "{cmd:?}: {}",
            stderr(&out)
        );
    }
    Ok(())
}

#[test]
fn second_launch_in_a_namespace_is_refused() -> Result<()> {
    require_root();
    let (a, _b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    a.agent_ok(&["launch"])?;
    let out = a.agent(&["launch"])?;
    assert!(!out.status.success(), "second launch succeeded");
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    // The first agent is unharmed.
    a.status()?;
    Ok(())
}

#[test]
fn ambiguous_or_unusable_underlay_is_refused_with_a_hint() -> Result<()> {
    require_root();
    let host = Host::new(&unique_name("m"))?;
    // This kernel has no dummy devices; a veth pair inside the namespace does as well.
    host.ip(["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
    for (dev, addr) in [("d0", "10.1.0.1/24"), ("d1", "10.2.0.1/24")] {
        host.ip(["addr", "add", addr, "dev", dev])?;
        host.ip(["link", "set", dev, "up"])?;
    }
    let out = host.agent(&["launch"])?;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("d0, d1") && err.contains("--iface"), "{err}");

    let out = host.agent(&["launch", "--iface", "nope0"])?;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no interface named nope0"),
        "{}",
        stderr(&out)
    );
    // Nothing was left running by the failed launches.
    assert!(!host.state_dir().join("agent.sock").exists());
    Ok(())
}

#[test]
fn every_subcommand_has_help() -> Result<()> {
    require_root();
    let bin = weave_tests::agent_bin();
    for sub in [
        "launch", "join", "run", "attach", "detach", "ps", "status", "peers", "stop", "reset",
    ] {
        let out = weave_tests::run(bin.to_str().unwrap(), [sub, "--help"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Usage: weave-agent"),
            "{sub}: {text}"
        );
    }
    let out = weave_tests::run(bin.to_str().unwrap(), ["--help"])?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("weave-agent join 192.168.56.101"));
    Ok(())
}

#[test]
fn control_socket_is_root_only_and_says_so() -> Result<()> {
    require_root();
    let (a, _b) = two_hosts(&unique_name("a"), &unique_name("b"))?;
    a.agent_ok(&["launch"])?;
    let socket = a.state_dir().join("agent.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    // As nobody: a clear permission error, promptly, not a hang.
    let out = a.agent_via(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &["status"],
    )?;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("permission denied") && err.contains("root"),
        "{err}"
    );
    Ok(())
}

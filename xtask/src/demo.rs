//! `cargo xtask demo`: the walkthrough on two namespace hosts, printed as a user would type it.

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Host, two_hosts};

use crate::{agent_path, build_agent, ebpf, progress, setup};

const HOST_A: &str = "scvmu01";
const HOST_B: &str = "scvmu02";

pub fn run() -> Result<()> {
    setup::run()?;
    ebpf::build(true)?;
    build_agent(false)?;
    // The harness drives whatever binary this names.
    // SAFETY: single-threaded here; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("WEAVE_AGENT_BIN", agent_path(false)) };

    let step = progress::step(format!(
        "demo: hosts {HOST_A} (192.168.56.101) and {HOST_B} (192.168.56.102) as network namespaces"
    ));
    let (mut a, mut b) = two_hosts(HOST_A, HOST_B).with_context(|| {
        format!(
            "creating the demo hosts; if they exist from an earlier run, remove them with \
             `ip netns del {HOST_A}; ip netns del {HOST_B}`"
        )
    })?;
    a.verbose = true;
    b.verbose = true;
    walkthrough(&a, &b)?;
    println!(
        "(join, run and cross-host containers arrive with the overlay; this demo grows with them)"
    );
    // Dropping the hosts resets their agents and deletes the namespaces.
    drop((a, b));
    step.finish();
    Ok(())
}

fn walkthrough(a: &Host, b: &Host) -> Result<()> {
    a.agent_ok(&["launch"])?;
    a.agent_ok(&["status"])?;
    b.agent_ok(&["launch"])?;
    let ping = b.exec("ping", &["-c", "3", "-i", "0.2", "192.168.56.101"])?;
    ensure!(
        ping.status.success(),
        "ping from {HOST_B} to {HOST_A} failed"
    );
    a.agent_ok(&["status"])?;
    a.agent_ok(&["stop"])?;
    b.agent_ok(&["stop"])?;
    a.agent_ok(&["reset"])?;
    b.agent_ok(&["reset"])?;
    Ok(())
}

//! `cargo xtask demo`: the walkthrough on two namespace hosts, printed as a user would type it.

use anyhow::{Context as _, Result};
use weave_tests::walkthrough;

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
        "demo: hosts {HOST_A} (192.168.56.101) and {HOST_B} (192.168.56.102) as network \
         namespaces, containers as namespaces of their own"
    ));
    let walk = walkthrough::run(HOST_A, HOST_B, true).with_context(|| {
        format!(
            "running the walkthrough; if {HOST_A}/{HOST_B} exist from an earlier run, remove \
             them with `ip netns del NAME` (`ip netns` lists them)"
        )
    })?;
    println!(
        "192.168.1.10 and 192.168.1.20 reach each other across hosts; 192.168.2.30 is isolated."
    );
    // Dropping the walkthrough deletes the containers, resets both agents and the hosts.
    drop(walk);
    step.finish();
    Ok(())
}

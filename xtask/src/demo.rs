//! `cargo xtask demo`: the walkthrough on two namespace hosts, printed as a user would type it.

use anyhow::{Context as _, Result};
use weave_tests::{docker, walkthrough};

use crate::{agent_path, build_agent, dockerd, ebpf, progress, setup};

const HOST_A: &str = "scvmu01";
const HOST_B: &str = "scvmu02";

pub fn run() -> Result<()> {
    setup::run()?;
    ebpf::build()?;
    build_agent(false)?;
    // The harness drives whatever binary this names.
    // SAFETY: single-threaded here; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("WEAVE_AGENT_BIN", agent_path(false)) };

    // Real containers when a Docker engine can run here, namespaces otherwise.
    let engine = match dockerd::ensure().and_then(|d| docker::require().map(|()| d)) {
        Ok(engine) => Some(engine),
        Err(err) => {
            eprintln!(
                "    no Docker engine could run ({err:#}); containers will be network namespaces"
            );
            None
        }
    };
    let step = progress::step(format!(
        "demo: hosts {HOST_A} (192.168.56.101) and {HOST_B} (192.168.56.102) as network \
         namespaces; containers are {}",
        if engine.is_some() {
            "real Docker containers"
        } else {
            "network namespaces of their own"
        }
    ));
    let hint = || {
        format!(
            "running the walkthrough; if {HOST_A}/{HOST_B} exist from an earlier run, remove \
             them with `ip netns del NAME` (`ip netns` lists them)"
        )
    };
    if engine.is_some() {
        let walk = walkthrough::run_docker(HOST_A, HOST_B, true).with_context(hint)?;
        drop(walk);
    } else {
        let walk = walkthrough::run(HOST_A, HOST_B, true).with_context(hint)?;
        drop(walk);
    }
    println!(
        "192.168.1.10 and 192.168.1.20 reach each other across hosts; 192.168.2.30 is isolated."
    );
    // The walkthrough removed its containers, reset both agents and deleted the hosts.
    step.finish();
    drop(engine);
    Ok(())
}

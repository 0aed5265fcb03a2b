//! A Docker engine for the tests and the demo: the one running, or one started here (and
//! stopped again when done; one that was already running is left alone).

use std::{
    fs::File,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{progress, target_dir};

pub struct Dockerd(Option<Child>);

/// How long a fresh dockerd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn answers() -> bool {
    progress::succeeds(Command::new("docker").arg("info"))
}

/// Starts dockerd unless one answers. It runs without a default bridge and without iptables
/// rules: the tests give containers their network through weave-agent, and the machine's own
/// namespace is left as it was.
pub fn ensure() -> Result<Dockerd> {
    if answers() {
        return Ok(Dockerd(None));
    }
    let step = progress::step("starting dockerd (--bridge=none --iptables=false)");
    let log_path = target_dir().join("dockerd.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new("dockerd")
        .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd (is docker.io installed? `cargo xtask setup`)")?;
    let started = Instant::now();
    while !answers() {
        if let Some(status) = child.try_wait()? {
            bail!("dockerd exited ({status}); see {}", log_path.display());
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            bail!(
                "dockerd did not answer within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    step.finish();
    Ok(Dockerd(Some(child)))
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SIGTERM lets dockerd stop its containerd and clean up its mounts.
            // SAFETY: kill(2) on a child we own.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
            eprintln!("    stopped the dockerd started for this run");
        }
    }
}

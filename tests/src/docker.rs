//! Real Docker containers for the tests and the demo: a local image (no registry is
//! reachable) and thin wrappers over the `docker` CLI, which the tests drive as a user would.

use std::{path::Path, process::Output};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{run, run_ok};

/// Image built locally from Debian's busybox-static.
pub const IMAGE: &str = "weave-test-busybox:latest";
const BUSYBOX: &str = "/bin/busybox";
/// Applets the tests use inside containers.
const APPLETS: &[&str] = &[
    "sh", "ping", "ip", "ifconfig", "sleep", "cat", "nc", "hostname",
];

/// True if a Docker engine answers.
pub fn available() -> bool {
    run("docker", ["info"]).is_ok_and(|out| out.status.success())
}

/// Fails with what to do unless a Docker engine answers, then makes sure the image exists.
pub fn require() -> Result<()> {
    ensure!(
        available(),
        "no Docker engine answers: start dockerd (`cargo xtask test` starts one if needed)"
    );
    ensure_image()
}

/// Builds [`IMAGE`] with `docker import` of a tarball holding busybox and its applet links,
/// unless it exists.
pub fn ensure_image() -> Result<()> {
    if run("docker", ["image", "inspect", IMAGE])?.status.success() {
        return Ok(());
    }
    ensure!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing: install busybox-static (`cargo xtask setup`)"
    );
    let root = std::env::temp_dir().join(format!("weave-image-{}", std::process::id()));
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    let root_str = root.to_str().context("temp dir is not UTF-8")?;
    let built = run(
        "sh",
        [
            "-c",
            &format!("tar -C '{root_str}' -c . | docker import - {IMAGE}"),
        ],
    );
    let _ = std::fs::remove_dir_all(&root);
    let out = built?;
    if !out.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `docker ARGS...`, whatever its exit status.
pub fn docker(args: &[&str]) -> Result<Output> {
    run("docker", args)
}

/// `docker ARGS...`, which must succeed; returns stdout.
pub fn docker_ok(args: &[&str]) -> Result<String> {
    run_ok("docker", args)
}

/// A container name unique to this test process; removed (`docker rm -f`) on drop.
pub struct Named(pub String);

impl Named {
    pub fn new(name: String) -> Self {
        Self(name)
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = run("docker", ["rm", "-f", &self.0]);
    }
}

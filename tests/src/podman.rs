//! Podman from Debian as a real CNI runtime: its CNI backend, storage and configuration in a
//! directory of the test's own, the weave-agent plugin installed there by `cni install`.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{Host, docker::busybox_root, run};

/// The image every Podman test runs, imported into each test's own storage.
pub const IMAGE: &str = "weave-test-busybox";

pub struct Podman {
    pub dir: PathBuf,
}

impl Podman {
    /// A fresh storage and configuration under a temporary directory, with the image in it.
    pub fn new(tag: &str) -> Result<Self> {
        ensure!(
            run("podman", ["--version"]).is_ok_and(|o| o.status.success()),
            "podman missing: install it (`cargo xtask setup`)"
        );
        let dir = std::env::temp_dir().join(format!("weave-podman-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::create_dir_all(dir.join("bin"))?;
        let podman = Self { dir };
        // The CNI backend (Podman 4.3's other one is netavark), plugins in our directory and
        // then Debian's (portmap), configurations in ours. Limits: this machine's root lacks
        // CAP_SYS_RESOURCE, and Podman would raise nofile and nproc to the kernel maximum.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{bin}\", \
             \"/usr/lib/cni\"]\nnetwork_config_dir = \"{netd}\"\n\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            bin = podman.bin_dir().display(),
            netd = podman.conf_dir().display(),
        );
        std::fs::write(podman.dir.join("containers.conf"), conf)?;
        let image = podman.dir.join("image");
        busybox_root(&image)?;
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C '{}' -c . | podman {} import - {IMAGE}",
                image.display(),
                podman.global().join(" ")
            ))
            .env("CONTAINERS_CONF", podman.dir.join("containers.conf"))
            .output()?;
        if !out.status.success() {
            bail!("podman import: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(podman)
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    fn global(&self) -> Vec<String> {
        vec![
            "--root".into(),
            self.dir.join("root").display().to_string(),
            "--runroot".into(),
            self.dir.join("runroot").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ]
    }

    /// `podman ARGS...` in `host`'s network namespace, whatever its exit status. nsenter,
    /// not `ip netns exec`: the namespaces Podman mounts for its containers must be visible
    /// to the agent, which a mount namespace of Podman's own would hide.
    pub fn run(&self, host: &Host, args: &[&str]) -> Result<Output> {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", host.name))
            .arg("podman")
            .args(self.global())
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output()
            .context("running podman")
    }

    /// [`Podman::run`], which must succeed; its stdout, trimmed.
    pub fn ok(&self, host: &Host, args: &[&str]) -> Result<String> {
        let out = self.run(host, args)?;
        ensure!(
            out.status.success(),
            "`podman {}` on {} failed: {}",
            args.join(" "),
            host.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// One field of `podman inspect` (a Go template).
    pub fn inspect(&self, host: &Host, container: &str, format: &str) -> Result<String> {
        self.ok(host, &["inspect", "--format", format, container])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers left by a failed test: removed without their network (their host's
        // agent goes with the host), then the storage.
        let _ = Command::new("podman")
            .args(self.global())
            .args(["rm", "--all", "--force", "--time", "0"])
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

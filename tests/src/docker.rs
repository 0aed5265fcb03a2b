//! Real Docker containers for the tests and the demo: a local image (no registry is
//! reachable) and thin wrappers over the `docker` CLI, which the tests drive as a user would.

use std::{path::Path, process::Output};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{run, run_ok};

/// Image built locally from Debian's busybox-static. Its tag changes with what it holds: an
/// image that exists is never rebuilt.
pub const IMAGE: &str = "weave-test-busybox:2";
const BUSYBOX: &str = "/bin/busybox";
/// Applets the tests use inside containers.
const APPLETS: &[&str] = &[
    "sh", "ping", "ip", "ifconfig", "sleep", "cat", "nc", "hostname", "nslookup",
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
    ensure_image_named(IMAGE)
}

/// Builds image `name` unless it exists. Safe to call from many tests and test binaries at
/// once: one builds, the others wait on a lock and then find the image.
pub fn ensure_image_named(name: &str) -> Result<()> {
    let exists =
        || -> Result<bool> { Ok(run("docker", ["image", "inspect", name])?.status.success()) };
    if exists()? {
        return Ok(());
    }
    let _lock = BuildLock::take(name)?;
    if exists()? {
        return Ok(());
    }
    ensure!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing: install busybox-static (`cargo xtask setup`)"
    );
    // The lock makes the directory ours alone, but a directory left by a builder that was
    // killed half-way must not stop this one.
    let root = std::env::temp_dir().join(format!("weave-image-{}", sanitize(name)));
    let _ = std::fs::remove_dir_all(&root);
    let built = tar_into_docker(&root, name);
    let _ = std::fs::remove_dir_all(&root);
    built
}

/// A root file system of Debian's busybox-static and its applet links, in `root`.
pub fn busybox_root(root: &Path) -> Result<()> {
    ensure!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing: install busybox-static (`cargo xtask setup`)"
    );
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    Ok(())
}

fn tar_into_docker(root: &Path, name: &str) -> Result<()> {
    busybox_root(root)?;
    let root_str = root.to_str().context("temp dir is not UTF-8")?;
    let out = run(
        "sh",
        [
            "-c",
            &format!("tar -C '{root_str}' -c . | docker import - {name}"),
        ],
    )?;
    if !out.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// An exclusive `flock` on a file per image name: held by one builder at a time, across the
/// threads of one test binary and across test binaries alike (each holder opens the file
/// anew, and flock locks belong to the open file). Released on drop, or when the holder dies.
struct BuildLock {
    _held: std::fs::File,
}

impl BuildLock {
    fn take(name: &str) -> Result<Self> {
        use std::os::fd::AsRawFd as _;
        let path = std::env::temp_dir().join(format!("weave-image-{}.lock", sanitize(name)));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        ensure!(
            rc == 0,
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Ok(Self { _held: file })
    }
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

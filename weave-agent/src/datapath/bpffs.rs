//! bpffs for pins that outlive the agent and that every later invocation can see.
//!
//! `ip netns exec` runs each command in a private mount namespace with a fresh sysfs on `/sys`,
//! so a bpffs mounted there vanishes with the daemon and is invisible to the next
//! `ip netns exec HOST weave-agent ...`. The processes that touch pins (the daemon, `reset`)
//! therefore first move into the host's mount namespace and use `/sys/fs/bpf` there, as any
//! program outside `ip netns exec` would.
//!
//! "The host's mount namespace" is pid 1's where we may enter it. Some sandboxes forbid even
//! root to inspect pid 1; there we take the outermost ancestor process we may inspect, which
//! is the shell or service that ran `ip netns exec` (whose mount namespace every
//! `ip netns exec` copies).

use std::{
    fs::{self, File},
    os::unix::fs::MetadataExt as _,
    path::Path,
};

use anyhow::{Context as _, Result, bail};
use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, setns},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

const BPFFS: &str = "/sys/fs/bpf";
/// Directory holding one sub-directory of pins per network namespace.
pub const PIN_ROOT: &str = "/sys/fs/bpf/weave-agent";

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

/// Moves this process into the host's mount namespace (see the module docs) and makes sure a
/// bpffs is mounted on `/sys/fs/bpf` there.
///
/// Must run while the process is single-threaded: the kernel refuses `setns` into a mount
/// namespace for a process whose threads share filesystem state.
pub fn enter_host_mount_namespace() -> Result<()> {
    if let Some((pid, ns)) = host_mount_namespace()? {
        let cwd = std::env::current_dir().ok();
        setns(&ns, CloneFlags::CLONE_NEWNS).with_context(|| {
            format!("entering the mount namespace of pid {pid} (needs CAP_SYS_ADMIN)")
        })?;
        // setns leaves us at the namespace's root; keep relative paths meaning what they did.
        if let Some(cwd) = cwd {
            let _ = std::env::set_current_dir(cwd);
        }
        tracing::debug!(pid, "entered the host mount namespace");
    }
    ensure_mounted()
}

/// The mount namespace to pin in, or None when we are already in it.
fn host_mount_namespace() -> Result<Option<(u32, File)>> {
    let own = fs::metadata("/proc/self/ns/mnt").context("reading /proc/self/ns/mnt")?;
    let mut chosen: Option<(u32, File)> = None;
    if let Ok(ns) = File::open("/proc/1/ns/mnt") {
        chosen = Some((1, ns));
    } else {
        let mut pid = std::os::unix::process::parent_id();
        while pid > 1 {
            let Ok(ns) = File::open(format!("/proc/{pid}/ns/mnt")) else {
                break;
            };
            chosen = Some((pid, ns));
            pid = parent_of(pid).unwrap_or(0);
        }
    }
    let Some((pid, ns)) = chosen else {
        return Ok(None);
    };
    let meta = ns.metadata()?;
    if (meta.dev(), meta.ino()) == (own.dev(), own.ino()) {
        return Ok(None);
    }
    Ok(Some((pid, ns)))
}

/// Parent pid from /proc/PID/stat ("pid (comm) state ppid ..."; comm may hold spaces).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn ensure_mounted() -> Result<()> {
    let target = Path::new(BPFFS);
    if is_bpffs(target) {
        return Ok(());
    }
    mount(
        Some("bpf"),
        target,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .context("mounting bpffs on /sys/fs/bpf")?;
    if !is_bpffs(target) {
        bail!("mounted bpffs on {BPFFS} but it still is not bpffs");
    }
    tracing::info!("mounted bpffs on {BPFFS}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_self_is_our_parent() {
        let me = std::process::id();
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }
}

//! Where this network namespace's agent keeps its socket, state and pins.
//!
//! One agent runs per network namespace, so every default path is keyed by the namespace:
//! its `ip netns` name when it has one, `default` for the initial namespace, `netns-<inode>`
//! otherwise. `ip netns exec HOST weave-agent status` then finds HOST's agent without flags.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::datapath::bpffs;

/// Root of the per-namespace state directories.
const STATE_ROOT: &str = "/run/weave-agent";
/// Root of what must outlive a reboot (the address allocations), per namespace.
const DATA_ROOT: &str = "/var/lib/weave-agent";
/// Where `ip netns add` keeps its named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

#[derive(Debug, Clone)]
pub struct Location {
    /// Name of the network namespace this process runs in.
    pub netns: String,
    pub state_dir: PathBuf,
    /// What survives a reboot, which empties /run: the address allocations. The state
    /// directory itself when one is given.
    pub data_dir: PathBuf,
    /// Directory on the host's bpffs holding our pins (see `bpffs`).
    pub pin_dir: PathBuf,
}

impl Location {
    pub fn resolve(state_dir: Option<PathBuf>) -> Result<Self> {
        let netns = current_netns_name()?;
        let data_dir = match &state_dir {
            Some(dir) => dir.clone(),
            None => Path::new(DATA_ROOT).join(&netns),
        };
        let state_dir = state_dir.unwrap_or_else(|| Path::new(STATE_ROOT).join(&netns));
        let pin_dir = Path::new(bpffs::PIN_ROOT).join(&netns);
        Ok(Self {
            netns,
            state_dir,
            data_dir,
            pin_dir,
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }

    /// Held (flock) by the running daemon for its whole life, so only one runs per namespace.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("agent.lock")
    }

    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }

    /// The address allocations and this host's view of who owns the range (`ipam`).
    pub fn ipam_file(&self) -> PathBuf {
        self.data_dir.join("ipam.json")
    }

    pub fn create_state_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.state_dir)
            .with_context(|| format!("creating state directory {}", self.state_dir.display()))
    }
}

/// (device, inode) of a namespace file: equal pairs mean the same namespace.
fn ns_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Both namespace files (or any files) are the same one; false if either cannot be read.
pub fn same_namespace(a: &Path, b: &Path) -> bool {
    matches!((ns_identity(a), ns_identity(b)), (Ok(a), Ok(b)) if a == b)
}

fn current_netns_name() -> Result<String> {
    let own = ns_identity(Path::new("/proc/self/ns/net"))
        .context("reading /proc/self/ns/net (is /proc mounted?)")?;
    let init = ns_identity(Path::new("/proc/1/ns/net")).ok();
    let named = fs::read_dir(NETNS_RUN_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let id = ns_identity(&entry.path()).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), id))
        });
    Ok(name_for(own, init, named))
}

fn name_for(
    own: (u64, u64),
    init: Option<(u64, u64)>,
    mut named: impl Iterator<Item = (String, (u64, u64))>,
) -> String {
    if let Some((name, _)) = named.find(|(_, id)| *id == own) {
        return name;
    }
    if init == Some(own) {
        return "default".to_owned();
    }
    format!("netns-{}", own.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_namespace_wins() {
        let named = vec![("a".to_owned(), (4, 10)), ("b".to_owned(), (4, 11))];
        assert_eq!(name_for((4, 11), Some((4, 1)), named.into_iter()), "b");
    }

    #[test]
    fn initial_namespace_is_default() {
        assert_eq!(
            name_for((4, 1), Some((4, 1)), std::iter::empty()),
            "default"
        );
    }

    #[test]
    fn anonymous_namespace_uses_inode() {
        assert_eq!(
            name_for((4, 77), Some((4, 1)), std::iter::empty()),
            "netns-77"
        );
    }
}

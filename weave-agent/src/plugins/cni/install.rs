//! `cni install` and `cni uninstall`: the plugin binary and a network configuration list
//! where runtimes look for them, the plugin chained with the reference `portmap` plugin for
//! host ports, as Weave Net's configuration does.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

/// The file name runtimes find the plugin by: a configuration's `type`.
pub const PLUGIN_NAME: &str = "weave-agent";

/// What to write.
#[derive(Debug, Clone)]
pub struct Install {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// The network's name (`podman run --network NAME`).
    pub network: String,
    /// Allocate in this subnet instead of the agent's default one.
    pub subnet: Option<String>,
    /// Chain `portmap` for host ports.
    pub portmap: bool,
}

impl Install {
    pub fn conflist_path(&self) -> PathBuf {
        // Runtimes take the lexically first file as the default network: 10- leaves room
        // before and after.
        self.conf_dir.join(format!("10-{}.conflist", self.network))
    }

    pub fn plugin_path(&self) -> PathBuf {
        self.bin_dir.join(PLUGIN_NAME)
    }
}

/// The network configuration list.
pub fn conflist(install: &Install) -> Value {
    let mut plugin = json!({ "type": PLUGIN_NAME });
    if let Some(subnet) = &install.subnet {
        plugin["ipam"] = json!({ "type": PLUGIN_NAME, "subnet": subnet });
    }
    let mut plugins = vec![plugin];
    if install.portmap {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
    json!({
        "cniVersion": "1.0.0",
        "name": install.network,
        "plugins": plugins,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a runtime
/// never reads (or executes) half a file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().context("a file path has a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("moving {} into place", path.display()))
}

/// Copies this binary in as the plugin (unless it is that file already) and writes the
/// configuration list. Returns the two paths.
pub fn install(install: &Install) -> Result<(PathBuf, PathBuf)> {
    let me = std::env::current_exe().context("finding this binary")?;
    let plugin = install.plugin_path();
    let same = fs::canonicalize(&plugin).is_ok_and(|p| fs::canonicalize(&me).is_ok_and(|m| m == p));
    if !same {
        let bytes = fs::read(&me).with_context(|| format!("reading {}", me.display()))?;
        write_atomically(&plugin, &bytes, 0o755)?;
    }
    let conflist_path = install.conflist_path();
    let text = serde_json::to_string_pretty(&conflist(install))? + "\n";
    write_atomically(&conflist_path, text.as_bytes(), 0o644)?;
    Ok((plugin, conflist_path))
}

/// Removes what [`install`] wrote; returns what was there.
pub fn uninstall(install: &Install) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in [install.conflist_path(), install.plugin_path()] {
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("removing {}", path.display()));
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install(subnet: Option<&str>, portmap: bool) -> Install {
        Install {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dir: "/opt/cni/bin".into(),
            network: "weave".into(),
            subnet: subnet.map(str::to_owned),
            portmap,
        }
    }

    #[test]
    fn the_list_chains_portmap_after_the_plugin() {
        let list = conflist(&install(None, true));
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(list["name"], "weave");
        assert_eq!(list["plugins"][0], json!({"type": "weave-agent"}));
        assert_eq!(list["plugins"][1]["type"], "portmap");
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
        // The plugin's own reading of it: the default subnet.
        let conf: rscni_plugin::types::NetConf = serde_json::from_value(json!({
            "cniVersion": list["cniVersion"], "name": list["name"],
            "type": list["plugins"][0]["type"]
        }))
        .unwrap();
        assert_eq!(
            super::super::config::ask(&conf, None).unwrap().addresses,
            ""
        );
    }

    #[test]
    fn a_subnet_goes_in_the_ipam_section_and_portmap_can_be_left_out() {
        let list = conflist(&install(Some("10.32.1.0/24"), false));
        assert_eq!(list["plugins"].as_array().unwrap().len(), 1);
        assert_eq!(list["plugins"][0]["ipam"]["subnet"], "10.32.1.0/24");
        assert_eq!(
            install(None, true).conflist_path(),
            PathBuf::from("/etc/cni/net.d/10-weave.conflist")
        );
    }

    #[test]
    fn install_writes_both_and_uninstall_takes_them_back() {
        let dir = std::env::temp_dir().join(format!("weave-cni-install-{}", std::process::id()));
        let it = Install {
            conf_dir: dir.join("net.d"),
            bin_dir: dir.join("bin"),
            ..install(None, true)
        };
        let (plugin, list) = super::install(&it).unwrap();
        assert!(fs::metadata(&plugin).unwrap().permissions().mode() & 0o111 != 0);
        let read: Value = serde_json::from_str(&fs::read_to_string(&list).unwrap()).unwrap();
        assert_eq!(read, conflist(&it));
        assert_eq!(uninstall(&it).unwrap().len(), 2);
        assert!(uninstall(&it).unwrap().is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}

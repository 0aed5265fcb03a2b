//! The CNI plugin (spec 1.1.0, 1.0.0, 0.4.0 and 0.3.x): the `weave-agent` binary itself,
//! run by a container runtime with `CNI_COMMAND` set and no arguments, as `type:
//! "weave-agent"` in a network configuration (`cni install` writes one). The spec's
//! mechanics (environment, stdin, version negotiation, each version's result layout, error
//! objects) are `rscni-plugin`'s; `config` reads what an invocation asks for and builds the
//! result; `plugin` asks the agent; `install` puts the binary and a configuration in place.

pub mod config;
pub mod install;
mod plugin;

use std::{io::Read as _, os::fd::AsRawFd as _, process::ExitCode, str::FromStr as _};

use rscni_plugin::{
    cni::Plugin,
    version::{PluginInfo, SpecVersion},
};

/// A runtime's invocation: `CNI_COMMAND` set and no arguments (a person typing `weave-agent`
/// gives a subcommand).
pub fn invoked() -> bool {
    std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some()
}

/// Runs the operation the runtime asked for. The result, or the spec's error object, is on
/// stdout, written by `rscni-plugin`.
pub fn run() -> ExitCode {
    // Every version whose result layout rscni-plugin writes.
    let versions = PluginInfo::default().supported_versions().to_vec();
    // The spec wants an error object to carry the configuration's cniVersion; rscni-plugin
    // writes its own "current" one there, so that is made the configuration's (when it is
    // one this plugin speaks) before it reads stdin again.
    let current = match refeed_stdin() {
        Ok(Some(version)) if versions.contains(&version) => version,
        _ => SpecVersion::CURRENT,
    };
    let plugin = Plugin::new(current, versions)
        .msg("weave-agent CNI plugin: containers on the weave-agent network");
    match plugin.run(&plugin::WeavePlugin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// Reads the whole configuration from stdin, puts it back as stdin (a pipe fed by a thread,
/// so a configuration larger than a pipe's buffer cannot block), and returns its cniVersion.
fn refeed_stdin() -> std::io::Result<Option<SpecVersion>> {
    let mut config = Vec::new();
    std::io::stdin().read_to_end(&mut config)?;
    let version = serde_json::from_slice::<serde_json::Value>(&config)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .and_then(|v| SpecVersion::from_str(&v).ok());
    let (reader, writer) = std::io::pipe()?;
    // SAFETY: dup2 onto fd 0 with a descriptor this process owns; the old stdin is done.
    if unsafe { libc::dup2(reader.as_raw_fd(), libc::STDIN_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(reader);
    std::thread::spawn(move || {
        let mut writer = writer;
        let _ = std::io::Write::write_all(&mut writer, &config);
    });
    Ok(version)
}

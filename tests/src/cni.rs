//! Driving the CNI plugin as a runtime does: the `weave-agent` binary run in a host's
//! namespace with the `CNI_*` environment and a network configuration on stdin.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use crate::{Host, agent_bin};

/// One invocation's environment.
pub struct Invocation<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    /// The container's namespace file; empty for none (a DEL after the namespace went).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
}

/// What the plugin printed and how it exited.
pub struct Answer {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// stdout as JSON (a result, a version document, or an error object).
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "the plugin printed no JSON: {:?} ({})",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs the plugin on `host` as a runtime would.
pub fn invoke(host: &Host, call: &Invocation<'_>, config: &Value) -> Result<Answer> {
    invoke_plugin(host, &agent_bin(), call, config)
}

/// Runs the plugin `bin` (this one, or a reference plugin) on `host` as a runtime would.
pub fn invoke_plugin(
    host: &Host,
    bin: &std::path::Path,
    call: &Invocation<'_>,
    config: &Value,
) -> Result<Answer> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.name])
        .arg(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the plugin")?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(serde_json::to_string(config)?.as_bytes())?;
    let out: Output = child.wait_with_output()?;
    Ok(Answer {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn is_cidr(text: &str) -> bool {
    text.parse::<ipnet::IpNet>().is_ok()
}

/// Checks an ADD result against the spec's rules for `version` (SPEC.md "Success", and for
/// 0.3.x/0.4.0 its `ips[].version`): the keys each version requires, their types, and that
/// every `ips[].interface` indexes `interfaces`.
pub fn validate_result(version: &str, result: &Value) -> Result<()> {
    ensure!(
        result["cniVersion"] == version,
        "cniVersion {} in a {version} result",
        result["cniVersion"]
    );
    let legacy = version.starts_with("0.");
    let interfaces = result["interfaces"]
        .as_array()
        .context("no interfaces list")?;
    for i in interfaces {
        ensure!(i["name"].is_string(), "an interface without a name: {i}");
        if let Some(mac) = i.get("mac") {
            let mac = mac.as_str().context("mac is not a string")?;
            ensure!(
                mac.split(':').count() == 6
                    && mac.split(':').all(|b| u8::from_str_radix(b, 16).is_ok()),
                "mac {mac:?}"
            );
        }
        if let Some(sandbox) = i.get("sandbox") {
            ensure!(sandbox.is_string(), "sandbox {sandbox}");
        }
    }
    let ips = result["ips"].as_array().context("no ips list")?;
    ensure!(!ips.is_empty(), "no address in {result}");
    for ip in ips {
        let address = ip["address"].as_str().context("an ip without address")?;
        ensure!(is_cidr(address), "address {address:?} is no CIDR");
        match ip.get("interface") {
            None => {}
            Some(index) => {
                let index = index.as_u64().context("interface is not an index")?;
                ensure!(
                    (index as usize) < interfaces.len(),
                    "interface {index} of {} interfaces",
                    interfaces.len()
                );
            }
        }
        if legacy {
            ensure!(
                ip["version"] == "4" || ip["version"] == "6",
                "a {version} result's ips need \"version\": {ip}"
            );
        } else {
            ensure!(
                ip.get("version").is_none(),
                "1.0.0 dropped ips[].version: {ip}"
            );
        }
        if let Some(gw) = ip.get("gateway") {
            ensure!(
                gw.as_str()
                    .is_some_and(|g| g.parse::<std::net::IpAddr>().is_ok()),
                "gateway {gw}"
            );
        }
    }
    if let Some(routes) = result.get("routes") {
        for r in routes.as_array().context("routes is not a list")? {
            ensure!(r["dst"].as_str().is_some_and(is_cidr), "route {r}");
        }
    }
    if let Some(ns) = result.get("dns").and_then(|d| d.get("nameservers")) {
        for n in ns.as_array().context("nameservers is not a list")? {
            ensure!(
                n.as_str()
                    .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok()),
                "nameserver {n}"
            );
        }
    }
    Ok(())
}

/// Checks an error object (SPEC.md "Error"): its version, a numeric code, a message.
pub fn validate_error(version: &str, error: &Value, code: u64) -> Result<()> {
    ensure!(
        error["cniVersion"] == version,
        "error cniVersion in {error}"
    );
    ensure!(
        error["code"] == code,
        "code {} (wanted {code}): {error}",
        error["code"]
    );
    ensure!(
        error["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "an error without msg: {error}"
    );
    Ok(())
}

//! The benchmark's reference for the encrypted path: two hosts joined by WireGuard in
//! userspace, `boringtun-cli` (Cloudflare's boringtun) on a TUN device in each, configured
//! through its UAPI socket with Debian's `wg`. The kernel here has no WireGuard module, so this
//! is the userspace WireGuard a user of this machine would reach for.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use weave_tests::{Segment, unique_name, wait_until};

/// WireGuard's UDP port on each host.
const PORT: &str = "51820";

pub struct BoringtunBed {
    pub seg: Segment,
    names: [String; 2],
}

/// A fresh WireGuard key pair (private, public), base64, from `wg`.
fn key_pair() -> Result<(String, String)> {
    let private = weave_tests::run_ok("wg", ["genkey"])?.trim().to_owned();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running wg pubkey (cargo xtask bench installs wireguard-tools)")?;
    child
        .stdin
        .take()
        .context("piped")?
        .write_all(private.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "wg pubkey failed");
    Ok((private, String::from_utf8(out.stdout)?.trim().to_owned()))
}

impl BoringtunBed {
    /// Host 1 is 10.30.0.1 on its tunnel, host 2 10.30.0.2; returns once a ping crosses.
    pub fn new() -> Result<Self> {
        let seg = Segment::new(&unique_name("bt"), 2)?;
        let tag = std::process::id() % 100_000;
        let names = [format!("wgb{tag}a"), format!("wgb{tag}b")];
        let bed = Self { seg, names };
        let keys = [key_pair()?, key_pair()?];
        for (i, host) in bed.seg.hosts.iter().enumerate() {
            // It daemonizes once its UAPI socket is up; without dropping privileges, since it
            // runs as root inside a namespace and must keep the TUN device.
            let out = host.exec(
                "boringtun-cli",
                &["--disable-drop-privileges", &bed.names[i]],
            )?;
            ensure!(
                out.status.success(),
                "boringtun-cli {} failed: {}",
                bed.names[i],
                String::from_utf8_lossy(&out.stderr)
            );
            let socket = format!("/var/run/wireguard/{}.sock", bed.names[i]);
            wait_until(Duration::from_secs(5), "boringtun's UAPI socket", || {
                Ok(std::path::Path::new(&socket).exists())
            })?;
        }
        for (i, host) in bed.seg.hosts.iter().enumerate() {
            let other = 1 - i;
            let key_file = std::env::temp_dir().join(format!("{}.key", bed.names[i]));
            std::fs::write(&key_file, &keys[i].0)?;
            let set = host.exec(
                "wg",
                &[
                    "set",
                    &bed.names[i],
                    "private-key",
                    key_file.to_str().context("temp path")?,
                    "listen-port",
                    PORT,
                    "peer",
                    &keys[other].1,
                    "endpoint",
                    &format!("192.168.56.10{}:{PORT}", other + 1),
                    "allowed-ips",
                    &format!("10.30.0.{}/32", other + 1),
                ],
            );
            let _ = std::fs::remove_file(&key_file);
            ensure!(set?.status.success(), "wg set {} failed", bed.names[i]);
            host.ip([
                "addr",
                "add",
                &format!("10.30.0.{}/24", i + 1),
                "dev",
                &bed.names[i],
            ])?;
            host.ip(["link", "set", &bed.names[i], "up"])?;
        }
        let c = &bed.seg.hosts[1];
        wait_until(Duration::from_secs(10), "a ping over boringtun", || {
            Ok(c.exec("ping", &["-c", "1", "-W", "1", "10.30.0.1"])?
                .status
                .success())
        })?;
        Ok(bed)
    }

    /// Client on host 2, server on host 1's tunnel address.
    pub fn path(&self) -> (String, String, String) {
        (
            self.seg.hosts[0].name.clone(),
            self.seg.hosts[1].name.clone(),
            "10.30.0.1".into(),
        )
    }
}

impl Drop for BoringtunBed {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("pkill")
                .args([
                    "-f",
                    &format!("boringtun-cli --disable-drop-privileges {name}$"),
                ])
                .status();
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}

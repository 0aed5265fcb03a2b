//! `cargo xtask setup`: installs what the build and the tests need, skipping what is there.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{
    ebpf::{self, Route},
    progress::{self, step},
};

/// What the tests and the demo run: namespaces and links, ping, throughput, bpftool for
/// inspecting programs, busybox for container images, and the Docker engine (dockerd,
/// containerd, runc, tini) that `run` and the walkthrough's containers need. A machine may ship a
/// `docker` client alone (this project's image does): the engine comes from docker.io.
const RUNTIME_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "iperf3",
    "bpftool",
    "busybox-static",
    "docker.io",
    // nft: firewalls and NAT the tests build inside namespaces (a router container).
    "nftables",
    // The tests' crafted frames, captures and TCP bulk senders and sinks are small Python
    // programs run inside namespaces; a minimal Debian root has no python3.
    "python3",
    // tcpdump: the encryption tests capture what crosses the switch, as an eavesdropper would.
    "tcpdump",
    // dnsmasq: the upstream resolver the DNS tests forward to, run inside a namespace (the
    // package's own service is never started by the tests).
    "dnsmasq-base",
    // podman with its CNI backend: the real CNI runtime the plugin's tests drive; the
    // reference plugins (portmap, which `cni install` chains, and bridge + host-local, the
    // bench's reference) come from containernetworking-plugins. Podman's own dependencies
    // (conmon, golang-github-containers-image, ...) come with it; its recommends (buildah,
    // fuse-overlayfs, slirp4netns, uidmap) are not needed: rootful, vfs storage, CNI.
    "podman",
    "containernetworking-plugins",
];
/// What building bpf-linker against LLVM 22 needs (the nightly's LLVM is 22).
const LINKER_BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// eBPF route 2: Debian's rustc with a prebuilt `core` for bpfel.
const DEBIAN_ROUTE_PACKAGES: &[&str] = &["rustc-web", "libstd-rust-web-dev-bpf"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Installs everything; returns the eBPF compile route that will be used.
pub fn run() -> Result<Route> {
    let step = step("setup: checking and installing build and test dependencies");
    let mut apt = Apt::default();
    apt.ensure(RUNTIME_PACKAGES)?;
    ensure_cargo_components()?;
    ensure_bpf_linker(&mut apt)?;
    let route = ensure_ebpf_route(&mut apt)?;
    step.note(format!("eBPF compile route: {}", route.describe()));
    step.finish();
    Ok(route)
}

/// apt-get, run as few times as possible: `update` only once and only if something is missing.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn missing(packages: &[&str]) -> Vec<String> {
        packages
            .iter()
            .filter(|p| {
                let status =
                    progress::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]));
                !status.is_some_and(|s| s.contains("install ok installed"))
            })
            .map(|p| (*p).to_owned())
            .collect()
    }

    fn ensure(&mut self, packages: &[&str]) -> Result<()> {
        let missing = Self::missing(packages);
        if missing.is_empty() {
            return Ok(());
        }
        let step = step(format!("apt-get install {}", missing.join(" ")));
        if !self.updated {
            progress::run(Command::new("apt-get").args(["update", "-qq"]))
                .context("apt-get update (setup must run as root)")?;
            self.updated = true;
        }
        progress::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        step.finish();
        Ok(())
    }
}

fn ensure_cargo_components() -> Result<()> {
    let have = |sub: &str| progress::succeeds(crate::cargo().args([sub, "--version"]));
    if have("fmt") && have("clippy") {
        return Ok(());
    }
    let step = step("rustup component add rustfmt clippy");
    progress::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))?;
    step.finish();
    Ok(())
}

/// The benchmark's reference for the encrypted path: userspace WireGuard (`boringtun-cli`),
/// configured with Debian's `wg`.
const BENCH_PACKAGES: &[&str] = &["wireguard-tools"];
const BORINGTUN_CLI_VERSION: &str = "0.7.1";

/// What `cargo xtask bench` alone needs on top of [`run`]'s: wireguard-tools and boringtun-cli.
pub fn ensure_bench_tools() -> Result<()> {
    Apt::default().ensure(BENCH_PACKAGES)?;
    let ok = || {
        progress::output(Command::new("boringtun-cli").arg("--version"))
            .is_some_and(|v| v.trim() == format!("boringtun {BORINGTUN_CLI_VERSION}"))
    };
    if ok() {
        return Ok(());
    }
    let step = step(format!(
        "cargo install boringtun-cli {BORINGTUN_CLI_VERSION} (a few minutes)"
    ));
    progress::run(crate::cargo().args([
        "install",
        "boringtun-cli",
        "--locked",
        "--version",
        BORINGTUN_CLI_VERSION,
    ]))?;
    if !ok() {
        bail!(
            "boringtun-cli installed but `boringtun-cli --version` does not answer; is ~/.cargo/bin on PATH?"
        );
    }
    step.finish();
    Ok(())
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz for `cargo xtask fuzz` (and the short fuzz runs of `cargo xtask test`).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let ok = || {
        progress::output(crate::cargo().args(["fuzz", "--version"]))
            .is_some_and(|v| v.trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}"))
    };
    if ok() {
        return Ok(());
    }
    let step = step(format!(
        "cargo install cargo-fuzz {CARGO_FUZZ_VERSION} (under a minute)"
    ));
    progress::run(crate::cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    if !ok() {
        bail!(
            "cargo-fuzz installed but `cargo fuzz --version` does not answer; is ~/.cargo/bin on PATH?"
        );
    }
    step.finish();
    Ok(())
}

fn bpf_linker_ok() -> bool {
    progress::output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.trim() == format!("bpf-linker {BPF_LINKER_VERSION}"))
}

fn ensure_bpf_linker(apt: &mut Apt) -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    apt.ensure(LINKER_BUILD_PACKAGES)?;
    let step = step(format!(
        "cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"
    ));
    // llvm-sys finds LLVM through LLVM_SYS_221_PREFIX, bpf-linker's own build script through
    // LLVM_PREFIX; without both it may pick up another llvm-config on PATH and fail to link.
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    progress::run(
        crate::cargo()
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )?;
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker installed but `bpf-linker --version` does not answer; is ~/.cargo/bin on PATH?"
        );
    }
    step.finish();
    Ok(())
}

fn ensure_ebpf_route(apt: &mut Apt) -> Result<Route> {
    if let Some(route) = ebpf::detect() {
        return Ok(route);
    }
    // Route 1: the rustup nightly with rust-src (build-std=core).
    if progress::succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        let step = step("rustup component add rust-src --toolchain nightly");
        if progress::succeeds(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ])) {
            step.finish();
            if let Some(route) = ebpf::detect() {
                return Ok(route);
            }
        }
    }
    // Route 2: Debian's rustc with a prebuilt core for bpfel; needs no download but apt.
    apt.ensure(DEBIAN_ROUTE_PACKAGES)?;
    ebpf::detect().context(
        "no eBPF toolchain works: neither the rustup nightly with rust-src nor Debian's \
         rustc-web with libstd-rust-web-dev-bpf (both need LLVM 22 to match bpf-linker)",
    )
}

//! `cargo xtask fuzz`: runs the cargo-fuzz targets in weave-agent/fuzz (the parsers that face
//! gossip peers, the data port's sealed datagrams and the control socket), each for a number
//! of inputs, and reports the counts.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{
    ebpf::{self, Route},
    progress::{self, step},
    root, setup,
};

pub const TARGETS: &[&str] = &[
    "gossip_plain",
    "gossip_sealed",
    "control_request",
    "references",
    "sealed_datagram",
    "dns_query",
];

/// libFuzzer limits: a leak of memory or one huge allocation is a finding, not a slow run.
const LIMITS: &[&str] = &["-rss_limit_mb=1024", "-malloc_limit_mb=256"];

/// `cargo xtask fuzz`: setup, then each of `targets` (all when empty) for `runs` inputs.
pub fn run(runs: u64, targets: &[String]) -> Result<()> {
    let route = setup::run()?;
    run_with(route, runs, targets)
}

/// Each of `targets` (all when empty) for `runs` inputs, on a machine already set up for
/// `route`.
pub fn run_with(route: Route, runs: u64, targets: &[String]) -> Result<()> {
    setup::ensure_cargo_fuzz()?;
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for target in &targets {
        if !TARGETS.contains(target) {
            bail!(
                "no fuzz target {target:?}; there are {}",
                TARGETS.join(", ")
            );
        }
    }

    let build = step("building the fuzz targets, instrumented (about 5 minutes the first time)");
    progress::run(&mut cargo_fuzz(route, "build"))?;
    build.finish();
    for target in targets {
        let step = step(format!("fuzz {target}: {runs} inputs"));
        let out = cargo_fuzz(route, "run")
            .args([target, "--"])
            .arg(format!("-runs={runs}"))
            .args(LIMITS)
            .output()
            .with_context(|| format!("starting cargo fuzz run {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("    {line}");
            }
            bail!(
                "fuzz target {target} failed ({}); the input is in weave-agent/fuzz/artifacts/{target}/",
                out.status
            );
        }
        let done = log
            .lines()
            .find(|l| l.starts_with("Done "))
            .with_context(|| format!("cargo fuzz run {target} printed no summary"))?;
        step.note(match route {
            Route::Nightly => format!("{done}; no crash, no leak, no allocation over the limits"),
            // Without a sanitizer libFuzzer still catches panics and the RSS limit, not leaks
            // or single huge allocations.
            Route::DebianRustcWeb => format!("{done}; no crash, RSS within the limit"),
        });
        step.finish();
    }
    Ok(())
}

/// `cargo fuzz SUBCOMMAND` with the compiler of the eBPF route: rustup's nightly with
/// AddressSanitizer, or Debian's rustc (unstable flags allowed) without a sanitizer, whose
/// runtime it does not ship.
fn cargo_fuzz(route: Route, subcommand: &str) -> Command {
    let mut cmd = match route {
        Route::Nightly => {
            let mut cmd = crate::nested("rustup");
            cmd.args(["run", "nightly", "cargo", "fuzz", subcommand]);
            cmd
        }
        Route::DebianRustcWeb => {
            let mut cmd = crate::cargo();
            cmd.args(["fuzz", subcommand, "--sanitizer", "none"])
                .env("RUSTC", ebpf::DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1");
            cmd
        }
    };
    cmd.current_dir(root().join("weave-agent"));
    cmd
}

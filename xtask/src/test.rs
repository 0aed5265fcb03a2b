//! `cargo xtask test`: from a bare machine to every check CI runs.

use anyhow::{Result, ensure};

use crate::{agent_path, build_agent, dockerd, ebpf, fuzz, progress, setup};

/// Inputs per fuzz target in a test run (seconds each; `cargo xtask fuzz` runs 10 million).
const SHORT_FUZZ_RUNS: u64 = 20_000;

pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "`cargo xtask test` installs packages and makes network namespaces: run it as root"
    );
    let route = setup::run()?;
    ebpf::build()?;

    let step = progress::step("cargo fmt --check");
    progress::run(crate::cargo().args(["fmt", "--all", "--", "--check"]))?;
    step.finish();

    let step = progress::step("cargo clippy --all-targets -- -D warnings");
    progress::run(crate::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    step.finish();

    // A short run of each fuzz target: the long runs are `cargo xtask fuzz`.
    fuzz::run_with(route, SHORT_FUZZ_RUNS, &[])?;

    build_agent(false)?;
    let totals = {
        // Stopped (if started here) before the closing line, which must come last.
        let _dockerd = dockerd::ensure()?;
        let step = progress::step("cargo test (unit and integration tests)");
        let totals = progress::run_counting_tests(
            crate::cargo()
                // Every test binary runs, so one failure does not hide the others' results.
                .args(["test", "--no-fail-fast"])
                .env("WEAVE_AGENT_BIN", agent_path(false)),
        )?;
        if totals.failed == 0 {
            step.finish();
        }
        totals
    };
    // One closing line for the whole run, however many test binaries cargo ran.
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    ensure!(totals.failed == 0, "{} tests failed", totals.failed);
    ensure!(totals.passed > 0, "no test ran");
    Ok(())
}

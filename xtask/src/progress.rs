//! Progress lines for long steps: what is happening, then how long it took.

use std::{
    io::{BufRead as _, BufReader},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

/// Prints `==> what` now, then `what: done in Ns` after [`Step::finish`], or
/// `what: failed after Ns` if it is dropped unfinished (an early `?` return).
pub struct Step {
    what: String,
    started: Instant,
    done: bool,
}

pub fn step(what: impl Into<String>) -> Step {
    let what = what.into();
    eprintln!("==> {what}");
    Step {
        what,
        started: Instant::now(),
        done: false,
    }
}

impl Step {
    pub fn note(&self, text: impl AsRef<str>) {
        eprintln!("    {}", text.as_ref());
    }

    /// Marks the step as finished successfully.
    pub fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        let secs = self.started.elapsed().as_secs_f32();
        if self.done {
            eprintln!("    {}: done in {secs:.1}s", self.what);
        } else {
            eprintln!("    {}: failed after {secs:.1}s", self.what);
        }
    }
}

/// Runs a command with inherited output, failing with the command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    ensure!(status.success(), "{shown} failed ({status})");
    Ok(())
}

/// Passed and failed tests summed over every `test result:` line of a cargo test run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    pub passed: u64,
    pub failed: u64,
}

impl TestTotals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, passing its output through, and sums its results. A failing run is
/// not an error here: the totals say what failed.
pub fn run_counting_tests(cmd: &mut Command) -> Result<TestTotals> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut totals = TestTotals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() && totals.failed == 0 {
        bail!("{shown} failed ({status}) before reporting test results");
    }
    Ok(totals)
}

/// Runs a command quietly; true if it ran and exited 0.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stdout of a command that ran and exited 0.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_cargo_result_lines() {
        let mut totals = TestTotals::default();
        for line in [
            "test result: ok. 13 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "running 2 tests",
            "test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.29s",
        ] {
            totals.add_line(line);
        }
        assert_eq!(
            totals,
            TestTotals {
                passed: 18,
                failed: 1
            }
        );
    }
}

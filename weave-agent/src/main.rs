//! weave-agent: containers on different hosts on one virtual network, forwarded in the kernel.

use std::{io::IsTerminal as _, process::ExitCode};

use clap::Parser as _;
use weave_agent::cli;

fn main() -> ExitCode {
    // A container runtime runs the binary as its CNI plugin: the spec, not clap, reads it.
    if weave_agent::plugins::cni::invoked() {
        return weave_agent::plugins::cni::run();
    }
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weave-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEAVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(weave_agent::control::log_file::StderrLog)
        // The daemon's stderr is its log file: no colour codes there.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

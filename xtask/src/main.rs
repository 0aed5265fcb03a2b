//! `cargo xtask ...`: everything from a brand-new machine to a tested agent.

mod bench;
mod demo;
mod dnsprobe;
mod dockerd;
mod ebpf;
mod fuzz;
mod netprobe;
mod progress;
mod setup;
mod test;
mod wireguard;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "weave-agent project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need (apt packages, bpf-linker, an eBPF toolchain).
    /// Idempotent; quick when everything is present.
    Setup,
    /// Compile weave-ebpf for bpfel-unknown-none into target/ebpf/weave-ebpf.o (always
    /// optimised: the verifier rejects unoptimised eBPF).
    BuildEbpf,
    /// build-ebpf, then the weave-agent binary that embeds the object.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// setup, build-ebpf, fmt, clippy, unit and integration tests (needs root).
    Test,
    /// Fuzz the parsers facing gossip peers and the control socket (cargo fuzz).
    Fuzz {
        /// Inputs per target.
        #[arg(long, default_value_t = 10_000_000)]
        runs: u64,
        /// Targets to run (default: all).
        targets: Vec<String>,
    },
    /// The walkthrough on namespace hosts scvmu01/scvmu02, printed as a user would type it.
    Demo,
    /// Overlay vs bare underlay vs kernel VXLAN + bridge, control-plane timings, the DNS
    /// server against dnsmasq and an 8 x 50 scale run; writes target/bench/overlay.json.
    Bench {
        /// Run one part only (scale alone writes target/bench/scale.json).
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
        /// Also measure this weave-agent binary (an earlier build, say) as the path
        /// `weave_reference`, in the same rounds as this tree's: before and after on one
        /// machine at one time.
        #[arg(long, value_name = "PATH")]
        reference: Option<std::path::PathBuf>,
    },
    #[command(hide = true)]
    RrServer { addr: std::net::SocketAddr },
    #[command(hide = true)]
    RrClient {
        addr: std::net::SocketAddr,
        count: usize,
    },
    #[command(hide = true)]
    UdpEcho { port: u16 },
    #[command(hide = true)]
    Probe { addr: std::net::SocketAddr },
    #[command(hide = true)]
    DnsLoad {
        server: std::net::SocketAddr,
        name: String,
        expect: std::net::Ipv4Addr,
        count: usize,
        window: usize,
    },
    #[command(hide = true)]
    DnsWait {
        server: std::net::SocketAddr,
        name: String,
        #[arg(value_parser = ["present", "absent"])]
        way: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run().map(|_| ()),
        Task::BuildEbpf => ebpf::build().map(|_| ()),
        Task::Build { release } => ebpf::build().and_then(|_| build_agent(release)),
        Task::Test => test::run(),
        Task::Fuzz { runs, targets } => fuzz::run(runs, &targets),
        Task::Demo => demo::run(),
        Task::Bench { only, reference } => bench::run(only, reference),
        Task::RrServer { addr } => netprobe::rr_server(addr),
        Task::RrClient { addr, count } => netprobe::rr_client(addr, count),
        Task::UdpEcho { port } => netprobe::udp_echo(port),
        Task::Probe { addr } => netprobe::probe(addr, std::time::Duration::from_secs(10)),
        Task::DnsLoad {
            server,
            name,
            expect,
            count,
            window,
        } => dnsprobe::load(server, &name, expect, count, window),
        Task::DnsWait { server, name, way } => dnsprobe::wait(
            server,
            &name,
            way == "present",
            std::time::Duration::from_secs(10),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask's manifest lives one level below it).
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Path of the agent binary `build_agent` produces.
fn agent_path(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("weave-agent")
}

fn build_agent(release: bool) -> anyhow::Result<()> {
    let step = progress::step("building weave-agent");
    let mut cargo = cargo();
    cargo.args(["build", "-p", "weave-agent"]);
    if release {
        cargo.arg("--release");
    }
    progress::run(&mut cargo)?;
    step.finish();
    Ok(())
}

/// The same `cargo` that runs this xtask, for nested builds.
fn cargo() -> std::process::Command {
    nested(std::env::var_os("CARGO").unwrap_or("cargo".into()))
}

/// A command run at the workspace root, free of the toolchain variables the outer
/// `cargo xtask` set for itself (they would pin nested builds to the wrong rustc).
fn nested(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.current_dir(root());
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

//! `cargo xtask build-ebpf`: compiles weave-ebpf for bpfel-unknown-none.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    progress::{self, step},
    target_dir,
};

const TARGET: &str = "bpfel-unknown-none";
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// How weave-ebpf gets compiled on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// rustup's nightly building `core` from rust-src (`-Z build-std=core`).
    Nightly,
    /// Debian's rustc-web with its prebuilt `core` for bpfel (`RUSTC_BOOTSTRAP=1`).
    DebianRustcWeb,
}

impl Route {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Nightly => "rustup nightly + rust-src (cargo +nightly -Z build-std=core)",
            Self::DebianRustcWeb => {
                "Debian rustc-web + libstd-rust-web-dev-bpf (RUSTC=/usr/bin/rustc)"
            }
        }
    }
}

/// rustc's LLVM must be the LLVM bpf-linker was built against (22).
fn llvm_22(version_verbose: &str) -> bool {
    version_verbose
        .lines()
        .any(|l| l.starts_with("LLVM version: 22."))
}

/// The first route whose pieces are all present; installs nothing.
/// `WEAVE_EBPF_ROUTE=nightly|debian` restricts the choice to one route (to test both).
pub fn detect() -> Option<Route> {
    let only = std::env::var("WEAVE_EBPF_ROUTE").ok();
    let allowed = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let nightly = allowed("nightly")
        && progress::output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
            .is_some_and(|v| llvm_22(&v))
        && progress::output(Command::new("rustup").args([
            "component",
            "list",
            "--toolchain",
            "nightly",
            "--installed",
        ]))
        .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")));
    if nightly {
        return Some(Route::Nightly);
    }
    let debian = allowed("debian")
        && progress::output(Command::new(DEBIAN_RUSTC).arg("-vV")).is_some_and(|v| llvm_22(&v))
        && progress::output(Command::new(DEBIAN_RUSTC).args(["--print", "sysroot"]))
            .map(|root| PathBuf::from(root.trim()).join("lib/rustlib").join(TARGET))
            .is_some_and(|dir| dir.is_dir());
    debian.then_some(Route::DebianRustcWeb)
}

/// Builds the eBPF object and places it at target/ebpf/weave-ebpf.o, where weave-agent's build
/// script embeds it from. Returns that path.
///
/// Always the release profile: in a debug build, `core` and `compiler_builtins` keep their
/// debug assertions, and one out-of-line `memset` ending in a panic call is enough for the
/// verifier to reject a program ("last insn is not an exit or jmp").
pub fn build() -> Result<PathBuf> {
    let route = detect().context(
        "no eBPF toolchain found (nightly with rust-src, or Debian's rustc-web): run \
         `cargo xtask setup` first",
    )?;
    let profile = "release";
    let step = step(format!(
        "building weave-ebpf ({profile}) with {}",
        route.describe()
    ));
    let mut cargo = match route {
        // Through rustup: $CARGO is the stable toolchain's own cargo, which has no `+nightly`.
        Route::Nightly => {
            let mut cmd = crate::nested("rustup");
            cmd.args(["run", "nightly", "cargo", "build", "-Z", "build-std=core"]);
            cmd
        }
        Route::DebianRustcWeb => {
            let mut cmd = crate::cargo();
            cmd.arg("build")
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1");
            cmd
        }
    };
    cargo.args(["-p", "weave-ebpf", "--target", TARGET, "--release"]);
    progress::run(&mut cargo)?;

    let built = target_dir().join(TARGET).join(profile).join("weave-ebpf");
    let object = target_dir().join("ebpf").join("weave-ebpf.o");
    let bytes = fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    // Rewriting an unchanged object would make cargo rebuild weave-agent for nothing.
    if fs::read(&object).ok().as_ref() != Some(&bytes) {
        fs::create_dir_all(object.parent().expect("has a parent"))?;
        fs::write(&object, &bytes).with_context(|| format!("writing {}", object.display()))?;
    }
    step.note(format!("{} ({} bytes)", object.display(), bytes.len()));
    step.finish();
    Ok(object)
}

//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so the installed binary is
//! self-contained. Without the object the build stops with a message naming the command.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    println!("cargo::rustc-check-cfg=cfg(weave_ebpf_missing)");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("..").join("target"));
    let object = target_dir.join("ebpf").join("weave-ebpf.o");
    // A missing file counts as changed, so cargo re-checks until `build-ebpf` has run.
    println!("cargo::rerun-if-changed={}", object.display());
    if object.is_file() {
        println!("cargo::rustc-env=WEAVE_EBPF_OBJECT={}", object.display());
    } else {
        println!("cargo::rustc-cfg=weave_ebpf_missing");
    }
}

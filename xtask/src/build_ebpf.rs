//! `cargo xtask build-ebpf`: builds the eBPF object the way aya-build does, in target/ebpf.
use std::process::{Command, ExitCode};

use crate::{cargo, project};

/// The eBPF crate's binary target: the object the agent loads.
const EBPF_OBJECT: &str = "safeclaw";

pub fn run() -> anyhow::Result<ExitCode> {
    project::setup()?;
    // `rustup run` rather than `cargo +nightly`: xtask's CARGO is the stable toolchain's own binary.
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "build", "--release", "--package", "safeclaw-ebpf", "--bins"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(project::target_dir().join("ebpf"))
        // The flags aya-build passes, so this object matches the one embedded in the agent.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(project::root());
    let object = cargo::find_executable(cargo::build_executables(command, "the eBPF object")?, EBPF_OBJECT)?;
    println!("{}", object.display());
    Ok(ExitCode::SUCCESS)
}

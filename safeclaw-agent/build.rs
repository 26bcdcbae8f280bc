//! Builds the eBPF object with nightly so that `cargo build -p safeclaw-agent` embeds it: the build
//! aya-build runs, kept quiet. aya-build turns every line of the nested cargo's output into a
//! `warning:` (hundreds for `-Z build-std=core`); here that output is held back and shown only when
//! the build fails, and only the eBPF crate's own compiler warnings are passed on.
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// The eBPF crate, and its binary: the object `kernel::loader` embeds from OUT_DIR.
const PACKAGE: &str = "safeclaw-ebpf";
const OBJECT: &str = "safeclaw";

fn main() -> anyhow::Result<()> {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("safeclaw-agent has no parent directory")?;
    let ebpf = root.join(PACKAGE);
    println!("cargo:rerun-if-changed={}", ebpf.display());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let endian = std::env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN is not set")?;
    let target = if endian == "big" { "bpfeb-unknown-none" } else { "bpfel-unknown-none" };
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH is not set")?;
    let arch = if arch.starts_with("riscv64") { "riscv64".to_owned() } else { arch };

    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo", "build", "--package", PACKAGE, "--bins", "--release", "--quiet"])
        .args(["--message-format=json", "--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(ebpf_target_dir(&out_dir))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The nightly toolchain's own rustc, not the one this build runs with.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        command.spawn().context("cannot run `rustup run nightly cargo`; run `bash xtask/setup.sh`")?;
    let mut stderr = child.stderr.take().context("stderr not captured")?;
    let held_back = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut object = None;
    for line in BufReader::new(child.stdout.take().context("stdout not captured")?).lines() {
        let message: serde_json::Value = match serde_json::from_str(&line?) {
            Ok(message) => message,
            Err(_) => continue,
        };
        match message["reason"].as_str() {
            Some("compiler-artifact") if message["target"]["name"] == OBJECT => {
                object = message["executable"].as_str().map(PathBuf::from);
            }
            Some("compiler-message")
                if message["target"]["name"] == OBJECT || message["target"]["name"] == "safeclaw_ebpf" =>
            {
                for line in message["message"]["rendered"].as_str().unwrap_or_default().lines() {
                    println!("cargo:warning={line}");
                }
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the eBPF build")?;
    let held_back = held_back.join().unwrap_or_default();
    if !status.success() {
        eprintln!("{held_back}");
        bail!(
            "building the eBPF programs failed ({status}); the nested cargo's output is above. \
               `bash xtask/setup.sh` installs nightly rust-src and bpf-linker"
        );
    }
    let object = object.context("the eBPF build reported no `safeclaw` object")?;
    std::fs::copy(&object, out_dir.join(OBJECT))
        .with_context(|| format!("cannot copy {} into OUT_DIR", object.display()))?;
    Ok(())
}

/// Where the nested cargo builds: `ebpf` in the workspace's target directory (the ancestor of OUT_DIR
/// that cargo marks with CACHEDIR.TAG), where `cargo xtask build-ebpf` builds with the same flags. Each
/// profile and feature set of safeclaw-agent has its own OUT_DIR, but the eBPF object is the same for
/// all of them; one directory lets the nested cargo find it fresh instead of building `core` and the
/// programs again (about 35 s each on two cores). Concurrent builds wait on the nested cargo's lock.
/// Without the marker (an unusual layout), the build stays in OUT_DIR.
fn ebpf_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| out_dir.join("aya-build").join("target").join(PACKAGE), |target| target.join("ebpf"))
}

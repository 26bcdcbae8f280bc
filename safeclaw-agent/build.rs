//! Builds the eBPF object with nightly (via aya-build) so that `cargo build -p safeclaw-agent` embeds it.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("safeclaw-agent has no parent directory")?
        .join("safeclaw-ebpf");
    let root = root.to_str().context("non-UTF-8 path to safeclaw-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "safeclaw-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs failed; run `bash xtask/setup.sh` to install nightly rust-src and bpf-linker")
}

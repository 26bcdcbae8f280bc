//! Development tasks: building the eBPF object, the VM harness, tests and benchmarks.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no task yet")
}

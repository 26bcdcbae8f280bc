//! `cargo xtask bench`: the in-VM open()+close() benchmark (no programs / outside / inside the agent
//! cgroup, interleaved in one boot), appended to docs/benchmarks.md with the date, kernel, host CPU and
//! the exact command. A failed run appends nothing: no partial table is ever written as if complete.
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::vm::{Ending, Kernel, Vm};
use crate::{cargo, project};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Kernel to measure on.
    #[arg(long, value_enum, default_value_t = Kernel::V6_12)]
    kernel: Kernel,
    /// Measured rounds (configurations rotate their order each round).
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// open()+close() pairs per configuration and round.
    #[arg(long, default_value_t = 20_000)]
    iterations: u32,
    /// Print the results without appending them to docs/benchmarks.md.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    project::setup()?;
    let mut build = cargo::cargo();
    build.args(["build", "--release", "--package", "safeclaw-integration", "--bin", "safeclaw-bench"]);
    let bench = cargo::find_executable(cargo::build_executables(build, "safeclaw-bench")?, "safeclaw-bench")?;
    let command = vec![
        bench.display().to_string(),
        "--rounds".into(),
        args.rounds.to_string(),
        "--iterations".into(),
        args.iterations.to_string(),
    ];
    let mut vm = Vm::new(args.kernel, command);
    vm.timeout = Duration::from_secs(1800);
    let finished = vm.boot()?;
    if finished.ending != Ending::Exited(0) {
        bail!(
            "the benchmark did not complete ({}); nothing was written to docs/benchmarks.md",
            finished.ending
        );
    }
    let table: Vec<&String> = finished.transcript.iter().filter(|line| !line.starts_with('[')).collect();
    if !table.iter().any(|line| line.starts_with("| (c)")) {
        bail!("the benchmark printed no result table; nothing was written to docs/benchmarks.md");
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let date = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output()?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let path = project::root().join("docs/benchmarks.md");
    let mut doc = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(
        doc,
        "\n### open()+close() in the VM, {} ({})\n\nHost: {cpu}, {cores} cores; guest: QEMU TCG, 1 vCPU. \
         Command: `cargo xtask bench --kernel {} --rounds {} --iterations {}`.\n",
        String::from_utf8_lossy(&date.stdout).trim(),
        args.kernel.name(),
        args.kernel.name(),
        args.rounds,
        args.iterations
    )?;
    for line in table {
        writeln!(doc, "{line}")?;
    }
    println!("xtask: appended the results to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

//! `cargo xtask bench`: SafeClaw against auditd and fapolicyd in one VM boot (tests/src/bin/safeclaw-bench),
//! appended to docs/benchmarks.md with the date, kernel, host CPU and the exact command. A failed or
//! incomplete run appends nothing: no partial table is ever written as if complete.
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::vm::{Ending, Kernel, Vm};
use crate::{cargo, project};

/// The guest prints the tables between these lines; both must be present.
const RESULTS: &str = "safeclaw-bench: results";
const COMPLETE: &str = "safeclaw-bench: complete";

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Kernel to measure on.
    #[arg(long, value_enum, default_value_t = Kernel::V6_12)]
    kernel: Kernel,
    /// Tiny sizes (1 round, a 4,000-open burst): proves the harness runs, measures nothing worth publishing.
    #[arg(long)]
    quick: bool,
    /// Rounds instead of the default (5; 1 with --quick).
    #[arg(long)]
    rounds: Option<u32>,
    /// Guest vCPUs: with 2, the daemons' userspace work runs beside the measured process instead of
    /// being charged to it.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    cpus: u8,
    /// Print the results without appending them to docs/benchmarks.md.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    project::setup()?;
    for (program, package) in [("/usr/sbin/auditd", "auditd"), ("/usr/sbin/fapolicyd", "fapolicyd")] {
        if !std::path::Path::new(program).exists() {
            bail!("peer package `{package}` is not installed ({program} is missing); `cargo xtask setup` installs it");
        }
    }
    let agent = cargo::build_release_agent()?;
    let mut build = cargo::cargo();
    build.args(["build", "--release", "--package", "safeclaw-integration", "--bin", "safeclaw-bench"]);
    let bench = cargo::find_executable(cargo::build_executables(build, "safeclaw-bench")?, "safeclaw-bench")?;
    let mut command = vec![bench.display().to_string()];
    let mut shown = format!("cargo xtask bench --kernel {} --cpus {}", args.kernel.name(), args.cpus);
    if args.quick {
        command.push("--quick".into());
        shown.push_str(" --quick");
    }
    if let Some(rounds) = args.rounds {
        command.extend(["--rounds".into(), rounds.to_string()]);
        shown.push_str(&format!(" --rounds {rounds}"));
    }
    let mut vm = Vm::new(args.kernel, command);
    vm.timeout = Duration::from_secs(if args.quick { 900 } else { 3600 });
    vm.cpus = args.cpus;
    // The burst's audit log (about 700 MB for 1,000,000 entries) lives on the guest's tmpfs.
    vm.mem = "3G".parse().map_err(|e: String| anyhow::anyhow!(e))?;
    vm.env = vec![("SAFECLAW_AGENT_BIN".to_owned(), agent.to_string_lossy().into_owned())];
    let finished = vm.boot().context("the benchmark VM failed; nothing was written to docs/benchmarks.md")?;
    if finished.ending != Ending::Exited(0) {
        bail!(
            "the benchmark did not complete ({}); nothing was written to docs/benchmarks.md",
            finished.ending
        );
    }
    let table = results(&finished.transcript)?;
    if args.dry_run || args.quick {
        println!(
            "xtask: {} run: docs/benchmarks.md left unchanged",
            if args.quick { "quick" } else { "dry" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let date = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output()?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let path = project::root().join("docs/benchmarks.md");
    let mut doc = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(
        doc,
        "\n### SafeClaw, auditd and fapolicyd in one VM boot, {} ({})\n\nHost: {cpu}, {cores} cores, load average \
         {} at the end; guest: QEMU TCG, {} vCPU(s). Command: `{shown}`.\n",
        String::from_utf8_lossy(&date.stdout).trim(),
        args.kernel.name(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        args.cpus,
    )?;
    for line in table {
        writeln!(doc, "{line}")?;
    }
    println!("xtask: appended the results to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The lines between the results marker and the completion marker; an error if either is missing.
fn results(transcript: &[String]) -> anyhow::Result<Vec<&String>> {
    let start = transcript.iter().position(|l| l == RESULTS);
    let end = transcript.iter().position(|l| l == COMPLETE);
    match (start, end) {
        (Some(start), Some(end)) if start < end => Ok(transcript[start + 1..end].iter().collect()),
        _ => {
            bail!("the benchmark printed no complete result table; nothing was written to docs/benchmarks.md")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn only_a_complete_table_is_taken() {
        let done =
            lines("boot noise\nsafeclaw-bench: results\n| a |\n| b |\nsafeclaw-bench: complete\nafter");
        assert_eq!(results(&done).unwrap(), vec!["| a |", "| b |"]);
        let cut = lines("safeclaw-bench: results\n| a |");
        assert!(results(&cut).is_err(), "a run that stopped mid-table must not be written");
        assert!(results(&lines("| a |")).is_err());
        let reversed = lines("safeclaw-bench: complete\nsafeclaw-bench: results\n| a |");
        assert!(results(&reversed).is_err());
    }
}

//! Development tasks: tool setup, the eBPF build, the QEMU test VM, the test suite, the demo and benchmarks.
mod bench;
mod build_ebpf;
mod cargo;
mod native;
mod package;
mod package_test;
mod process;
mod project;
mod run;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status when xtask itself fails (as opposed to a command it ran), as `git bisect run` reads it.
const HARNESS_FAILURE: u8 = 125;
/// Exit status after Ctrl-C or SIGTERM, as shells report a SIGINT death.
const INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "SafeClaw development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the packages, toolchains and kernels the other tasks need (xtask/setup.sh).
    Setup,
    /// Build the eBPF object with nightly and print its path.
    BuildEbpf,
    /// Boot a Debian kernel under QEMU on the host's userland and run one command there.
    Vm(vm::VmArgs),
    /// Run the unit tests natively and the integration tests in a VM per kernel.
    Test(test::TestArgs),
    /// Build everything, then enforce on the host if it can load BPF LSM programs, else run the demo in a VM.
    Run(run::RunArgs),
    /// Measure open()+close() with and without SafeClaw in one VM boot; append to docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Build the Debian package (binary, systemd unit, policies, man pages, completions) in target/package.
    Package(package::PackageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    process::stop_on_interrupt();
    let result = match cli.task {
        Task::Setup => project::setup().map(|()| ExitCode::SUCCESS),
        Task::BuildEbpf => build_ebpf::run(),
        Task::Vm(args) => vm::run(args),
        Task::Test(args) => test::run(args),
        Task::Run(args) => run::run(args),
        Task::Bench(args) => bench::run(args),
        Task::Package(args) => package::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::from(if process::interrupted() { INTERRUPTED } else { HARNESS_FAILURE })
        }
    }
}

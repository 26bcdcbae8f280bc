//! `cargo xtask test`: unit and property tests natively, then every integration test binary in one VM per
//! kernel, ending with the line `N passed, M failed` summed over all of them.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cargo::{self, Executable};
use crate::native;
use crate::process;
use crate::project;
use crate::vm::{Ending, Kernel, Vm};

/// Runs each test binary given as an argument, one test at a time, and brackets each with lines that
/// tell the host which binary finished and how. What a binary leaves behind (processes still running a
/// minute after it exits, BPF pins) would disturb every binary after it: it is named, counted as a
/// failure of that binary, and removed.
const RUN_EACH: &str = r#"status=0
state=/run/safeclaw-vm
# Every exec from the shared directory (virtiofs without a cache) reads the binary's pages again, about
# 0.1 s for the agent: the tests run a copy in the guest's memory.
mkdir -p $state/bin && cp "$SAFECLAW_AGENT_BIN" $state/bin/safeclaw-agent || {
    echo "safeclaw-test: cannot run: copying the agent $SAFECLAW_AGENT_BIN into $state/bin failed"
    exit 1
}
export SAFECLAW_AGENT_BIN=$state/bin/safeclaw-agent
ps -eo pid= | tr -d ' ' >$state/before
# Processes started since the first binary, less kernel threads and this shell's own children (ps, awk).
left_behind() {
    ps -eo pid=,ppid=,args= | awk -v shell=$$ 'NR == FNR { before[$1]; next }
        !($1 in before) && $2 != shell && $3 !~ /^\[/ { $2 = ""; print }' $state/before -
}
for test in "$@"; do
    echo "safeclaw-test: running $test"
    "$test" --test-threads=1
    code=$?
    echo "safeclaw-test: exited $code $test"
    [ "$code" -eq 0 ] || status=1
    waited=0
    while left_behind >$state/left && [ -s $state/left ] && [ $waited -lt 60 ]; do
        sleep 1
        waited=$((waited + 1))
    done
    while read -r pid args; do
        echo "safeclaw-test: left behind by $test: process $pid: $args"
        kill -9 "$pid" 2>/dev/null
        status=1
    done <$state/left
    for pin in /sys/fs/bpf/*; do
        [ -e "$pin" ] || continue
        echo "safeclaw-test: left behind by $test: pin $pin"
        rm -rf "$pin"
        status=1
    done
done
exit $status"#;
const RUNNING: &str = "safeclaw-test: running ";
const EXITED: &str = "safeclaw-test: exited ";
const LEFT_BEHIND: &str = "safeclaw-test: left behind by ";
/// The script could not run the binaries at all; the line says why.
const CANNOT_RUN: &str = "safeclaw-test: cannot run: ";

#[derive(clap::Args)]
pub struct TestArgs {
    /// Run the VM tests on this kernel only (default: 6.1 and 6.12, side by side).
    #[arg(long)]
    kernel: Option<Kernel>,
    /// Seconds each VM may run before it is killed and counted as a failure.
    #[arg(long, default_value_t = 2700)]
    timeout: u64,
    /// Run only the VM test binaries with these names (e.g. `escape`; `package` for the package
    /// tests), and skip the native tests.
    /// For development: CI runs everything.
    #[arg(long = "only", value_name = "TEST")]
    only: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// One line of the summary: a native run or a VM run, with why it failed when the counts cannot say.
struct Suite {
    name: String,
    tally: Tally,
    notes: Vec<String>,
    elapsed: Duration,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    project::setup()?;
    let all = args.only.is_empty();
    let with_package = all || args.only.iter().any(|name| name == PACKAGE_SUITE);
    let only: Vec<String> = args.only.iter().filter(|name| *name != PACKAGE_SUITE).cloned().collect();
    let with_vm = all || !only.is_empty();
    // Everything is built first, the native tests (debug) beside the release builds for the guests:
    // each cargo leaves a core idle for part of its time (a large crate compiling alone, a build
    // script). Then the host's own tests run while the guests do.
    let (native, vm_build) = std::thread::scope(|scope| {
        let native = all.then(|| scope.spawn(build_native_tests));
        let vm_build = with_vm
            .then(|| build_vm_tests().and_then(|(agent, tests)| Ok((agent, select_tests(tests, &only)?))));
        let native = native.map(|handle| {
            handle.join().unwrap_or_else(|_| Err("the thread building the native tests panicked".to_owned()))
        });
        (native, vm_build)
    });
    interruption_check()?;
    let host_tests = move || -> Vec<Suite> {
        let mut suites: Vec<Suite> = native.into_iter().map(run_native_tests).collect();
        if with_package && !process::interrupted() {
            suites.push(package_tests());
        }
        suites
    };
    let Some(vm_build) = vm_build else {
        let total = print_summary(&host_tests());
        return Ok(if total.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    };
    let kernels = args.kernel.map_or_else(|| Kernel::ALL.to_vec(), |kernel| vec![kernel]);
    let mut suites = Vec::new();
    match vm_build {
        Ok((agent, tests)) => {
            // One guest per kernel, side by side: each is a single emulated CPU. The host's tests fill
            // the time the guests leave the host's CPUs idle (a guest waits for RCU grace periods at
            // every daemon stop, and its tests for their agents).
            let timeout = Duration::from_secs(args.timeout);
            let parallel = kernels.len() > 1;
            let runs: Vec<anyhow::Result<Suite>> = std::thread::scope(|scope| {
                let handles: Vec<_> = kernels
                    .iter()
                    .map(|&kernel| {
                        let agent = &agent;
                        let tests = if only.is_empty() { for_kernel(&tests, kernel) } else { tests.clone() };
                        scope.spawn(move || vm_tests(kernel, agent, &tests, timeout, parallel))
                    })
                    .collect();
                suites = host_tests();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the VM thread panicked")))
                    })
                    .collect()
            });
            for (run, kernel) in runs.into_iter().zip(&kernels) {
                let mut suite = run?;
                if only.is_empty() {
                    let elsewhere = ONE_KERNEL.iter().filter(|(_, on)| on != kernel);
                    suite.notes.extend(elsewhere.map(|(name, on)| format!("{name}: on {on} only")));
                }
                suites.push(suite);
            }
        }
        Err(err) => {
            interruption_check()?;
            suites = host_tests();
            for kernel in kernels {
                let notes = vec![format!("not run: {err:#}")];
                suites.push(Suite {
                    name: format!("vm {kernel}"),
                    tally: Tally { passed: 0, failed: 1 },
                    notes,
                    elapsed: Duration::ZERO,
                });
            }
        }
    }
    interruption_check()?;
    let total = print_summary(&suites);
    Ok(if total.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn interruption_check() -> anyhow::Result<()> {
    if process::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// The native test binaries of every crate that runs on the host, or why they could not be built.
fn build_native_tests() -> Result<Vec<Executable>, String> {
    let mut command = cargo::cargo();
    command.args(["test", "--workspace", "--exclude", "safeclaw-ebpf", "--exclude", "safeclaw-integration"]);
    command.arg("--no-run");
    cargo::build_executables(command, "the native tests")
        .map(|built| built.into_iter().filter(|executable| executable.is_test).collect())
        .map_err(|err| format!("{err:#}"))
}

/// Unit and property tests of every crate that runs on the host, several binaries at a time, with all
/// failures reported (no fail-fast).
fn run_native_tests(built: Result<Vec<Executable>, String>) -> Suite {
    let started = Instant::now();
    let tests = match built {
        Ok(tests) => tests,
        Err(err) => {
            return Suite {
                name: "native".to_owned(),
                tally: Tally { passed: 0, failed: 1 },
                notes: vec![err],
                elapsed: started.elapsed(),
            };
        }
    };
    // One binary per core, and one more for the waits on real servers; each binary runs its own tests
    // on several threads, so more would only make timing-bound tests slower.
    let jobs = std::thread::available_parallelism().map_or(2, |cores| cores.get() + 1);
    let mut tally = Tally::default();
    let mut notes = Vec::new();
    for finished in native::run_all(tests, jobs) {
        let counted =
            finished.output.lines().filter_map(libtest_result).fold(Tally::default(), |mut sum, one| {
                sum.add(one);
                sum
            });
        tally.add(counted);
        let output: Vec<String> = finished.output.lines().map(str::to_owned).collect();
        notes.extend(failed_tests(&finished.name, &output));
        match finished.success {
            None => {
                tally.failed += 1;
                notes.push(format!("{} could not be started", finished.name));
            }
            Some(false) if counted.failed == 0 => {
                tally.failed += 1;
                notes.push(format!("{} failed without a failing test (did it crash?)", finished.name));
            }
            Some(_) => {}
        }
    }
    Suite { name: "native".to_owned(), tally, notes, elapsed: started.elapsed() }
}

/// `--only package` runs the package tests alone.
const PACKAGE_SUITE: &str = "package";

/// The Debian package's tests (crate::package_test), on the host: one count per check.
fn package_tests() -> Suite {
    let started = Instant::now();
    let outcomes = match cargo::build_release_agent() {
        Ok(agent) => crate::package_test::run(&agent),
        Err(e) => vec![("package builds", Err(e))],
    };
    let mut tally = Tally::default();
    let mut notes = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                tally.passed += 1;
                println!("package test {name} ... ok");
            }
            Err(e) => {
                tally.failed += 1;
                println!("package test {name} ... FAILED: {e:#}");
                notes.push(format!("{name}: {e:#}"));
            }
        }
    }
    Suite { name: "package".to_owned(), tally, notes, elapsed: started.elapsed() }
}

/// The release agent and the integration test binaries, built on the host for the guest to run.
fn build_vm_tests() -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let agent = cargo::build_release_agent()?;
    let mut command = cargo::cargo();
    command.args(["test", "--release", "--package", "safeclaw-integration", "--no-run"]);
    let tests = cargo::build_executables(command, "the integration tests")?
        .into_iter()
        .filter(|executable| executable.is_test)
        .map(|Executable { path, .. }| path)
        .collect();
    Ok((agent, tests))
}

/// The test binaries named by `--only` (cargo names them `NAME-HASH`), or all of them when none is named.
fn select_tests(tests: Vec<PathBuf>, only: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if only.is_empty() {
        return Ok(tests);
    }
    let selected: Vec<PathBuf> =
        tests.iter().filter(|test| only.contains(&binary_name(test))).cloned().collect();
    for name in only {
        if !selected.iter().any(|test| binary_name(test) == *name) {
            let known: Vec<String> = tests.iter().map(|test| binary_name(test)).collect();
            bail!("--only {name}: no such integration test binary (there are: {})", known.join(", "));
        }
    }
    Ok(selected)
}

/// The test binary's name without cargo's hash (`escape` for `escape-0123abcd`).
fn binary_name(path: &Path) -> String {
    let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    file.rsplit_once('-').map_or(file.clone(), |(name, _hash)| name.to_owned())
}

/// VM test binaries whose subject does not depend on the kernel, each run on one kernel only (unless
/// named by `--only`), split so that the two guests take about as long and CI stays short: the audit
/// format's vectors and the reports read a log the daemon wrote; the agent CLIs' hooks talk to the
/// daemon's tool socket (the kernel hooks their commands reach are tested on both kernels by the
/// other binaries); the bench smoke test checks the bench harness; the demo replays decisions the
/// escape suite and the workload test make on both; Prometheus reads the daemon's counters; the ring's
/// backpressure is the daemon's and the cgroup freezer's.
const ONE_KERNEL: [(&str, Kernel); 7] = [
    ("vectors_vm", Kernel::V6_1),
    ("ring_backpressure", Kernel::V6_1),
    ("report", Kernel::V6_1),
    ("agent_hooks", Kernel::V6_1),
    ("demo", Kernel::V6_12),
    ("metrics", Kernel::V6_12),
    ("bench_smoke", Kernel::V6_12),
];

/// The binaries of `tests` that run on `kernel`.
fn for_kernel(tests: &[PathBuf], kernel: Kernel) -> Vec<PathBuf> {
    tests
        .iter()
        .filter(|test| {
            let name = binary_name(test);
            ONE_KERNEL.iter().all(|(one, on)| *one != name || *on == kernel)
        })
        .cloned()
        .collect()
}

fn vm_tests(
    kernel: Kernel,
    agent: &Path,
    tests: &[PathBuf],
    timeout: Duration,
    labelled: bool,
) -> anyhow::Result<Suite> {
    let name = format!("vm {kernel}");
    println!("xtask: running {} integration test binaries in the {kernel} VM", tests.len());
    // Fresh for each run, so that files from an earlier run cannot pass for this one's.
    let out = project::target_dir().join("vm-test").join(kernel.name());
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    let mut command = vec!["sh".to_owned(), "-c".to_owned(), RUN_EACH.to_owned(), "run-each".to_owned()];
    command.extend(tests.iter().map(|test| test.to_string_lossy().into_owned()));
    let mut vm = Vm::new(kernel, command);
    vm.timeout = timeout;
    vm.out = Some(out.clone());
    if labelled {
        vm.label = format!("[{kernel}] ");
    }
    vm.env = vec![
        ("SAFECLAW_AGENT_BIN".to_owned(), agent.to_string_lossy().into_owned()),
        ("SAFECLAW_TEST_OUT".to_owned(), out.to_string_lossy().into_owned()),
        ("RUST_BACKTRACE".to_owned(), "1".to_owned()),
    ];
    let started = Instant::now();
    let finished = match vm.boot() {
        Ok(finished) => finished,
        Err(err) if process::interrupted() => return Err(err),
        Err(err) => {
            let notes = vec![format!("the VM failed: {err:#}")];
            return Ok(Suite {
                name,
                tally: Tally { passed: 0, failed: 1 },
                notes,
                elapsed: started.elapsed(),
            });
        }
    };
    let (tally, mut notes) = tally_vm_run(&finished.transcript, tests.len(), &finished.ending);
    notes.push(format!("booted in {:.1} s", finished.boot_time.as_secs_f64()));
    Ok(Suite { name, tally, notes, elapsed: finished.elapsed })
}

/// Counts the results the guest printed; a binary that crashed, or never finished, counts as one failure.
fn tally_vm_run(transcript: &[String], binaries: usize, ending: &Ending) -> (Tally, Vec<String>) {
    let mut tally = Tally::default();
    let mut notes = Vec::new();
    let mut failed_in_binary = 0;
    let mut finished = 0;
    let mut last_left_behind = None;
    let mut binary_lines: Vec<String> = Vec::new();
    for line in transcript {
        binary_lines.push(line.clone());
        if let Some(rest) = line.strip_prefix(LEFT_BEHIND) {
            let (path, what) = rest.split_once(": ").unwrap_or((rest, ""));
            let binary = Path::new(path).file_name().map_or(path.into(), |name| name.to_string_lossy());
            if last_left_behind.as_deref() != Some(path) {
                tally.failed += 1;
                last_left_behind = Some(path.to_owned());
            }
            notes.push(format!("{binary} left behind {what}"));
        } else if let Some(why) = line.strip_prefix(CANNOT_RUN) {
            notes.push(why.to_owned());
        } else if let Some(result) = libtest_result(line) {
            tally.add(result);
            failed_in_binary += result.failed;
        } else if line.starts_with(RUNNING) {
            failed_in_binary = 0;
            binary_lines.clear();
        } else if let Some(rest) = line.strip_prefix(EXITED) {
            finished += 1;
            let (code, path) = rest.split_once(' ').unwrap_or((rest, ""));
            let binary = Path::new(path).file_name().map_or(path.into(), |name| name.to_string_lossy());
            notes.extend(failed_tests(&binary, &binary_lines));
            if code != "0" && failed_in_binary == 0 {
                tally.failed += 1;
                notes.push(format!("{binary} exited with {code} without a failing test (did it crash?)"));
            }
        }
    }
    if finished < binaries {
        let missing = binaries - finished;
        tally.failed += u64::try_from(missing).unwrap_or(u64::MAX);
        notes.push(format!("{missing} test binaries did not finish: {ending}"));
    } else if *ending != Ending::Exited(0) && tally.failed == 0 {
        tally.failed += 1;
        notes.push(format!("the test script failed: {ending}"));
    }
    (tally, notes)
}

/// Lines of a failed test's panic message the summary repeats from its start and from its end: the
/// start names the assertion, the end holds the cause (the last lines of a child's stderr, an error
/// chain).
const PANIC_HEAD_LINES: usize = 3;
const PANIC_TAIL_LINES: usize = 8;

/// One note per failed test of a binary: its name and its panic message, shortened to its first and
/// last lines, so that a log cut to its tail (CI shows only the end) still says what failed and why.
fn failed_tests(binary: &str, output: &[String]) -> Vec<String> {
    let mut notes = Vec::new();
    let mut lines = output.iter().map(|line| strip_ansi(line));
    while let Some(line) = lines.next() {
        let Some(test) = line.trim().strip_prefix("---- ").and_then(|rest| rest.strip_suffix(" stdout ----"))
        else {
            continue;
        };
        let mut message = Vec::new();
        let mut panic_seen = false;
        let mut in_backtrace = false;
        for line in lines.by_ref() {
            let trimmed = line.trim();
            // libtest ends a panic with its backtrace hint; a message can hold blank lines (an
            // error's "Caused by:"), so a blank line does not end it.
            if trimmed.starts_with("---- ")
                || trimmed == "failures:"
                || (panic_seen && trimmed.starts_with("note: run with `RUST_BACKTRACE"))
            {
                break;
            }
            if !panic_seen && line.contains("panicked at") {
                panic_seen = true;
            }
            // Backtraces (the guest sets RUST_BACKTRACE; anyhow prints one after a child's error)
            // would crowd out the cause: each is left out up to the blank line that ends it.
            if trimmed.eq_ignore_ascii_case("stack backtrace:") {
                in_backtrace = true;
            } else if trimmed.is_empty() || trimmed.starts_with("note: Some details are omitted") {
                in_backtrace = false;
            } else if panic_seen && !in_backtrace {
                message.push(trimmed.to_owned());
            }
        }
        notes.push(format!("{binary}: {test} FAILED\n{}", shortened(&message).join("\n")));
    }
    notes
}

/// The first and last lines of a long message, with a line saying how many were left out between.
fn shortened(message: &[String]) -> Vec<String> {
    if message.len() <= PANIC_HEAD_LINES + PANIC_TAIL_LINES + 1 {
        return message.to_vec();
    }
    let tail_start = message.len() - PANIC_TAIL_LINES;
    let mut kept = message[..PANIC_HEAD_LINES].to_vec();
    kept.push(format!("[{} lines left out]", tail_start - PANIC_HEAD_LINES));
    kept.extend_from_slice(&message[tail_start..]);
    kept
}

/// The line without terminal colour codes (`ESC [ ... m`), which the daemons' logs carry.
fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The counts in libtest's `test result: ok. 3 passed; 0 failed; ...` line.
fn libtest_result(line: &str) -> Option<Tally> {
    let rest = line.trim_start().strip_prefix("test result: ")?;
    let mut tally = Tally::default();
    let mut found = false;
    for clause in rest.split([';', '.']) {
        let words: Vec<&str> = clause.split_whitespace().collect();
        if let [count, kind] = words[..] {
            let slot = match kind {
                "passed" => &mut tally.passed,
                "failed" => &mut tally.failed,
                _ => continue,
            };
            *slot = count.parse().ok()?;
            found = true;
        }
    }
    found.then_some(tally)
}

fn print_summary(suites: &[Suite]) -> Tally {
    let mut total = Tally::default();
    println!("\n== summary");
    for suite in suites {
        total.add(suite.tally);
        println!(
            "  {:<8} {} passed, {} failed ({:.0} s)",
            suite.name,
            suite.tally.passed,
            suite.tally.failed,
            suite.elapsed.as_secs_f64()
        );
        for note in &suite.notes {
            println!("           {}", note.replace('\n', "\n             "));
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn reads_libtest_result_lines() {
        let ok =
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.31s";
        assert_eq!(libtest_result(ok), Some(Tally { passed: 12, failed: 0 }));
        let failed = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(libtest_result(failed), Some(Tally { passed: 3, failed: 2 }));
        assert_eq!(libtest_result("test parse::ok ... ok"), None);
        assert_eq!(libtest_result("test result: 1x passed; 0 failed"), None, "a count must be a number");
    }

    #[test]
    fn a_clean_vm_run_counts_the_tests() {
        let transcript = lines(
            "safeclaw-test: running /t/a\ntest result: ok. 2 passed; 0 failed; 0 ignored\nsafeclaw-test: exited 0 /t/a\n\
             safeclaw-test: running /t/b\ntest result: FAILED. 1 passed; 1 failed; 0 ignored\nsafeclaw-test: exited 101 /t/b",
        );
        let (tally, notes) = tally_vm_run(&transcript, 2, &Ending::Exited(1));
        assert_eq!(tally, Tally { passed: 3, failed: 1 });
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_crashed_binary_and_an_unfinished_one_each_count_as_a_failure() {
        let transcript = lines(
            "safeclaw-test: running /t/a\nsafeclaw-test: exited 139 /t/a\nsafeclaw-test: running /t/b\n\
             test result: ok. 4 passed; 0 failed",
        );
        let (tally, notes) = tally_vm_run(&transcript, 2, &Ending::Crashed);
        assert_eq!(tally, Tally { passed: 4, failed: 2 });
        assert_eq!(notes.len(), 2);
        assert!(notes[0].starts_with("a exited with 139"), "{notes:?}");
        assert!(notes[1].contains("1 test binaries did not finish"));
    }

    #[test]
    fn what_a_binary_leaves_behind_counts_once_as_its_failure() {
        let transcript = lines(
            "safeclaw-test: running /t/a\ntest result: ok. 2 passed; 0 failed\nsafeclaw-test: exited 0 /t/a\n\
             safeclaw-test: left behind by /t/a: process 71: /usr/sbin/auditd -n\n\
             safeclaw-test: left behind by /t/a: pin /sys/fs/bpf/safeclaw-x\n\
             safeclaw-test: running /t/b\ntest result: ok. 1 passed; 0 failed\nsafeclaw-test: exited 0 /t/b",
        );
        let (tally, notes) = tally_vm_run(&transcript, 2, &Ending::Exited(1));
        assert_eq!(tally, Tally { passed: 3, failed: 1 });
        assert_eq!(
            notes,
            ["a left behind process 71: /usr/sbin/auditd -n", "a left behind pin /sys/fs/bpf/safeclaw-x"]
        );
    }

    #[test]
    fn a_failed_test_is_named_with_its_panic_message() {
        let transcript = lines(
            "safeclaw-test: running /t/escape_x\ntest one ... ok\ntest two ... FAILED\n\nfailures:\n\n\
             ---- two stdout ----\nsome output\n\u{1b}[2mthread 'two' panicked at tests/x.rs:3:5:\n\
             no entry for the denial\nnote: run with `RUST_BACKTRACE=1` to see a backtrace\n\n\
             failures:\n    two\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored\n\
             safeclaw-test: exited 101 /t/escape_x",
        );
        let (tally, notes) = tally_vm_run(&transcript, 1, &Ending::Exited(1));
        assert_eq!(tally, Tally { passed: 1, failed: 1 });
        assert_eq!(
            notes,
            ["escape_x: two FAILED\nthread 'two' panicked at tests/x.rs:3:5:\nno entry for the denial"]
        );
    }

    #[test]
    fn a_long_panic_message_keeps_its_start_and_its_end() {
        let stderr: String = (1..=30).map(|n| format!("stderr line {n}\n")).collect();
        let transcript = lines(&format!(
            "safeclaw-test: running /t/bench\n---- one stdout ----\nthread 'one' panicked at t.rs:1:1:\n\
             bench failed:\n{stderr}\nCaused by:\n    the cause\n\nStack backtrace:\n   0: main\n\n\
             stack backtrace:\n   0: rust_begin_unwind\nnote: Some details are omitted.\n\
             note: run with `RUST_BACKTRACE=1` to see a backtrace\n\nfailures:\n    one\n\
             test result: FAILED. 0 passed; 1 failed; 0 ignored\nsafeclaw-test: exited 101 /t/bench"
        ));
        let (_, notes) = tally_vm_run(&transcript, 1, &Ending::Exited(1));
        let note: Vec<&str> = notes[0].lines().collect();
        assert_eq!(
            note[..4],
            ["bench: one FAILED", "thread 'one' panicked at t.rs:1:1:", "bench failed:", "stderr line 1"]
        );
        assert_eq!(note[4], "[23 lines left out]");
        assert_eq!(note[note.len() - 2..], ["Caused by:", "the cause"]);
        assert_eq!(note.len(), 1 + PANIC_HEAD_LINES + 1 + PANIC_TAIL_LINES);
    }

    #[test]
    fn a_script_that_cannot_run_the_binaries_says_why() {
        let transcript =
            lines("safeclaw-test: cannot run: copying the agent /x into /run/safeclaw-vm/bin failed");
        let (tally, notes) = tally_vm_run(&transcript, 3, &Ending::Exited(1));
        assert_eq!(tally, Tally { passed: 0, failed: 3 });
        assert_eq!(notes[0], "copying the agent /x into /run/safeclaw-vm/bin failed");
        assert!(notes[1].contains("3 test binaries did not finish"), "{notes:?}");
    }

    #[test]
    fn zero_test_binaries_pass_only_if_the_vm_did() {
        assert_eq!(tally_vm_run(&[], 0, &Ending::Exited(0)).0, Tally::default());
        assert_eq!(tally_vm_run(&[], 0, &Ending::Exited(127)).0, Tally { passed: 0, failed: 1 });
    }
}

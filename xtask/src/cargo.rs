//! Running cargo from xtask: the cargo to call and the executables a build reports.
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context as _};

/// The cargo that started xtask (so toolchain overrides carry over), run from the checkout.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(crate::project::root());
    command
}

/// An executable a cargo build produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Executable {
    /// The cargo target's name (the binary or test name).
    pub target: String,
    /// Built with the test harness (`cargo test --no-run`).
    pub is_test: bool,
    pub path: PathBuf,
    /// The directory of the package's Cargo.toml, where `cargo test` runs the package's tests.
    pub package_dir: PathBuf,
}

/// Runs a cargo build with `--message-format=json-render-diagnostics` and returns the executables it
/// reports; diagnostics and progress go to the terminal as usual.
pub fn build_executables(mut command: Command, what: &str) -> anyhow::Result<Vec<Executable>> {
    command.arg("--message-format=json-render-diagnostics");
    let mut executables = Vec::new();
    let status = read_stdout_lines(command, what, |line| executables.extend(parse_artifact(line)))?;
    if !status.success() {
        bail!("building {what} failed ({status}); cargo's messages above say why");
    }
    Ok(executables)
}

/// Runs `command` with its stdout piped, hands each line of it to `on_line`, and returns the exit status.
pub fn read_stdout_lines(
    mut command: Command,
    what: &str,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<ExitStatus> {
    let mut child = command.stdout(Stdio::piped()).spawn().with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().with_context(|| format!("the stdout of {what} was not captured"))?;
    for line in std::io::BufReader::new(stdout).lines() {
        on_line(&line.with_context(|| format!("reading the output of {what}"))?);
    }
    child.wait().with_context(|| format!("waiting for {what}"))
}

/// The executable in one line of cargo's JSON messages, if it is a compiler artifact that has one.
fn parse_artifact(line: &str) -> Option<Executable> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    Some(Executable {
        target: message["target"]["name"].as_str()?.to_owned(),
        is_test: message["profile"]["test"].as_bool().unwrap_or(false),
        path: PathBuf::from(message["executable"].as_str()?),
        package_dir: PathBuf::from(message["manifest_path"].as_str()?).parent()?.to_path_buf(),
    })
}

/// Builds the agent with the release profile (its build script builds the eBPF object) and returns its path.
pub fn build_release_agent() -> anyhow::Result<PathBuf> {
    let mut command = cargo();
    command.args(["build", "--release", "--package", "safeclaw-agent", "--bin", "safeclaw-agent"]);
    find_executable(build_executables(command, "the release safeclaw-agent")?, "safeclaw-agent")
}

/// The one executable named `target` among `executables`.
pub fn find_executable(executables: Vec<Executable>, target: &str) -> anyhow::Result<PathBuf> {
    executables
        .into_iter()
        .find(|executable| executable.target == target && !executable.is_test)
        .map(|executable| executable.path)
        .with_context(|| format!("cargo built no executable named {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_test_executables_and_skips_libraries_and_other_messages() {
        let test = r#"{"reason":"compiler-artifact","target":{"name":"vm_smoke","kind":["test"]},"profile":{"test":true},"executable":"/t/release/deps/vm_smoke-1","manifest_path":"/p/tests/Cargo.toml"}"#;
        let bin = r#"{"reason":"compiler-artifact","target":{"name":"safeclaw-agent","kind":["bin"]},"profile":{"test":false},"executable":"/t/release/safeclaw-agent","manifest_path":"/p/agent/Cargo.toml"}"#;
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"anyhow","kind":["lib"]},"profile":{"test":false},"executable":null}"#;
        assert_eq!(
            parse_artifact(test),
            Some(Executable {
                target: "vm_smoke".into(),
                is_test: true,
                path: "/t/release/deps/vm_smoke-1".into(),
                package_dir: "/p/tests".into(),
            })
        );
        assert_eq!(parse_artifact(bin).map(|e| e.is_test), Some(false));
        assert_eq!(parse_artifact(lib), None);
        assert_eq!(parse_artifact(r#"{"reason":"build-finished","success":true}"#), None);
        assert_eq!(parse_artifact("not json"), None);
    }

    #[test]
    fn finds_the_named_binary_not_a_test_of_the_same_name() {
        let built = vec![
            Executable {
                target: "safeclaw-agent".into(),
                is_test: true,
                path: "/t/deps/agent-test".into(),
                package_dir: "/p".into(),
            },
            Executable {
                target: "safeclaw-agent".into(),
                is_test: false,
                path: "/t/safeclaw-agent".into(),
                package_dir: "/p".into(),
            },
        ];
        assert_eq!(find_executable(built, "safeclaw-agent").ok(), Some(PathBuf::from("/t/safeclaw-agent")));
        assert!(find_executable(Vec::new(), "safeclaw-agent").is_err());
    }
}

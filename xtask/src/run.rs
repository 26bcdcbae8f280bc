//! `cargo xtask run`: builds everything, then enforces the default policy on the host when its kernel can
//! load BPF LSM programs, or else runs the scripted demo (tests/demo/session.sh) in a VM.
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::vm::{Ending, Kernel, Vm};
use crate::{cargo, project};

const DEMO_SCRIPT: &str = "tests/demo/session.sh";
const POLICY: &str = "policies/default.yaml";
const AGENT_CGROUP: &str = "agents";

#[derive(clap::Args)]
pub struct RunArgs {
    /// Kernel for the demo VM, when the host cannot enforce.
    #[arg(long, default_value = "6.12")]
    kernel: Kernel,
    /// Seconds the demo VM may run.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    project::setup()?;
    let agent = cargo::build_release_agent()?;
    let demo_dir = project::target_dir().join("safeclaw-demo");
    let status = match probe_lsm(&agent) {
        Ok(()) => run_on_host(&agent, &demo_dir)?,
        Err(reason) => {
            println!("xtask: the host kernel cannot load BPF LSM programs: {reason}");
            println!("xtask: running the scripted demo in a VM on Debian's {} kernel instead", args.kernel);
            run_demo_in_vm(&agent, &demo_dir, args.kernel, Duration::from_secs(args.timeout))?
        }
    };
    let audit_log = demo_dir.join("audit.jsonl");
    if audit_log.exists() {
        let shown = audit_log.strip_prefix(project::root()).unwrap_or(&audit_log);
        let agent = agent.strip_prefix(project::root()).unwrap_or(&agent);
        println!("\nThe audit log is {}. Look at it with", audit_log.display());
        println!("  {} audit tail {}", agent.display(), shown.display());
        let head = demo_dir.join("state/audit.head");
        let head = head.strip_prefix(project::root()).unwrap_or(&head);
        println!("  {} audit verify --head {} {}", agent.display(), head.display(), shown.display());
    }
    Ok(ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX)))
}

/// Asks the agent whether this kernel really loads a BPF LSM program; any failure means it cannot.
fn probe_lsm(agent: &Path) -> Result<(), String> {
    let output = Command::new(agent)
        .args(["doctor", "--probe-lsm"])
        .output()
        .map_err(|err| format!("cannot run {} doctor --probe-lsm: {err}", agent.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let said = if said.is_empty() { String::from_utf8_lossy(&output.stdout).trim().to_owned() } else { said };
    let first_line = said.lines().find(|line| !line.trim().is_empty()).unwrap_or("no explanation given");
    Err(format!("`safeclaw-agent doctor --probe-lsm` failed ({}): {first_line}", output.status))
}

fn run_on_host(agent: &Path, demo_dir: &Path) -> anyhow::Result<i32> {
    std::fs::create_dir_all(demo_dir).with_context(|| format!("cannot create {}", demo_dir.display()))?;
    println!("xtask: enforcing {POLICY} on cgroup `{AGENT_CGROUP}` on this host; Ctrl-C stops the agent");
    let status = Command::new(agent)
        .args(["run", "--cgroup", AGENT_CGROUP, "--policy", POLICY, "--audit-log"])
        .arg(demo_dir.join("audit.jsonl"))
        .arg("--state-dir")
        .arg(demo_dir.join("state"))
        .current_dir(project::root())
        .status()
        .with_context(|| format!("cannot start {}", agent.display()))?;
    Ok(status.code().unwrap_or(1))
}

fn run_demo_in_vm(agent: &Path, demo_dir: &Path, kernel: Kernel, timeout: Duration) -> anyhow::Result<i32> {
    // A fresh log per demo: the session's audit lines are the point of it.
    if demo_dir.exists() {
        std::fs::remove_dir_all(demo_dir).with_context(|| format!("cannot clear {}", demo_dir.display()))?;
    }
    std::fs::create_dir_all(demo_dir).with_context(|| format!("cannot create {}", demo_dir.display()))?;
    let mut vm = Vm::new(kernel, vec!["sh".to_owned(), DEMO_SCRIPT.to_owned()]);
    vm.timeout = timeout;
    vm.out = Some(demo_dir.to_path_buf());
    vm.env = vec![
        ("SAFECLAW_AGENT_BIN".to_owned(), agent.to_string_lossy().into_owned()),
        ("OUT".to_owned(), demo_dir.to_string_lossy().into_owned()),
    ];
    let finished = vm.boot()?;
    match finished.ending {
        Ending::Exited(0) => Ok(0),
        Ending::Exited(status) => {
            println!("xtask: the demo failed (status {status}); its output above says which step");
            Ok(status)
        }
        ending => bail!("the demo VM failed: {ending}"),
    }
}

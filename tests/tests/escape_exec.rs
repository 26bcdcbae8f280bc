//! Escape suite, exec: under a policy that lets binaries run only from system directories, every way
//! of starting another binary from inside a real agent session (`--user nobody`) fails with EPERM and
//! leaves a deny entry naming what was executed.
use std::path::{Path, PathBuf};

use safeclaw_integration::{
    give_to_nobody, probe_outcome, test_files_dir, the_denial, RunAs, SharedDaemon, Turn,
};

const PROBE: &str = env!("CARGO_BIN_EXE_escape-probe");

static DAEMON: SharedDaemon = SharedDaemon::new("safeclaw-esc-exec");

/// The shared daemon allowing exec only from system directories (and of the probe), and a copy of `echo`
/// outside them that the agent owns.
struct Forbidden {
    daemon: Turn,
    /// The copy's path.
    binary: String,
}

impl Forbidden {
    fn start(name: &str) -> Forbidden {
        let probe_dir = Path::new(PROBE).parent().unwrap().display().to_string();
        let agent = safeclaw_integration::agent_bin().display().to_string();
        let policy = format!(
            r#"version: 1
default: allow
rules:
  - name: system-binaries
    action: process.exec
    effect: allow
    binary: [/usr/**, /bin/**, /sbin/**, {probe_dir}/**, {agent}]
  - name: nothing-else
    action: process.exec
    effect: deny
    binary: ["/**"]
"#
        );
        let daemon = DAEMON.turn(&policy);
        let dir = test_files_dir(name);
        let binary = dir.join("forbidden-echo");
        std::fs::copy("/bin/echo", &binary).unwrap();
        give_to_nobody(&binary, 0o755);
        Forbidden { daemon, binary: binary.display().to_string() }
    }

    fn run(&self, argv: &[&str]) -> std::process::Output {
        self.daemon.session("escape", RunAs::Nobody, argv)
    }

    /// The test's one exec denial of `path` by the catch-all rule.
    fn assert_denied_exec(self, path: &str) {
        let entries = self.daemon.entries();
        let denials: Vec<_> = entries.iter().filter(|e| e["effect"] == "deny").collect();
        assert!(
            !safeclaw_integration::entries_for(&entries, "process.exec", path).is_empty(),
            "no process.exec entry for {path}; the denials: {denials:#?}"
        );
        let entry = the_denial(&entries, "process.exec", path);
        assert_eq!(entry["matchedRule"], "nothing-else", "{entry:#}");
    }
}

#[test]
fn copying_a_binary_to_tmp_and_running_it() {
    let forbidden = Forbidden::start("safeclaw-esc-copy");
    let copy = PathBuf::from("/tmp/safeclaw-esc-copy-echo");
    let _ = std::fs::remove_file(&copy);
    let script = format!("cp /bin/echo {0} && {0} EXECUTED; echo status=$?", copy.display());
    let out = forbidden.run(&["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status=126", "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"), "{out:?}");
    forbidden.assert_denied_exec(copy.to_str().unwrap());
}

#[test]
fn execveat_of_the_path() {
    let forbidden = Forbidden::start("safeclaw-esc-execveat");
    let out = forbidden.run(&[PROBE, "execveat", &forbidden.binary]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let binary = forbidden.binary.clone();
    forbidden.assert_denied_exec(&binary);
}

#[test]
fn execveat_of_an_o_path_descriptor() {
    let forbidden = Forbidden::start("safeclaw-esc-execveat-fd");
    let out = forbidden.run(&[PROBE, "execveat-fd", &forbidden.binary]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let binary = forbidden.binary.clone();
    forbidden.assert_denied_exec(&binary);
}

#[test]
fn fexecve_of_an_open_descriptor() {
    let forbidden = Forbidden::start("safeclaw-esc-fexecve");
    let out = forbidden.run(&[PROBE, "fexecve", &forbidden.binary]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let binary = forbidden.binary.clone();
    forbidden.assert_denied_exec(&binary);
}

#[test]
fn memfd_copy_of_a_system_binary() {
    let forbidden = Forbidden::start("safeclaw-esc-memfd");
    // Even an allowed binary, once copied into an anonymous file, is no longer a system binary.
    let out = forbidden.run(&[PROBE, "memfd-exec", "/bin/echo"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    forbidden.assert_denied_exec("/memfd:agent-copy (deleted)");
}

#[test]
fn shell_and_python_command_strings() {
    let forbidden = Forbidden::start("safeclaw-esc-exec-strings");
    let out = forbidden.run(&["/bin/sh", "-c", &format!("{} EXECUTED; echo status=$?", forbidden.binary)]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "status=126", "{out:?}");
    let code = format!(
        "import errno, os\ntry:\n    os.execv({0:?}, [{0:?}, 'EXECUTED'])\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
        forbidden.binary
    );
    let out = forbidden.run(&["/usr/bin/python3", "-c", &code]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let entries = forbidden.daemon.entries();
    let denials = safeclaw_integration::entries_for(&entries, "process.exec", &forbidden.binary);
    assert_eq!(denials.len(), 2, "one denial from sh, one from python: {denials:#?}");
    assert!(denials.iter().all(|e| e["effect"] == "deny"));
}

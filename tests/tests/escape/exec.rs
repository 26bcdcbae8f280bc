//! Escape suite, exec: under a policy that lets binaries run only from system directories, every way
//! of starting another binary from inside a real agent session (`--user nobody`) fails with EPERM and
//! leaves a deny entry naming what was executed. Under `policies/default.yaml`, an ELF the agent
//! writes where it may exec cannot name a denied binary as its loader (`PT_INTERP`), and dynamically
//! linked programs still run.
use std::path::{Path, PathBuf};

use safeclaw_integration::{give_to_nobody, probe_outcome, test_files_dir, the_denial, RunAs, Turn};

use crate::{DAEMON, PROBE};

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

/// `policies/default.yaml`, as shipped.
fn default_policy() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
    std::fs::read_to_string(&path).unwrap()
}

/// The system's dynamic loader (Debian, x86-64), as programs name it.
const SYSTEM_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// Writes a copy of the program `from` to `to` (the agent's, mode 0755) whose ELF header names
/// `loader` as its loader (`PT_INTERP`, written over the original name, which must be longer).
fn with_loader(from: &str, loader: &str, to: &Path) {
    const PT_INTERP: u32 = 3;
    let mut elf = std::fs::read(from).unwrap();
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "{from} is not a 64-bit little-endian ELF");
    let word = |elf: &[u8], at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    let half = |elf: &[u8], at: usize| usize::from(u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()));
    let (table, entry_size, entries) = (word(&elf, 0x20), half(&elf, 0x36), half(&elf, 0x38));
    let interp = (0..entries)
        .map(|i| table + i * entry_size)
        .find(|&at| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP)
        .unwrap_or_else(|| panic!("{from} names no loader"));
    let (offset, size) = (word(&elf, interp + 8), word(&elf, interp + 32));
    assert!(loader.len() < size, "{loader} does not fit in the {size} bytes of {from}'s loader name");
    let name = &mut elf[offset..offset + size];
    name.fill(0);
    name[..loader.len()].copy_from_slice(loader.as_bytes());
    std::fs::write(to, &elf).unwrap();
    give_to_nobody(to, 0o755);
}

/// A copy of the system loader at `to` (short: it must fit in a program's loader name).
fn copy_of_the_loader(to: &str) {
    let _ = std::fs::remove_file(to);
    std::fs::copy(SYSTEM_LOADER, to).unwrap();
    give_to_nobody(Path::new(to), 0o755);
}

#[test]
fn an_elf_cannot_name_a_denied_binary_as_its_loader() {
    let daemon = DAEMON.turn(&default_policy());
    let dir = test_files_dir("safeclaw-esc-interp");
    // A working loader where the default policy denies exec (/dev/shm is writable, not a place to
    // run from), and a system binary it denies by name.
    let copied_loader = "/dev/shm/sc-ld";
    copy_of_the_loader(copied_loader);
    let denied_loaders = [(copied_loader, None), ("/usr/bin/mount", Some("privilege-escalation"))];
    let mut script = String::new();
    for (i, (loader, _)) in denied_loaders.iter().enumerate() {
        let program = dir.join(format!("echo-{i}"));
        with_loader("/bin/echo", loader, &program);
        script += &format!("{} EXECUTED; echo status=$?; ", program.display());
    }
    let out = daemon.session("escape", RunAs::Nobody, &["/bin/sh", "-c", &script]);
    // Refused after the exec's point of no return: the kernel kills the process with SIGSEGV.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "status=139\nstatus=139\n", "{out:?}");
    let entries = daemon.entries();
    for (loader, rule) in denied_loaders {
        let entry = the_denial(&entries, "process.map_exec", loader);
        assert_eq!(entry["flags"], serde_json::json!(["exec_loader"]), "{entry:#}");
        assert_eq!(entry["matchedRule"].as_str(), rule, "{entry:#}");
    }
    // The programs themselves were allowed to start (run from /tmp: marked for review).
    for i in 0..denied_loaders.len() {
        let program = dir.join(format!("echo-{i}")).display().to_string();
        let execs = safeclaw_integration::entries_for(&entries, "process.exec", &program);
        assert!(execs.len() == 1 && execs[0]["effect"] == "audit", "{execs:#?}");
    }
}

#[test]
fn an_elf_with_an_allowed_loader_and_dynamic_programs_run_under_the_default_policy() {
    let daemon = DAEMON.turn(&default_policy());
    let dir = test_files_dir("safeclaw-esc-interp-ok");
    // The same construction with a loader the policy lets run (from /tmp, marked for review).
    let loader = "/tmp/sc-ld-ok";
    copy_of_the_loader(loader);
    let program = dir.join("echo");
    with_loader("/bin/echo", loader, &program);
    let script = format!(
        "{} via-copied-loader && /bin/true && echo true && git --version >/dev/null && echo git && python3 -c 'print(\"python\")' && {SYSTEM_LOADER} /bin/echo loaded",
        program.display()
    );
    let out = daemon.session("escape", RunAs::Nobody, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-copied-loader\ntrue\ngit\npython\nloaded\n");
    let entries = daemon.entries();
    let denials: Vec<_> = entries.iter().filter(|e| e["effect"] == "deny").collect();
    assert!(denials.is_empty(), "{denials:#?}");
}

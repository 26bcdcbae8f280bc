//! The kernel and the reference evaluator agree on real syscalls: generated policies (globs of
//! every kind, file, exec and network rules, allow/deny/audit, either default) are loaded into the
//! running daemon one after another, a probe inside the agent cgroup makes a few thousand opens,
//! execs, connects, listens and binds, and each outcome and audit entry (effect and rule) must be what
//! `Evaluator::evaluate` says.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;

use safeclaw_agent::policy::compiled::{Effect, Request};
use safeclaw_agent::policy::{compile_all, load_file, CompileContext, Evaluator};
use safeclaw_integration::{Daemon, Mount};

const NAME: &str = "safeclaw-it-agree";
const PROBE: &str = env!("CARGO_BIN_EXE_safeclaw-probe");
const POLICIES: u64 = 6;
const DIRS: [&str; 10] = ["a", "b", "a/b", "a/b/c", "c", "c/.git", "d-1", "d_2/e", "src", "src/deep/er"];
const NAMES: [&str; 10] =
    ["f.txt", "g.rs", ".env", "id_rsa", "ab", "a1", "Makefile", "x.pem", "notes.md", "bb"];
const EXEC_DIRS: [&str; 3] = ["bin", "tools/x", ".local/bin"];
const EXEC_NAMES: [&str; 5] = ["run", "git", "deploy.sh", "t1", "cargo"];
const ADDRESSES: [&str; 7] =
    ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.1.2.3", "127.255.0.1", "::1"];
const PORTS: [u16; 8] = [80, 443, 999, 1000, 1500, 2000, 2001, 8080];

/// xorshift64*: reproducible policies without a dependency; the seed is in every failure message.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn root() -> std::path::PathBuf {
    std::env::temp_dir().join(NAME)
}

fn file_glob(rng: &mut Rng) -> String {
    let t = root().join("t").display().to_string();
    let (dir, name) = (rng.pick(&DIRS), rng.pick(&NAMES));
    match rng.below(10) {
        0 => format!("{t}/{dir}/{name}"),
        1 => format!("{t}/{dir}/*"),
        2 => format!("{t}/**/{name}"),
        3 => format!("{t}/{dir}/**"),
        4 => format!("{t}/*/?{}", &name[1..]),
        5 => format!("{t}/{{{},{}}}/*{}", rng.pick(&DIRS), dir, rng.pick(&[".txt", ".rs", ".md", ""])),
        6 => format!("{t}/[a-c]*/**"),
        7 => format!("{t}/**/*.{{txt,pem}}"),
        8 => format!("{t}/*/*/[!a]*"),
        _ => format!("{t}/**"),
    }
}

fn exec_glob(rng: &mut Rng) -> String {
    let x = root().join("x").display().to_string();
    let (dir, name) = (rng.pick(&EXEC_DIRS), rng.pick(&EXEC_NAMES));
    match rng.below(5) {
        0 => format!("{x}/{dir}/{name}"),
        1 => format!("{x}/{dir}/*"),
        2 => format!("{x}/**/{name}"),
        3 => format!("{x}/{{bin,tools/x}}/[a-g]*"),
        _ => format!("{x}/**"),
    }
}

/// A policy of 30 generated rules, then the rules the probe itself needs (which no case touches).
fn generate(seed: u64) -> String {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let default = rng.pick(&["allow", "deny"]);
    let mut yaml = format!("version: 1\ndefault: {default}\nrules:\n");
    for i in 0..30 {
        let effect = rng.pick(&["allow", "deny", "audit"]);
        let _ = write!(yaml, "  - name: g{i}\n    effect: {effect}\n");
        match rng.below(5) {
            0 | 1 => {
                let action = rng.pick(&["file.read", "file.write", "file.*"]);
                let globs: Vec<String> =
                    (0..1 + rng.below(2)).map(|_| format!("\"{}\"", file_glob(&mut rng))).collect();
                let _ = write!(yaml, "    action: {action}\n    paths: [{}]\n", globs.join(", "));
            }
            2 => {
                let _ = write!(yaml, "    action: process.exec\n    binary: [\"{}\"]\n", exec_glob(&mut rng));
            }
            3 => {
                let cidr = rng.pick(&["127.0.0.0/8", "127.0.0.2/32", "127.0.0.0/30", "::1/128", "0.0.0.0/0"]);
                let _ = write!(yaml, "    action: network.listen\n    cidrs: [\"{cidr}\"]\n");
                if rng.below(2) == 0 {
                    let ports = rng.pick(&["\"1000-2000\"", "8080", "443", "\"1-999\""]);
                    let _ = writeln!(yaml, "    ports: [{ports}]");
                }
                if rng.below(2) == 0 {
                    let _ = writeln!(yaml, "    protocol: {}", rng.pick(&["tcp", "udp"]));
                }
            }
            _ => {
                let cidr = rng.pick(&[
                    "127.0.0.0/8",
                    "127.0.0.2/32",
                    "127.0.0.0/30",
                    "127.1.0.0/16",
                    "::1/128",
                    "0.0.0.0/0",
                ]);
                let _ = write!(yaml, "    action: network.connect\n    cidrs: [\"{cidr}\"]\n");
                if rng.below(2) == 0 {
                    let ports = rng.pick(&["80", "\"1000-2000\"", "8080", "443", "\"1-999\""]);
                    let _ = writeln!(yaml, "    ports: [{ports}]");
                }
                if rng.below(2) == 0 {
                    let _ = writeln!(yaml, "    protocol: {}", rng.pick(&["tcp", "udp"]));
                }
            }
        }
    }
    let here = root().display().to_string();
    // The probe runs from wherever the checkout is (CI clones anywhere).
    let probe_dir = std::path::Path::new(PROBE).parent().map(|d| d.display().to_string()).unwrap_or_default();
    let _ = write!(
        yaml,
        "  - name: probe-needs\n    action: file.*\n    effect: allow\n    paths: [\"/{{usr,lib,lib64,bin,sbin,etc,proc,dev,sys,run,var,root,opt}}/**\", \"{probe_dir}/**\", \"{here}/x/**\", \"{here}/*.txt\"]\n\
         \x20 - name: probe-runs\n    action: process.exec\n    effect: allow\n    binary: [\"/{{usr,bin,sbin}}/**\", \"{probe_dir}/**\"]\n"
    );
    yaml
}

/// One syscall of the probe, and how to find its audit entry.
struct Case {
    line: String,
    request: Owned,
}

enum Owned {
    File {
        path: String,
        read: bool,
        write: bool,
    },
    Exec {
        path: String,
    },
    Connect {
        protocol: &'static str,
        address: IpAddr,
        port: u16,
    },
    /// A TCP listen or UDP bind.
    Listen {
        protocol: &'static str,
        address: IpAddr,
        port: u16,
    },
}

fn mapped(address: &IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Owned {
    fn request(&self) -> Request<'_> {
        match self {
            Owned::File { path, read, write } => {
                Request::FileOpen { path: path.as_bytes(), read: *read, write: *write }
            }
            Owned::Exec { path } => Request::Exec { path: path.as_bytes() },
            Owned::Connect { protocol, address, port } => Request::ConnectInet {
                protocol: if *protocol == "tcp" { 6 } else { 17 },
                addr: mapped(address),
                port: *port,
            },
            Owned::Listen { protocol, address, port } => Request::ListenInet {
                protocol: if *protocol == "tcp" { 6 } else { 17 },
                addr: mapped(address),
                port: *port,
            },
        }
    }

    /// Whether an audit entry is this case's.
    fn matches(&self, entry: &serde_json::Value) -> bool {
        let details = &entry["requestDetails"];
        match self {
            Owned::File { path, read, write } => {
                let mode = match (read, write) {
                    (true, true) => "rw",
                    (false, true) => "w",
                    _ => "r",
                };
                entry["action"].as_str().is_some_and(|a| a.starts_with("file."))
                    && details["path"] == path.as_str()
                    && details["mode"] == mode
            }
            Owned::Exec { path } => entry["action"] == "process.exec" && details["path"] == path.as_str(),
            Owned::Connect { protocol, address, port } => {
                entry["action"] == "network.connect"
                    && details["address"] == address.to_string()
                    && details["port"] == *port
                    && details["protocol"] == *protocol
            }
            Owned::Listen { protocol, address, port } => {
                entry["action"] == "network.listen"
                    && details["address"] == address.to_string()
                    && details["port"] == *port
                    && details["protocol"] == *protocol
            }
        }
    }
}

/// Builds the file tree (regular files, and copies of `true` to execute) and the cases.
fn prepare() -> Vec<Case> {
    let mut cases = Vec::new();
    for dir in DIRS {
        let dir_path = root().join("t").join(dir);
        std::fs::create_dir_all(&dir_path).unwrap();
        for name in NAMES {
            let path = dir_path.join(name);
            std::fs::write(&path, "x").unwrap();
            let path = path.display().to_string();
            for (mode, read, write) in [("r", true, false), ("w", false, true), ("rw", true, true)] {
                cases.push(Case {
                    line: format!("{mode}\t{path}"),
                    request: Owned::File { path: path.clone(), read, write },
                });
            }
        }
    }
    let true_binary =
        ["/usr/bin/true", "/bin/true"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap();
    for dir in EXEC_DIRS {
        let dir_path = root().join("x").join(dir);
        std::fs::create_dir_all(&dir_path).unwrap();
        for name in EXEC_NAMES {
            let path = dir_path.join(name);
            std::fs::copy(true_binary, &path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            let path = path.display().to_string();
            cases.push(Case { line: format!("x\t{path}"), request: Owned::Exec { path } });
        }
    }
    for address in ADDRESSES {
        for port in PORTS {
            for protocol in ["tcp", "udp"] {
                cases.push(Case {
                    line: format!("{protocol}\t{address}\t{port}"),
                    request: Owned::Connect { protocol, address: address.parse().unwrap(), port },
                });
            }
        }
    }
    // Serving: every address above and the any-addresses, on ports the listen rules split.
    for address in ADDRESSES.into_iter().chain(["0.0.0.0", "::"]) {
        for port in [443, 999, 1500, 8080] {
            for protocol in ["tcp", "udp"] {
                cases.push(Case {
                    line: format!("listen-{protocol}\t{address}\t{port}"),
                    request: Owned::Listen { protocol, address: address.parse().unwrap(), port },
                });
            }
        }
    }
    cases
}

#[test]
fn kernel_decisions_and_audit_entries_match_the_evaluator_on_generated_policies() {
    let daemon = Daemon::start(NAME, &generate(0));
    let cases = prepare();
    let probe_input = root().join("cases.txt");
    std::fs::write(&probe_input, cases.iter().map(|c| format!("{}\n", c.line)).collect::<String>()).unwrap();
    let policy_file = daemon.work().join("policy.yaml");
    let probe = PROBE;
    let mut expected_by_hash: HashMap<String, Vec<(Effect, Option<String>)>> = HashMap::new();
    let mut checked = 0;
    for seed in 0..POLICIES {
        std::fs::write(&policy_file, generate(seed)).unwrap();
        if seed > 0 {
            let reloaded = daemon.agent_command(&["policy", "reload"]);
            assert!(reloaded.status.success(), "seed {seed}: {reloaded:?}");
        }
        let policy = load_file(&policy_file).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let ctx = CompileContext::new(safeclaw_agent::policy::launching_user_home());
        let set = compile_all(&policy, &ctx).unwrap();
        let evaluator = Evaluator::new(&policy, None, &ctx).unwrap();
        let output = daemon.sh(&format!("exec {probe} < {}", probe_input.display()));
        assert!(output.status.success(), "seed {seed}: probe failed: {output:?}");
        let answers: Vec<String> =
            String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
        assert_eq!(answers.len(), cases.len(), "seed {seed}: one answer per case");
        let mut expected = Vec::new();
        for (case, answer) in cases.iter().zip(&answers) {
            let decision = evaluator.evaluate(&case.request.request());
            assert_eq!(
                set.base.tables.decide(&case.request.request()),
                decision,
                "seed {seed}: tables, {}",
                case.line
            );
            // EPERM is the hook's answer; a connect the hook allows may still fail further on
            // (nothing listens: ECONNREFUSED; an address in use), a file open or exec must not.
            let kernel_denied = answer == "1";
            let may_fail_further = matches!(case.request, Owned::Connect { .. } | Owned::Listen { .. });
            assert!(
                kernel_denied || answer == "ok" || may_fail_further,
                "seed {seed}: {} answered errno {answer}",
                case.line
            );
            assert_eq!(
                kernel_denied,
                decision.effect == Effect::Deny,
                "seed {seed}: {} — kernel {answer}, evaluator {decision:?}\n{}",
                case.line,
                generate(seed)
            );
            let rule = decision.rule.map(|id| set.base.rules[id as usize].name.clone());
            expected.push((decision.effect, rule));
            checked += 1;
        }
        expected_by_hash.insert(set.hash.to_string(), expected);
    }
    let (status, entries) = daemon.stop();
    assert!(status.success());
    for (hash, expected) in &expected_by_hash {
        let decided: Vec<&serde_json::Value> =
            entries.iter().filter(|e| e["policyHash"] == hash.as_str()).collect();
        for (case, (effect, rule)) in cases.iter().zip(expected) {
            let found: Vec<_> = decided.iter().filter(|e| case.request.matches(e)).collect();
            assert_eq!(found.len(), 1, "policy {hash}: one entry for {}: {found:#?}", case.line);
            assert_eq!(found[0]["effect"], effect.as_str(), "policy {hash}: {}", case.line);
            match rule {
                Some(name) => {
                    assert_eq!(found[0]["matchedRule"], name.as_str(), "policy {hash}: {}", case.line)
                }
                None => {
                    assert!(found[0]["matchedRule"].is_null(), "policy {hash}: {}: {:?}", case.line, found[0])
                }
            }
        }
    }
    assert!(checked >= 2_000, "a few thousand cases: {checked}");
}

/// Opens each path of argv in one process, so that identical opens can be counted as repeats
/// (docs/audit-format.md) and taken from the kernel's memo of the last counted one: `PATH` read-only,
/// `w:PATH` write-only, `t:PATH` read-only with O_TRUNC (a write). `mv:SRC,DST` renames instead;
/// `wait:READY,GO` creates READY and waits (bounded) until GO exists, while the test reloads.
/// `poll:OLD,NEW,READY` creates READY, opens OLD every 10 ms until it is gone (the test moves the
/// mount it is on), prints how many opens of it succeeded, then opens NEW. `c:ADDRESS:PORT` makes a
/// TCP connect instead (refused counts as `ok`: the kernel allowed it). One line per open or connect:
/// `ok`, `1` (EPERM) or `enoent`.
const REPEAT_AGENT: &str = r#"
import errno, os, socket, sys, time
for arg in sys.argv[1:]:
    if arg.startswith("c:"):
        host, port = arg[2:].rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect((host, int(port)))
            print("ok")
        except ConnectionRefusedError:
            print("ok")
        except PermissionError:
            print("1")
        finally:
            s.close()
        continue
    if arg.startswith("mv:"):
        src, dst = arg[3:].split(",")
        os.rename(src, dst)
        continue
    if arg.startswith("wait:"):
        ready, go = arg[5:].split(",")
        os.close(os.open(ready, os.O_CREAT | os.O_WRONLY))
        for _ in range(1200):
            if os.path.exists(go):
                break
            time.sleep(0.05)
        continue
    if arg.startswith("poll:"):
        old, new, ready = arg[5:].split(",")
        os.close(os.open(ready, os.O_CREAT | os.O_WRONLY))
        opened = 0
        for _ in range(3000):
            try:
                os.close(os.open(old, os.O_RDONLY))
            except FileNotFoundError:
                break
            opened += 1
            time.sleep(0.01)
        print(opened)
        arg = new
    flags = {"w:": os.O_WRONLY, "t:": os.O_RDONLY | os.O_TRUNC}.get(arg[:2])
    path = arg if flags is None else arg[2:]
    try:
        os.close(os.open(path, os.O_RDONLY if flags is None else flags))
        print("ok")
    except PermissionError:
        print("1")
    except FileNotFoundError:
        print("enoent")
"#;

/// Everything under `dir` allowed but reads of `denied` and below `moved/` and `mnt/moved/`, and writes
/// of `w.txt`; what python needs.
fn repeat_policy(dir: &std::path::Path, denied: &str) -> String {
    let dir = dir.display();
    format!(
        "version: 1\ndefault: deny\nrules:\n\
         \x20 - name: no-read\n    action: file.read\n    effect: deny\n    paths: [\"{dir}/{denied}\"]\n\
         \x20 - name: no-write\n    action: file.write\n    effect: deny\n    paths: [\"{dir}/w.txt\"]\n\
         \x20 - name: no-moved\n    action: file.read\n    effect: deny\n    paths: [\"{dir}/moved/**\", \"{dir}/mnt/moved/**\"]\n{}",
        agent_rules(&dir)
    )
}

/// `REPEAT_AGENT` in the daemon's work directory, and the files its `wait:` step syncs on.
struct RepeatAgent {
    script: std::path::PathBuf,
    ready: std::path::PathBuf,
    go: std::path::PathBuf,
}

impl RepeatAgent {
    fn new(daemon: &Daemon) -> RepeatAgent {
        let script = daemon.work().join("agent.py");
        std::fs::write(&script, REPEAT_AGENT).unwrap();
        RepeatAgent { script, ready: daemon.work().join("sync-ready"), go: daemon.work().join("sync-go") }
    }

    /// The step at which the agent waits for the reload.
    fn wait_step(&self) -> String {
        format!("wait:{},{}", self.ready.display(), self.go.display())
    }

    /// Runs the agent with `args` in the daemon's cgroup. `meanwhile` gets whether the agent has ended
    /// and runs first; then, once the agent waits at its `wait:` step, the policy file becomes `next`
    /// and is reloaded, and the agent goes on. Its output.
    fn run_across_reload(
        &self,
        daemon: &Daemon,
        args: &[String],
        next: &str,
        meanwhile: impl FnOnce(&dyn Fn() -> bool),
    ) -> std::process::Output {
        let command = format!("exec python3 {} {}", self.script.display(), args.join(" "));
        std::thread::scope(|scope| {
            let run = scope.spawn(|| daemon.sh(&command));
            let ended = || run.is_finished();
            meanwhile(&ended);
            wait_for(&self.ready, &ended, "the agent reached the reload");
            std::fs::write(daemon.work().join("policy.yaml"), next).unwrap();
            let reloaded = daemon.agent_command(&["policy", "reload"]);
            assert!(reloaded.status.success(), "{reloaded:?}");
            // The reload wrote the automata through the tables' mapping, not the slower syscall fallback.
            assert!(!daemon.log_text().contains("cannot be mapped"), "{}", daemon.log_text());
            std::fs::write(&self.go, "").unwrap();
            run.join().unwrap()
        })
    }
}

/// Waits (at most 60 s) until `path` exists, unless the agent `ended` first; asserts it exists.
fn wait_for(path: &std::path::Path, ended: &dyn Fn() -> bool, what: &str) {
    let waited = std::time::Instant::now();
    while !path.exists() && !ended() && waited.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(path.exists(), "{what}");
}

/// An entry's effect and how many attempts it stands for: a counted entry is an allowed one, with no
/// kernelSeq of its own.
fn effect_and_attempts(entry: &serde_json::Value) -> (&'static str, u64) {
    let effect = match entry["effect"].as_str() {
        Some("allow") => "allow",
        Some("deny") => "deny",
        other => panic!("unexpected effect {other:?}: {entry}"),
    };
    let attempts = match entry["repeats"]["count"].as_u64() {
        Some(count) => {
            assert_eq!(effect, "allow", "a denial is never counted as a repeat: {entry}");
            assert!(entry["kernelSeq"].is_null(), "a repeat has no kernelSeq of its own: {entry}");
            count
        }
        None => 1,
    };
    (effect, attempts)
}

/// Everything under `dir` allowed, and what python needs to start and run.
fn agent_rules(dir: impl std::fmt::Display) -> String {
    format!(
        "\x20 - name: scratch\n    action: file.*\n    effect: allow\n    paths: [\"{dir}/**\"]\n\
         \x20 - name: runtime\n    action: file.*\n    effect: allow\n    paths: [\"/{{usr,lib,lib64,bin,sbin,etc,proc,dev,sys,run,var,root,opt,tmp}}/**\"]\n\
         \x20 - name: runs\n    action: process.exec\n    effect: allow\n    binary: [\"/{{usr,bin,sbin}}/**\"]\n"
    )
}

/// One process makes every open, before and after a reload, so a decision the kernel remembered for
/// an open (its memo of the last counted one) is asked to serve a different mode, a renamed path, a
/// renamed parent directory, a moved mount and another policy generation; each must be decided
/// afresh. The memo does not resolve the path: the last two reach the same dentry on the same mount
/// under a new path.
#[test]
fn counted_repeats_never_outlive_a_reload_a_rename_or_a_mount_move() {
    const REPEAT_NAME: &str = "safeclaw-it-agree-repeat";
    let dir = std::env::temp_dir().join(REPEAT_NAME).join("t");
    let daemon = Daemon::start(REPEAT_NAME, &repeat_policy(&dir, "b.txt"));
    std::fs::create_dir_all(dir.join("d1")).unwrap();
    for name in ["a.txt", "c.txt", "w.txt", "d1/f.txt"] {
        std::fs::write(dir.join(name), "x").unwrap();
    }
    // A tmpfs on a private tmpfs, to be moved from mnt/in to mnt/moved while the agent opens a file
    // on it.
    let outer_dir = dir.join("mnt");
    std::fs::create_dir_all(&outer_dir).unwrap();
    let outer = Mount::private_tmpfs(&outer_dir);
    let (inner_dir, moved_dir) = (outer_dir.join("in"), outer_dir.join("moved"));
    std::fs::create_dir(&inner_dir).unwrap();
    std::fs::create_dir(&moved_dir).unwrap();
    let inner = Mount::private_tmpfs(&inner_dir);
    std::fs::write(inner_dir.join("g.txt"), "x").unwrap();
    let agent = RepeatAgent::new(&daemon);
    let path = |name: &str| dir.join(name).display().to_string();
    let (a, b, c, w) = (path("a.txt"), path("b.txt"), path("c.txt"), path("w.txt"));
    let (f, f_moved) = (path("d1/f.txt"), path("moved/f.txt"));
    let (g, g_moved) = (path("mnt/in/g.txt"), path("mnt/moved/g.txt"));
    let mount_ready = daemon.work().join("mount-ready");
    // Before the reload: w read (counted), then opened for writing (denied) between reads; a
    // counted, a renamed to b (now denied by its name), c renamed to a (allowed again, another
    // dentry under the same path); f counted, its directory renamed to a denied one; g counted until
    // its mount is moved below a denied directory. After the reload a is the denied name and b the
    // allowed one.
    let before = [
        vec![w.clone(); 4],
        vec![format!("t:{w}")],
        vec![w.clone(); 2],
        vec![format!("w:{w}")],
        vec![w.clone()],
        vec![a.clone(); 4],
        vec![format!("mv:{a},{b}")],
        vec![b.clone(); 3],
        vec![a.clone()],
        vec![format!("mv:{c},{a}")],
        vec![a.clone(); 3],
        vec![f.clone(); 3],
        vec![format!("mv:{},{}", path("d1"), path("moved"))],
        vec![f_moved.clone(); 2],
        vec![format!("poll:{g},{g_moved},{}", mount_ready.display())],
        vec![g_moved.clone()],
    ]
    .concat();
    let after = [vec![a.clone(); 3], vec![b.clone(); 3], vec![w.clone(); 2]].concat();
    let args = [before.clone(), vec![agent.wait_step()], after.clone()].concat();
    let policy_file = daemon.work().join("policy.yaml");
    let ctx = CompileContext::new(safeclaw_agent::policy::launching_user_home());
    let policy_before = load_file(&policy_file).unwrap();
    let output = agent.run_across_reload(&daemon, &args, &repeat_policy(&dir, "a.txt"), |ended| {
        wait_for(&mount_ready, ended, "the agent reached the mount move");
        // Long enough for a few dozen counted opens of g, then the move.
        std::thread::sleep(std::time::Duration::from_millis(400));
        nix::mount::mount(
            Some(inner_dir.as_path()),
            moved_dir.as_path(),
            None::<&str>,
            nix::mount::MsFlags::MS_MOVE,
            None::<&str>,
        )
        .unwrap();
    });
    assert!(output.status.success(), "{output:?}");
    let policy_after = load_file(&policy_file).unwrap();
    let answers: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    // (policy hash, path, mode, effect) → attempts.
    let mut attempts: HashMap<(String, String, &'static str, &'static str), u64> = HashMap::new();
    let mut answered = answers.iter();
    for (policy, opens) in [(&policy_before, &before), (&policy_after, &after)] {
        let hash = compile_all(policy, &ctx).unwrap().hash.to_string();
        let evaluator = Evaluator::new(policy, None, &ctx).unwrap();
        for open in opens.iter().filter(|o| !o.starts_with("mv:")) {
            let mut answer = answered.next().unwrap_or_else(|| panic!("no answer for {open}: {answers:?}"));
            let mut open = open.as_str();
            if let Some(polled) = open.strip_prefix("poll:") {
                let opened: u64 = answer.parse().unwrap_or_else(|e| panic!("{open}: count {answer:?}: {e}"));
                assert!(opened >= 10, "{open}: g was opened {opened} times before the move");
                let request = Request::FileOpen { path: g.as_bytes(), read: true, write: false };
                let effect = evaluator.evaluate(&request).effect;
                assert_eq!(effect, Effect::Allow, "{open}: g is allowed before the move");
                *attempts.entry((hash.clone(), g.clone(), "r", effect.as_str())).or_default() += opened;
                open = polled.split(',').nth(1).unwrap_or_default();
                answer = answered.next().unwrap_or_else(|| panic!("no answer for {open}: {answers:?}"));
            }
            let (mode, read, write, file) = match open.split_once(':') {
                Some(("w", file)) => ("w", false, true, file),
                Some(("t", file)) => ("rw", true, true, file),
                _ => ("r", true, false, open),
            };
            if answer == "enoent" {
                assert_eq!(file, a, "only a is missing, between the renames");
                continue;
            }
            let effect = evaluator.evaluate(&Request::FileOpen { path: file.as_bytes(), read, write }).effect;
            assert_eq!(
                answer == "1",
                effect == Effect::Deny,
                "{open}: kernel {answer}, evaluator {effect:?}"
            );
            *attempts.entry((hash.clone(), file.to_owned(), mode, effect.as_str())).or_default() += 1;
        }
    }
    assert!(answered.next().is_none(), "one answer per open: {answers:?}");
    drop((inner, outer));
    let (status, entries) = daemon.stop();
    assert!(status.success());
    let mut recorded: HashMap<(String, String, &'static str, &'static str), u64> = HashMap::new();
    let mut counted_paths = std::collections::HashSet::new();
    for entry in &entries {
        let path = entry["requestDetails"]["path"].as_str().unwrap_or_default();
        // Renames are recorded as writes of their source; only reads, and the opens of w, are counted here.
        if !path.starts_with(&dir.display().to_string()) || (entry["action"] != "file.read" && path != w) {
            continue;
        }
        let mode = match entry["requestDetails"]["mode"].as_str() {
            Some("r") => "r",
            Some("w") => "w",
            Some("rw") => "rw",
            other => panic!("unexpected mode {other:?}: {entry}"),
        };
        let (effect, count) = effect_and_attempts(entry);
        if entry["repeats"].is_object() {
            counted_paths.insert(path.to_owned());
        }
        let hash = entry["policyHash"].as_str().unwrap_or_default().to_string();
        *recorded.entry((hash, path.to_string(), mode, effect)).or_default() += count;
    }
    assert_eq!(recorded, attempts, "every attempt accounted for once, under the policy that decided it");
    for repeated in [&a, &w, &f, &g] {
        assert!(
            counted_paths.contains(repeated),
            "the repeated opens of {repeated} were counted: {entries:#?}"
        );
    }
}

/// Loopback connects allowed but to `denied_port` (and to any other address); what python needs.
fn connect_policy(dir: &std::path::Path, denied_port: u16) -> String {
    let dir = dir.display();
    format!(
        "version: 1\ndefault: deny\nrules:\n\
         \x20 - name: no-port\n    action: network.connect\n    effect: deny\n    cidrs: [127.0.0.1/32]\n    ports: [{denied_port}]\n\
         \x20 - name: loopback\n    action: network.connect\n    effect: allow\n    cidrs: [127.0.0.1/32]\n{}",
        agent_rules(&dir)
    )
}

/// One process connects again and again, so that the kernel counts the repeats and serves them from
/// its memo of the last counted attempt, between connects to a denied port, to a denied address and
/// an open, and after a reload that denies the repeated port: each must be decided afresh.
#[test]
fn counted_connects_never_outlive_a_reload_or_serve_another_destination() {
    const CONNECT_NAME: &str = "safeclaw-it-agree-connect";
    const FIRST: u16 = 47_011;
    const SECOND: u16 = 47_012;
    let dir = std::env::temp_dir().join(CONNECT_NAME).join("t");
    let daemon = Daemon::start(CONNECT_NAME, &connect_policy(&dir, SECOND));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.txt").display().to_string();
    std::fs::write(&file, "x").unwrap();
    let agent = RepeatAgent::new(&daemon);
    let connect = |address: &str, port: u16| format!("c:{address}:{port}");
    let (first, second) = (connect("127.0.0.1", FIRST), connect("127.0.0.1", SECOND));
    let other = connect("127.0.0.2", FIRST);
    let before = [
        vec![first.clone(); 4],
        vec![second.clone()],
        vec![first.clone(); 3],
        vec![file.clone(); 2],
        vec![first.clone(); 2],
        vec![other.clone()],
        vec![first.clone(); 3],
    ]
    .concat();
    let after = [vec![first.clone(); 3], vec![second.clone(); 3], vec![first.clone()]].concat();
    let args = [before.clone(), vec![agent.wait_step()], after.clone()].concat();
    let policy_file = daemon.work().join("policy.yaml");
    let ctx = CompileContext::new(safeclaw_agent::policy::launching_user_home());
    let policy_before = load_file(&policy_file).unwrap();
    let output = agent.run_across_reload(&daemon, &args, &connect_policy(&dir, FIRST), |_| {});
    assert!(output.status.success(), "{output:?}");
    let policy_after = load_file(&policy_file).unwrap();
    let answers: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    // (policy hash, address, port, effect) → connects.
    let mut attempts: HashMap<(String, String, u64, &'static str), u64> = HashMap::new();
    let mut answered = answers.iter();
    for (policy, steps) in [(&policy_before, &before), (&policy_after, &after)] {
        let hash = compile_all(policy, &ctx).unwrap().hash.to_string();
        let evaluator = Evaluator::new(policy, None, &ctx).unwrap();
        for step in steps {
            let answer = answered.next().unwrap_or_else(|| panic!("no answer for {step}: {answers:?}"));
            let request = match step.strip_prefix("c:").and_then(|c| c.rsplit_once(':')) {
                Some((address, port)) => {
                    let address: IpAddr = address.parse().unwrap();
                    let port: u16 = port.parse().unwrap();
                    let effect = evaluator
                        .evaluate(&Request::ConnectInet { protocol: 6, addr: mapped(&address), port })
                        .effect;
                    *attempts
                        .entry((hash.clone(), address.to_string(), port.into(), effect.as_str()))
                        .or_default() += 1;
                    effect
                }
                None => {
                    evaluator
                        .evaluate(&Request::FileOpen { path: step.as_bytes(), read: true, write: false })
                        .effect
                }
            };
            assert_eq!(
                answer == "1",
                request == Effect::Deny,
                "{step}: kernel {answer}, evaluator {request:?}"
            );
        }
    }
    assert!(answered.next().is_none(), "one answer per step: {answers:?}");
    let (status, entries) = daemon.stop();
    assert!(status.success());
    let mut recorded: HashMap<(String, String, u64, &'static str), u64> = HashMap::new();
    let mut counted = false;
    for entry in entries.iter().filter(|e| e["action"] == "network.connect") {
        let port = entry["requestDetails"]["port"].as_u64().unwrap_or_default();
        if port != u64::from(FIRST) && port != u64::from(SECOND) {
            continue;
        }
        let (effect, count) = effect_and_attempts(entry);
        counted |= entry["repeats"].is_object();
        let address = entry["requestDetails"]["address"].as_str().unwrap_or_default().to_string();
        let hash = entry["policyHash"].as_str().unwrap_or_default().to_string();
        *recorded.entry((hash, address, port, effect)).or_default() += count;
    }
    assert_eq!(recorded, attempts, "every connect accounted for once, under the policy that decided it");
    assert!(counted, "the repeated connects were counted: {entries:#?}");
}

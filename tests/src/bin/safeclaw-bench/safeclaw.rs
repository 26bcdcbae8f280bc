//! SafeClaw under test: the real daemon (`safeclaw-agent run`, full audit log on the guest's tmpfs), its
//! policies (policies/default.yaml and generated ones of N rules) and what its audit log holds.
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use safeclaw_integration::Daemon;

use crate::ops::Fixture;

/// The agent cgroup's name under the cgroup2 root.
pub const CGROUP: &str = "bench-agents";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Policy {
    Default,
    Rules(u32),
}

impl Policy {
    pub fn label(self) -> String {
        match self {
            Policy::Default => "policies/default.yaml".into(),
            Policy::Rules(n) => format!("{n} rules"),
        }
    }

    pub fn yaml(self, fixture: &Fixture) -> anyhow::Result<String> {
        match self {
            Policy::Default => {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
            }
            Policy::Rules(n) => Ok(generated_policy(n, fixture)),
        }
    }
}

/// A deny-by-default policy of exactly `rules` rules (at least 5): generated data, tool and network rules,
/// then the five rules the bench's operations need.
fn generated_policy(rules: u32, fixture: &Fixture) -> String {
    let dir = fixture.dir.display();
    let mut yaml = String::from("version: 1\ndefault: deny\nrules:\n");
    for i in 0..rules.saturating_sub(5) {
        // Three in five are network rules: path rules cost DFA states, and 10,000 of them would pass
        // MAX_DFA_TRANSITIONS.
        let rule = match i % 5 {
            0 => format!("    action: file.read\n    paths: [/srv/d{i}/*.csv]\n"),
            1 => format!("    action: process.exec\n    binary: [/opt/t{i}/*]\n"),
            _ => format!(
                "    action: network.connect\n    cidrs: [10.{}.{}.0/24]\n    ports: [443]\n",
                i / 256 % 256,
                i % 256
            ),
        };
        yaml.push_str(&format!("  - name: generated-{i}\n    effect: allow\n{rule}"));
    }
    yaml.push_str(&format!(
        "  - name: bench-secret\n    action: file.*\n    effect: deny\n    paths: [{}]\n\
         \x20 - name: bench-workspace\n    action: file.*\n    effect: allow\n    paths: [{dir}/**]\n\
         \x20 - name: bench-binary\n    action: process.exec\n    effect: allow\n    binary: [{}]\n\
         \x20 - name: system-read\n    action: file.read\n    effect: allow\n    paths: [\"/{{usr,lib,lib64,bin,sbin,etc}}/**\"]\n\
         \x20 - name: loopback\n    action: network.connect\n    effect: allow\n    cidrs: [127.0.0.0/8]\n",
        fixture.denied_path(),
        fixture.binary_path()
    ));
    yaml
}

/// The complete JSON lines of an audit log (a line being written is left for the next read).
pub fn entries(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// The number of entries once the daemon has written all it had (two equal counts 300 ms apart).
pub fn settled_count(daemon: &Daemon) -> u64 {
    crate::peers::settle(|| entries(&daemon.audit_log).len() as u64)
}

/// Starts the daemon on `policy` and waits until it enforces.
pub fn start(policy: Policy, fixture: &Fixture) -> anyhow::Result<Daemon> {
    Ok(Daemon::start(CGROUP, &policy.yaml(fixture)?))
}

/// Replaces the daemon's policy file, sends SIGHUP and waits for the `policy.load` entry; the seconds
/// that took. Only the log written after the signal is read: a reload is timed, not the log's length.
pub fn reload(daemon: &Daemon, policy: Policy, fixture: &Fixture) -> anyhow::Result<f64> {
    use std::io::{Read as _, Seek as _};
    std::fs::write(daemon.work().join("policy.yaml"), policy.yaml(fixture)?)?;
    let mut log = std::fs::File::open(&daemon.audit_log).context("opening the audit log")?;
    log.seek(std::io::SeekFrom::End(0))?;
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    let mut written = String::new();
    loop {
        log.read_to_string(&mut written)?;
        let complete = written.rfind('\n').map_or("", |end| &written[..end]);
        for entry in complete.lines().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        {
            match entry["action"].as_str() {
                Some("policy.load") => return Ok(started.elapsed().as_secs_f64()),
                Some("policy.reload_rejected") => bail!("the daemon refused {}", policy.label()),
                _ => {}
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the daemon did not load {} within 300 s", policy.label());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process's RSS by kind, in kB (/proc/PID/status).
#[derive(Clone, Copy)]
pub struct RssSplit {
    /// The heap and stacks.
    pub anon: u64,
    /// Mapped files: the binary, its libraries, and BPF map pages the process has mapped.
    pub file: u64,
    pub shmem: u64,
}

impl RssSplit {
    pub fn of(pid: u32) -> anyhow::Result<RssSplit> {
        Ok(RssSplit {
            anon: status_kb(pid, "RssAnon")?,
            file: status_kb(pid, "RssFile")?,
            shmem: status_kb(pid, "RssShmem")?,
        })
    }
}

/// A number from /proc/PID/status in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix(" kB")?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Resident kB of the BPF maps the process has mapped (the event ring's pages, which the consumer
/// touches as it reads), from the `Rss` of its `anon_inode:bpf-map` mappings in /proc/PID/smaps.
pub fn mapped_bpf_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut in_bpf_map = false;
    let mut total = 0;
    for line in text.lines() {
        // A mapping's header line starts with its address range; its fields follow, one per line.
        let is_header = line.split_whitespace().next().is_some_and(|first| {
            first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        });
        if is_header {
            in_bpf_map = line.ends_with("anon_inode:bpf-map");
        } else if in_bpf_map {
            if let Some(kb) = line.strip_prefix("Rss:") {
                total += kb.trim().trim_end_matches(" kB").trim().parse::<u64>().context("an Rss line")?;
            }
        }
    }
    Ok(total)
}

/// Bytes the kernel charges for the BPF maps the process holds (`memlock` of each map fd).
pub fn bpf_map_bytes(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))?.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if text.contains("map_type:") {
            total += text
                .lines()
                .find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

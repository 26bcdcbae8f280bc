//! The tools users would pick instead of SafeClaw, set up as in /work/shared/bench-peers.md: auditd logging
//! the measured processes' opens, execs and connects, and fapolicyd deciding every open in userspace.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::ops::{Fixture, BENCH_AUID};

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fails naming the package when a peer's program is missing, before anything is measured.
pub fn require_installed() -> anyhow::Result<()> {
    for (program, package) in [("auditd", "auditd"), ("auditctl", "auditd"), ("fapolicyd", "fapolicyd")] {
        if !Path::new("/usr/sbin").join(program).exists() {
            bail!("peer package `{package}` is not installed (/usr/sbin/{program} is missing): run `cargo xtask setup`");
        }
    }
    Ok(())
}

fn mount_tmpfs(dir: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).ok();
    run("mount", &["-t", "tmpfs", "tmpfs", dir])?;
    Ok(())
}

fn edit_config(path: &str, settings: &[(&str, &str)]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match settings.iter().find(|(k, _)| *k == key) {
            Some((k, v)) => out.push_str(&format!("{k} = {v}\n")),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {path}"))
}

/// `auditd -n`, running the whole boot; its rules are in place only while [`Auditd::enable`] holds.
pub struct Auditd {
    child: Child,
}

const AUDIT_LOG: &str = "/var/log/audit/audit.log";

impl Auditd {
    pub fn start() -> anyhow::Result<Auditd> {
        mount_tmpfs("/var/log")?;
        std::fs::create_dir_all("/var/log/audit")?;
        edit_config(
            "/etc/audit/auditd.conf",
            &[
                ("max_log_file", "1000"),
                ("max_log_file_action", "IGNORE"),
                ("space_left", "10"),
                ("admin_space_left", "5"),
                ("use_libwrap", "no"),
            ],
        )?;
        let child = Command::new("auditd")
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start auditd")?;
        let mut auditd = Auditd { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while auditd.status_field("pid")? == 0 {
            if let Some(status) = auditd.child.try_wait()? {
                bail!("auditd exited with {status} at start");
            }
            if Instant::now() > deadline {
                bail!("auditd did not register with the kernel within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run("auditctl", &["-b", "8192"])?;
        run("auditctl", &["--backlog_wait_time", "60000"])?;
        run("auditctl", &["-f", "1"])?;
        auditd.disable()?;
        Ok(auditd)
    }

    /// A number from `auditctl -s` (`pid`, `lost`, `backlog`, ...).
    pub fn status_field(&self, name: &str) -> anyhow::Result<u64> {
        let text = run("auditctl", &["-s"])?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().split(' ').next()?.parse().ok()))
            .with_context(|| format!("auditctl -s has no `{name}`: {text}"))
    }

    /// Logs every openat, execve and connect of the measured processes (login uid [`BENCH_AUID`]).
    pub fn enable(&self) -> anyhow::Result<()> {
        run("auditctl", &["-D"])?;
        run("auditctl", &["-e", "1"])?;
        let auid = format!("auid={BENCH_AUID}");
        run(
            "auditctl",
            &[
                "-a",
                "always,exit",
                "-F",
                "arch=b64",
                "-S",
                "openat,execve,connect",
                "-F",
                &auid,
                "-k",
                "bench",
            ],
        )?;
        Ok(())
    }

    /// No rules and no audit context for new tasks: auditd costs nothing on the measured paths.
    pub fn disable(&self) -> anyhow::Result<()> {
        run("auditctl", &["-D"])?;
        run("auditctl", &["-a", "never,task"])?;
        run("auditctl", &["-e", "0"])?;
        Ok(())
    }

    /// SYSCALL records with the bench key written so far.
    pub fn records(&self) -> u64 {
        std::fs::read_to_string(AUDIT_LOG)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains("key=\"bench\""))
            .count() as u64
    }

    /// Records once auditd has written all the kernel queued (two equal counts 300 ms apart).
    pub fn settled_records(&self) -> u64 {
        settle(|| self.records())
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.disable()?;
        terminate(&mut self.child)
    }
}

/// A bench that fails part-way stops auditd too, rather than leave it logging the next test's calls.
impl Drop for Auditd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.disable().ok();
            terminate(&mut self.child).ok();
        }
    }
}

/// SIGTERM to a peer daemon, and its exit awaited.
fn terminate(child: &mut Child) -> anyhow::Result<()> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)?;
    child.wait()?;
    Ok(())
}

/// Polls `count` until two reads 300 ms apart agree (bounded to a minute).
pub fn settle(mut count: impl FnMut() -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = count();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = count();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// fapolicyd's configuration for the bench; [`Fapolicyd::start`] runs it.
pub struct FapolicydSetup {
    starts: u32,
}

/// What fapolicyd reported at shutdown.
#[derive(Clone, Copy, Debug, Default)]
pub struct Decisions {
    pub allowed: u64,
    pub denied: u64,
}

pub struct Fapolicyd {
    child: Child,
    log: PathBuf,
}

impl FapolicydSetup {
    /// Allows the bench's file, denies its `.env` (logged), allows everything else, every open decided
    /// in userspace; watches tmpfs and the virtiofs root so that it sees the same opens as SafeClaw.
    pub fn prepare(fixture: &Fixture) -> anyhow::Result<FapolicydSetup> {
        mount_tmpfs("/var/lib/fapolicyd")?;
        std::fs::create_dir_all("/run/fapolicyd")?;
        run("chown", &["fapolicyd:fapolicyd", "/var/lib/fapolicyd", "/run/fapolicyd"])?;
        edit_config(
            "/etc/fapolicyd/fapolicyd.conf",
            &[("permissive", "0"), ("trust", "file"), ("watch_fs", "ext4,tmpfs,xfs,btrfs,virtiofs,fuse")],
        )?;
        std::fs::write("/etc/fapolicyd/fapolicyd.trust", "")?;
        for entry in std::fs::read_dir("/etc/fapolicyd/rules.d")?.flatten() {
            std::fs::remove_file(entry.path())?;
        }
        std::fs::write(
            "/etc/fapolicyd/compiled.rules",
            format!(
                "allow perm=open all : path={}\ndeny_audit perm=any all : path={}\nallow perm=any all : all\n",
                fixture.allowed_path(),
                fixture.denied_path()
            ),
        )?;
        Ok(FapolicydSetup { starts: 0 })
    }

    pub fn start(&mut self) -> anyhow::Result<Fapolicyd> {
        self.starts += 1;
        let log = PathBuf::from(format!("/tmp/fapolicyd-{}.log", self.starts));
        let file = std::fs::File::create(&log)?;
        let child = Command::new("fapolicyd")
            .arg("--debug-deny")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cannot start fapolicyd")?;
        let mut daemon = Fapolicyd { child, log };
        let deadline = Instant::now() + Duration::from_secs(180);
        while !daemon.log_text().contains("Starting to listen for events") {
            if let Some(status) = daemon.child.try_wait()? {
                bail!("fapolicyd exited with {status} at start: {}", daemon.log_text());
            }
            if Instant::now() > deadline {
                bail!("fapolicyd was not listening after 180 s: {}", daemon.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(daemon)
    }
}

/// A bench that fails part-way stops fapolicyd too: left running, it would decide every open that follows.
impl Drop for Fapolicyd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            terminate(&mut self.child).ok();
        }
    }
}

impl Fapolicyd {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait, and the decision counts of its shutdown report.
    pub fn stop(mut self) -> anyhow::Result<Decisions> {
        terminate(&mut self.child)?;
        let text = self.log_text();
        let count = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .with_context(|| format!("fapolicyd's report has no `{name}`: {text}"))
        };
        Ok(Decisions { allowed: count("Allowed accesses:")?, denied: count("Denied accesses:")? })
    }
}

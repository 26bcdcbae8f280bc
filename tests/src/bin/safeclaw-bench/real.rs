//! Real workloads (git status, git commit, a C build, Python imports) in a fixture of their own.
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _};

use crate::ops::BENCH_AUID;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Workload {
    GitStatus,
    GitCommit,
    CBuild,
    PythonImport,
}

impl Workload {
    pub const ALL: [Workload; 4] =
        [Workload::GitStatus, Workload::GitCommit, Workload::CBuild, Workload::PythonImport];

    pub fn label(self) -> &'static str {
        match self {
            Workload::GitStatus => "git status",
            Workload::GitCommit => "git commit -a (one file changed)",
            Workload::CBuild => "cc -O1 of a 2-file C project",
            Workload::PythonImport => "python3 -c \"import json, email, http.client\"",
        }
    }
}

const GIT_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "bench"),
    ("GIT_AUTHOR_EMAIL", "bench@example.invalid"),
    ("GIT_COMMITTER_NAME", "bench"),
    ("GIT_COMMITTER_EMAIL", "bench@example.invalid"),
];

/// A git repository of `files` files and a small C project under `dir` (a default.yaml workspace).
pub struct Projects {
    dir: PathBuf,
}

impl Projects {
    pub fn create(dir: &Path, files: u32) -> anyhow::Result<Projects> {
        let repo = dir.join("repo");
        for i in 0..files {
            let sub = repo.join(format!("d{}", i / 100));
            std::fs::create_dir_all(&sub)?;
            std::fs::write(sub.join(format!("f{i}.txt")), format!("file {i}\n").repeat(8))?;
        }
        let c = dir.join("cproject");
        std::fs::create_dir_all(&c)?;
        for part in 0..2 {
            let mut source = String::from("#include <stdio.h>\n#include <string.h>\n");
            for f in 0..10 {
                source.push_str(&format!(
                    "int p{part}_f{f}(const char *s) {{ int h = {f}; while (*s) h = h * 31 + *s++; return h ^ (int)strlen(\"{part}\"); }}\n"
                ));
            }
            if part == 0 {
                source.push_str("int main(void) { printf(\"%d\\n\", p0_f1(\"x\")); return 0; }\n");
            }
            std::fs::write(c.join(format!("part{part}.c")), source)?;
        }
        let projects = Projects { dir: dir.to_owned() };
        for args in [&["init", "-q"][..], &["add", "-A"], &["commit", "-q", "-m", "initial"]] {
            let status = projects.git().args(args).status().context("cannot run git")?;
            if !status.success() {
                bail!("git {} failed in the fixture ({status})", args.join(" "));
            }
        }
        Ok(projects)
    }

    fn git(&self) -> Command {
        let mut git = Command::new("git");
        git.arg("-C")
            .arg(self.dir.join("repo"))
            .envs(GIT_IDENTITY)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        git
    }

    fn command(&self, workload: Workload) -> Command {
        match workload {
            Workload::GitStatus => {
                let mut git = self.git();
                git.args(["status", "--porcelain"]);
                git
            }
            Workload::GitCommit => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg("date +%s%N >> d0/f0.txt && exec git commit -q -a -m bench")
                    .current_dir(self.dir.join("repo"))
                    .envs(GIT_IDENTITY)
                    .stdin(Stdio::null());
                sh
            }
            Workload::CBuild => {
                let mut cc = Command::new("sh");
                cc.args(["-c", "exec cc -O1 -o app part0.c part1.c"])
                    .current_dir(self.dir.join("cproject"))
                    .stdin(Stdio::null());
                cc
            }
            Workload::PythonImport => {
                let mut py = Command::new("sh");
                // From the workspace, as an agent would run it (Python reads its working directory).
                py.args(["-c", "exec python3 -c 'import json, email, http.client'"])
                    .current_dir(&self.dir)
                    .stdin(Stdio::null());
                py
            }
        }
    }

    /// Runs `workload` once with the bench login uid, inside `cgroup` if given; its wall time in seconds.
    pub fn run(&self, workload: Workload, cgroup: Option<&Path>) -> anyhow::Result<f64> {
        let mut command = self.command(workload);
        let procs = cgroup
            .map(|c| std::ffi::CString::new(c.join("cgroup.procs").into_os_string().into_encoded_bytes()))
            .transpose()?;
        let auid = BENCH_AUID.to_string();
        // SAFETY: only open/write/close between fork and exec.
        unsafe {
            command.pre_exec(move || {
                write_file(c"/proc/self/loginuid", auid.as_bytes())?;
                if let Some(procs) = &procs {
                    write_file(procs, b"0")?;
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let output = command
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", workload.label()))?;
        let seconds = start.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                workload.label(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(seconds)
    }
}

fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: open/write/close with a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written < 0 {
            return Err(error);
        }
    }
    Ok(())
}

//! Ending every agent process before enforcement ends: the agent cgroup is frozen, so nothing in it
//! runs, forks or moves while it is counted and killed, then killed as a whole with `cgroup.kill`
//! (Linux 5.14) and thawed once empty. Until it is empty nothing may be detached: a process that
//! survived would run unenforced.
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the killed processes get to leave the cgroup.
pub const EMPTY_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("cannot {what} {path}: {source}")]
    Write { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("agent processes were still in {path} {EMPTY_WAIT:?} after cgroup.kill; still enforcing")]
    StillPopulated { path: PathBuf },
}

/// Freezes, counts and kills every process in `agents` and below, waits until none is left and
/// thaws the (empty) cgroup; the number of processes killed.
pub fn end_every_agent_process(agents: &Path) -> Result<u64, StopError> {
    let write = |file: &str, value: &str, what: &'static str| {
        let path = agents.join(file);
        std::fs::write(&path, value).map_err(|source| StopError::Write { what, path, source })
    };
    write("cgroup.freeze", "1", "freeze")?;
    let killed = count_processes(agents)?;
    let outcome = write("cgroup.kill", "1", "kill the processes of").and_then(|()| wait_empty(agents));
    // Thawed even when processes survive: they are dying, and a frozen agent cgroup would freeze
    // every session started after this daemon.
    let thawed = write("cgroup.freeze", "0", "thaw");
    outcome.and(thawed).map(|()| killed)
}

/// Processes in `cgroup` and every cgroup below it.
fn count_processes(cgroup: &Path) -> Result<u64, StopError> {
    let procs = cgroup.join("cgroup.procs");
    let mut count = match std::fs::read_to_string(&procs) {
        Ok(text) => text.lines().count() as u64,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(StopError::Read { path: procs, source }),
    };
    let entries =
        std::fs::read_dir(cgroup).map_err(|source| StopError::Read { path: cgroup.into(), source })?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            count += count_processes(&entry.path())?;
        }
    }
    Ok(count)
}

/// Waits until `cgroup.events` says `populated 0` (no process left in the whole subtree).
fn wait_empty(cgroup: &Path) -> Result<(), StopError> {
    let events = cgroup.join("cgroup.events");
    let deadline = Instant::now() + EMPTY_WAIT;
    loop {
        let text = std::fs::read_to_string(&events)
            .map_err(|source| StopError::Read { path: events.clone(), source })?;
        if text.lines().any(|line| line == "populated 0") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StopError::StillPopulated { path: cgroup.to_path_buf() });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_process_in_the_tree_is_killed_and_the_cgroup_thawed() {
        assert!(nix::unistd::geteuid().is_root(), "this test creates cgroups: run it as root");
        let mount = crate::cgroup::find_mount().unwrap();
        let name = format!("safeclaw-stop-test-{}", std::process::id());
        let (agents, _) = crate::cgroup::ensure(&mount, &name).unwrap();
        let session = agents.path.join("agent/sess_a");
        std::fs::create_dir_all(&session).unwrap();
        // Two processes in the session, one directly in the agent cgroup.
        let spawn_in = |cgroup: &Path| {
            let script = format!("echo $$ > {}/cgroup.procs && exec sleep 60", cgroup.display());
            std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap()
        };
        let mut children = vec![spawn_in(&session), spawn_in(&session), spawn_in(&agents.path)];
        let deadline = Instant::now() + Duration::from_secs(20);
        while count_processes(&agents.path).unwrap() < 3 {
            assert!(Instant::now() < deadline, "the test processes never joined their cgroups");
            std::thread::sleep(POLL);
        }
        assert_eq!(end_every_agent_process(&agents.path).unwrap(), 3);
        for child in &mut children {
            assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
        }
        let freeze = std::fs::read_to_string(agents.path.join("cgroup.freeze")).unwrap();
        assert_eq!(freeze.trim(), "0", "thawed");
        assert_eq!(end_every_agent_process(&agents.path).unwrap(), 0, "an empty cgroup ends at once");
        for dir in [session.as_path(), session.parent().unwrap(), agents.path.as_path()] {
            std::fs::remove_dir(dir).unwrap();
        }
    }
}

//! A session's cgroup `<agent cgroup>/<agent>/<session>`: created empty, then emptied and removed when it ends.
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{AgentId, SessionId};
use crate::cgroup::Cgroup;

/// How long [`remove`] waits for killed processes to leave a session cgroup.
pub const EMPTY_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionCgroupError {
    #[error(transparent)]
    Name(#[from] crate::cgroup::CgroupError),
    #[error("agent cgroup {0} does not exist: is `safeclaw-agent run` running with this --cgroup?")]
    NoAgentCgroup(PathBuf),
    #[error("session cgroup {0} already exists: pick another --session")]
    Exists(PathBuf),
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot stat cgroup {path}: {source}")]
    Stat { path: PathBuf, source: std::io::Error },
    #[error("cannot end the processes left in {path}: {source}")]
    Kill { path: PathBuf, source: std::io::Error },
    #[error("processes {pids:?} were still in {path} after {EMPTY_WAIT:?}; left the cgroup in place")]
    StillPopulated { path: PathBuf, pids: Vec<u32> },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
}

/// The agent cgroup the daemon enforces on, which must already exist (the daemon creates it).
pub fn open_agents(mount: &crate::cgroup::Mount, name: &str) -> Result<Cgroup, SessionCgroupError> {
    crate::cgroup::validate_name(name)?;
    let path = mount.path.join(name);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(Cgroup { path, id: meta.ino(), level: mount.root_depth + 1 }),
        Ok(_) => Err(SessionCgroupError::NoAgentCgroup(path)),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(SessionCgroupError::NoAgentCgroup(path)),
        Err(source) => Err(SessionCgroupError::Stat { path, source }),
    }
}

/// The session cgroup's path: the server checks a launcher's claim against it.
pub fn path_of(agents: &Path, agent: &AgentId, session: &SessionId) -> PathBuf {
    agents.join(agent.as_str()).join(session.as_str())
}

/// Creates `<agents>/<agent>/<session>` (and the agent directory if missing); the session must be new.
pub fn create(agents: &Cgroup, agent: &AgentId, session: &SessionId) -> Result<Cgroup, SessionCgroupError> {
    let agent_dir = agents.path.join(agent.as_str());
    let path = path_of(&agents.path, agent, session);
    let mut attempts = 3;
    loop {
        match std::fs::create_dir(&agent_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(SessionCgroupError::NoAgentCgroup(agents.path.clone()))
            }
            Err(source) => return Err(SessionCgroupError::Create { path: agent_dir, source }),
        }
        attempts -= 1;
        match std::fs::create_dir(&path) {
            Ok(()) => break,
            // The last session of this agent removed the agent directory between our two mkdirs.
            Err(e) if e.kind() == ErrorKind::NotFound && attempts > 0 => continue,
            Err(e) => {
                remove_if_empty(&agent_dir);
                return Err(if e.kind() == ErrorKind::AlreadyExists {
                    SessionCgroupError::Exists(path)
                } else {
                    SessionCgroupError::Create { path, source: e }
                });
            }
        }
    }
    match std::fs::metadata(&path) {
        Ok(meta) => Ok(Cgroup { path, id: meta.ino(), level: agents.level + 2 }),
        Err(source) => {
            let _ = remove(&path);
            Err(SessionCgroupError::Stat { path, source })
        }
    }
}

/// Kills whatever still runs in the session cgroup, waits (at most [`EMPTY_WAIT`]) until it is empty,
/// removes it, then removes the agent directory if no other session uses it. A missing cgroup is fine.
pub fn remove(session: &Path) -> Result<(), SessionCgroupError> {
    let deadline = Instant::now() + EMPTY_WAIT;
    // cgroup.kill (Linux 5.14+) kills every process at once, including ones forking right now.
    let has_kill_file = match std::fs::write(session.join("cgroup.kill"), "1") {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound && !session.exists() => return finish(session),
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(source) => return Err(SessionCgroupError::Kill { path: session.to_path_buf(), source }),
    };
    loop {
        let pids = procs(session)?;
        if pids.is_empty() {
            match std::fs::remove_dir(session) {
                Ok(()) => return finish(session),
                Err(e) if e.kind() == ErrorKind::NotFound => return finish(session),
                // Exited processes can keep the cgroup busy for a moment after leaving cgroup.procs.
                Err(e) if e.kind() == ErrorKind::ResourceBusy && Instant::now() < deadline => {}
                Err(source) => {
                    return Err(SessionCgroupError::Remove { path: session.to_path_buf(), source })
                }
            }
        } else if Instant::now() >= deadline {
            return Err(SessionCgroupError::StillPopulated { path: session.to_path_buf(), pids });
        } else if !has_kill_file {
            for pid in &pids {
                if let Ok(pid) = i32::try_from(*pid) {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

fn finish(session: &Path) -> Result<(), SessionCgroupError> {
    if let Some(agent_dir) = session.parent() {
        remove_if_empty(agent_dir);
    }
    Ok(())
}

/// Removes an agent directory unless another session still lives in it.
fn remove_if_empty(agent_dir: &Path) {
    match std::fs::remove_dir(agent_dir) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty | ErrorKind::ResourceBusy
            ) => {}
        Err(e) => tracing::warn!("left agent cgroup {} in place: {e}", agent_dir.display()),
    }
}

/// The processes in a cgroup; a cgroup that is gone has none.
pub fn procs(cgroup: &Path) -> Result<Vec<u32>, SessionCgroupError> {
    let path = cgroup.join("cgroup.procs");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SessionCgroupError::Stat { path, source }),
    };
    Ok(text.lines().filter_map(|line| line.trim().parse().ok()).collect())
}

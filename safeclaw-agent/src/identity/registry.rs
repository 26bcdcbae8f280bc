//! The daemon's table of sessions by cgroup id, shared by the socket server and the event loop.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{SessionId, SessionInfo};

/// How many ended sessions stay resolvable: kernel events recorded before a session ended can reach
/// the daemon after the end report does, and must still name their session.
pub const ENDED_KEPT: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("session {0} is already running")]
    DuplicateSession(SessionId),
    #[error("cgroup id {cgroup_id} already belongs to live session {session}")]
    DuplicateCgroup { cgroup_id: u64, session: SessionId },
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_cgroup: HashMap<u64, Entry>,
    live_sessions: HashMap<SessionId, u64>,
    /// Cgroup ids of ended sessions, oldest first.
    ended: VecDeque<u64>,
}

struct Entry {
    info: Arc<SessionInfo>,
    live: bool,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below leaves the maps consistent before anything can panic, so a poisoned lock
        // still guards valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a live session; refused if its session id or cgroup id is already live.
    pub fn insert(&self, info: SessionInfo) -> Result<Arc<SessionInfo>, RegistryError> {
        let mut inner = self.lock();
        if inner.live_sessions.contains_key(&info.session_id) {
            return Err(RegistryError::DuplicateSession(info.session_id));
        }
        if let Some(entry) = inner.by_cgroup.get(&info.cgroup_id).filter(|e| e.live) {
            return Err(RegistryError::DuplicateCgroup {
                cgroup_id: info.cgroup_id,
                session: entry.info.session_id.clone(),
            });
        }
        let info = Arc::new(info);
        inner.live_sessions.insert(info.session_id.clone(), info.cgroup_id);
        // A reused cgroup id replaces the ended session that had it.
        if inner.by_cgroup.contains_key(&info.cgroup_id) {
            inner.ended.retain(|id| *id != info.cgroup_id);
        }
        inner.by_cgroup.insert(info.cgroup_id, Entry { info: Arc::clone(&info), live: true });
        Ok(info)
    }

    /// Marks the session in `cgroup_id` ended; it stays resolvable until [`ENDED_KEPT`] newer sessions end.
    pub fn end(&self, cgroup_id: u64) -> Option<Arc<SessionInfo>> {
        let mut inner = self.lock();
        let entry = inner.by_cgroup.get_mut(&cgroup_id).filter(|e| e.live)?;
        entry.live = false;
        let info = Arc::clone(&entry.info);
        inner.live_sessions.remove(&info.session_id);
        inner.ended.push_back(cgroup_id);
        if inner.ended.len() > ENDED_KEPT {
            if let Some(oldest) = inner.ended.pop_front() {
                inner.by_cgroup.remove(&oldest);
            }
        }
        Some(info)
    }

    /// The session whose cgroup has exactly this id (live, or recently ended).
    pub fn get(&self, cgroup_id: u64) -> Option<Arc<SessionInfo>> {
        self.lock().by_cgroup.get(&cgroup_id).map(|e| Arc::clone(&e.info))
    }

    /// The session of the first id that has one: pass an event's cgroup id and then its ancestors'
    /// ids, so processes in a cgroup the agent made below its session cgroup are still attributed.
    pub fn find(&self, cgroup_ids: impl IntoIterator<Item = u64>) -> Option<Arc<SessionInfo>> {
        let inner = self.lock();
        cgroup_ids.into_iter().find_map(|id| inner.by_cgroup.get(&id)).map(|e| Arc::clone(&e.info))
    }

    /// Live sessions, oldest first.
    pub fn live(&self) -> Vec<Arc<SessionInfo>> {
        let inner = self.lock();
        let mut live: Vec<_> =
            inner.by_cgroup.values().filter(|e| e.live).map(|e| Arc::clone(&e.info)).collect();
        live.sort_by(|a, b| {
            (a.started_at.as_str(), a.session_id.as_str())
                .cmp(&(b.started_at.as_str(), b.session_id.as_str()))
        });
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, cgroup_id: u64) -> SessionInfo {
        serde_json::from_value(serde_json::json!({
            "agentId": "codex", "sessionId": id, "userId": "alice", "uid": 1000, "gid": 1000,
            "cgroupId": cgroup_id, "cgroupPath": format!("/sys/fs/cgroup/agents/codex/{id}"),
            "argv": ["codex"], "startedAt": format!("2026-02-13T10:45:{:02}.000Z", cgroup_id % 60),
            "launcherPid": 42
        }))
        .unwrap()
    }

    #[test]
    fn looks_up_by_exact_and_ancestor_cgroup_ids() {
        let registry = Registry::new();
        registry.insert(session("sess_a", 10)).unwrap();
        registry.insert(session("sess_b", 11)).unwrap();
        assert_eq!(registry.get(10).unwrap().session_id.as_str(), "sess_a");
        assert_eq!(registry.get(12), None);
        // An event from a child cgroup (id 99) whose ancestors are 11, then the agent dir, then the root.
        assert_eq!(registry.find([99, 11, 5, 1]).unwrap().session_id.as_str(), "sess_b");
        assert_eq!(registry.find([99, 5, 1]), None);
        let live: Vec<_> = registry.live().iter().map(|s| s.session_id.to_string()).collect();
        assert_eq!(live, ["sess_a", "sess_b"]);
    }

    #[test]
    fn refuses_duplicates_while_live() {
        let registry = Registry::new();
        registry.insert(session("sess_a", 10)).unwrap();
        assert!(matches!(registry.insert(session("sess_a", 20)), Err(RegistryError::DuplicateSession(_))));
        assert!(matches!(registry.insert(session("sess_b", 10)), Err(RegistryError::DuplicateCgroup { .. })));
        registry.end(10).unwrap();
        registry.insert(session("sess_a", 20)).unwrap();
        registry.insert(session("sess_b", 10)).unwrap();
        assert_eq!(registry.get(10).unwrap().session_id.as_str(), "sess_b");
    }

    #[test]
    fn ended_sessions_leave_the_list_but_resolve_for_a_while() {
        let registry = Registry::new();
        registry.insert(session("sess_a", 10)).unwrap();
        assert_eq!(registry.end(10).unwrap().session_id.as_str(), "sess_a");
        assert_eq!(registry.end(10), None, "ended twice");
        assert!(registry.live().is_empty());
        assert_eq!(registry.get(10).unwrap().session_id.as_str(), "sess_a");
        for n in 0..ENDED_KEPT as u64 {
            let id = format!("sess_n{n}");
            registry.insert(session(&id, 1000 + n)).unwrap();
            registry.end(1000 + n).unwrap();
        }
        assert_eq!(registry.get(10), None, "the oldest ended session is forgotten");
        assert!(registry.get(1000).is_some());
        assert_eq!(registry.lock().by_cgroup.len(), ENDED_KEPT);
    }
}

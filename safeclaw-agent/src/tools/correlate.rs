//! Linking kernel events to the tool call that caused them: a PreToolUse the policy allowed opens a
//! call in its session, its PostToolUse closes it; a kernel event of that session between the two
//! (by the kernel's boot-time stamp), from a process other than the CLI and its hooks, carries the
//! call's tool-use id. With two calls open at once in one session the link would be a guess, so
//! such events carry none.
use std::collections::HashMap;

use super::protocol::KernelDenial;

/// Closed calls kept per session for events that reach the daemon after the PostToolUse.
const CLOSED_KEPT: usize = 32;
/// A call never closed (the CLI died, or skipped its PostToolUse) stops linking after this long.
const OPEN_LIMIT_NS: u64 = 30 * 60 * 1_000_000_000;
/// Kernel denials remembered per call, for the PostToolUse receipt.
const DENIALS_KEPT: usize = 8;

#[derive(Debug)]
struct Call {
    tool_use_id: String,
    opened_ns: u64,
    closed_ns: Option<u64>,
    /// The hook and its ancestors in the session: the CLI's own events are not the tool's.
    own_pids: Vec<u32>,
    denials: Vec<KernelDenial>,
}

impl Call {
    fn covers(&self, boot_ns: u64) -> bool {
        let end = self.closed_ns.unwrap_or(self.opened_ns.saturating_add(OPEN_LIMIT_NS));
        (self.opened_ns..=end).contains(&boot_ns)
    }
}

/// Open and recently closed calls, by session cgroup id.
#[derive(Debug, Default)]
pub struct Correlator {
    sessions: HashMap<u64, Vec<Call>>,
}

impl Correlator {
    /// An allowed tool call starts now (`boot_ns`, CLOCK_BOOTTIME).
    pub fn open(&mut self, session: u64, tool_use_id: &str, boot_ns: u64, own_pids: Vec<u32>) {
        let calls = self.sessions.entry(session).or_default();
        calls.retain(|c| c.tool_use_id != tool_use_id);
        let closed = calls.iter().filter(|c| c.closed_ns.is_some()).count();
        if closed >= CLOSED_KEPT {
            if let Some(oldest) = calls.iter().position(|c| c.closed_ns.is_some()) {
                calls.remove(oldest);
            }
        }
        // Calls left open past their limit link nothing any more.
        calls.retain(|c| c.closed_ns.is_some() || boot_ns.saturating_sub(c.opened_ns) < OPEN_LIMIT_NS);
        calls.push(Call {
            tool_use_id: tool_use_id.to_owned(),
            opened_ns: boot_ns,
            closed_ns: None,
            own_pids,
            denials: Vec::new(),
        });
    }

    /// The call ends; the kernel denials linked to it.
    pub fn close(&mut self, session: u64, tool_use_id: &str, boot_ns: u64) -> Vec<KernelDenial> {
        let Some(call) = self.sessions.get_mut(&session).and_then(|calls| {
            calls.iter_mut().find(|c| c.tool_use_id == tool_use_id && c.closed_ns.is_none())
        }) else {
            return Vec::new();
        };
        call.closed_ns = Some(boot_ns);
        call.denials.clone()
    }

    /// The tool-use id of the one call of `session` that covers `boot_ns`, unless `tgid` is the CLI's.
    pub fn link(&self, session: u64, tgid: u32, boot_ns: u64) -> Option<&str> {
        let calls = self.sessions.get(&session)?;
        let mut covering = calls.iter().filter(|c| c.covers(boot_ns));
        let call = covering.next()?;
        if covering.next().is_some() || call.own_pids.contains(&tgid) {
            return None;
        }
        Some(&call.tool_use_id)
    }

    /// Remembers a kernel denial linked to `tool_use_id`, for the receipt its PostToolUse gets.
    pub fn note_denial(&mut self, session: u64, tool_use_id: &str, denial: KernelDenial) {
        if let Some(call) = self
            .sessions
            .get_mut(&session)
            .and_then(|calls| calls.iter_mut().find(|c| c.tool_use_id == tool_use_id))
        {
            if call.denials.len() < DENIALS_KEPT {
                call.denials.push(denial);
            }
        }
    }

    /// Forgets an ended session.
    pub fn end_session(&mut self, session: u64) {
        self.sessions.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_events_inside_one_calls_lifetime_only() {
        let mut c = Correlator::default();
        c.open(7, "toolu_a", 100, vec![50, 40]);
        assert_eq!(c.link(7, 60, 150), Some("toolu_a"));
        assert_eq!(c.link(7, 40, 150), None, "the CLI's own events");
        assert_eq!(c.link(7, 60, 99), None, "before the call");
        assert_eq!(c.link(8, 60, 150), None, "another session");
        let denial =
            KernelDenial { sequence: 12, action: "file.read".into(), target: "/k".into(), rule: None };
        c.note_denial(7, "toolu_a", denial.clone());
        assert_eq!(c.close(7, "toolu_a", 200), vec![denial]);
        assert_eq!(c.link(7, 60, 180), Some("toolu_a"), "recorded late, still inside the lifetime");
        assert_eq!(c.link(7, 60, 201), None, "after the call");
        c.open(7, "toolu_b", 300, vec![]);
        c.open(7, "toolu_c", 310, vec![]);
        assert_eq!(c.link(7, 60, 305), Some("toolu_b"));
        assert_eq!(c.link(7, 60, 320), None, "two calls open: ambiguous");
        c.end_session(7);
        assert_eq!(c.link(7, 60, 305), None);
    }
}

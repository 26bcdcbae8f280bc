//! The policies in the kernel's two slots, found by the generation stamped on their events, and the
//! ones reloads replaced lately.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use safeclaw_common::SessionProfiles;

use crate::policy::ActivePolicy;

/// How long a replaced policy stays known: past the longest repeat window, its margin and a sweep.
const RETIRED_POLICY_KEPT: Duration = Duration::from_secs(60);

/// Which policy each kernel slot holds, with the generation the kernel stamps on its events; and the
/// policies reloads replaced lately, which counted repeats (recorded a window after their attempt)
/// may still name.
#[derive(Default)]
pub struct Slots {
    current: [Option<(u32, ActivePolicy)>; 2],
    /// Oldest first, with when each was replaced; retired (`ActivePolicy::retire`).
    replaced: VecDeque<(Instant, u32, ActivePolicy)>,
}

impl Slots {
    /// The policy that decided an event, by the generation stamped on it.
    pub fn by_generation(&self, generation: u32) -> Option<&ActivePolicy> {
        let current = self.current.iter().flatten().map(|(g, p)| (*g, p));
        let replaced = self.replaced.iter().map(|(_, g, p)| (*g, p));
        current.chain(replaced).find(|(g, _)| *g == generation).map(|(_, p)| p)
    }

    /// The policy in `slot`, if one was installed there.
    pub fn in_slot(&self, slot: u32) -> Option<&ActivePolicy> {
        self.current.get(slot as usize)?.as_ref().map(|(_, p)| p)
    }

    /// Puts `policy` into `slot` (0 or 1), keeping the one it replaces known for a while, retired.
    pub fn fill(&mut self, slot: u32, generation: u32, policy: ActivePolicy) {
        let now = Instant::now();
        self.forget_retired_at(now);
        if let Some((old, mut replaced)) = self.current[slot as usize].replace((generation, policy)) {
            replaced.retire();
            self.replaced.push_back((now, old, replaced));
        }
    }

    /// Drops the replaced policies kept past `RETIRED_POLICY_KEPT`; whether there were any.
    pub fn forget_retired(&mut self) -> bool {
        self.forget_retired_at(Instant::now())
    }

    fn forget_retired_at(&mut self, now: Instant) -> bool {
        let kept = self.replaced.len();
        while self.replaced.front().is_some_and(|(at, ..)| now.duration_since(*at) > RETIRED_POLICY_KEPT) {
            self.replaced.pop_front();
        }
        self.replaced.len() < kept
    }

    /// The profile numbers `agent` is decided by in each slot (0 where a slot holds no policy).
    pub fn profiles_of(&self, agent: &str) -> SessionProfiles {
        let mut profiles = SessionProfiles::default();
        for (number, slot) in profiles.profile.iter_mut().zip(&self.current) {
            *number = slot.as_ref().map_or(0, |(_, policy)| policy.profile_number(agent));
        }
        profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySource;

    fn load(dir: &std::path::Path, name: &str, text: &str) -> ActivePolicy {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        PolicySource::new(&path).load().unwrap()
    }

    #[test]
    fn replaced_policies_stay_known_retired_for_a_minute_then_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let policy = |n: usize| {
            let text = format!(
                "version: 1\ndefault: allow\nrules:\n  - name: rule-{n}\n    action: tool.call\n    tools: [Bash]\n    effect: deny\nagents:\n  claude: {{}}\n"
            );
            load(dir.path(), &format!("p{n}.yaml"), &text)
        };
        let rule_name =
            |p: &ActivePolicy| p.profile(0).and_then(|profile| profile.rule(0)).map(|r| r.name.clone());
        let mut slots = Slots::default();
        slots.fill(0, 1, policy(1));
        slots.fill(1, 2, policy(2));
        assert_eq!(slots.profiles_of("claude").profile, [1, 1]);
        assert_eq!(slots.profiles_of("codex").profile, [0, 0]);
        let replaced_at = Instant::now();
        slots.fill(0, 3, policy(3));
        assert_eq!(slots.in_slot(0).and_then(rule_name).as_deref(), Some("rule-3"));
        assert_eq!(slots.in_slot(1).and_then(rule_name).as_deref(), Some("rule-2"));

        // Generation 1's late events still find its rules; its tool evaluators are gone.
        let retired = slots.by_generation(1).expect("a replaced policy stays known");
        assert_eq!(rule_name(retired).as_deref(), Some("rule-1"));
        let input = serde_json::json!({"command": "ls"});
        let bash =
            crate::policy::ToolRequest { phase: crate::policy::ToolPhase::Call, tool: "Bash", input: &input };
        assert!(retired.decide_tool(0, &bash).1.is_none());
        assert!(slots.in_slot(0).unwrap().decide_tool(0, &bash).1.is_some());

        assert!(!slots.forget_retired_at(replaced_at + RETIRED_POLICY_KEPT - Duration::from_secs(1)));
        assert!(slots.by_generation(1).is_some());
        assert!(slots.forget_retired_at(Instant::now() + RETIRED_POLICY_KEPT + Duration::from_secs(1)));
        assert!(slots.by_generation(1).is_none());
        assert!(slots.by_generation(2).is_some() && slots.by_generation(3).is_some());
        assert!(slots.in_slot(2).is_none());
    }
}

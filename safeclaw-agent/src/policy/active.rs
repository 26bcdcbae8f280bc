//! The policy the daemon enforces: loading and compiling every profile, noticing when its files
//! change, and keeping its host names' addresses current.
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use super::compiled::{CompiledPolicy, Decision};
use super::{
    compile_all, launching_user_home, load_file_trusted, resolve_system, CompileContext, CompiledProfile,
    CompiledSet, Evaluator, HostAddresses, HostCache, Location, Policy, PolicyError, PolicyHash, RuleInfo,
    ToolEvaluator, ToolRequest,
};

/// A compiled policy as the kernel holds it: profile 0 is the base, profile `i + 1` the `i`-th entry
/// of `agents:`.
pub struct ActivePolicy {
    pub set: CompiledSet,
    /// By profile number: the evaluator of each profile that has argument rules, which the kernel
    /// does not apply and the daemon does on the argv the kernel recorded.
    argument_rules: Vec<Option<Evaluator>>,
    /// By profile number: how the daemon decides agent tool calls, which the kernel never sees.
    tools: Vec<ToolEvaluator>,
}

impl ActivePolicy {
    pub fn hash(&self) -> PolicyHash {
        self.set.hash
    }

    /// The kernel tables of every profile, in profile-number order.
    pub fn tables(&self) -> Vec<&CompiledPolicy> {
        std::iter::once(&self.set.base).chain(&self.set.agents).map(|p| &p.tables).collect()
    }

    /// The profile number deciding for `agent` (0, the base, for agents without a profile).
    pub fn profile_number(&self, agent: &str) -> u32 {
        self.set.agents.iter().position(|p| p.agent.as_deref() == Some(agent)).map_or(0, |i| i as u32 + 1)
    }

    /// The profile behind a profile number the kernel reported.
    pub fn profile(&self, number: u32) -> Option<&CompiledProfile> {
        match number {
            0 => Some(&self.set.base),
            n => self.set.agents.get(n as usize - 1),
        }
    }

    /// The decision with the exec's arguments (`argv[1..]`) known: the kernel's, or `audit` by the
    /// first argument rule before the deciding one that matches.
    pub fn exec_with_args(&self, profile: u32, path: &[u8], args: &[&[u8]]) -> Option<Decision> {
        let evaluator = self.argument_rules.get(profile as usize)?.as_ref()?;
        Some(evaluator.evaluate_exec_with_args(path, args))
    }

    /// The decision on an agent tool call for the profile `profile`, and the rule that made it.
    pub fn decide_tool(&self, profile: u32, request: &ToolRequest<'_>) -> (Decision, Option<&RuleInfo>) {
        let Some(evaluator) = self.tools.get(profile as usize) else {
            return (Decision { effect: super::compiled::Effect::Deny, rule: None, bound_hit: false }, None);
        };
        let decision = evaluator.evaluate(request);
        let rule = decision.rule.and_then(|id| self.profile(profile)?.rule(id));
        (decision, rule)
    }

    /// Drops the kernel tables once the kernel holds them: it decides by its own copy, nothing here
    /// reads them again, and a 10,000-rule policy's tables take megabytes. What the daemon still
    /// decides or records by (rules, argument rules, tool evaluators) stays.
    pub fn release_tables(&mut self) {
        for profile in std::iter::once(&mut self.set.base).chain(&mut self.set.agents) {
            profile.tables.dfas = std::array::from_fn(|_| super::compiled::CompiledDfa::empty());
            profile.tables.net = Default::default();
        }
    }

    /// Drops what only deciding needs (the tool-call evaluators, the tables if still here) from a
    /// replaced policy, and keeps what recording its generation's late events needs (rules, argument
    /// rules). A replaced policy stays known for a minute.
    pub fn retire(&mut self) {
        self.release_tables();
        self.tools = Vec::new();
    }

    pub fn rule_count(&self) -> usize {
        std::iter::once(&self.set.base).chain(&self.set.agents).map(|p| p.rules.len()).sum()
    }
}

/// What identifies the content of a file cheaply: a change to any of these is a change to the file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    /// `None`: the file could not be read (missing, unreadable).
    meta: Option<(u64, u64, u64, SystemTime)>,
}

impl FileStamp {
    /// Of the name itself, not what a link there points to: a file swapped for a link is a change.
    fn of(path: &Path) -> FileStamp {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        FileStamp { path: path.to_path_buf(), meta }
    }
}

/// The policy file (and what it includes) the daemon was started with, and the host addresses its
/// rules were compiled with.
pub struct PolicySource {
    path: PathBuf,
    /// `path` with its directories' links resolved at startup: what every load reads (see `trust`).
    resolved: PathBuf,
    home: PathBuf,
    /// The files of the last load attempt, as they were then.
    stamps: Vec<FileStamp>,
    /// Validated model of the last successful load if it names hosts (recompiled when their
    /// addresses change).
    policy: Option<Policy>,
    hosts: HostCache,
    /// Addresses the enforced tables were compiled with.
    compiled_hosts: HostAddresses,
    started: Instant,
}

impl PolicySource {
    pub fn new(path: &Path) -> PolicySource {
        PolicySource {
            path: path.to_path_buf(),
            resolved: crate::trust::resolve_at_startup(path),
            home: launching_user_home(),
            stamps: Vec::new(),
            policy: None,
            hosts: HostCache::default(),
            compiled_hosts: HostAddresses::default(),
            started: Instant::now(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads, validates, resolves host names and compiles every profile; every file read through no
    /// link and only if nobody but root can change it. On error the previous policy stays the one
    /// this source refreshes.
    pub fn load(&mut self) -> Result<ActivePolicy, PolicyError> {
        self.stamps = vec![FileStamp::of(&self.resolved)];
        let started = Instant::now();
        let policy = load_file_trusted(&self.resolved)?;
        let read = started.elapsed();
        self.stamps = policy.files.iter().map(|f| FileStamp::of(Path::new(&**f))).collect();
        self.resolve(&policy);
        let active = self.compile(&policy)?;
        tracing::debug!(
            "{}: read and checked in {:.3} s, compiled in {:.3} s",
            self.path.display(),
            read.as_secs_f64(),
            (started.elapsed() - read).as_secs_f64()
        );
        // Only re-resolving host names compiles the model again.
        self.policy = (!policy.host_names().is_empty()).then_some(policy);
        Ok(active)
    }

    /// Whether a file of the policy changed (or appeared, or vanished) since the last load attempt.
    pub fn changed(&self) -> bool {
        self.stamps.iter().any(|stamp| FileStamp::of(&stamp.path) != *stamp)
    }

    /// Re-resolves the host names of the enforced policy; a new compiled policy when their addresses
    /// changed, `None` when there is nothing to do.
    pub fn refresh_hosts(&mut self) -> Option<Result<ActivePolicy, PolicyError>> {
        let policy = self.policy.take()?;
        self.resolve(&policy);
        let outcome =
            (self.hosts.addresses(self.now()) != self.compiled_hosts).then(|| self.compile(&policy));
        self.policy = Some(policy);
        outcome
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn resolve(&mut self, policy: &Policy) {
        let now = self.now();
        for (host, error) in self.hosts.refresh(&policy.host_names(), now, resolve_system) {
            tracing::warn!(
                "{}: cannot resolve `{host}` (its rules keep the addresses already known, none if never resolved): {error}",
                self.path.display()
            );
        }
    }

    fn compile(&mut self, policy: &Policy) -> Result<ActivePolicy, PolicyError> {
        let hosts = self.hosts.addresses(self.now());
        let ctx = CompileContext::new(&self.home).with_hosts(hosts.clone());
        let set = compile_all(policy, &ctx)?;
        for warning in &set.warnings {
            tracing::warn!("{warning}");
        }
        let profiles = std::iter::once(None).chain(set.agents.iter().map(|p| p.agent.as_deref()));
        let has_arguments = policy
            .rules
            .iter()
            .chain(policy.agents.iter().flat_map(|a| a.rules.iter()))
            .any(|rule| rule.argument_patterns().is_some());
        let mut argument_rules = Vec::new();
        // Evaluators cost as much as a compile; most policies have no argument rules at all.
        for agent in profiles.filter(|_| has_arguments) {
            let evaluator = Evaluator::new(policy, agent, &ctx).map_err(|e| {
                PolicyError::single(Location::file(&std::sync::Arc::from(self.path.display().to_string())), e)
            })?;
            argument_rules.push(evaluator.has_argument_rules().then_some(evaluator));
        }
        self.compiled_hosts = hosts;
        let tools = std::iter::once(None)
            .chain(set.agents.iter().map(|p| p.agent.as_deref()))
            .map(|agent| ToolEvaluator::new(policy, agent))
            .collect();
        Ok(ActivePolicy { set, argument_rules, tools })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "version: 1\ndefault: deny\nrules:\n  - name: read-tmp\n    action: file.read\n    paths: [\"/tmp/**\"]\n    effect: allow\nagents:\n  claude:\n    rules:\n      - name: no-tmp-x\n        action: file.read\n        paths: [\"/tmp/x\"]\n        effect: deny\n";

    /// `BASE` with a host name, so that its model is kept for re-resolving.
    fn base_with_host() -> String {
        BASE.replace(
            "agents:\n",
            "  - name: local\n    action: network.connect\n    hosts: [localhost]\n    effect: allow\nagents:\n",
        )
    }

    #[test]
    fn numbers_profiles_base_first_and_finds_rules_by_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, BASE).unwrap();
        let mut source = PolicySource::new(&path);
        let active = source.load().unwrap();
        assert_eq!(active.tables().len(), 2);
        assert_eq!(active.profile_number("claude"), 1);
        assert_eq!(active.profile_number("codex"), 0);
        assert_eq!(active.profile(1).unwrap().rule(0).unwrap().name, "no-tmp-x");
        assert_eq!(active.profile(0).unwrap().rule(0).unwrap().name, "read-tmp");
        assert!(active.profile(2).is_none());
        assert_eq!(active.rule_count(), 3);
    }

    #[test]
    fn written_tables_are_released_and_a_retired_policy_keeps_only_what_records_need() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        let with_args = BASE.replace(
            "agents:\n",
            "  - name: no-bash\n    action: tool.call\n    tools: [Bash]\n    effect: deny\nagents:\n  codex:\n    rules:\n      - name: no-force\n        action: process.exec\n        binary: [/usr/bin/git]\n        args: [\"--force\"]\n        effect: audit\n",
        );
        std::fs::write(&path, &with_args).unwrap();
        let mut active = PolicySource::new(&path).load().unwrap();
        let before = active.exec_with_args(1, b"/usr/bin/git", &[b"push", b"--force"]);
        assert!(before.is_some());
        let input = serde_json::json!({"command": "ls"});
        let bash = ToolRequest { phase: super::super::ToolPhase::Call, tool: "Bash", input: &input };
        let rule_of = |active: &ActivePolicy| active.decide_tool(0, &bash).1.map(|r| r.name.clone());
        assert_eq!(rule_of(&active).as_deref(), Some("no-bash"));
        let rules = active.rule_count();
        assert!(active.tables().iter().any(|t| t.dfas.iter().any(|d| d.state_count() > 1)));

        active.release_tables();
        assert!(active.tables().iter().all(|t| t.dfas.iter().all(|d| d.state_count() <= 1)));
        assert!(active.tables().iter().all(|t| t.net.prefixes.is_empty()));
        // Still enforcing: tool calls are decided here, not by the kernel.
        assert_eq!(rule_of(&active).as_deref(), Some("no-bash"));

        active.retire();
        assert_eq!(rule_of(&active), None);
        assert_eq!(active.decide_tool(0, &bash).0.effect, super::super::compiled::Effect::Deny);
        assert_eq!(active.profile(2).unwrap().rule(0).unwrap().name, "no-tmp-x");
        assert_eq!(active.exec_with_args(1, b"/usr/bin/git", &[b"push", b"--force"]), before);
        assert_eq!(active.rule_count(), rules);
    }

    #[test]
    fn notices_edits_and_keeps_the_old_model_after_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, base_with_host()).unwrap();
        let mut source = PolicySource::new(&path);
        source.load().unwrap();
        assert!(!source.changed());
        std::fs::write(&path, "version: 1\nrules: [").unwrap();
        assert!(source.changed());
        let error = source.load().err().expect("a broken policy is refused").to_string();
        assert!(error.contains("policy.yaml"), "{error}");
        assert!(!source.changed(), "the failed attempt is the new baseline");
        assert!(source.policy.is_some(), "the last good model is kept");
        std::fs::remove_file(&path).unwrap();
        assert!(source.changed());
    }

    #[test]
    fn a_policy_swapped_for_a_link_is_noticed_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, base_with_host()).unwrap();
        let mut source = PolicySource::new(&path);
        let enforcing = source.load().unwrap().hash();
        // What a root agent did: unlink the policy, link the name to a file it wrote.
        let planted = dir.path().join("planted.yaml");
        std::fs::write(&planted, "version: 1\ndefault: allow\n").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&planted, &path).unwrap();
        assert!(source.changed());
        let error = source.load().err().expect("a link is never followed").to_string();
        assert!(error.contains(&format!("{} is a symbolic link", source.resolved.display())), "{error}");
        assert_eq!(source.policy.as_ref().map(|p| p.hash), Some(enforcing), "the last good model is kept");
    }

    #[test]
    fn host_refresh_is_a_no_op_without_host_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, BASE).unwrap();
        let mut source = PolicySource::new(&path);
        assert!(source.refresh_hosts().is_none(), "nothing loaded yet");
        source.load().unwrap();
        assert!(source.policy.is_none(), "a model without host names is not kept");
        assert!(source.refresh_hosts().is_none());
    }
}

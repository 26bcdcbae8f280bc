//! Reading a policy file and its includes into a validated `Policy`: every error with its file,
//! line and column, and the policy hash over the exact bytes read.
//!
//! Hash: sha256 over, for each file in load order (the top file, then each include depth-first
//! in the order listed), the file's length as 8 little-endian bytes followed by its bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compiled::Effect;
use super::diag::{Diagnostic, Level, Location, PolicyError};
use super::glob::Glob;
use super::model::{Action, Agent, InetMatch, Matcher, Paths, Policy, PolicyHash, Rule, RuleInfo};
use super::net::{Direction, Protocol};
use super::positions::Positions;
use super::schema::{AgentSpec, Pattern, PolicyFile, RuleSpec};

/// Largest policy file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most files one policy may consist of.
pub const MAX_FILES: usize = 256;
/// Deepest include chain.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Loads `path` and everything it includes.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    load_with(Loader::default(), path)
}

/// Loads `path` (absolute) and everything it includes as the daemon does: each file read with
/// [`crate::trust::read`], so through no link and only if nobody but root can change it.
pub fn load_file_trusted(path: &Path) -> Result<Policy, PolicyError> {
    load_with(Loader { trusted: true, ..Loader::default() }, path)
}

fn load_with(mut loader: Loader, path: &Path) -> Result<Policy, PolicyError> {
    let name: Arc<str> = Arc::from(path.display().to_string());
    let loaded = loader.load(path, &name, None, 0);
    loader.finish(loaded)
}

/// Loads a policy from `text`, as if read from `name` (includes are read relative to it).
pub fn load_str(name: &str, text: &str) -> Result<Policy, PolicyError> {
    let mut loader = Loader::default();
    let name: Arc<str> = Arc::from(name);
    let loaded = loader.parse(Path::new(&*name), &name, text.as_bytes(), None, 0);
    loader.finish(loaded)
}

/// What one file (with its includes) contributes.
#[derive(Default)]
struct Contribution {
    default: Option<Effect>,
    rules: Vec<Rule>,
    agents: Vec<Agent>,
}

#[derive(Default)]
struct Loader {
    hasher: Sha256,
    files: Vec<Arc<str>>,
    /// Canonical paths of the files being loaded (the include chain), to refuse cycles.
    chain: Vec<PathBuf>,
    diagnostics: Vec<Diagnostic>,
    /// Read every file with the daemon's trust checks.
    trusted: bool,
}

impl Loader {
    fn error(&mut self, location: Location, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(location, message));
    }

    fn load(
        &mut self,
        path: &Path,
        name: &Arc<str>,
        included_at: Option<&Location>,
        depth: usize,
    ) -> Contribution {
        let at = || included_at.cloned().unwrap_or_else(|| Location::file(name));
        if self.files.len() >= MAX_FILES {
            self.error(at(), format!("more than {MAX_FILES} policy files"));
            return Contribution::default();
        }
        let read = if self.trusted {
            crate::trust::read(path, MAX_FILE_BYTES).map_err(|e| e.to_string())
        } else {
            read_bounded(path).map_err(|why| format!("cannot read {}: {why}", path.display()))
        };
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(why) => {
                self.error(at(), why);
                return Contribution::default();
            }
        };
        self.parse(path, name, &bytes, included_at, depth)
    }

    fn parse(
        &mut self,
        path: &Path,
        name: &Arc<str>,
        bytes: &[u8],
        included_at: Option<&Location>,
        depth: usize,
    ) -> Contribution {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self.files.push(Arc::clone(name));
        let whole = Location::file(name);
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                self.error(whole, format!("not UTF-8 text (invalid byte at offset {})", e.valid_up_to()));
                return Contribution::default();
            }
        };
        if text.trim().is_empty() {
            self.error(whole, "policy file is empty (it needs at least `version: 1`)");
            return Contribution::default();
        }
        let (positions, file) = match parse_yaml(text) {
            Ok(parsed) => parsed,
            Err(Unparsed::TooDeep(deep)) => {
                self.error(Location::new(name, deep.line, deep.column), deep.to_string());
                return Contribution::default();
            }
            Err(Unparsed::Yaml(e)) => {
                let location = match e.location() {
                    Some(l) => Location::new(name, l.line(), l.column()),
                    None => whole,
                };
                self.error(location, strip_location_suffix(&e.to_string()));
                return Contribution::default();
            }
        };
        let at = |key: &str| match positions.get(key) {
            Some((line, column)) => Location::new(name, line, column),
            None => Location::file(name),
        };
        let top_level = included_at.is_none();
        if top_level && file.version.is_none() {
            self.error(Location::new(name, 1, 1), "missing `version: 1`");
        }
        if !top_level && file.default.is_some() {
            self.error(at("default"), "`default` may only be set in the top-level policy file");
        }

        let mut contribution = Contribution { default: file.default, ..Contribution::default() };
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.chain.push(canonical);
        for (index, include) in file.include.iter().enumerate() {
            let location = at(&format!("include[{index}]"));
            if depth + 1 > MAX_INCLUDE_DEPTH {
                self.error(location, format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files"));
                continue;
            }
            let target = path.parent().unwrap_or(Path::new(".")).join(include);
            let target_canonical = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
            if self.chain.contains(&target_canonical) {
                self.error(location, format!("`{include}` includes itself (through {})", self.chain_text()));
                continue;
            }
            let include_name: Arc<str> = Arc::from(target.display().to_string());
            let included = self.load(&target, &include_name, Some(&location), depth + 1);
            contribution.rules.extend(included.rules);
            contribution.agents.extend(included.agents);
        }
        self.chain.pop();

        for (index, spec) in file.rules.into_iter().enumerate() {
            let key = format!("rules[{index}]");
            if let Some(rule) = self.rule(spec, &key, &at) {
                contribution.rules.push(rule);
            }
        }
        for (agent_name, spec) in file.agents.0 {
            let key = format!("agents.{}", agent_name.0);
            let agent = self.agent(agent_name.0, spec, &key, &at);
            contribution.agents.push(agent);
        }
        contribution
    }

    fn chain_text(&self) -> String {
        self.chain.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" -> ")
    }

    fn agent(&mut self, name: String, spec: AgentSpec, key: &str, at: &dyn Fn(&str) -> Location) -> Agent {
        let mut rules = Vec::new();
        for (index, rule) in spec.rules.into_iter().enumerate() {
            if let Some(rule) = self.rule(rule, &format!("{key}.rules[{index}]"), at) {
                rules.push(rule);
            }
        }
        Agent {
            name,
            extends: spec.extends.map(|name| name.0),
            default: spec.default,
            rules,
            location: at(key),
        }
    }

    /// Checks what serde cannot: which matchers fit the action, and empty lists.
    fn rule(&mut self, spec: RuleSpec, key: &str, at: &dyn Fn(&str) -> Location) -> Option<Rule> {
        let errors_before = self.diagnostics.len();
        let field_at = |field: &str| at(&format!("{key}.{field}"));
        let action = spec.action;
        let allowed: &[&str] = match action {
            Action::FileRead | Action::FileWrite | Action::FileAny => &["paths"],
            Action::ProcessExec => &["binary", "args"],
            Action::NetworkConnect => &["cidrs", "hosts", "ports", "protocol", "unix"],
            Action::NetworkListen => &["cidrs", "ports", "protocol"],
            Action::ToolCall | Action::ToolResult | Action::ToolAny => &["tools", "input"],
            Action::Any => &[],
        };
        let present = [
            ("paths", spec.paths.is_some()),
            ("binary", spec.binary.is_some()),
            ("args", spec.args.is_some()),
            ("cidrs", spec.cidrs.is_some()),
            ("hosts", spec.hosts.is_some()),
            ("ports", spec.ports.is_some()),
            ("protocol", spec.protocol.is_some()),
            ("unix", spec.unix.is_some()),
            ("tools", spec.tools.is_some()),
            ("input", spec.input.is_some()),
        ];
        for (field, is_present) in present {
            if is_present && !allowed.contains(&field) {
                let hint = if allowed.is_empty() {
                    "a `*` rule matches every attempt and takes no matchers".to_owned()
                } else {
                    format!(
                        "`{action}` rules take {}",
                        allowed.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    )
                };
                self.error(field_at(field), format!("`{field}` does not apply to action `{action}`: {hint}"));
            }
        }
        let lists = [
            ("paths", spec.paths.as_ref().map(Vec::len)),
            ("binary", spec.binary.as_ref().map(Vec::len)),
            ("args", spec.args.as_ref().map(Vec::len)),
            ("cidrs", spec.cidrs.as_ref().map(Vec::len)),
            ("hosts", spec.hosts.as_ref().map(Vec::len)),
            ("ports", spec.ports.as_ref().map(Vec::len)),
            ("unix", spec.unix.as_ref().map(Vec::len)),
            ("tools", spec.tools.as_ref().map(Vec::len)),
            ("input", spec.input.as_ref().map(|input| input.0.len())),
        ];
        for (field, len) in lists {
            if len == Some(0) {
                self.error(
                    field_at(field),
                    format!("`{field}` is empty, so the rule could never match; omit it to match everything"),
                );
            }
        }
        if spec.args.is_some() && spec.effect != Effect::Audit {
            self.error(
                field_at("args"),
                format!(
                    "argument patterns need `effect: audit`: the kernel sees only the binary, so it cannot {} an exec by its arguments (deny the binary, or flag the arguments with audit; see docs/policy.md)",
                    spec.effect.as_str()
                ),
            );
        }
        if action == Action::NetworkListen && spec.protocol == Some(Protocol::Raw) {
            self.error(
                field_at("protocol"),
                "`network.listen` rules take protocol `tcp`, `udp` or `any`: a raw socket does not listen (raw sockets are `network.connect` rules)".to_owned(),
            );
        }
        if self.diagnostics.len() > errors_before {
            return None;
        }
        fn globs<S>(list: Option<Vec<Pattern<S>>>) -> Option<Vec<Glob>> {
            list.map(|list| list.into_iter().map(Pattern::into_glob).collect())
        }
        fn paths<S>(list: Option<Vec<Pattern<S>>>) -> Paths {
            globs(list).map_or(Paths::Every, Paths::Globs)
        }
        let matcher = match action {
            Action::FileRead | Action::FileWrite | Action::FileAny => {
                Matcher::File { paths: paths(spec.paths) }
            }
            Action::ProcessExec => Matcher::Exec { binaries: paths(spec.binary), args: globs(spec.args) },
            Action::NetworkConnect => {
                let has_inet = spec.cidrs.is_some()
                    || spec.hosts.is_some()
                    || spec.ports.is_some()
                    || spec.protocol.is_some();
                let unix = globs(spec.unix).map(Paths::Globs);
                let inet = (has_inet || unix.is_none()).then(|| InetMatch {
                    direction: Direction::Connect,
                    cidrs: spec.cidrs.unwrap_or_default(),
                    hosts: spec.hosts.unwrap_or_default(),
                    ports: spec.ports.unwrap_or_default(),
                    protocol: spec.protocol.unwrap_or_default(),
                });
                let unix = if has_inet || unix.is_some() { unix } else { Some(Paths::Every) };
                Matcher::Connect { inet, unix }
            }
            Action::NetworkListen => Matcher::Listen {
                inet: InetMatch {
                    direction: Direction::Listen,
                    cidrs: spec.cidrs.unwrap_or_default(),
                    hosts: Vec::new(),
                    ports: spec.ports.unwrap_or_default(),
                    protocol: spec.protocol.unwrap_or_default(),
                },
            },
            Action::ToolCall | Action::ToolResult | Action::ToolAny => Matcher::Tool {
                tools: globs(spec.tools),
                input: spec
                    .input
                    .unwrap_or_default()
                    .0
                    .into_iter()
                    .map(|(name, list)| (name, list.into_iter().map(Pattern::into_glob).collect()))
                    .collect(),
            },
            Action::Any => Matcher::Any,
        };
        Some(Rule {
            info: RuleInfo {
                name: spec.name.0,
                action,
                effect: spec.effect,
                reason: spec.reason,
                severity: spec.severity,
                tags: spec.tags.into_iter().map(|t| t.0).collect(),
                location: at(key),
            },
            matcher,
        })
    }

    fn finish(mut self, top: Contribution) -> Result<Policy, PolicyError> {
        let agents = top.agents;
        check_agents(&agents, &mut self.diagnostics);
        check_unique_names(
            top.rules.iter().chain(agents.iter().flat_map(|a| a.rules.iter())),
            &mut self.diagnostics,
        );
        let default = top.default.unwrap_or(Effect::Deny);
        let mut warnings = Vec::new();
        host_deny_warnings(default, &top.rules, None, &mut warnings);
        for agent in &agents {
            let agent_default = agent.default.unwrap_or(default);
            host_deny_warnings(agent_default, &agent.rules, Some(&agent.name), &mut warnings);
        }
        if self.diagnostics.iter().any(|d| d.level == Level::Error) {
            return Err(PolicyError { diagnostics: self.diagnostics });
        }
        warnings.extend(self.diagnostics);
        Ok(Policy {
            default,
            rules: top.rules,
            agents,
            hash: PolicyHash(self.hasher.finalize().into()),
            files: self.files,
            warnings,
        })
    }
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Why a policy file's text did not become a `PolicyFile`.
enum Unparsed {
    TooDeep(crate::yaml_guard::TooDeep),
    Yaml(serde_yaml::Error),
}

/// The file's model and where each of its values is. serde_yaml and the positions pass (which is also
/// the depth guard) read the text independently, so they run side by side and a reload waits for the
/// slower of the two rather than their sum. serde_yaml may start before the guard has walked the text
/// only when a bracket count already bounds the flow nesting that makes libyaml slow (see
/// `yaml_guard`); otherwise the guard goes first. The guard's refusal is reported before serde_yaml's.
fn parse_yaml(text: &str) -> Result<(Positions, PolicyFile), Unparsed> {
    let deserialize = || serde_yaml::from_str::<PolicyFile>(text);
    if !crate::yaml_guard::flow_nesting_bounded(text) {
        let positions = Positions::scan(text).map_err(Unparsed::TooDeep)?;
        return Ok((positions, deserialize().map_err(Unparsed::Yaml)?));
    }
    std::thread::scope(|scope| {
        // A host out of threads deserializes on this thread, after the guard.
        let beside = std::thread::Builder::new().name("policy-yaml".into()).spawn_scoped(scope, deserialize);
        let positions = Positions::scan(text).map_err(Unparsed::TooDeep)?;
        let file = match beside {
            Ok(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => deserialize(),
        };
        Ok((positions, file.map_err(Unparsed::Yaml)?))
    })
}

/// serde_yaml appends " at line L column C"; the location is shown in front instead.
fn strip_location_suffix(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) if message[index..].contains(" column ") => message[..index].to_owned(),
        _ => message.to_owned(),
    }
}

fn check_unique_names<'a>(rules: impl Iterator<Item = &'a Rule>, diagnostics: &mut Vec<Diagnostic>) {
    let mut seen: std::collections::HashMap<&str, &Location> = std::collections::HashMap::new();
    for rule in rules {
        if let Some(first) = seen.get(rule.info.name.as_str()) {
            diagnostics.push(Diagnostic::error(
                rule.info.location.clone(),
                format!("duplicate rule name `{}` (first defined at {first})", rule.info.name),
            ));
        } else {
            seen.insert(&rule.info.name, &rule.info.location);
        }
    }
}

/// Agent names unique across files; `extends` names an agent; no cycles.
fn check_agents(agents: &[Agent], diagnostics: &mut Vec<Diagnostic>) {
    let mut seen: HashSet<&str> = HashSet::new();
    for agent in agents.iter() {
        if !seen.insert(&agent.name) {
            diagnostics.push(Diagnostic::error(
                agent.location.clone(),
                format!("agent `{}` is defined twice", agent.name),
            ));
        }
    }
    let mut in_reported_cycle: HashSet<&str> = HashSet::new();
    for agent in agents.iter() {
        if in_reported_cycle.contains(agent.name.as_str()) {
            continue;
        }
        let mut chain = vec![agent.name.as_str()];
        let mut current = agent;
        while let Some(parent_name) = current.extends.as_deref() {
            let Some(parent) = agents.iter().find(|a| a.name == parent_name) else {
                diagnostics.push(Diagnostic::error(
                    agent.location.clone(),
                    format!(
                        "agent `{}` extends `{parent_name}`, which is not defined under `agents:`",
                        current.name
                    ),
                ));
                break;
            };
            if chain.contains(&parent_name) {
                in_reported_cycle.extend(chain.iter().copied());
                chain.push(parent_name);
                diagnostics.push(Diagnostic::error(
                    agent.location.clone(),
                    format!("agent profiles extend each other in a cycle: {}", chain.join(" -> ")),
                ));
                break;
            }
            chain.push(parent_name);
            current = parent;
        }
    }
}

/// A deny by host name only holds for the addresses the daemon resolved; with a permissive default
/// anything else the name resolves to is let through.
fn host_deny_warnings(default: Effect, rules: &[Rule], agent: Option<&str>, warnings: &mut Vec<Diagnostic>) {
    if default == Effect::Deny {
        return;
    }
    for rule in rules {
        let by_host = rule.inet().is_some_and(|inet| !inet.hosts.is_empty());
        if by_host && rule.info.effect == Effect::Deny {
            let profile = agent.map(|a| format!(" (agent `{a}`)")).unwrap_or_default();
            warnings.push(Diagnostic::warning(
                rule.info.location.clone(),
                format!(
                    "rule `{}` denies by host name under `default: {}`{profile}: only the addresses the daemon resolved are denied; prefer `default: deny` with allow rules, or CIDRs",
                    rule.info.name,
                    default.as_str()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_str("p.yaml", text) {
            Ok(_) => panic!("loaded:\n{text}"),
            Err(e) => e.diagnostics.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(text: &str) -> String {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().unwrap_or_default()
    }

    const HEAD: &str = "version: 1\nrules:\n";

    #[test]
    fn unknown_keys_are_placed_and_named() {
        let e = one_error(&format!(
            "{HEAD}  - name: a\n    action: file.read\n    effect: allow\n    pathz: [/x]\n"
        ));
        assert!(
            e.starts_with("p.yaml:6:5: error: rules[0]: unknown field `pathz`, expected one of `name`"),
            "{e}"
        );
        let e = one_error("version: 1\nrulez: []\n");
        assert!(e.starts_with("p.yaml:2:1: error: unknown field `rulez`"), "{e}");
    }

    #[test]
    fn bad_values_are_placed_at_the_value() {
        let rule = |field: &str| {
            format!("{HEAD}  - name: a\n    action: network.connect\n    effect: deny\n    {field}\n")
        };
        let e = one_error(&rule("cidrs: [10.0.0.1/8]"));
        assert!(e.starts_with("p.yaml:6:13: error:") && e.contains("did you mean `10.0.0.0/8`"), "{e}");
        let e = one_error(&rule("ports: [443, 70000]"));
        assert!(e.starts_with("p.yaml:6:18: error:") && e.contains("`70000` is not a port"), "{e}");
        let e = one_error(&rule("hosts: [\"*.example.com\"]"));
        assert!(e.contains("wildcards cannot be resolved"), "{e}");
        let e = one_error(&format!(
            "{HEAD}  - name: a\n    action: file.read\n    effect: allow\n    paths: [/ok, \"/a/**b\"]\n"
        ));
        assert!(e.starts_with("p.yaml:6:18: error: rules[0].paths[1]: bad glob `/a/**b`"), "{e}");
        let e = one_error(&format!("{HEAD}  - name: a\n    action: file.reed\n    effect: allow\n"));
        assert!(e.contains("unknown variant `file.reed`"), "{e}");
        let e = one_error("version: 2\n");
        assert!(e.contains("unsupported policy version 2"), "{e}");
    }

    #[test]
    fn matchers_must_fit_the_action() {
        let e = one_error(&format!(
            "{HEAD}  - name: a\n    action: file.read\n    effect: allow\n    cidrs: [10.0.0.0/8]\n"
        ));
        assert!(e.starts_with("p.yaml:6:12: error: `cidrs` does not apply to action `file.read`"), "{e}");
        let e = one_error(&format!(
            "{HEAD}  - name: a\n    action: file.read\n    effect: allow\n    paths: []\n"
        ));
        assert!(e.contains("`paths` is empty"), "{e}");
        let e = one_error(&format!("{HEAD}  - name: a\n    action: process.exec\n    effect: deny\n    binary: [git]\n    args: [push]\n"));
        assert!(e.contains("argument patterns need `effect: audit`"), "{e}");
    }

    #[test]
    fn duplicate_names_point_at_both_rules() {
        let e = one_error(&format!(
            "{HEAD}  - name: a\n    action: \"*\"\n    effect: allow\nagents:\n  bot:\n    rules:\n      - name: a\n        action: \"*\"\n        effect: deny\n"
        ));
        assert_eq!(e, "p.yaml:9:9: error: duplicate rule name `a` (first defined at p.yaml:3:5)");
    }

    #[test]
    fn missing_version_and_empty_files() {
        assert_eq!(one_error("default: deny\n"), "p.yaml:1:1: error: missing `version: 1`");
        assert!(one_error("").contains("policy file is empty"));
        assert!(one_error("version: 1\nrules: [").starts_with("p.yaml:"));
    }

    #[test]
    fn agents_extend_and_order_their_rules_first() {
        let text = "version: 1\ndefault: allow\nrules:\n  - {name: base, action: \"*\", effect: deny}\nagents:\n  coder:\n    default: deny\n    rules:\n      - {name: c, action: file.read, effect: allow}\n  junior:\n    extends: coder\n    rules:\n      - {name: j, action: file.write, effect: deny}\n";
        let policy = load_str("p.yaml", text).unwrap();
        let names =
            |agent| policy.profile(agent).rules.iter().map(|r| r.info.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(Some("junior")), ["j", "c", "base"]);
        assert_eq!(names(Some("coder")), ["c", "base"]);
        assert_eq!(names(Some("unknown")), ["base"]);
        assert_eq!(policy.profile(Some("junior")).default, Effect::Deny);
        assert_eq!(policy.profile(None).default, Effect::Allow);
        let e = one_error("version: 1\nagents:\n  a:\n    extends: b\n  b:\n    extends: a\n");
        assert!(e.contains("cycle: a -> b -> a"), "{e}");
        let e = one_error("version: 1\nagents:\n  a:\n    extends: nobody\n");
        assert!(e.starts_with("p.yaml:4:5: error: agent `a` extends `nobody`"), "{e}");
        assert!(one_error("version: 1\nagents:\n  a/b: {}\n").contains("cgroup directory name"));
    }

    #[test]
    fn includes_come_first_and_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let common = "rules:\n  - {name: inc, action: \"*\", effect: deny}\n";
        std::fs::write(dir.path().join("common.yaml"), common).unwrap();
        let top =
            "version: 1\ninclude: [common.yaml]\nrules:\n  - {name: own, action: \"*\", effect: allow}\n";
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, top).unwrap();
        let policy = load_file(&path).unwrap();
        assert_eq!(policy.rules.iter().map(|r| r.info.name.as_str()).collect::<Vec<_>>(), ["inc", "own"]);
        let mut hasher = Sha256::new();
        for text in [top, common] {
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text);
        }
        let expected: [u8; 32] = hasher.finalize().into();
        assert_eq!(policy.hash, PolicyHash(expected));
        assert!(policy.hash.to_string().starts_with("sha256:") && policy.hash.to_string().len() == 7 + 64);
    }

    #[test]
    fn include_errors_are_placed_at_the_include() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("a.yaml", "version: 1\ninclude: [b.yaml]\n");
        write("b.yaml", "include: [a.yaml]\n");
        let e = load_file(&dir.path().join("a.yaml")).unwrap_err().to_string();
        assert!(e.contains("b.yaml:1:11: error: `a.yaml` includes itself"), "{e}");
        write("c.yaml", "version: 1\ninclude: [missing.yaml]\n");
        let e = load_file(&dir.path().join("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("c.yaml:2:11: error: cannot read") && e.contains("missing.yaml"), "{e}");
        write("d.yaml", "version: 1\ninclude: [e.yaml]\n");
        write("e.yaml", "default: allow\n");
        let e = load_file(&dir.path().join("d.yaml")).unwrap_err().to_string();
        assert!(
            e.contains("e.yaml:1:10: error: `default` may only be set in the top-level policy file"),
            "{e}"
        );
    }

    #[test]
    fn deny_by_host_under_a_permissive_default_warns() {
        let policy = load_str(
            "p.yaml",
            "version: 1\ndefault: allow\nrules:\n  - {name: no-evil, action: network.connect, effect: deny, hosts: [evil.example]}\n",
        )
        .unwrap();
        assert_eq!(policy.warnings.len(), 1);
        let warning = policy.warnings[0].to_string();
        assert!(warning.starts_with("p.yaml:4:6: warning: rule `no-evil` denies by host name"), "{warning}");
    }

    #[test]
    fn yaml_bombs_and_deep_nesting_are_refused() {
        let bomb = "version: 1\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
        assert!(!errors(bomb).is_empty());
        let deep = format!("version: 1\nrules: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(!errors(&deep).is_empty());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_at_its_place() {
        // 320 KB of brackets: serde_yaml alone spent a minute of CPU on this.
        let deep = format!("version: 1\nrules: {}{}\n", "[".repeat(160_000), "]".repeat(160_000));
        let e = one_error(&deep);
        assert!(
            e.starts_with("p.yaml:2:7") && e.contains(": error: YAML nests deeper than 64 levels"),
            "{e}"
        );
    }

    #[test]
    fn a_huge_value_is_not_echoed_whole() {
        let glob = format!("/{}", "a".repeat(10 << 20));
        let e = one_error(&format!(
            "{HEAD}  - name: a\n    action: file.read\n    effect: allow\n    paths: [\"{glob}\"]\n"
        ));
        assert!(e.len() < 1024, "{} bytes", e.len());
        assert!(e.starts_with("p.yaml:6:13: error: rules[0].paths[0]: bad glob `/aaa"), "{e}");
        assert!(e.contains("characters elided") && e.ends_with("at most 4096 are accepted"), "{e}");
    }
}

//! The reference evaluator: decides an attempt from a profile's rules in first-match order with
//! plain glob and CIDR matching (no automaton), so it checks the compiled tables rather than
//! sharing their construction. Literal-prefix and CIDR indexes keep a decision's cost flat in the
//! number of rules; `explain` walks every rule instead and says why each one did or did not match.

use std::collections::HashMap;

use safeclaw_common::PATH_MAX;

use super::compiled::{combine_read_write, Decision, Effect, Request};
use super::context::{Alternatives, CompileContext, Expander};
use super::glob::display_tokens;
use super::matcher::{ArgumentPattern, PathPattern, SplitPath};
use super::model::{PathClass, Policy, Rule};
use super::net::{mask, Cidr, Direction, PortRange, Protocol};

/// Decides attempts for one profile.
#[derive(Debug)]
pub struct Evaluator {
    default: Effect,
    rules: Vec<EvalRule>,
    /// By `PathClass::dfa_index`.
    classes: [PathIndex; 4],
    inet: InetIndex,
    /// Exec rules with argument patterns, ascending.
    argument_rules: Vec<u32>,
}

#[derive(Debug)]
struct EvalRule {
    name: String,
    effect: Effect,
    /// By `PathClass::dfa_index`: the rule's paths, if it applies to that class.
    paths: [Option<PathSet>; 4],
    inet: Option<InetSpec>,
    /// Per argument position, the alternatives of its pattern.
    arguments: Option<Vec<Vec<ArgumentPattern>>>,
}

#[derive(Debug)]
enum PathSet {
    Every,
    /// `(glob text with home expanded, pattern)`.
    Patterns(Vec<(String, PathPattern)>),
}

impl PathSet {
    fn matching(&self, path: &SplitPath<'_>) -> Option<&str> {
        match self {
            PathSet::Every => Some("every path"),
            PathSet::Patterns(patterns) => {
                patterns.iter().find(|(_, p)| p.matches(path)).map(|(text, _)| text.as_str())
            }
        }
    }
}

#[derive(Debug)]
struct InetSpec {
    direction: Direction,
    cidrs: Vec<Cidr>,
    ports: Vec<PortRange>,
    protocol: Protocol,
}

impl InetSpec {
    /// `Err(why not)` or `Ok(what matched)`.
    fn check(&self, protocol: u8, addr: &[u8; 16], port: u16) -> Result<String, String> {
        let every_address_and_port = super::net::decides_raw_sockets(&self.cidrs, &self.ports);
        if !self.protocol.wire_values(every_address_and_port, self.direction).contains(&protocol) {
            if protocol == safeclaw_common::RAW_SOCKET_PROTOCOL
                && self.protocol != Protocol::Tcp
                && self.protocol != Protocol::Udp
            {
                return Err(
                    "a raw socket can reach any address: only a rule for every address and port decides it"
                        .to_owned(),
                );
            }
            return Err(format!("protocol {} is not {}", protocol_name(protocol), self.protocol.as_str()));
        }
        let Some(cidr) = self.cidrs.iter().find(|c| c.contains(addr)) else {
            return Err(if self.cidrs.is_empty() {
                "the rule has no address (unresolved host names)".to_owned()
            } else {
                format!("address is in none of {}", list(self.cidrs.iter().map(Cidr::to_string)))
            });
        };
        if !self.ports.is_empty() && !self.ports.iter().any(|r| r.contains(port)) {
            return Err(format!(
                "port {port} is in none of {}",
                list(self.ports.iter().map(PortRange::to_string))
            ));
        }
        Ok(format!("address in {cidr}, port {port}, protocol {}", protocol_name(protocol)))
    }
}

/// Rules of one path class, indexed by the literal prefix of each glob alternative or, for those
/// with none beyond `/` (like `**/*.key`), by the last byte of their literal suffix.
#[derive(Debug)]
struct PathIndex {
    /// `(rule, pattern index in its PathSet, or None for every path)`, in rule order.
    entries: Vec<(u32, Option<usize>)>,
    trie: Trie,
    by_last_byte: Vec<Vec<u32>>,
}

impl Default for PathIndex {
    fn default() -> PathIndex {
        PathIndex { entries: Vec::new(), trie: Trie::default(), by_last_byte: vec![Vec::new(); 256] }
    }
}

/// Rules matching IP connects, by the (length, masked address) of their CIDRs.
#[derive(Debug, Default)]
struct InetIndex {
    buckets: HashMap<(u8, [u8; 16]), Vec<u32>>,
    lengths: Vec<u8>,
}

/// One step of an explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub rule: u32,
    pub name: String,
    pub verdict: StepVerdict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepVerdict {
    /// The rule is not about this kind of attempt.
    NotApplicable(String),
    NoMatch(String),
    /// The rule matches and decides.
    Decides(String),
}

/// How one table (file read, file write, exec, connect) decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub label: &'static str,
    pub decision: Decision,
    /// The rules tried, in order, up to the one that decided.
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    /// Two for a read-write open (combined as the kernel does), else one.
    pub checks: Vec<Check>,
}

impl Evaluator {
    /// The evaluator of `agent`'s profile (the base profile for `None` or an agent without one).
    pub fn new(policy: &Policy, agent: Option<&str>, ctx: &CompileContext) -> Result<Evaluator, String> {
        let expander = ctx.expander()?;
        let profile = policy.profile(agent);
        let rules: Vec<EvalRule> = profile.rules.iter().map(|rule| eval_rule(rule, &expander)).collect();
        let mut classes: [PathIndex; 4] = Default::default();
        for (id, (rule, source)) in rules.iter().zip(&profile.rules).enumerate() {
            for class in PathClass::ALL {
                let transparent = class == PathClass::Exec && source.argument_patterns().is_some();
                let index = &mut classes[class.dfa_index()];
                match &rule.paths[class.dfa_index()] {
                    None => {}
                    Some(_) if transparent => {}
                    Some(PathSet::Every) => index.add(id as u32, None, b"", b""),
                    Some(PathSet::Patterns(patterns)) => {
                        for (at, (_, pattern)) in patterns.iter().enumerate() {
                            index.add(id as u32, Some(at), pattern.prefix(), pattern.suffix());
                        }
                    }
                }
            }
        }
        let mut inet = InetIndex::default();
        for (id, rule) in rules.iter().enumerate() {
            for cidr in rule.inet.iter().flat_map(|spec| spec.cidrs.iter()) {
                let bucket = inet.buckets.entry((cidr.prefix_len, cidr.addr)).or_default();
                if bucket.last() != Some(&(id as u32)) {
                    bucket.push(id as u32);
                }
                if !inet.lengths.contains(&cidr.prefix_len) {
                    inet.lengths.push(cidr.prefix_len);
                }
            }
        }
        let argument_rules = profile
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.argument_patterns().is_some())
            .map(|(id, _)| id as u32)
            .collect();
        Ok(Evaluator { default: profile.default, rules, classes, inet, argument_rules })
    }

    /// The decision the kernel must make for `request` (effect and rule id).
    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        match *request {
            Request::FileOpen { path, read: true, write: true } => combine_read_write(
                self.by_path(PathClass::FileRead, path),
                self.by_path(PathClass::FileWrite, path),
            ),
            Request::FileOpen { path, read: false, write: true } => self.by_path(PathClass::FileWrite, path),
            // An open for neither is decided as a read, as in the kernel.
            Request::FileOpen { path, .. } => self.by_path(PathClass::FileRead, path),
            Request::Exec { path } => self.by_path(PathClass::Exec, path),
            Request::ConnectUnix { path } => self.by_path(PathClass::UnixConnect, path),
            Request::ConnectInet { protocol, addr, port } => self.by_inet(protocol, &addr, port),
            Request::ConnectOther => self.by_default(),
            Request::ListenInet { protocol, addr, port } => {
                self.by_inet(safeclaw_common::LISTEN_PROTOCOL | protocol, &addr, port)
            }
        }
    }

    /// Whether any rule of this profile has argument patterns (`evaluate_exec_with_args` can differ
    /// from `evaluate`).
    pub fn has_argument_rules(&self) -> bool {
        !self.argument_rules.is_empty()
    }

    /// An exec decided with its arguments (`argv[1..]`) known: the kernel's decision, except that
    /// an allowed exec is marked `audit` by the first argument rule placed before the deciding
    /// rule whose binary and arguments match. Argument rules never turn a deny into an allow.
    pub fn evaluate_exec_with_args(&self, path: &[u8], args: &[&[u8]]) -> Decision {
        let kernel = self.evaluate(&Request::Exec { path });
        if kernel.effect == Effect::Deny {
            return kernel;
        }
        let split = SplitPath::new(path);
        let before = kernel.rule.unwrap_or(u32::MAX);
        let flagged = self
            .argument_rules
            .iter()
            .take_while(|&&id| id < before)
            .find(|&&id| self.argument_rule_matches(id, &split, args).is_ok());
        match flagged {
            Some(&id) => Decision { effect: Effect::Audit, rule: Some(id), bound_hit: false },
            None => kernel,
        }
    }

    /// `evaluate`, rule by rule, with the reason each rule before the decision did not match.
    pub fn explain(&self, request: &Request<'_>) -> Explanation {
        let checks = match *request {
            Request::FileOpen { path, read: true, write: true } => {
                vec![
                    self.explain_path(PathClass::FileRead, path),
                    self.explain_path(PathClass::FileWrite, path),
                ]
            }
            Request::FileOpen { path, read: false, write: true } => {
                vec![self.explain_path(PathClass::FileWrite, path)]
            }
            Request::FileOpen { path, .. } => vec![self.explain_path(PathClass::FileRead, path)],
            Request::Exec { path } => vec![self.explain_path(PathClass::Exec, path)],
            Request::ConnectUnix { path } => vec![self.explain_path(PathClass::UnixConnect, path)],
            Request::ConnectInet { protocol, addr, port } => {
                vec![self.explain_inet("network.connect", protocol, &addr, port)]
            }
            Request::ListenInet { protocol, addr, port } => {
                vec![self.explain_inet(
                    "network.listen",
                    safeclaw_common::LISTEN_PROTOCOL | protocol,
                    &addr,
                    port,
                )]
            }
            Request::ConnectOther => {
                vec![Check { label: "network.connect", decision: self.by_default(), steps: Vec::new() }]
            }
        };
        let decision = match checks.as_slice() {
            [read, write] => combine_read_write(read.decision, write.decision),
            [only] => only.decision,
            _ => self.by_default(),
        };
        Explanation { decision, checks }
    }

    /// The argument rules, their binaries matched against `path`, explained.
    pub fn explain_arguments(&self, path: &[u8], args: &[&[u8]]) -> Vec<Step> {
        let split = SplitPath::new(path);
        self.argument_rules
            .iter()
            .map(|&id| {
                let verdict = match self.argument_rule_matches(id, &split, args) {
                    Ok(why) => StepVerdict::Decides(why),
                    Err(why) => StepVerdict::NoMatch(why),
                };
                Step { rule: id, name: self.rules[id as usize].name.clone(), verdict }
            })
            .collect()
    }

    fn by_default(&self) -> Decision {
        Decision { effect: self.default, rule: None, bound_hit: false }
    }

    fn decided_by(&self, rule: u32) -> Decision {
        Decision { effect: self.rules[rule as usize].effect, rule: Some(rule), bound_hit: false }
    }

    fn by_path(&self, class: PathClass, path: &[u8]) -> Decision {
        if path.len() >= PATH_MAX {
            return path_too_long();
        }
        let index = &self.classes[class.dfa_index()];
        let split = SplitPath::new(path);
        let mut candidates = Vec::new();
        index.trie.collect(path, &mut candidates);
        if let Some(&last) = path.last() {
            candidates.extend_from_slice(&index.by_last_byte[usize::from(last)]);
        }
        candidates.sort_unstable();
        for entry in candidates {
            let (rule, pattern) = index.entries[entry as usize];
            let matched = match (&self.rules[rule as usize].paths[class.dfa_index()], pattern) {
                (Some(PathSet::Every), _) => true,
                (Some(PathSet::Patterns(patterns)), Some(at)) => patterns[at].1.matches(&split),
                _ => false,
            };
            if matched {
                return self.decided_by(rule);
            }
        }
        self.by_default()
    }

    fn by_inet(&self, protocol: u8, addr: &[u8; 16], port: u16) -> Decision {
        let mut candidates: Vec<u32> = self
            .inet
            .lengths
            .iter()
            .filter_map(|&len| self.inet.buckets.get(&(len, mask(addr, len))))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates
            .into_iter()
            .find(|&id| {
                self.rules[id as usize]
                    .inet
                    .as_ref()
                    .is_some_and(|spec| spec.check(protocol, addr, port).is_ok())
            })
            .map_or_else(|| self.by_default(), |id| self.decided_by(id))
    }

    fn explain_path(&self, class: PathClass, path: &[u8]) -> Check {
        let label = class.as_str();
        if path.len() >= PATH_MAX {
            return Check { label, decision: path_too_long(), steps: Vec::new() };
        }
        let split = SplitPath::new(path);
        let mut steps = Vec::new();
        for (id, rule) in self.rules.iter().enumerate() {
            let id = id as u32;
            let verdict = match &rule.paths[class.dfa_index()] {
                None => StepVerdict::NotApplicable(format!("does not apply to {label}")),
                Some(_) if class == PathClass::Exec && rule.arguments.is_some() => {
                    StepVerdict::NotApplicable(
                        "has argument patterns, which the kernel does not decide".to_owned(),
                    )
                }
                Some(set) => match set.matching(&split) {
                    Some(glob) => StepVerdict::Decides(format!("matches `{glob}`")),
                    None => StepVerdict::NoMatch(no_path_match(set)),
                },
            };
            let decides = matches!(verdict, StepVerdict::Decides(_));
            steps.push(Step { rule: id, name: rule.name.clone(), verdict });
            if decides {
                return Check { label, decision: self.decided_by(id), steps };
            }
        }
        Check { label, decision: self.by_default(), steps }
    }

    fn explain_inet(&self, label: &'static str, protocol: u8, addr: &[u8; 16], port: u16) -> Check {
        let mut steps = Vec::new();
        for (id, rule) in self.rules.iter().enumerate() {
            let id = id as u32;
            let verdict = match &rule.inet {
                None => StepVerdict::NotApplicable(format!("does not apply to {label}")),
                Some(spec) => match spec.check(protocol, addr, port) {
                    Ok(why) => StepVerdict::Decides(why),
                    Err(why) => StepVerdict::NoMatch(why),
                },
            };
            let decides = matches!(verdict, StepVerdict::Decides(_));
            steps.push(Step { rule: id, name: rule.name.clone(), verdict });
            if decides {
                return Check { label, decision: self.decided_by(id), steps };
            }
        }
        Check { label, decision: self.by_default(), steps }
    }

    /// `Ok(why)` if argument rule `id` matches the binary and the arguments.
    fn argument_rule_matches(&self, id: u32, path: &SplitPath<'_>, args: &[&[u8]]) -> Result<String, String> {
        let rule = &self.rules[id as usize];
        let Some(set) = &rule.paths[PathClass::Exec.dfa_index()] else {
            return Err("not an exec rule".to_owned());
        };
        let Some(binary) = set.matching(path) else { return Err(no_path_match(set)) };
        let patterns = rule.arguments.as_deref().unwrap_or_default();
        for (position, alternatives) in patterns.iter().enumerate() {
            let Some(arg) = args.get(position) else {
                return Err(format!("has no argument {}", position + 1));
            };
            if !alternatives.iter().any(|p| p.matches(arg)) {
                return Err(format!(
                    "argument {} `{}` does not match",
                    position + 1,
                    String::from_utf8_lossy(arg)
                ));
            }
        }
        Ok(format!("binary matches `{binary}` and the arguments match"))
    }
}

fn path_too_long() -> Decision {
    Decision { effect: Effect::Deny, rule: None, bound_hit: true }
}

fn no_path_match(set: &PathSet) -> String {
    match set {
        PathSet::Every => "matches every path".to_owned(),
        PathSet::Patterns(patterns) => {
            format!("path matches none of {}", list(patterns.iter().map(|(text, _)| format!("`{text}`"))))
        }
    }
}

/// At most five items, comma separated.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let mut shown = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        shown.push_str(&format!(" and {} more", items.len() - 5));
    }
    shown
}

fn protocol_name(protocol: u8) -> String {
    match i32::from(protocol) {
        libc::IPPROTO_TCP => "tcp".to_owned(),
        libc::IPPROTO_UDP => "udp".to_owned(),
        0 => "other (neither tcp nor udp)".to_owned(),
        protocol if protocol == i32::from(safeclaw_common::RAW_SOCKET_PROTOCOL) => {
            "raw (socket creation)".to_owned()
        }
        protocol if protocol & i32::from(safeclaw_common::LISTEN_PROTOCOL) != 0 => {
            format!(
                "{} (listen)",
                protocol_name((protocol & !i32::from(safeclaw_common::LISTEN_PROTOCOL)) as u8)
            )
        }
        other => format!("{other}"),
    }
}

fn eval_rule(rule: &Rule, expander: &Expander<'_>) -> EvalRule {
    let mut paths: [Option<PathSet>; 4] = Default::default();
    for class in PathClass::ALL {
        paths[class.dfa_index()] = rule.paths(class).map(|paths| match expander.paths(paths) {
            Alternatives::Every => PathSet::Every,
            Alternatives::Globs(alternatives) => PathSet::Patterns(
                alternatives
                    .iter()
                    .map(|(_, tokens)| (display_tokens(tokens), PathPattern::new(tokens)))
                    .collect(),
            ),
        });
    }
    EvalRule {
        name: rule.info.name.clone(),
        effect: rule.info.effect,
        paths,
        inet: rule.inet().map(|inet| InetSpec {
            direction: inet.direction,
            cidrs: expander.cidrs(inet),
            ports: inet.ports.clone(),
            protocol: inet.protocol,
        }),
        arguments: rule.argument_patterns().map(|globs| {
            globs
                .iter()
                .map(|glob| glob.expand_home(b"").iter().map(|alt| ArgumentPattern::new(alt)).collect())
                .collect()
        }),
    }
}

impl PathIndex {
    fn add(&mut self, rule: u32, pattern: Option<usize>, prefix: &[u8], suffix: &[u8]) {
        let entry = self.entries.len() as u32;
        self.entries.push((rule, pattern));
        match suffix.last() {
            Some(&last) if prefix.len() <= 1 => self.by_last_byte[usize::from(last)].push(entry),
            _ => self.trie.insert(prefix, entry),
        }
    }
}

/// A byte trie of literal prefixes; each node lists the entries whose prefix ends there.
#[derive(Debug)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    entries: Vec<u32>,
}

impl Default for Trie {
    fn default() -> Trie {
        Trie { nodes: vec![TrieNode::default()] }
    }
}

impl Trie {
    fn insert(&mut self, key: &[u8], entry: u32) {
        let mut node = 0usize;
        for &byte in key {
            let children = &self.nodes[node].children;
            node = match children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(at) => children[at].1 as usize,
                Err(at) => {
                    let child = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.insert(at, (byte, child as u32));
                    child
                }
            };
        }
        self.nodes[node].entries.push(entry);
    }

    /// Appends the entries of every node along `path` (the prefixes of `path`).
    fn collect(&self, path: &[u8], out: &mut Vec<u32>) {
        let mut node = &self.nodes[0];
        out.extend_from_slice(&node.entries);
        for &byte in path {
            match node.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(at) => node = &self.nodes[node.children[at].1 as usize],
                Err(_) => return,
            }
            out.extend_from_slice(&node.entries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::load_str;
    use super::*;

    fn evaluator(text: &str) -> Evaluator {
        let policy = load_str("p.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        Evaluator::new(&policy, None, &CompileContext::new("/home/u")).unwrap()
    }

    #[test]
    fn argument_rules_mark_allowed_execs_and_never_allow_a_deny() {
        let eval = evaluator(
            "version: 1\nrules:\n  - {name: push, action: process.exec, effect: audit, binary: [git], args: [\"push*\"]}\n  - {name: no-git-on-tmp, action: process.exec, effect: deny, binary: [\"/tmp/**\"]}\n  - {name: bins, action: process.exec, effect: allow}\n",
        );
        let allowed = Decision { effect: Effect::Allow, rule: Some(2), bound_hit: false };
        assert_eq!(eval.evaluate(&Request::Exec { path: b"/usr/bin/git" }), allowed);
        let flagged = eval.evaluate_exec_with_args(b"/usr/bin/git", &[b"push", b"origin"]);
        assert_eq!(flagged, Decision { effect: Effect::Audit, rule: Some(0), bound_hit: false });
        assert_eq!(eval.evaluate_exec_with_args(b"/usr/bin/git", &[b"status"]), allowed);
        assert_eq!(eval.evaluate_exec_with_args(b"/usr/bin/git", &[]), allowed);
        let denied = eval.evaluate_exec_with_args(b"/tmp/git", &[b"push"]);
        assert_eq!(denied.effect, Effect::Deny);
        let steps = eval.explain_arguments(b"/usr/bin/git", &[b"pull"]);
        assert!(
            matches!(&steps[0].verdict, StepVerdict::NoMatch(why) if why.contains("argument 1 `pull` does not match")),
            "{steps:?}"
        );
    }

    #[test]
    fn explain_says_why_each_earlier_rule_missed() {
        let eval = evaluator(
            "version: 1\nrules:\n  - {name: w, action: file.write, effect: deny, paths: [/etc/**]}\n  - {name: keys, action: file.read, effect: deny, paths: [\"**/*.key\"]}\n  - {name: net, action: network.connect, effect: allow, ports: [443]}\n  - {name: etc, action: file.read, effect: allow, paths: [/etc/**]}\n",
        );
        let explanation = eval.explain(&Request::FileOpen { path: b"/etc/passwd", read: true, write: false });
        assert_eq!(explanation.decision, Decision { effect: Effect::Allow, rule: Some(3), bound_hit: false });
        let verdicts: Vec<&StepVerdict> = explanation.checks[0].steps.iter().map(|s| &s.verdict).collect();
        assert!(matches!(verdicts[0], StepVerdict::NotApplicable(_)));
        assert!(
            matches!(verdicts[1], StepVerdict::NoMatch(why) if why.contains("`/**/*.key`")),
            "{verdicts:?}"
        );
        assert!(matches!(verdicts[2], StepVerdict::NotApplicable(_)));
        assert!(matches!(verdicts[3], StepVerdict::Decides(why) if why.contains("/etc/**")), "{verdicts:?}");
        let v4 = super::super::net::mapped("192.0.2.1".parse().unwrap());
        let connect = eval.explain(&Request::ConnectInet { protocol: 6, addr: v4, port: 80 });
        assert!(connect.checks[0].steps.iter().any(
            |s| matches!(&s.verdict, StepVerdict::NoMatch(why) if why.contains("port 80 is in none of 443"))
        ));
        assert_eq!(connect.decision.rule, None);
    }

    #[test]
    fn paths_at_the_kernel_buffer_size_are_denied_and_flagged() {
        let eval = evaluator("version: 1\ndefault: allow\n");
        let long = vec![b'a'; PATH_MAX];
        let decision = eval.evaluate(&Request::FileOpen { path: &long, read: true, write: false });
        assert_eq!(decision, Decision { effect: Effect::Deny, rule: None, bound_hit: true });
        assert_eq!(eval.evaluate(&Request::ConnectOther).effect, Effect::Allow);
    }
}

//! The validated policy: rules with typed matchers, per-agent profiles, and the policy hash.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use super::compiled::Effect;
use super::diag::{Diagnostic, Location};
use super::glob::Glob;
use super::net::{Cidr, Direction, HostName, PortRange, Protocol};

/// What a rule applies to, as written in `action:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum Action {
    #[serde(rename = "file.read")]
    FileRead,
    #[serde(rename = "file.write")]
    FileWrite,
    #[serde(rename = "file.*")]
    FileAny,
    #[serde(rename = "process.exec", alias = "process.*")]
    ProcessExec,
    #[serde(rename = "network.connect", alias = "network.*")]
    NetworkConnect,
    /// Serving: listen() on a TCP socket, bind() of a UDP socket, by local address and port.
    #[serde(rename = "network.listen")]
    NetworkListen,
    /// An agent CLI's tool call, before it runs (a PreToolUse hook); decided by the daemon, not the kernel.
    #[serde(rename = "tool.call")]
    ToolCall,
    /// A tool call's result (a PostToolUse hook).
    #[serde(rename = "tool.result")]
    ToolResult,
    #[serde(rename = "tool.*")]
    ToolAny,
    /// Every attempt; such a rule takes no matchers.
    #[serde(rename = "*")]
    Any,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::FileRead => "file.read",
            Action::FileWrite => "file.write",
            Action::FileAny => "file.*",
            Action::ProcessExec => "process.exec",
            Action::NetworkConnect => "network.connect",
            Action::NetworkListen => "network.listen",
            Action::ToolCall => "tool.call",
            Action::ToolResult => "tool.result",
            Action::ToolAny => "tool.*",
            Action::Any => "*",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious a matching attempt is, for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The path-decided kinds of attempt, one kernel DFA each (`safeclaw_common::dfa_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathClass {
    FileRead,
    FileWrite,
    Exec,
    UnixConnect,
}

impl PathClass {
    pub const ALL: [PathClass; 4] =
        [PathClass::FileRead, PathClass::FileWrite, PathClass::Exec, PathClass::UnixConnect];

    /// Index in `CompiledPolicy::dfas`.
    pub fn dfa_index(self) -> usize {
        use safeclaw_common::dfa_class;
        (match self {
            PathClass::FileRead => dfa_class::FILE_READ,
            PathClass::FileWrite => dfa_class::FILE_WRITE,
            PathClass::Exec => dfa_class::PROCESS_EXEC,
            PathClass::UnixConnect => dfa_class::UNIX_CONNECT,
        }) as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PathClass::FileRead => "file.read",
            PathClass::FileWrite => "file.write",
            PathClass::Exec => "process.exec",
            PathClass::UnixConnect => "network.connect (unix socket)",
        }
    }
}

/// Which paths a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Paths {
    /// Every path the kernel presents, pseudo-files and abstract socket names included.
    Every,
    Globs(Vec<Glob>),
}

static EVERY_PATH: Paths = Paths::Every;

/// The IP side of a `network.connect` or `network.listen` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InetMatch {
    /// Whether the addresses are destinations (connect) or local addresses (listen).
    pub direction: Direction,
    /// Empty together with `hosts`: every address.
    pub cidrs: Vec<Cidr>,
    /// Resolved by the daemon; see `hosts.rs`.
    pub hosts: Vec<HostName>,
    /// Empty: every port.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
}

/// What a `*` rule matches of IP connects.
static EVERY_INET: InetMatch = InetMatch {
    direction: Direction::Both,
    cidrs: Vec::new(),
    hosts: Vec::new(),
    ports: Vec::new(),
    protocol: Protocol::Any,
};

impl InetMatch {
    pub fn every_address(&self) -> bool {
        self.cidrs.is_empty() && self.hosts.is_empty()
    }
}

/// What a rule matches, by action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    File {
        paths: Paths,
    },
    /// `args`: argument patterns, matched against `argv[1..]` in order (audit rules only).
    Exec {
        binaries: Paths,
        args: Option<Vec<Glob>>,
    },
    /// At least one of the two is set.
    Connect {
        inet: Option<InetMatch>,
        unix: Option<Paths>,
    },
    /// Serving on a local address and port (`inet.hosts` is empty).
    Listen {
        inet: InetMatch,
    },
    /// An agent tool call or result: the tool name (`None`: every tool) and named members of its input,
    /// every member listed must match one of its globs (argument syntax: `*` matches any bytes).
    Tool {
        tools: Option<Vec<Glob>>,
        input: Vec<(String, Vec<Glob>)>,
    },
    Any,
}

/// A rule apart from what it matches: what the audit trail needs of it by rule id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    pub action: Action,
    pub effect: Effect,
    pub reason: Option<String>,
    pub severity: Option<Severity>,
    pub tags: Vec<String>,
    /// Where the rule is written.
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub info: RuleInfo,
    pub matcher: Matcher,
}

impl Rule {
    /// The paths this rule matches for `class`, or `None` if it does not apply to `class`.
    pub fn paths(&self, class: PathClass) -> Option<&Paths> {
        match (&self.matcher, class) {
            (Matcher::Any, _) => Some(&EVERY_PATH),
            (Matcher::File { paths }, PathClass::FileRead) if self.info.action != Action::FileWrite => {
                Some(paths)
            }
            (Matcher::File { paths }, PathClass::FileWrite) if self.info.action != Action::FileRead => {
                Some(paths)
            }
            (Matcher::Exec { binaries, .. }, PathClass::Exec) => Some(binaries),
            (Matcher::Connect { unix: Some(paths), .. }, PathClass::UnixConnect) => Some(paths),
            _ => None,
        }
    }

    /// The IP matcher, if the rule applies to IP connects or listens.
    pub fn inet(&self) -> Option<&InetMatch> {
        match &self.matcher {
            Matcher::Connect { inet: Some(inet), .. } | Matcher::Listen { inet } => Some(inet),
            Matcher::Any => Some(&EVERY_INET),
            _ => None,
        }
    }

    /// Argument patterns: the kernel does not see them (see docs/policy.md).
    pub fn argument_patterns(&self) -> Option<&[Glob]> {
        match &self.matcher {
            Matcher::Exec { args: Some(args), .. } => Some(args),
            _ => None,
        }
    }
}

/// A named profile: its own rules first, then those of the profile it extends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub name: String,
    /// `None`: the base profile.
    pub extends: Option<String>,
    pub default: Option<Effect>,
    pub rules: Vec<Rule>,
    pub location: Location,
}

/// `sha256:<hex>` of the policy's files (see `load.rs` for the exact bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyHash(pub [u8; 32]);

impl fmt::Display for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A loaded and validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub default: Effect,
    /// Base profile rules, included files' rules first.
    pub rules: Vec<Rule>,
    pub agents: Vec<Agent>,
    pub hash: PolicyHash,
    /// Every file read, the top one first.
    pub files: Vec<Arc<str>>,
    /// Problems that do not stop the policy from loading.
    pub warnings: Vec<Diagnostic>,
}

/// The rules and default one agent (or the base) is decided by.
#[derive(Clone, Debug)]
pub struct Profile<'a> {
    /// `None`: the base profile.
    pub agent: Option<&'a str>,
    pub default: Effect,
    /// In decision order; rule ids index this.
    pub rules: Vec<&'a Rule>,
}

impl Policy {
    /// The profile of `agent`; agents not listed under `agents:` get the base profile.
    pub fn profile(&self, agent: Option<&str>) -> Profile<'_> {
        let mut profile = Profile { agent: None, default: self.default, rules: Vec::new() };
        let mut chain = Vec::new();
        let mut next = agent.and_then(|name| self.agent(name));
        if let Some(first) = next {
            profile.agent = Some(first.name.as_str());
        }
        // Load-time validation rejects cycles; the bound keeps a bad `Policy` built by hand finite.
        while let Some(current) = next.filter(|_| chain.len() <= self.agents.len()) {
            chain.push(current);
            next = current.extends.as_deref().and_then(|parent| self.agent(parent));
        }
        if let Some(default) = chain.iter().find_map(|agent| agent.default) {
            profile.default = default;
        }
        for agent in &chain {
            profile.rules.extend(agent.rules.iter());
        }
        profile.rules.extend(self.rules.iter());
        profile
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|agent| agent.name == name)
    }

    /// The base profile, then one per agent in file order.
    pub fn profiles(&self) -> Vec<Profile<'_>> {
        std::iter::once(None)
            .chain(self.agents.iter().map(|agent| Some(agent.name.as_str())))
            .map(|agent| self.profile(agent))
            .collect()
    }

    /// Every host name any rule names, for the daemon to resolve.
    pub fn host_names(&self) -> Vec<HostName> {
        let mut names: Vec<HostName> = self
            .rules
            .iter()
            .chain(self.agents.iter().flat_map(|agent| agent.rules.iter()))
            .filter_map(Rule::inet)
            .flat_map(|inet| inet.hosts.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

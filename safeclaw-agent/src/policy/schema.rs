//! The YAML form of one policy file, as serde reads it: unknown keys rejected, and every scalar
//! (glob, CIDR, port, name) checked while it is read so that its error carries its line and column.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::compiled::Effect;
use super::glob::{Glob, Syntax};
use super::model::{Action, Severity};
use super::net::{Cidr, HostName, PortRange, Protocol};

/// The only policy format version so far.
pub const VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub version: Option<Version>,
    pub default: Option<Effect>,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default)]
    pub agents: Agents,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub extends: Option<AgentName>,
    pub default: Option<Effect>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: RuleName,
    pub action: Action,
    pub effect: Effect,
    pub reason: Option<String>,
    pub severity: Option<Severity>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    pub paths: Option<Vec<Pattern<PathSyntax>>>,
    pub binary: Option<Vec<Pattern<BinarySyntax>>>,
    pub args: Option<Vec<Pattern<ArgumentSyntax>>>,
    pub cidrs: Option<Vec<Cidr>>,
    pub hosts: Option<Vec<HostName>>,
    pub ports: Option<Vec<PortRange>>,
    pub protocol: Option<Protocol>,
    pub unix: Option<Vec<Pattern<UnixSyntax>>>,
    /// `tool.*`: globs on the tool name (`Bash`, `mcp__github__*`).
    pub tools: Option<Vec<Pattern<ArgumentSyntax>>>,
    /// `tool.*`: globs on named members of the tool input (`command: "rm -rf *"`).
    pub input: Option<InputMatch>,
}

/// `input:` of a tool rule: member name to one glob or a list of globs, in file order.
#[derive(Debug, Default)]
pub struct InputMatch(pub Vec<(String, Vec<Pattern<ArgumentSyntax>>)>);

/// One glob or a list of them.
struct GlobList(Vec<Pattern<ArgumentSyntax>>);

impl<'de> Deserialize<'de> for GlobList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = GlobList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a glob or a list of globs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GlobList, E> {
                Pattern::<ArgumentSyntax>::parse(v).map(|p| GlobList(vec![p])).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GlobList, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GlobList, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GlobList, E> {
                self.visit_str(if v { "true" } else { "false" })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<GlobList, A::Error> {
                let mut globs = Vec::new();
                while let Some(glob) = seq.next_element()? {
                    globs.push(glob);
                }
                Ok(GlobList(globs))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

impl<'de> Deserialize<'de> for InputMatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = InputMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from input member name to glob(s), like `command: \"rm -rf *\"`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InputMatch, A::Error> {
                let mut members: Vec<(String, Vec<Pattern<ArgumentSyntax>>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                        return Err(de::Error::custom(format!(
                            "input member name `{name}` must be 1-128 printable bytes"
                        )));
                    }
                    if members.iter().any(|(seen, _)| *seen == name) {
                        return Err(de::Error::custom(format!("input member `{name}` is listed twice")));
                    }
                    let GlobList(globs) = map.next_value()?;
                    if globs.is_empty() {
                        return Err(de::Error::custom(format!(
                            "input member `{name}` has no glob, so the rule could never match"
                        )));
                    }
                    members.push((name, globs));
                }
                Ok(InputMatch(members))
            }
        }
        deserializer.deserialize_map(InputVisitor)
    }
}

/// `version: 1`.
#[derive(Debug)]
pub struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let version = u64::deserialize(deserializer)?;
        if version != u64::from(VERSION) {
            return Err(de::Error::custom(format!(
                "unsupported policy version {version}: this SafeClaw reads version {VERSION}"
            )));
        }
        Ok(Version)
    }
}

/// The agent profiles, in file order, names unique.
#[derive(Debug, Default)]
pub struct Agents(pub Vec<(AgentName, AgentSpec)>);

impl<'de> Deserialize<'de> for Agents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AgentsVisitor;
        impl<'de> Visitor<'de> for AgentsVisitor {
            type Value = Agents;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from agent name to profile")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Agents, A::Error> {
                let mut agents: Vec<(AgentName, AgentSpec)> = Vec::new();
                while let Some(name) = map.next_key::<AgentName>()? {
                    if agents.iter().any(|(seen, _)| seen.0 == name.0) {
                        return Err(de::Error::custom(format!("agent `{}` is defined twice", name.0)));
                    }
                    let spec = map.next_value()?;
                    agents.push((name, spec));
                }
                Ok(Agents(agents))
            }
        }
        deserializer.deserialize_map(AgentsVisitor)
    }
}

/// Reads a scalar (string or number) and parses it while serde_yaml still points at it, so that a
/// parse error carries the scalar's own line and column.
pub(crate) fn scalar<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct ScalarVisitor<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for ScalarVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    deserializer.deserialize_any(ScalarVisitor { expecting, parse })
}

fn from_str<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    text.parse().map_err(|e: T::Err| e.to_string())
}

macro_rules! scalar_from_str {
    ($type:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                scalar(deserializer, $expecting, from_str::<$type>)
            }
        }
    };
}
scalar_from_str!(Cidr, "an IP address or CIDR");
scalar_from_str!(PortRange, "a port or port range");
scalar_from_str!(HostName, "a host name");

/// A validated string: `check` returns why `text` is not acceptable.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                scalar(deserializer, stringify!($name), |text| {
                    let check: fn(&str) -> Result<(), String> = $check;
                    check(text).map(|()| $name(text.to_owned()))
                })
            }
        }
    };
}

checked_string!(
    /// A rule name: printable, no spaces at either end, at most 128 bytes, not `default`.
    RuleName,
    |text| {
        if text.is_empty() || text.len() > 128 || text.trim() != text || text.chars().any(char::is_control) {
            return Err(format!("rule name `{text}` must be 1-128 printable bytes without leading or trailing spaces"));
        }
        if text == "default" {
            return Err("`default` is reserved for the policy default; name the rule otherwise".to_owned());
        }
        Ok(())
    }
);

checked_string!(
    /// An agent name: the agent's cgroup directory name.
    AgentName,
    |text| {
        let ok = !text.is_empty()
            && text.len() <= 255
            && text != "."
            && text != ".."
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(())
        } else {
            Err(format!("agent name `{text}` must be a cgroup directory name: letters, digits, `-`, `_`, `.`"))
        }
    }
);

checked_string!(
    /// A compliance tag such as `soc2:CC6.1`: printable, no whitespace.
    Tag,
    |text| {
        if text.is_empty() || text.len() > 128 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!("tag `{text}` must be 1-128 bytes without whitespace (e.g. `soc2:CC6.1`)"))
        } else {
            Ok(())
        }
    }
);

/// Which glob syntax a field uses.
pub trait GlobField {
    const SYNTAX: Syntax;
}
#[derive(Debug)]
pub struct PathSyntax;
#[derive(Debug)]
pub struct BinarySyntax;
#[derive(Debug)]
pub struct UnixSyntax;
#[derive(Debug)]
pub struct ArgumentSyntax;
impl GlobField for PathSyntax {
    const SYNTAX: Syntax = Syntax::Path;
}
impl GlobField for BinarySyntax {
    const SYNTAX: Syntax = Syntax::Binary;
}
impl GlobField for UnixSyntax {
    const SYNTAX: Syntax = Syntax::UnixSocket;
}
impl GlobField for ArgumentSyntax {
    const SYNTAX: Syntax = Syntax::Argument;
}

/// A glob parsed with the syntax of its field.
#[derive(Debug)]
pub struct Pattern<S>(Glob, PhantomData<S>);

impl<S> Pattern<S> {
    pub fn into_glob(self) -> Glob {
        self.0
    }
}

impl<S: GlobField> Pattern<S> {
    fn parse(text: &str) -> Result<Self, String> {
        Glob::parse(text, S::SYNTAX)
            .map(|glob| Pattern(glob, PhantomData))
            .map_err(|e| format!("bad glob `{text}`: {e}"))
    }
}

impl<'de, S: GlobField> Deserialize<'de> for Pattern<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        scalar(deserializer, "a glob", Pattern::<S>::parse)
    }
}

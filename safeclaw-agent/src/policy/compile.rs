//! Compiling each profile of a policy to kernel tables (`CompiledPolicy`), refusing what does not
//! fit the kernel maps, and reporting the rules the tables show can never decide.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use safeclaw_common::{MAX_DFA_STATES, MAX_DFA_TRANSITIONS, MAX_RULES};

use super::compiled::{check_slot_limits, CompiledDfa, CompiledPolicy};
use super::context::{Alternatives, CompileContext, Expander};
use super::dfa::{self, ClassAnalysis};
use super::diag::{Diagnostic, Location, PolicyError};
use super::load::load_file;
use super::model::{PathClass, Policy, PolicyHash, Profile, Rule, RuleInfo};
use super::netcompile::{self, InetRule, NetAnalysis};

/// Table sizes of one compiled profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    pub rules: usize,
    /// Per DFA class (`safeclaw_common::dfa_class` order).
    pub dfa_states: [usize; 4],
    pub dfa_byte_classes: [usize; 4],
    pub net_prefixes: usize,
    pub port_intervals: usize,
}

impl TableStats {
    pub fn dfa_transitions(&self) -> usize {
        self.dfa_states.iter().zip(self.dfa_byte_classes).map(|(s, c)| s * c).sum()
    }

    /// Bytes of map values the tables fill: transitions and accepts (4 B), byte classes (256 B per
    /// class), rule entries (4 B), port intervals (8 B), and LPM entries (about 64 B per node).
    pub fn map_bytes(&self) -> usize {
        let states: usize = self.dfa_states.iter().sum();
        self.dfa_transitions() * 4
            + states * 4
            + 4 * 256
            + self.rules * 4
            + self.port_intervals * 8
            + self.net_prefixes * 64
    }
}

/// One profile's kernel tables and the rules its ids refer to.
#[derive(Clone, Debug)]
pub struct CompiledProfile {
    /// `None`: the base profile.
    pub agent: Option<String>,
    pub tables: CompiledPolicy,
    /// Indexed by rule id.
    pub rules: Vec<RuleInfo>,
    pub stats: TableStats,
}

impl CompiledProfile {
    /// The rule behind a kernel-reported rule id (`None` for `NO_RULE` or an unknown id).
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(id as usize)
    }
}

/// Every profile of a policy, compiled for one context.
#[derive(Clone, Debug)]
pub struct CompiledSet {
    pub hash: PolicyHash,
    pub base: CompiledProfile,
    /// In `agents:` order.
    pub agents: Vec<CompiledProfile>,
    /// The policy's load warnings and those of compiling.
    pub warnings: Vec<Diagnostic>,
}

impl CompiledSet {
    /// The profile deciding for `agent` (the base for agents without a profile of their own).
    pub fn profile(&self, agent: Option<&str>) -> &CompiledProfile {
        agent
            .and_then(|name| self.agents.iter().find(|p| p.agent.as_deref() == Some(name)))
            .unwrap_or(&self.base)
    }
}

/// Loads, validates and compiles `path` in one fallible step: the unit of an atomic reload.
pub fn load_and_compile(path: &Path, ctx: &CompileContext) -> Result<CompiledSet, PolicyError> {
    compile_all(&load_file(path)?, ctx)
}

/// Compiles the base profile and one per agent.
pub fn compile_all(policy: &Policy, ctx: &CompileContext) -> Result<CompiledSet, PolicyError> {
    let top = policy.files.first().map(Location::file).unwrap_or_else(|| Location::file(&"<policy>".into()));
    let expander = ctx.expander().map_err(|e| PolicyError::single(top.clone(), e))?;
    let mut warnings = policy.warnings.clone();
    let mut errors = Vec::new();
    let mut warned: HashSet<(String, &'static str)> = HashSet::new();
    let mut compiled = Vec::new();
    for profile in policy.profiles() {
        let location = profile
            .agent
            .and_then(|name| policy.agent(name))
            .map_or_else(|| top.clone(), |agent| agent.location.clone());
        match compile_profile(&profile, &expander) {
            Ok((tables, findings)) => {
                for finding in findings {
                    if warned.insert((finding.rule.clone(), finding.topic)) {
                        let within = profile
                            .agent
                            .map(|a| format!(" (in the profile of agent `{a}`)"))
                            .unwrap_or_default();
                        warnings.push(Diagnostic::warning(
                            finding.location,
                            format!("{}{within}", finding.message),
                        ));
                    }
                }
                compiled.push(tables);
            }
            Err(messages) => {
                let within = profile
                    .agent
                    .map_or_else(|| "base profile".to_owned(), |a| format!("profile of agent `{a}`"));
                errors.extend(
                    messages
                        .into_iter()
                        .map(|m| Diagnostic::error(location.clone(), format!("{within}: {m}"))),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(PolicyError { diagnostics: errors });
    }
    let tables: Vec<&CompiledPolicy> = compiled.iter().map(|p| &p.tables).collect();
    check_slot_limits(&tables).map_err(|e| PolicyError::single(top.clone(), e))?;
    let mut profiles = compiled.into_iter();
    let base = profiles.next().ok_or_else(|| PolicyError::single(top, "no base profile"))?;
    Ok(CompiledSet { hash: policy.hash, base, agents: profiles.collect(), warnings })
}

/// A rule the tables show never decides (or never matches).
struct Finding {
    rule: String,
    topic: &'static str,
    location: Location,
    message: String,
}

fn compile_profile(
    profile: &Profile<'_>,
    expander: &Expander<'_>,
) -> Result<(CompiledProfile, Vec<Finding>), Vec<String>> {
    let rules = &profile.rules;
    if rules.len() > MAX_RULES as usize {
        return Err(vec![format!("{} rules; the kernel tables hold MAX_RULES = {MAX_RULES}", rules.len())]);
    }
    let mut errors = Vec::new();
    let mut findings = Vec::new();
    let mut dfas: [CompiledDfa; 4] = std::array::from_fn(|_| CompiledDfa::empty());
    let mut stats = TableStats { rules: rules.len(), ..TableStats::default() };
    // The four automata and the network tables share nothing: each automaton is built on a thread
    // of its own while this one compiles the network rules, so a reload waits for the slowest part
    // rather than their sum. Results are read in class order, as one thread would produce them.
    // A host out of threads builds an automaton on this thread instead: slower, never a failed reload.
    let (built, inet_rules, net) = std::thread::scope(|scope| {
        let builds = PathClass::ALL.map(|class| {
            let build = move || dfa::build(&class_patterns(rules, class, expander), dfa::Limits::KERNEL);
            std::thread::Builder::new()
                .name("policy-dfa".into())
                .spawn_scoped(scope, build)
                .map_err(|_| build)
        });
        let inet_rules: Vec<InetRule> = rules
            .iter()
            .enumerate()
            .filter_map(|(id, rule)| {
                rule.inet().map(|inet| {
                    let cidrs = expander.cidrs(inet);
                    let raw = super::net::decides_raw_sockets(&cidrs, &inet.ports);
                    InetRule {
                        rule: id as u32,
                        cidrs,
                        ports: inet.ports.clone(),
                        protocols: inet.protocol.wire_values(raw, inet.direction),
                    }
                })
            })
            .collect();
        let net = netcompile::compile(&inet_rules);
        let built = builds.map(|build| match build {
            Ok(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(build) => build(),
        });
        (built, inet_rules, net)
    });
    for (class, build) in PathClass::ALL.into_iter().zip(built) {
        match build {
            Ok((table, analysis)) => {
                path_findings(rules, class, &analysis, &mut findings);
                let index = class.dfa_index();
                stats.dfa_states[index] = table.state_count() as usize;
                stats.dfa_byte_classes[index] = table.class_count as usize;
                dfas[index] = table;
            }
            Err(e) => errors.push(format!("{}: {e}", class.as_str())),
        }
    }
    let net = match net {
        Ok((net, analysis)) => {
            net_findings(rules, &inet_rules, &analysis, expander, &mut findings);
            net
        }
        Err(e) => {
            errors.push(e.to_string());
            Default::default()
        }
    };
    let states: usize = stats.dfa_states.iter().sum();
    let sizes = || {
        PathClass::ALL
            .iter()
            .map(|c| {
                format!(
                    "{}: {} states x {} byte classes",
                    c.as_str(),
                    stats.dfa_states[c.dfa_index()],
                    stats.dfa_byte_classes[c.dfa_index()]
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if states > MAX_DFA_STATES as usize {
        errors.push(format!("the path DFAs have {states} states ({}); the kernel tables hold MAX_DFA_STATES = {MAX_DFA_STATES}", sizes()));
    }
    if stats.dfa_transitions() > MAX_DFA_TRANSITIONS as usize {
        errors.push(format!(
            "the path DFAs have {} transitions ({}); the kernel tables hold MAX_DFA_TRANSITIONS = {MAX_DFA_TRANSITIONS}",
            stats.dfa_transitions(),
            sizes()
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    stats.net_prefixes = net.prefixes.len();
    stats.port_intervals = net.prefixes.iter().map(|p| p.intervals.len()).sum();
    let tables = CompiledPolicy {
        default_effect: profile.default,
        rule_effects: rules.iter().map(|r| r.info.effect).collect(),
        dfas,
        net,
    };
    let compiled = CompiledProfile {
        agent: profile.agent.map(str::to_owned),
        tables,
        rules: rules.iter().map(|r| r.info.clone()).collect(),
        stats,
    };
    Ok((compiled, findings))
}

fn class_patterns(rules: &[&Rule], class: PathClass, expander: &Expander<'_>) -> Vec<dfa::Pattern> {
    let mut patterns = Vec::new();
    for (id, rule) in rules.iter().enumerate() {
        let Some(paths) = rule.paths(class) else { continue };
        let transparent = class == PathClass::Exec && rule.argument_patterns().is_some();
        let alternatives = match expander.paths(paths) {
            Alternatives::Every => None,
            Alternatives::Globs(alternatives) => {
                Some(alternatives.into_iter().map(|(_, tokens)| tokens).collect())
            }
        };
        patterns.push(dfa::Pattern { alternatives, rule: id as u32, transparent });
    }
    patterns
}

fn names(rules: &[&Rule], ids: &BTreeSet<u32>) -> String {
    const SHOWN: usize = 3;
    let mut listed: Vec<String> =
        ids.iter().take(SHOWN).map(|&id| format!("`{}`", rules[id as usize].info.name)).collect();
    if ids.len() > SHOWN {
        listed.push(format!("{} more", ids.len() - SHOWN));
    }
    listed.join(", ")
}

fn path_findings(rules: &[&Rule], class: PathClass, analysis: &ClassAnalysis, findings: &mut Vec<Finding>) {
    for (id, rule) in rules.iter().enumerate() {
        let id = id as u32;
        if rule.paths(class).is_none() || analysis.decides.contains(&id) {
            continue;
        }
        let Some(instead) = analysis.decided_instead_by.get(&id) else { continue };
        let message = if rule.argument_patterns().is_some() {
            format!(
                "rule `{}`: its argument patterns never apply: every binary it names is decided first by {}",
                rule.info.name,
                names(rules, instead)
            )
        } else {
            format!(
                "rule `{}` never decides {}: every path it matches is decided first by {}",
                rule.info.name,
                class.as_str(),
                names(rules, instead)
            )
        };
        findings.push(Finding {
            rule: rule.info.name.clone(),
            topic: class.as_str(),
            location: rule.info.location.clone(),
            message,
        });
    }
    for &id in &analysis.unmatched {
        let rule = rules[id as usize];
        findings.push(Finding {
            rule: rule.info.name.clone(),
            topic: class.as_str(),
            location: rule.info.location.clone(),
            message: format!("rule `{}` matches no {} path", rule.info.name, class.as_str()),
        });
    }
}

fn net_findings(
    rules: &[&Rule],
    inet_rules: &[InetRule],
    analysis: &NetAnalysis,
    expander: &Expander<'_>,
    findings: &mut Vec<Finding>,
) {
    for inet_rule in inet_rules {
        let rule = rules[inet_rule.rule as usize];
        let hosts = rule.inet().map_or(&[][..], |inet| inet.hosts.as_slice());
        let message = if inet_rule.cidrs.is_empty() {
            // Host names nobody tried to resolve (`policy check` without `--resolve`) are not news.
            if !hosts.iter().any(|h| expander.resolved(h)) {
                continue;
            }
            let names = hosts.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ");
            format!(
                "rule `{}` matches no address: its host names ({names}) resolved to no address",
                rule.info.name
            )
        } else if analysis.decides.contains(&inet_rule.rule) {
            continue;
        } else {
            match analysis.decided_instead_by.get(&inet_rule.rule).filter(|s| !s.is_empty()) {
                Some(instead) => format!(
                    "rule `{}` never decides an IP connect: its addresses and ports are decided first by {}",
                    rule.info.name,
                    names(rules, instead)
                ),
                None => format!(
                    "rule `{}` never decides an IP connect: earlier rules decide all it matches",
                    rule.info.name
                ),
            }
        };
        findings.push(Finding {
            rule: rule.info.name.clone(),
            topic: "network.connect",
            location: rule.info.location.clone(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::compiled::Effect;
    use super::super::load::load_str;
    use super::super::model::Severity;
    use super::*;

    fn compiled(text: &str) -> CompiledSet {
        let policy = load_str("p.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        compile_all(&policy, &CompileContext::new("/home/u")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn shadowed_rules_are_reported_with_the_rules_that_decide_instead() {
        let set = compiled(
            "version: 1\nrules:\n  - {name: home, action: file.*, effect: allow, paths: [\"~/**\"]}\n  - {name: ssh, action: file.read, effect: deny, paths: [\"~/.ssh/**\"]}\n  - {name: lan, action: network.connect, effect: allow, cidrs: [10.0.0.0/8]}\n  - {name: db, action: network.connect, effect: deny, cidrs: [10.1.0.0/16], ports: [5432]}\n",
        );
        let warnings: Vec<String> = set.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "p.yaml:4:6: warning: rule `ssh` never decides file.read: every path it matches is decided first by `home`",
                "p.yaml:6:6: warning: rule `db` never decides an IP connect: its addresses and ports are decided first by `lan`",
            ]
        );
    }

    #[test]
    fn rule_ids_map_back_to_rule_info_per_profile() {
        let set = compiled(
            "version: 1\nrules:\n  - {name: base, action: \"*\", effect: deny, reason: nope, severity: high, tags: [soc2:CC6.1]}\nagents:\n  bot:\n    rules:\n      - {name: mine, action: file.read, effect: allow, paths: [/x]}\n",
        );
        let bot = set.profile(Some("bot"));
        assert_eq!(bot.agent.as_deref(), Some("bot"));
        assert_eq!(bot.rule(0).map(|r| r.name.as_str()), Some("mine"));
        let base = bot.rule(1).unwrap();
        assert_eq!(
            (base.name.as_str(), base.reason.as_deref(), base.severity),
            ("base", Some("nope"), Some(Severity::High))
        );
        assert_eq!(base.tags, ["soc2:CC6.1"]);
        assert_eq!(bot.tables.rule_effects, [Effect::Allow, Effect::Deny]);
        assert!(std::ptr::eq(set.profile(Some("stranger")), &set.base));
        assert!(bot.rule(safeclaw_common::NO_RULE).is_none());
    }

    #[test]
    fn more_rules_than_the_kernel_holds_are_refused_naming_the_limit() {
        let mut text = String::from("version: 1\nrules:\n");
        for i in 0..=MAX_RULES {
            text.push_str(&format!(
                "  - {{name: r{i}, action: network.connect, effect: allow, ports: [{}]}}\n",
                i % 65536
            ));
        }
        let policy = load_str("p.yaml", &text).unwrap();
        let error = compile_all(&policy, &CompileContext::new("/home/u")).unwrap_err().to_string();
        let expected = format!("{} rules; the kernel tables hold MAX_RULES = {MAX_RULES}", MAX_RULES + 1);
        assert!(error.contains(&expected), "{error}");
    }

    #[test]
    fn raw_sockets_are_decided_only_by_rules_for_every_address_and_port() {
        let text = "version: 1\ndefault: allow\nrules:\n\
  - {name: lan, action: network.connect, effect: deny, cidrs: [10.0.0.0/8, 0.0.0.0]}\n\
  - {name: web, action: network.connect, effect: deny, ports: [443]}\n\
  - {name: raw-with-port, action: network.connect, effect: deny, protocol: raw, ports: [0]}\n\
  - {name: tcp, action: network.connect, effect: deny, protocol: tcp}\n\
  - {name: raw, action: network.connect, effect: allow, protocol: raw}\n";
        let policy = load_str("p.yaml", text).unwrap();
        let ctx = CompileContext::new("/home/u");
        let set = compile_all(&policy, &ctx).unwrap();
        let evaluator = super::super::Evaluator::new(&policy, None, &ctx).unwrap();
        let raw = super::super::compiled::Request::ConnectInet {
            protocol: safeclaw_common::RAW_SOCKET_PROTOCOL,
            addr: [0; 16],
            port: 0,
        };
        assert_eq!(set.base.tables.decide(&raw).rule, Some(4));
        assert_eq!(evaluator.evaluate(&raw).rule, Some(4));
        assert_eq!(evaluator.evaluate(&raw).effect, Effect::Allow);
    }

    #[test]
    fn listen_rules_decide_only_listens_and_do_not_widen_loopback() {
        let text = "version: 1\ndefault: deny\nrules:\n\
  - {name: connect-all, action: network.connect, effect: allow}\n\
  - {name: loopback-listen, action: network.listen, effect: allow, cidrs: [127.0.0.0/8, \"::1\"]}\n\
  - {name: dns-bind, action: network.listen, effect: allow, protocol: udp, ports: [53]}\n\
  - {name: any-listen, action: network.listen, effect: deny, cidrs: [0.0.0.0]}\n";
        let policy = load_str("p.yaml", text).unwrap();
        let ctx = CompileContext::new("/home/u");
        let set = compile_all(&policy, &ctx).unwrap();
        let evaluator = super::super::Evaluator::new(&policy, None, &ctx).unwrap();
        let v4 = |a: [u8; 4]| std::net::Ipv4Addr::from(a).to_ipv6_mapped().octets();
        let any6 = [0u8; 16];
        let listen = |protocol: u8, addr: [u8; 16], port: u16| super::super::compiled::Request::ListenInet {
            protocol,
            addr,
            port,
        };
        let cases = [
            (listen(6, v4([127, 0, 0, 1]), 8000), Some(1), Effect::Allow),
            (listen(6, std::net::Ipv6Addr::LOCALHOST.octets(), 8000), Some(1), Effect::Allow),
            // Loopback is not widened for listens: the any-address is not loopback's.
            (listen(6, v4([0, 0, 0, 0]), 8000), Some(3), Effect::Deny),
            // ...but the any-address is: `::` (dual-stack) is decided by the `0.0.0.0` rule.
            (listen(6, any6, 8000), Some(3), Effect::Deny),
            (listen(17, v4([0, 0, 0, 0]), 53), Some(2), Effect::Allow),
            (listen(6, v4([0, 0, 0, 0]), 53), Some(3), Effect::Deny),
            // A connect rule decides no listen: the default does.
            (listen(6, v4([10, 0, 0, 1]), 8000), None, Effect::Deny),
        ];
        for (request, rule, effect) in cases {
            let decision = evaluator.evaluate(&request);
            assert_eq!((decision.rule, decision.effect), (rule, effect), "{request:?}");
            assert_eq!(set.base.tables.decide(&request), decision, "{request:?}");
        }
        // And a listen rule decides no connect.
        let connect =
            super::super::compiled::Request::ConnectInet { protocol: 6, addr: v4([0, 0, 0, 0]), port: 8000 };
        assert_eq!(evaluator.evaluate(&connect).rule, Some(0));
        assert_eq!(set.base.tables.decide(&connect).rule, Some(0));
    }

    #[test]
    fn a_raw_listen_rule_is_refused() {
        let text = "version: 1\nrules:\n  - {name: r, action: network.listen, effect: deny, protocol: raw}\n";
        let error = load_str("p.yaml", text).unwrap_err().to_string();
        assert!(error.contains("a raw socket does not listen"), "{error}");
    }

    #[test]
    fn ten_thousand_directory_rules_fit_the_kernel_tables() {
        let mut text = String::from("version: 1\nrules:\n");
        for i in 0..10_000 {
            let action = ["file.read", "file.write", "process.exec", "network.connect"][i % 4];
            let matcher = match i % 4 {
                3 => format!("cidrs: [10.{}.{}.0/24], ports: [443]", i / 256 % 256, i % 256),
                _ => format!("paths: [/srv/p{i}/**]")
                    .replace("paths", if i % 4 == 2 { "binary" } else { "paths" }),
            };
            text.push_str(&format!("  - {{name: r{i}, action: {action}, effect: allow, {matcher}}}\n"));
        }
        let set = compiled(&text);
        let stats = set.base.stats;
        assert_eq!(stats.rules, 10_000);
        assert!(stats.dfa_transitions() <= MAX_DFA_TRANSITIONS as usize, "{stats:?}");
        // One prefix per CIDR and per protocol the rules name (tcp, udp and other), plus /0 each,
        // and the /0 of raw sockets, TCP listens and UDP binds.
        assert_eq!(stats.net_prefixes, 3 * 2501 + 3);
        let read = set.base.tables.decide(&super::super::compiled::Request::FileOpen {
            path: b"/srv/p4/a",
            read: true,
            write: false,
        });
        assert_eq!(read.rule, Some(4));
    }

    #[test]
    fn a_bad_home_is_an_error() {
        let policy = load_str("p.yaml", "version: 1\n").unwrap();
        let error = compile_all(&policy, &CompileContext::new("relative/home")).unwrap_err().to_string();
        assert!(error.contains("must be an absolute path"), "{error}");
    }
}

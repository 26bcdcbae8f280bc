//! `safeclaw-agent policy …` subcommands: check, test and explain a policy file.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::attempt::{Attempt, AttemptAction};
use super::compiled::{Decision, Effect};
use super::diag::{Diagnostic, Location};
use super::positions::Positions;
use super::{
    compile_all, denied_loader_warnings, launching_user_home, load_file, resolve_system, CompileContext,
    CompiledProfile, CompiledSet, Evaluator, HostAddresses, HostCache, HostName, Policy, PolicyError,
    Protocol, StepVerdict, ToolEvaluator, ToolRequest, SYSTEM_LOADERS,
};

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy file and its includes, compile every profile, and print the warnings.
    Check {
        file: PathBuf,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run the cases of a cases file against the policy; exits 1 if any case does not hold.
    Test {
        file: PathBuf,
        /// YAML file of cases (see docs/policy.md).
        #[arg(long)]
        cases: PathBuf,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Say which rule decides an attempt, and why each rule before it did not.
    Explain {
        file: PathBuf,
        #[arg(long, value_enum)]
        action: AttemptAction,
        /// File, binary or Unix socket path (`~` is the home).
        #[arg(long)]
        path: Option<String>,
        /// Destination of a network.connect, or the local address of a network.listen.
        #[arg(long)]
        address: Option<IpAddr>,
        #[arg(long)]
        port: Option<u16>,
        /// tcp or udp (default tcp).
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<Protocol>,
        /// Arguments of a process.exec (argv[1..]), for argument rules.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        args: Option<Vec<String>>,
        /// The agent (child cgroup name) whose profile decides; the base profile by default.
        #[arg(long)]
        agent: Option<String>,
        /// Tool name of a tool.call or tool.result (`Bash`, `WebFetch`, `mcp__github__create_issue`).
        #[arg(long)]
        tool: Option<String>,
        /// Tool input of a tool.call or tool.result, as JSON (`{"command": "rm -rf /"}`).
        #[arg(long)]
        input: Option<String>,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Make the running daemon load its policy file again (as SIGHUP does); exits 1 if the new
    /// policy is refused (the old one keeps enforcing).
    Reload {
        /// The daemon's socket [default: $SAFECLAW_SOCKET, else /run/safeclaw/agent.sock].
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

/// `--json`: one JSON document on standard output instead of text (schema in docs/cli.md).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// Print one JSON document (schema in docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ContextArgs {
    /// What `~` stands for (default: SUDO_USER's home, else $HOME).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Resolve the policy's host names with the system resolver (otherwise they match nothing).
    #[arg(long)]
    resolve: bool,
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "raw" => Ok(Protocol::Raw),
        _ => Err(format!("`{text}`: expected tcp, udp or raw")),
    }
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file, context, output } => check(&file, &context, output),
        PolicyCommand::Test { file, cases, context, output } => test(&file, &cases, &context, output),
        PolicyCommand::Explain {
            file,
            action,
            path,
            address,
            port,
            protocol,
            args,
            agent,
            tool,
            input,
            context,
            output,
        } => {
            let Some((policy, ctx)) = load(&file, &context, output)? else { return Ok(ExitCode::from(1)) };
            if let Some(phase) = action.tool_phase() {
                let tool = tool.context("tool.call and tool.result need --tool NAME")?;
                let input: serde_json::Value = match input {
                    Some(text) => serde_json::from_str(&text).context("--input is not JSON")?,
                    None => serde_json::json!({}),
                };
                return explain_tool(
                    &policy,
                    agent.as_deref(),
                    &ToolRequest { phase, tool: &tool, input: &input },
                );
            }
            let attempt = Attempt::new(action, path.as_deref(), address, port, protocol, args, &ctx.home)
                .map_err(anyhow::Error::msg)?;
            explain(&policy, &ctx, agent.as_deref(), &attempt, output)
        }
        PolicyCommand::Reload { socket } => crate::control::reload(socket.as_deref()),
    }
}

/// Loads the policy and builds the context; `None` after printing the policy's errors.
fn load(
    file: &Path,
    args: &ContextArgs,
    output: OutputArgs,
) -> anyhow::Result<Option<(Policy, CompileContext)>> {
    let policy = match load_file(file) {
        Ok(policy) => policy,
        Err(e) => {
            print_errors(&e, output);
            return Ok(None);
        }
    };
    let home = args.home.clone().unwrap_or_else(launching_user_home);
    let mut ctx = CompileContext::new(home);
    if args.resolve {
        let mut cache = HostCache::default();
        for (host, error) in cache.refresh(&policy.host_names(), 0, resolve_system) {
            eprintln!("warning: cannot resolve `{host}`: {error}");
        }
        ctx.hosts = cache.addresses(0);
    }
    Ok(Some((policy, ctx)))
}

/// A refused policy: its diagnostics on standard error, or `{"ok": false, "errors": [...]}`.
fn print_errors(error: &PolicyError, output: OutputArgs) {
    if output.json {
        let errors: Vec<Value> = error.diagnostics.iter().map(diagnostic_json).collect();
        println!("{}", json!({ "ok": false, "errors": errors }));
        return;
    }
    for diagnostic in &error.diagnostics {
        eprintln!("{diagnostic}");
    }
}

/// `{"level", "file", "line", "column", "message"}`; line and column are null when unknown.
fn diagnostic_json(diagnostic: &Diagnostic) -> Value {
    let place = |n: usize| if diagnostic.location.line == 0 { Value::Null } else { json!(n) };
    json!({
        "level": match diagnostic.level { super::Level::Error => "error", super::Level::Warning => "warning" },
        "file": &*diagnostic.location.file,
        "line": place(diagnostic.location.line),
        "column": place(diagnostic.location.column),
        "message": diagnostic.message,
    })
}

/// Compiles every profile; warnings go to standard error in text mode (the JSON carries them).
fn compile(policy: &Policy, ctx: &CompileContext, output: OutputArgs) -> Option<CompiledSet> {
    match compile_all(policy, ctx) {
        Ok(set) => {
            if !output.json {
                for warning in &set.warnings {
                    eprintln!("{warning}");
                }
            }
            Some(set)
        }
        Err(e) => {
            print_errors(&e, output);
            None
        }
    }
}

fn check(file: &Path, args: &ContextArgs, output: OutputArgs) -> anyhow::Result<ExitCode> {
    let Some((policy, ctx)) = load(file, args, output)? else { return Ok(ExitCode::from(1)) };
    let Some(mut set) = compile(&policy, &ctx, output) else { return Ok(ExitCode::from(1)) };
    let top = policy.files.first().map_or_else(|| Location::file(&"<policy>".into()), Location::file);
    let loader_warnings = denied_loader_warnings(&set, &SYSTEM_LOADERS, &top);
    if !output.json {
        for warning in &loader_warnings {
            eprintln!("{warning}");
        }
    }
    set.warnings.extend(loader_warnings);
    let unresolved = policy.host_names().len();
    if output.json {
        let profiles: Vec<Value> = std::iter::once(&set.base).chain(&set.agents).map(profile_json).collect();
        let warnings: Vec<Value> = set.warnings.iter().map(diagnostic_json).collect();
        let document = json!({
            "ok": true,
            "file": file.display().to_string(),
            "policyHash": set.hash.to_string(),
            "files": policy.files.iter().map(|f| &**f).collect::<Vec<&str>>(),
            "warnings": warnings,
            "unresolvedHostNames": if args.resolve { 0 } else { unresolved },
            "profiles": profiles,
        });
        println!("{document}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: ok, {} ({} file(s), {} warning(s))",
        file.display(),
        set.hash,
        policy.files.len(),
        set.warnings.len()
    );
    if !args.resolve && unresolved > 0 {
        println!("  {unresolved} host name(s) not resolved, so matching no address here (pass --resolve to resolve them)");
    }
    for profile in std::iter::once(&set.base).chain(&set.agents) {
        println!("  {}", profile_summary(profile));
    }
    Ok(ExitCode::SUCCESS)
}

fn profile_summary(profile: &CompiledProfile) -> String {
    let stats = &profile.stats;
    let name = profile.agent.as_deref().map_or_else(|| "base profile".to_owned(), |a| format!("agent `{a}`"));
    format!(
        "{name}: {} rules, default {}; DFA states read/write/exec/unix {:?}, {} transitions; {} network prefixes, {} port intervals; ~{} KiB of map values",
        stats.rules,
        profile.tables.default_effect.as_str(),
        stats.dfa_states,
        stats.dfa_transitions(),
        stats.net_prefixes,
        stats.port_intervals,
        stats.map_bytes().div_ceil(1024)
    )
}

fn profile_json(profile: &CompiledProfile) -> Value {
    let stats = &profile.stats;
    json!({
        "agent": profile.agent,
        "rules": stats.rules,
        "default": profile.tables.default_effect.as_str(),
        "dfaStates": { "read": stats.dfa_states[0], "write": stats.dfa_states[1], "exec": stats.dfa_states[2], "unix": stats.dfa_states[3] },
        "dfaTransitions": stats.dfa_transitions(),
        "networkPrefixes": stats.net_prefixes,
        "portIntervals": stats.port_intervals,
        "mapBytes": stats.map_bytes(),
    })
}

/// The deciding rule's name, or null for the default (and the kernel bound).
fn rule_name(profile: &CompiledProfile, decision: &Decision) -> Value {
    decision.rule.and_then(|id| profile.rule(id)).map_or(Value::Null, |rule| json!(rule.name))
}

fn rule_label(profile: &CompiledProfile, decision: &Decision) -> String {
    match decision.rule.and_then(|id| profile.rule(id)) {
        Some(rule) => format!("rule `{}`", rule.name),
        None if decision.bound_hit => "the kernel bound (path too long)".to_owned(),
        None => "the default".to_owned(),
    }
}

fn explain(
    policy: &Policy,
    ctx: &CompileContext,
    agent: Option<&str>,
    attempt: &Attempt,
    output: OutputArgs,
) -> anyhow::Result<ExitCode> {
    let Some(set) = compile(policy, ctx, output) else { return Ok(ExitCode::from(1)) };
    let profile = set.profile(agent);
    let evaluator = Evaluator::new(policy, agent, ctx).map_err(anyhow::Error::msg)?;
    let request = attempt.request();
    let explanation = evaluator.explain(&request);
    let mut out = String::new();
    let mut checks_json = Vec::new();
    let profile_name = profile
        .agent
        .as_deref()
        .map_or_else(|| "base profile".to_owned(), |a| format!("profile of agent `{a}`"));
    writeln!(out, "policy {} ({profile_name})", set.hash)?;
    for check in &explanation.checks {
        writeln!(out, "{} {}", check.label, describe(attempt))?;
        for step in &check.steps {
            let (mark, text) = match &step.verdict {
                StepVerdict::NotApplicable(why) => ("  skip", why),
                StepVerdict::NoMatch(why) => ("  miss", why),
                StepVerdict::Decides(why) => ("  HIT ", why),
            };
            writeln!(out, "{mark} #{} `{}`: {text}", step.rule, step.name)?;
        }
        writeln!(out, "  => {} by {}", check.decision.effect.as_str(), rule_label(profile, &check.decision))?;
        checks_json.push(json!({
            "label": check.label,
            "steps": check.steps.iter().map(step_json).collect::<Vec<_>>(),
            "effect": check.decision.effect.as_str(),
            "rule": rule_name(profile, &check.decision),
        }));
    }
    let mut argument_steps = Vec::new();
    let mut decision = explanation.decision;
    if let (Some(args), AttemptAction::ProcessExec) = (attempt.arg_slices(), attempt.action) {
        for step in evaluator.explain_arguments(&attempt.path, &args) {
            let text = match &step.verdict {
                StepVerdict::Decides(why) | StepVerdict::NoMatch(why) | StepVerdict::NotApplicable(why) => {
                    why
                }
            };
            writeln!(out, "  args #{} `{}`: {text}", step.rule, step.name)?;
            argument_steps.push(step_json(&step));
        }
        decision = evaluator.evaluate_exec_with_args(&attempt.path, &args);
    }
    writeln!(out, "decision: {} by {}", decision.effect.as_str(), rule_label(profile, &decision))?;
    let deciding = decision.rule.and_then(|id| profile.rule(id));
    if let Some(rule) = deciding {
        if let Some(reason) = &rule.reason {
            writeln!(out, "reason: {reason}")?;
        }
        writeln!(out, "rule defined at {}", rule.location)?;
    }
    let kernel = profile.tables.decide(&request);
    let agrees = kernel == explanation.decision;
    if output.json {
        let document = json!({
            "ok": agrees,
            "policyHash": set.hash.to_string(),
            "agent": profile.agent,
            "attempt": describe(attempt),
            "checks": checks_json,
            "argumentSteps": argument_steps,
            "decision": {
                "effect": decision.effect.as_str(),
                "rule": rule_name(profile, &decision),
                "boundHit": decision.bound_hit,
                "reason": deciding.and_then(|r| r.reason.clone()),
                "definedAt": deciding.map(|r| r.location.to_string()),
            },
            "kernelAgrees": agrees,
        });
        println!("{document}");
    } else {
        print!("{out}");
    }
    if !agrees {
        eprintln!(
            "BUG: the kernel tables decide {} by {}; please report this policy",
            kernel.effect.as_str(),
            rule_label(profile, &kernel)
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

fn explain_tool(policy: &Policy, agent: Option<&str>, request: &ToolRequest<'_>) -> anyhow::Result<ExitCode> {
    let evaluator = ToolEvaluator::new(policy, agent);
    let check = evaluator.explain(request);
    let profile = policy.profile(agent);
    let mut out = String::new();
    let profile_name =
        profile.agent.map_or_else(|| "base profile".to_owned(), |a| format!("profile of agent `{a}`"));
    writeln!(out, "policy {} ({profile_name})", policy.hash)?;
    writeln!(out, "{} {} {}", check.label, request.tool, request.input)?;
    for step in &check.steps {
        let (mark, text) = match &step.verdict {
            StepVerdict::NotApplicable(why) => ("  skip", why),
            StepVerdict::NoMatch(why) => ("  miss", why),
            StepVerdict::Decides(why) => ("  HIT ", why),
        };
        writeln!(out, "{mark} #{} `{}`: {text}", step.rule, step.name)?;
    }
    let rule = check.decision.rule.and_then(|id| profile.rules.get(id as usize));
    let by = rule.map_or_else(|| "the default".to_owned(), |r| format!("rule `{}`", r.info.name));
    writeln!(
        out,
        "decision: {} by {by} (decided by the daemon; the kernel never sees tool calls)",
        check.decision.effect.as_str()
    )?;
    if let Some(rule) = rule {
        if let Some(reason) = &rule.info.reason {
            writeln!(out, "reason: {reason}")?;
        }
        writeln!(out, "rule defined at {}", rule.info.location)?;
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `{"rule": index, "name", "verdict": "skip"|"miss"|"hit", "why"}`.
fn step_json(step: &super::Step) -> Value {
    let (verdict, why) = match &step.verdict {
        StepVerdict::NotApplicable(why) => ("skip", why),
        StepVerdict::NoMatch(why) => ("miss", why),
        StepVerdict::Decides(why) => ("hit", why),
    };
    json!({ "rule": step.rule, "name": step.name, "verdict": verdict, "why": why })
}

fn describe(attempt: &Attempt) -> String {
    match attempt.inet {
        Some((safeclaw_common::RAW_SOCKET_PROTOCOL, ..)) => "a raw or packet socket".to_owned(),
        Some((protocol, addr, port)) => {
            let v6 = std::net::Ipv6Addr::from(addr);
            let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            let protocol = if i32::from(protocol) == libc::IPPROTO_UDP { "udp" } else { "tcp" };
            format!("{protocol} {ip} port {port}")
        }
        None => String::from_utf8_lossy(&attempt.path).into_owned(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    home: Option<PathBuf>,
    /// Host name resolutions to use instead of DNS.
    #[serde(default)]
    hosts: BTreeMap<HostName, Vec<IpAddr>>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    agent: Option<String>,
    action: AttemptAction,
    path: Option<String>,
    args: Option<Vec<String>>,
    address: Option<IpAddr>,
    port: Option<u16>,
    protocol: Option<Protocol>,
    /// Tool name of a tool.call or tool.result case.
    tool: Option<String>,
    /// Tool input of a tool.call or tool.result case (any YAML, read as JSON).
    input: Option<serde_yaml::Value>,
    expect: Effect,
    /// A rule name, or `default`.
    rule: Option<String>,
}

fn read_cases(path: &Path) -> anyhow::Result<(CasesFile, Positions, Arc<str>)> {
    let name: Arc<str> = Arc::from(path.display().to_string());
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let positions = Positions::scan(&text).map_err(|deep| {
        let at = Location::new(&name, deep.line, deep.column);
        anyhow::anyhow!("{}", Diagnostic::error(at, deep.to_string()))
    })?;
    let cases: CasesFile = serde_yaml::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map_or_else(|| Location::file(&name), |l| Location::new(&name, l.line(), l.column()));
        anyhow::anyhow!("{}", Diagnostic::error(at, e.to_string()))
    })?;
    Ok((cases, positions, name))
}

fn test(file: &Path, cases_path: &Path, args: &ContextArgs, output: OutputArgs) -> anyhow::Result<ExitCode> {
    let (cases, positions, cases_name) = read_cases(cases_path)?;
    let Some((policy, mut ctx)) = load(file, args, output)? else { return Ok(ExitCode::from(1)) };
    if let Some(home) = &cases.home {
        ctx.home = home.clone();
    }
    if !cases.hosts.is_empty() {
        let mut hosts = HostAddresses::default();
        for (host, addrs) in &cases.hosts {
            hosts.insert(host.clone(), addrs.iter().copied());
        }
        ctx.hosts = hosts;
    }
    let Some(set) = compile(&policy, &ctx, output) else { return Ok(ExitCode::from(1)) };
    let mut results = Vec::new();
    let mut evaluators: BTreeMap<Option<String>, Evaluator> = BTreeMap::new();
    let (mut passed, mut failed) = (0usize, 0usize);
    for (index, case) in cases.cases.iter().enumerate() {
        let at = positions.get(&format!("cases[{index}]")).map_or_else(
            || Location::file(&cases_name),
            |(line, column)| Location::new(&cases_name, line, column),
        );
        let label = case.name.clone().unwrap_or_else(|| format!("case {}", index + 1));
        let why = match run_case(case, &policy, &ctx, &set, &mut evaluators) {
            Ok(None) => {
                passed += 1;
                if !output.json {
                    println!("ok   {label}");
                }
                None
            }
            Ok(Some(why)) | Err(why) => {
                failed += 1;
                if !output.json {
                    println!("FAIL {label} ({at}): {why}");
                }
                Some(why)
            }
        };
        results.push(json!({ "name": label, "at": at.to_string(), "ok": why.is_none(), "why": why }));
    }
    if output.json {
        let document = json!({
            "ok": failed == 0,
            "policyHash": set.hash.to_string(),
            "passed": passed,
            "failed": failed,
            "cases": results,
        });
        println!("{document}");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `Ok(None)` if the case holds, `Ok(Some(why not))` if not, `Err` if it cannot be run.
fn run_case(
    case: &Case,
    policy: &Policy,
    ctx: &CompileContext,
    set: &CompiledSet,
    evaluators: &mut BTreeMap<Option<String>, Evaluator>,
) -> Result<Option<String>, String> {
    if let Some(agent) = &case.agent {
        if policy.agent(agent).is_none() {
            return Err(format!("agent `{agent}` has no profile in the policy"));
        }
    }
    if let Some(phase) = case.action.tool_phase() {
        let tool = case.tool.as_deref().ok_or("a tool case needs `tool`")?;
        let input = match &case.input {
            Some(input) => serde_json::to_value(input).map_err(|e| format!("`input`: {e}"))?,
            None => serde_json::json!({}),
        };
        let decision = ToolEvaluator::new(policy, case.agent.as_deref()).evaluate(&ToolRequest {
            phase,
            tool,
            input: &input,
        });
        let profile = set.profile(case.agent.as_deref());
        return Ok(judge(case, decision, profile));
    }
    if case.tool.is_some() || case.input.is_some() {
        return Err("`tool` and `input` only go with tool.call and tool.result".to_owned());
    }
    let attempt = Attempt::new(
        case.action,
        case.path.as_deref(),
        case.address,
        case.port,
        case.protocol,
        case.args.clone(),
        &ctx.home,
    )?;
    let evaluator = match evaluators.entry(case.agent.clone()) {
        std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
        std::collections::btree_map::Entry::Vacant(entry) => {
            entry.insert(Evaluator::new(policy, case.agent.as_deref(), ctx)?)
        }
    };
    let profile = set.profile(case.agent.as_deref());
    let request = attempt.request();
    let reference = evaluator.evaluate(&request);
    let kernel = profile.tables.decide(&request);
    if kernel != reference {
        return Ok(Some(format!(
            "BUG: the kernel tables decide {} by {}, the evaluator {} by {}",
            kernel.effect.as_str(),
            rule_label(profile, &kernel),
            reference.effect.as_str(),
            rule_label(profile, &reference)
        )));
    }
    let decision = match (attempt.arg_slices(), case.action) {
        (Some(args), AttemptAction::ProcessExec) => evaluator.evaluate_exec_with_args(&attempt.path, &args),
        _ => reference,
    };
    Ok(judge(case, decision, profile))
}

/// `None` if the decision is what the case expects, else why not.
fn judge(case: &Case, decision: Decision, profile: &CompiledProfile) -> Option<String> {
    let got_rule = decision.rule.and_then(|id| profile.rule(id)).map_or("default", |r| r.name.as_str());
    let effect_ok = decision.effect == case.expect;
    let rule_ok = case.rule.as_deref().is_none_or(|want| want == got_rule);
    if effect_ok && rule_ok {
        return None;
    }
    let expected = match &case.rule {
        Some(rule) => format!("{} by `{rule}`", case.expect.as_str()),
        None => case.expect.as_str().to_owned(),
    };
    Some(format!("expected {expected}, got {} by `{got_rule}`", decision.effect.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_cases_are_judged_by_the_tool_rules() {
        let policy = super::super::load_str(
            "p.yaml",
            "version: 1\nrules:\n  - {name: no-rm, action: tool.call, effect: deny, tools: [Bash], input: {command: \"rm *\"}}\n  - {name: tools, action: tool.*, effect: allow}\n",
        )
        .unwrap();
        let ctx = CompileContext::new("/home/u");
        let set = compile(&policy, &ctx, OutputArgs { json: false }).unwrap();
        let cases: CasesFile = serde_yaml::from_str(
            "cases:\n  - {action: tool.call, tool: Bash, input: {command: rm -rf /}, expect: deny, rule: no-rm}\n  - {action: tool.result, tool: Bash, input: {command: rm -rf /}, expect: allow, rule: tools}\n  - {action: tool.call, tool: Bash, input: {command: ls}, expect: deny}\n  - {action: tool.call, path: /x, expect: deny}\n  - {action: file.read, path: /x, tool: Bash, expect: deny}\n",
        )
        .unwrap();
        let mut evaluators = BTreeMap::new();
        let outcomes: Vec<_> =
            cases.cases.iter().map(|case| run_case(case, &policy, &ctx, &set, &mut evaluators)).collect();
        assert_eq!(outcomes[0], Ok(None));
        assert_eq!(outcomes[1], Ok(None));
        assert_eq!(outcomes[2], Ok(Some("expected deny, got allow by `tools`".to_owned())));
        assert_eq!(outcomes[3], Err("a tool case needs `tool`".to_owned()));
        assert!(
            outcomes[4].as_ref().is_err_and(|e| e.contains("only go with tool.call")),
            "{:?}",
            outcomes[4]
        );
    }
}

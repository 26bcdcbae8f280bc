//! Deciding agent tool calls (`tool.call`, `tool.result`): the kernel never sees them, so the daemon
//! decides them here with the profile's rules in first-match order, as `explain` shows.

use super::compiled::{Decision, Effect};
use super::eval::{Check, Step, StepVerdict};
use super::glob::Glob;
use super::matcher::ArgumentPattern;
use super::model::{Action, Matcher, Policy};

/// Which hook asks: before the tool runs, or after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolPhase {
    Call,
    Result,
}

impl ToolPhase {
    pub fn action(self) -> &'static str {
        match self {
            ToolPhase::Call => "tool.call",
            ToolPhase::Result => "tool.result",
        }
    }
}

/// One tool call as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct ToolRequest<'a> {
    pub phase: ToolPhase,
    pub tool: &'a str,
    /// The tool input (a JSON object for every known tool).
    pub input: &'a serde_json::Value,
}

/// The text a glob on input member `value` is matched against: a string as it is, a list of strings
/// joined by spaces (a command given as argv), anything else as compact JSON.
pub fn member_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) if items.iter().all(serde_json::Value::is_string) => {
            items.iter().filter_map(serde_json::Value::as_str).collect::<Vec<_>>().join(" ")
        }
        other => other.to_string(),
    }
}

#[derive(Debug)]
struct Patterns {
    text: Vec<String>,
    alternatives: Vec<ArgumentPattern>,
}

impl Patterns {
    fn new(globs: &[Glob]) -> Patterns {
        Patterns {
            text: globs.iter().map(ToString::to_string).collect(),
            alternatives: globs
                .iter()
                .flat_map(|glob| glob.expand_home(b""))
                .map(|tokens| ArgumentPattern::new(&tokens))
                .collect(),
        }
    }

    fn matches(&self, text: &str) -> bool {
        self.alternatives.iter().any(|p| p.matches(text.as_bytes()))
    }

    fn shown(&self) -> String {
        self.text.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug)]
enum ToolRule {
    /// Not about tool calls (a kernel rule).
    Other,
    /// `action: "*"`.
    Every,
    Tool {
        call: bool,
        result: bool,
        tools: Option<Patterns>,
        input: Vec<(String, Patterns)>,
    },
}

/// Decides tool calls for one profile; rule ids are the profile's, as for the kernel.
#[derive(Debug)]
pub struct ToolEvaluator {
    default: Effect,
    rules: Vec<(String, Effect, ToolRule)>,
}

impl ToolEvaluator {
    /// The evaluator of `agent`'s profile (the base profile for `None` or an agent without one).
    pub fn new(policy: &Policy, agent: Option<&str>) -> ToolEvaluator {
        let profile = policy.profile(agent);
        let rules = profile
            .rules
            .iter()
            .map(|rule| {
                let kind = match (&rule.matcher, rule.info.action) {
                    (Matcher::Any, _) => ToolRule::Every,
                    (Matcher::Tool { tools, input }, action) => ToolRule::Tool {
                        call: action != Action::ToolResult,
                        result: action != Action::ToolCall,
                        tools: tools.as_deref().map(Patterns::new),
                        input: input
                            .iter()
                            .map(|(name, globs)| (name.clone(), Patterns::new(globs)))
                            .collect(),
                    },
                    _ => ToolRule::Other,
                };
                (rule.info.name.clone(), rule.info.effect, kind)
            })
            .collect();
        ToolEvaluator { default: profile.default, rules }
    }

    pub fn evaluate(&self, request: &ToolRequest<'_>) -> Decision {
        self.explain(request).decision
    }

    /// Each rule tried up to the one that decides, and why the others did not.
    pub fn explain(&self, request: &ToolRequest<'_>) -> Check {
        let mut steps = Vec::new();
        for (id, (name, effect, rule)) in self.rules.iter().enumerate() {
            let verdict = verdict(rule, request);
            let decides = matches!(verdict, StepVerdict::Decides(_));
            steps.push(Step { rule: id as u32, name: name.clone(), verdict });
            if decides {
                let decision = Decision { effect: *effect, rule: Some(id as u32), bound_hit: false };
                return Check { label: request.phase.action(), decision, steps };
            }
        }
        let decision = Decision { effect: self.default, rule: None, bound_hit: false };
        Check { label: request.phase.action(), decision, steps }
    }
}

fn verdict(rule: &ToolRule, request: &ToolRequest<'_>) -> StepVerdict {
    let (call, result, tools, input) = match rule {
        ToolRule::Other => return StepVerdict::NotApplicable("does not apply to tool calls".to_owned()),
        ToolRule::Every => return StepVerdict::Decides("matches every attempt".to_owned()),
        ToolRule::Tool { call, result, tools, input } => (*call, *result, tools, input),
    };
    let applies = match request.phase {
        ToolPhase::Call => call,
        ToolPhase::Result => result,
    };
    if !applies {
        return StepVerdict::NotApplicable(format!("does not apply to {}", request.phase.action()));
    }
    if let Some(tools) = tools {
        if !tools.matches(request.tool) {
            return StepVerdict::NoMatch(format!(
                "tool `{}` matches none of {}",
                request.tool,
                tools.shown()
            ));
        }
    }
    for (name, patterns) in input {
        let Some(value) = request.input.get(name) else {
            return StepVerdict::NoMatch(format!("the input has no member `{name}`"));
        };
        if !patterns.matches(&member_text(value)) {
            return StepVerdict::NoMatch(format!("input `{name}` matches none of {}", patterns.shown()));
        }
    }
    let tool = match tools {
        Some(tools) => format!("tool matches {}", tools.shown()),
        None => "every tool".to_owned(),
    };
    let members: Vec<String> = input.iter().map(|(name, _)| format!("`{name}`")).collect();
    if members.is_empty() {
        StepVerdict::Decides(tool)
    } else {
        StepVerdict::Decides(format!("{tool}, input {} match", members.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::load_str;
    use super::*;

    const POLICY: &str = r#"version: 1
default: deny
rules:
  - {name: ssh, action: file.read, effect: deny, paths: ["~/.ssh/**"]}
  - name: no-rm-rf
    action: tool.call
    effect: deny
    tools: [Bash]
    input: {command: ["rm -rf *", "* rm -rf *"]}
  - name: internal-fetch
    action: tool.call
    effect: deny
    tools: [WebFetch]
    input:
      url: "https://*.internal/**"
  - {name: mcp-github, action: tool.*, effect: audit, tools: ["mcp__github__*"]}
  - {name: results, action: tool.result, effect: allow}
  - {name: tools, action: tool.call, effect: allow}
"#;

    fn decide(
        eval: &ToolEvaluator,
        phase: ToolPhase,
        tool: &str,
        input: serde_json::Value,
    ) -> (Effect, String) {
        let decision = eval.evaluate(&ToolRequest { phase, tool, input: &input });
        let name = decision.rule.map_or("default".to_owned(), |id| eval.rules[id as usize].0.clone());
        (decision.effect, name)
    }

    #[test]
    fn first_matching_tool_rule_decides() {
        let policy = load_str("p.yaml", POLICY).unwrap_or_else(|e| panic!("{e}"));
        let eval = ToolEvaluator::new(&policy, None);
        let call = ToolPhase::Call;
        use serde_json::json;
        assert_eq!(
            decide(&eval, call, "Bash", json!({"command": "rm -rf /"})),
            (Effect::Deny, "no-rm-rf".into())
        );
        assert_eq!(
            decide(&eval, call, "Bash", json!({"command": "cd x && rm -rf /"})),
            (Effect::Deny, "no-rm-rf".into())
        );
        assert_eq!(decide(&eval, call, "Bash", json!({"command": "ls"})), (Effect::Allow, "tools".into()));
        assert_eq!(
            decide(&eval, call, "Bash", json!({"command": ["rm", "-rf", "/"]})),
            (Effect::Deny, "no-rm-rf".into()),
            "a command given as argv is matched joined"
        );
        assert_eq!(
            decide(&eval, call, "WebFetch", json!({"url": "https://db.internal/a/b"})),
            (Effect::Deny, "internal-fetch".into())
        );
        assert_eq!(decide(&eval, call, "WebFetch", json!({"url": "https://example.com/"})).1, "tools");
        assert_eq!(decide(&eval, call, "WebFetch", json!({})).1, "tools", "no url: the rule misses");
        assert_eq!(
            decide(&eval, call, "mcp__github__create_issue", json!({})),
            (Effect::Audit, "mcp-github".into())
        );
        let result = ToolPhase::Result;
        assert_eq!(
            decide(&eval, result, "Bash", json!({"command": "rm -rf /"})),
            (Effect::Allow, "results".into())
        );
        let explained =
            eval.explain(&ToolRequest { phase: call, tool: "Read", input: &json!({"file_path": "/x"}) });
        let verdicts: Vec<_> = explained.steps.iter().map(|s| &s.verdict).collect();
        assert!(matches!(verdicts[0], StepVerdict::NotApplicable(_)), "{verdicts:?}");
        assert!(
            matches!(verdicts[1], StepVerdict::NoMatch(why) if why.contains("tool `Read` matches none of `Bash`"))
        );
        assert!(matches!(verdicts[4], StepVerdict::NotApplicable(why) if why.contains("tool.call")));
        assert!(matches!(verdicts[5], StepVerdict::Decides(_)));
    }

    #[test]
    fn default_decides_what_no_rule_matches_and_star_rules_apply() {
        let policy = load_str("p.yaml", "version: 1\ndefault: deny\n").unwrap();
        let eval = ToolEvaluator::new(&policy, None);
        assert_eq!(
            decide(&eval, ToolPhase::Call, "Bash", serde_json::json!({})),
            (Effect::Deny, "default".into())
        );
        let policy =
            load_str("p.yaml", "version: 1\nrules:\n  - {name: all, action: \"*\", effect: audit}\n")
                .unwrap();
        let eval = ToolEvaluator::new(&policy, None);
        assert_eq!(
            decide(&eval, ToolPhase::Result, "X", serde_json::json!(null)),
            (Effect::Audit, "all".into())
        );
    }

    #[test]
    fn tool_rule_errors_are_placed() {
        let err = |text: &str| load_str("p.yaml", text).unwrap_err().to_string();
        let e = err("version: 1\nrules:\n  - {name: a, action: tool.call, effect: deny, paths: [/x]}\n");
        assert!(e.contains("p.yaml:3:") && e.contains("`paths` does not apply to action `tool.call`"), "{e}");
        let e = err("version: 1\nrules:\n  - {name: a, action: file.read, effect: deny, tools: [Bash]}\n");
        assert!(e.contains("`tools` does not apply to action `file.read`"), "{e}");
        let e =
            err("version: 1\nrules:\n  - {name: a, action: tool.call, effect: deny, input: {command: []}}\n");
        assert!(e.contains("p.yaml:3:") && e.contains("input member `command` has no glob"), "{e}");
        let e = err("version: 1\nrules:\n  - name: a\n    action: tool.call\n    effect: deny\n    input:\n      command: \"[z-a]\"\n");
        assert!(e.starts_with("p.yaml:7:") && e.contains("bad glob"), "{e}");
        let e = err("version: 1\nrules:\n  - {name: a, action: tool.call, effect: deny, tools: []}\n");
        assert!(e.contains("`tools` is empty"), "{e}");
        let e = err("version: 1\nrules:\n  - {name: a, action: tool.cal, effect: deny}\n");
        assert!(e.contains("unknown variant `tool.cal`"), "{e}");
    }
}

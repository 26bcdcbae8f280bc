//! The report's content, gathered entry by entry while the chain is verified (an `EntryVisitor`): counts,
//! capped listings and the control mapping, in memory bounded whatever the log's length. Complete
//! listings go line by line to optional spill writers (the evidence pack's JSONL files).
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::catalogue::{Catalogue, Framework};
use super::period::Period;
use crate::audit::parse::{Kind, Summary};
use crate::audit::signing::HeadFile;
use crate::audit::verify::{EntryVisitor, KeySource, Report};

/// Rows kept in memory per listing (denials, tagged access, PHI access); the rest are counted (and
/// spilled to the evidence pack).
pub const LIST_CAP: usize = 300;
/// Chain and exception events kept per list.
pub const EVENT_CAP: usize = 1000;
/// Distinct agents, users, sessions, … counted one by one; beyond it they are counted as `(other)`.
pub const KEY_CAP: usize = 10_000;

/// Everything a report says, in the order it says it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportData {
    pub format: &'static str,
    pub framework: Catalogue,
    pub generated_at: String,
    pub options: Options,
    pub scope: Scope,
    pub verification: Verification,
    pub activity: Activity,
    pub denials: Listing,
    pub tagged_access: Listing,
    pub phi_access: Option<Listing>,
    pub controls: Controls,
    pub exceptions: Events,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    pub agent: Option<String>,
    pub include_phi_access: bool,
    pub include_chain_verification: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scope {
    pub host: String,
    pub log_id: Option<String>,
    pub public_key: Option<String>,
    pub key_fingerprint: Option<String>,
    pub period: Option<Period>,
    pub files: Vec<String>,
    pub first: Option<Position>,
    pub last: Option<Position>,
    pub policies: Vec<PolicyInForce>,
}

/// An entry's place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Position {
    pub sequence: u64,
    pub hash: String,
    pub timestamp: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyInForce {
    pub hash: String,
    pub source: Option<String>,
    pub rules: Option<u64>,
    /// Loads and reloads of this policy text (sequence, timestamp), up to the period's end.
    pub loads: Vec<(u64, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Passed,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub verdict: Verdict,
    /// The first damage, as `audit verify` names it.
    pub failure: Option<String>,
    pub entries_checked: u64,
    pub files: usize,
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    pub checkpoints: u64,
    pub signed_through: Option<u64>,
    pub key: String,
    pub signed_head: Option<SignedHead>,
    pub lost_kernel_events: u64,
    /// Gaps, lockdowns, kernel sessions and sequence resets, retention deletions in the period.
    pub events: Events,
    /// Every checkpoint in the period (with `--include-chain-verification`).
    pub checkpoint_list: Option<Events>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedHead {
    pub size: u64,
    pub head: String,
    pub time: String,
}

/// Events of one kind of list, the first `EVENT_CAP` kept.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Events {
    pub total: u64,
    pub shown: Vec<Event>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub sequence: u64,
    pub timestamp: String,
    pub kind: String,
    pub detail: String,
}

impl Events {
    fn push(&mut self, event: impl FnOnce() -> Event) {
        self.total += 1;
        if self.shown.len() < EVENT_CAP {
            self.shown.push(event());
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub attempts: u64,
    pub by_action: Counts,
    pub by_effect: Counts,
    pub by_agent: Counts,
    pub by_user: Counts,
    pub by_session: Counts,
    /// Entries whose hash verified but whose members the report could not read.
    pub unreadable: u64,
}

/// Counts by name; past `KEY_CAP` names, new ones are added up under `(other)`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts(pub BTreeMap<String, u64>);

impl Counts {
    fn add(&mut self, key: &str) {
        if let Some(n) = self.0.get_mut(key) {
            *n += 1;
        } else if self.0.len() < KEY_CAP {
            self.0.insert(key.to_string(), 1);
        } else {
            *self.0.entry("(other)".into()).or_default() += 1;
        }
    }
}

/// Attempts of one kind: how many, the first `LIST_CAP` of them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Listing {
    pub total: u64,
    pub shown: Vec<Access>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Access {
    pub sequence: u64,
    pub timestamp: String,
    pub action: String,
    pub effect: String,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub agent: Option<String>,
    pub user: Option<String>,
    pub target: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Controls {
    /// Controls of the catalogue that rules' tags name, and tags naming controls it does not list.
    pub named: Vec<ControlEvidence>,
    /// Controls of the catalogue no rule's tag names in the period.
    pub unnamed: Vec<super::catalogue::Control>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlEvidence {
    pub id: String,
    /// The catalogue's title; `None` for a tag naming a control the catalogue does not list.
    pub title: Option<String>,
    pub rules: BTreeSet<String>,
    pub allowed: u64,
    pub denied: u64,
    pub audited: u64,
}

/// Where complete listings go, one verbatim log line each.
#[derive(Default)]
pub struct Spill<'w> {
    pub denials: Option<&'w mut dyn Write>,
    pub tagged_access: Option<&'w mut dyn Write>,
    pub phi_access: Option<&'w mut dyn Write>,
}

/// Which listing an entry goes to.
#[derive(Clone, Copy)]
enum Listed {
    Denial,
    Tagged,
    Phi,
}

/// What the command asked for.
#[derive(Clone, Debug)]
pub struct Request {
    pub framework: Framework,
    pub period: Period,
    pub agent: Option<String>,
    pub include_phi_access: bool,
    pub include_chain_verification: bool,
}

/// The members of an entry a report reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    effect: Option<Cow<'a, str>>,
    #[serde(borrow)]
    matched_rule: Option<Cow<'a, str>>,
    #[serde(borrow)]
    severity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tags: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    agent_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    policy_hash: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request_details: Option<Target<'a>>,
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Target<'a> {
    #[serde(borrow)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow)]
    address: Option<Cow<'a, str>>,
    port: Option<u64>,
    family: Option<u64>,
}

impl Target<'_> {
    fn text(&self) -> String {
        match (&self.path, &self.address, self.port, self.family) {
            (Some(path), ..) => path.to_string(),
            (None, Some(address), Some(port), _) if address.contains(':') => format!("[{address}]:{port}"),
            (None, Some(address), Some(port), _) => format!("{address}:{port}"),
            (None, None, _, Some(family)) => format!("socket family {family}"),
            _ => String::new(),
        }
    }
}

/// Gathers a report while `verify_visiting` reads the log.
pub struct Aggregator<'w> {
    request: Request,
    catalogue: Catalogue,
    spill: Spill<'w>,
    spill_error: Option<std::io::Error>,
    scope: Scope,
    activity: Activity,
    denials: Listing,
    tagged: Listing,
    phi: Listing,
    controls: BTreeMap<String, ControlEvidence>,
    chain_events: Events,
    checkpoints: Events,
    exceptions: Events,
    /// Every policy text loaded so far: hash → (source, rules, loads).
    loaded: BTreeMap<String, PolicyInForce>,
    /// The policy in force when the period began, then each one loaded in it.
    in_force: BTreeSet<String>,
    current_policy: Option<String>,
    started: bool,
}

impl<'w> Aggregator<'w> {
    pub fn new(request: Request, spill: Spill<'w>) -> Self {
        let catalogue = request.framework.catalogue();
        Aggregator {
            catalogue,
            spill,
            spill_error: None,
            scope: Scope { period: Some(request.period.clone()), ..Scope::default() },
            request,
            activity: Activity::default(),
            denials: Listing::default(),
            tagged: Listing::default(),
            phi: Listing::default(),
            controls: BTreeMap::new(),
            chain_events: Events::default(),
            checkpoints: Events::default(),
            exceptions: Events::default(),
            loaded: BTreeMap::new(),
            in_force: BTreeSet::new(),
            current_policy: None,
            started: false,
        }
    }

    fn spill(&mut self, which: Listed, line: &[u8]) {
        let out = match which {
            Listed::Denial => self.spill.denials.as_deref_mut(),
            Listed::Tagged => self.spill.tagged_access.as_deref_mut(),
            Listed::Phi => self.spill.phi_access.as_deref_mut(),
        };
        if let Some(out) = out {
            if let Err(e) = out.write_all(line).and_then(|()| out.write_all(b"\n")) {
                self.spill_error.get_or_insert(e);
            }
        }
    }

    fn attempt(&mut self, summary: &Summary, entry: &Entry<'_>, line: &[u8]) {
        if let Some(hash) = &entry.policy_hash {
            if !self.in_force.contains(hash.as_ref()) {
                self.in_force.insert(hash.to_string());
            }
        }
        let activity = &mut self.activity;
        activity.attempts += 1;
        activity.by_action.add(&entry.action);
        let effect = entry.effect.as_deref().unwrap_or("(not recorded)");
        activity.by_effect.add(effect);
        activity.by_agent.add(entry.agent_id.as_deref().unwrap_or("(none)"));
        activity.by_user.add(entry.user_id.as_deref().unwrap_or("(none)"));
        activity.by_session.add(entry.session_id.as_deref().unwrap_or("(none)"));
        let access = || Access {
            sequence: summary.sequence,
            timestamp: entry.timestamp.to_string(),
            action: entry.action.to_string(),
            effect: effect.to_string(),
            rule: entry.matched_rule.as_deref().map(str::to_string),
            severity: entry.severity.as_deref().map(str::to_string),
            agent: entry.agent_id.as_deref().map(str::to_string),
            user: entry.user_id.as_deref().map(str::to_string),
            target: entry.request_details.as_ref().map(Target::text).unwrap_or_default(),
        };
        if effect == "deny" {
            list(&mut self.denials, access);
            self.spill(Listed::Denial, line);
        }
        let framework = self.request.framework;
        let names_framework = entry.tags.iter().any(|t| framework.control_of(t).is_some());
        let severe = matches!(entry.severity.as_deref(), Some("high" | "critical"));
        if names_framework || severe {
            list(&mut self.tagged, access);
            self.spill(Listed::Tagged, line);
        }
        let phi = entry
            .tags
            .iter()
            .any(|t| t == "phi" || t == "hipaa" || t.starts_with("phi:") || t.starts_with("hipaa:"));
        if self.request.include_phi_access && phi {
            list(&mut self.phi, access);
            self.spill(Listed::Phi, line);
        }
        for control in entry.tags.iter().filter_map(|t| framework.control_of(t)) {
            let evidence = self
                .controls
                .entry(control.to_string())
                .or_insert_with(|| ControlEvidence { id: control.to_string(), ..ControlEvidence::default() });
            if let Some(rule) = entry.matched_rule.as_deref() {
                if evidence.rules.len() < EVENT_CAP && !evidence.rules.contains(rule) {
                    evidence.rules.insert(rule.to_string());
                }
            }
            match effect {
                "allow" => evidence.allowed += 1,
                "deny" => evidence.denied += 1,
                _ => evidence.audited += 1,
            }
        }
    }

    /// Lifecycle and writer entries: policy history always (to know what was in force when the period
    /// began), the rest when in the period.
    fn lifecycle(&mut self, summary: &Summary, entry: &Entry<'_>, in_period: bool) {
        let details = entry.details.as_ref();
        let text = |key: &str| {
            details.and_then(|d| d.get(key)).map_or(String::new(), |v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let event = |detail: String| Event {
            sequence: summary.sequence,
            timestamp: entry.timestamp.to_string(),
            kind: entry.action.to_string(),
            detail,
        };
        match entry.action.as_ref() {
            "audit.log_start" => {
                self.scope.log_id = Some(text("logId"));
                self.scope.public_key = Some(text("publicKey"));
            }
            "policy.load" => {
                let hash = text("policyHash");
                let policy = self
                    .loaded
                    .entry(hash.clone())
                    .or_insert_with(|| PolicyInForce { hash: hash.clone(), ..PolicyInForce::default() });
                policy.source = Some(text("source"));
                policy.rules = details.and_then(|d| d.get("rules")).and_then(|v| v.as_u64());
                if policy.loads.len() < EVENT_CAP {
                    policy.loads.push((summary.sequence, entry.timestamp.to_string()));
                }
                self.current_policy = Some(hash.clone());
                if in_period {
                    self.in_force.insert(hash);
                }
            }
            _ if !in_period => {}
            "policy.reload_rejected" => {
                self.exceptions.push(|| event(format!("{}: {}", text("source"), text("error"))))
            }
            "daemon.start" => self.exceptions.push(|| event(format!("version {}", text("version")))),
            "daemon.stop" => self.exceptions.push(|| event(text("reason"))),
            "audit.write_recovered" => self.exceptions.push(|| {
                event(format!(
                    "log not writable since {} ({}); {} recorded late, {} dropped",
                    text("failingSince"),
                    text("error"),
                    text("recordedLate"),
                    text("dropped")
                ))
            }),
            "audit.crash_recovered" => self
                .exceptions
                .push(|| event(format!("{} bytes of an unfinished write cut off", text("discardedBytes")))),
            "audit.head_missing" => self.exceptions.push(|| event("the head file was missing".into())),
            "audit.gap" => self.chain_events.push(|| {
                event(format!(
                    "kernel events {}..={} never reached the log ({} denied)",
                    text("fromKernelSeq"),
                    text("toKernelSeq"),
                    text("count")
                ))
            }),
            "audit.kernel_seq_reset" => self.chain_events.push(|| {
                event(format!(
                    "expected kernel sequence {}, got {}",
                    text("expectedKernelSeq"),
                    text("gotKernelSeq")
                ))
            }),
            "kernel.session_start" => {
                self.chain_events.push(|| event("kernel programs loaded afresh".into()))
            }
            "kernel.lockdown_on" => self.chain_events.push(|| event(text("reason"))),
            "kernel.lockdown_off" => self.chain_events.push(|| event("lockdown lifted".into())),
            "audit.retention_delete" => self.chain_events.push(|| {
                event(format!(
                    "segment {} (entries {}..={}) deleted under retention {}",
                    text("segment"),
                    text("firstSequence"),
                    text("lastSequence"),
                    text("retention")
                ))
            }),
            "audit.tamper_detected" => self.chain_events.push(|| {
                event(format!(
                    "{}: signed {} entries, found {}",
                    text("kind"),
                    text("signedSize"),
                    text("foundSize")
                ))
            }),
            "session.start" | "session.end" => {
                if let Some(session) = &entry.session_id {
                    self.activity.by_session.0.entry(session.to_string()).or_insert(0);
                }
            }
            _ => {}
        }
    }

    /// The report, once verification has finished.
    pub fn finish(
        mut self,
        report: &Report,
        head: Option<&HeadFile>,
        host: String,
        files: Vec<String>,
    ) -> std::io::Result<ReportData> {
        if let Some(e) = self.spill_error.take() {
            return Err(e);
        }
        for hash in &self.in_force {
            let policy = self
                .loaded
                .get(hash)
                .cloned()
                .unwrap_or_else(|| PolicyInForce { hash: hash.clone(), ..PolicyInForce::default() });
            self.scope.policies.push(policy);
        }
        self.scope.host = host;
        self.scope.files = files;
        self.scope.key_fingerprint = self
            .scope
            .public_key
            .as_deref()
            .and_then(crate::audit::signing::PublicKey::parse)
            .map(|k| k.key_id().to_string());
        let failure = report.failure.as_ref().map(|f| {
            let at = f.sequence.map_or("the log".into(), |s| format!("entry {s}"));
            let place = f.location.as_ref().map_or(String::new(), |l| {
                let name = l
                    .file
                    .file_name()
                    .map_or_else(|| l.file.display().to_string(), |n| n.to_string_lossy().into_owned());
                format!(" ({name} line {})", l.line)
            });
            format!("FAILED at {at}{place}: {}", f.damage)
        });
        let verification = Verification {
            verdict: if report.ok() { Verdict::Passed } else { Verdict::Failed },
            failure,
            entries_checked: report.entries,
            files: report.files,
            first_sequence: report.first_sequence,
            last_sequence: report.last_sequence,
            checkpoints: report.checkpoints,
            signed_through: report.signed_through,
            key: match report.key_source {
                Some(KeySource::Trusted) => "trusted key".into(),
                Some(KeySource::Embedded) => "the key named in the log itself (no trusted key given)".into(),
                None => "no key".into(),
            },
            signed_head: head.map(|h| SignedHead {
                size: h.size,
                head: h.head.clone(),
                time: h.time.clone(),
            }),
            lost_kernel_events: report.lost_kernel_events,
            events: self.chain_events,
            checkpoint_list: self.request.include_chain_verification.then_some(self.checkpoints),
        };
        let mut named = Vec::new();
        let mut unnamed = Vec::new();
        for control in &self.catalogue.controls {
            match self.controls.remove(&control.id) {
                Some(mut evidence) => {
                    evidence.title = Some(control.title.clone());
                    named.push(evidence);
                }
                None => unnamed.push(control.clone()),
            }
        }
        // Tags naming controls the catalogue does not list are shown too, untitled.
        named.extend(self.controls.into_values());
        Ok(ReportData {
            format: "safeclaw-report/1",
            framework: self.catalogue,
            generated_at: crate::audit::clock::TimestampFormatter::default()
                .format(std::time::SystemTime::now()),
            options: Options {
                agent: self.request.agent.clone(),
                include_phi_access: self.request.include_phi_access,
                include_chain_verification: self.request.include_chain_verification,
            },
            scope: self.scope,
            verification,
            activity: self.activity,
            denials: self.denials,
            tagged_access: self.tagged,
            phi_access: self.request.include_phi_access.then_some(self.phi),
            controls: Controls { named, unnamed },
            exceptions: self.exceptions,
        })
    }
}

fn list(listing: &mut Listing, access: impl FnOnce() -> Access) {
    listing.total += 1;
    if listing.shown.len() < LIST_CAP {
        listing.shown.push(access());
    }
}

/// The `timestamp` member of a sealed line, found without parsing it (members are sorted, so it is near
/// the end; a quote inside a string value is escaped, so the pattern cannot occur inside one).
fn timestamp_of(line: &[u8]) -> Option<&str> {
    let at = memchr::memmem::rfind(line, b"\"timestamp\":\"")? + 13;
    std::str::from_utf8(line.get(at..at + 24)?).ok()
}

impl EntryVisitor for Aggregator<'_> {
    fn visit(&mut self, summary: &Summary, line: &[u8]) {
        let Some(timestamp) = timestamp_of(line) else {
            self.activity.unreadable += 1;
            return;
        };
        let in_period = self.request.period.contains(timestamp);
        let attempt = matches!(summary.kind, Kind::Plain { kernel_seq: Some(_) });
        if attempt && !in_period {
            return;
        }
        if in_period {
            let position = Position {
                sequence: summary.sequence,
                hash: summary.hash.to_string(),
                timestamp: timestamp.to_string(),
            };
            if !self.started {
                self.started = true;
                self.scope.first = Some(position.clone());
                if let Some(current) = self.current_policy.clone() {
                    self.in_force.insert(current);
                }
            }
            self.scope.last = Some(position);
            if let Kind::Checkpoint { trigger, .. } = &summary.kind {
                let trigger = trigger.clone();
                self.checkpoints.push(|| Event {
                    sequence: summary.sequence,
                    timestamp: timestamp.to_string(),
                    kind: "audit.checkpoint".into(),
                    detail: format!("signed, trigger {trigger}"),
                });
            }
        }
        let entry: Entry<'_> = match serde_json::from_slice(line) {
            Ok(entry) => entry,
            Err(_) => {
                self.activity.unreadable += 1;
                return;
            }
        };
        let by_agent = self.request.agent.as_deref().is_none_or(|a| entry.agent_id.as_deref() == Some(a));
        if attempt {
            if by_agent {
                self.attempt(summary, &entry, line);
            }
        } else if by_agent || entry.agent_id.is_none() {
            self.lifecycle(summary, &entry, in_period);
        }
    }
}

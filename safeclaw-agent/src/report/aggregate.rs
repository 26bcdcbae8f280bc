//! The report's content, gathered entry by entry while the chain is verified (an `EntryVisitor`): counts,
//! capped listings and the control mapping, in memory bounded whatever the log's length. Complete
//! listings go line by line to optional spill writers (the evidence pack's JSONL files).
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::catalogue::{Catalogue, Framework};
use super::period::Period;
use crate::audit::chain::Digest;
use crate::audit::parse::{Kind, Summary};
use crate::audit::scan::Members;
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

/// The top-level members a report reads, in the order `Entry::read` takes them from `Members`.
const MEMBERS: &[&str] = &[
    "action",
    "timestamp",
    "effect",
    "matchedRule",
    "severity",
    "tags",
    "agentId",
    "userId",
    "sessionId",
    "policyHash",
    "requestDetails",
    "details",
];

/// The members of an entry a report reads, borrowed from its line where no escape needs decoding.
struct Entry<'a> {
    action: Cow<'a, str>,
    timestamp: Cow<'a, str>,
    effect: Option<Cow<'a, str>>,
    matched_rule: Option<Cow<'a, str>>,
    severity: Option<Cow<'a, str>>,
    tags: Vec<Cow<'a, str>>,
    agent_id: Option<Cow<'a, str>>,
    user_id: Option<Cow<'a, str>>,
    session_id: Option<Cow<'a, str>>,
    policy_hash: Option<Cow<'a, str>>,
    /// Raw; parsed only for the rows a listing shows.
    request_details: Option<&'a [u8]>,
    /// Raw; parsed only for lifecycle entries.
    details: Option<&'a [u8]>,
}

/// A JSON array of strings, borrowed where possible.
#[derive(Deserialize)]
struct Tags<'a>(#[serde(borrow)] Vec<Cow<'a, str>>);

impl<'a> Entry<'a> {
    /// The members the parsing workers found; `None` when one has the wrong type (as a strict parse of
    /// the entry would refuse it).
    fn read(members: &Members<'a>) -> Option<Self> {
        if !members.readable() {
            return None;
        }
        let text = |index: usize| optional_text(members.raw(index));
        Some(Entry {
            action: text(0)??,
            timestamp: text(1)??,
            effect: text(2)?,
            matched_rule: text(3)?,
            severity: text(4)?,
            tags: match members.raw(5) {
                None => Vec::new(),
                Some(raw) => serde_json::from_slice::<Tags<'a>>(raw).ok()?.0,
            },
            agent_id: text(6)?,
            user_id: text(7)?,
            session_id: text(8)?,
            policy_hash: text(9)?,
            request_details: members.raw(10).filter(|raw| *raw != b"null"),
            details: members.raw(11).filter(|raw| *raw != b"null"),
        })
    }

    /// What the entry was about (path, address or socket family), for a listing row.
    fn target(&self) -> String {
        let target = self.request_details.and_then(|raw| serde_json::from_slice::<Target<'_>>(raw).ok());
        target.as_ref().map(Target::text).unwrap_or_default()
    }

    /// The `details` object, for lifecycle entries; `Err` when it is not one.
    fn details(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ()> {
        self.details.map(|raw| serde_json::from_slice(raw).map_err(|_| ())).transpose()
    }
}

/// A member that is absent, `null` or a string: `None` (outer) when it is something else.
fn optional_text(raw: Option<&[u8]>) -> Option<Option<Cow<'_, str>>> {
    let Some(raw) = raw else { return Some(None) };
    if raw == b"null" {
        return Some(None);
    }
    let inner = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\""))?;
    if !inner.contains(&b'\\') {
        // Control characters must be escaped in JSON; an unescaped one makes the string invalid.
        if inner.iter().any(|b| *b < 0x20) {
            return None;
        }
        return std::str::from_utf8(inner).ok().map(|text| Some(Cow::Borrowed(text)));
    }
    serde_json::from_slice::<String>(raw).ok().map(|text| Some(Cow::Owned(text)))
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
    /// The last entry of the period so far (its `Position` is made once, at the end).
    last: Option<(u64, Digest)>,
    last_timestamp: String,
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
            last: None,
            last_timestamp: String::new(),
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
            target: entry.target(),
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
            if !self.controls.contains_key(control) {
                let evidence = ControlEvidence { id: control.to_string(), ..ControlEvidence::default() };
                self.controls.insert(control.to_string(), evidence);
            }
            let Some(evidence) = self.controls.get_mut(control) else { continue };
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
    fn lifecycle(
        &mut self,
        summary: &Summary,
        entry: &Entry<'_>,
        details: Option<&serde_json::Map<String, serde_json::Value>>,
        in_period: bool,
    ) {
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
            "daemon.agents_paused" => self.chain_events.push(|| {
                event(format!(
                    "agents paused: the event ring had {} of {} bytes in use",
                    text("ringUsedBytes"),
                    text("ringBytes")
                ))
            }),
            "daemon.agents_resumed" => self.chain_events.push(|| {
                event(match details.and_then(|d| d.get("pausedMs")) {
                    Some(_) => format!("agents resumed after {} ms", text("pausedMs")),
                    None => "agents resumed from a pause left by a daemon that died".into(),
                })
            }),
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
        self.scope.last = self.last.map(|(sequence, hash)| Position {
            sequence,
            hash: hash.to_string(),
            timestamp: std::mem::take(&mut self.last_timestamp),
        });
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

impl EntryVisitor for Aggregator<'_> {
    fn members(&self) -> &'static [&'static str] {
        MEMBERS
    }

    fn visit(&mut self, summary: &Summary, line: &[u8], members: Members<'_>) {
        // The timestamp first: attempts outside the period are skipped without reading more.
        let Some(Some(timestamp)) = members.readable().then(|| optional_text(members.raw(1))).flatten()
        else {
            self.activity.unreadable += 1;
            return;
        };
        let in_period = self.request.period.contains(&timestamp);
        let attempt = matches!(summary.kind, Kind::Plain { kernel_seq: Some(_) });
        if attempt && !in_period {
            return;
        }
        if in_period {
            if !self.started {
                self.started = true;
                self.scope.first = Some(Position {
                    sequence: summary.sequence,
                    hash: summary.hash.to_string(),
                    timestamp: timestamp.to_string(),
                });
                if let Some(current) = self.current_policy.clone() {
                    self.in_force.insert(current);
                }
            }
            self.last = Some((summary.sequence, summary.hash));
            self.last_timestamp.clear();
            self.last_timestamp.push_str(&timestamp);
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
        let Some(entry) = Entry::read(&members) else {
            self.activity.unreadable += 1;
            return;
        };
        let by_agent = self.request.agent.as_deref().is_none_or(|a| entry.agent_id.as_deref() == Some(a));
        if attempt {
            if by_agent {
                self.attempt(summary, &entry, line);
            }
        } else if by_agent || entry.agent_id.is_none() {
            let Ok(details) = entry.details() else {
                self.activity.unreadable += 1;
                return;
            };
            self.lifecycle(summary, &entry, details.as_ref(), in_period);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::audit::entry::{Identity, Lifecycle};
    use crate::audit::scan::common_and_members;
    use crate::audit::synthetic::record;
    use crate::audit::verify::{log_files, verify_visiting, VerifyOptions};
    use crate::audit::{AuditWriter, WriterOptions};
    use crate::policy::Severity;

    /// A log with what strains a reader: escapes, control characters and non-ASCII in names and tags,
    /// attempts without identity, rule or severity, critical rules, lifecycle entries of every kind the
    /// report lists, rotated segments.
    fn write_log(dir: &Path) -> PathBuf {
        let active = dir.join("log/audit.jsonl");
        let mut opts = WriterOptions::new(&active).with_state_dir(&dir.join("state"));
        opts.max_segment_bytes = Some(64 << 10);
        // Plain segments, so that the reference below reads them as text.
        opts.compression = crate::audit::segment::Compression::None;
        let mut writer = AuditWriter::open(opts).unwrap();
        let policy = Lifecycle::PolicyLoad {
            // The hash the synthetic attempts carry.
            policy_hash: Digest::of(b"synthetic policy"),
            source: "/etc/safeclaw/\"odd\" pölicy.yaml".into(),
            rules: 3,
        };
        writer.log(&policy);
        let odd = Identity {
            agent_id: Some("agent \"quoted\" \\ é\t\u{1}".into()),
            session_id: Some("sess \u{7f} ∑".into()),
            user_id: Some("user\nname".into()),
        };
        writer.log(&Lifecycle::SessionStart(odd.clone()));
        for k in 0..1500 {
            let mut attempt = record(k);
            match k % 6 {
                1 => attempt.identity = odd.clone(),
                2 => attempt.identity = Identity::default(),
                3 => {
                    attempt.matched_rule = None;
                    attempt.rule_meta.severity = None;
                    attempt.rule_meta.tags.push("soc2:CC7.2 \"escaped\"\\".into());
                }
                4 => {
                    attempt.rule_meta.severity = Some(Severity::Critical);
                    attempt.rule_meta.tags = vec!["hipaa:164.312(b)".into(), "phi:records".into()];
                }
                5 => attempt.rule_meta.tags.clear(),
                _ => {}
            }
            writer.append(&attempt);
            if k == 700 {
                writer.log(&Lifecycle::PolicyReloadRejected {
                    source: "p.yaml".into(),
                    error: "line 3: \"bad\"".into(),
                });
                writer.log(&Lifecycle::LockdownOn { reason: "ring full".into() });
                writer.log(&policy);
                writer.log(&Lifecycle::AgentsPaused { ring_used_bytes: 5 << 20, ring_bytes: 8 << 20 });
                writer.log(&Lifecycle::AgentsResumed { paused_ms: Some(40) });
                writer.log(&Lifecycle::AgentsResumed { paused_ms: None });
            }
            if k % 100 == 99 {
                writer.commit().unwrap();
            }
        }
        writer.log(&Lifecycle::SessionEnd(odd));
        writer.log(&Lifecycle::DaemonStop { reason: "test".into() });
        writer.close().unwrap();
        active
    }

    fn request(framework: Framework) -> Request {
        Request {
            framework,
            period: Period::parse("2000-01-01:2999-12-31").unwrap(),
            agent: None,
            include_phi_access: true,
            include_chain_verification: true,
        }
    }

    fn count(map: &mut BTreeMap<String, u64>, key: Option<&str>) {
        *map.entry(key.unwrap_or("(none)").to_string()).or_default() += 1;
    }

    /// What a strict parse of every line says a report counts, computed apart from the aggregator.
    fn reference(files: &[PathBuf], framework: Framework) -> Value {
        let [mut actions, mut effects, mut agents, mut users, mut sessions]: [BTreeMap<String, u64>; 5] =
            Default::default();
        let (mut attempts, mut denials, mut tagged, mut phi) = (0u64, 0u64, 0u64, 0u64);
        let mut controls: BTreeMap<String, [u64; 3]> = BTreeMap::new();
        let mut first_denial = None;
        for file in files {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let entry: Value = serde_json::from_str(line).unwrap();
                let text = |name: &str| entry[name].as_str();
                if !entry["kernelSeq"].is_u64() {
                    if let (Some("session.start" | "session.end"), Some(session)) =
                        (text("action"), text("sessionId"))
                    {
                        sessions.entry(session.to_string()).or_insert(0);
                    }
                    continue;
                }
                attempts += 1;
                count(&mut actions, text("action"));
                count(&mut effects, Some(text("effect").unwrap_or("(not recorded)")));
                count(&mut agents, text("agentId"));
                count(&mut users, text("userId"));
                count(&mut sessions, text("sessionId"));
                let tags: Vec<&str> = entry["tags"]
                    .as_array()
                    .map_or(Vec::new(), |t| t.iter().filter_map(Value::as_str).collect());
                if text("effect") == Some("deny") {
                    denials += 1;
                    first_denial.get_or_insert_with(|| entry["requestDetails"]["path"].clone());
                }
                let severe = matches!(text("severity"), Some("high" | "critical"));
                if severe || tags.iter().any(|t| framework.control_of(t).is_some()) {
                    tagged += 1;
                }
                if tags
                    .iter()
                    .any(|t| ["phi", "hipaa"].iter().any(|p| *t == *p || t.starts_with(&format!("{p}:"))))
                {
                    phi += 1;
                }
                for control in tags.iter().filter_map(|t| framework.control_of(t)) {
                    let counts = controls.entry(control.to_string()).or_default();
                    counts[match text("effect") {
                        Some("allow") => 0,
                        Some("deny") => 1,
                        _ => 2,
                    }] += 1;
                }
            }
        }
        let activity = serde_json::json!({
            "attempts": attempts, "byAction": actions, "byEffect": effects, "byAgent": agents,
            "byUser": users, "bySession": sessions, "unreadable": 0,
        });
        serde_json::json!({
            "activity": activity, "denials": denials, "tagged": tagged, "phi": phi,
            "controls": controls, "firstDenial": first_denial,
        })
    }

    /// The counts the workers' member scan gives are those of a strict parse of every entry, escapes
    /// and all, so reports read the same as when the checking thread parsed each entry itself.
    #[test]
    fn counts_agree_with_a_strict_parse_of_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let active = write_log(dir.path());
        let files = log_files(&active).unwrap();
        assert!(files.len() > 2, "the log should have rotated: {files:?}");
        for framework in [Framework::Soc2, Framework::Hipaa] {
            let mut aggregator = Aggregator::new(request(framework), Spill::default());
            let report =
                verify_visiting(&files, &VerifyOptions::default(), Arc::new(|_| {}), &mut aggregator)
                    .unwrap();
            assert!(report.ok(), "{:?}", report.failure);
            let data = aggregator.finish(&report, None, "host".into(), Vec::new()).unwrap();
            let expected = reference(&files, framework);
            let json = serde_json::to_value(&data).unwrap();
            assert_eq!(json["activity"], expected["activity"]);
            assert_eq!(json["denials"]["total"], expected["denials"]);
            assert_eq!(json["taggedAccess"]["total"], expected["tagged"]);
            assert_eq!(json["phiAccess"]["total"], expected["phi"]);
            assert_eq!(json["denials"]["shown"][0]["target"], expected["firstDenial"]);
            let controls: BTreeMap<String, [u64; 3]> = data
                .controls
                .named
                .iter()
                .map(|c| (c.id.clone(), [c.allowed, c.denied, c.audited]))
                .collect();
            assert_eq!(serde_json::to_value(controls).unwrap(), expected["controls"]);
            // Lifecycle entries: the policy and its two loads, the rejected reload with its escaped
            // error, the lockdown and the stop.
            assert_eq!(data.scope.policies.len(), 1);
            assert_eq!(data.scope.policies[0].loads.len(), 2);
            assert_eq!(data.scope.policies[0].source.as_deref(), Some("/etc/safeclaw/\"odd\" pölicy.yaml"));
            let exceptions: Vec<&str> = data.exceptions.shown.iter().map(|e| e.detail.as_str()).collect();
            assert_eq!(exceptions, ["p.yaml: line 3: \"bad\"", "test"]);
            let chain_events: Vec<&str> =
                data.verification.events.shown.iter().map(|e| e.detail.as_str()).collect();
            assert!(chain_events.contains(&"ring full"), "{chain_events:?}");
            assert!(
                chain_events.contains(&"agents paused: the event ring had 5242880 of 8388608 bytes in use")
                    && chain_events.contains(&"agents resumed after 40 ms")
                    && chain_events.contains(&"agents resumed from a pause left by a daemon that died"),
                "{chain_events:?}"
            );
            assert_eq!(data.scope.last.as_ref().map(|p| p.sequence), report.last_sequence);
            assert_eq!(data.scope.first.as_ref().map(|p| p.sequence), report.first_sequence);
        }
    }

    #[test]
    fn a_member_of_the_wrong_type_makes_the_entry_unreadable_not_miscounted() {
        let line = br#"{"action":"file.read","agentId":7,"prevHash":"p","sequence":1,"timestamp":"t"}"#;
        let mut spans = vec![None; MEMBERS.len()];
        let read = |line, spans: &mut Vec<_>| common_and_members(line, MEMBERS, spans).unwrap().1;
        assert!(read(line, &mut spans));
        assert!(Entry::read(&Members::new(line, Some(&spans))).is_none());
        let line = br#"{"action":"file.read","agentId":"a\"b","prevHash":"p","sequence":1,"tags":["x\u0041"],"timestamp":"t"}"#;
        assert!(read(line, &mut spans));
        let entry = Entry::read(&Members::new(line, Some(&spans))).unwrap();
        assert_eq!(entry.agent_id.as_deref(), Some("a\"b"));
        assert_eq!(entry.tags, ["xA"]);
        assert_eq!(optional_text(Some(b"\"a\x01\"")), None, "an unescaped control character");
    }
}

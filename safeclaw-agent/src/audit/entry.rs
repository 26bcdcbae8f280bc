//! What an audit entry says: the records the daemon hands in (`ActionRecord`, `Lifecycle`), the optional
//! fields a config selects, and their canonical JSON bodies.
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::SystemTime;

use safeclaw_common::flag;

use super::canonical::{write_duration_ms, Object};
use super::chain::Digest;
use super::redact::{Hits, Redactor};
use crate::policy::compiled::Effect;
use crate::policy::Severity;

/// One attempt the kernel decided on, as the daemon decodes it from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRecord {
    /// Wall-clock time of the event.
    pub time: SystemTime,
    pub effect: Effect,
    /// Name of the rule that decided; `None` when the policy default did.
    pub matched_rule: Option<String>,
    pub reason: Option<String>,
    /// The deciding rule's `severity` and `tags`, as the policy in force said: reports read them from the
    /// entry rather than guessing which policy text applied.
    pub rule_meta: RuleMeta,
    pub identity: Identity,
    /// What was attempted; it also names the action (`file.read`, `process.exec`, …).
    pub details: RequestDetails,
    pub process: ProcessInfo,
    /// Time the kernel spent deciding.
    pub evaluation_ns: u64,
    /// The kernel's sequence number for this event.
    pub kernel_seq: u64,
    /// SHA-256 of the policy that decided.
    pub policy_hash: Digest,
    pub flags: KernelFlags,
    /// The agent tool call this attempt belongs to, when the daemon could link it (see `tools::correlate`).
    pub tool_use_id: Option<String>,
    /// Set when this entry stands for the repeats of the attempt recorded at `kernel_seq`, which the
    /// kernel counted instead of recording one by one; the entry then has no `kernelSeq` of its own.
    pub repeats: Option<Repeats>,
}

/// Identical allowed attempts after a recorded one (docs/audit-format.md, "Repeated attempts").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repeats {
    /// Attempts after the recorded one.
    pub count: u64,
    /// Time of the recorded attempt (canonical timestamp text).
    pub first_time: String,
    /// Time of the latest repeat (canonical timestamp text).
    pub last_time: String,
}

/// A rule's compliance labels, copied into each entry it decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleMeta {
    pub severity: Option<Severity>,
    pub tags: Vec<String>,
}

impl RuleMeta {
    pub fn of(rule: &crate::policy::RuleInfo) -> Self {
        RuleMeta { severity: rule.severity, tags: rule.tags.clone() }
    }
}

/// Who the attempt is attributed to (filled in by the launcher, when there is one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
}

/// The task that attempted the action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Parent process id, when known.
    pub ppid: Option<u32>,
    pub uid: u32,
    /// `task_struct.comm`, up to its first NUL.
    pub comm: Vec<u8>,
    /// cgroup id (inode number) of the task.
    pub cgroup: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestDetails {
    /// A file open. A read-write open is recorded as `file.write` with mode `rw`.
    File {
        path: Vec<u8>,
        mode: FileMode,
    },
    Exec {
        path: Vec<u8>,
        argv: Option<Vec<String>>,
    },
    Connect(ConnectTarget),
    /// Serving on a local address (`network.listen`): a TCP listen or UDP bind; `Inet`, or `Other`
    /// for an address the kernel could not read.
    Listen(ConnectTarget),
    /// A self-protection action (always denied): `action` is its `guard.*` name, `target_pid` the
    /// signalled or traced process, `detail` the signal, ptrace mode, bpf command, filesystem magic,
    /// kernel read id or mount operation.
    Guard {
        action: &'static str,
        target_pid: Option<u32>,
        detail: u32,
    },
    /// An action on a file other than an open or exec: a change without an open for write
    /// (`action` = `file.delete`, `file.symlink`, `file.mkdir`, `file.truncate`, `file.chmod`,
    /// `file.chown`, `file.setxattr`, `file.removexattr`), or its code mapped executable
    /// (`process.map_exec`); with the new mode of a chmod, the new ids of a chown (`None`: unchanged,
    /// or not that action) and the attribute's name (never its value) of an xattr change.
    FileAction {
        action: &'static str,
        path: Vec<u8>,
        new_mode: Option<u32>,
        new_uid: Option<u32>,
        new_gid: Option<u32>,
        xattr_name: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    Read,
    Write,
    ReadWrite,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectTarget {
    Inet {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
    },
    /// Abstract socket names start with `@`.
    Unix {
        path: Vec<u8>,
    },
    /// A socket family the policy does not decide on (`AF_*` value).
    Other {
        family: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    /// Neither TCP nor UDP (raw, SCTP, …).
    Other,
}

impl Protocol {
    /// From the IP protocol number the kernel reports.
    pub fn from_number(number: u16) -> Self {
        match number {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => Protocol::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Other => "other",
        }
    }
}

impl RequestDetails {
    /// The `action` field this attempt is recorded under.
    pub fn action(&self) -> &'static str {
        match self {
            RequestDetails::File { mode: FileMode::Read, .. } => "file.read",
            RequestDetails::File { .. } => "file.write",
            RequestDetails::Exec { .. } => "process.exec",
            RequestDetails::Connect(_) => "network.connect",
            RequestDetails::Listen(_) => "network.listen",
            RequestDetails::Guard { action, .. } | RequestDetails::FileAction { action, .. } => action,
        }
    }
}

/// The kernel's `EventHeader::flags` (`safeclaw_common::flag`), written as names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFlags(pub u16);

const FLAG_NAMES: [(u16, &str); 16] = [
    (flag::ARGV_INCOMPLETE, "argv_incomplete"),
    (flag::EXEC_LOADER, "exec_loader"),
    (flag::HARD_LINK, "hard_link"),
    (flag::LOCKDOWN, "lockdown"),
    (flag::NO_POLICY, "no_policy"),
    (flag::PATH_UNREACHABLE, "path_unreachable"),
    (flag::PATH_UNRESOLVED, "path_unresolved"),
    (flag::PREVIOUS_LSM_DENIED, "previous_lsm_denied"),
    (flag::PROTECTED_XATTR, "protected_xattr"),
    (flag::RAW_SOCKET, "raw_socket"),
    (flag::RENAME, "rename"),
    (flag::SENDTO, "sendto"),
    (flag::SIGIO, "sigio"),
    (flag::TABLE_BOUND, "table_bound"),
    (flag::UNDECIDED_FAMILY, "undecided_family"),
    (flag::UNSPEC_AS_INET, "unspec_as_inet"),
];

impl KernelFlags {
    /// Names of the set flags, sorted (every bit of the field has one).
    pub fn names(self) -> Vec<String> {
        FLAG_NAMES.iter().filter(|(bit, _)| self.0 & bit != 0).map(|(_, n)| n.to_string()).collect()
    }
}

/// Events of the daemon and of the agents' sessions that the trail records besides attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    DaemonStart {
        version: String,
    },
    DaemonStop {
        reason: String,
    },
    SessionStart(Identity),
    SessionEnd(Identity),
    PolicyLoad {
        policy_hash: Digest,
        source: String,
        rules: u32,
    },
    /// A reload that failed validation; the previous policy stays in force.
    PolicyReloadRejected {
        source: String,
        error: String,
    },
    /// The daemon loaded fresh kernel programs: kernel sequence numbers start again from 0.
    KernelSessionStart,
    LockdownOn {
        reason: String,
    },
    LockdownOff,
    /// The control socket refused a peer outright (not root, or inside the agent cgroup).
    RequestRefused {
        /// The request's kind (`list`, `stop`, …), `malformed`, or `none`.
        request: String,
        uid: u32,
        /// 0 when the peer's credentials carry no pid.
        pid: u32,
        command: String,
        reason: String,
    },
    /// A stop or reload signal the daemon did not obey (sent from inside an agent session, or not
    /// sent by a process at all, as SIGIO through F_SETOWN/F_SETSIG is).
    SignalRefused {
        signal: u32,
        /// 0 when the kernel names no sender.
        sender_pid: u32,
        reason: String,
    },
    /// A deliberate stop froze and killed every process of every session before detaching anything.
    SessionsEnded {
        processes: u64,
        reason: String,
    },
    /// A stop that was not carried out because agent processes could not be ended: still enforcing.
    StopRefused {
        by: String,
        reason: String,
    },
    /// Half the event ring was in use: the agent cgroup is frozen until the daemon has recorded most
    /// of it, so that no attempt is denied for want of room.
    AgentsPaused {
        ring_used_bytes: u64,
        ring_bytes: u64,
    },
    /// The agents run again after a pause of `paused_ms`; `None`: a pause left by a daemon that died,
    /// lifted at start (or once the ring drained, if that thaw failed), whose length is not known.
    AgentsResumed {
        paused_ms: Option<u64>,
    },
    /// A remote destination started failing: evidence is not leaving the host.
    DestinationFailing {
        destination: String,
        error: String,
        since: String,
    },
    /// A destination that was failing delivers again (from its cursor: nothing was skipped).
    DestinationRecovered {
        destination: String,
        failing_since: String,
    },
}

/// Entries the writer itself adds to keep the trail complete and verifiable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriterEvent {
    LogStart {
        log_id: String,
        public_key: String,
    },
    SegmentStart {
        log_id: String,
        last_kernel_seq: Option<u64>,
    },
    Checkpoint {
        log_id: String,
        key_id: Digest,
        trigger: &'static str,
        signature: String,
    },
    /// Kernel events `from..=to` never reached us.
    Gap {
        from: u64,
        to: u64,
    },
    /// Kernel sequence numbers went backwards without a kernel session start.
    KernelSeqReset {
        expected: u64,
        got: u64,
    },
    RetentionDelete {
        segment: String,
        /// Lowest sequence whose deletion the log accounts for (carried from round to round).
        covered_from: u64,
        first: u64,
        last: u64,
        last_hash: Digest,
        last_time: String,
        retention: String,
    },
    /// The log could not be written from `since` until this entry.
    WriteRecovered {
        since: String,
        error: String,
        mode: &'static str,
        recorded: u64,
        dropped: u64,
        denied: u64,
        allowed: u64,
    },
    /// At open: an incomplete last line (never committed) was cut off.
    CrashRecovered {
        discarded_bytes: u64,
    },
    /// A new signing key: the next checkpoint is signed by the previous key, later ones by this one.
    KeyRotation {
        log_id: String,
        key_id: Digest,
        public_key: String,
    },
    /// The wall clock is earlier than the previous checkpoint's time (`previous`).
    ClockStep {
        previous: String,
    },
    /// At open: the log does not reach the signed head kept outside it.
    TamperDetected {
        kind: &'static str,
        signed_size: u64,
        signed_head: Digest,
        found_size: u64,
    },
    /// At open: the log exists but the head file does not.
    HeadMissing,
}

/// Optional fields (`audit.fields`); `sequence`, `timestamp`, `action`, `kernelSeq`, `hash` and `prevHash`
/// are always written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSet(u16);

impl FieldSet {
    pub const EFFECT: FieldSet = FieldSet(1 << 0);
    pub const MATCHED_RULE: FieldSet = FieldSet(1 << 1);
    pub const REASON: FieldSet = FieldSet(1 << 2);
    pub const AGENT_ID: FieldSet = FieldSet(1 << 3);
    pub const SESSION_ID: FieldSet = FieldSet(1 << 4);
    pub const USER_ID: FieldSet = FieldSet(1 << 5);
    pub const REQUEST_DETAILS: FieldSet = FieldSet(1 << 6);
    pub const EVALUATION_DURATION: FieldSet = FieldSet(1 << 7);
    pub const POLICY_HASH: FieldSet = FieldSet(1 << 8);
    pub const FLAGS: FieldSet = FieldSet(1 << 9);
    pub const ALL: FieldSet = FieldSet((1 << 10) - 1);
    pub const NONE: FieldSet = FieldSet(0);

    /// Names accepted in `audit.fields`: the optional ones and the always-written ones.
    pub const NAMES: [(&'static str, FieldSet); 16] = [
        ("effect", Self::EFFECT),
        ("matchedRule", Self::MATCHED_RULE),
        ("reason", Self::REASON),
        ("agentId", Self::AGENT_ID),
        ("sessionId", Self::SESSION_ID),
        ("userId", Self::USER_ID),
        ("requestDetails", Self::REQUEST_DETAILS),
        ("evaluationDurationMs", Self::EVALUATION_DURATION),
        ("policyHash", Self::POLICY_HASH),
        ("flags", Self::FLAGS),
        ("sequence", Self::NONE),
        ("timestamp", Self::NONE),
        ("action", Self::NONE),
        ("kernelSeq", Self::NONE),
        ("hash", Self::NONE),
        ("prevHash", Self::NONE),
    ];

    pub fn by_name(name: &str) -> Option<FieldSet> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn with(self, other: FieldSet) -> FieldSet {
        FieldSet(self.0 | other.0)
    }

    pub fn has(self, field: FieldSet) -> bool {
        self.0 & field.0 == field.0
    }
}

/// Fields every entry has, ahead of its kind-specific ones.
pub(crate) struct Header<'a> {
    pub sequence: u64,
    pub prev_hash: Digest,
    /// RFC 3339 text (`clock::TIMESTAMP_LEN` bytes).
    pub timestamp: &'a [u8],
}

fn write_digest(obj: &mut Object<'_>, key: &'static str, digest: &Digest) {
    let out = obj.key(key);
    out.push(b'"');
    digest.write_text(out);
    out.push(b'"');
}

fn write_prev_hash(obj: &mut Object<'_>, header: &Header<'_>) {
    write_digest(obj, "prevHash", &header.prev_hash);
}

fn write_timestamp(obj: &mut Object<'_>, header: &Header<'_>) {
    let out = obj.key("timestamp");
    out.push(b'"');
    out.extend_from_slice(header.timestamp);
    out.push(b'"');
}

/// Appends the canonical body of an attempt; secrets in paths and argv are masked first.
pub(crate) fn write_action(
    out: &mut Vec<u8>,
    header: &Header<'_>,
    record: &ActionRecord,
    fields: FieldSet,
    redactor: &Redactor,
) {
    let mut hits = Hits::default();
    let details =
        fields.has(FieldSet::REQUEST_DETAILS).then(|| RedactedDetails::new(record, redactor, &mut hits));
    let id = &record.identity;
    let mut obj = Object::begin(out);
    obj.str("action", record.details.action());
    if fields.has(FieldSet::AGENT_ID) {
        obj.opt_str("agentId", id.agent_id.as_deref());
    }
    if fields.has(FieldSet::EFFECT) {
        obj.str("effect", record.effect.as_str());
    }
    if fields.has(FieldSet::EVALUATION_DURATION) {
        write_duration_ms(obj.key("evaluationDurationMs"), record.evaluation_ns);
    }
    if fields.has(FieldSet::FLAGS) && record.flags.0 != 0 {
        let names = record.flags.names();
        obj.str_array("flags", names.iter().map(String::as_str));
    }
    if record.repeats.is_none() {
        obj.u64("kernelSeq", record.kernel_seq);
    }
    if fields.has(FieldSet::MATCHED_RULE) {
        obj.opt_str("matchedRule", record.matched_rule.as_deref());
    }
    if fields.has(FieldSet::POLICY_HASH) {
        write_digest(&mut obj, "policyHash", &record.policy_hash);
    }
    write_prev_hash(&mut obj, header);
    if fields.has(FieldSet::REASON) {
        obj.opt_str("reason", record.reason.as_deref());
    }
    if !hits.is_empty() {
        obj.str_array("redacted", redactor.names(hits));
    }
    if let Some(repeats) = &record.repeats {
        obj.object("repeats", |r| {
            r.u64("count", repeats.count);
            r.str("firstTime", &repeats.first_time);
            r.str("lastTime", &repeats.last_time);
            r.u64("ofKernelSeq", record.kernel_seq);
        });
    }
    if let Some(details) = &details {
        obj.object("requestDetails", |d| details.write(d, record));
    }
    obj.u64("sequence", header.sequence);
    if fields.has(FieldSet::SESSION_ID) {
        obj.opt_str("sessionId", id.session_id.as_deref());
    }
    if fields.has(FieldSet::MATCHED_RULE) {
        obj.opt_str("severity", record.rule_meta.severity.map(Severity::as_str));
    }
    if fields.has(FieldSet::MATCHED_RULE) && !record.rule_meta.tags.is_empty() {
        obj.str_array("tags", record.rule_meta.tags.iter().map(String::as_str));
    }
    write_timestamp(&mut obj, header);
    if fields.has(FieldSet::USER_ID) {
        obj.opt_str("userId", id.user_id.as_deref());
    }
    obj.end();
}

/// A path as text: lossy UTF-8 for display, plus the exact bytes in hex when they are not UTF-8.
struct PathText<'a> {
    text: Cow<'a, str>,
    hex: Option<String>,
}

impl<'a> PathText<'a> {
    fn new(bytes: &'a [u8], redactor: &Redactor, hits: &mut Hits) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => PathText { text: redactor.redact(text, hits), hex: None },
            Err(_) => {
                let lossy = String::from_utf8_lossy(bytes);
                let text = redactor.redact(&lossy, hits).into_owned();
                // The exact bytes would reveal what was masked: keep them only when nothing was.
                let hex = (text == lossy).then(|| super::chain::hex_string(bytes));
                PathText { text: Cow::Owned(text), hex }
            }
        }
    }
}

struct RedactedDetails<'a> {
    path: Option<PathText<'a>>,
    argv: Option<Vec<Cow<'a, str>>>,
}

impl<'a> RedactedDetails<'a> {
    fn new(record: &'a ActionRecord, redactor: &Redactor, hits: &mut Hits) -> Self {
        let (path, argv) = match &record.details {
            RequestDetails::File { path, .. } | RequestDetails::FileAction { path, .. } => (Some(path), None),
            RequestDetails::Exec { path, argv } => (
                Some(path),
                argv.as_ref().map(|args| args.iter().map(|a| redactor.redact(a, hits)).collect()),
            ),
            RequestDetails::Connect(ConnectTarget::Unix { path }) => (Some(path), None),
            RequestDetails::Connect(_) | RequestDetails::Listen(_) | RequestDetails::Guard { .. } => {
                (None, None)
            }
        };
        RedactedDetails { path: path.map(|p| PathText::new(p, redactor, hits)), argv }
    }

    fn write(&self, d: &mut Object<'_>, record: &ActionRecord) {
        let p = &record.process;
        let inet = match &record.details {
            RequestDetails::Connect(ConnectTarget::Inet { address, port, protocol })
            | RequestDetails::Listen(ConnectTarget::Inet { address, port, protocol }) => {
                Some((address, *port, *protocol))
            }
            _ => None,
        };
        if let Some((address, _, _)) = inet {
            d.str("address", &address.to_string());
        }
        if let Some(argv) = &self.argv {
            d.str_array("argv", argv.iter().map(|a| a.as_ref()));
        }
        d.u64("cgroup", p.cgroup);
        d.str("comm", &String::from_utf8_lossy(&p.comm));
        if let RequestDetails::Guard { detail, .. } = &record.details {
            d.u64("detail", u64::from(*detail));
        }
        if let RequestDetails::Connect(ConnectTarget::Other { family })
        | RequestDetails::Listen(ConnectTarget::Other { family }) = &record.details
        {
            d.u64("family", u64::from(*family));
        }
        if let RequestDetails::File { mode, .. } = &record.details {
            d.str(
                "mode",
                match mode {
                    FileMode::Read => "r",
                    FileMode::Write => "w",
                    FileMode::ReadWrite => "rw",
                },
            );
        }
        if let RequestDetails::FileAction { new_mode, new_uid, new_gid, .. } = &record.details {
            for (key, value) in [("newGid", new_gid), ("newMode", new_mode), ("newUid", new_uid)] {
                if let Some(value) = value {
                    d.u64(key, u64::from(*value));
                }
            }
        }
        if let Some(path) = &self.path {
            d.str("path", &path.text);
            d.opt_str("pathHex", path.hex.as_deref());
        }
        d.u64("pid", u64::from(p.pid));
        if let Some((_, port, _)) = inet {
            d.u64("port", u64::from(port));
        }
        if let Some(ppid) = p.ppid {
            d.u64("ppid", u64::from(ppid));
        }
        match (&record.details, inet) {
            (_, Some((_, _, protocol))) => d.str("protocol", protocol.as_str()),
            (RequestDetails::Connect(ConnectTarget::Unix { .. }), _) => d.str("protocol", "unix"),
            _ => {}
        }
        if let RequestDetails::Guard { target_pid: Some(target), .. } = &record.details {
            d.u64("targetPid", u64::from(*target));
        }
        d.u64("tid", u64::from(p.tid));
        d.opt_str("toolUseId", record.tool_use_id.as_deref());
        d.u64("uid", u64::from(p.uid));
        if let RequestDetails::FileAction { xattr_name: Some(name), .. } = &record.details {
            d.str("xattrName", name);
        }
    }
}

/// Appends the canonical body of a lifecycle entry.
pub(crate) fn write_lifecycle(out: &mut Vec<u8>, header: &Header<'_>, event: &Lifecycle) {
    let (action, identity) = match event {
        Lifecycle::DaemonStart { .. } => ("daemon.start", None),
        Lifecycle::DaemonStop { .. } => ("daemon.stop", None),
        Lifecycle::SessionStart(id) => ("session.start", Some(id)),
        Lifecycle::SessionEnd(id) => ("session.end", Some(id)),
        Lifecycle::PolicyLoad { .. } => ("policy.load", None),
        Lifecycle::PolicyReloadRejected { .. } => ("policy.reload_rejected", None),
        Lifecycle::KernelSessionStart => ("kernel.session_start", None),
        Lifecycle::LockdownOn { .. } => ("kernel.lockdown_on", None),
        Lifecycle::LockdownOff => ("kernel.lockdown_off", None),
        Lifecycle::RequestRefused { .. } => ("daemon.request_refused", None),
        Lifecycle::SignalRefused { .. } => ("daemon.signal_refused", None),
        Lifecycle::SessionsEnded { .. } => ("daemon.sessions_ended", None),
        Lifecycle::StopRefused { .. } => ("daemon.stop_refused", None),
        Lifecycle::AgentsPaused { .. } => ("daemon.agents_paused", None),
        Lifecycle::AgentsResumed { .. } => ("daemon.agents_resumed", None),
        Lifecycle::DestinationFailing { .. } => ("destination.failing", None),
        Lifecycle::DestinationRecovered { .. } => ("destination.recovered", None),
    };
    let mut obj = Object::begin(out);
    obj.str("action", action);
    if let Some(id) = identity {
        obj.opt_str("agentId", id.agent_id.as_deref());
    }
    obj.object("details", |d| match event {
        Lifecycle::DaemonStart { version } => d.str("version", version),
        Lifecycle::DaemonStop { reason } | Lifecycle::LockdownOn { reason } => d.str("reason", reason),
        Lifecycle::PolicyLoad { policy_hash, source, rules } => {
            write_digest(d, "policyHash", policy_hash);
            d.u64("rules", u64::from(*rules));
            d.str("source", source);
        }
        Lifecycle::PolicyReloadRejected { source, error } => {
            d.str("error", error);
            d.str("source", source);
        }
        Lifecycle::RequestRefused { request, uid, pid, command, reason } => {
            d.str("command", command);
            d.u64("pid", u64::from(*pid));
            d.str("reason", reason);
            d.str("request", request);
            d.u64("uid", u64::from(*uid));
        }
        Lifecycle::SignalRefused { signal, sender_pid, reason } => {
            d.str("reason", reason);
            d.u64("senderPid", u64::from(*sender_pid));
            d.u64("signal", u64::from(*signal));
        }
        Lifecycle::SessionsEnded { processes, reason } => {
            d.u64("processes", *processes);
            d.str("reason", reason);
        }
        Lifecycle::StopRefused { by, reason } => {
            d.str("by", by);
            d.str("reason", reason);
        }
        Lifecycle::AgentsPaused { ring_used_bytes, ring_bytes } => {
            d.u64("ringBytes", *ring_bytes);
            d.u64("ringUsedBytes", *ring_used_bytes);
        }
        Lifecycle::AgentsResumed { paused_ms: Some(paused_ms) } => d.u64("pausedMs", *paused_ms),
        Lifecycle::AgentsResumed { paused_ms: None } => d.bool("leftByPreviousDaemon", true),
        Lifecycle::DestinationFailing { destination, error, since } => {
            d.str("destination", destination);
            d.str("error", error);
            d.str("since", since);
        }
        Lifecycle::DestinationRecovered { destination, failing_since } => {
            d.str("destination", destination);
            d.str("failingSince", failing_since);
        }
        Lifecycle::SessionStart(_)
        | Lifecycle::SessionEnd(_)
        | Lifecycle::KernelSessionStart
        | Lifecycle::LockdownOff => {}
    });
    write_prev_hash(&mut obj, header);
    obj.u64("sequence", header.sequence);
    if let Some(id) = identity {
        obj.opt_str("sessionId", id.session_id.as_deref());
    }
    write_timestamp(&mut obj, header);
    if let Some(id) = identity {
        obj.opt_str("userId", id.user_id.as_deref());
    }
    obj.end();
}

impl WriterEvent {
    pub(crate) fn action(&self) -> &'static str {
        match self {
            WriterEvent::LogStart { .. } => "audit.log_start",
            WriterEvent::SegmentStart { .. } => "audit.segment_start",
            WriterEvent::Checkpoint { .. } => "audit.checkpoint",
            WriterEvent::Gap { .. } => "audit.gap",
            WriterEvent::KernelSeqReset { .. } => "audit.kernel_seq_reset",
            WriterEvent::RetentionDelete { .. } => "audit.retention_delete",
            WriterEvent::WriteRecovered { .. } => "audit.write_recovered",
            WriterEvent::CrashRecovered { .. } => "audit.crash_recovered",
            WriterEvent::TamperDetected { .. } => "audit.tamper_detected",
            WriterEvent::HeadMissing => "audit.head_missing",
            WriterEvent::KeyRotation { .. } => "audit.key_rotation",
            WriterEvent::ClockStep { .. } => "audit.clock_step",
        }
    }
}

/// Appends the canonical body of an entry the writer adds itself.
pub(crate) fn write_writer_event(out: &mut Vec<u8>, header: &Header<'_>, event: &WriterEvent) {
    let mut obj = Object::begin(out);
    obj.str("action", event.action());
    obj.object("details", |d| match event {
        WriterEvent::LogStart { log_id, public_key } => {
            d.str("format", super::FORMAT);
            d.str("logId", log_id);
            d.str("publicKey", public_key);
        }
        WriterEvent::SegmentStart { log_id, last_kernel_seq } => {
            if let Some(seq) = last_kernel_seq {
                d.u64("lastKernelSeq", *seq);
            }
            d.str("logId", log_id);
        }
        WriterEvent::Checkpoint { log_id, key_id, trigger, signature } => {
            write_digest(d, "keyId", key_id);
            d.str("logId", log_id);
            d.str("signature", signature);
            d.str("trigger", trigger);
        }
        WriterEvent::Gap { from, to } => {
            d.u64("count", to - from + 1);
            d.u64("fromKernelSeq", *from);
            d.u64("toKernelSeq", *to);
        }
        WriterEvent::KernelSeqReset { expected, got } => {
            d.u64("expectedKernelSeq", *expected);
            d.u64("gotKernelSeq", *got);
        }
        WriterEvent::RetentionDelete {
            segment,
            covered_from,
            first,
            last,
            last_hash,
            last_time,
            retention,
        } => {
            d.u64("coveredFrom", *covered_from);
            d.u64("firstSequence", *first);
            write_digest(d, "lastHash", last_hash);
            d.u64("lastSequence", *last);
            d.str("lastTimestamp", last_time);
            d.str("retention", retention);
            d.str("segment", segment);
        }
        WriterEvent::WriteRecovered { since, error, mode, recorded, dropped, denied, allowed } => {
            d.u64("allowedDuringFailure", *allowed);
            d.u64("deniedDuringFailure", *denied);
            d.u64("dropped", *dropped);
            d.str("error", error);
            d.str("failingSince", since);
            d.str("mode", mode);
            d.u64("recordedLate", *recorded);
        }
        WriterEvent::CrashRecovered { discarded_bytes } => d.u64("discardedBytes", *discarded_bytes),
        WriterEvent::TamperDetected { kind, signed_size, signed_head, found_size } => {
            d.u64("foundSize", *found_size);
            d.str("kind", kind);
            write_digest(d, "signedHead", signed_head);
            d.u64("signedSize", *signed_size);
        }
        WriterEvent::HeadMissing => {}
        WriterEvent::KeyRotation { log_id, key_id, public_key } => {
            write_digest(d, "keyId", key_id);
            d.str("logId", log_id);
            d.str("publicKey", public_key);
        }
        WriterEvent::ClockStep { previous } => d.str("previousCheckpoint", previous),
    });
    write_prev_hash(&mut obj, header);
    obj.u64("sequence", header.sequence);
    write_timestamp(&mut obj, header);
    obj.end();
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    pub(crate) fn sample(kernel_seq: u64) -> ActionRecord {
        ActionRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_770_979_523_102),
            effect: Effect::Deny,
            matched_rule: Some("block-secrets".into()),
            reason: Some("no secrets".into()),
            rule_meta: RuleMeta {
                severity: Some(Severity::Critical),
                tags: vec!["soc2:CC6.1".into(), "hipaa:164.312(b)".into()],
            },
            identity: Identity {
                agent_id: Some("agent-1".into()),
                session_id: Some("s1".into()),
                user_id: None,
            },
            details: RequestDetails::Exec {
                path: b"/usr/bin/curl".to_vec(),
                argv: Some(vec!["curl".into(), "-H".into(), "Authorization: Bearer abcdefghijkl".into()]),
            },
            process: ProcessInfo {
                pid: 10,
                tid: 11,
                ppid: Some(1),
                uid: 1000,
                comm: b"curl".to_vec(),
                cgroup: 77,
            },
            evaluation_ns: 180_000,
            kernel_seq,
            policy_hash: Digest::of(b"policy"),
            flags: KernelFlags(flag::LOCKDOWN),
            tool_use_id: None,
            repeats: None,
        }
    }

    fn header() -> Header<'static> {
        Header { sequence: 5, prev_hash: Digest::of(b"prev"), timestamp: b"2026-02-13T10:45:23.102Z" }
    }

    #[test]
    fn action_body_is_canonical_json_with_masked_argv() {
        let mut out = Vec::new();
        write_action(&mut out, &header(), &sample(9), FieldSet::ALL, &Redactor::builtin());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // serde_json's map is sorted and compact: re-serializing reproduces canonical bytes (no floats
        // beyond ours, which it writes the same way).
        assert_eq!(serde_json::to_vec(&value).unwrap(), out);
        assert_eq!(value["action"], "process.exec");
        assert_eq!(value["evaluationDurationMs"], 0.18);
        assert_eq!(value["requestDetails"]["argv"][2], "Authorization: Bearer [REDACTED]");
        assert_eq!(value["redacted"], serde_json::json!(["bearer-token"]));
        assert_eq!(value["flags"], serde_json::json!(["lockdown"]));
        assert_eq!(value["severity"], "critical");
        assert_eq!(value["tags"], serde_json::json!(["soc2:CC6.1", "hipaa:164.312(b)"]));
        assert!(value.get("userId").is_none());
    }

    #[test]
    fn field_selection_keeps_integrity_fields() {
        let mut out = Vec::new();
        write_action(&mut out, &header(), &sample(9), FieldSet::NONE, &Redactor::builtin());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["action", "kernelSeq", "prevHash", "sequence", "timestamp"]);
    }

    #[test]
    fn file_connect_and_lifecycle_bodies_are_sorted() {
        let mut record = sample(1);
        for details in [
            RequestDetails::File { path: b"/etc/\xffshadow".to_vec(), mode: FileMode::ReadWrite },
            RequestDetails::Connect(ConnectTarget::Inet {
                address: "10.0.0.1".parse().unwrap(),
                port: 443,
                protocol: Protocol::Tcp,
            }),
            RequestDetails::Connect(ConnectTarget::Unix { path: b"@bus".to_vec() }),
            RequestDetails::Connect(ConnectTarget::Other { family: 16 }),
        ] {
            record.details = details;
            let mut out = Vec::new();
            write_action(&mut out, &header(), &record, FieldSet::ALL, &Redactor::builtin());
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(serde_json::to_vec(&value).unwrap(), out);
        }
        let mut out = Vec::new();
        let id =
            Identity { agent_id: Some("a".into()), session_id: Some("s".into()), user_id: Some("u".into()) };
        write_lifecycle(&mut out, &header(), &Lifecycle::SessionStart(id));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(serde_json::to_vec(&value).unwrap(), out);
        assert_eq!(value["userId"], "u");
    }

    #[test]
    fn file_change_bodies_are_sorted_and_name_their_action() {
        let mut record = sample(1);
        record.details = RequestDetails::FileAction {
            action: "file.chown",
            path: b"/home/u/.bashrc".to_vec(),
            new_mode: None,
            new_uid: Some(0),
            new_gid: Some(7),
            xattr_name: None,
        };
        let mut out = Vec::new();
        write_action(&mut out, &header(), &record, FieldSet::ALL, &Redactor::builtin());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(serde_json::to_vec(&value).unwrap(), out, "canonical member order");
        assert_eq!(value["action"], "file.chown");
        assert_eq!(value["requestDetails"]["newUid"], 0);
        assert_eq!(value["requestDetails"]["newGid"], 7);
        assert!(value["requestDetails"].get("newMode").is_none());
        assert!(value["requestDetails"].get("mode").is_none());
    }

    #[test]
    fn xattr_change_bodies_name_the_attribute() {
        let mut record = sample(1);
        record.details = RequestDetails::FileAction {
            action: "file.setxattr",
            path: b"/home/u/.bashrc".to_vec(),
            new_mode: None,
            new_uid: None,
            new_gid: None,
            xattr_name: Some("security.capability".into()),
        };
        let mut out = Vec::new();
        write_action(&mut out, &header(), &record, FieldSet::ALL, &Redactor::builtin());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(serde_json::to_vec(&value).unwrap(), out, "canonical member order");
        assert_eq!(value["action"], "file.setxattr");
        assert_eq!(value["requestDetails"]["xattrName"], "security.capability");
        assert_eq!(value["requestDetails"]["path"], "/home/u/.bashrc");
    }

    #[test]
    fn non_utf8_paths_keep_their_bytes() {
        let mut record = sample(1);
        record.details = RequestDetails::File { path: b"/tmp/\xff".to_vec(), mode: FileMode::Read };
        let mut out = Vec::new();
        write_action(&mut out, &header(), &record, FieldSet::ALL, &Redactor::builtin());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["action"], "file.read");
        assert_eq!(value["requestDetails"]["pathHex"], "2f746d702fff");
    }

    #[test]
    fn every_kernel_flag_bit_has_its_own_name() {
        let bits: Vec<u16> = FLAG_NAMES.iter().map(|(bit, _)| *bit).collect();
        assert_eq!(bits.iter().fold(0, |acc, bit| acc | bit), u16::MAX, "a bit without a name");
        assert!(bits.iter().all(|bit| bit.count_ones() == 1), "{bits:?}");
        let mut names: Vec<&str> = FLAG_NAMES.iter().map(|(_, name)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 16);
        assert_eq!(KernelFlags(u16::MAX).names().len(), 16);
    }
}

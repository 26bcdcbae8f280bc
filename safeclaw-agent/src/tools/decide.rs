//! The daemon's side of a tool call: decide it by the caller's session profile, record it in the
//! chain, keep the call open for linking kernel events, and answer the hook.
use std::time::{Instant, SystemTime};

use super::call::semantic;
use super::correlate::Correlator;
use super::protocol::{HookAnswer, KernelDenial};
use super::server::ToolEvent;
use crate::audit::tool_entry::{ToolDetails, ToolRecord};
use crate::audit::{ActionRecord, AuditWriter, ConnectTarget, Digest, Identity, RequestDetails};
use crate::policy::compiled::Effect;
use crate::policy::{ActivePolicy, ToolPhase, ToolRequest};

/// The rule named in entries of hooks refused for running outside any session.
pub const OUTSIDE_SESSION_RULE: &str = "builtin:outside-session";

/// CLOCK_BOOTTIME in nanoseconds: the clock the kernel stamps its events with.
pub fn boot_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
        .unwrap_or(0)
}

/// Decides, records and answers one tool call.
pub fn decide(
    event: ToolEvent,
    policy: Option<&ActivePolicy>,
    writer: &mut AuditWriter,
    calls: &mut Correlator,
) {
    let ToolEvent { call, caller, done } = event;
    let started = Instant::now();
    let boot_ns = boot_now_ns();
    let policy_hash = policy.map_or(Digest([0; 32]), |p| Digest(p.hash().0));
    let details = ToolDetails {
        agent_cli: call.cli.as_str().to_owned(),
        tool_name: call.tool_name.clone(),
        tool_use_id: call.tool_use_id.clone(),
        cli_session_id: call.cli_session_id.clone(),
        input: call.input.to_string(),
        semantic: semantic(&call.tool_name, &call.input),
        result: call.result.clone(),
        pid: caller.pid,
        uid: caller.uid,
        cgroup: caller.cgroup_id,
    };
    let session = match &caller.session {
        Ok(session) => session,
        Err(why) => {
            tracing::warn!("refused a {} hook from pid {}: {why}", call.cli.as_str(), caller.pid);
            let reason = format!("hook outside any agent session: {why}");
            let sequence = writer.record_tool(&ToolRecord {
                time: SystemTime::now(),
                action: call.phase.action(),
                effect: Effect::Deny,
                matched_rule: Some(OUTSIDE_SESSION_RULE.to_owned()),
                reason: Some(reason.clone()),
                identity: Identity::default(),
                evaluation_ns: started.elapsed().as_nanos() as u64,
                policy_hash,
                details,
            });
            let _ = done.send(HookAnswer::Refused { reason, sequence: Some(sequence) });
            return;
        }
    };
    let request = ToolRequest { phase: call.phase, tool: &call.tool_name, input: &call.input };
    let (effect, rule_name, reason) = match policy {
        Some(policy) => {
            let profile = policy.profile_number(session.agent_id.as_str());
            let (decision, rule) = policy.decide_tool(profile, &request);
            (decision.effect, rule.map(|r| r.name.clone()), rule.and_then(|r| r.reason.clone()))
        }
        None => (Effect::Deny, None, Some("no policy is loaded".to_owned())),
    };
    let evaluation_ns = started.elapsed().as_nanos() as u64;
    let identity = Identity {
        agent_id: Some(session.agent_id.as_str().to_owned()),
        session_id: Some(session.session_id.as_str().to_owned()),
        user_id: Some(session.user_id.as_str().to_owned()),
    };
    let sequence = writer.record_tool(&ToolRecord {
        time: SystemTime::now(),
        action: call.phase.action(),
        effect,
        matched_rule: rule_name.clone(),
        reason: reason.clone(),
        identity,
        evaluation_ns,
        policy_hash,
        details,
    });
    let mut kernel_denials = Vec::new();
    if let Some(id) = &call.tool_use_id {
        match call.phase {
            ToolPhase::Call if effect != Effect::Deny => {
                calls.open(session.cgroup_id, id, boot_ns, caller.own_pids.clone())
            }
            ToolPhase::Call => {}
            ToolPhase::Result => kernel_denials = calls.close(session.cgroup_id, id, boot_ns),
        }
    }
    let _ = done.send(HookAnswer::Decided {
        effect: effect.as_str().to_owned(),
        rule: rule_name,
        reason,
        sequence,
        kernel_denials,
    });
}

/// After a kernel entry linked to a tool call was appended as `sequence`: a denial is remembered
/// for the call's PostToolUse receipt.
pub fn note_kernel_entry(calls: &mut Correlator, session: u64, record: &ActionRecord, sequence: u64) {
    let Some(id) = record.tool_use_id.as_deref() else { return };
    if record.effect != Effect::Deny {
        return;
    }
    let target = match &record.details {
        RequestDetails::File { path, .. }
        | RequestDetails::Exec { path, .. }
        | RequestDetails::FileAction { path, .. } => String::from_utf8_lossy(path).into_owned(),
        RequestDetails::Connect(ConnectTarget::Inet { address, port, .. }) => {
            format!("{address} port {port}")
        }
        RequestDetails::Listen(ConnectTarget::Inet { address, port, .. }) => {
            format!("listening on {address} port {port}")
        }
        RequestDetails::Listen(_) => "listening".to_owned(),
        RequestDetails::Connect(ConnectTarget::Unix { path }) => String::from_utf8_lossy(path).into_owned(),
        RequestDetails::Connect(ConnectTarget::Other { family }) => format!("socket family {family}"),
        RequestDetails::Guard { action, .. } => (*action).to_owned(),
    };
    let denial = KernelDenial {
        sequence,
        action: record.details.action().to_owned(),
        target,
        rule: record.matched_rule.clone(),
    };
    let id = id.to_owned();
    calls.note_denial(session, &id, denial);
}

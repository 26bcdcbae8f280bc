//! The hook ↔ daemon exchange on the tool socket: one request line, one answer line, in the
//! launcher protocol's envelope (`identity::protocol`: versioned, at most 1 MiB a line).
use serde::{Deserialize, Serialize};

use super::call::ToolCall;

/// The daemon's answer to one tool call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum HookAnswer {
    /// Decided by the policy and recorded as entry `sequence`.
    #[serde(rename_all = "camelCase")]
    Decided {
        /// `allow`, `deny` or `audit`.
        effect: String,
        /// The deciding rule; `None` when the profile's default decided.
        rule: Option<String>,
        reason: Option<String>,
        sequence: u64,
        /// For a result: what the kernel denied the tool's processes while it ran.
        kernel_denials: Vec<KernelDenial>,
    },
    /// Not decided: the caller is not in a live session (recorded as entry `sequence`), or the
    /// request was malformed.
    #[serde(rename_all = "camelCase")]
    Refused { reason: String, sequence: Option<u64> },
}

/// A kernel denial linked to a tool call, as the agent is told of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelDenial {
    pub sequence: u64,
    pub action: String,
    /// The path or address denied.
    pub target: String,
    pub rule: Option<String>,
}

/// What the hook sends.
pub type HookRequest = ToolCall;

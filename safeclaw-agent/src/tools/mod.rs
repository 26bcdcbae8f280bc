//! Agent tool calls (Claude Code and Codex PreToolUse/PostToolUse hooks): what a hook reports, how the
//! daemon decides and records it in the same chain as the kernel's entries, links the kernel events
//! the call causes, and how each CLI is answered.
pub mod call;
pub mod correlate;
pub mod decide;
pub mod hook;
pub mod install;
pub mod protocol;
pub mod server;

//! Policy: the YAML model, its validation, the reference evaluator and the compiler to kernel tables.
//!
//! Entry points: `PolicySource` (what the daemon enforces), `load_file` (validated `Policy` or `PolicyError` with file:line:column),
//! `compile_all` / `load_and_compile` (one `CompiledPolicy` per profile, with the policy hash and
//! warnings), `Evaluator` (the reference decision and its explanation), `cli`.
mod active;
mod attempt;
pub mod cli;
mod compile;
pub mod compiled;
mod context;
mod dfa;
mod diag;
mod eval;
mod fasthash;
mod glob;
mod hosts;
mod load;
mod loaders;
mod matcher;
mod model;
mod net;
mod netcompile;
mod positions;
pub(crate) mod schema;
mod tools;

pub use active::{ActivePolicy, PolicySource};
pub use compile::{compile_all, load_and_compile, CompiledProfile, CompiledSet, TableStats};
pub use context::{launching_user_home, CompileContext};
pub use diag::{Diagnostic, Level, Location, PolicyError};
pub use eval::{Check, Evaluator, Explanation, Step, StepVerdict};
pub use glob::{Glob, GlobError, Syntax};
pub use hosts::{resolve_system, HostAddresses, HostCache, REFRESH_INTERVAL, STALE_GRACE};
pub use load::{load_file, load_file_trusted, load_str};
pub use loaders::{denied_loader_warnings, SYSTEM_LOADERS};
pub use model::{
    Action, Agent, InetMatch, Matcher, PathClass, Paths, Policy, PolicyHash, Profile, Rule, RuleInfo,
    Severity,
};
pub use net::{Cidr, HostName, PortRange, Protocol};
pub use tools::{member_text, ToolEvaluator, ToolPhase, ToolRequest};

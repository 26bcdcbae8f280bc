//! Policy: the YAML model, its validation, the reference evaluator and the compiler to kernel tables.
//!
//! Entry points: `load_file` (validated `Policy` or `PolicyError` with file:line:column),
//! `compile_all` / `load_and_compile` (one `CompiledPolicy` per profile, with the policy hash and
//! warnings), `Evaluator` (the reference decision and its explanation), `cli`.
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
mod matcher;
mod model;
mod net;
mod netcompile;
mod positions;
mod schema;

pub use compile::{compile_all, load_and_compile, CompiledProfile, CompiledSet, TableStats};
pub use context::{launching_user_home, CompileContext};
pub use diag::{Diagnostic, Level, Location, PolicyError};
pub use eval::{Check, Evaluator, Explanation, Step, StepVerdict};
pub use glob::{Glob, GlobError, Syntax};
pub use hosts::{resolve_system, HostAddresses, HostCache, REFRESH_INTERVAL, STALE_GRACE};
pub use load::{load_file, load_str};
pub use model::{
    Action, Agent, InetMatch, Matcher, PathClass, Paths, Policy, PolicyHash, Profile, Rule, RuleInfo,
    Severity,
};
pub use net::{Cidr, HostName, PortRange, Protocol};

/// Loads, validates, resolves host names and compiles the policy file for the daemon. The base
/// profile is what the kernel enforces (per-agent profiles are not yet keyed in the kernel tables).
pub fn load_active(path: &std::path::Path) -> Result<crate::daemon::ActivePolicy, PolicyError> {
    let policy = load_file(path)?;
    let mut ctx = CompileContext::new(launching_user_home());
    let mut cache = HostCache::default();
    for (host, error) in cache.refresh(&policy.host_names(), 0, resolve_system) {
        tracing::warn!(
            "{}: cannot resolve `{host}` (its rules match no address until it resolves): {error}",
            path.display()
        );
    }
    ctx.hosts = cache.addresses(0);
    let set = compile_all(&policy, &ctx)?;
    for warning in &set.warnings {
        tracing::warn!("{warning}");
    }
    Ok(crate::daemon::ActivePolicy { hash: set.hash, profile: set.base })
}

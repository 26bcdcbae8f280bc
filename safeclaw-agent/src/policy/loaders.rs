//! The host's dynamic loaders: every dynamically linked program's exec maps one, decided by the
//! exec rules, so a policy denying it stops them all (`policy check` warns).
use std::path::Path;

use super::compiled::{Effect, Request};
use super::diag::{Diagnostic, Location};
use super::CompiledSet;

/// Where the C libraries of the common architectures put their loader (`PT_INTERP`).
pub const SYSTEM_LOADERS: [&str; 6] = [
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-armhf.so.3",
    "/lib/ld-linux.so.2",
    "/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-aarch64.so.1",
];

/// One warning per profile and loader of this host (`loaders`, as named by programs) whose exec the
/// profile denies. Each is decided on the path the kernel gives it (symlinks resolved), placed at
/// the deciding rule, or at `top` when the default decides.
pub fn denied_loader_warnings(set: &CompiledSet, loaders: &[&str], top: &Location) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    for loader in loaders {
        let Ok(real) = std::fs::canonicalize(Path::new(loader)) else { continue };
        let real_bytes = real.as_os_str().as_encoded_bytes();
        for profile in std::iter::once(&set.base).chain(&set.agents) {
            let decision = profile.tables.decide(&Request::Exec { path: real_bytes });
            if decision.effect != Effect::Deny {
                continue;
            }
            let rule = decision.rule.and_then(|id| profile.rule(id));
            let (location, by) = match rule {
                Some(rule) => (rule.location.clone(), format!("rule `{}`", rule.name)),
                None => (top.clone(), "the default".to_owned()),
            };
            let within = profile
                .agent
                .as_deref()
                .map(|a| format!(" (in the profile of agent `{a}`)"))
                .unwrap_or_default();
            warnings.push(Diagnostic::warning(
                location,
                format!(
                    "{by} denies executing the system loader {} ({loader}){within}: every dynamically linked program maps it when it starts, so none would run; allow it with a process.exec rule",
                    real.display()
                ),
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile_all, load_str, CompileContext};

    fn warnings(yaml: &str, loaders: &[&str]) -> Vec<String> {
        let policy = load_str("p.yaml", yaml).unwrap();
        let set = compile_all(&policy, &CompileContext::new("/home/u")).unwrap();
        let top = Location::file(&"p.yaml".into());
        denied_loader_warnings(&set, loaders, &top).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_denied_loader_is_named_at_its_rule_and_an_allowed_or_absent_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let loader = dir.path().join("ld-test.so.2");
        std::fs::write(&loader, b"").unwrap();
        let real = std::fs::canonicalize(&loader).unwrap().display().to_string();
        let loader = loader.display().to_string();
        let absent = format!("{real}.absent");
        let deny = "version: 1\ndefault: allow\nrules:\n  - name: loaders\n    action: process.exec\n    effect: deny\n    binary: [\"**/ld-*.so*\"]\n";
        let found = warnings(deny, &[&loader, &absent]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("p.yaml:4:")
                && found[0].contains(&format!("rule `loaders` denies executing the system loader {real}")),
            "{found:#?}"
        );
        let by_default = warnings("version: 1\ndefault: deny\nrules: []\n", &[&loader]);
        assert_eq!(by_default.len(), 1, "{by_default:#?}");
        assert!(by_default[0].starts_with("p.yaml: warning: the default denies"), "{by_default:#?}");
        let allowed = format!(
            "version: 1\ndefault: deny\nrules:\n  - name: loaders\n    action: process.exec\n    effect: allow\n    binary: [\"{real}\"]\n"
        );
        assert!(warnings(&allowed, &[&loader]).is_empty());
    }

    #[test]
    fn the_shipped_policies_allow_this_hosts_loaders() {
        for name in ["default", "strict", "audit-only"] {
            let path = format!("{}/../policies/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
            let yaml = std::fs::read_to_string(&path).unwrap();
            let found = warnings(&yaml, &SYSTEM_LOADERS);
            assert!(found.is_empty(), "{name}: {found:#?}");
        }
    }
}

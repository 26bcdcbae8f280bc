//! Support for the tests that need a kernel with BPF LSM (`cargo xtask test` runs them inside the VM).
use safeclaw_agent::policy::compiled::{CompiledDfa, CompiledNet, CompiledPolicy, Effect};
use safeclaw_common::NO_RULE;

/// Fails (never skips) when the kernel cannot run the tests, saying why and how to run them.
pub fn require_bpf_lsm() {
    if std::env::var_os("SAFECLAW_IN_VM").is_none()
        && !std::path::Path::new("/sys/kernel/security/lsm").exists()
    {
        panic!("these tests need a kernel with BPF LSM; run them with `cargo xtask test` (inside the VM)");
    }
    if !nix::unistd::geteuid().is_root() {
        panic!("these tests need root (to load BPF LSM programs); run them with `cargo xtask test`");
    }
}

/// A DFA accepting exactly the given whole paths, each with its rule id (for hand-built test policies).
pub fn exact_paths_dfa(paths: &[(&[u8], u32)]) -> CompiledDfa {
    // State 0 = dead, state 1 = start; a trie over the paths' bytes with identity byte classes.
    let mut transitions = vec![0u32; 2 * 256];
    let mut accept = vec![NO_RULE, NO_RULE];
    for &(path, rule) in paths {
        let mut state = 1usize;
        for &byte in path {
            let next = transitions[state * 256 + byte as usize] as usize;
            state = if next != 0 {
                next
            } else {
                let fresh = accept.len();
                accept.push(NO_RULE);
                transitions.extend(std::iter::repeat(0).take(256));
                transitions[state * 256 + byte as usize] = fresh as u32;
                fresh
            };
        }
        accept[state] = accept[state].min(rule);
    }
    let mut classes = [0u8; 256];
    for (i, c) in classes.iter_mut().enumerate() {
        *c = i as u8;
    }
    CompiledDfa { classes, class_count: 256, start: 1, dead: Some(0), transitions, accept }
}

/// A policy that allows everything except what `deny_read` and `deny_exec` name (rule ids 0 and 1).
pub fn deny_paths_policy(deny_read: &[u8], deny_exec: &[u8]) -> CompiledPolicy {
    CompiledPolicy {
        default_effect: Effect::Allow,
        rule_effects: vec![Effect::Deny, Effect::Deny],
        dfas: [
            exact_paths_dfa(&[(deny_read, 0)]),
            exact_paths_dfa(&[(deny_read, 0)]),
            exact_paths_dfa(&[(deny_exec, 1)]),
            CompiledDfa::empty(),
        ],
        net: CompiledNet::default(),
    }
}

/// A deny-by-default policy that allows reading exactly `paths` (rule `i` for `paths[i]`).
pub fn allow_paths_policy(paths: &[&[u8]]) -> CompiledPolicy {
    let rules: Vec<(&[u8], u32)> = paths.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
    CompiledPolicy {
        default_effect: Effect::Deny,
        rule_effects: vec![Effect::Allow; paths.len()],
        dfas: [exact_paths_dfa(&rules), CompiledDfa::empty(), CompiledDfa::empty(), CompiledDfa::empty()],
        net: CompiledNet::default(),
    }
}

//! Developer diagnostics through aya-log (`run --ebpf-log LEVEL`): denials, walk bounds hit, table misses,
//! ring-full drops and decisions that found no free scratch slot. Off unless the loader sets `AYA_LOG_LEVEL`,
//! a read-only global: the verifier folds the level check into a constant and prunes every logging branch of
//! programs loaded with logging off, so they cost nothing then. Each record is built in a function of its own
//! (a BPF-to-BPF call), so the programs grow by a call, not by a copy of the record's encoding.
use aya_log_ebpf::macro_support::{level_enabled, Level};
use aya_log_ebpf::{debug, trace};

/// An in-scope decision, as recorded in the event: at debug when it denies, at trace otherwise.
#[inline(always)]
pub fn decision(action: u8, effect: u8, rule: u32, flags: u16, tgid: u32) {
    // Debug first, a constant for the verifier: with logging off nothing below it is left.
    if level_enabled(Level::Debug) && (effect == safeclaw_common::effect::DENY || level_enabled(Level::Trace))
    {
        log_decision(action, effect, rule, flags, tgid);
    }
}

#[inline(never)]
fn log_decision(action: u8, effect: u8, rule: u32, flags: u16, tgid: u32) {
    if effect == safeclaw_common::effect::DENY {
        debug!(&(), "deny: action {} rule {} flags {:x} tgid {}", action, rule, flags, tgid);
    } else {
        trace!(
            &(),
            "decided: action {} effect {} rule {} flags {:x} tgid {}",
            action,
            effect,
            rule,
            flags,
            tgid
        );
    }
}

/// Something a bound or a missing table entry cut short; the caller then denies.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Miss {
    /// The dentry walk reached `MAX_WALK_STEPS`, an unreadable dentry or a path too long.
    WalkBound = 1,
    /// The path DFA walk left its tables (a state or transition past its bound).
    DfaBound = 2,
    /// A rule id past its table, or a rule entry missing.
    RuleTable = 3,
    /// The profile of the session's agent is not loaded in the active slot.
    Profile = 4,
    /// The ring buffer could not take the event.
    RingFull = 5,
    /// Every scratch slot of the CPU is held by another decision (`scratch.rs`).
    NoScratch = 6,
}

#[inline(always)]
pub fn miss(what: Miss, detail: u32) {
    if level_enabled(Level::Debug) {
        log_miss(what as u8, detail);
    }
}

#[inline(never)]
fn log_miss(what: u8, detail: u32) {
    match what {
        1 => debug!(&(), "dentry walk bound hit (bpf_loop {}): path unresolved, denied", detail as i32),
        2 => debug!(&(), "path DFA bound hit (state {}): denied", detail),
        3 => debug!(&(), "rule table miss (rule {}): denied", detail),
        4 => debug!(&(), "profile {} not loaded: denied", detail),
        6 => debug!(&(), "every scratch slot of the CPU held (tgid {}): denied", detail),
        _ => debug!(&(), "ring buffer full (tgid {}): denied", detail),
    }
}

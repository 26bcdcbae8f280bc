//! Policy walks over the tables of the active slot and the session's profile: a path DFA per action class, and a longest-prefix
//! match plus port search for addresses. Mirrors `policy::compiled::CompiledPolicy::decide` in the
//! agent exactly; every bound is explicit and hitting one denies.
use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, maps::lpm_trie::Key};
use safeclaw_common::{
    dfa_class, effect, flag, ByteClasses, NetKeyData, PolicyHeader, MAX_DFA_STATES, MAX_DFA_TRANSITIONS,
    MAX_PORT_INTERVALS, MAX_PROFILES, MAX_RULES, NET_KEY_HEADER_BITS, NO_RULE, PATH_MAX, PORT_SEARCH_STEPS,
};

use crate::diag::{self, Miss};
use crate::maps::{
    DFA_ACCEPT, DFA_CLASSES, DFA_TRANS, NET_PREFIXES, POLICY, PORT_INTERVALS, RULES, SESSION_PROFILES,
};

/// The policy slot and profile in force for this event; `header` is none when that profile is not
/// loaded (which denies).
#[derive(Clone, Copy)]
pub struct Slot {
    pub index: u32,
    pub profile: u32,
    pub header: Option<&'static PolicyHeader>,
}

impl Slot {
    /// The profile the daemon registered for `session` (a session cgroup id, 0 for none), else the
    /// base profile.
    #[inline(always)]
    pub fn of_session(index: u32, session: u64) -> Self {
        let profile = match session {
            0 => 0,
            // SAFETY: the value is only read, and hash map values stay valid for the invocation.
            _ => unsafe { SESSION_PROFILES.get(&session) }.map_or(0, |p| p.profile[(index & 1) as usize]),
        };
        let header = if profile < MAX_PROFILES {
            POLICY.get(index * MAX_PROFILES + profile).filter(|h| h.loaded != 0)
        } else {
            None
        };
        if header.is_none() {
            diag::miss(Miss::Profile, profile);
        }
        Slot { index, profile, header }
    }

    /// Index of this profile's tables among the per-profile entries of `POLICY` and `DFA_CLASSES`.
    #[inline(always)]
    fn table(self) -> u32 {
        self.index * MAX_PROFILES + self.profile
    }
}

#[derive(Clone, Copy)]
pub struct Verdict {
    pub effect: u8,
    pub rule: u32,
    pub flags: u16,
}

impl Verdict {
    /// Denied for a reason outside the policy.
    #[inline(always)]
    pub fn flagged(flags: u16) -> Self {
        Verdict { effect: effect::DENY, rule: NO_RULE, flags }
    }

    #[inline(always)]
    pub fn allow_unconditionally() -> Self {
        Verdict { effect: effect::ALLOW, rule: NO_RULE, flags: 0 }
    }

    /// The policy default, with `flags` recorded.
    #[inline(always)]
    pub fn by_default(slot: Slot, flags: u16) -> Self {
        match slot.header {
            Some(header) => Verdict { effect: header.default_effect, rule: NO_RULE, flags },
            None => Verdict::flagged(flags | flag::NO_POLICY),
        }
    }

    #[inline(always)]
    fn by_rule(slot: Slot, rule: u32) -> Self {
        if rule == NO_RULE {
            return Verdict::by_default(slot, 0);
        }
        let Some(header) = slot.header else {
            return Verdict::flagged(flag::NO_POLICY);
        };
        if rule >= MAX_RULES || header.rule_base >= MAX_RULES - rule {
            diag::miss(Miss::RuleTable, rule);
            return Verdict::flagged(flag::TABLE_BOUND);
        }
        match RULES.get(slot.index * MAX_RULES + header.rule_base + rule) {
            Some(entry) => Verdict { effect: entry.effect, rule, flags: 0 },
            None => {
                diag::miss(Miss::RuleTable, rule);
                Verdict::flagged(flag::TABLE_BOUND)
            }
        }
    }
}

/// A read-write open must pass both tables: a deny from either wins (read first), then an audit
/// (write first), else the write decision.
#[inline(always)]
pub fn combine_read_write(read: Verdict, write: Verdict) -> Verdict {
    if read.effect == effect::DENY {
        read
    } else if write.effect == effect::DENY || write.effect == effect::AUDIT {
        write
    } else if read.effect == effect::AUDIT {
        read
    } else {
        write
    }
}

/// State of one DFA walk, shared with the `bpf_loop` callback (which the verifier checks once,
/// instead of once per path byte).
#[repr(C)]
struct DfaWalk {
    path: *const [u8; PATH_MAX],
    classes: *const ByteClasses,
    /// Path bytes to walk (< PATH_MAX).
    len: u32,
    /// Row width (byte classes), 1..=256.
    width: u32,
    states: u32,
    dead: u32,
    /// Offset of this DFA's first row in the slot's transition region.
    trans_base: u32,
    /// Index of the slot's transition region in `DFA_TRANS`.
    trans_region: u32,
    /// The state reached; `states` (no state) once a bound was hit. A sentinel taken from the table
    /// rather than a flag set to a constant, which the verifier would keep apart from the flag unset
    /// and verify the callback again for.
    state: u32,
}

/// Path bytes walked per `bpf_loop` step: the callback's call and bookkeeping are paid once per
/// step instead of once per byte.
const BYTES_PER_STEP: u32 = 8;

/// `BYTES_PER_STEP` path bytes from `index * BYTES_PER_STEP`: `state = transitions[state][class(byte)]`
/// each. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn dfa_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `DfaWalk` on the caller's stack, alive for the whole bpf_loop call.
    let walk = unsafe { &mut *(ctx as *mut DfaWalk) };
    let first = (index as u32).wrapping_mul(BYTES_PER_STEP);
    for offset in 0..BYTES_PER_STEP {
        let i = first.wrapping_add(offset);
        if i >= walk.len || walk.state == walk.dead {
            return 1;
        }
        // SAFETY: both point into map values that outlive the program invocation.
        let byte = unsafe { (*walk.path)[(i as usize) & (PATH_MAX - 1)] };
        let byte_class = unsafe { (*walk.classes).0[byte as usize] } as u32;
        if byte_class >= walk.width {
            walk.state = walk.states;
            return 1;
        }
        let row = walk.trans_base + walk.state * walk.width + byte_class;
        if row >= MAX_DFA_TRANSITIONS {
            walk.state = walk.states;
            return 1;
        }
        match DFA_TRANS.get(walk.trans_region + row) {
            Some(&next) if next < walk.states => walk.state = next,
            _ => {
                walk.state = walk.states;
                return 1;
            }
        }
    }
    0
}

/// Walks the `class` DFA over the first `len` bytes of `path` (len < PATH_MAX, without NUL).
#[inline(always)]
pub fn by_path(slot: Slot, class: u32, path: &[u8; PATH_MAX], len: u32) -> Verdict {
    let Some(header) = slot.header else {
        return Verdict::flagged(flag::NO_POLICY);
    };
    let desc = &header.dfa[(class % dfa_class::COUNT) as usize];
    let Some(classes) = DFA_CLASSES.get(slot.table() * dfa_class::COUNT + class) else {
        return Verdict::flagged(flag::NO_POLICY);
    };
    if desc.start_state >= desc.state_count || desc.state_count > MAX_DFA_STATES || desc.class_count > 256 {
        return Verdict::flagged(flag::TABLE_BOUND);
    }
    let mut walk = DfaWalk {
        path,
        classes,
        len: len & (PATH_MAX as u32 - 1),
        width: desc.class_count,
        states: desc.state_count,
        dead: desc.dead_state,
        trans_base: desc.trans_base,
        trans_region: slot.index * MAX_DFA_TRANSITIONS,
        state: desc.start_state,
    };
    // SAFETY: `dfa_step` matches bpf_loop's callback signature and `walk` outlives the call.
    let steps = walk.len.div_ceil(BYTES_PER_STEP);
    let walked =
        unsafe { bpf_loop(steps, dfa_step as *mut c_void, &mut walk as *mut DfaWalk as *mut c_void, 0) };
    let state = walk.state;
    if walked < 0 || state >= desc.state_count {
        diag::miss(Miss::DfaBound, state);
        return Verdict::flagged(flag::TABLE_BOUND);
    }
    if state == desc.dead_state {
        return Verdict::by_default(slot, 0);
    }
    let accept_index = desc.accept_base + state;
    if accept_index >= MAX_DFA_STATES {
        return Verdict::flagged(flag::TABLE_BOUND);
    }
    match DFA_ACCEPT.get(slot.index * MAX_DFA_STATES + accept_index) {
        Some(&rule) => Verdict::by_rule(slot, rule),
        None => Verdict::flagged(flag::TABLE_BOUND),
    }
}

/// Longest-prefix match on (slot, protocol, address), then a bounded binary search over the
/// prefix's disjoint port intervals.
#[inline(always)]
pub fn by_address(slot: Slot, protocol: u8, addr: &[u8; 16], port: u16) -> Verdict {
    if slot.header.is_none() {
        return Verdict::flagged(flag::NO_POLICY);
    }
    let key = Key::new(
        NET_KEY_HEADER_BITS + 128,
        NetKeyData { slot: slot.index as u8, profile: slot.profile as u8, protocol, addr: *addr },
    );
    let Some(prefix) = NET_PREFIXES.get(&key) else {
        return Verdict::by_default(slot, 0);
    };
    let region = slot.index * MAX_PORT_INTERVALS;
    let (first, count) = (prefix.first, prefix.count);
    let (mut lo, mut hi) = (0u32, count);
    for _ in 0..PORT_SEARCH_STEPS {
        if lo >= hi {
            return Verdict::by_default(slot, 0);
        }
        let mid = lo + (hi - lo) / 2;
        let index = first + mid;
        if index >= MAX_PORT_INTERVALS {
            return Verdict::flagged(flag::TABLE_BOUND);
        }
        let Some(interval) = PORT_INTERVALS.get(region + index) else {
            return Verdict::flagged(flag::TABLE_BOUND);
        };
        if port < interval.lo {
            hi = mid;
        } else if port > interval.hi {
            lo = mid + 1;
        } else {
            return Verdict::by_rule(slot, interval.rule);
        }
    }
    Verdict::flagged(flag::TABLE_BOUND)
}

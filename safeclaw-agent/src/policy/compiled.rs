//! The policy as the kernel sees it (per-class path DFAs, network prefix/port tables, rule effects), with
//! reference lookups that walk those tables exactly as the eBPF programs do.
//!
//! This is the contract between the policy compiler (which builds a `CompiledPolicy`) and the kernel
//! loader (which copies it into maps). `CompiledPolicy::decide` is the oracle the property tests and the
//! VM agreement tests compare the kernel against.

use safeclaw_common::{
    dfa_class, PortInterval, MAX_DFA_STATES, MAX_DFA_TRANSITIONS, MAX_NET_PREFIXES, MAX_PORT_INTERVALS,
    MAX_PROFILES, MAX_RULES, NO_RULE, PATH_MAX, POLICY_SLOTS, PORT_SEARCH_STEPS,
};
use serde::{Deserialize, Serialize};

/// What a rule, or the default, does with a matching attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
    /// Allowed, and the audit entry is marked for review.
    Audit,
}

impl Effect {
    /// The value the kernel stores and reports (`safeclaw_common::effect`).
    pub fn to_wire(self) -> u8 {
        match self {
            Effect::Allow => safeclaw_common::effect::ALLOW,
            Effect::Deny => safeclaw_common::effect::DENY,
            Effect::Audit => safeclaw_common::effect::AUDIT,
        }
    }

    /// `None` for a value the kernel should never report.
    pub fn from_wire(value: u8) -> Option<Self> {
        match value {
            safeclaw_common::effect::ALLOW => Some(Effect::Allow),
            safeclaw_common::effect::DENY => Some(Effect::Deny),
            safeclaw_common::effect::AUDIT => Some(Effect::Audit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::Audit => "audit",
        }
    }
}

/// A byte-level DFA over a whole path: `accept[state]` after the last byte names the lowest-index
/// matching rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledDfa {
    /// Byte → class; every value is `< class_count`.
    pub classes: [u8; 256],
    /// Row width of `transitions`, 1..=256.
    pub class_count: u32,
    pub start: u32,
    /// A state from which no accepting state is reachable (the walk may stop there), if any.
    pub dead: Option<u32>,
    /// `transitions[state * class_count + class]` is the next state.
    pub transitions: Vec<u32>,
    /// `accept[state]`: rule index matched when the path ends in `state`, or `NO_RULE`.
    pub accept: Vec<u32>,
}

impl CompiledDfa {
    /// A DFA that matches nothing (one dead state).
    pub fn empty() -> Self {
        CompiledDfa {
            classes: [0; 256],
            class_count: 1,
            start: 0,
            dead: Some(0),
            transitions: vec![0],
            accept: vec![NO_RULE],
        }
    }

    pub fn state_count(&self) -> u32 {
        self.accept.len() as u32
    }

    /// Walks `path` as the kernel does. `Err` where the kernel would deny with `TABLE_BOUND`
    /// (a malformed table or a path longer than the kernel buffer).
    pub fn lookup(&self, path: &[u8]) -> Result<Option<u32>, TableBound> {
        if path.len() >= PATH_MAX {
            return Err(TableBound);
        }
        let states = self.state_count();
        let mut state = self.start;
        if state >= states {
            return Err(TableBound);
        }
        for &byte in path {
            if Some(state) == self.dead {
                break;
            }
            let class = u32::from(self.classes[byte as usize]);
            if class >= self.class_count {
                return Err(TableBound);
            }
            let index = state as usize * self.class_count as usize + class as usize;
            state = *self.transitions.get(index).ok_or(TableBound)?;
            if state >= states {
                return Err(TableBound);
            }
        }
        if Some(state) == self.dead {
            return Ok(None);
        }
        let rule = self.accept[state as usize];
        Ok((rule != NO_RULE).then_some(rule))
    }
}

/// The kernel would deny: a table index out of range or a bound hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableBound;

/// One network prefix: rules whose CIDR contains this prefix, flattened to disjoint port intervals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPrefix {
    /// 6 (TCP), 17 (UDP) or 0 (any other socket type).
    pub protocol: u8,
    /// IPv6 address; IPv4 rules use IPv4-mapped addresses (`::ffff:0:0/96` + the v4 prefix).
    pub addr: [u8; 16],
    /// 0..=128 bits of `addr`.
    pub prefix_len: u8,
    /// Sorted by `lo`, disjoint; `rule` is the first rule matching every port in `lo..=hi`.
    pub intervals: Vec<PortInterval>,
}

/// All network prefixes of a policy. The compiler inserts a `/0` prefix per protocol so that a
/// lookup always finds one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledNet {
    pub prefixes: Vec<NetPrefix>,
}

impl CompiledNet {
    /// Longest-prefix match on (protocol, addr), then a bounded binary search on the port, as the
    /// kernel does.
    pub fn lookup(&self, protocol: u8, addr: &[u8; 16], port: u16) -> Result<Option<u32>, TableBound> {
        let best = self
            .prefixes
            .iter()
            .filter(|p| p.protocol == protocol && prefix_contains(&p.addr, p.prefix_len, addr))
            .max_by_key(|p| p.prefix_len);
        let Some(prefix) = best else { return Ok(None) };
        let intervals = &prefix.intervals;
        let (mut lo, mut hi) = (0usize, intervals.len());
        for _ in 0..PORT_SEARCH_STEPS {
            if lo >= hi {
                return Ok(None);
            }
            let mid = lo + (hi - lo) / 2;
            let interval = intervals[mid];
            if port < interval.lo {
                hi = mid;
            } else if port > interval.hi {
                lo = mid + 1;
            } else {
                return Ok(Some(interval.rule));
            }
        }
        Err(TableBound)
    }
}

/// Whether the first `bits` bits of `prefix` and `addr` agree.
pub fn prefix_contains(prefix: &[u8; 16], bits: u8, addr: &[u8; 16]) -> bool {
    let bits = usize::from(bits.min(128));
    let (whole, rest) = (bits / 8, bits % 8);
    if prefix[..whole] != addr[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    prefix[whole] & mask == addr[whole] & mask
}

/// An attempt as the kernel presents it to the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `read`/`write` from the open's `f_mode`; both set for a read-write open.
    FileOpen {
        path: &'a [u8],
        read: bool,
        write: bool,
    },
    Exec {
        path: &'a [u8],
    },
    /// IPv4 as IPv4-mapped IPv6.
    ConnectInet {
        protocol: u8,
        addr: [u8; 16],
        port: u16,
    },
    /// Abstract socket names start with `@`.
    ConnectUnix {
        path: &'a [u8],
    },
    /// A socket family the policy does not describe: the default decides.
    ConnectOther,
    /// A TCP listen or UDP bind on a local address (IPv4 as IPv4-mapped IPv6); `protocol` is
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    ListenInet {
        protocol: u8,
        addr: [u8; 16],
        port: u16,
    },
}

/// A decision: the effect and the rule that made it (`None`: the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    pub rule: Option<u32>,
    /// The kernel would deny with `TABLE_BOUND`.
    pub bound_hit: bool,
}

/// Everything the kernel needs to decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    pub default_effect: Effect,
    /// Effect of rule `i`; rule ids index this.
    pub rule_effects: Vec<Effect>,
    /// Indexed by `safeclaw_common::dfa_class`.
    pub dfas: [CompiledDfa; dfa_class::COUNT as usize],
    pub net: CompiledNet,
}

impl CompiledPolicy {
    /// Decides `request` exactly as the eBPF programs do.
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        match request {
            Request::FileOpen { path, read, write } => {
                let read_decision = read.then(|| self.by_dfa(dfa_class::FILE_READ, path));
                let write_decision = write.then(|| self.by_dfa(dfa_class::FILE_WRITE, path));
                match (read_decision, write_decision) {
                    (Some(r), Some(w)) => combine_read_write(r, w),
                    (Some(r), None) => r,
                    (None, Some(w)) => w,
                    // An open for neither (O_PATH-like modes) is decided as a read.
                    (None, None) => self.by_dfa(dfa_class::FILE_READ, path),
                }
            }
            Request::Exec { path } => self.by_dfa(dfa_class::PROCESS_EXEC, path),
            Request::ConnectUnix { path } => self.by_dfa(dfa_class::UNIX_CONNECT, path),
            Request::ConnectInet { protocol, addr, port } => {
                self.by_rule(self.net.lookup(*protocol, addr, *port))
            }
            Request::ConnectOther => self.by_rule(Ok(None)),
            Request::ListenInet { protocol, addr, port } => {
                self.by_rule(self.net.lookup(safeclaw_common::LISTEN_PROTOCOL | *protocol, addr, *port))
            }
        }
    }

    fn by_dfa(&self, class: u32, path: &[u8]) -> Decision {
        self.by_rule(self.dfas[class as usize].lookup(path))
    }

    fn by_rule(&self, found: Result<Option<u32>, TableBound>) -> Decision {
        match found {
            Err(TableBound) => Decision { effect: Effect::Deny, rule: None, bound_hit: true },
            Ok(None) => Decision { effect: self.default_effect, rule: None, bound_hit: false },
            Ok(Some(rule)) => match self.rule_effects.get(rule as usize) {
                Some(&effect) => Decision { effect, rule: Some(rule), bound_hit: false },
                None => Decision { effect: Effect::Deny, rule: None, bound_hit: true },
            },
        }
    }
}

/// A read-write open must pass both tables: a deny from either wins (read first), then an audit
/// (write first), else the write decision.
pub(crate) fn combine_read_write(read: Decision, write: Decision) -> Decision {
    if read.effect == Effect::Deny {
        read
    } else if write.effect == Effect::Deny || write.effect == Effect::Audit {
        write
    } else if read.effect == Effect::Audit {
        read
    } else {
        write
    }
}

/// Checks that the profiles of one policy fit one slot together; the message names the limit.
pub fn check_slot_limits(profiles: &[&CompiledPolicy]) -> Result<(), String> {
    if profiles.is_empty() || profiles.len() > MAX_PROFILES as usize {
        return Err(format!(
            "{} profiles (the base and one per agent), the kernel holds 1 to {MAX_PROFILES}",
            profiles.len()
        ));
    }
    let total = |count: &dyn Fn(&CompiledPolicy) -> usize| profiles.iter().map(|p| count(p)).sum::<usize>();
    let rules = total(&|p| p.rule_effects.len());
    if rules > MAX_RULES as usize {
        return Err(format!("{rules} rules over all profiles, the kernel table holds {MAX_RULES}"));
    }
    let transitions = total(&|p| p.dfas.iter().map(|d| d.transitions.len()).sum());
    if transitions > MAX_DFA_TRANSITIONS as usize {
        return Err(format!(
            "the path automata of all profiles need {transitions} transitions, the kernel table holds {MAX_DFA_TRANSITIONS}"
        ));
    }
    let states = total(&|p| p.dfas.iter().map(|d| d.accept.len()).sum());
    if states > MAX_DFA_STATES as usize {
        return Err(format!(
            "the path automata of all profiles have {states} states, the kernel table holds {MAX_DFA_STATES}"
        ));
    }
    let intervals = total(&|p| p.net.prefixes.iter().map(|x| x.intervals.len()).sum());
    if intervals > MAX_PORT_INTERVALS as usize {
        return Err(format!(
            "{intervals} port intervals over all profiles, the kernel table holds {MAX_PORT_INTERVALS}"
        ));
    }
    // Both slots share the trie while a reload is in flight.
    let prefixes = total(&|p| p.net.prefixes.len());
    if prefixes > MAX_NET_PREFIXES as usize / POLICY_SLOTS as usize {
        return Err(format!(
            "{prefixes} network prefixes over all profiles, the kernel table holds {} per policy",
            MAX_NET_PREFIXES / POLICY_SLOTS
        ));
    }
    for dfa in profiles.iter().flat_map(|p| p.dfas.iter()) {
        let well_formed = dfa.class_count >= 1
            && dfa.class_count <= 256
            && dfa.transitions.len() == dfa.accept.len() * dfa.class_count as usize
            && dfa.classes.iter().all(|&c| u32::from(c) < dfa.class_count)
            && dfa.start < dfa.state_count();
        if !well_formed {
            return Err("malformed automaton (compiler bug)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dfa_matches_nothing() {
        assert_eq!(CompiledDfa::empty().lookup(b"/etc/passwd"), Ok(None));
    }

    #[test]
    fn path_at_kernel_buffer_size_hits_the_bound() {
        let long = vec![b'a'; PATH_MAX];
        assert_eq!(CompiledDfa::empty().lookup(&long), Err(TableBound));
    }

    #[test]
    fn prefix_contains_checks_partial_bytes() {
        let mut p = [0u8; 16];
        p[0] = 0b1010_0000;
        let mut a = p;
        a[0] = 0b1011_1111;
        assert!(prefix_contains(&p, 3, &a));
        assert!(!prefix_contains(&p, 4, &a));
        assert!(prefix_contains(&p, 0, &[0xff; 16]));
    }

    #[test]
    fn read_write_open_denied_when_either_side_denies() {
        let allow = Decision { effect: Effect::Allow, rule: Some(1), bound_hit: false };
        let deny = Decision { effect: Effect::Deny, rule: Some(2), bound_hit: false };
        assert_eq!(combine_read_write(allow, deny), deny);
        assert_eq!(combine_read_write(deny, allow), deny);
        assert_eq!(combine_read_write(allow, allow), allow);
    }
}

//! Writing a compiled policy into a policy slot, and the scope switch that makes a slot active.
//!
//! A reload fills the slot the programs are not reading, then flips `Scope::active_slot` in one map
//! update: no decision ever sees a half-written policy.
use aya::maps::{lpm_trie::Key, Array, LpmTrie, MapData};
use aya::Ebpf;
use safeclaw_common::{
    counter, dfa_class, ByteClasses, DfaDesc, NetKeyData, NetPrefixValue, PolicyHeader, RuleEntry, Scope,
    MAX_DFA_STATES, MAX_DFA_TRANSITIONS, MAX_NET_PREFIXES, MAX_PORT_INTERVALS, MAX_RULES,
    NET_KEY_HEADER_BITS, POLICY_SLOTS,
};

use super::KernelError;
use crate::policy::compiled::CompiledPolicy;

fn array<'a, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    map: &'static str,
) -> Result<Array<&'a mut MapData, V>, KernelError> {
    let data = ebpf.map_mut(map).ok_or(KernelError::Missing { what: "map", name: map })?;
    Array::try_from(data).map_err(|source| KernelError::Map { map, source })
}

fn set<V: aya::Pod>(
    array: &mut Array<&mut MapData, V>,
    map: &'static str,
    index: u32,
    value: V,
) -> Result<(), KernelError> {
    array.set(index, value, 0).map_err(|source| KernelError::Map { map, source })
}

/// Checks that `policy` fits one slot; the message names the limit.
pub fn check_limits(policy: &CompiledPolicy) -> Result<(), KernelError> {
    let rules = policy.rule_effects.len();
    if rules > MAX_RULES as usize {
        return Err(KernelError::Limit(format!("{rules} rules, the kernel table holds {MAX_RULES}")));
    }
    let transitions: usize = policy.dfas.iter().map(|d| d.transitions.len()).sum();
    if transitions > MAX_DFA_TRANSITIONS as usize {
        return Err(KernelError::Limit(format!(
            "the path automata need {transitions} transitions, the kernel table holds {MAX_DFA_TRANSITIONS}"
        )));
    }
    let states: usize = policy.dfas.iter().map(|d| d.accept.len()).sum();
    if states > MAX_DFA_STATES as usize {
        return Err(KernelError::Limit(format!(
            "the path automata have {states} states, the kernel table holds {MAX_DFA_STATES}"
        )));
    }
    let intervals: usize = policy.net.prefixes.iter().map(|p| p.intervals.len()).sum();
    if intervals > MAX_PORT_INTERVALS as usize {
        return Err(KernelError::Limit(format!(
            "{intervals} port intervals, the kernel table holds {MAX_PORT_INTERVALS}"
        )));
    }
    // Both slots share the trie while a reload is in flight.
    let prefixes = policy.net.prefixes.len();
    if prefixes > MAX_NET_PREFIXES as usize / POLICY_SLOTS as usize {
        return Err(KernelError::Limit(format!(
            "{prefixes} network prefixes, the kernel table holds {} per policy",
            MAX_NET_PREFIXES / POLICY_SLOTS
        )));
    }
    for dfa in &policy.dfas {
        let well_formed = dfa.class_count >= 1
            && dfa.class_count <= 256
            && dfa.transitions.len() == dfa.accept.len() * dfa.class_count as usize
            && dfa.classes.iter().all(|&c| u32::from(c) < dfa.class_count)
            && dfa.start < dfa.state_count();
        if !well_formed {
            return Err(KernelError::Limit("malformed automaton (compiler bug)".into()));
        }
    }
    Ok(())
}

/// Writes `policy` into `slot` (which must not be the active one) and marks it loaded.
pub fn write_policy(
    ebpf: &mut Ebpf,
    slot: u32,
    generation: u32,
    policy: &CompiledPolicy,
) -> Result<(), KernelError> {
    check_limits(policy)?;
    let mut header = PolicyHeader {
        default_effect: policy.default_effect.to_wire(),
        generation,
        ..PolicyHeader::default()
    };
    {
        let mut headers = array::<PolicyHeader>(ebpf, "POLICY")?;
        set(&mut headers, "POLICY", slot, PolicyHeader::default())?;
    }
    {
        let mut rules = array::<RuleEntry>(ebpf, "RULES")?;
        for (i, effect) in policy.rule_effects.iter().enumerate() {
            let entry = RuleEntry { effect: effect.to_wire(), _pad: [0; 3] };
            set(&mut rules, "RULES", slot * MAX_RULES + i as u32, entry)?;
        }
    }
    {
        let (mut trans_base, mut accept_base) = (0u32, 0u32);
        for (class, dfa) in policy.dfas.iter().enumerate() {
            header.dfa[class] = DfaDesc {
                trans_base,
                accept_base,
                class_count: dfa.class_count,
                state_count: dfa.state_count(),
                start_state: dfa.start,
                dead_state: dfa.dead.unwrap_or(u32::MAX),
            };
            trans_base += dfa.transitions.len() as u32;
            accept_base += dfa.state_count();
        }
        let mut classes = array::<ByteClasses>(ebpf, "DFA_CLASSES")?;
        for (class, dfa) in policy.dfas.iter().enumerate() {
            set(
                &mut classes,
                "DFA_CLASSES",
                slot * dfa_class::COUNT + class as u32,
                ByteClasses(dfa.classes),
            )?;
        }
        let mut trans = array::<u32>(ebpf, "DFA_TRANS")?;
        for (class, dfa) in policy.dfas.iter().enumerate() {
            let base = slot * MAX_DFA_TRANSITIONS + header.dfa[class].trans_base;
            for (i, &next) in dfa.transitions.iter().enumerate() {
                set(&mut trans, "DFA_TRANS", base + i as u32, next)?;
            }
        }
        let mut accept = array::<u32>(ebpf, "DFA_ACCEPT")?;
        for (class, dfa) in policy.dfas.iter().enumerate() {
            let base = slot * MAX_DFA_STATES + header.dfa[class].accept_base;
            for (i, &rule) in dfa.accept.iter().enumerate() {
                set(&mut accept, "DFA_ACCEPT", base + i as u32, rule)?;
            }
        }
    }
    write_network(ebpf, slot, policy)?;
    header.loaded = 1;
    let mut headers = array::<PolicyHeader>(ebpf, "POLICY")?;
    set(&mut headers, "POLICY", slot, header)
}

fn write_network(ebpf: &mut Ebpf, slot: u32, policy: &CompiledPolicy) -> Result<(), KernelError> {
    {
        let mut intervals = array::<safeclaw_common::PortInterval>(ebpf, "PORT_INTERVALS")?;
        let mut next = 0u32;
        for prefix in &policy.net.prefixes {
            for interval in &prefix.intervals {
                set(&mut intervals, "PORT_INTERVALS", slot * MAX_PORT_INTERVALS + next, *interval)?;
                next += 1;
            }
        }
    }
    let map = "NET_PREFIXES";
    let data = ebpf.map_mut(map).ok_or(KernelError::Missing { what: "map", name: map })?;
    let mut trie: LpmTrie<&mut MapData, NetKeyData, NetPrefixValue> =
        LpmTrie::try_from(data).map_err(|source| KernelError::Map { map, source })?;
    let stale: Vec<Key<NetKeyData>> =
        trie.keys().filter_map(Result::ok).filter(|key| key.data().slot as u32 == slot).collect();
    for key in &stale {
        trie.remove(key).map_err(|source| KernelError::Map { map, source })?;
    }
    let mut first = 0u32;
    for prefix in &policy.net.prefixes {
        let key = Key::new(
            NET_KEY_HEADER_BITS + u32::from(prefix.prefix_len.min(128)),
            NetKeyData { slot: slot as u8, protocol: prefix.protocol, addr: prefix.addr },
        );
        let value = NetPrefixValue { first, count: prefix.intervals.len() as u32 };
        trie.insert(&key, value, 0).map_err(|source| KernelError::Map { map, source })?;
        first += prefix.intervals.len() as u32;
    }
    Ok(())
}

/// Reads the current scope (all zero before the first `set_scope`).
pub fn scope(ebpf: &mut Ebpf) -> Result<Scope, KernelError> {
    array::<Scope>(ebpf, "SCOPE")?.get(&0, 0).map_err(|source| KernelError::Map { map: "SCOPE", source })
}

/// Replaces the scope in one map update (the atomic switch of slot, lockdown or cgroup).
pub fn set_scope(ebpf: &mut Ebpf, scope: Scope) -> Result<(), KernelError> {
    let mut array = array::<Scope>(ebpf, "SCOPE")?;
    set(&mut array, "SCOPE", 0, scope)
}

/// Events the ring buffer had no room for (each of them denied).
pub fn ringbuf_full_count(ebpf: &mut Ebpf) -> Result<u64, KernelError> {
    array::<u64>(ebpf, "COUNTERS")?
        .get(&counter::RINGBUF_FULL, 0)
        .map_err(|source| KernelError::Map { map: "COUNTERS", source })
}

/// The generation stamped on a slot's policy (0 if none was loaded).
pub fn generation(ebpf: &mut Ebpf, slot: u32) -> Result<u32, KernelError> {
    let header = array::<PolicyHeader>(ebpf, "POLICY")?
        .get(&slot, 0)
        .map_err(|source| KernelError::Map { map: "POLICY", source })?;
    Ok(header.generation)
}

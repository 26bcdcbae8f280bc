//! Writing a compiled policy into a policy slot, and the scope switch that makes a slot active.
//!
//! A reload fills the slot the programs are not reading, then flips `Scope::active_slot` in one map
//! update: no decision ever sees a half-written policy.
use aya::maps::{lpm_trie::Key, Array, HashMap, MapData};
use aya::Ebpf;
use safeclaw_common::{
    counter, dfa_class, ByteClasses, DfaDesc, NetKeyData, NetPrefixValue, PolicyHeader, RepeatEntry,
    RuleEntry, Scope, SessionProfiles, MAX_DFA_STATES, MAX_DFA_TRANSITIONS, MAX_PORT_INTERVALS, MAX_PROFILES,
    MAX_RULES, NET_KEY_HEADER_BITS,
};

use super::batch::{self, write_run};
use super::mapped;
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

/// Checks that the profiles of one policy fit one slot together; the message names the limit.
pub fn check_limits(profiles: &[&CompiledPolicy]) -> Result<(), KernelError> {
    crate::policy::compiled::check_slot_limits(profiles).map_err(KernelError::Limit)
}

/// Where the next profile's tables start in a slot's regions.
#[derive(Default)]
struct RegionCursor {
    rules: u32,
    transitions: u32,
    states: u32,
    intervals: u32,
}

/// Writes the profiles of one policy (index = profile number, 0 the base) into `slot`, which must not
/// be the active one, and marks each loaded. Profile numbers beyond them are marked not loaded.
pub fn write_policy(
    ebpf: &mut Ebpf,
    slot: u32,
    generation: u32,
    profiles: &[&CompiledPolicy],
) -> Result<(), KernelError> {
    check_limits(profiles)?;
    {
        let mut headers = array::<PolicyHeader>(ebpf, "POLICY")?;
        for profile in 0..MAX_PROFILES {
            set(&mut headers, "POLICY", slot * MAX_PROFILES + profile, PolicyHeader::default())?;
        }
    }
    let mut cursor = RegionCursor::default();
    let mut stale_prefixes = true;
    for (profile, policy) in (0u32..).zip(profiles) {
        let header = write_profile(ebpf, slot, profile, generation, policy, &mut cursor)?;
        write_network(ebpf, slot, profile, policy, &mut cursor, std::mem::take(&mut stale_prefixes))?;
        let mut headers = array::<PolicyHeader>(ebpf, "POLICY")?;
        set(&mut headers, "POLICY", slot * MAX_PROFILES + profile, header)?;
    }
    Ok(())
}

/// Writes one profile's rules and automata at the cursor; returns its (loaded) header.
fn write_profile(
    ebpf: &mut Ebpf,
    slot: u32,
    profile: u32,
    generation: u32,
    policy: &CompiledPolicy,
    cursor: &mut RegionCursor,
) -> Result<PolicyHeader, KernelError> {
    let mut header = PolicyHeader {
        default_effect: policy.default_effect.to_wire(),
        generation,
        rule_base: cursor.rules,
        loaded: 1,
        ..PolicyHeader::default()
    };
    let rules: Vec<RuleEntry> =
        policy.rule_effects.iter().map(|e| RuleEntry { effect: e.to_wire(), _pad: [0; 3] }).collect();
    write_run(ebpf, "RULES", slot * MAX_RULES + cursor.rules, &rules)?;
    cursor.rules += rules.len() as u32;
    for (class, dfa) in policy.dfas.iter().enumerate() {
        header.dfa[class] = DfaDesc {
            trans_base: cursor.transitions,
            accept_base: cursor.states,
            class_count: dfa.class_count,
            state_count: dfa.state_count(),
            start_state: dfa.start,
            dead_state: dfa.dead.unwrap_or(u32::MAX),
        };
        cursor.transitions += dfa.transitions.len() as u32;
        cursor.states += dfa.state_count();
    }
    let mut classes = array::<ByteClasses>(ebpf, "DFA_CLASSES")?;
    for (class, dfa) in (0u32..).zip(&policy.dfas) {
        let index = (slot * MAX_PROFILES + profile) * dfa_class::COUNT + class;
        set(&mut classes, "DFA_CLASSES", index, ByteClasses(dfa.classes))?;
    }
    for (class, dfa) in policy.dfas.iter().enumerate() {
        let base = slot * MAX_DFA_TRANSITIONS + header.dfa[class].trans_base;
        mapped::write_run(ebpf, "DFA_TRANS", base, &dfa.transitions)?;
        let base = slot * MAX_DFA_STATES + header.dfa[class].accept_base;
        mapped::write_run(ebpf, "DFA_ACCEPT", base, &dfa.accept)?;
    }
    Ok(header)
}

/// Writes one profile's port intervals at the cursor and its prefixes into the trie; the first call
/// for a slot also removes the slot's previous prefixes.
fn write_network(
    ebpf: &mut Ebpf,
    slot: u32,
    profile: u32,
    policy: &CompiledPolicy,
    cursor: &mut RegionCursor,
    remove_stale: bool,
) -> Result<(), KernelError> {
    let first_interval = cursor.intervals;
    let intervals: Vec<safeclaw_common::PortInterval> =
        policy.net.prefixes.iter().flat_map(|p| p.intervals.iter().copied()).collect();
    write_run(ebpf, "PORT_INTERVALS", slot * MAX_PORT_INTERVALS + cursor.intervals, &intervals)?;
    cursor.intervals += intervals.len() as u32;
    let map = "NET_PREFIXES";
    if remove_stale {
        let stale: Vec<Key<NetKeyData>> = batch::trie_keys::<NetKeyData, NetPrefixValue>(ebpf, map)?
            .into_iter()
            .filter(|key| u32::from(key.data().slot) == slot)
            .collect();
        batch::trie_remove::<_, NetPrefixValue>(ebpf, map, &stale)?;
    }
    let mut first = first_interval;
    let (keys, values): (Vec<Key<NetKeyData>>, Vec<NetPrefixValue>) = policy
        .net
        .prefixes
        .iter()
        .map(|prefix| {
            let key = Key::new(
                NET_KEY_HEADER_BITS + u32::from(prefix.prefix_len.min(128)),
                NetKeyData {
                    slot: slot as u8,
                    profile: profile as u8,
                    protocol: prefix.protocol,
                    addr: prefix.addr,
                },
            );
            let value = NetPrefixValue { first, count: prefix.intervals.len() as u32 };
            first += prefix.intervals.len() as u32;
            (key, value)
        })
        .unzip();
    batch::trie_insert(ebpf, map, &keys, &values)
}

/// Records which profile (per slot) decides for a registered session's cgroup. Fails when the
/// kernel table is full: the launcher then refuses to start the agent.
pub fn set_session_profiles(
    ebpf: &mut Ebpf,
    session: u64,
    profiles: SessionProfiles,
) -> Result<(), KernelError> {
    session_map(ebpf)?
        .insert(session, profiles, 0)
        .map_err(|source| KernelError::Map { map: "SESSION_PROFILES", source })
}

/// Forgets an ended session (its tasks, if any remain, fall back to the base profile).
pub fn remove_session_profiles(ebpf: &mut Ebpf, session: u64) -> Result<(), KernelError> {
    match session_map(ebpf)?.remove(&session) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(KernelError::Map { map: "SESSION_PROFILES", source }),
    }
}

/// Forgets every session: a starting daemon knows none (launchers end their agents when the daemon
/// they registered with goes away).
pub fn clear_session_profiles(ebpf: &mut Ebpf) -> Result<(), KernelError> {
    let mut map = session_map(ebpf)?;
    let sessions: Vec<u64> = map.keys().filter_map(Result::ok).collect();
    for session in sessions {
        match map.remove(&session) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(source) => return Err(KernelError::Map { map: "SESSION_PROFILES", source }),
        }
    }
    Ok(())
}

fn session_map(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, u64, SessionProfiles>, KernelError> {
    let map = "SESSION_PROFILES";
    let data = ebpf.map_mut(map).ok_or(KernelError::Missing { what: "map", name: map })?;
    HashMap::try_from(data).map_err(|source| KernelError::Map { map, source })
}

/// The scope that puts `agents` and everything below it under the programs of `epoch`, deciding by
/// slot 0, recording every attempt on its own (no repeat window).
pub fn enforcing_scope(agents: &crate::cgroup::Cgroup, epoch: u32) -> Scope {
    Scope {
        cgroup_id: agents.id,
        level: agents.level,
        active_slot: 0,
        lockdown: 0,
        enabled: 1,
        epoch,
        repeat_window_ms: 0,
    }
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

/// The kernel sequence number the next event will get: every number below it was issued.
pub fn next_kernel_seq(ebpf: &mut Ebpf) -> Result<u64, KernelError> {
    array::<u64>(ebpf, "COUNTERS")?
        .get(&counter::NEXT_SEQ, 0)
        .map_err(|source| KernelError::Map { map: "COUNTERS", source })
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
        .get(&(slot * MAX_PROFILES), 0)
        .map_err(|source| KernelError::Map { map: "POLICY", source })?;
    Ok(header.generation)
}

fn repeats_map(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, u64, RepeatEntry>, KernelError> {
    let map = "REPEATS";
    let data = ebpf.map_mut(map).ok_or(KernelError::Missing { what: "map", name: map })?;
    HashMap::try_from(data).map_err(|source| KernelError::Map { map, source })
}

/// The closed windows of `REPEATS`: those with repeats to record, with their attempt, and the digests
/// of those without any, which only have to be forgotten. Kept apart so that a burst of distinct
/// attempts, which fills the map with windows that saw no repeat, does not copy every key out.
#[derive(Debug, Default)]
pub struct ClosedWindows {
    pub repeated: Vec<(u64, RepeatEntry)>,
    pub unrepeated: Vec<u64>,
}

/// The `REPEATS` entries the kernel no longer adds to: those whose window closed at least `margin_ns`
/// before `now_ns` (boot time), or all of them with `all` (once the programs are detached). The
/// kernel only adds to an entry during the window its key names, which ends less than `window_ns`
/// after the entry's first attempt, and never replaces one, so a count read here is final. Entries
/// whose first attempt (its kernel sequence) is not yet `recorded_through` are left for later, so that
/// repeats follow their attempt in the log.
pub fn closed_repeats(
    ebpf: &mut Ebpf,
    now_ns: u64,
    window_ns: u64,
    margin_ns: u64,
    recorded_through: Option<u64>,
    all: bool,
) -> Result<ClosedWindows, KernelError> {
    let repeats = repeats_map(ebpf)?;
    let closed_before = now_ns.saturating_sub(window_ns.saturating_add(margin_ns));
    let mut closed = ClosedWindows::default();
    for entry in repeats.iter() {
        let (digest, entry) = entry.map_err(|source| KernelError::Map { map: "REPEATS", source })?;
        let count = entry.count;
        let recorded = recorded_through.is_some_and(|through| count.kernel_seq <= through);
        if all || (recorded && count.first_ns < closed_before) {
            if count.repeats == 0 {
                closed.unrepeated.push(digest);
            } else {
                closed.repeated.push((digest, entry));
            }
        }
    }
    Ok(closed)
}

/// Forgets the `REPEATS` entry under `digest` once its count is durably recorded.
pub fn remove_repeat(ebpf: &mut Ebpf, digest: u64) -> Result<(), KernelError> {
    match repeats_map(ebpf)?.remove(&digest) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(KernelError::Map { map: "REPEATS", source }),
    }
}

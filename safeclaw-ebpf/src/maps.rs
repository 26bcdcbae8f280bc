//! The maps shared with the daemon; sizes come from safeclaw-common so both sides agree.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{lpm_trie::LpmTrie, Array, HashMap, PerCpuArray, RingBuf},
};
use safeclaw_common::{
    counter, dfa_class, ByteClasses, NetKeyData, NetPrefixValue, PolicyHeader, PortInterval, RepeatEntry,
    RuleEntry, Scope, SessionProfiles, EVENTS_RING_BYTES, MAX_DFA_STATES, MAX_DFA_TRANSITIONS,
    MAX_NET_PREFIXES, MAX_PORT_INTERVALS, MAX_PROFILES, MAX_REPEATS, MAX_RULES, MAX_SESSIONS, POLICY_SLOTS,
};

use crate::emit::Scratch;
use crate::memo::OpenMemo;
use crate::scratch::SCRATCH_SLOTS;
use crate::walk::WalkBuffer;

#[map(name = "SCOPE")]
pub static SCOPE: Array<Scope> = Array::with_max_entries(1, 0);

#[map(name = "POLICY")]
pub static POLICY: Array<PolicyHeader> = Array::with_max_entries(POLICY_SLOTS * MAX_PROFILES, 0);

/// Session cgroup id → profile per slot, written by the daemon before it acknowledges a launcher.
#[map(name = "SESSION_PROFILES")]
pub static SESSION_PROFILES: HashMap<u64, SessionProfiles> = HashMap::with_max_entries(MAX_SESSIONS, 0);

#[map(name = "RULES")]
pub static RULES: Array<RuleEntry> = Array::with_max_entries(POLICY_SLOTS * MAX_RULES, 0);

#[map(name = "DFA_CLASSES")]
pub static DFA_CLASSES: Array<ByteClasses> =
    Array::with_max_entries(POLICY_SLOTS * MAX_PROFILES * dfa_class::COUNT, 0);

/// Mmapable (both automata tables): the daemon writes a reload's transitions as a memory copy into
/// the idle slot instead of one kernel update per entry.
#[map(name = "DFA_TRANS")]
pub static DFA_TRANS: Array<u32> =
    Array::with_max_entries(POLICY_SLOTS * MAX_DFA_TRANSITIONS, BPF_F_MMAPABLE);

#[map(name = "DFA_ACCEPT")]
pub static DFA_ACCEPT: Array<u32> = Array::with_max_entries(POLICY_SLOTS * MAX_DFA_STATES, BPF_F_MMAPABLE);

#[map(name = "NET_PREFIXES")]
pub static NET_PREFIXES: LpmTrie<NetKeyData, NetPrefixValue> = LpmTrie::with_max_entries(MAX_NET_PREFIXES, 0);

#[map(name = "PORT_INTERVALS")]
pub static PORT_INTERVALS: Array<PortInterval> =
    Array::with_max_entries(POLICY_SLOTS * MAX_PORT_INTERVALS, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: Array<u64> = Array::with_max_entries(counter::COUNT, 0);

/// Which of this CPU's scratch slots are taken, a bit each (`scratch.rs`).
#[map(name = "SCRATCH_CLAIMS")]
pub static SCRATCH_CLAIMS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Decisions under construction, one per scratch slot of each CPU (`emit::Scratch`).
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

/// Buffers of the dentry walk (`walk.rs`), one per scratch slot.
#[map(name = "WALK_SCRATCH")]
pub static WALK_SCRATCH: PerCpuArray<WalkBuffer> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

/// Repeats of recently recorded allowed opens (see `RepeatEntry`), keyed by the digest of their
/// `RepeatKey` (`repeats.rs`): created and counted by the kernel, recorded and deleted by the daemon.
#[map(name = "REPEATS")]
pub static REPEATS: HashMap<u64, RepeatEntry> = HashMap::with_max_entries(MAX_REPEATS, 0);

/// The entry of the attempt being decided, per scratch slot (too large for the stack): its key, then
/// the value `REPEATS` gets if it is recorded.
#[map(name = "REPEAT_SCRATCH")]
pub static REPEAT_SCRATCH: PerCpuArray<RepeatEntry> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

/// The last counted open or connect and its decision's inputs, per CPU (`memo.rs`).
#[map(name = "OPEN_MEMO")]
pub static OPEN_MEMO: PerCpuArray<OpenMemo> = PerCpuArray::with_max_entries(1, 0);

/// How many times a dentry got an inode, in any task (`memo::dentry_instantiated`).
#[map(name = "DENTRY_EPOCH")]
pub static DENTRY_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

//! The per-CPU memo of the last counted open: the `RepeatKey` a fully decided open was counted
//! under and where (its `REPEATS` digest and first attempt's kernel sequence), beside the inputs of
//! its decision that the key does not hold, so that an identical open is counted again without
//! walking the policy or hashing the key (docs/threat-model.md, "Counted repeats").
use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use aya_ebpf::helpers::generated;
use safeclaw_common::{Event, EventHeader, RepeatKey, COMM_LEN, REPEAT_PATH_MAX};

use crate::maps::OPEN_MEMO;

/// What an open's decision rests on besides the fields of its `RepeatKey`: the object the path
/// names (`file->f_path`), and the open flags that change how it is decided.
#[derive(Clone, Copy)]
pub struct OpenInputs {
    pub vfsmount: u64,
    pub dentry: u64,
    pub open_flags: u32,
}

/// The value of `OPEN_MEMO`. `version` is 0 until a key is remembered, odd while one is being written,
/// and changes with every write: a reader that saw one even version before and after it read the
/// memo read one remembered open (a task preempted in a program may find the memo rewritten by
/// another task's program on the same CPU).
#[repr(C)]
pub struct OpenMemo {
    key: RepeatKey,
    /// The `REPEATS` entry `key` is counted in: its digest and its first attempt's kernel sequence.
    digest: u64,
    kernel_seq: u64,
    vfsmount: u64,
    dentry: u64,
    window_ns: u64,
    active_slot: u32,
    open_flags: u32,
    version: u32,
    _pad: u32,
}

// The path comparison reads both paths a word at a time, the names four bytes at a time.
const _: () = assert!(offset_of!(Event, path) % 8 == 0 && offset_of!(RepeatKey, path) % 8 == 0);
const _: () = assert!(offset_of!(Event, header) % 8 == 0 && offset_of!(EventHeader, comm) % 4 == 0);
const _: () = assert!(offset_of!(RepeatKey, comm) % 4 == 0 && COMM_LEN == 16);
const _: () = assert!(REPEAT_PATH_MAX % 8 == 0);

/// Where the memo's key is counted (digest, kernel sequence), if the open in `event` (window `window`
/// of `window_ns`, decided in slot `active_slot` on `inputs`) is identical to the remembered one in
/// everything its decision reads.
/// Only the key's own decision fields (`rule_id`, `effect`, `flags`) are not compared: they are the
/// outcome; and its `net`, which is all zero for every open.
#[inline(always)]
pub fn matching(
    event: &Event,
    inputs: &OpenInputs,
    active_slot: u32,
    window_ns: u64,
    window: u32,
) -> Option<(u64, u64)> {
    let memo = OPEN_MEMO.get_ptr(0)?;
    // SAFETY: the per-CPU map value, valid for this invocation.
    let memo = unsafe { &*memo };
    let key = &memo.key;
    let header = &event.header;
    let len = event.path_len;
    // SAFETY: a field of the per-CPU map value; volatile so that it is read here, before the rest.
    let version = unsafe { read_volatile(&memo.version) };
    compiler_fence(Ordering::SeqCst);
    if version == 0
        || version & 1 != 0
        || memo.vfsmount != inputs.vfsmount
        || memo.dentry != inputs.dentry
        || memo.open_flags != inputs.open_flags
        || memo.active_slot != active_slot
        || memo.window_ns != window_ns
        || key.window != window
        || key.path_len != len
        || key.pid != header.pid
        || key.tgid != header.tgid
        || key.uid != header.uid
        || key.gid != header.gid
        || key.cgroup_id != header.cgroup_id
        || key.session_cgroup_id != header.session_cgroup_id
        || key.profile != header.profile
        || key.policy_generation != header.policy_generation
        || key.file_mode != header.file_mode
        || key.action != header.action
        || len as usize >= REPEAT_PATH_MAX
    {
        return None;
    }
    let ours = header.comm.as_ptr() as *const u32;
    let theirs = key.comm.as_ptr() as *const u32;
    for word in 0..COMM_LEN / 4 {
        // SAFETY: within the COMM_LEN bytes of both names, 4-byte aligned (asserted above).
        if unsafe { *ours.add(word) != *theirs.add(word) } {
            return None;
        }
    }
    let ours = event.path.as_ptr() as *const u64;
    let theirs = key.path.as_ptr() as *const u64;
    for word in 0..REPEAT_PATH_MAX / 8 {
        let start = (word * 8) as u32;
        if start >= len {
            break;
        }
        // SAFETY: word < REPEAT_PATH_MAX / 8: within both buffers, 8-byte aligned (asserted above).
        let mut bytes = unsafe { *ours.add(word) };
        let left = len - start;
        if left < 8 {
            // The event's bytes past the path are d_path's NUL and leftovers; the key's are zero.
            bytes &= (1u64 << (8 * left)) - 1;
        }
        // SAFETY: as above.
        if bytes != unsafe { *theirs.add(word) } {
            return None;
        }
    }
    let found = (memo.digest, memo.kernel_seq);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above, read after all the rest.
    (unsafe { read_volatile(&memo.version) } == version).then_some(found)
}

/// Remembers `key`, the key of an open decided in full on `inputs` that was just counted or recorded
/// in the `REPEATS` entry under `digest` whose first attempt has `kernel_seq`.
#[inline(always)]
pub fn remember(
    key: &RepeatKey,
    digest: u64,
    kernel_seq: u64,
    inputs: &OpenInputs,
    active_slot: u32,
    window_ns: u64,
) {
    let Some(memo) = OPEN_MEMO.get_ptr_mut(0) else { return };
    // SAFETY: the per-CPU map value, only used by this program invocation.
    let memo = unsafe { &mut *memo };
    let version = memo.version;
    // SAFETY: a field of the per-CPU map value; volatile and fenced so that it is odd before anything
    // else is written.
    unsafe { write_volatile(&mut memo.version, version | 1) };
    compiler_fence(Ordering::SeqCst);
    // SAFETY: copies one RepeatKey between two map values (a helper: LLVM's inline copy of a whole key
    // would be a memcpy call the BPF target lacks).
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            &mut memo.key as *mut RepeatKey as *mut c_void,
            size_of::<RepeatKey>() as u32,
            key as *const RepeatKey as *const c_void,
        )
    };
    if copied < 0 {
        return;
    }
    memo.digest = digest;
    memo.kernel_seq = kernel_seq;
    memo.vfsmount = inputs.vfsmount;
    memo.dentry = inputs.dentry;
    memo.open_flags = inputs.open_flags;
    memo.active_slot = active_slot;
    memo.window_ns = window_ns;
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above; even again, and never 0, after everything else is written.
    unsafe { write_volatile(&mut memo.version, (version | 1).wrapping_add(1).max(2)) };
}

//! Counted repeats (`REPEATS`): the key of an allowed attempt, its 64-bit digest (the map's key), and
//! counting an attempt under an entry only when that entry is the attempt's own: compared in full, or
//! by the recorded first attempt's kernel sequence, which no other entry ever has.
use core::ffi::c_void;
use core::mem::{offset_of, size_of};

use aya_ebpf::helpers::generated;
use safeclaw_common::{Event, RepeatCount, RepeatEntry, RepeatKey, REPEAT_PATH_MAX};

use crate::atomic::fetch_add;
use crate::emit::masked;
use crate::maps::{REPEATS, REPEAT_SCRATCH};

/// 8-byte words of a key before its path, and in all.
const HEAD_WORDS: usize = offset_of!(RepeatKey, path) / 8;
const KEY_WORDS: usize = size_of::<RepeatKey>() / 8;

// The digest and the comparison read keys a word at a time.
const _: () = assert!(offset_of!(RepeatKey, path) % 8 == 0 && size_of::<RepeatKey>() % 8 == 0);
const _: () = assert!(KEY_WORDS == HEAD_WORDS + REPEAT_PATH_MAX / 8);

/// The attempt in `event`, for the window of `window_ns` its time falls in, written in the entry
/// scratch of slot `slot` (zero past its path), if its path is short enough to count.
#[inline(always)]
pub fn entry_of(event: &Event, window_ns: u64, slot: u32) -> Option<&'static mut RepeatEntry> {
    let len = event.path_len;
    if len as usize >= REPEAT_PATH_MAX {
        return None;
    }
    let entry = REPEAT_SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: this decision's slot of the per-CPU map (`scratch.rs`).
    let entry = unsafe { &mut *entry };
    let key = &mut entry.key;
    let words = key.path.as_mut_ptr() as *mut u64;
    for word in 0..REPEAT_PATH_MAX / 8 {
        // SAFETY: within the REPEAT_PATH_MAX bytes of `path` (8-byte aligned in the key); volatile so
        // that LLVM keeps plain stores rather than a memset call the BPF target lacks.
        unsafe { core::ptr::write_volatile(words.add(word), 0) };
    }
    // SAFETY: `len` < REPEAT_PATH_MAX bytes from the event's path into the key's path.
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            key.path.as_mut_ptr() as *mut c_void,
            masked::<{ REPEAT_PATH_MAX as u64 - 1 }>(len),
            event.path.as_ptr() as *const c_void,
        )
    };
    if copied < 0 {
        return None;
    }
    let header = &event.header;
    key.cgroup_id = header.cgroup_id;
    key.session_cgroup_id = header.session_cgroup_id;
    key.pid = header.pid;
    key.tgid = header.tgid;
    key.uid = header.uid;
    key.gid = header.gid;
    key.rule_id = header.rule_id;
    key.profile = header.profile;
    key.policy_generation = header.policy_generation;
    key.file_mode = header.file_mode;
    key.path_len = len;
    key.action = header.action;
    key.effect = header.effect;
    key.flags = header.flags;
    key.comm = header.comm;
    key.window = (header.boot_ns / window_ns) as u32;
    key._pad = 0;
    key.net = event.net;
    Some(entry)
}

/// Calls `each` on every 8-byte word of `key` in use: the fields before the path (which include
/// `path_len`), then the path's words up to `path_len` (the rest are zero in every key). Stops early
/// when `each` returns false; returns whether it never did.
#[inline(always)]
fn words_in_use(key: &RepeatKey, mut each: impl FnMut(usize) -> bool) -> bool {
    for word in 0..HEAD_WORDS {
        if !each(word) {
            return false;
        }
    }
    let len = key.path_len;
    for word in 0..REPEAT_PATH_MAX / 8 {
        if (word * 8) as u32 >= len {
            break;
        }
        if !each(HEAD_WORDS + word) {
            return false;
        }
    }
    true
}

/// Word `word` (< KEY_WORDS, which `words_in_use` guarantees) of `key`.
#[inline(always)]
fn word_of(key: &RepeatKey, word: usize) -> u64 {
    // SAFETY: word < KEY_WORDS: within the key, 8-byte aligned (asserted above).
    unsafe { *(key as *const RepeatKey as *const u64).add(word) }
}

/// A 64-bit digest of the words of `key` in use (multiply and xor-shift per word). Not a secret
/// hash: every lookup by an attempt compares the key in full, so a collision costs only a count.
#[inline(always)]
pub fn digest(key: &RepeatKey) -> u64 {
    let mut hash: u64 = 0x243f_6a88_85a3_08d3;
    words_in_use(key, |word| {
        hash = (hash ^ word_of(key, word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        hash ^= hash >> 29;
        true
    });
    hash
}

/// Whether two keys name the same attempt (their words in use are equal; both are zero after them).
#[inline(always)]
fn same_attempt(ours: &RepeatKey, theirs: &RepeatKey) -> bool {
    words_in_use(ours, |word| word_of(ours, word) == word_of(theirs, word))
}

/// Counts the attempt that started at `boot_ns` as a repeat of `key` (digest `digest`) if an attempt
/// with that very key was recorded in this window. The recorded attempt's kernel sequence if so.
#[inline(always)]
pub fn counted(digest: u64, key: &RepeatKey, boot_ns: u64) -> Option<u64> {
    let entry = REPEATS.get_ptr_mut(&digest)?;
    // SAFETY: a hash map value, valid for this invocation.
    let entry = unsafe { &mut *entry };
    if !same_attempt(key, &entry.key) {
        return None;
    }
    count(&mut entry.count, boot_ns);
    Some(entry.count.kernel_seq)
}

/// Counts the attempt that started at `boot_ns` as a repeat of the entry under `digest` if it is still
/// the one whose first attempt had `kernel_seq`: the entry the memo remembered, so the same key.
#[inline(always)]
pub fn counted_by_sequence(digest: u64, kernel_seq: u64, boot_ns: u64) -> bool {
    let Some(entry) = REPEATS.get_ptr_mut(&digest) else { return false };
    // SAFETY: a hash map value, valid for this invocation; `count.kernel_seq` never changes after
    // the entry is inserted.
    let entry = unsafe { &mut *entry };
    if entry.count.kernel_seq != kernel_seq {
        return false;
    }
    count(&mut entry.count, boot_ns);
    true
}

/// Creates the entry of an attempt just recorded with `first` (under its key's `digest`). Only ever
/// created here, never replaced: an entry the daemon has not recorded yet keeps its count. False if
/// one is present (this key's or another's with the same digest) or the map is full: later repeats
/// are then recorded one by one.
#[inline(always)]
pub fn create(digest: u64, entry: &mut RepeatEntry, first: RepeatCount) -> bool {
    entry.count = first;
    REPEATS.insert(&digest, entry, aya_ebpf::bindings::BPF_NOEXIST as u64).is_ok()
}

#[inline(always)]
fn count(count: &mut RepeatCount, boot_ns: u64) {
    // SAFETY: a field of a hash map value; other CPUs may update it concurrently, hence the atomic
    // add (`last_ns` is only informative).
    unsafe { fetch_add(core::ptr::addr_of_mut!(count.repeats), 1) };
    count.last_ns = boot_ns;
}

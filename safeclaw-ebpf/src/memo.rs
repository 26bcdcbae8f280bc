//! The per-CPU memo of the last counted open or connect: the `RepeatKey` a fully decided attempt was
//! counted under and where (its `REPEATS` digest and first attempt's kernel sequence), beside what an
//! open's path string and its decision rest on that the key does not hold, so that an identical
//! attempt is counted again without resolving its path, deciding it or hashing the key
//! (docs/threat-model.md, "Counted repeats").
use core::ffi::c_void;
use core::mem::{offset_of, size_of};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use aya_ebpf::helpers::generated;
use safeclaw_common::{Event, EventHeader, NetDetail, RepeatKey, COMM_LEN};

use crate::atomic::{fetch_add, fetch_or};
use crate::kernel;
use crate::maps::{DENTRY_EPOCH, OPEN_MEMO};

/// What an open's path string and decision rest on besides the fields of its `RepeatKey`, read
/// before its path is resolved. `d_path` makes the string of the file's dentry and mount, up to the
/// task's root, from the names and parents of dentries (changed only by a rename, under
/// `rename_lock`) and the mount tree (changed only under `mount_lock`); a dentry freed and reused at
/// the same address gets an inode again first (`DENTRY_EPOCH`), and so does a dentry whose inode
/// changes (its inode is not compared for that reason). Whether the path still reaches the
/// file (an unlink, another namespace) is checked on every open, memo or not.
#[derive(Clone, Copy)]
pub struct OpenInputs {
    pub vfsmount: u64,
    pub dentry: u64,
    root_mnt: u64,
    root_dentry: u64,
    dentry_epoch: u64,
    renames: u32,
    mounts: u32,
    open_flags: u32,
}

impl OpenInputs {
    /// A connect's: its decision rests on nothing its key does not hold (the destination is the key's
    /// `net`, compared by `matching`). Usable, and no open's (an open's action differs).
    pub const CONNECT: OpenInputs = OpenInputs {
        vfsmount: 0,
        dentry: 0,
        root_mnt: 0,
        root_dentry: 0,
        dentry_epoch: 0,
        renames: 0,
        mounts: 0,
        open_flags: 0,
    };

    /// Inputs no open has: not usable (an odd sequence count).
    pub const UNUSABLE: OpenInputs = OpenInputs {
        vfsmount: 0,
        dentry: 0,
        root_mnt: 0,
        root_dentry: 0,
        dentry_epoch: 0,
        renames: 1,
        mounts: 1,
        open_flags: 0,
    };

    /// The inputs of `file`'s open with `open_flags`; not usable while a rename or a mount change is
    /// under way, or when a counter cannot be read: such an open is neither memoized nor served by
    /// the memo.
    #[inline(always)]
    pub fn read(file: *const u8, open_flags: u32) -> Self {
        let (dentry_epoch, epoch_read) = match DENTRY_EPOCH.get_ptr(0) {
            // SAFETY: an array map value; volatile so that it is read here, before the path is resolved.
            Some(epoch) => (unsafe { read_volatile(epoch) }, 0),
            None => (0, 1),
        };
        let (renames, mounts) = kernel::path_sequences();
        let (dentry, vfsmount) = kernel::file_path_parts(file);
        let (root_mnt, root_dentry) = kernel::task_root();
        OpenInputs {
            vfsmount,
            dentry,
            root_mnt,
            root_dentry,
            dentry_epoch,
            renames: renames | epoch_read,
            mounts,
            open_flags,
        }
    }

    /// Whether these inputs may be remembered or matched: both sequence counts even. Read as they are
    /// in memory, so that LLVM does not fold the test into copies of the code after it.
    #[inline(always)]
    pub fn usable(&self) -> bool {
        // SAFETY: reads of two fields of a live value.
        unsafe { (read_volatile(&self.renames) | read_volatile(&self.mounts)) & 1 == 0 }
    }

    /// Makes these inputs unusable: the path does not reach the object the usual way.
    #[inline(always)]
    pub fn forget(&mut self) {
        self.renames |= 1;
    }

    #[inline(always)]
    fn same(&self, other: &OpenInputs) -> bool {
        self.vfsmount == other.vfsmount
            && self.dentry == other.dentry
            && self.root_mnt == other.root_mnt
            && self.root_dentry == other.root_dentry
            && self.dentry_epoch == other.dentry_epoch
            && self.renames == other.renames
            && self.mounts == other.mounts
            && self.open_flags == other.open_flags
    }
}

/// A dentry gets an inode (`d_instantiate` and its kin, for every task): advances `DENTRY_EPOCH`, so
/// that no memo made before matches a dentry that may since have been freed and reused.
#[inline(always)]
pub fn dentry_instantiated() {
    if let Some(epoch) = DENTRY_EPOCH.get_ptr_mut(0) {
        // SAFETY: an 8-byte aligned array map value; atomic, since every CPU advances it.
        unsafe { fetch_add(epoch, 1) };
    }
}

/// The value of `OPEN_MEMO`. `version` is 0 until a key is remembered, odd while one is being written,
/// and changes with every write: a reader that saw one even version before and after it read the
/// memo read one remembered open (a task preempted in a program may find the memo rewritten by
/// another task's program on the same CPU). The writer makes it odd with an atomic OR and writes only
/// if it was even: a second task that runs while the first is preempted mid-write leaves the memo
/// alone, so two writes never interleave.
#[repr(C)]
pub struct OpenMemo {
    key: RepeatKey,
    /// The `REPEATS` entry `key` is counted in: its digest and its first attempt's kernel sequence.
    digest: u64,
    kernel_seq: u64,
    inputs: OpenInputs,
    window_ns: u64,
    active_slot: u32,
    version: u64,
}

// The names are compared four bytes at a time, the destinations eight.
const _: () = assert!(offset_of!(EventHeader, comm) % 4 == 0);
const _: () = assert!(offset_of!(RepeatKey, comm) % 4 == 0 && COMM_LEN == 16);
const _: () = assert!(offset_of!(Event, net) % 8 == 0 && offset_of!(RepeatKey, net) % 8 == 0);
const _: () = assert!(size_of::<NetDetail>() == 24);

/// Where the memo's key is counted (digest, kernel sequence), if the attempt by the task in `header`
/// to `net` (window `window` of `window_ns`, decided in slot `active_slot` on `inputs`) is identical to
/// the remembered one in everything its path string and its decision rest on. The key's path is not
/// compared: an open's is not resolved, and equal `inputs` make the same string (`OpenInputs`); a
/// connect has none. Nor are the key's own decision fields (`rule_id`, `effect`, `flags`): they are
/// the outcome. `net` is the destination of a connect, all zero for every open.
#[inline(always)]
pub fn matching(
    header: &EventHeader,
    net: &NetDetail,
    inputs: &OpenInputs,
    active_slot: u32,
    window_ns: u64,
    window: u32,
) -> Option<(u64, u64)> {
    let memo = OPEN_MEMO.get_ptr(0)?;
    // SAFETY: the per-CPU map value, valid for this invocation.
    let memo = unsafe { &*memo };
    let key = &memo.key;
    // SAFETY: a field of the per-CPU map value; volatile so that it is read here, before the rest.
    let version = unsafe { read_volatile(&memo.version) };
    compiler_fence(Ordering::SeqCst);
    if version == 0
        || version & 1 != 0
        || !inputs.usable()
        || !memo.inputs.same(inputs)
        || memo.active_slot != active_slot
        || memo.window_ns != window_ns
        || key.window != window
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
    let ours = net as *const NetDetail as *const u64;
    let theirs = &key.net as *const NetDetail as *const u64;
    for word in 0..size_of::<NetDetail>() / 8 {
        // SAFETY: within the 24 bytes of both destinations, 8-byte aligned (asserted above).
        if unsafe { *ours.add(word) != *theirs.add(word) } {
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
    // SAFETY: the per-CPU map value; written below only while its version is odd by this write.
    let memo = unsafe { &mut *memo };
    // SAFETY: an 8-byte aligned field of the per-CPU map value; the atomic OR makes it odd before
    // anything else is written, and says whether another write (preempted) already had.
    let version = unsafe { fetch_or(&mut memo.version, 1) };
    if version & 1 != 0 {
        return;
    }
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
    // A key not copied is not remembered: no policy slot is `u32::MAX`, so the memo matches nothing.
    memo.active_slot = if copied < 0 { u32::MAX } else { active_slot };
    memo.digest = digest;
    memo.kernel_seq = kernel_seq;
    memo.inputs = *inputs;
    memo.window_ns = window_ns;
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above; even again, and never 0, after everything else is written.
    unsafe { write_volatile(&mut memo.version, version.wrapping_add(2).max(2)) };
}

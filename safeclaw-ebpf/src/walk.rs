//! A dentry's path, for hooks where `bpf_d_path` is not allowed: a bounded walk up the dentry tree
//! and across mounts to the task's root, as `d_path` does. A walk that hits its bound, meets an
//! unreadable or oversized name, or outgrows PATH_MAX yields nothing (the caller denies); it never
//! yields a partial path.
use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use safeclaw_common::PATH_MAX;

use crate::diag::{self, Miss};
use crate::emit::masked;
use crate::kernel::{offset, OFFSETS};
use crate::maps::WALK_SCRATCH;

/// Steps (one per path component or mount crossing). A path that fits PATH_MAX has at most
/// PATH_MAX / 2 components ("/x" each), so this bound only cuts off what could not fit anyway, plus
/// room for mount crossings.
const MAX_WALK_STEPS: u32 = PATH_MAX as u32;
/// The kernel's NAME_MAX: no component is longer.
const NAME_MAX: u32 = 255;

/// The per-CPU buffer a path is built in, right-aligned in `bytes[pos..PATH_MAX]`. `bytes` is twice
/// PATH_MAX so that a bounded start plus a bounded name length always stays inside it. `pos` lives in
/// the map, not on the stack: read back as an unknown value each step, it lets the verifier see the
/// loop body converge instead of following every possible position.
#[repr(C)]
pub struct WalkBuffer {
    pos: u32,
    /// `WALKING`, `DONE` or `FAILED`: kept here for the same reason as `pos` (a flag on the stack set
    /// to a constant would be a state of its own, with the callback verified again for it).
    status: u32,
    bytes: [u8; 2 * PATH_MAX],
}

const WALKING: u32 = 0;
/// The task's root, or the top of the mount tree, was reached.
const DONE: u32 = 1;
const FAILED: u32 = 2;

/// State of one walk, shared with the `bpf_loop` callback. Kernel pointers are kept as integers: they
/// are only ever passed to probe reads.
#[repr(C)]
struct Walk {
    buf: *mut WalkBuffer,
    dentry: u64,
    /// The `struct mount` that `dentry` is in.
    mount: u64,
    root_dentry: u64,
    root_vfsmount: u64,
}

#[inline(always)]
fn read_u64(address: u64) -> Option<u64> {
    // SAFETY: a probe read of a kernel address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel(address as *const u64) }.ok()
}

/// One step: stop at the root, cross a mount at its root, or prepend one component.
#[inline(never)]
extern "C" fn walk_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Walk` on the caller's stack, alive for the whole bpf_loop call.
    let walk = unsafe { &mut *(ctx as *mut Walk) };
    // SAFETY: this decision's slot of the per-CPU map (`scratch.rs`).
    let buf = unsafe { &mut *walk.buf };
    let vfsmount = walk.mount + offset(&OFFSETS.mount_mnt) as u64;
    if walk.dentry == walk.root_dentry && vfsmount == walk.root_vfsmount {
        buf.status = DONE;
        return 1;
    }
    let (Some(mnt_root), Some(parent)) = (
        read_u64(vfsmount + offset(&OFFSETS.vfsmount_mnt_root) as u64),
        read_u64(walk.dentry + offset(&OFFSETS.dentry_d_parent) as u64),
    ) else {
        buf.status = FAILED;
        return 1;
    };
    if walk.dentry == mnt_root || walk.dentry == parent {
        let Some(mnt_parent) = read_u64(walk.mount + offset(&OFFSETS.mount_mnt_parent) as u64) else {
            buf.status = FAILED;
            return 1;
        };
        if mnt_parent == walk.mount {
            // The top of the mount tree without meeting the task's root: d_path's answer too.
            buf.status = DONE;
            return 1;
        }
        let Some(mountpoint) = read_u64(walk.mount + offset(&OFFSETS.mount_mnt_mountpoint) as u64) else {
            buf.status = FAILED;
            return 1;
        };
        walk.dentry = mountpoint;
        walk.mount = mnt_parent;
        return 0;
    }
    let d_name = walk.dentry + offset(&OFFSETS.dentry_d_name) as u64;
    // qstr: the u64 `hash_len` first, the length in its upper half.
    let (Some(hash_len), Some(name)) =
        (read_u64(d_name), read_u64(d_name + offset(&OFFSETS.qstr_name) as u64))
    else {
        buf.status = FAILED;
        return 1;
    };
    let len = (hash_len >> 32) as u32;
    let pos = buf.pos;
    if len == 0 || len > NAME_MAX || pos > PATH_MAX as u32 || pos < len + 1 {
        buf.status = FAILED;
        return 1;
    }
    let start = pos - len;
    let at = masked::<{ PATH_MAX as u64 - 1 }>(start) as usize;
    // SAFETY: `at` < PATH_MAX and the length <= NAME_MAX, inside the 2 * PATH_MAX buffer.
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            buf.bytes.as_mut_ptr().add(at) as *mut c_void,
            masked::<{ NAME_MAX as u64 }>(len),
            name as *const c_void,
        )
    };
    if copied < 0 {
        buf.status = FAILED;
        return 1;
    }
    buf.pos = start - 1;
    // SAFETY: index masked below PATH_MAX (a raw write: an indexing bounds check would leave a
    // panic path the verifier rejects).
    unsafe { *buf.bytes.as_mut_ptr().add(masked::<{ PATH_MAX as u64 - 1 }>(start - 1) as usize) = b'/' };
    walk.dentry = parent;
    0
}

/// Writes the path of `dentry` (in the mount of `vfsmount`), as the current task would see it, into
/// `out`, in the walk buffer of scratch slot `slot`; its length, or `None` if the walk could not
/// resolve it completely.
#[inline(always)]
pub fn dentry_path(dentry: u64, vfsmount: u64, out: &mut [u8; PATH_MAX], slot: u32) -> Option<u32> {
    let buf = WALK_SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: this decision's slot of the per-CPU map (`scratch.rs`).
    unsafe { ((*buf).pos, (*buf).status) = (PATH_MAX as u32, WALKING) };
    // SAFETY: a plain helper; the task pointer is only used for probe reads.
    let task = unsafe { generated::bpf_get_current_task() };
    let fs = read_u64(task + offset(&OFFSETS.task_struct_fs) as u64)?;
    let root = fs + offset(&OFFSETS.fs_struct_root) as u64;
    let mut walk = Walk {
        buf,
        dentry,
        mount: vfsmount - offset(&OFFSETS.mount_mnt) as u64,
        root_dentry: read_u64(root + offset(&OFFSETS.path_dentry) as u64)?,
        root_vfsmount: read_u64(root + offset(&OFFSETS.path_mnt) as u64)?,
    };
    // SAFETY: `walk_step` matches bpf_loop's callback signature and `walk` outlives the call.
    let walked = unsafe {
        generated::bpf_loop(
            MAX_WALK_STEPS,
            walk_step as *mut c_void,
            &mut walk as *mut Walk as *mut c_void,
            0,
        )
    };
    // SAFETY: this decision's slot of the per-CPU map (`scratch.rs`).
    let buf = unsafe { &mut *buf };
    if walked < 0 || buf.status != DONE {
        diag::miss(Miss::WalkBound, walked as u32);
        return None;
    }
    if buf.pos == PATH_MAX as u32 {
        // The root itself.
        buf.pos -= 1;
        buf.bytes[PATH_MAX - 1] = b'/';
    }
    // A path of PATH_MAX bytes or more does not fit, as for d_path (which counts the NUL).
    let pos = buf.pos;
    if pos == 0 || pos >= PATH_MAX as u32 {
        return None;
    }
    let len = PATH_MAX as u32 - pos;
    // SAFETY: copying `len` < PATH_MAX bytes from the scratch buffer into `out` (PATH_MAX bytes).
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            out.as_mut_ptr() as *mut c_void,
            masked::<{ PATH_MAX as u64 - 1 }>(len),
            buf.bytes.as_ptr().add(masked::<{ PATH_MAX as u64 - 1 }>(pos) as usize) as *const c_void,
        )
    };
    (copied == 0).then_some(len & (PATH_MAX as u32 - 1))
}

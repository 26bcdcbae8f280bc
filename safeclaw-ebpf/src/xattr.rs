//! Extended attributes set or removed (`inode_setxattr`, `inode_removexattr`, and POSIX ACLs'
//! `inode_set_acl`, `inode_remove_acl` since 6.2), decided by the write rules on the file's path;
//! `security.*` and `trusted.*`, and anything on cgroupfs or bpffs, are refused whatever the rules.
//! These hooks get a dentry without its mount, so the path is named through the mounts of the dentry's
//! filesystem (`sb->s_mounts`) that belong to the task's mount namespace and whose root is above the
//! dentry: each is a name the task can reach the file by, and each is decided (a deny wins). No such
//! mount, more than the bounds below, or anything unreadable denies.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated},
    macros::lsm,
    programs::LsmContext,
};
use safeclaw_common::{action, effect, flag, Scope, PATH_MAX};

use crate::decide::Verdict;
use crate::emit::{self, Pending};
use crate::kernel::{offset, OFFSETS};
use crate::{kernel, reach, scope};

/// Mounts of one filesystem looked at; a longer list is not searched to its end, so it denies.
const MAX_FS_MOUNTS: u32 = 256;
/// Mounts of one filesystem in the task's namespace that can name the file; more deny.
const MAX_NAMES: usize = 4;
// `mount_step` and `decide_name` index the names by a constant per case.
const _: () = assert!(MAX_NAMES == 4);
/// Steps up from the dentry to its filesystem's root: as many as the walk's (`walk.rs`).
const MAX_DEPTH: u32 = PATH_MAX as u32;

#[inline(always)]
fn read_u64(address: u64) -> Option<u64> {
    // SAFETY: a probe read of a kernel address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel(address as *const u64) }.ok()
}

/// The mounts of a filesystem in the task's mount namespace, found by `mount_step`.
#[repr(C)]
struct MountSearch {
    /// `&sb->s_mounts`, where the list ends.
    head: u64,
    /// The list node to look at next (`mount.mnt_instance`).
    node: u64,
    task_ns: u64,
    found: u32,
    done: u32,
    failed: u32,
    _pad: u32,
    vfsmounts: [u64; MAX_NAMES],
    roots: [u64; MAX_NAMES],
}

/// One mount of the list: kept if it is in the task's namespace. Returns 1 to stop.
#[inline(never)]
extern "C" fn mount_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `MountSearch` on the caller's stack, alive for the whole bpf_loop call.
    let search = unsafe { &mut *(ctx as *mut MountSearch) };
    if search.node == search.head {
        search.done = 1;
        return 1;
    }
    let mount = search.node.wrapping_sub(offset(&OFFSETS.mount_mnt_instance) as u64);
    let (Some(ns), Some(next)) =
        (read_u64(mount + offset(&OFFSETS.mount_mnt_ns) as u64), read_u64(search.node))
    else {
        search.failed = 1;
        return 1;
    };
    if ns == search.task_ns {
        let vfsmount = mount + offset(&OFFSETS.mount_mnt) as u64;
        let Some(root) = read_u64(vfsmount + offset(&OFFSETS.vfsmount_mnt_root) as u64) else {
            search.failed = 1;
            return 1;
        };
        // Constant indices: the verifier sees each store's place.
        match search.found {
            0 => (search.vfsmounts[0], search.roots[0]) = (vfsmount, root),
            1 => (search.vfsmounts[1], search.roots[1]) = (vfsmount, root),
            2 => (search.vfsmounts[2], search.roots[2]) = (vfsmount, root),
            3 => (search.vfsmounts[3], search.roots[3]) = (vfsmount, root),
            _ => {
                search.failed = 1;
                return 1;
            }
        }
        search.found += 1;
    }
    search.node = next;
    0
}

/// Which of the found mounts' roots are above a dentry, found by `ancestor_step`.
#[repr(C)]
struct AncestorSearch {
    dentry: u64,
    roots: [u64; MAX_NAMES],
    /// Bit `i`: `roots[i]` is the dentry or one of its ancestors.
    above: u32,
    done: u32,
    failed: u32,
    _pad: u32,
}

/// One step up the dentry tree, noting the roots met. Returns 1 to stop.
#[inline(never)]
extern "C" fn ancestor_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `AncestorSearch` on the caller's stack, alive for the whole bpf_loop call.
    let search = unsafe { &mut *(ctx as *mut AncestorSearch) };
    let dentry = search.dentry;
    for (i, root) in search.roots.iter().enumerate() {
        if *root == dentry && dentry != 0 {
            search.above |= 1 << i;
        }
    }
    let Some(parent) = read_u64(dentry + offset(&OFFSETS.dentry_d_parent) as u64) else {
        search.failed = 1;
        return 1;
    };
    if parent == dentry {
        // The filesystem's root (or a disconnected dentry's own).
        search.done = 1;
        return 1;
    }
    search.dentry = parent;
    0
}

/// The mounts (`vfsmount` addresses, 0 for none) by which the current task can name `dentry`:
/// in its mount namespace, with their root at or above the dentry. `None` on doubt: a list or tree
/// longer than its bound, more names than `MAX_NAMES`, or anything unreadable.
#[inline(always)]
fn names_of(dentry: u64) -> Option<[u64; MAX_NAMES]> {
    // SAFETY: a plain helper; the task pointer is only used for probe reads.
    let task = unsafe { generated::bpf_get_current_task() };
    let nsproxy = read_u64(task + offset(&OFFSETS.task_struct_nsproxy) as u64)?;
    let task_ns = read_u64(nsproxy + offset(&OFFSETS.nsproxy_mnt_ns) as u64)?;
    let sb = read_u64(dentry + offset(&OFFSETS.dentry_d_sb) as u64)?;
    let head = sb + offset(&OFFSETS.super_block_s_mounts) as u64;
    if task_ns == 0 {
        return None;
    }
    let mut mounts = MountSearch {
        head,
        node: read_u64(head)?,
        task_ns,
        found: 0,
        done: 0,
        failed: 0,
        _pad: 0,
        vfsmounts: [0; MAX_NAMES],
        roots: [0; MAX_NAMES],
    };
    // SAFETY: `mount_step` matches bpf_loop's callback signature and `mounts` outlives the call.
    let looped = unsafe {
        generated::bpf_loop(MAX_FS_MOUNTS, mount_step as *mut c_void, &mut mounts as *mut _ as *mut c_void, 0)
    };
    if looped < 0 || mounts.failed != 0 || mounts.done == 0 {
        return None;
    }
    let mut ancestors = AncestorSearch { dentry, roots: mounts.roots, above: 0, done: 0, failed: 0, _pad: 0 };
    // SAFETY: as above, for `ancestor_step` and `ancestors`.
    let looped = unsafe {
        generated::bpf_loop(
            MAX_DEPTH,
            ancestor_step as *mut c_void,
            &mut ancestors as *mut _ as *mut c_void,
            0,
        )
    };
    if looped < 0 || ancestors.failed != 0 || ancestors.done == 0 {
        return None;
    }
    let mut names = [0; MAX_NAMES];
    for (i, name) in names.iter_mut().enumerate() {
        if ancestors.above & (1 << i) != 0 {
            *name = mounts.vfsmounts[i];
        }
    }
    Some(names)
}

/// Whether the attribute `name` (a kernel string) is in the `security.` or `trusted.` namespace;
/// an unreadable name counts as one.
#[inline(always)]
fn protected_namespace(name: u64) -> bool {
    let mut head = [0u64; 2];
    // SAFETY: at most 16 bytes into `head`; `name` is a kernel address the helper reads safely.
    let copied = unsafe {
        generated::bpf_probe_read_kernel_str(head.as_mut_ptr() as *mut c_void, 16, name as *const c_void)
    };
    if copied <= 0 {
        return true;
    }
    let first = u64::from_le_bytes(*b"security");
    let trusted = u64::from_le_bytes(*b"trusted.");
    head[0] == trusted || (head[0] == first && head[1] & 0xff == u64::from(b'.'))
}

/// The names of a dentry decided one by one, shared with the `bpf_loop` callback: as a callback the
/// walk and the automaton under it are verified once, not once per name (on 6.12 that halves the
/// verification of each attribute hook, about 2 s of every daemon start; docs/benchmarks.md).
#[repr(C)]
struct NamesDecision {
    pending: *mut Pending,
    dentry: u64,
    names: [u64; MAX_NAMES],
    /// The last name's verdict, or the first that denies.
    verdict: Verdict,
}

/// Decides the write on name `index`, if there is one. Returns 1 to stop: at a denial.
#[inline(never)]
extern "C" fn decide_name(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `NamesDecision` on the caller's stack, alive for the whole bpf_loop call.
    let decision = unsafe { &mut *(ctx as *mut NamesDecision) };
    // Constant indices: the verifier sees each load's place.
    let vfsmount = match index {
        0 => decision.names[0],
        1 => decision.names[1],
        2 => decision.names[2],
        3 => decision.names[3],
        _ => return 1,
    };
    if vfsmount == 0 {
        return 0;
    }
    // SAFETY: the caller's `Pending`, alive for the whole bpf_loop call and used by no one else
    // meanwhile.
    let pending = unsafe { &mut *decision.pending };
    let dentry = decision.dentry;
    decision.verdict = match crate::resolve_dentry(pending, dentry as *const u8, vfsmount) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some(len) => reach::decide_walked(pending, action::FILE_WRITE, dentry, vfsmount, len, true),
    };
    i64::from(decision.verdict.effect == effect::DENY)
}

/// Decides and records `act` on the attribute `name` of `dentry` by the write rules on each of its
/// names (the entry carries the one that decided: the first that denies, else the last).
#[inline(always)]
fn decide(scope: &'static Scope, previous: i32, act: u8, dentry: u64, name: u64) -> i32 {
    if let Some(refused) = crate::refuse_protected_fs(scope, dentry) {
        return refused;
    }
    // `previous` is set just before `finish` (`Pending::set_previous`).
    let Some(mut pending) = Pending::start(scope, 0) else { return emit::DENIED };
    pending.set_file_action(act, 0, 0);
    let mut verdict = match names_of(dentry) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        // On no mount of the task's namespace: no path of the task leads to it.
        Some(names) if names.iter().all(|&vfsmount| vfsmount == 0) => {
            Verdict::flagged(flag::PATH_UNREACHABLE)
        }
        Some(names) => {
            let mut decision = NamesDecision {
                pending: &mut pending,
                dentry,
                names,
                verdict: Verdict::flagged(flag::PATH_UNRESOLVED),
            };
            // SAFETY: `decide_name` matches bpf_loop's callback signature; `decision` and the
            // `pending` it points to outlive the call.
            let looped = unsafe {
                generated::bpf_loop(
                    MAX_NAMES as u32,
                    decide_name as *mut c_void,
                    &mut decision as *mut _ as *mut c_void,
                    0,
                )
            };
            if looped < 0 {
                Verdict::flagged(flag::PATH_UNRESOLVED)
            } else {
                decision.verdict
            }
        }
    };
    if protected_namespace(name) {
        verdict = Verdict::flagged(verdict.flags | flag::PROTECTED_XATTR);
    }
    let path_len = pending.path_len();
    if pending.capture_name(path_len, name).is_none() {
        verdict = Verdict::flagged(verdict.flags | flag::PATH_UNRESOLVED);
    }
    pending.set_previous(previous);
    pending.finish(verdict)
}

/// `inode_setxattr(idmap or mnt_userns, struct dentry *dentry, const char *name, const void *value,
/// size_t size, int flags)`: setxattr, lsetxattr, fsetxattr, and a file system's own calls on the
/// agent's behalf. The value is never read. During an open the only attributes set are the kernel's
/// own (overlayfs copies a file up to its upper layer, with the file's attributes, on a mount of no
/// namespace): that open was decided by `file_open` as a write.
#[lsm(hook = "inode_setxattr")]
pub fn inode_setxattr(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(6);
    let Some(scope) = scope::current() else { return previous };
    if kernel::in_open() {
        return previous;
    }
    decide(scope, previous, action::FILE_SETXATTR, ctx.arg(1), ctx.arg(2))
}

/// `inode_removexattr(idmap or mnt_userns, struct dentry *dentry, const char *name)`.
#[lsm(hook = "inode_removexattr")]
pub fn inode_removexattr(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    if kernel::in_open() {
        return previous;
    }
    decide(scope, previous, action::FILE_REMOVEXATTR, ctx.arg(1), ctx.arg(2))
}

/// `inode_set_acl(struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name, struct
/// posix_acl *kacl)`: since 6.2 setting `system.posix_acl_*` comes here instead of `inode_setxattr`
/// (the loader attaches it only where the kernel has it). Recorded as setting that attribute.
#[lsm(hook = "inode_set_acl")]
pub fn inode_set_acl(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    let Some(scope) = scope::current() else { return previous };
    if kernel::in_open() {
        return previous;
    }
    decide(scope, previous, action::FILE_SETXATTR, ctx.arg(1), ctx.arg(2))
}

/// `inode_remove_acl(struct mnt_idmap *idmap, struct dentry *dentry, const char *acl_name)`: as
/// `inode_set_acl`, for removing one.
#[lsm(hook = "inode_remove_acl")]
pub fn inode_remove_acl(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    if kernel::in_open() {
        return previous;
    }
    decide(scope, previous, action::FILE_REMOVEXATTR, ctx.arg(1), ctx.arg(2))
}

//! Kernel structure access. Offsets differ between kernels (`file.f_path` is 16 on 6.1, 64 on 6.12),
//! so they live in a read-only global the loader fills from the running kernel's BTF; the verifier
//! sees them as constants and checks every direct access against BTF, so a wrong offset fails the
//! load instead of reading the wrong field.
use core::ptr::read_volatile;

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated};
use safeclaw_common::{EventHeader, KernelOffsets, PathSequences, Scope, COMM_LEN};

pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;
/// The open of a binary by execve (or of its ELF loader by the kernel), in `f_mode` where the kernel
/// sets it there.
pub const FMODE_EXEC: u32 = 0x20;
/// `__FMODE_EXEC`: the same bit as an open flag, which exec's own open puts in `f_flags` (6.1 and 6.12
/// leave it out of `f_mode` at `file_open`). open(2) strips it from user flags, so only exec sets it.
pub const O_FMODE_EXEC: u32 = 0x20;
/// open(2) flags as they stay in `file->f_flags` until `file_open` has run.
pub const O_TRUNC: u32 = 0o1000;
/// `__O_TMPFILE | O_DIRECTORY`: both are set for an O_TMPFILE open.
pub const O_TMPFILE: u32 = 0o20_200_000;
pub const CGROUP_SUPER_MAGIC: u32 = 0x0027_e0eb;
pub const CGROUP2_SUPER_MAGIC: u32 = 0x6367_7270;
pub const BPF_FS_MAGIC: u32 = 0xcafe_4a11;
/// `CLONE_INTO_CGROUP` (linux/sched.h): clone3 starts the child in the cgroup of `clone_args.cgroup`.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Socket families whose local addresses `sock_local_address` reads.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// renameat2 flag: the two names swap.
pub const RENAME_EXCHANGE: u32 = 1 << 1;
/// Deepest cgroup level the target-task check follows (the kernel's own limit is far higher, but
/// agent cgroups sit a few levels down; deeper targets count as outside the scope).
const MAX_CGROUP_LEVEL: u32 = 64;

#[no_mangle]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    file_f_path: 0,
    file_f_mode: 0,
    linux_binprm_file: 0,
    socket_type: 0,
    task_struct_tgid: 0,
    task_struct_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_level: 0,
    cgroup_ancestors: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    super_block_s_magic: 0,
    msghdr_msg_name: 0,
    msghdr_msg_namelen: 0,
    pt_regs_orig_ax: 0,
    pt_regs_si: 0,
    pt_regs_dx: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_name: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    vfsmount_mnt_root: 0,
    task_struct_fs: 0,
    fs_struct_root: 0,
    path_mnt: 0,
    path_dentry: 0,
    socket_sk: 0,
    sock_common_skc_family: 0,
    file_f_flags: 0,
    dentry_d_hash_pprev: 0,
    task_struct_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mount_mnt_ns: 0,
    vm_area_struct_vm_file: 0,
    unix_sock_path: 0,
    unix_sock_peer: 0,
    sock_common_skc_rcv_saddr: 0,
    sock_common_skc_v6_rcv_saddr: 0,
    sock_common_skc_num: 0,
    dentry_d_sb: 0,
    super_block_s_mounts: 0,
    mount_mnt_instance: 0,
    task_struct_mm: 0,
    mm_struct_exe_file: 0,
    file_f_inode: 0,
    task_struct_pid: 0,
    task_struct_comm: 0,
    task_struct_cred: 0,
    cred_uid: 0,
    cred_gid: 0,
};

#[no_mangle]
pub static PATH_SEQUENCES: PathSequences = PathSequences { rename_lock: 0, mount_lock: 0 };

/// x86-64 syscall numbers whose argv the exec hook reads from the caller's registers.
const SYS_EXECVE: u64 = 59;
const SYS_EXECVEAT: u64 = 322;

/// x86-64 syscalls that reach `path_truncate` on 6.1 (6.2 and later call `file_truncate` there)
/// after `file_open` decided the file as a write: an O_TRUNC open, ftruncate of a descriptor, which
/// only one opened for writing allows.
const SYS_OPEN: u64 = 2;
const SYS_FTRUNCATE: u64 = 77;
const SYS_CREAT: u64 = 85;
const SYS_OPENAT: u64 = 257;
const SYS_OPENAT2: u64 = 437;
/// connect(2): a Unix datagram socket's `unix_may_send` from a connect rather than a send.
const SYS_CONNECT: u64 = 42;

/// A register of the current task's user context (at its BTF offset in `struct pt_regs`).
#[inline(always)]
fn user_register(field: &'static u64) -> Option<u64> {
    // SAFETY: plain helpers; the pt_regs pointer is only read through bpf_probe_read_kernel.
    let regs = unsafe {
        let task = generated::bpf_get_current_task_btf();
        generated::bpf_task_pt_regs(task) as *const u8
    };
    // SAFETY: a read within struct pt_regs at an offset from BTF.
    unsafe { bpf_probe_read_kernel(regs.add(offset(field)) as *const u64) }.ok()
}

/// The user address of the argv array the current task passed to execve/execveat, read from its
/// syscall registers (the old image is still mapped when exec hooks run). `None` for anything else.
#[inline(always)]
pub fn exec_argv() -> Option<u64> {
    match user_register(&OFFSETS.pt_regs_orig_ax)? {
        SYS_EXECVE => user_register(&OFFSETS.pt_regs_si),
        SYS_EXECVEAT => user_register(&OFFSETS.pt_regs_dx),
        _ => None,
    }
}

/// Whether the current task is in execve/execveat, whose mappings are the binary
/// `bprm_check_security` decided and the loader its ELF header names.
#[inline(always)]
pub fn in_exec() -> bool {
    matches!(user_register(&OFFSETS.pt_regs_orig_ax), Some(SYS_EXECVE | SYS_EXECVEAT))
}

/// Whether `file` (the hook's `struct file *`) is the current task's executable,
/// `current->mm->exe_file`, compared by inode: during an exec that is the binary
/// `bprm_check_security` decided (`begin_new_exec` sets it before the ELF loader maps anything).
/// `None` when either cannot be read (no mm, no exe_file, a fault): the caller must not trust it.
#[inline(always)]
pub fn is_exe_file(file: *const u8) -> Option<bool> {
    // SAFETY: a plain helper; the task pointer is only used for probe reads.
    let task = unsafe { generated::bpf_get_current_task() };
    let mm = read_address(task + offset(&OFFSETS.task_struct_mm) as u64).filter(|&mm| mm != 0)?;
    let exe = read_address(mm + offset(&OFFSETS.mm_struct_exe_file) as u64).filter(|&exe| exe != 0)?;
    let inode = |file: u64| read_address(file + offset(&OFFSETS.file_f_inode) as u64).filter(|&i| i != 0);
    Some(inode(file as u64)? == inode(exe)?)
}

/// `vma->vm_file`, as an address for probe reads (0: an anonymous mapping, or unreadable).
#[inline(always)]
pub fn vma_file(vma: *const u8) -> u64 {
    // SAFETY: probe read.
    unsafe { bpf_probe_read_kernel(vma.add(offset(&OFFSETS.vm_area_struct_vm_file)) as *const u64) }
        .unwrap_or(0)
}

/// Whether the current syscall is one whose truncation `file_open` already decided and recorded as a
/// write. Anything else (truncate(2), a syscall we do not know, a kernel thread) is not.
#[inline(always)]
pub fn truncate_decided_at_open() -> bool {
    matches!(
        user_register(&OFFSETS.pt_regs_orig_ax),
        Some(SYS_OPEN | SYS_OPENAT | SYS_OPENAT2 | SYS_CREAT | SYS_FTRUNCATE)
    )
}

/// Whether the current syscall is an open (open, openat, openat2, creat), which `file_open` decides.
#[inline(always)]
pub fn in_open() -> bool {
    matches!(user_register(&OFFSETS.pt_regs_orig_ax), Some(SYS_OPEN | SYS_OPENAT | SYS_OPENAT2 | SYS_CREAT))
}

#[inline(always)]
pub fn offset(field: &'static u64) -> usize {
    // SAFETY: reading our own initialised static; volatile so the value set at load time is used.
    unsafe { read_volatile(field) as usize }
}

/// `file->f_mode`, read directly through the hook's trusted `struct file *`.
#[inline(always)]
pub fn file_mode(file: *const u8) -> u32 {
    // SAFETY: `file` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(file.add(offset(&OFFSETS.file_f_mode)) as *const u32) }
}

/// `file->f_flags` (the open's flags; O_TRUNC is still set when `file_open` runs).
#[inline(always)]
pub fn file_flags(file: *const u8) -> u32 {
    // SAFETY: `file` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(file.add(offset(&OFFSETS.file_f_flags)) as *const u32) }
}

/// `&file->f_path`, still a trusted pointer as `bpf_d_path` requires.
#[inline(always)]
pub fn file_path(file: *const u8) -> *const u8 {
    // SAFETY: pointer arithmetic only; no access.
    unsafe { file.add(offset(&OFFSETS.file_f_path)) }
}

/// `bprm->file`: the executable being checked.
#[inline(always)]
pub fn bprm_file(bprm: *const u8) -> *const u8 {
    // SAFETY: `bprm` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(bprm.add(offset(&OFFSETS.linux_binprm_file)) as *const *const u8) }
}

/// `sock->type` (SOCK_STREAM, SOCK_DGRAM, ...).
#[inline(always)]
pub fn socket_type(sock: *const u8) -> i16 {
    // SAFETY: `sock` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(sock.add(offset(&OFFSETS.socket_type)) as *const i16) }
}

/// `task->tgid`.
#[inline(always)]
pub fn task_tgid(task: *const u8) -> u32 {
    // SAFETY: probe read of a kernel address; a fault reads as 0.
    unsafe { bpf_probe_read_kernel(task.add(offset(&OFFSETS.task_struct_tgid)) as *const u32) }.unwrap_or(0)
}

/// Whether `task` is in the scope's cgroup or a descendant: its default-hierarchy cgroup's ancestor
/// at the scope's level is the scope's cgroup. Unreadable means outside (the caller then denies).
#[inline(always)]
pub fn task_in_scope(task: *const u8, scope: &Scope) -> bool {
    // SAFETY: every step is a probe read; a fault stops the walk.
    unsafe {
        let Ok(css_set) =
            bpf_probe_read_kernel(task.add(offset(&OFFSETS.task_struct_cgroups)) as *const *const u8)
        else {
            return false;
        };
        let Ok(cgroup) =
            bpf_probe_read_kernel(css_set.add(offset(&OFFSETS.css_set_dfl_cgrp)) as *const *const u8)
        else {
            return false;
        };
        let Ok(level) = bpf_probe_read_kernel(cgroup.add(offset(&OFFSETS.cgroup_level)) as *const i32) else {
            return false;
        };
        if level < 0 || (level as u32) < scope.level || scope.level > MAX_CGROUP_LEVEL {
            return false;
        }
        let slot = cgroup.add(offset(&OFFSETS.cgroup_ancestors) + 8 * scope.level as usize);
        let Ok(ancestor) = bpf_probe_read_kernel(slot as *const *const u8) else { return false };
        let Ok(kn) = bpf_probe_read_kernel(ancestor.add(offset(&OFFSETS.cgroup_kn)) as *const *const u8)
        else {
            return false;
        };
        matches!(bpf_probe_read_kernel(kn.add(offset(&OFFSETS.kernfs_node_id)) as *const u64), Ok(id) if id == scope.cgroup_id)
    }
}

/// The magic of the filesystem `dentry` belongs to (`dentry->d_sb->s_magic`) when it is one the
/// agent may change nothing on (`protected_magic`).
#[inline(always)]
pub fn protected_fs(dentry: u64) -> Option<u32> {
    let magic = read_address(dentry.wrapping_add(offset(&OFFSETS.dentry_d_sb) as u64))
        .and_then(|sb| read_address(sb.wrapping_add(offset(&OFFSETS.super_block_s_magic) as u64)));
    protected_magic(magic.unwrap_or(0))
}

/// `protected_fs` of the file of a hook's `struct file *` argument, read with plain loads through
/// it (`file->f_path.dentry->d_sb->s_magic`) rather than probe reads.
#[inline(always)]
pub fn file_protected_fs(file: *const u8) -> Option<u32> {
    // SAFETY: loads through BTF pointers at offsets from BTF, each checked by the verifier; a faulted
    // load reads 0.
    let magic = unsafe {
        let dentry = load::<*const u8>(file_path(file), &OFFSETS.path_dentry);
        let sb = load::<*const u8>(dentry, &OFFSETS.dentry_d_sb);
        load::<u64>(sb, &OFFSETS.super_block_s_magic)
    };
    protected_magic(magic)
}

/// `Some(magic)` for cgroupfs (the agent's own cgroup and limits, every other cgroup) and bpffs
/// (SafeClaw's pins); 0, an unreadable superblock, counts as one: doubt denies.
#[inline(always)]
fn protected_magic(magic: u64) -> Option<u32> {
    let protected = magic == 0
        || magic == u64::from(CGROUP2_SUPER_MAGIC)
        || magic == u64::from(CGROUP_SUPER_MAGIC)
        || magic == u64::from(BPF_FS_MAGIC);
    protected.then_some(magic as u32)
}

/// `path->mnt`, as an address for probe reads (0 if unreadable).
#[inline(always)]
pub fn path_vfsmount(path: *const u8) -> u64 {
    // SAFETY: probe read.
    unsafe { bpf_probe_read_kernel(path.add(offset(&OFFSETS.path_mnt)) as *const u64) }.unwrap_or(0)
}

/// `path->dentry`, as an address for probe reads (0 if unreadable).
#[inline(always)]
pub fn path_dentry(path: *const u8) -> u64 {
    // SAFETY: probe read.
    unsafe { bpf_probe_read_kernel(path.add(offset(&OFFSETS.path_dentry)) as *const u64) }.unwrap_or(0)
}

/// Whether an object can be reached by the path its hook resolved, judged on kernel objects rather
/// than on the path string (which a name ending in ` (deleted)` could imitate).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Reachable,
    /// Unlinked: its path is its last name plus ` (deleted)`.
    Unlinked,
    /// On a mount outside the task's mount namespace, disconnected from its mount's root, or
    /// unreadable (which counts as outside).
    ForeignMount,
}

#[inline(always)]
fn read_address(address: u64) -> Option<u64> {
    // SAFETY: probe read of a kernel address; a fault is an error.
    unsafe { bpf_probe_read_kernel(address as *const u64) }.ok()
}

/// Where `dentry` in `vfsmount` stands: its mount must belong to the current task's mount namespace
/// (a detached `open_tree` clone has its own anonymous one, a lazily unmounted tree none), and, if
/// `check_unlinked`, the dentry must still be hashed or be its mount's root (the kernel's
/// `d_unlinked`, and no disconnected dentry).
#[inline(always)]
pub fn reach(dentry: u64, vfsmount: u64, check_unlinked: bool) -> Reach {
    // SAFETY: a plain helper; the task pointer is only used for probe reads.
    let task = unsafe { generated::bpf_get_current_task() };
    let mount = vfsmount.wrapping_sub(offset(&OFFSETS.mount_mnt) as u64);
    let task_ns = read_address(task + offset(&OFFSETS.task_struct_nsproxy) as u64)
        .and_then(|nsproxy| read_address(nsproxy + offset(&OFFSETS.nsproxy_mnt_ns) as u64));
    let object_ns = read_address(mount + offset(&OFFSETS.mount_mnt_ns) as u64);
    match (task_ns, object_ns) {
        (Some(task_ns), Some(object_ns)) if task_ns == object_ns && task_ns != 0 => {}
        _ => return Reach::ForeignMount,
    }
    if !check_unlinked {
        return Reach::Reachable;
    }
    dentry_reach(dentry, vfsmount)
}

/// Whether `dentry` in `vfsmount` is still linked: hashed, or its mount's root (the kernel's
/// `d_unlinked`); a disconnected dentry or an unreadable one counts as unreachable.
#[inline(always)]
pub fn dentry_reach(dentry: u64, vfsmount: u64) -> Reach {
    let pprev = read_address(dentry + offset(&OFFSETS.dentry_d_hash_pprev) as u64);
    let parent = read_address(dentry + offset(&OFFSETS.dentry_d_parent) as u64);
    let mnt_root = read_address(vfsmount + offset(&OFFSETS.vfsmount_mnt_root) as u64);
    match (pprev, parent, mnt_root) {
        (Some(pprev), Some(parent), Some(mnt_root)) => linked(dentry, pprev, parent, mnt_root),
        // Unreadable: as unreachable as can be.
        _ => Reach::ForeignMount,
    }
}

/// The kernel's `d_unlinked` on fields already read (`pprev`: `d_hash.pprev`, `parent`: `d_parent`
/// of `dentry`; `mnt_root` of its mount), and no disconnected dentry: the one test of `dentry_reach`
/// and `file_reach`, whichever way they read the fields.
#[inline(always)]
fn linked(dentry: u64, pprev: u64, parent: u64, mnt_root: u64) -> Reach {
    if parent == dentry {
        // A root of its own that is not its mount's root: a disconnected dentry (open_by_handle_at),
        // whose path is only its own name.
        return if dentry != mnt_root { Reach::ForeignMount } else { Reach::Reachable };
    }
    if pprev == 0 {
        Reach::Unlinked
    } else {
        Reach::Reachable
    }
}

/// The current task as the verifier's BTF pointer: its fields, and those of what they point to, are
/// read with plain loads that the verifier checks against BTF at load time (a fault reads as 0),
/// instead of a helper call each, which costs far more than a load.
#[inline(always)]
fn current_task_btf() -> *const u8 {
    // SAFETY: a plain helper.
    unsafe { generated::bpf_get_current_task_btf() as *const u8 }
}

/// The `T` at `base` + `field` (an offset from BTF) where `base` is a BTF pointer: a plain load the
/// verifier checks against BTF. Volatile so that LLVM neither moves nor merges it: folded into
/// a select of addresses, a pointer would meet bitwise operations the verifier refuses.
///
/// # Safety
/// `base` must be a BTF pointer whose type has a `T` at that offset.
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, field: &'static u64) -> T {
    // SAFETY: the caller's promise; a faulting load reads as 0 (the verifier makes it a probe load).
    unsafe { read_volatile(base.add(offset(field)) as *const T) }
}

/// Writes the current task's identity into `header` as `bpf_get_current_pid_tgid`, `_uid_gid`,
/// `_cgroup_id` and `_comm` would say it, read from `current` with plain loads: `pid`, `tgid`,
/// `cred->uid` and `cred->gid` (the subjective credentials, as the helper reads them; ids in the
/// initial namespace), `cgroups->dfl_cgrp->kn->id`, and `comm` up to its NUL, zero after it, its last
/// byte always NUL (as the helper's `strscpy_pad` leaves it). Written in place: the BPF stack of the
/// largest hooks has no room for a copy. Returns the level of that cgroup (`cgroup->level`).
#[inline(always)]
pub fn write_identity(header: &mut EventHeader) -> i32 {
    let task = current_task_btf();
    // SAFETY: loads through BTF pointers at offsets from BTF, each checked by the verifier.
    unsafe {
        header.pid = load::<u32>(task, &OFFSETS.task_struct_pid);
        header.tgid = load::<u32>(task, &OFFSETS.task_struct_tgid);
        let cred = load::<*const u8>(task, &OFFSETS.task_struct_cred);
        header.uid = load::<u32>(cred, &OFFSETS.cred_uid);
        header.gid = load::<u32>(cred, &OFFSETS.cred_gid);
        let css_set = load::<*const u8>(task, &OFFSETS.task_struct_cgroups);
        let cgroup = load::<*const u8>(css_set, &OFFSETS.css_set_dfl_cgrp);
        let kn = load::<*const u8>(cgroup, &OFFSETS.cgroup_kn);
        header.cgroup_id = load::<u64>(kn, &OFFSETS.kernfs_node_id);
        let name = task.add(offset(&OFFSETS.task_struct_comm));
        let mut ended = false;
        for (i, byte) in header.comm.iter_mut().enumerate() {
            let b = read_volatile(name.add(i));
            ended |= b == 0 || i == COMM_LEN - 1;
            *byte = if ended { 0 } else { b };
        }
        load::<i32>(cgroup, &OFFSETS.cgroup_level)
    }
}

/// `file->f_path` as `(dentry, vfsmount)` addresses for probe reads and comparisons, in one read
/// (`(0, 0)` if unreadable).
#[inline(always)]
pub fn file_path_parts(file: *const u8) -> (u64, u64) {
    // SAFETY: one probe read of the 16 bytes of `struct path` (two pointers) inside `file`.
    let parts = unsafe { bpf_probe_read_kernel(file_path(file) as *const [u64; 2]) }.unwrap_or([0, 0]);
    let word = |field: &'static u64| parts[(offset(field) / 8) & 1];
    (word(&OFFSETS.path_dentry), word(&OFFSETS.path_mnt))
}

/// The sequence counts of `rename_lock` and `mount_lock` (`PATH_SEQUENCES`). Odd, as the kernel
/// makes them while a rename or a mount change is in progress, also when an address is unknown or
/// unreadable: whatever reads them treats both alike. (Never an `Option`: LLVM fills the fields of a
/// `None` it stores with whatever a register holds, which the verifier refuses to read.)
#[inline(always)]
pub fn path_sequences() -> (u32, u32) {
    // SAFETY: reading our own initialised static; volatile so the value set at load time is used.
    let (rename_lock, mount_lock) =
        unsafe { (read_volatile(&PATH_SEQUENCES.rename_lock), read_volatile(&PATH_SEQUENCES.mount_lock)) };
    if rename_lock == 0 || mount_lock == 0 {
        return (1, 1);
    }
    // SAFETY: probe reads of two kernel words; a fault reads as odd.
    let renames = unsafe { bpf_probe_read_kernel(rename_lock as *const u32) }.unwrap_or(1);
    let mounts = unsafe { bpf_probe_read_kernel(mount_lock as *const u32) }.unwrap_or(1);
    (renames, mounts)
}

/// `current->fs->root` as `(vfsmount, dentry)`: what `d_path` resolves a path against. Plain loads
/// (a faulted one reads 0).
#[inline(always)]
pub fn task_root() -> (u64, u64) {
    let task = current_task_btf();
    // SAFETY: loads through BTF pointers at offsets from BTF, each checked by the verifier.
    unsafe {
        let fs = load::<*const u8>(task, &OFFSETS.task_struct_fs);
        let root = fs.add(offset(&OFFSETS.fs_struct_root));
        (load::<u64>(root, &OFFSETS.path_mnt), load::<u64>(root, &OFFSETS.path_dentry))
    }
}

/// `reach(dentry, vfsmount, true)` for the file of `file_open` (`dentry` and `vfsmount` from
/// `file_path_parts(file)`), with the same tests on the same fields, read with plain loads through
/// the hook's `struct file *` and the current task's BTF pointer. Only the mount's namespace needs a
/// probe read: no BTF pointer leads from a `vfsmount` back to its `struct mount`.
#[inline(always)]
pub fn file_reach(file: *const u8, dentry: u64, vfsmount: u64) -> Reach {
    let task = current_task_btf();
    let mount = vfsmount.wrapping_sub(offset(&OFFSETS.mount_mnt) as u64);
    let Some(object_ns) = read_address(mount + offset(&OFFSETS.mount_mnt_ns) as u64) else {
        return Reach::ForeignMount;
    };
    // SAFETY: loads through BTF pointers at offsets from BTF, each checked by the verifier.
    let (task_ns, pprev, parent, mnt_root) = unsafe {
        let nsproxy = load::<*const u8>(task, &OFFSETS.task_struct_nsproxy);
        let path = file_path(file);
        let loaded_dentry = load::<*const u8>(path, &OFFSETS.path_dentry);
        let loaded_mnt = load::<*const u8>(path, &OFFSETS.path_mnt);
        (
            load::<u64>(nsproxy, &OFFSETS.nsproxy_mnt_ns),
            load::<u64>(loaded_dentry, &OFFSETS.dentry_d_hash_pprev),
            load::<u64>(loaded_dentry, &OFFSETS.dentry_d_parent),
            load::<u64>(loaded_mnt, &OFFSETS.vfsmount_mnt_root),
        )
    };
    // A dentry always has a parent (itself at a root) and a mount a root: 0 is a faulted load, which
    // counts as unreachable, as an unreadable field does for `reach`.
    if task_ns == 0 || task_ns != object_ns || parent == 0 || mnt_root == 0 {
        return Reach::ForeignMount;
    }
    linked(dentry, pprev, parent, mnt_root)
}

/// `msg->msg_name` and `msg->msg_namelen`: the explicit destination of a sendto/sendmsg, if any.
#[inline(always)]
pub fn msghdr_destination(msg: *const u8) -> Option<(*const u8, i32)> {
    // SAFETY: probe reads of the kernel's msghdr.
    unsafe {
        let name =
            bpf_probe_read_kernel(msg.add(offset(&OFFSETS.msghdr_msg_name)) as *const *const u8).ok()?;
        let len = bpf_probe_read_kernel(msg.add(offset(&OFFSETS.msghdr_msg_namelen)) as *const i32).ok()?;
        (!name.is_null() && len > 0).then_some((name, len))
    }
}

/// `sock->sk->__sk_common.skc_family`: the family the kernel will use for the socket's traffic,
/// whatever a sockaddr says. 0 (`AF_UNSPEC`) if unreadable.
#[inline(always)]
pub fn socket_family(sock: *const u8) -> u16 {
    // SAFETY: probe reads; `struct sock` starts with its `sock_common`.
    unsafe {
        let Ok(sk) = bpf_probe_read_kernel(sock.add(offset(&OFFSETS.socket_sk)) as *const *const u8) else {
            return 0;
        };
        bpf_probe_read_kernel(sk.add(offset(&OFFSETS.sock_common_skc_family)) as *const u16).unwrap_or(0)
    }
}

/// `sock->sk`, as an address for probe reads (0 if unreadable).
#[inline(always)]
pub fn socket_sock(sock: *const u8) -> u64 {
    // SAFETY: probe read.
    unsafe { bpf_probe_read_kernel(sock.add(offset(&OFFSETS.socket_sk)) as *const u64) }.unwrap_or(0)
}

/// Where the Unix socket `sk` was bound: `(dentry, vfsmount)` of `unix_sk(sk)->path`, both 0 for an
/// abstract or unbound socket; `None` if unreadable.
#[inline(always)]
pub fn unix_bound_path(sk: u64) -> Option<(u64, u64)> {
    let path = sk + offset(&OFFSETS.unix_sock_path) as u64;
    let dentry = read_address(path + offset(&OFFSETS.path_dentry) as u64)?;
    let vfsmount = read_address(path + offset(&OFFSETS.path_mnt) as u64)?;
    Some((dentry, vfsmount))
}

/// `unix_sk(sk)->peer`: the socket a Unix datagram socket is connected to (0: none, or unreadable).
#[inline(always)]
pub fn unix_peer(sk: u64) -> u64 {
    read_address(sk + offset(&OFFSETS.unix_sock_peer) as u64).unwrap_or(0)
}

/// Whether the current syscall is connect(2) (a `unix_may_send` from anything else is a send).
#[inline(always)]
pub fn in_connect() -> bool {
    user_register(&OFFSETS.pt_regs_orig_ax) == Some(SYS_CONNECT)
}

/// The local address and port (host order) a socket is bound to, IPv4 as IPv4-mapped IPv6; `None`
/// if unreadable or neither IPv4 nor IPv6. An unbound socket reads as the any-address, port 0.
#[inline(always)]
pub fn sock_local_address(sk: u64, family: u16) -> Option<([u8; 16], u16)> {
    let common = sk as *const u8;
    // SAFETY: probe reads of the socket's `sock_common`, at BTF offsets.
    unsafe {
        let port =
            bpf_probe_read_kernel(common.add(offset(&OFFSETS.sock_common_skc_num)) as *const u16).ok()?;
        let addr = match family {
            AF_INET => {
                let v4 = bpf_probe_read_kernel(
                    common.add(offset(&OFFSETS.sock_common_skc_rcv_saddr)) as *const [u8; 4]
                )
                .ok()?;
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
            }
            AF_INET6 => bpf_probe_read_kernel(
                common.add(offset(&OFFSETS.sock_common_skc_v6_rcv_saddr)) as *const [u8; 16]
            )
            .ok()?,
            _ => return None,
        };
        Some((addr, port))
    }
}

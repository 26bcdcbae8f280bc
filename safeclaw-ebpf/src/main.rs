//! SafeClaw's BPF LSM programs: one small program per hook; scope, policy walk and event emission are
//! shared in the modules below.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod atomic;
mod changes;
mod decide;
mod diag;
mod emit;
mod exec_map;
mod kernel;
mod maps;
mod memo;
mod reach;
mod repeats;
mod scope;
mod scratch;
mod signals;
mod sockets;
mod unix;
mod walk;
mod xattr;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::{action, dfa_class, effect, flag, mount_op, Scope};

use crate::decide::Verdict;
use crate::emit::{Destination, Pending};
use crate::kernel::Reach;

/// `file_open(struct file *file)`: every open, whatever the syscall (open, openat, openat2, io_uring).
/// O_TRUNC empties the file, so it makes any open a write (a read-only one a read-write). A file the
/// path does not reach (unlinked, on a foreign mount) is decided by `reach`, except a fresh
/// O_TMPFILE, which is unlinked by design and decided by its directory's path, and the open of a
/// binary by exec, which `bprm_check_security` decides next by the exec rules.
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let Some(scope) = scope::current() else { return previous };
    let file: *const u8 = ctx.arg(0);
    let mode = kernel::file_mode(file);
    let flags = kernel::file_flags(file);
    let readable = mode & kernel::FMODE_READ != 0;
    let writable = mode & kernel::FMODE_WRITE != 0 || flags & kernel::O_TRUNC != 0;
    if writable {
        if let Some(magic) = kernel::file_protected_fs(file) {
            return guard(scope, action::PROTECTED_FS_WRITE, 0, magic);
        }
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let act = match (readable, writable) {
        (true, true) => action::FILE_READ_WRITE,
        (false, true) => action::FILE_WRITE,
        _ => action::FILE_READ,
    };
    pending.set_file(act, mode);
    pending.count_repeats();
    let by_exec = mode & kernel::FMODE_EXEC != 0 || flags & kernel::O_FMODE_EXEC != 0;
    let by_path = flags & kernel::O_TMPFILE != kernel::O_TMPFILE && !by_exec;
    if by_path {
        // Read before the path is resolved, so that a rename or mount change during `d_path` shows.
        pending.read_open_inputs(file, flags & MEMO_FLAGS);
    }
    let (dentry, vfsmount) = pending.open_file();
    // Identical to the last counted open in everything its path and decision rest on, and still
    // reachable by that path: counted again without resolving or deciding (memo.rs).
    let reaches = || kernel::file_reach(file, dentry, vfsmount) == Reach::Reachable;
    if by_path && pending.counted_by_memo(reaches) {
        return 0;
    }
    // One call of the decision, whatever the path's reach and the open's action (read back from the
    // event): each call site, and each state it is reached in, is verified apart.
    let verdict = match pending.resolve_file_path(file) {
        Some(len) => {
            let reach =
                if by_path { reach::of_resolved(&pending, file, dentry, vfsmount, len) } else { None };
            if reach != Some(Reach::Reachable) {
                pending.forget_open_inputs();
            }
            reach::decide_resolved(&pending, pending.action(), len, reach)
        }
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
    };
    pending.finish(verdict)
}

/// The open flags that change how `file_open` decides (O_TRUNC makes a write; O_TMPFILE and exec's
/// own open are never memoized, but are compared all the same).
const MEMO_FLAGS: u32 = kernel::O_TRUNC | kernel::O_TMPFILE | kernel::O_FMODE_EXEC;

/// `d_instantiate(struct dentry *dentry, struct inode *inode)`, and the kernel's other ways of giving
/// a dentry an inode, for every task: the dentry may be a freed one reused under another name, so no
/// open memoized before may match it (memo.rs). Never refuses (the hook returns nothing).
#[lsm(hook = "d_instantiate")]
pub fn d_instantiate(_ctx: LsmContext) -> i32 {
    memo::dentry_instantiated();
    0
}

/// An open of the event's path (`len` bytes, `None`: unresolved) for `act`, by the file tables. A
/// read-write open walks the write table only if the read table did not deny: the program holds one
/// walk per table, which the verifier checks once instead of once per action.
#[inline(always)]
fn decide_open(pending: &Pending, act: u8, len: Option<u32>) -> Verdict {
    let Some(len) = len else { return Verdict::flagged(flag::PATH_UNRESOLVED) };
    let (slot, path) = (pending.slot(), pending.path());
    let first_class = if act == action::FILE_WRITE { dfa_class::FILE_WRITE } else { dfa_class::FILE_READ };
    let first = decide::by_path(slot, first_class, path, len);
    if act != action::FILE_READ_WRITE || first.effect == effect::DENY {
        return first;
    }
    decide::combine_read_write(first, decide::by_path(slot, dfa_class::FILE_WRITE, path, len))
}

/// `path_link(struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)`: a
/// hard link is a second name for a file, which its path rules would not know; so it is decided as a
/// read-write open of the source, on the source's path. link(2) keeps both names on one mount, so
/// the source is in `new_dir->mnt`.
#[lsm(hook = "path_link")]
pub fn path_link(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let old_dentry: *const u8 = ctx.arg(0);
    if let Some(refused) = refuse_protected_fs(scope, old_dentry as u64) {
        return refused;
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let vfsmount = kernel::path_vfsmount(ctx.arg(1));
    pending.set_file(action::FILE_READ_WRITE, 0);
    pending.add_flags(flag::HARD_LINK);
    let len = resolve_dentry(&mut pending, old_dentry, vfsmount);
    let verdict = decide_open(&pending, action::FILE_READ_WRITE, len);
    pending.finish(verdict)
}

/// `path_rename(const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
/// struct dentry *new_dentry, unsigned int flags)`: a rename gives the source a name its rules do not
/// know, and replaces the destination without opening it. So the source is decided as a read-write
/// open, then (if allowed) the destination as a write, or as a read-write open for an exchange; the
/// event carries the path that decided.
#[lsm(hook = "path_rename")]
pub fn path_rename(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(5);
    let Some(scope) = scope::current() else { return previous };
    let old_dentry: *const u8 = ctx.arg(1);
    let new_dentry: *const u8 = ctx.arg(3);
    for dentry in [old_dentry, new_dentry] {
        if let Some(refused) = refuse_protected_fs(scope, dentry as u64) {
            return refused;
        }
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let old_vfsmount = kernel::path_vfsmount(ctx.arg(0));
    let new_vfsmount = kernel::path_vfsmount(ctx.arg(2));
    let flags: u32 = ctx.arg(4);
    pending.add_flags(flag::RENAME);
    pending.set_file(action::FILE_READ_WRITE, 0);
    let len = resolve_dentry(&mut pending, old_dentry, old_vfsmount);
    let source = decide_open(&pending, action::FILE_READ_WRITE, len);
    if source.effect == effect::DENY {
        return pending.finish(source);
    }
    let act = if flags & kernel::RENAME_EXCHANGE != 0 { action::FILE_READ_WRITE } else { action::FILE_WRITE };
    pending.set_file(act, 0);
    let len = resolve_dentry(&mut pending, new_dentry, new_vfsmount);
    let destination = decide_open(&pending, act, len);
    pending.finish(destination)
}

/// `path_mknod(const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)`: runs
/// before open(O_CREAT) (or mknod) creates a file, which `file_open` would only see once it exists.
/// Decided as a write of the new path; only a denial is recorded here, because an allowed create is
/// recorded by the `file_open` that follows.
#[lsm(hook = "path_mknod")]
pub fn path_mknod(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    let Some(scope) = scope::current() else { return previous };
    let dentry: *const u8 = ctx.arg(1);
    if let Some(refused) = refuse_protected_fs(scope, dentry as u64) {
        return refused;
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let vfsmount = kernel::path_vfsmount(ctx.arg(0));
    pending.set_file(action::FILE_WRITE, kernel::FMODE_WRITE);
    let len = resolve_dentry(&mut pending, dentry, vfsmount);
    let verdict = decide_open(&pending, action::FILE_WRITE, len);
    pending.finish_denial_only(verdict)
}

/// The path of `dentry` in `vfsmount` into the event (`None`: unresolved, or no mount).
#[inline(always)]
fn resolve_dentry(pending: &mut Pending, dentry: *const u8, vfsmount: u64) -> Option<u32> {
    if vfsmount == 0 {
        return None;
    }
    pending.resolve_dentry_path(dentry as u64, vfsmount)
}

/// `bprm_check_security(struct linux_binprm *bprm)`: each exec, and again for a `#!` interpreter.
#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let Some(scope) = scope::current() else { return previous };
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let bprm: *const u8 = ctx.arg(0);
    pending.set_exec();
    let verdict = match pending.resolve_exec_path(bprm) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some(len) => {
            pending.capture_argv(len);
            decide::by_path(pending.slot(), dfa_class::PROCESS_EXEC, pending.path(), len)
        }
    };
    pending.finish(verdict)
}

/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let Some(pending) = Pending::start(scope, previous) else { return emit::DENIED };
    decide_destination(pending, ctx.arg(0), ctx.arg(1), ctx.arg(2), false)
}

/// `socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)`: a datagram sent to an explicit
/// address (sendto/sendmsg without connect) is decided like a connect to that address. Sends on a
/// connected socket carry no address and were decided at connect: no event.
#[lsm(hook = "socket_sendmsg")]
pub fn socket_sendmsg(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let Some((address, addrlen)) = kernel::msghdr_destination(ctx.arg(1)) else { return previous };
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    pending.add_flags(flag::SENDTO);
    decide_destination(pending, ctx.arg(0), address, addrlen, true)
}

#[inline(always)]
fn decide_destination(
    mut pending: Pending,
    sock: *const u8,
    address: *const u8,
    addrlen: i32,
    sending: bool,
) -> i32 {
    let verdict = match pending.read_sockaddr(sock, address, addrlen, sending) {
        Destination::Inet => {
            if !sending {
                pending.count_repeats();
                // Identical to the last counted attempt on this CPU: counted again without deciding.
                pending.use_connect_inputs();
                if pending.counted_by_memo(|| true) {
                    return 0;
                }
            }
            let net = pending.net();
            decide::by_address(pending.slot(), net.protocol as u8, &net.addr, net.port)
        }
        Destination::UnixAbstract(len) => {
            decide::by_path(pending.slot(), dfa_class::UNIX_CONNECT, pending.path(), len)
        }
        // Decided (and recorded) by `unix_stream_connect` or `unix_may_send` on the socket the path
        // leads to: `..`, symlinks, bind mounts and second names all reach the same socket.
        Destination::UnixPath => return pending.previous(),
        // AF_UNSPEC disconnects (or, sent on IPv6, goes to the peer decided at connect): nothing new
        // is reached.
        Destination::Disconnect => Verdict::allow_unconditionally(),
        Destination::Undecided => Verdict::by_default(pending.slot(), flag::UNDECIDED_FAMILY),
    };
    pending.finish(verdict)
}

/// Records and denies a self-protection action of an in-scope task.
#[inline(always)]
fn guard(scope: &'static Scope, act: u8, target_pid: u32, detail_arg: u32) -> i32 {
    let Some(mut pending) = Pending::start(scope, 0) else { return emit::DENIED };
    pending.set_guarded(act, target_pid, detail_arg);
    pending.finish(Verdict::flagged(0))
}

/// `task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)`:
/// no signals from the agent to tasks outside its cgroup (the daemon among them).
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    let Some(scope) = scope::current() else { return previous };
    let target: *const u8 = ctx.arg(0);
    if kernel::task_in_scope(target, scope) {
        return previous;
    }
    let sig: i32 = ctx.arg(2);
    guard(scope, action::SIGNAL, kernel::task_tgid(target), sig as u32)
}

/// `ptrace_access_check(struct task_struct *child, unsigned int mode)`: no tracing outside the cgroup.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let Some(scope) = scope::current() else { return previous };
    let target: *const u8 = ctx.arg(0);
    if kernel::task_in_scope(target, scope) {
        return previous;
    }
    let mode: u32 = ctx.arg(1);
    guard(scope, action::PTRACE, kernel::task_tgid(target), mode)
}

/// `bpf(int cmd, union bpf_attr *attr, unsigned int size)`: no bpf() at all from the agent.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(3) };
    let cmd: i32 = ctx.arg(0);
    guard(scope, action::BPF, 0, cmd as u32)
}

/// `file_receive(struct file *file)`: a descriptor passed to the agent (SCM_RIGHTS, `pidfd_getfd`,
/// binder). One open for writing on cgroupfs or bpffs is refused, as `file_open` refuses opening one:
/// a `cgroup.procs` opened outside would otherwise move the agent out of its cgroup.
#[lsm(hook = "file_receive")]
pub fn file_receive(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let Some(scope) = scope::current() else { return previous };
    let file: *const u8 = ctx.arg(0);
    if kernel::file_mode(file) & kernel::FMODE_WRITE == 0 {
        return previous;
    }
    match kernel::file_protected_fs(file) {
        Some(magic) => guard(scope, action::PROTECTED_FS_WRITE, 0, magic),
        None => previous,
    }
}

/// `task_alloc(struct task_struct *task, unsigned long clone_flags)`: no `clone3(CLONE_INTO_CGROUP)`
/// from the agent, which would start its child in another cgroup. Recorded as a write on cgroupfs,
/// which the kernel requires of it (on the destination's `cgroup.procs`).
#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let clone_flags: u64 = ctx.arg(1);
    // Every fork of every task comes here: the flag first, the scope (a cgroup walk) only for it.
    if clone_flags & kernel::CLONE_INTO_CGROUP == 0 {
        return previous;
    }
    let Some(scope) = scope::current() else { return previous };
    guard(scope, action::PROTECTED_FS_WRITE, 0, kernel::CGROUP2_SUPER_MAGIC)
}

/// Refuses and records, whatever the rules, a change by an in-scope task of `dentry` on cgroupfs
/// (leaving the cgroup, its limits, other cgroups) or bpffs (SafeClaw's pins): `None` for any other
/// filesystem. Every hook that changes a name or an inode calls it; `file_open` and `file_receive`
/// do the same for a file opened for writing.
#[inline(always)]
fn refuse_protected_fs(scope: &'static Scope, dentry: u64) -> Option<i32> {
    kernel::protected_fs(dentry).map(|magic| guard(scope, action::PROTECTED_FS_WRITE, 0, magic))
}

/// `kernel_read_file(struct file *file, enum kernel_read_file_id id, bool contents)`: modules,
/// firmware, kexec images and policies read by the kernel on the agent's behalf.
#[lsm(hook = "kernel_read_file")]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(3) };
    let id: u32 = ctx.arg(1);
    guard(scope, action::MODULE_LOAD, 0, id)
}

/// `kernel_load_data(enum kernel_load_data_id id, bool contents)`: init_module from a buffer, etc.
#[lsm(hook = "kernel_load_data")]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(2) };
    let id: u32 = ctx.arg(0);
    guard(scope, action::MODULE_LOAD, 0, id)
}

/// `sb_mount(dev_name, path, type, flags, data)`: mounts could hide a path from the path rules.
#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(5) };
    guard(scope, action::MOUNT, 0, mount_op::MOUNT)
}

/// `sb_umount(struct vfsmount *mnt, int flags)`.
#[lsm(hook = "sb_umount")]
pub fn sb_umount(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(2) };
    guard(scope, action::MOUNT, 0, mount_op::UMOUNT)
}

/// `sb_pivotroot(const struct path *old_path, const struct path *new_path)`.
#[lsm(hook = "sb_pivotroot")]
pub fn sb_pivotroot(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(2) };
    guard(scope, action::MOUNT, 0, mount_op::PIVOT_ROOT)
}

/// `move_mount(const struct path *from_path, const struct path *to_path)`: the new mount API's attach.
#[lsm(hook = "move_mount")]
pub fn move_mount(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(2) };
    guard(scope, action::MOUNT, 0, mount_op::MOVE_MOUNT)
}

/// `userns_create(const struct cred *cred)`: without it an unprivileged agent cannot get the
/// capabilities for a private mount namespace.
#[lsm(hook = "userns_create")]
pub fn userns_create(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(1) };
    guard(scope, action::USERNS_CREATE, 0, 0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

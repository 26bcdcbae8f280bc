//! Changes to files and directories that need no open for write — unlink, rmdir, symlink, mkdir,
//! truncate(2), chmod, chown — each decided by the write rules on the path it changes (and refused
//! on cgroupfs and bpffs whatever the rules); and chroot,
//! refused like a mount (paths would then be resolved from another root).
use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::{action, flag, mount_op, Scope};

use crate::decide::Verdict;
use crate::emit::{self, Pending};
use crate::{kernel, reach, scope};

/// What a change does to its path.
#[derive(Clone, Copy)]
struct Change {
    act: u8,
    /// The action's numbers (`detail_arg`, `target_pid` of the event).
    detail_arg: u32,
    target_pid: u32,
    /// The dentry names an existing object (not one about to be created), which can be unlinked.
    existing: bool,
}

impl Change {
    #[inline(always)]
    fn of(act: u8, existing: bool) -> Self {
        Change { act, detail_arg: 0, target_pid: 0, existing }
    }
}

/// Decides and records `change` of `dentry` in `vfsmount` by the write rules.
#[inline(always)]
fn decide(scope: &'static Scope, previous: i32, change: Change, dentry: u64, vfsmount: u64) -> i32 {
    if let Some(refused) = crate::refuse_protected_fs(scope, dentry) {
        return refused;
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    pending.set_file_action(change.act, change.detail_arg, change.target_pid);
    let verdict = match crate::resolve_dentry(&mut pending, dentry as *const u8, vfsmount) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some(len) => {
            reach::decide_walked(&pending, action::FILE_WRITE, dentry, vfsmount, len, change.existing)
        }
    };
    pending.finish(verdict)
}

/// `path_unlink(const struct path *dir, struct dentry *dentry)`.
#[lsm(hook = "path_unlink")]
pub fn path_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let Some(scope) = scope::current() else { return previous };
    let dentry: u64 = ctx.arg(1);
    decide(scope, previous, Change::of(action::FILE_DELETE, true), dentry, kernel::path_vfsmount(ctx.arg(0)))
}

/// `path_rmdir(const struct path *dir, struct dentry *dentry)`: recorded as `file.delete` too.
#[lsm(hook = "path_rmdir")]
pub fn path_rmdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let Some(scope) = scope::current() else { return previous };
    let dentry: u64 = ctx.arg(1);
    decide(scope, previous, Change::of(action::FILE_DELETE, true), dentry, kernel::path_vfsmount(ctx.arg(0)))
}

/// `path_symlink(const struct path *dir, struct dentry *dentry, const char *old_name)`: a link
/// created where the rules forbid writing would replace what is there (after an unlink) or put the
/// agent's content at a protected name; decided on the new link's path.
#[lsm(hook = "path_symlink")]
pub fn path_symlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let dentry: u64 = ctx.arg(1);
    decide(
        scope,
        previous,
        Change::of(action::FILE_SYMLINK, false),
        dentry,
        kernel::path_vfsmount(ctx.arg(0)),
    )
}

/// `path_mkdir(const struct path *dir, struct dentry *dentry, umode_t mode)`.
#[lsm(hook = "path_mkdir")]
pub fn path_mkdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let dentry: u64 = ctx.arg(1);
    decide(scope, previous, Change::of(action::FILE_MKDIR, false), dentry, kernel::path_vfsmount(ctx.arg(0)))
}

/// `path_truncate(const struct path *path)`: truncate(2). On 6.1 an O_TRUNC open and ftruncate also
/// come here; `file_open` decided those as writes (ftruncate needs a descriptor opened for writing),
/// so they are not decided twice.
#[lsm(hook = "path_truncate")]
pub fn path_truncate(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let Some(scope) = scope::current() else { return previous };
    if kernel::truncate_decided_at_open() {
        return previous;
    }
    let path: *const u8 = ctx.arg(0);
    let change = Change::of(action::FILE_TRUNCATE, true);
    decide(scope, previous, change, kernel::path_dentry(path), kernel::path_vfsmount(path))
}

/// `path_chmod(const struct path *path, umode_t mode)`: chmod, fchmod and fchmodat.
#[lsm(hook = "path_chmod")]
pub fn path_chmod(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let Some(scope) = scope::current() else { return previous };
    let path: *const u8 = ctx.arg(0);
    let mode: u16 = ctx.arg(1);
    let change = Change { detail_arg: u32::from(mode), ..Change::of(action::FILE_CHMOD, true) };
    decide(scope, previous, change, kernel::path_dentry(path), kernel::path_vfsmount(path))
}

/// `path_chown(const struct path *path, kuid_t uid, kgid_t gid)`: chown, fchown, lchown, fchownat.
#[lsm(hook = "path_chown")]
pub fn path_chown(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let path: *const u8 = ctx.arg(0);
    let uid: u32 = ctx.arg(1);
    let gid: u32 = ctx.arg(2);
    let change = Change { detail_arg: uid, target_pid: gid, ..Change::of(action::FILE_CHOWN, true) };
    decide(scope, previous, change, kernel::path_dentry(path), kernel::path_vfsmount(path))
}

/// `path_chroot(const struct path *path)`: a task with another root gets paths relative to it, which
/// the rules (written from the real root) would misread.
#[lsm(hook = "path_chroot")]
pub fn path_chroot(ctx: LsmContext) -> i32 {
    let Some(scope) = scope::current() else { return ctx.arg(1) };
    crate::guard(scope, action::MOUNT, 0, mount_op::CHROOT)
}

//! Signals the agent has the kernel send for it: `task_kill` covers kill() and friends; this covers
//! the I/O signals of a descriptor (F_SETOWN/F_SETSIG): who may be made its owner, and the signal
//! itself.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::lsm,
    programs::LsmContext,
};
use safeclaw_common::{action, flag};

use crate::decide::Verdict;
use crate::emit::{self, Pending};
use crate::{kernel, scope};

/// What `fown->signum` 0 means: the default I/O signal.
const SIGIO: u32 = 29;

/// `file_send_sigiotask(struct task_struct *tsk, struct fown_struct *fown, int sig)`: the kernel is
/// about to send `sig` (0: SIGIO) to `tsk`, the owner set by F_SETOWN, because of I/O the current
/// task caused (a write into the agent's pipe or socket). Decided as `task_kill` decides: no
/// signal from the agent to a task outside its cgroup.
#[lsm(hook = "file_send_sigiotask")]
pub fn file_send_sigiotask(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let target: *const u8 = ctx.arg(0);
    if kernel::task_in_scope(target, scope) {
        return previous;
    }
    let sig: i32 = ctx.arg(2);
    let sig = if sig == 0 { SIGIO } else { sig as u32 };
    let Some(mut pending) = Pending::start(scope, 0) else { return emit::DENIED };
    pending.set_guarded(action::SIGNAL, kernel::task_tgid(target), sig);
    pending.finish(Verdict::flagged(flag::SIGIO))
}

const F_SETOWN: u32 = 8;
const F_SETOWN_EX: u32 = 15;
/// `struct f_owner_ex.type` of a process group.
const F_OWNER_PGRP: i32 = 2;
const FIOSETOWN: u32 = 0x8901;
const SIOCSPGRP: u32 = 0x8902;
/// Push a byte into a terminal's input queue, as if typed.
const TIOCSTI: u32 = 0x5412;
/// Virtual console requests, among them pasting the selection into the input (subcommand 3).
const TIOCLINUX: u32 = 0x541c;

/// `file_fcntl(struct file *file, unsigned int cmd, unsigned long arg)`: F_SETOWN and F_SETOWN_EX
/// choose who gets a descriptor's I/O signals, which the kernel then sends from whatever context the
/// I/O happens in (a packet arriving, a writer outside the cgroup), where `file_send_sigiotask`
/// cannot tell the agent caused it. So the agent may only name itself (its process or one of its
/// threads) or nobody.
#[lsm(hook = "file_fcntl")]
pub fn file_fcntl(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let cmd: u32 = ctx.arg(1);
    let arg: u64 = ctx.arg(2);
    let owner = match cmd {
        F_SETOWN => Some(arg as i32),
        // SAFETY: a user read of `struct f_owner_ex { int type; pid_t pid; }`; failure is handled.
        F_SETOWN_EX => match unsafe { bpf_probe_read_user(arg as *const [i32; 2]) } {
            Ok([F_OWNER_PGRP, pgrp]) => Some(-pgrp),
            Ok([_, pid]) => Some(pid),
            Err(_) => None,
        },
        _ => return previous,
    };
    decide_owner(previous, owner)
}

/// `file_ioctl(struct file *file, unsigned int cmd, unsigned long arg)`: FIOSETOWN and SIOCSPGRP
/// are F_SETOWN by ioctl; TIOCSTI and TIOCLINUX put input into a terminal, which reaches whatever
/// reads it outside the agent cgroup (the caller's shell), so they are refused outright, root agents
/// included (the kernel lets `CAP_SYS_ADMIN` push into any terminal it holds open).
#[lsm(hook = "file_ioctl")]
pub fn file_ioctl(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let cmd: u32 = ctx.arg(1);
    if cmd == TIOCSTI || cmd == TIOCLINUX {
        let Some(scope) = scope::current() else { return previous };
        return crate::guard(scope, action::TERMINAL_INPUT, 0, cmd);
    }
    if cmd != FIOSETOWN && cmd != SIOCSPGRP {
        return previous;
    }
    let arg: u64 = ctx.arg(2);
    // SAFETY: a user read of the int the ioctl takes; failure is handled.
    let owner = unsafe { bpf_probe_read_user(arg as *const i32) }.ok();
    decide_owner(previous, owner)
}

/// An owner (a pid, or a negative process group; `None`: unreadable, which denies) for the current
/// task's descriptor: itself or none is allowed unrecorded, anything else is a `guard.signal` denial
/// flagged `sigio` (`detail` 0: no signal is sent yet; a process group as its positive id).
#[inline(always)]
fn decide_owner(previous: i32, owner: Option<i32>) -> i32 {
    let Some(scope) = scope::current() else { return previous };
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32 as i32, (pid_tgid >> 32) as u32 as i32);
    if let Some(0) = owner {
        return previous;
    }
    if owner == Some(pid) || owner == Some(tgid) {
        return previous;
    }
    let Some(mut pending) = Pending::start(scope, 0) else { return emit::DENIED };
    pending.set_guarded(action::SIGNAL, owner.map_or(0, i32::unsigned_abs), 0);
    pending.finish(Verdict::flagged(flag::SIGIO))
}

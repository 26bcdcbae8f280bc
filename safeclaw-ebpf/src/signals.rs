//! Signals the agent has the kernel send for it: `task_kill` covers kill() and friends; this covers
//! the I/O signals of a descriptor the agent made another task the owner of.
use aya_ebpf::{macros::lsm, programs::LsmContext};
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

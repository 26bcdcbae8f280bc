//! Objects whose path does not lead to them from the task's root (`flag::PATH_UNREACHABLE`), decided
//! on what the kernel says the object is, never on the path string: a file on a mount outside the
//! task's mount namespace is denied; an unlinked file is decided by the rules on its last name and
//! denied as well when the policy default denies.
use safeclaw_common::{dfa_class, effect, flag, PATH_MAX};

use crate::decide::{self, Verdict};
use crate::emit::{masked, Pending};
use crate::kernel::{self, Reach};

/// What `d_path` appends to the path of an unlinked dentry.
const DELETED_SUFFIX: &[u8; 10] = b" (deleted)";

/// Decides an object of `reach` whose path is `len` bytes (its last name: `last_len` bytes) with
/// `by_rules`, which walks the policy over that many bytes of the event's path.
#[inline(always)]
fn decide(
    pending: &Pending,
    reach: Reach,
    len: u32,
    last_len: u32,
    by_rules: impl FnOnce(u32) -> Verdict,
) -> Verdict {
    // One call of `by_rules` for both kinds of path it decides, with a length the verifier knows
    // nothing of: each call site, and each range of lengths it is reached with, is verified apart.
    let walked = match reach {
        Reach::Reachable => len,
        Reach::Unlinked => last_len,
        Reach::ForeignMount => return Verdict::flagged(flag::PATH_UNREACHABLE),
    };
    let slot = pending.slot();
    let mut verdict = by_rules(pending.opaque(walked));
    if reach == Reach::Unlinked {
        if verdict.effect != effect::DENY {
            let default = Verdict::by_default(slot, 0);
            if default.effect == effect::DENY {
                verdict = default;
            }
        }
        verdict.flags |= flag::PATH_UNREACHABLE;
    }
    verdict
}

/// Where the file whose path `bpf_d_path` wrote into the event (`len` bytes) stands: `file`, whose
/// `f_path` is `dentry` in `vfsmount`. `None` for a pseudo file (`pipe:[…]`, `socket:[…]`,
/// `anon_inode:…`: no leading `/`), which lives on the kernel's internal mounts and is decided by its
/// name as before.
#[inline(always)]
pub fn of_resolved(
    pending: &Pending,
    file: *const u8,
    dentry: u64,
    vfsmount: u64,
    len: u32,
) -> Option<Reach> {
    if len == 0 || pending.path()[0] != b'/' {
        return None;
    }
    Some(kernel::file_reach(file, dentry, vfsmount))
}

/// Decides that file (`reach` from `of_resolved`; `None`: a pseudo file, or an open not decided by
/// where its path leads) for `act`, by its path as a reachable file is.
#[inline(always)]
pub fn decide_resolved(pending: &Pending, act: u8, len: u32, reach: Option<Reach>) -> Verdict {
    let reach = reach.unwrap_or(Reach::Reachable);
    let last_len = if reach == Reach::Unlinked && ends_deleted(pending.path(), len) {
        len - DELETED_SUFFIX.len() as u32
    } else {
        len
    };
    decide(pending, reach, len, last_len, |n| crate::decide_open(pending, act, Some(n)))
}

/// A path the dentry walk built (`len` bytes; the walk appends no suffix). Only an `existing` object
/// can be unlinked; a dentry about to be created is not hashed yet.
#[inline(always)]
pub fn decide_walked(
    pending: &Pending,
    act: u8,
    dentry: u64,
    vfsmount: u64,
    len: u32,
    existing: bool,
) -> Verdict {
    let reach = kernel::reach(dentry, vfsmount, existing);
    decide(pending, reach, len, len, |n| crate::decide_open(pending, act, Some(n)))
}

/// The Unix socket bound at `dentry` in `vfsmount`, whose walked path is `len` bytes, by the
/// `network.connect` Unix rules. Its mount may belong to the namespace of the process that bound it
/// (a service with a mount namespace of its own): the path is the one it was bound at, so only an
/// unlinked or disconnected socket file is treated as unreachable.
#[inline(always)]
pub fn decide_socket(pending: &Pending, dentry: u64, vfsmount: u64, len: u32) -> Verdict {
    let slot = pending.slot();
    let reach = socket_file_reach(dentry, vfsmount);
    decide(pending, reach, len, len, |n| decide::by_path(slot, dfa_class::UNIX_CONNECT, pending.path(), n))
}

/// `kernel::dentry_reach` as a function of its own: inlined into the Unix socket hooks, LLVM merged
/// its tests with a spilled pointer of the walk, which 6.1's verifier refuses (bitwise operation on
/// a pointer).
#[inline(never)]
fn socket_file_reach(dentry: u64, vfsmount: u64) -> Reach {
    kernel::dentry_reach(dentry, vfsmount)
}

/// Whether the first `len` bytes of `path` end in ` (deleted)`. The dentry said it is unlinked; the
/// suffix is checked too, because an unlink racing `d_path` may leave a path without it.
#[inline(always)]
fn ends_deleted(path: &[u8; PATH_MAX], len: u32) -> bool {
    let suffix = DELETED_SUFFIX.len() as u32;
    if len <= suffix || len >= PATH_MAX as u32 {
        return false;
    }
    let start = len - suffix;
    let mut i = 0;
    while i < DELETED_SUFFIX.len() {
        let at = masked::<{ PATH_MAX as u64 - 1 }>(start + i as u32) as usize;
        // SAFETY: `at` is masked below PATH_MAX (a raw read: an indexing bounds check would leave a
        // panic path the verifier rejects).
        if unsafe { *path.as_ptr().add(at) } != DELETED_SUFFIX[i] {
            return false;
        }
        i += 1;
    }
    true
}

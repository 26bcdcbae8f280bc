//! Unix-domain connects and sends, decided on the socket they reach: its path is the one it was
//! bound at (`unix_sk(other)->path`), built with the dentry walk, so `..`, symlinks, bind mounts and
//! second names of the socket file all lead to the same rule. Abstract names have no path and stay
//! decided by name at `socket_connect`/`socket_sendmsg`; socketpairs never connect.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::{flag, Scope};

use crate::decide::Verdict;
use crate::emit::{self, Pending};
use crate::{kernel, reach, scope};

/// Decides a connect or send from an in-scope task to the Unix socket `other` (a `struct sock`).
#[inline(always)]
fn decide(scope: &'static Scope, previous: i32, other: u64, sending: bool) -> i32 {
    let bound = if other == 0 { None } else { kernel::unix_bound_path(other) };
    if bound == Some((0, 0)) {
        // Abstract or unbound: decided by name where the address was given.
        return previous;
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    pending.set_unix_peer();
    if sending {
        pending.add_flags(flag::SENDTO);
    }
    let verdict = match bound {
        // Unreadable: nothing to decide on.
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some((dentry, vfsmount)) => {
            match crate::resolve_dentry(&mut pending, dentry as *const u8, vfsmount) {
                None => Verdict::flagged(flag::PATH_UNRESOLVED),
                Some(len) => reach::decide_socket(&pending, dentry, vfsmount, len),
            }
        }
    };
    pending.finish(verdict)
}

/// `unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)`: a stream or
/// seqpacket connect, once the listening socket `other` is found.
#[lsm(hook = "unix_stream_connect")]
// The body stays in the program itself: no call passing the context to a subprogram.
#[inline(always)]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else { return previous };
    let other: u64 = ctx.arg(1);
    decide(scope, previous, other, false)
}

/// `unix_may_send(struct socket *sock, struct socket *other)`: a datagram connect, and every
/// datagram sent. A send to the socket's connected peer was decided at its connect: no event.
#[lsm(hook = "unix_may_send")]
// The body stays in the program itself: no call passing the context to a subprogram.
#[inline(always)]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let Some(scope) = scope::current() else { return previous };
    let sk = kernel::socket_sock(ctx.arg(0));
    let other = kernel::socket_sock(ctx.arg(1));
    if other != 0 && sk != 0 && kernel::unix_peer(sk) == other {
        return previous;
    }
    decide(scope, previous, other, !kernel::in_connect())
}

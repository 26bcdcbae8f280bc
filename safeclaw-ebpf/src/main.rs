//! SafeClaw's BPF LSM programs: one small program per hook; scope, policy walk and event emission are
//! shared in the modules below.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod decide;
mod emit;
mod kernel;
mod maps;
mod scope;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::{action, dfa_class, flag};

use crate::decide::Verdict;
use crate::emit::Pending;

/// `file_open(struct file *file)`: every open, whatever the syscall (open, openat, openat2, io_uring).
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let Some(scope) = scope::current() else {
        return previous;
    };
    let Some(mut pending) = Pending::start(scope, previous) else {
        return emit::DENIED;
    };
    let file: *const u8 = ctx.arg(0);
    let mode = kernel::file_mode(file);
    let readable = mode & kernel::FMODE_READ != 0;
    let writable = mode & kernel::FMODE_WRITE != 0;
    let act = match (readable, writable) {
        (true, true) => action::FILE_READ_WRITE,
        (false, true) => action::FILE_WRITE,
        _ => action::FILE_READ,
    };
    pending.set_file(act, mode);
    let len = pending.resolve_file_path(file);
    let verdict = match (len, act) {
        (None, _) => Verdict::flagged(flag::PATH_UNRESOLVED),
        (Some(len), action::FILE_READ_WRITE) => decide::combine_read_write(
            decide::by_path(pending.slot(), dfa_class::FILE_READ, pending.path(), len),
            decide::by_path(pending.slot(), dfa_class::FILE_WRITE, pending.path(), len),
        ),
        (Some(len), action::FILE_WRITE) => {
            decide::by_path(pending.slot(), dfa_class::FILE_WRITE, pending.path(), len)
        }
        (Some(len), _) => decide::by_path(pending.slot(), dfa_class::FILE_READ, pending.path(), len),
    };
    pending.finish(verdict)
}

/// `bprm_check_security(struct linux_binprm *bprm)`: each exec, and again for a `#!` interpreter.
#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let Some(scope) = scope::current() else {
        return previous;
    };
    let Some(mut pending) = Pending::start(scope, previous) else {
        return emit::DENIED;
    };
    let bprm: *const u8 = ctx.arg(0);
    pending.set_exec();
    let verdict = match pending.resolve_exec_path(bprm) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some(len) => decide::by_path(pending.slot(), dfa_class::PROCESS_EXEC, pending.path(), len),
    };
    pending.finish(verdict)
}

/// `socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let Some(scope) = scope::current() else {
        return previous;
    };
    let Some(mut pending) = Pending::start(scope, previous) else {
        return emit::DENIED;
    };
    let sock: *const u8 = ctx.arg(0);
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let verdict = match pending.read_sockaddr(sock, address, addrlen) {
        emit::Destination::Inet => {
            let net = pending.net();
            decide::by_address(pending.slot(), net.protocol as u8, &net.addr, net.port)
        }
        emit::Destination::Unix(len) => {
            decide::by_path(pending.slot(), dfa_class::UNIX_CONNECT, pending.path(), len)
        }
        // AF_UNSPEC disconnects a datagram socket: nothing is reached.
        emit::Destination::Disconnect => Verdict::allow_unconditionally(),
        emit::Destination::Undecided => Verdict::by_default(pending.slot(), flag::UNDECIDED_FAMILY),
    };
    pending.finish(verdict)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

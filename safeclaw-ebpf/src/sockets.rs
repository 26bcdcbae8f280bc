//! Sockets that reach the network below the address rules: raw IP and packet sockets, decided when
//! they are created.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::RAW_SOCKET_PROTOCOL;

use crate::emit::{self, Pending};
use crate::{decide, scope};

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_RAW: i32 = 3;
/// socket()'s type argument also carries SOCK_NONBLOCK and SOCK_CLOEXEC above these bits.
const SOCK_TYPE_MASK: i32 = 0xf;

/// `socket_create(int family, int type, int protocol, int kern)`: a raw IP socket (any destination,
/// any protocol, forged headers) or a packet socket (whole frames) is decided by the rules that
/// cover every address and port (`RAW_SOCKET_PROTOCOL`). Other sockets are decided when they
/// connect or send; sockets the kernel makes for itself are not the agent's.
#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    let family: i32 = ctx.arg(0);
    let kind: i32 = ctx.arg(1);
    let kern: i32 = ctx.arg(3);
    let raw_ip = (family == AF_INET || family == AF_INET6) && kind & SOCK_TYPE_MASK == SOCK_RAW;
    if kern != 0 || !(raw_ip || family == AF_PACKET) {
        return previous;
    }
    let Some(scope) = scope::current() else { return previous };
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let protocol: i32 = ctx.arg(2);
    pending.set_raw_socket(family as u16, kind as u32, protocol as u16);
    let verdict = decide::by_address(pending.slot(), RAW_SOCKET_PROTOCOL, &[0; 16], 0);
    pending.finish(verdict)
}

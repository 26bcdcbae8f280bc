//! Sockets outside connects and sends: raw IP and packet sockets, decided when they are created, and
//! serving (a TCP listen, a UDP bind), decided by the `network.listen` rules on the local address.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::{flag, LISTEN_PROTOCOL, RAW_SOCKET_PROTOCOL};

use crate::decide::Verdict;
use crate::emit::{self, Pending};
use crate::{decide, kernel, scope};

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

const SOCK_DGRAM: i16 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// `socket_bind(struct socket *sock, struct sockaddr *address, int addrlen)`: a UDP socket bound to
/// a port receives datagrams from anyone who can reach the address, so its bind is decided as a
/// listen on that address and port. A bind to port 0 is how clients take an ephemeral port (what
/// the kernel does unasked on a first send, with no hook): not decided, no event. A TCP socket
/// serves only once it listens (`socket_listen`).
#[lsm(hook = "socket_bind")]
// The body stays in the program itself: no call passing the context to a subprogram.
#[inline(always)]
pub fn socket_bind(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let sock: *const u8 = ctx.arg(0);
    if kernel::socket_type(sock) != SOCK_DGRAM {
        return previous;
    }
    let family = kernel::socket_family(sock);
    if family != kernel::AF_INET && family != kernel::AF_INET6 {
        return previous;
    }
    let Some(scope) = scope::current() else { return previous };
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let verdict = match pending.read_bind_address(family, ctx.arg(1), ctx.arg(2)) {
        Some(()) if pending.net().port == 0 => return previous,
        Some(()) => {
            let net = pending.net();
            decide::by_address(pending.slot(), LISTEN_PROTOCOL | IPPROTO_UDP, &net.addr, net.port)
        }
        // Unreadable or too short (the kernel refuses it too): denied on doubt.
        None => Verdict::flagged(flag::UNDECIDED_FAMILY),
    };
    pending.finish(verdict)
}

/// `socket_listen(struct socket *sock, int backlog)`: an IPv4 or IPv6 socket about to accept
/// connections, decided on the address and port it is bound to (unbound: the any-address, port 0,
/// where the kernel binds it next). Unix listeners were decided when their socket file was created
/// (`path_mknod`).
#[lsm(hook = "socket_listen")]
// The body stays in the program itself: no call passing the context to a subprogram.
#[inline(always)]
pub fn socket_listen(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    let sock: *const u8 = ctx.arg(0);
    let family = kernel::socket_family(sock);
    if family != kernel::AF_INET && family != kernel::AF_INET6 {
        return previous;
    }
    let Some(scope) = scope::current() else { return previous };
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    let verdict = match kernel::sock_local_address(kernel::socket_sock(sock), family) {
        Some((addr, port)) => {
            pending.set_listen(family, addr, port);
            decide::by_address(pending.slot(), LISTEN_PROTOCOL | IPPROTO_TCP, &addr, port)
        }
        None => {
            pending.set_listen(family, [0; 16], 0);
            Verdict::flagged(flag::UNDECIDED_FAMILY)
        }
    };
    pending.finish(verdict)
}

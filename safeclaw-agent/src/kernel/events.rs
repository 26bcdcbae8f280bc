//! Decoding ring-buffer records into checked userspace events. Nothing the kernel wrote is trusted
//! blindly: unknown actions or effects and impossible lengths are errors, not guesses.
use std::net::{IpAddr, Ipv6Addr};

use safeclaw_common::{
    action, flag, mount_op, EventHeader, NetDetail, RepeatCount, RepeatKey, EVENT_FIXED_LEN, NO_RULE,
    PATH_MAX, RAW_SOCKET_PROTOCOL, REPEAT_PATH_MAX,
};

use crate::policy::compiled::{Effect, Request};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event header ({EVENT_FIXED_LEN})")]
    Short(usize),
    #[error("record claims a {claimed}-byte path but carries {carried}")]
    PathLength { claimed: usize, carried: usize },
    #[error("unknown action {0}")]
    Action(u8),
    #[error("unknown effect {0}")]
    Effect(u8),
}

/// How a file was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAccess {
    Read,
    Write,
    ReadWrite,
}

impl FileAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            FileAccess::Read => "r",
            FileAccess::Write => "w",
            FileAccess::ReadWrite => "rw",
        }
    }
}

/// Where a connect went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectTarget {
    /// `protocol` is 6 (TCP), 17 (UDP) or 0; `addr` is as the kernel decided on it (IPv4 shown as IPv4).
    Inet {
        protocol: u8,
        addr: IpAddr,
        port: u16,
    },
    Unix {
        path: Vec<u8>,
    },
    /// AF_UNSPEC: a datagram socket disconnecting.
    Disconnect,
    /// The creation of a raw IP or packet socket (`flag::RAW_SOCKET`): `socket(family, kind, protocol)`.
    RawSocket {
        family: u16,
        kind: u32,
        protocol: u16,
    },
    /// A family the policy does not describe.
    Other {
        family: u16,
    },
}

/// A self-protection action: always denied inside the scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    Signal {
        target_pid: u32,
        signal: u32,
    },
    Ptrace {
        target_pid: u32,
        mode: u32,
    },
    Bpf {
        command: u32,
    },
    /// A write on cgroupfs or bpffs, by filesystem magic.
    ProtectedFsWrite {
        fs_magic: u32,
    },
    /// A kernel module (or other kernel-read file) load, by the kernel's read id.
    ModuleLoad {
        id: u32,
    },
    Mount {
        op: MountOp,
    },
    UsernsCreate,
    /// TIOCSTI or TIOCLINUX on a terminal, by ioctl command.
    TerminalInput {
        command: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountOp {
    Mount,
    Umount,
    PivotRoot,
    MoveMount,
    Chroot,
    Unknown(u32),
}

/// An action on a file other than an open or exec: a change without an open for write (decided by
/// the write rules), or its code mapped executable (decided by the exec rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// unlink or rmdir.
    Delete,
    Symlink,
    Mkdir,
    Truncate,
    Chmod {
        mode: u32,
    },
    /// `None`: that id is left as it is.
    Chown {
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// mmap or mprotect with PROT_EXEC outside an exec.
    MapExec,
    /// An extended attribute set (its name; the value is never recorded).
    SetXattr {
        name: Vec<u8>,
    },
    RemoveXattr {
        name: Vec<u8>,
    },
}

impl FileAction {
    /// Audit action name.
    pub fn action_name(&self) -> &'static str {
        match self {
            FileAction::Delete => "file.delete",
            FileAction::Symlink => "file.symlink",
            FileAction::Mkdir => "file.mkdir",
            FileAction::Truncate => "file.truncate",
            FileAction::Chmod { .. } => "file.chmod",
            FileAction::Chown { .. } => "file.chown",
            FileAction::MapExec => "process.map_exec",
            FileAction::SetXattr { .. } => "file.setxattr",
            FileAction::RemoveXattr { .. } => "file.removexattr",
        }
    }
}

impl MountOp {
    /// The kernel's `mount_op` number.
    pub fn code(self) -> u32 {
        match self {
            MountOp::Mount => mount_op::MOUNT,
            MountOp::Umount => mount_op::UMOUNT,
            MountOp::PivotRoot => mount_op::PIVOT_ROOT,
            MountOp::MoveMount => mount_op::MOVE_MOUNT,
            MountOp::Chroot => mount_op::CHROOT,
            MountOp::Unknown(code) => code,
        }
    }
}

impl Guarded {
    /// Audit action name.
    pub fn action_name(self) -> &'static str {
        match self {
            Guarded::Signal { .. } => "guard.signal",
            Guarded::Ptrace { .. } => "guard.ptrace",
            Guarded::Bpf { .. } => "guard.bpf",
            Guarded::ProtectedFsWrite { .. } => "guard.protected_fs_write",
            Guarded::ModuleLoad { .. } => "guard.module_load",
            Guarded::Mount { .. } => "guard.mount",
            Guarded::UsernsCreate => "guard.userns_create",
            Guarded::TerminalInput { .. } => "guard.terminal_input",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    File {
        access: FileAccess,
        f_mode: u32,
        path: Vec<u8>,
    },
    /// `argv` as the caller passed it (argv[0] first); incomplete when the event has
    /// `flag::ARGV_INCOMPLETE`.
    Exec {
        path: Vec<u8>,
        argv: Vec<Vec<u8>>,
    },
    Connect(ConnectTarget),
    /// A TCP listen or UDP bind (`action::NETWORK_LISTEN`) on this local address.
    Listen(ConnectTarget),
    Guarded(Guarded),
    FileAction {
        kind: FileAction,
        path: Vec<u8>,
    },
}

/// One decision the kernel made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    pub kernel_seq: u64,
    pub boot_ns: u64,
    pub cgroup_id: u64,
    /// The launcher's session cgroup the task is in (0: none).
    pub session_cgroup_id: u64,
    pub decide_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `None`: the policy default (or a flag) decided.
    pub rule: Option<u32>,
    /// Profile of the policy that decided (0: base).
    pub profile: u32,
    pub policy_generation: u32,
    pub effect: Effect,
    pub flags: u16,
    pub comm: String,
    pub detail: Detail,
}

fn read<T: Copy>(bytes: &[u8], at: usize) -> T {
    debug_assert!(at + std::mem::size_of::<T>() <= bytes.len());
    // SAFETY: callers check the length first; T is a plain #[repr(C)] integer struct valid for any bits.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(at).cast::<T>()) }
}

/// The event of a `REPEATS` entry: the recorded attempt it repeats (its `kernel_seq`), at the time of
/// the latest repeat. Checked as a ring record is; only opens and connects are ever counted.
pub fn decode_repeated(key: &RepeatKey, count: &RepeatCount) -> Result<KernelEvent, DecodeError> {
    if !matches!(
        key.action,
        action::FILE_READ | action::FILE_WRITE | action::FILE_READ_WRITE | action::NETWORK_CONNECT
    ) {
        return Err(DecodeError::Action(key.action));
    }
    let len = key.path_len as usize;
    if len >= REPEAT_PATH_MAX {
        return Err(DecodeError::PathLength { claimed: len, carried: REPEAT_PATH_MAX });
    }
    let header = EventHeader {
        kernel_seq: count.kernel_seq,
        boot_ns: count.last_ns,
        cgroup_id: key.cgroup_id,
        session_cgroup_id: key.session_cgroup_id,
        decide_ns: 0,
        pid: key.pid,
        tgid: key.tgid,
        uid: key.uid,
        gid: key.gid,
        rule_id: key.rule_id,
        profile: key.profile,
        policy_generation: key.policy_generation,
        file_mode: key.file_mode,
        target_pid: 0,
        detail_arg: 0,
        action: key.action,
        effect: key.effect,
        flags: key.flags,
        comm: key.comm,
        _pad: 0,
    };
    let mut bytes = Vec::with_capacity(EVENT_FIXED_LEN + len);
    push_plain(&mut bytes, &header);
    push_plain(&mut bytes, &key.net);
    push_plain(&mut bytes, &(len as u32));
    push_plain(&mut bytes, &0u32);
    bytes.extend_from_slice(&key.path[..len]);
    decode(&bytes)
}

/// Appends the bytes of a plain `#[repr(C)]` wire struct without implicit padding.
fn push_plain<T: Copy>(out: &mut Vec<u8>, value: &T) {
    // SAFETY: the wire types are integers and byte arrays with explicit padding fields: every byte
    // of `value` is initialised.
    let bytes =
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) };
    out.extend_from_slice(bytes);
}

pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() < EVENT_FIXED_LEN {
        return Err(DecodeError::Short(bytes.len()));
    }
    let header: EventHeader = read(bytes, 0);
    let net: NetDetail = read(bytes, std::mem::size_of::<EventHeader>());
    let path_len: u32 = read(bytes, std::mem::size_of::<EventHeader>() + std::mem::size_of::<NetDetail>());
    let carried = bytes.len() - EVENT_FIXED_LEN;
    let claimed = path_len as usize;
    if claimed > carried || claimed >= PATH_MAX {
        return Err(DecodeError::PathLength { claimed, carried });
    }
    let path = bytes[EVENT_FIXED_LEN..EVENT_FIXED_LEN + claimed].to_vec();
    // An exec's argv follows the path's NUL: NUL-terminated strings to the end of the record.
    let args = bytes.get(EVENT_FIXED_LEN + claimed + 1..).unwrap_or_default();
    let effect = Effect::from_wire(header.effect).ok_or(DecodeError::Effect(header.effect))?;
    let detail = match header.action {
        action::FILE_READ => Detail::File { access: FileAccess::Read, f_mode: header.file_mode, path },
        action::FILE_WRITE => Detail::File { access: FileAccess::Write, f_mode: header.file_mode, path },
        action::FILE_READ_WRITE => {
            Detail::File { access: FileAccess::ReadWrite, f_mode: header.file_mode, path }
        }
        action::PROCESS_EXEC => Detail::Exec {
            path,
            argv: args
                .split_inclusive(|&b| b == 0)
                .map(|a| a.strip_suffix(&[0]).unwrap_or(a).to_vec())
                .collect(),
        },
        action::NETWORK_CONNECT if header.flags & flag::RAW_SOCKET != 0 => {
            Detail::Connect(ConnectTarget::RawSocket {
                family: net.family,
                kind: header.detail_arg,
                protocol: net.protocol,
            })
        }
        action::NETWORK_CONNECT => Detail::Connect(connect_target(&net, path)),
        action::NETWORK_LISTEN => Detail::Listen(connect_target(&net, path)),
        action::SIGNAL => {
            Detail::Guarded(Guarded::Signal { target_pid: header.target_pid, signal: header.detail_arg })
        }
        action::PTRACE => {
            Detail::Guarded(Guarded::Ptrace { target_pid: header.target_pid, mode: header.detail_arg })
        }
        action::BPF => Detail::Guarded(Guarded::Bpf { command: header.detail_arg }),
        action::PROTECTED_FS_WRITE => {
            Detail::Guarded(Guarded::ProtectedFsWrite { fs_magic: header.detail_arg })
        }
        action::MODULE_LOAD => Detail::Guarded(Guarded::ModuleLoad { id: header.detail_arg }),
        action::MOUNT => Detail::Guarded(Guarded::Mount {
            op: match header.detail_arg {
                mount_op::MOUNT => MountOp::Mount,
                mount_op::UMOUNT => MountOp::Umount,
                mount_op::PIVOT_ROOT => MountOp::PivotRoot,
                mount_op::MOVE_MOUNT => MountOp::MoveMount,
                mount_op::CHROOT => MountOp::Chroot,
                other => MountOp::Unknown(other),
            },
        }),
        action::USERNS_CREATE => Detail::Guarded(Guarded::UsernsCreate),
        action::TERMINAL_INPUT => Detail::Guarded(Guarded::TerminalInput { command: header.detail_arg }),
        action::FILE_DELETE..=action::PROCESS_MAP_EXEC => {
            Detail::FileAction { kind: file_action(&header), path }
        }
        action::FILE_SETXATTR | action::FILE_REMOVEXATTR => {
            // The attribute's name follows the path's NUL, NUL-terminated.
            let name = args.split(|&b| b == 0).next().unwrap_or_default().to_vec();
            let kind = if header.action == action::FILE_SETXATTR {
                FileAction::SetXattr { name }
            } else {
                FileAction::RemoveXattr { name }
            };
            Detail::FileAction { kind, path }
        }
        other => return Err(DecodeError::Action(other)),
    };
    let comm_len = header.comm.iter().position(|&b| b == 0).unwrap_or(header.comm.len());
    Ok(KernelEvent {
        kernel_seq: header.kernel_seq,
        boot_ns: header.boot_ns,
        cgroup_id: header.cgroup_id,
        session_cgroup_id: header.session_cgroup_id,
        decide_ns: header.decide_ns,
        pid: header.pid,
        tgid: header.tgid,
        uid: header.uid,
        gid: header.gid,
        rule: (header.rule_id != NO_RULE).then_some(header.rule_id),
        profile: header.profile,
        policy_generation: header.policy_generation,
        effect,
        flags: header.flags,
        comm: String::from_utf8_lossy(&header.comm[..comm_len]).into_owned(),
        detail,
    })
}

/// The action an event of `action::FILE_DELETE..=action::PROCESS_MAP_EXEC` records.
fn file_action(header: &EventHeader) -> FileAction {
    // chown's -1 (INVALID_UID) leaves that id unchanged.
    let id = |raw: u32| (raw != u32::MAX).then_some(raw);
    match header.action {
        action::FILE_DELETE => FileAction::Delete,
        action::FILE_SYMLINK => FileAction::Symlink,
        action::FILE_MKDIR => FileAction::Mkdir,
        action::FILE_TRUNCATE => FileAction::Truncate,
        action::FILE_CHMOD => FileAction::Chmod { mode: header.detail_arg },
        action::PROCESS_MAP_EXEC => FileAction::MapExec,
        _ => FileAction::Chown { uid: id(header.detail_arg), gid: id(header.target_pid) },
    }
}

const AF_UNSPEC: u16 = 0;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

fn connect_target(net: &NetDetail, path: Vec<u8>) -> ConnectTarget {
    match net.family {
        AF_INET | AF_INET6 => {
            let v6 = Ipv6Addr::from(net.addr);
            let addr = match (net.family, v6.to_ipv4_mapped()) {
                (AF_INET, Some(v4)) => IpAddr::V4(v4),
                _ => IpAddr::V6(v6),
            };
            ConnectTarget::Inet { protocol: net.protocol as u8, addr, port: net.port }
        }
        AF_UNIX => ConnectTarget::Unix { path },
        AF_UNSPEC => ConnectTarget::Disconnect,
        family => ConnectTarget::Other { family },
    }
}

impl KernelEvent {
    /// The attempt as the policy evaluator sees it (`None` for a disconnect or a self-protection
    /// action, which no policy decides).
    pub fn request(&self) -> Option<Request<'_>> {
        Some(match &self.detail {
            Detail::File { access, path, .. } => Request::FileOpen {
                path,
                read: matches!(access, FileAccess::Read | FileAccess::ReadWrite),
                write: matches!(access, FileAccess::Write | FileAccess::ReadWrite),
            },
            Detail::FileAction { kind: FileAction::MapExec, path } => Request::Exec { path },
            // Decided by the write rules.
            Detail::FileAction { path, .. } => Request::FileOpen { path, read: false, write: true },
            Detail::Exec { path, .. } => Request::Exec { path },
            Detail::Connect(ConnectTarget::Inet { protocol, addr, port }) => Request::ConnectInet {
                protocol: *protocol,
                addr: match addr {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                },
                port: *port,
            },
            Detail::Connect(ConnectTarget::Unix { path }) => Request::ConnectUnix { path },
            Detail::Connect(ConnectTarget::RawSocket { .. }) => {
                Request::ConnectInet { protocol: RAW_SOCKET_PROTOCOL, addr: [0; 16], port: 0 }
            }
            Detail::Connect(ConnectTarget::Other { .. }) => Request::ConnectOther,
            Detail::Listen(ConnectTarget::Inet { protocol, addr, port }) => Request::ListenInet {
                protocol: *protocol,
                addr: match addr {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                },
                port: *port,
            },
            // An unreadable local address: the default decided.
            Detail::Listen(_) => Request::ConnectOther,
            Detail::Connect(ConnectTarget::Disconnect) | Detail::Guarded(_) => return None,
        })
    }

    /// The audit action name (`file.read`, `file.write`, `file.delete`, …, `process.exec`,
    /// `network.connect`, `guard.*`).
    pub fn action_name(&self) -> &'static str {
        match &self.detail {
            Detail::File { access: FileAccess::Read, .. } => "file.read",
            Detail::File { .. } => "file.write",
            Detail::Exec { .. } => "process.exec",
            Detail::Connect(_) => "network.connect",
            Detail::Listen(_) => "network.listen",
            Detail::Guarded(guarded) => guarded.action_name(),
            Detail::FileAction { kind, .. } => kind.action_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safeclaw_common::{effect, Event};

    fn encode(header: EventHeader, net: NetDetail, path: &[u8]) -> Vec<u8> {
        let mut event = Event {
            header,
            net,
            path_len: path.len() as u32,
            args_len: 0,
            path: [0; safeclaw_common::EVENT_DATA_LEN],
        };
        event.path[..path.len()].copy_from_slice(path);
        // SAFETY: Event is plain data.
        let all = unsafe {
            std::slice::from_raw_parts(&event as *const Event as *const u8, std::mem::size_of::<Event>())
        };
        all[..EVENT_FIXED_LEN + path.len()].to_vec()
    }

    fn repeat_key(act: u8, path: &[u8]) -> RepeatKey {
        let mut key = RepeatKey {
            cgroup_id: 9,
            session_cgroup_id: 0,
            pid: 41,
            tgid: 40,
            uid: 1000,
            gid: 1000,
            rule_id: 2,
            profile: 0,
            policy_generation: 3,
            file_mode: 1,
            path_len: path.len() as u32,
            action: act,
            effect: effect::ALLOW,
            flags: 0,
            comm: *b"cc1\0\0\0\0\0\0\0\0\0\0\0\0\0",
            window: 5,
            _pad: 0,
            net: NetDetail::default(),
            path: [0; REPEAT_PATH_MAX],
        };
        key.path[..path.len()].copy_from_slice(path);
        key
    }

    #[test]
    fn a_counted_repeat_decodes_as_its_first_attempt_at_the_last_time_with_its_destination() {
        let count = RepeatCount { kernel_seq: 12, first_ns: 100, last_ns: 900, repeats: 5 };
        let event = decode_repeated(&repeat_key(action::FILE_READ, b"/src/lib.rs"), &count).unwrap();
        assert_eq!((event.kernel_seq, event.boot_ns, event.tgid, event.pid), (12, 900, 40, 41));
        assert_eq!((event.rule, event.policy_generation, event.effect), (Some(2), 3, Effect::Allow));
        assert_eq!(event.comm, "cc1");
        assert_eq!(
            event.detail,
            Detail::File { access: FileAccess::Read, f_mode: 1, path: b"/src/lib.rs".to_vec() }
        );
        let exec = decode_repeated(&repeat_key(action::PROCESS_EXEC, b"/bin/sh"), &count);
        assert_eq!(exec.unwrap_err(), DecodeError::Action(action::PROCESS_EXEC));
        let mut connect = repeat_key(action::NETWORK_CONNECT, b"");
        let mut addr = [0u8; 16];
        addr[10..].copy_from_slice(&[0xff, 0xff, 127, 0, 0, 1]);
        connect.net = NetDetail { family: AF_INET, port: 443, protocol: 6, _pad: 0, addr };
        let connect = decode_repeated(&connect, &count).unwrap();
        assert_eq!(
            connect.detail,
            Detail::Connect(ConnectTarget::Inet {
                protocol: 6,
                addr: "127.0.0.1".parse().unwrap(),
                port: 443
            })
        );
        let mut long = repeat_key(action::FILE_READ, b"/x");
        long.path_len = REPEAT_PATH_MAX as u32;
        assert!(matches!(decode_repeated(&long, &count), Err(DecodeError::PathLength { .. })));
    }

    #[test]
    fn decodes_a_denied_read() {
        let header = EventHeader {
            kernel_seq: 7,
            action: action::FILE_READ,
            effect: effect::DENY,
            rule_id: 3,
            comm: *b"cat\0\0\0\0\0\0\0\0\0\0\0\0\0",
            ..EventHeader::default()
        };
        let event = decode(&encode(header, NetDetail::default(), b"/home/u/.ssh/id_rsa")).unwrap();
        assert_eq!(event.kernel_seq, 7);
        assert_eq!(event.effect, Effect::Deny);
        assert_eq!(event.rule, Some(3));
        assert_eq!(event.comm, "cat");
        assert_eq!(event.action_name(), "file.read");
        assert_eq!(
            event.detail,
            Detail::File { access: FileAccess::Read, f_mode: 0, path: b"/home/u/.ssh/id_rsa".to_vec() }
        );
    }

    #[test]
    fn ipv4_connect_is_shown_as_ipv4_and_decided_as_mapped() {
        let header =
            EventHeader { action: action::NETWORK_CONNECT, rule_id: NO_RULE, ..EventHeader::default() };
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[169, 254, 169, 254]);
        let net = NetDetail { family: AF_INET, port: 80, protocol: 6, _pad: 0, addr };
        let event = decode(&encode(header, net, b"")).unwrap();
        assert_eq!(event.rule, None);
        assert_eq!(
            event.detail,
            Detail::Connect(ConnectTarget::Inet {
                protocol: 6,
                addr: "169.254.169.254".parse().unwrap(),
                port: 80
            })
        );
        assert_eq!(event.request(), Some(Request::ConnectInet { protocol: 6, addr, port: 80 }));
    }

    #[test]
    fn decodes_file_changes_as_write_requests() {
        let chown = EventHeader {
            action: action::FILE_CHOWN,
            effect: effect::DENY,
            detail_arg: 65534,
            target_pid: u32::MAX,
            ..EventHeader::default()
        };
        let event = decode(&encode(chown, NetDetail::default(), b"/home/u/.bashrc")).unwrap();
        assert_eq!(event.action_name(), "file.chown");
        assert_eq!(
            event.detail,
            Detail::FileAction {
                kind: FileAction::Chown { uid: Some(65534), gid: None },
                path: b"/home/u/.bashrc".to_vec()
            }
        );
        assert_eq!(
            event.request(),
            Some(Request::FileOpen { path: b"/home/u/.bashrc", read: false, write: true })
        );
        let names = [
            (action::FILE_DELETE, "file.delete"),
            (action::FILE_SYMLINK, "file.symlink"),
            (action::FILE_MKDIR, "file.mkdir"),
            (action::FILE_TRUNCATE, "file.truncate"),
            (action::FILE_CHMOD, "file.chmod"),
            (action::PROCESS_MAP_EXEC, "process.map_exec"),
        ];
        for (code, name) in names {
            let header = EventHeader { action: code, ..EventHeader::default() };
            assert_eq!(decode(&encode(header, NetDetail::default(), b"/x")).unwrap().action_name(), name);
        }
    }

    #[test]
    fn decodes_xattr_changes_with_the_attributes_name_as_write_requests() {
        for (code, name) in
            [(action::FILE_SETXATTR, "file.setxattr"), (action::FILE_REMOVEXATTR, "file.removexattr")]
        {
            let header = EventHeader { action: code, effect: effect::DENY, ..EventHeader::default() };
            // As the kernel writes it: the path, its NUL, then the name and its NUL.
            let mut bytes = encode(header, NetDetail::default(), b"/home/u/.bashrc");
            bytes.extend_from_slice(b"\0user.origin\0");
            let event = decode(&bytes).unwrap();
            assert_eq!(event.action_name(), name);
            let expected = if code == action::FILE_SETXATTR {
                FileAction::SetXattr { name: b"user.origin".to_vec() }
            } else {
                FileAction::RemoveXattr { name: b"user.origin".to_vec() }
            };
            assert_eq!(
                event.detail,
                Detail::FileAction { kind: expected, path: b"/home/u/.bashrc".to_vec() }
            );
            assert_eq!(
                event.request(),
                Some(Request::FileOpen { path: b"/home/u/.bashrc", read: false, write: true })
            );
        }
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let header = EventHeader { action: 99, ..EventHeader::default() };
        assert_eq!(decode(&encode(header, NetDetail::default(), b"/x")), Err(DecodeError::Action(99)));
        let header = EventHeader { action: action::FILE_READ, effect: 9, ..EventHeader::default() };
        assert_eq!(decode(&encode(header, NetDetail::default(), b"/x")), Err(DecodeError::Effect(9)));
        let header = EventHeader { action: action::FILE_READ, ..EventHeader::default() };
        let mut bytes = encode(header, NetDetail::default(), b"/abc");
        bytes.truncate(bytes.len() - 2);
        assert_eq!(decode(&bytes), Err(DecodeError::PathLength { claimed: 4, carried: 2 }));
    }
}

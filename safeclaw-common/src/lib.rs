//! Wire types shared by the eBPF programs and the daemon: ring-buffer events and the policy map layout.
//!
//! Everything here is `#[repr(C)]` plain data with explicit sizes; no logic lives here. Values the
//! kernel writes are plain integers (not Rust enums) so that userspace can reject unknown values
//! instead of trusting them.
#![no_std]

/// Bytes reserved for a path: the kernel's PATH_MAX, so `bpf_d_path` never truncates a real path.
pub const PATH_MAX: usize = 4096;
/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Rule id meaning "no rule matched: the policy default decided".
pub const NO_RULE: u32 = u32::MAX;

/// What the task attempted (`EventHeader::action`).
pub mod action {
    pub const FILE_READ: u8 = 1;
    pub const FILE_WRITE: u8 = 2;
    /// An open for both reading and writing: decided by both the read and the write tables.
    pub const FILE_READ_WRITE: u8 = 3;
    pub const PROCESS_EXEC: u8 = 4;
    pub const NETWORK_CONNECT: u8 = 5;
    // Self-protection: always denied inside the scope, whatever the policy says.
    /// A signal to a task outside the scope (`target_pid`, `detail_arg` = signal).
    pub const SIGNAL: u8 = 6;
    /// ptrace of a task outside the scope (`target_pid`, `detail_arg` = ptrace mode).
    pub const PTRACE: u8 = 7;
    /// The bpf() syscall (`detail_arg` = command).
    pub const BPF: u8 = 8;
    /// A write on cgroupfs or bpffs (`detail_arg` = the filesystem's magic).
    pub const PROTECTED_FS_WRITE: u8 = 9;
    /// Loading a kernel module or other kernel-read data (`detail_arg` = the kernel's read id).
    pub const MODULE_LOAD: u8 = 10;
    /// mount, umount, pivot_root or move_mount (`detail_arg` = `mount_op`).
    pub const MOUNT: u8 = 11;
    /// Creating a user namespace (the way to new mount namespaces without root).
    pub const USERNS_CREATE: u8 = 12;
    /// Pushing input into a terminal (`TIOCSTI`) or driving the virtual console (`TIOCLINUX`, whose
    /// selection paste is the same injection): `detail_arg` = the ioctl command.
    pub const TERMINAL_INPUT: u8 = 13;
    // Changes to a file or directory that need no open for write, each decided by the write rules
    // on the path it changes. Numbered from 32 so that other new kinds can be appended below them.
    /// unlink or rmdir of the path.
    pub const FILE_DELETE: u8 = 32;
    /// A symbolic link created at the path.
    pub const FILE_SYMLINK: u8 = 33;
    /// A directory created at the path.
    pub const FILE_MKDIR: u8 = 34;
    /// truncate(2) of the path (an O_TRUNC open is decided at the open, as a write).
    pub const FILE_TRUNCATE: u8 = 35;
    /// chmod of the path (`detail_arg` = the new mode).
    pub const FILE_CHMOD: u8 = 36;
    /// chown of the path (`detail_arg` = the new uid, `target_pid` = the new gid; `u32::MAX`: unchanged).
    pub const FILE_CHOWN: u8 = 37;
    /// A file's code mapped executable (mmap or mprotect with PROT_EXEC) outside an exec, decided by
    /// the exec rules (`detail_arg` = the protection asked for).
    pub const PROCESS_MAP_EXEC: u8 = 38;
    /// A socket about to serve: listen() on a TCP socket, bind() of a UDP socket, decided by the
    /// `network.listen` rules on its local address and port (`net`; an unbound listener is the
    /// any-address of its family, port 0).
    pub const NETWORK_LISTEN: u8 = 39;
    /// An extended attribute set on the path (setxattr, lsetxattr, fsetxattr), decided by the write
    /// rules; the attribute's name follows the path's NUL in the event (never its value).
    pub const FILE_SETXATTR: u8 = 40;
    /// An extended attribute removed from the path (removexattr family), as `FILE_SETXATTR`.
    pub const FILE_REMOVEXATTR: u8 = 41;
}

/// Which mount operation (`EventHeader::detail_arg` of `action::MOUNT`).
pub mod mount_op {
    pub const MOUNT: u32 = 1;
    pub const UMOUNT: u32 = 2;
    pub const PIVOT_ROOT: u32 = 3;
    pub const MOVE_MOUNT: u32 = 4;
    /// chroot: paths would be resolved from another root.
    pub const CHROOT: u32 = 5;
}

/// Outcome of a decision (`EventHeader::effect`, `RuleEntry::effect`, `PolicyHeader::default_effect`).
pub mod effect {
    pub const ALLOW: u8 = 0;
    pub const DENY: u8 = 1;
    /// Allowed, but the audit entry is marked for review.
    pub const AUDIT: u8 = 2;
}

/// Why the kernel decided as it did beyond the policy (`EventHeader::flags`). Each one denies. All 16
/// bits are taken: another flag needs a wider field (and a new wire and repeat-key layout).
pub mod flag {
    /// `bpf_d_path` failed (path longer than PATH_MAX, or unresolvable): denied, never matched on a prefix.
    pub const PATH_UNRESOLVED: u16 = 1 << 0;
    /// No policy was loaded, a map lookup failed, or the policy the decision began under was replaced
    /// before it ended (its tables may have been read while a reload rewrote them): denied.
    pub const NO_POLICY: u16 = 1 << 1;
    /// The daemon put the scope in lockdown (audit log unwritable, fail-closed mode): denied.
    pub const LOCKDOWN: u16 = 1 << 2;
    /// A DFA walk or port search hit its bound or an out-of-range table index: denied.
    pub const TABLE_BOUND: u16 = 1 << 3;
    /// An LSM before us already denied; our verdict is theirs.
    pub const PREVIOUS_LSM_DENIED: u16 = 1 << 4;
    /// The socket address could not be read or has a family the policy does not describe: the
    /// policy default decided.
    pub const UNDECIDED_FAMILY: u16 = 1 << 5;
    /// A datagram sent to an explicit address (sendto/sendmsg) rather than a connect.
    pub const SENDTO: u16 = 1 << 6;
    /// A hard link: decided as a read-write open of the source file, on the source's path (a second
    /// name would otherwise reach the file past its path rules).
    pub const HARD_LINK: u16 = 1 << 7;
    /// A rename: the source decided as a read-write open, then the destination as a write (a
    /// read-write open too for an exchange); the event names the path that decided.
    pub const RENAME: u16 = 1 << 8;
    /// The exec's argv is incomplete: more than `MAX_ARGS` arguments or `ARGS_MAX` bytes, an
    /// unreadable argument, or a syscall whose argv the programs do not know (32-bit compat).
    pub const ARGV_INCOMPLETE: u16 = 1 << 9;
    /// A datagram's address said `AF_UNSPEC` on an IPv4 socket, which the kernel sends as IPv4: it
    /// was decided (and is recorded) as the IPv4 address it carries. (Taken from the top bits down,
    /// so that flags added for other hooks do not collide.)
    pub const UNSPEC_AS_INET: u16 = 1 << 15;
    /// A signal the kernel would send for I/O on a descriptor the agent owns (F_SETOWN/F_SETSIG,
    /// SIGURG), rather than kill().
    pub const SIGIO: u16 = 1 << 14;
    /// The creation of a raw IP or packet socket, which can send to any address past the address
    /// rules: decided by `RAW_SOCKET_PROTOCOL` (`net.family` = the socket's family, `net.protocol`
    /// = socket()'s protocol argument, `detail_arg` = its type).
    pub const RAW_SOCKET: u16 = 1 << 13;
    /// The object is not reachable by its path from the task's root: an unlinked file (its path
    /// ends in ` (deleted)`), or a mount outside the task's mount namespace (a detached `open_tree`
    /// clone, a lazily unmounted tree, another namespace's files through `/proc/PID/root`). Denied
    /// under a deny-by-default policy.
    pub const PATH_UNREACHABLE: u16 = 1 << 10;
    /// An extended attribute in the `security.` or `trusted.` namespace (file capabilities, LSM
    /// labels, overlayfs metadata): never set or removed inside the scope, whatever the rules.
    pub const PROTECTED_XATTR: u16 = 1 << 12;
    /// Code the kernel mapped during an exec from a file not known to be the binary
    /// `bprm_check_security` decided (another inode than `current->mm->exe_file`'s, or one of the
    /// two unreadable): the loader its ELF header names (`PT_INTERP`), decided by the exec rules
    /// like any other `process.map_exec`.
    pub const EXEC_LOADER: u16 = 1 << 11;
}

/// Action classes, each with its own path DFA in the policy maps.
pub mod dfa_class {
    pub const FILE_READ: u32 = 0;
    pub const FILE_WRITE: u32 = 1;
    pub const PROCESS_EXEC: u32 = 2;
    /// Unix-domain socket paths of `network.connect`.
    pub const UNIX_CONNECT: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Indices into the `COUNTERS` array map.
pub mod counter {
    /// Next kernel sequence number (fetch-and-add per event, recorded or not).
    pub const NEXT_SEQ: u32 = 0;
    /// Events the ring buffer had no room for; each of those attempts was denied.
    pub const RINGBUF_FULL: u32 = 1;
    /// Attempts denied because every scratch slot of their CPU was held by other decisions (tasks
    /// preempted mid-hook); each took a kernel sequence number and was not recorded.
    pub const NO_SCRATCH: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Kernel addresses of the sequence counters of `rename_lock` and `mount_lock` (the first word of
/// each `seqlock_t`), which change with every rename and every change of the mount tree: what a path
/// string depends on besides its dentry, its mount and the task's root. The loader fills this
/// read-only global (`PATH_SEQUENCES`) from /proc/kallsyms; 0 where an address is unknown, and then
/// no open is memoized (`safeclaw-ebpf/src/memo.rs`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathSequences {
    pub rename_lock: u64,
    pub mount_lock: u64,
}

/// Byte offsets of the kernel struct members the programs read. They differ between kernels, so
/// the loader fills this read-only global (`OFFSETS`) from the running kernel's BTF before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub file_f_path: u64,
    pub file_f_mode: u64,
    pub linux_binprm_file: u64,
    pub socket_type: u64,
    pub task_struct_tgid: u64,
    pub task_struct_cgroups: u64,
    pub css_set_dfl_cgrp: u64,
    pub cgroup_level: u64,
    pub cgroup_ancestors: u64,
    pub cgroup_kn: u64,
    pub kernfs_node_id: u64,
    pub super_block_s_magic: u64,
    pub msghdr_msg_name: u64,
    pub msghdr_msg_namelen: u64,
    pub pt_regs_orig_ax: u64,
    pub pt_regs_si: u64,
    pub pt_regs_dx: u64,
    // The bounded dentry walk of hooks where `bpf_d_path` is not allowed.
    pub dentry_d_parent: u64,
    pub dentry_d_name: u64,
    pub qstr_name: u64,
    pub mount_mnt: u64,
    pub mount_mnt_parent: u64,
    pub mount_mnt_mountpoint: u64,
    pub vfsmount_mnt_root: u64,
    pub task_struct_fs: u64,
    pub fs_struct_root: u64,
    pub path_mnt: u64,
    pub path_dentry: u64,
    // The family of a socket (network hooks decide the address the kernel will use).
    pub socket_sk: u64,
    pub sock_common_skc_family: u64,
    // Whether an object is reachable by its path (`flag::PATH_UNREACHABLE`), and O_TRUNC opens.
    pub file_f_flags: u64,
    /// `dentry.d_hash` plus `hlist_bl_node.pprev`: null once the dentry is unhashed (unlinked).
    pub dentry_d_hash_pprev: u64,
    pub task_struct_nsproxy: u64,
    pub nsproxy_mnt_ns: u64,
    pub mount_mnt_ns: u64,
    pub vm_area_struct_vm_file: u64,
    // The socket a Unix-domain connect or send reaches, named by the path it was bound at.
    /// `unix_sock.path`: where the socket was bound (null dentry: abstract or unbound).
    pub unix_sock_path: u64,
    /// `unix_sock.peer`: the socket a datagram socket is connected to.
    pub unix_sock_peer: u64,
    // The local address a TCP socket listens on.
    pub sock_common_skc_rcv_saddr: u64,
    pub sock_common_skc_v6_rcv_saddr: u64,
    pub sock_common_skc_num: u64,
    // The mounts of a dentry's filesystem, for hooks that get a dentry without its mount (xattrs).
    pub dentry_d_sb: u64,
    /// `super_block.s_mounts`: the list of every mount of the filesystem, linked by
    /// `mount.mnt_instance`.
    pub super_block_s_mounts: u64,
    pub mount_mnt_instance: u64,
    // The binary an exec decided (`current->mm->exe_file`), told apart from its loader by inode.
    pub task_struct_mm: u64,
    pub mm_struct_exe_file: u64,
    pub file_f_inode: u64,
    // Who the current task is, read with plain loads through its BTF pointer (`Pending::start`).
    pub task_struct_pid: u64,
    pub task_struct_comm: u64,
    pub task_struct_cred: u64,
    pub cred_uid: u64,
    pub cred_gid: u64,
}

/// Bytes of an exec's argv (NUL-terminated strings) recorded after its path.
pub const ARGS_MAX: usize = 1024;
/// Arguments of an exec recorded, at most.
pub const MAX_ARGS: u32 = 32;
/// Event buffer: the path, then for an exec its NUL and argv. Twice `ARGS_MAX` past `PATH_MAX`, so the
/// verifier can bound every argument copy by adding the bounds of its offset and its size.
pub const EVENT_DATA_LEN: usize = PATH_MAX + 2 * ARGS_MAX;

/// Ring buffer size: 8 MiB holds about 50,000 events with short paths, half a second at 100,000 events/s
/// (a commit cycle is about 130 ms). The daemon maps the data twice (wrap-around), so it counts 16 MiB of
/// the daemon's RSS; a larger ring buys burst headroom with memory the daemon's budget does not have.
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

/// Longest path (bytes, without NUL) whose allowed opens are counted as repeats; longer paths are
/// always recorded one by one. Bounds the `RepeatKey` the kernel builds, hashes and compares per open.
pub const REPEAT_PATH_MAX: usize = 256;
/// Distinct repeated attempts counted at once (`REPEATS` entries). When it is full, attempts are
/// recorded one by one as without counting.
pub const MAX_REPEATS: u32 = 4096;

/// Two policy slots: the daemon fills the inactive one, then flips `Scope::active_slot`.
pub const POLICY_SLOTS: u32 = 2;
/// Profiles per policy slot: the base profile (0) and one per `agents:` entry.
pub const MAX_PROFILES: u32 = 32;
/// Registered sessions whose profile the kernel knows (`SESSION_PROFILES` entries).
pub const MAX_SESSIONS: u32 = 4096;
/// Rules per policy slot (all profiles together).
pub const MAX_RULES: u32 = 1 << 16;
/// DFA transition entries per slot (all classes together). Array maps round values up to 8 bytes,
/// so this costs 8 MiB of kernel memory per slot.
pub const MAX_DFA_TRANSITIONS: u32 = 1 << 20;
/// DFA states per slot (all classes together).
pub const MAX_DFA_STATES: u32 = 1 << 18;
/// Port intervals per slot.
pub const MAX_PORT_INTERVALS: u32 = 1 << 16;
/// LPM entries (all slots).
pub const MAX_NET_PREFIXES: u32 = 1 << 16;
/// Binary-search steps over one prefix's port intervals: 2^17 > MAX_PORT_INTERVALS.
pub const PORT_SEARCH_STEPS: u32 = 17;

/// Which tasks are in scope, and the daemon's switches. Single entry of the `SCOPE` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// cgroup id (inode number) of the tagged agent cgroup.
    pub cgroup_id: u64,
    /// Its depth below the cgroup2 root (root = 0), for `bpf_get_current_ancestor_cgroup_id`.
    pub level: u32,
    /// Policy slot the programs read (0 or 1).
    pub active_slot: u32,
    /// Non-zero: deny every in-scope action (set while the audit log cannot be written).
    pub lockdown: u32,
    /// Non-zero once a scope is configured; zero means every task is out of scope.
    pub enabled: u32,
    /// Only programs loaded with this `PROGRAM_EPOCH` decide; others return at once. A restarted
    /// daemon attaches its programs beside the previous daemon's, then hands over in one update.
    pub epoch: u32,
    /// Milliseconds within which repeats of an allowed open are counted in `REPEATS` instead of
    /// recorded one by one (docs/audit-format.md, "Repeated attempts"); 0 turns that off.
    pub repeat_window_ms: u32,
}

/// Where one class's DFA sits in the slot's tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DfaDesc {
    /// Index of this DFA's state 0 row in the slot's transition region.
    pub trans_base: u32,
    /// Index of this DFA's state 0 in the slot's accept region.
    pub accept_base: u32,
    /// Number of byte classes (row width), 1..=256.
    pub class_count: u32,
    pub state_count: u32,
    pub start_state: u32,
    /// A state from which no accept is reachable; the walk stops there. `u32::MAX` if none.
    pub dead_state: u32,
}

/// Header of one profile in one slot (entry `slot * MAX_PROFILES + profile` of the `POLICY` array
/// map). The profile's tables sit in the slot's regions at the offsets given here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyHeader {
    pub dfa: [DfaDesc; dfa_class::COUNT as usize],
    /// Index of this profile's rule 0 in the slot's `RULES` region.
    pub rule_base: u32,
    /// Effect when no rule matches.
    pub default_effect: u8,
    pub _pad: [u8; 3],
    /// Increments with every load; copied into events.
    pub generation: u32,
    /// Non-zero when the slot holds a complete policy.
    pub loaded: u32,
}

/// The profile a registered session is decided by, per policy slot (value of the `SESSION_PROFILES`
/// hash map, keyed by the session's cgroup id). Tasks of unregistered sessions get profile 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionProfiles {
    pub profile: [u32; POLICY_SLOTS as usize],
}

/// Per-rule data the kernel needs (entry `slot * MAX_RULES + rule_base + rule` of `RULES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    pub effect: u8,
    pub _pad: [u8; 3],
}

/// Byte → byte-class table of one DFA (entry `(slot * MAX_PROFILES + profile) * dfa_class::COUNT +
/// class` of `DFA_CLASSES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteClasses(pub [u8; 256]);

/// LPM trie key for network rules: slot, profile and protocol are the first 24 bits of the prefix,
/// then the IPv6 address (IPv4 as IPv4-mapped, `::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetKeyData {
    pub slot: u8,
    pub profile: u8,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub protocol: u8,
    pub addr: [u8; 16],
}
/// `NetKeyData::protocol` of a raw IP or packet socket's creation, looked up at address `::`, port 0:
/// only rules for every address and port hold an entry for it.
pub const RAW_SOCKET_PROTOCOL: u8 = 255;
/// Or'ed into `NetKeyData::protocol` (`IPPROTO_TCP`, `IPPROTO_UDP`) for a listen: listen rules have
/// entries of their own in the same trie.
pub const LISTEN_PROTOCOL: u8 = 0x80;
/// Prefix bits taken by `slot`, `profile` and `protocol` in `NetKeyData`.
pub const NET_KEY_HEADER_BITS: u32 = 24;

/// The port intervals that apply to one prefix (value of the `NET_PREFIXES` trie).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPrefixValue {
    /// First interval in the slot's `PORT_INTERVALS` region.
    pub first: u32,
    /// Number of intervals, sorted by `lo`, disjoint; ports in none of them fall to the default.
    pub count: u32,
}

/// A port range and the first rule that matches it for the prefix (entry of `PORT_INTERVALS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInterval {
    pub lo: u16,
    pub hi: u16,
    pub rule: u32,
}

/// Socket address details of a connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetDetail {
    /// `AF_INET`, `AF_INET6` or `AF_UNIX`; 0 for non-network events.
    pub family: u16,
    /// Destination port, host byte order.
    pub port: u16,
    /// `IPPROTO_TCP` / `IPPROTO_UDP` derived from the socket type; 0 if neither.
    pub protocol: u16,
    pub _pad: u16,
    /// IPv6 address, or IPv4-mapped IPv6 for `AF_INET` (as the policy tables see it).
    pub addr: [u8; 16],
}

/// Fixed part of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// Global sequence number; a gap means events the ring buffer could not take (all denied).
    pub kernel_seq: u64,
    /// `bpf_ktime_get_boot_ns` at the hook.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    /// The task's ancestor cgroup two levels below the agent cgroup (`agents/NAME/SESSION`): the
    /// session the launcher registered, even from a sub-cgroup. 0 when the task sits higher up.
    pub session_cgroup_id: u64,
    /// Nanoseconds spent deciding (scope check to verdict).
    pub decide_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Matched rule index within the profile, or `NO_RULE` when the default decided.
    pub rule_id: u32,
    /// Profile that decided (0: base; see `SessionProfiles`).
    pub profile: u32,
    /// `PolicyHeader::generation` of the slot that decided.
    pub policy_generation: u32,
    /// `f_mode` for file opens, 0 otherwise.
    pub file_mode: u32,
    /// Target task of a signal or ptrace (its tgid), 0 otherwise.
    pub target_pid: u32,
    /// Action-specific number (see `action`), 0 otherwise.
    pub detail_arg: u32,
    pub action: u8,
    pub effect: u8,
    pub flags: u16,
    pub comm: [u8; COMM_LEN],
    pub _pad: u32,
}

/// A whole event as built in the per-CPU scratch map. Only the first `EVENT_FIXED_LEN + path_len`
/// bytes go onto the ring buffer, plus `1 + args_len` for an exec with its argv.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub header: EventHeader,
    pub net: NetDetail,
    /// Bytes of `path` in use, without the trailing NUL.
    pub path_len: u32,
    /// For an exec, bytes of argv after the path's NUL: `argc` strings, each NUL-terminated.
    pub args_len: u32,
    /// File or executable path, or Unix socket path (< PATH_MAX bytes); an exec's argv follows it.
    pub path: [u8; EVENT_DATA_LEN],
}

/// Size of an event before its path bytes.
pub const EVENT_FIXED_LEN: usize = core::mem::size_of::<Event>() - EVENT_DATA_LEN;

/// What makes two allowed opens, or two allowed connects, the same attempt (held in each `REPEATS`
/// value): everything an audit entry says about it except its time. `path` holds `path_len` bytes, zero
/// after them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    pub cgroup_id: u64,
    pub session_cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub rule_id: u32,
    pub profile: u32,
    pub policy_generation: u32,
    pub file_mode: u32,
    pub path_len: u32,
    pub action: u8,
    pub effect: u8,
    pub flags: u16,
    pub comm: [u8; COMM_LEN],
    /// `boot_ns / window`: each window is counted under its own key, so an attempt after one closes
    /// starts the next count at once, while the daemon still has the closed one to record.
    pub window: u32,
    pub _pad: u32,
    /// A connect's destination (all zero for an open).
    pub net: NetDetail,
    pub path: [u8; REPEAT_PATH_MAX],
}

/// The repeats of one recorded attempt (value of `REPEATS`). The kernel creates it when it records the
/// first attempt of a window (`RepeatKey::window`) and adds to it during that window only; the daemon
/// records and deletes it once the window (and a margin) has passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepeatCount {
    /// `kernel_seq` of the recorded first attempt.
    pub kernel_seq: u64,
    /// `boot_ns` of the recorded first attempt.
    pub first_ns: u64,
    /// `boot_ns` of the latest repeat.
    pub last_ns: u64,
    /// Attempts after the first, counted and allowed without a record of their own.
    pub repeats: u64,
}

/// A value of the `REPEATS` hash map, whose key is a 64-bit digest of `key` computed by the kernel: a
/// lookup by an attempt compares `key` with it in full, so a digest shared by two attempts only makes
/// the second one recorded one by one; the per-CPU memo instead compares `count.kernel_seq`, which no
/// other entry ever has.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepeatEntry {
    pub key: RepeatKey,
    pub count: RepeatCount,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all plain-data #[repr(C)] types with no padding the kernel could leave uninitialised
    // that we would read as anything but bytes.
    unsafe impl aya::Pod for Scope {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for PathSequences {}
    unsafe impl aya::Pod for PolicyHeader {}
    unsafe impl aya::Pod for SessionProfiles {}
    unsafe impl aya::Pod for RuleEntry {}
    unsafe impl aya::Pod for ByteClasses {}
    unsafe impl aya::Pod for NetKeyData {}
    unsafe impl aya::Pod for NetPrefixValue {}
    unsafe impl aya::Pod for PortInterval {}
    unsafe impl aya::Pod for RepeatKey {}
    unsafe impl aya::Pod for RepeatCount {}
    unsafe impl aya::Pod for RepeatEntry {}
}

//! Building one event per in-scope decision in the per-CPU scratch slot, and emitting it. An event
//! the ring buffer cannot take turns its action into a denial: what cannot be recorded must not happen.
use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_d_path, bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, generated,
    },
};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr::{read_volatile, write_volatile};

use safeclaw_common::{
    action, counter, effect, flag, Event, NetDetail, RepeatCount, Scope, ARGS_MAX, EVENT_DATA_LEN,
    EVENT_FIXED_LEN, MAX_ARGS, PATH_MAX,
};

use crate::atomic::fetch_add;
use crate::decide::{Slot, Verdict};
use crate::diag::{self, Miss};
use crate::kernel;
use crate::maps::{COUNTERS, EVENTS, SCRATCH};
use crate::memo::{self, OpenInputs};
use crate::repeats;
use crate::scratch::Claim;

/// `d_path` writes a path at the end of the buffer it is given, then the helper moves it to the start:
/// most paths fit in this many bytes, which keeps the write beside the event's header; a longer one is
/// resolved again into all PATH_MAX bytes.
const SHORT_PATH: usize = 512;
/// What `bpf_d_path` returns for a path longer than its buffer (-ENAMETOOLONG).
const NAME_TOO_LONG: i64 = -36;

/// What an LSM hook returns to deny.
pub const DENIED: i32 = -1; // -EPERM

const AF_UNSPEC: u16 = 0;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_STREAM: i16 = 1;
const SOCK_DGRAM: i16 = 2;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
/// `sizeof(struct sockaddr_un.sun_path)`.
const SUN_PATH_LEN: usize = 108;

/// What a connect reaches, once its address is read.
pub enum Destination {
    /// AF_INET or AF_INET6; see `Pending::net`.
    Inet,
    /// An abstract AF_UNIX name, this many bytes of `@name` in `Pending::path`.
    UnixAbstract(u32),
    /// An AF_UNIX path: decided on the socket it reaches (`unix_stream_connect`, `unix_may_send`),
    /// never on the name as written.
    UnixPath,
    Disconnect,
    Undecided,
}

/// A decision under construction in its scratch slot (too large for the 512-byte BPF stack): the event, and
/// what deciding it keeps in map memory rather than on the stack. The verifier does not track what map memory
/// holds, so paths that left different values there meet again in one state, and the code after them is
/// verified once instead of once per path.
#[repr(C)]
pub struct Scratch {
    event: Event,
    /// What an open's path string and decision rest on (`memo::OpenInputs`); `UNUSABLE` for every
    /// other attempt.
    inputs: OpenInputs,
    /// What `Pending::opaque` passes through (first the slot's index: `Claim::forget_which`); written
    /// through shared references too.
    opaque: UnsafeCell<u32>,
}

// SAFETY: a slot's value is used by the one decision that claimed it (`scratch.rs`).
unsafe impl Sync for Scratch {}

/// An in-scope decision under construction.
pub struct Pending {
    /// The claimed slot's scratch: one pointer rather than one per field, for hooks whose stack is
    /// near the verifier's 512 bytes.
    scratch: &'static mut Scratch,
    scope: &'static Scope,
    slot: Slot,
    previous: i32,
    started_ns: u64,
    /// Whether an allowed outcome may be counted as a repeat of an identical recorded one.
    repeatable: bool,
    /// The scratch slot, given back when the decision ends however it ends.
    claim: Claim,
}

impl Pending {
    /// Claims a scratch slot of this CPU and fills the identity fields of its event. `None` if every
    /// slot is held by another decision (tasks preempted mid-hook) or the scratch cannot be read, in
    /// which case the caller denies: the attempt takes a kernel sequence number it is never recorded
    /// under, which the daemon logs as a gap.
    #[inline(always)]
    pub fn start(scope: &'static Scope, previous: i32) -> Option<Self> {
        // SAFETY: bpf helpers with no preconditions.
        let started_ns = unsafe { bpf_ktime_get_boot_ns() };
        let Some(mut claim) = Claim::take() else {
            next(counter::NEXT_SEQ);
            next(counter::NO_SCRATCH);
            diag::miss(Miss::NoScratch, (bpf_get_current_pid_tgid() >> 32) as u32);
            return None;
        };
        let Some(scratch) = SCRATCH.get_ptr_mut(claim.slot()) else {
            next(counter::NEXT_SEQ);
            return None;
        };
        // SAFETY: the claimed slot's scratch value: no other decision uses it until `claim` is
        // dropped, not even one that runs while this task is preempted (`scratch.rs`).
        let scratch = unsafe { &mut *scratch };
        claim.forget_which(scratch.opaque.get());
        let Scratch { event, inputs, opaque: _ } = scratch;
        *inputs = OpenInputs::UNUSABLE;
        let header = &mut event.header;
        header.boot_ns = started_ns;
        let level = kernel::write_identity(header);
        // The session cgroup is two levels below the agent cgroup. A task in the session cgroup
        // itself (every task but those in cgroups an agent made below it) has its id already, and a
        // task above that level is in no session (0, as the helper would say).
        let session_level = scope.level as i32 + 2;
        header.session_cgroup_id = match level.cmp(&session_level) {
            core::cmp::Ordering::Equal => header.cgroup_id,
            core::cmp::Ordering::Less => 0,
            // SAFETY: plain helper; any level is valid input.
            core::cmp::Ordering::Greater => unsafe { bpf_get_current_ancestor_cgroup_id(session_level) },
        };
        header.file_mode = 0;
        header.target_pid = 0;
        header.detail_arg = 0;
        header.flags = 0;
        event.net = NetDetail::default();
        event.path_len = 0;
        event.args_len = 0;
        let slot = Slot::of_session(scope.active_slot & 1, header.session_cgroup_id);
        header.profile = slot.profile;
        header.policy_generation = slot.header.map_or(0, |h| h.generation);
        Some(Pending { scratch, scope, slot, previous, started_ns, repeatable: false, claim })
    }

    #[inline(always)]
    pub fn slot(&self) -> Slot {
        self.slot
    }

    #[inline(always)]
    pub fn path(&self) -> &[u8; PATH_MAX] {
        // SAFETY: the event buffer starts with the PATH_MAX bytes of the path.
        unsafe { &*(self.scratch.event.path.as_ptr() as *const [u8; PATH_MAX]) }
    }

    /// Bytes of the path in the event (0 until one is resolved).
    #[inline(always)]
    pub fn path_len(&self) -> u32 {
        self.scratch.event.path_len
    }

    #[inline(always)]
    pub fn net(&self) -> &NetDetail {
        &self.scratch.event.net
    }

    /// The event's action, read back from map memory (`Scratch`): one verifier state for every
    /// action the hook may have set.
    #[inline(always)]
    pub fn action(&self) -> u8 {
        // SAFETY: a field of the live map value.
        unsafe { read_volatile(&self.scratch.event.header.action) }
    }

    /// `value`, passed through map memory (`Scratch`): the verifier knows nothing of it but its type,
    /// so the paths that computed different values go on as one.
    #[inline(always)]
    pub fn opaque(&self, value: u32) -> u32 {
        let opaque = self.scratch.opaque.get();
        // SAFETY: `opaque` points into this decision's scratch value, which only it uses.
        unsafe {
            write_volatile(opaque, value);
            read_volatile(opaque)
        }
    }

    /// Reads the memo inputs of `file`'s open with `open_flags` (`memo::OpenInputs::read`).
    #[inline(always)]
    pub fn read_open_inputs(&mut self, file: *const u8, open_flags: u32) {
        self.scratch.inputs = OpenInputs::read(file, open_flags);
    }

    /// The inputs a connect's decision rests on (`memo::OpenInputs::CONNECT`).
    #[inline(always)]
    pub fn use_connect_inputs(&mut self) {
        self.scratch.inputs = OpenInputs::CONNECT;
    }

    /// The open's file as read with its inputs: its dentry and mount.
    #[inline(always)]
    pub fn open_file(&self) -> (u64, u64) {
        (self.scratch.inputs.dentry, self.scratch.inputs.vfsmount)
    }

    /// Makes the inputs unusable: the path does not reach the object the usual way.
    #[inline(always)]
    pub fn forget_open_inputs(&mut self) {
        self.scratch.inputs.forget();
    }

    #[inline(always)]
    pub fn set_file(&mut self, act: u8, mode: u32) {
        self.scratch.event.header.action = act;
        self.scratch.event.header.file_mode = mode;
    }

    /// An open or a connect: allowed, it may be counted as a repeat instead of recorded (`RepeatCount`).
    #[inline(always)]
    pub fn count_repeats(&mut self) {
        self.repeatable = true;
    }

    /// The window length of counted repeats (0: off).
    #[inline(always)]
    fn repeat_window_ns(&self) -> u64 {
        u64::from(self.scope.repeat_window_ms) * 1_000_000
    }

    /// Counts this open or connect as a repeat of the memo's key if it is identical to the remembered
    /// attempt in every input of its path and its decision (`memo::matching`), an open's path still
    /// `reaches` its object, and that key is still counted in `REPEATS`; the caller then returns 0
    /// without resolving the path or deciding. Only for an attempt `repeatable` as itself (an open by
    /// its path, no O_TMPFILE, no exec; a connect, not a send: the caller checked), with nothing that
    /// would deny it whatever the rules say.
    #[inline(always)]
    pub fn counted_by_memo(&self, reaches: impl FnOnce() -> bool) -> bool {
        let window_ns = self.repeat_window_ns();
        if !self.repeatable
            || window_ns == 0
            || self.scope.lockdown != 0
            || self.previous != 0
            || self.slot.header.is_none()
        {
            return false;
        }
        let window = (self.started_ns / window_ns) as u32;
        match memo::matching(
            &self.scratch.event.header,
            &self.scratch.event.net,
            &self.scratch.inputs,
            self.slot.index,
            window_ns,
            window,
        ) {
            Some((digest, kernel_seq)) => {
                reaches() && repeats::counted_by_sequence(digest, kernel_seq, self.started_ns)
            }
            None => false,
        }
    }

    #[inline(always)]
    pub fn set_exec(&mut self) {
        self.scratch.event.header.action = action::PROCESS_EXEC;
    }

    /// A TCP listen on `addr` (IPv4-mapped for IPv4), `port`, of a socket of `family`.
    #[inline(always)]
    pub fn set_listen(&mut self, family: u16, addr: [u8; 16], port: u16) {
        self.scratch.event.header.action = action::NETWORK_LISTEN;
        let net = &mut self.scratch.event.net;
        net.family = family;
        net.protocol = IPPROTO_TCP;
        net.addr = addr;
        net.port = port;
    }

    /// Reads the local address a UDP socket of `family` asks to bind (`None`: unreadable, too short
    /// or another family). IPv4 accepts `AF_UNSPEC` as the kernel does (`INADDR_ANY` only; the
    /// kernel refuses others).
    #[inline(always)]
    pub fn read_bind_address(&mut self, family: u16, address: *const u8, addrlen: i32) -> Option<()> {
        self.scratch.event.header.action = action::NETWORK_LISTEN;
        self.scratch.event.net.family = family;
        self.scratch.event.net.protocol = IPPROTO_UDP;
        let destination = match family {
            AF_INET if addrlen >= 16 => self.read_inet4(address),
            AF_INET6 if addrlen >= 24 => self.read_inet6(address),
            _ => Destination::Undecided,
        };
        matches!(destination, Destination::Inet).then_some(())
    }

    /// A connect or send to the Unix socket bound at the path the caller then resolves.
    #[inline(always)]
    pub fn set_unix_peer(&mut self) {
        self.scratch.event.header.action = action::NETWORK_CONNECT;
        self.scratch.event.net.family = AF_UNIX;
    }

    /// The creation of a raw IP or packet socket: `socket(family, kind, protocol)`.
    #[inline(always)]
    pub fn set_raw_socket(&mut self, family: u16, kind: u32, protocol: u16) {
        self.scratch.event.header.action = action::NETWORK_CONNECT;
        self.scratch.event.header.detail_arg = kind;
        self.scratch.event.header.flags |= flag::RAW_SOCKET;
        self.scratch.event.net.family = family;
        self.scratch.event.net.protocol = protocol;
    }

    /// An action on a file other than an open (`safeclaw_common::action::FILE_DELETE` and after),
    /// with its action-specific numbers.
    #[inline(always)]
    pub fn set_file_action(&mut self, act: u8, detail_arg: u32, target_pid: u32) {
        self.set_guarded(act, target_pid, detail_arg);
    }

    /// A self-protection action (`safeclaw_common::action::SIGNAL` and after).
    #[inline(always)]
    pub fn set_guarded(&mut self, act: u8, target_pid: u32, detail_arg: u32) {
        let header = &mut self.scratch.event.header;
        header.action = act;
        header.target_pid = target_pid;
        header.detail_arg = detail_arg;
    }

    #[inline(always)]
    pub fn add_flags(&mut self, flags: u16) {
        self.scratch.event.header.flags |= flags;
    }

    /// Resolves `file`'s full path into the event. `None` if it does not fit PATH_MAX or cannot be
    /// resolved.
    #[inline(always)]
    pub fn resolve_file_path(&mut self, file: *const u8) -> Option<u32> {
        let buf = self.scratch.event.path.as_mut_ptr();
        // SAFETY: `file` is the hook's trusted pointer; buf is PATH_MAX bytes of map memory.
        let mut written =
            unsafe { bpf_d_path(kernel::file_path(file) as *mut path, buf as *mut _, SHORT_PATH as u32) };
        if written == NAME_TOO_LONG {
            // SAFETY: as above.
            written =
                unsafe { bpf_d_path(kernel::file_path(file) as *mut path, buf as *mut _, PATH_MAX as u32) };
        }
        if written <= 0 {
            return None;
        }
        // `written` counts the trailing NUL.
        let len = (written as u32 - 1) & (PATH_MAX as u32 - 1);
        self.scratch.event.path_len = len;
        Some(len)
    }

    /// Resolves the path of `dentry`, in the mount of `vfsmount`, with the bounded walk of `walk.rs`.
    #[inline(always)]
    pub fn resolve_dentry_path(&mut self, dentry: u64, vfsmount: u64) -> Option<u32> {
        self.scratch.event.path_len = 0;
        // SAFETY: the event buffer starts with the PATH_MAX bytes of the path.
        let path = unsafe { &mut *(self.scratch.event.path.as_mut_ptr() as *mut [u8; PATH_MAX]) };
        let len = crate::walk::dentry_path(dentry, vfsmount, path, self.claim.slot())?;
        self.scratch.event.path_len = len;
        Some(len)
    }

    #[inline(always)]
    pub fn resolve_exec_path(&mut self, bprm: *const u8) -> Option<u32> {
        self.resolve_file_path(kernel::bprm_file(bprm))
    }

    /// Copies the exec's argv (after the path and its NUL): up to `MAX_ARGS` strings and `ARGS_MAX`
    /// bytes, flagged `ARGV_INCOMPLETE` when any of it could not be recorded.
    #[inline(always)]
    pub fn capture_argv(&mut self, path_len: u32) {
        let Some(argv) = kernel::exec_argv() else {
            self.scratch.event.header.flags |= flag::ARGV_INCOMPLETE;
            return;
        };
        let mut walk = ArgvWalk {
            argv,
            buf: self.scratch.event.path.as_mut_ptr(),
            start: (path_len & (PATH_MAX as u32 - 1)) + 1,
            used: 0,
            ended: 0,
            incomplete: 0,
        };
        // SAFETY: `argv_step` matches bpf_loop's callback signature and `walk` outlives the call.
        let looped = unsafe {
            generated::bpf_loop(MAX_ARGS, argv_step as *mut c_void, &mut walk as *mut _ as *mut c_void, 0)
        };
        if looped < 0 || walk.incomplete != 0 || walk.ended == 0 {
            self.scratch.event.header.flags |= flag::ARGV_INCOMPLETE;
        }
        self.scratch.event.args_len = walk.used;
    }

    /// Copies a NUL-terminated kernel string of at most `XATTR_NAME_MAX` bytes (an extended
    /// attribute's name) after the path and its NUL, where an exec's argv goes. `None` if unreadable.
    #[inline(always)]
    pub fn capture_name(&mut self, path_len: u32, name: u64) -> Option<()> {
        const NAME_ROOM: u32 = 256;
        const _: () = assert!(PATH_MAX + NAME_ROOM as usize <= EVENT_DATA_LEN);
        let end = masked::<{ PATH_MAX as u64 - 1 }>(path_len);
        // SAFETY: `end` < PATH_MAX, inside the event buffer (a raw write: an indexing bounds check
        // would leave a panic path the verifier rejects).
        unsafe { *self.scratch.event.path.as_mut_ptr().add(end as usize) = 0 };
        let start = end + 1;
        // SAFETY: `start` <= PATH_MAX and the copy is at most NAME_ROOM bytes, inside the event
        // buffer; `name` is a kernel address the helper reads safely.
        let copied = unsafe {
            generated::bpf_probe_read_kernel_str(
                self.scratch.event.path.as_mut_ptr().add(start as usize) as *mut c_void,
                NAME_ROOM,
                name as *const c_void,
            )
        };
        if copied <= 0 {
            return None;
        }
        self.scratch.event.args_len = copied as u32 & (NAME_ROOM * 2 - 1);
        Some(())
    }

    /// Reads the connect's (or, `sending`, a datagram's) address into the event.
    #[inline(always)]
    pub fn read_sockaddr(
        &mut self,
        sock: *const u8,
        address: *const u8,
        addrlen: i32,
        sending: bool,
    ) -> Destination {
        self.scratch.event.header.action = action::NETWORK_CONNECT;
        // SAFETY: `address` is the kernel's copy of the user's sockaddr (a sockaddr_storage).
        let Ok(family) = (unsafe { bpf_probe_read_kernel(address as *const u16) }) else {
            return Destination::Undecided;
        };
        self.scratch.event.net.family = family;
        self.scratch.event.net.protocol = match kernel::socket_type(sock) {
            SOCK_STREAM => IPPROTO_TCP,
            SOCK_DGRAM => IPPROTO_UDP,
            _ => 0,
        };
        match family {
            AF_INET if addrlen >= 16 => self.read_inet4(address),
            // udp_sendmsg and raw_sendmsg send an AF_UNSPEC address on an IPv4 socket as IPv4 (a
            // connect with it disconnects instead): decide the address the kernel will use.
            AF_UNSPEC if sending && addrlen >= 16 && kernel::socket_family(sock) == AF_INET => {
                self.scratch.event.net.family = AF_INET;
                self.scratch.event.header.flags |= flag::UNSPEC_AS_INET;
                self.read_inet4(address)
            }
            AF_INET6 if addrlen >= 24 => self.read_inet6(address),
            AF_UNIX if addrlen > 2 => self.read_unix_path(address, addrlen as u32 - 2),
            // A connect disconnects; an IPv6 datagram goes to the connected peer, decided at connect.
            AF_UNSPEC => Destination::Disconnect,
            _ => Destination::Undecided,
        }
    }

    /// A `sockaddr_in6` (at least 24 bytes in the kernel's copy).
    #[inline(always)]
    fn read_inet6(&mut self, address: *const u8) -> Destination {
        // SAFETY: sockaddr_in6: port at 2, address at 8; within the kernel's copy.
        let port = unsafe { bpf_probe_read_kernel(address.add(2) as *const u16) };
        let addr = unsafe { bpf_probe_read_kernel(address.add(8) as *const [u8; 16]) };
        let (Ok(port), Ok(addr)) = (port, addr) else {
            return Destination::Undecided;
        };
        self.scratch.event.net.port = u16::from_be(port);
        self.scratch.event.net.addr = addr;
        Destination::Inet
    }

    /// A `sockaddr_in` (at least 16 bytes in the kernel's copy), keyed IPv4-mapped.
    #[inline(always)]
    fn read_inet4(&mut self, address: *const u8) -> Destination {
        // SAFETY: sockaddr_in: port at 2, address at 4; within the kernel's copy.
        let port = unsafe { bpf_probe_read_kernel(address.add(2) as *const u16) };
        let addr = unsafe { bpf_probe_read_kernel(address.add(4) as *const [u8; 4]) };
        let (Ok(port), Ok(addr)) = (port, addr) else {
            return Destination::Undecided;
        };
        let net = &mut self.scratch.event.net;
        net.port = u16::from_be(port);
        net.addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3]];
        Destination::Inet
    }

    /// Copies an abstract `sun_path` (leading NUL) into the event as `@name`; a path is left to the
    /// hooks that see the socket it reaches.
    #[inline(always)]
    fn read_unix_path(&mut self, address: *const u8, given: u32) -> Destination {
        // The kernel copied exactly `addrlen` bytes of the user's address; read no further. The mask
        // is applied in asm so that LLVM cannot drop it: it is what the verifier bounds the read by.
        let given = masked::<127>(if given > SUN_PATH_LEN as u32 { SUN_PATH_LEN as u32 } else { given });
        let buf = self.scratch.event.path.as_mut_ptr();
        // SAFETY: sun_path starts at offset 2 of the kernel's copy; reads are bounded by `given`
        // (masked so the verifier sees the bound) and land in the PATH_MAX-byte event buffer.
        let first = unsafe { bpf_probe_read_kernel(address.add(2)) };
        let len = match first {
            Err(_) => return Destination::Undecided,
            Ok(0u8) => {
                let copied = unsafe {
                    generated::bpf_probe_read_kernel(buf as *mut _, given, address.add(2) as *const _)
                };
                if copied < 0 {
                    return Destination::Undecided;
                }
                self.scratch.event.path[0] = b'@';
                given
            }
            Ok(_) => return Destination::UnixPath,
        };
        let len = len & (PATH_MAX as u32 - 1);
        self.scratch.event.path_len = len;
        Destination::UnixAbstract(len)
    }

    /// Sets the earlier LSMs' verdict, for a hook that started this `Pending` with 0 because a
    /// `bpf_loop` callback reaches it through a pointer: the verifier checks the hook's return value
    /// against the bounds it gave that argument ([-MAX_ERRNO, 0]) and keeps them in registers and
    /// full-width stack slots, not in a 32-bit field of memory that a pointer escaped to. Set just
    /// before `finish`, the value reaches the return in a register.
    #[inline(always)]
    pub fn set_previous(&mut self, previous: i32) {
        self.previous = previous;
    }

    /// The earlier LSMs' verdict, returned unrecorded when a later hook decides this attempt.
    #[inline(always)]
    pub fn previous(&self) -> i32 {
        self.previous
    }

    /// `finish` for a denial; an allowed verdict returns at once, unrecorded (a later hook records
    /// the attempt).
    #[inline(always)]
    pub fn finish_denial_only(self, verdict: Verdict) -> i32 {
        if verdict.effect != effect::DENY
            && self.scope.lockdown == 0
            && self.previous == 0
            && !self.policy_replaced()
        {
            return 0;
        }
        self.finish(verdict)
    }

    /// Whether the policy this decision began under was replaced since: a task preempted mid-hook
    /// across two reloads may have walked tables the second one was rewriting. A reload first clears
    /// the header of every profile it rewrites and stamps a new generation last
    /// (`kernel::maps::write_policy` in the daemon), so any write to the tables during the decision
    /// shows here as a changed generation. Read after every table read of the decision.
    #[inline(always)]
    fn policy_replaced(&self) -> bool {
        let began = self.scratch.event.header.policy_generation;
        // SAFETY: a field of a live array map value; volatile so that it is read now.
        self.slot.header.is_some_and(|header| unsafe { read_volatile(&header.generation) } != began)
    }

    /// Records the verdict, emits the event and returns what the hook must return. An open or connect
    /// whose inputs are usable (`memo::OpenInputs`) is remembered by the memo with the attempt's key if
    /// the attempt ends up counted.
    #[inline(always)]
    pub fn finish(self, verdict: Verdict) -> i32 {
        let verdict =
            if self.policy_replaced() { Verdict::flagged(verdict.flags | flag::NO_POLICY) } else { verdict };
        let window_ns = self.repeat_window_ns();
        let Pending { scratch, scope, slot, previous, started_ns, repeatable, claim } = self;
        let Scratch { event, inputs, opaque: _ } = scratch;
        let header = &mut event.header;
        header.effect = verdict.effect;
        header.rule_id = verdict.rule;
        header.flags |= verdict.flags;
        if scope.lockdown != 0 {
            header.effect = effect::DENY;
            header.flags |= flag::LOCKDOWN;
        }
        if previous != 0 {
            header.effect = effect::DENY;
            header.flags |= flag::PREVIOUS_LSM_DENIED;
        }
        // SAFETY: plain helper.
        header.decide_ns = unsafe { bpf_ktime_get_boot_ns() }.wrapping_sub(started_ns);
        // Read back from the map value: the verifier does not know what map memory holds, so it checks
        // the rest once for every verdict instead of once per verdict the decision can return.
        // SAFETY: reads of fields of a live map value.
        let (outcome, flags) = unsafe { (read_volatile(&header.effect), read_volatile(&header.flags)) };
        let repeat = if repeatable && window_ns != 0 && outcome == effect::ALLOW && flags == 0 {
            repeats::entry_of(event, window_ns, claim.slot())
                .map(|entry| (repeats::digest(&entry.key), entry))
        } else {
            None
        };
        if let Some((digest, entry)) = &repeat {
            if let Some(kernel_seq) = repeats::counted(*digest, &entry.key, started_ns) {
                if inputs.usable() {
                    memo::remember(&entry.key, *digest, kernel_seq, inputs, slot.index, window_ns);
                }
                return 0;
            }
        }
        event.header.kernel_seq = next(counter::NEXT_SEQ);
        let denied = outcome == effect::DENY;
        let header = &event.header;
        diag::decision(header.action, header.effect, header.rule_id, header.flags, header.tgid);
        let args = match event.args_len as usize & (ARGS_MAX - 1) {
            0 => 0,
            used => 1 + used,
        };
        let size = EVENT_FIXED_LEN + (event.path_len as usize & (PATH_MAX - 1)) + args;
        // SAFETY: `size` <= size_of::<Event>() and the scratch value is that large.
        let bytes = unsafe { core::slice::from_raw_parts(event as *const Event as *const u8, size) };
        if EVENTS.output::<[u8]>(bytes, 0).is_err() {
            next(counter::RINGBUF_FULL);
            diag::miss(Miss::RingFull, event.header.tgid);
            return DENIED;
        }
        if let Some((digest, entry)) = repeat {
            let header = &event.header;
            let first = RepeatCount {
                kernel_seq: header.kernel_seq,
                first_ns: header.boot_ns,
                last_ns: header.boot_ns,
                repeats: 0,
            };
            let created = repeats::create(digest, entry, first);
            if created && inputs.usable() {
                memo::remember(&entry.key, digest, header.kernel_seq, inputs, slot.index, window_ns);
            }
        }
        if !denied {
            0
        } else if previous != 0 {
            previous
        } else {
            DENIED
        }
    }
}

/// State of one argv copy, shared with the `bpf_loop` callback.
#[repr(C)]
struct ArgvWalk {
    /// User address of the argv pointer array.
    argv: u64,
    buf: *mut u8,
    /// Offset of the first argument in `buf`: one past the path's NUL (1..=PATH_MAX).
    start: u32,
    /// Argument bytes copied so far, NULs included (< ARGS_MAX).
    used: u32,
    /// Set once argv's terminating NULL pointer was read.
    ended: u32,
    incomplete: u32,
}

/// Copies `argv[index]` to the end of what is already copied. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn argv_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `ArgvWalk` on the caller's stack, alive for the whole bpf_loop call.
    let walk = unsafe { &mut *(ctx as *mut ArgvWalk) };
    // SAFETY: a user read of one pointer of the array; failure is handled.
    let pointer = unsafe { aya_ebpf::helpers::bpf_probe_read_user((walk.argv + 8 * index) as *const u64) };
    let Ok(pointer) = pointer else {
        walk.incomplete = 1;
        return 1;
    };
    if pointer == 0 {
        walk.ended = 1;
        return 1;
    }
    if walk.used as usize >= ARGS_MAX - 1 {
        walk.incomplete = 1;
        return 1;
    }
    // Masked in asm so the verifier bounds the copy: offset <= PATH_MAX + ARGS_MAX - 1 and
    // size <= ARGS_MAX stay inside the EVENT_DATA_LEN-byte buffer.
    let used = masked::<{ ARGS_MAX as u64 - 1 }>(walk.used);
    let offset = masked::<{ 2 * PATH_MAX as u64 - 1 }>(walk.start).min(PATH_MAX as u32) + used;
    let room = ARGS_MAX as u32 - used;
    const _: () = assert!(PATH_MAX + 2 * ARGS_MAX <= EVENT_DATA_LEN);
    // SAFETY: `buf + offset .. + room` lies within the event buffer (see above); `pointer` is a user
    // address the helper reads safely.
    let copied = unsafe {
        generated::bpf_probe_read_user_str(
            walk.buf.add(offset as usize) as *mut c_void,
            room,
            pointer as *const c_void,
        )
    };
    if copied <= 0 || copied as u32 >= room {
        // Unreadable, or cut short by the room left: what was copied is not a whole argument.
        walk.incomplete = 1;
        return 1;
    }
    walk.used = used + copied as u32;
    0
}

/// `value & MASK`, computed so that the verifier sees the bound (LLVM would drop a mask it can prove
/// redundant, and 6.1's verifier does not always keep the bound from the comparison instead).
#[inline(always)]
pub fn masked<const MASK: u64>(value: u32) -> u32 {
    let mut value = value as u64;
    // SAFETY: register arithmetic only.
    unsafe { core::arch::asm!("{v} &= {m}", v = inout(reg) value, m = const MASK) };
    value as u32
}

/// Atomically increments `COUNTERS[index]`, returning the old value (0 if the map is unreadable).
#[inline(always)]
fn next(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        // SAFETY: array map values are 8-byte aligned and live as long as the map.
        Some(ptr) => unsafe { fetch_add(ptr, 1) },
        None => 0,
    }
}

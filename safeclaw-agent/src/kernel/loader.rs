//! Loading the embedded eBPF object with this kernel's struct offsets, and attaching its programs.
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        lsm::LsmLinkId,
        Lsm,
    },
    Btf, Ebpf, EbpfLoader,
};
use safeclaw_common::KernelOffsets;

use super::btf::KernelBtf;
use super::ebpf_log::{self, EbpfLogLevel};
use super::pins::{PinDir, PERSISTENT_MAPS};
use super::KernelError;

/// The object built from safeclaw-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/safeclaw"));

/// Each program is named after the LSM hook it attaches to.
pub const PROGRAMS: [&str; 40] = [
    "file_open",
    "d_instantiate",
    "bprm_check_security",
    "socket_connect",
    "socket_sendmsg",
    "task_kill",
    "ptrace_access_check",
    "bpf",
    "file_receive",
    "task_alloc",
    "kernel_read_file",
    "kernel_load_data",
    "sb_mount",
    "sb_umount",
    "sb_pivotroot",
    "move_mount",
    "userns_create",
    "path_link",
    "path_rename",
    "path_mknod",
    "file_send_sigiotask",
    "socket_create",
    "file_fcntl",
    "file_ioctl",
    "path_unlink",
    "path_rmdir",
    "path_symlink",
    "path_mkdir",
    "path_truncate",
    "path_chmod",
    "path_chown",
    "path_chroot",
    "mmap_file",
    "file_mprotect",
    "unix_stream_connect",
    "unix_may_send",
    "socket_bind",
    "socket_listen",
    "inode_setxattr",
    "inode_removexattr",
];

/// Programs of hooks that not every supported kernel has (6.2 gave POSIX ACLs hooks of their own,
/// which 6.1 decides at `inode_setxattr`): attached where the kernel has the hook.
pub const PROGRAMS_IF_PRESENT: [&str; 2] = ["inode_set_acl", "inode_remove_acl"];

/// The programs this kernel runs: every one of `PROGRAMS`, and those of `PROGRAMS_IF_PRESENT` whose
/// hook it has.
fn programs_for(btf: &KernelBtf) -> Vec<&'static str> {
    let present = PROGRAMS_IF_PRESENT.into_iter().filter(|name| btf.has_function(&format!("bpf_lsm_{name}")));
    PROGRAMS.into_iter().chain(present).collect()
}

/// Reads the struct member offsets the programs need from the running kernel's BTF.
pub fn offsets_from_btf(btf: &KernelBtf) -> Result<KernelOffsets, KernelError> {
    Ok(KernelOffsets {
        file_f_path: btf.member_offset("file", "f_path")?,
        file_f_mode: btf.member_offset("file", "f_mode")?,
        linux_binprm_file: btf.member_offset("linux_binprm", "file")?,
        socket_type: btf.member_offset("socket", "type")?,
        task_struct_tgid: btf.member_offset("task_struct", "tgid")?,
        task_struct_cgroups: btf.member_offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf.member_offset("css_set", "dfl_cgrp")?,
        cgroup_level: btf.member_offset("cgroup", "level")?,
        cgroup_ancestors: btf.member_offset("cgroup", "ancestors")?,
        cgroup_kn: btf.member_offset("cgroup", "kn")?,
        kernfs_node_id: btf.member_offset("kernfs_node", "id")?,
        super_block_s_magic: btf.member_offset("super_block", "s_magic")?,
        msghdr_msg_name: btf.member_offset("msghdr", "msg_name")?,
        msghdr_msg_namelen: btf.member_offset("msghdr", "msg_namelen")?,
        pt_regs_orig_ax: btf.member_offset("pt_regs", "orig_ax")?,
        pt_regs_si: btf.member_offset("pt_regs", "si")?,
        pt_regs_dx: btf.member_offset("pt_regs", "dx")?,
        dentry_d_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_d_name: btf.member_offset("dentry", "d_name")?,
        qstr_name: btf.member_offset("qstr", "name")?,
        mount_mnt: btf.member_offset("mount", "mnt")?,
        mount_mnt_parent: btf.member_offset("mount", "mnt_parent")?,
        mount_mnt_mountpoint: btf.member_offset("mount", "mnt_mountpoint")?,
        vfsmount_mnt_root: btf.member_offset("vfsmount", "mnt_root")?,
        task_struct_fs: btf.member_offset("task_struct", "fs")?,
        fs_struct_root: btf.member_offset("fs_struct", "root")?,
        path_mnt: btf.member_offset("path", "mnt")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sock_common_skc_family: btf.member_offset("sock_common", "skc_family")?,
        file_f_flags: btf.member_offset("file", "f_flags")?,
        dentry_d_hash_pprev: btf.member_offset("dentry", "d_hash")?
            + btf.member_offset("hlist_bl_node", "pprev")?,
        task_struct_nsproxy: btf.member_offset("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: btf.member_offset("nsproxy", "mnt_ns")?,
        mount_mnt_ns: btf.member_offset("mount", "mnt_ns")?,
        vm_area_struct_vm_file: btf.member_offset("vm_area_struct", "vm_file")?,
        unix_sock_path: btf.member_offset("unix_sock", "path")?,
        unix_sock_peer: btf.member_offset("unix_sock", "peer")?,
        sock_common_skc_rcv_saddr: btf.member_offset("sock_common", "skc_rcv_saddr")?,
        sock_common_skc_v6_rcv_saddr: btf.member_offset("sock_common", "skc_v6_rcv_saddr")?,
        sock_common_skc_num: btf.member_offset("sock_common", "skc_num")?,
        dentry_d_sb: btf.member_offset("dentry", "d_sb")?,
        super_block_s_mounts: btf.member_offset("super_block", "s_mounts")?,
        mount_mnt_instance: btf.member_offset("mount", "mnt_instance")?,
        task_struct_mm: btf.member_offset("task_struct", "mm")?,
        mm_struct_exe_file: btf.member_offset("mm_struct", "exe_file")?,
        file_f_inode: btf.member_offset("file", "f_inode")?,
        task_struct_pid: btf.member_offset("task_struct", "pid")?,
        task_struct_comm: btf.member_offset("task_struct", "comm")?,
        task_struct_cred: btf.member_offset("task_struct", "cred")?,
        cred_uid: btf.member_offset("cred", "uid")?,
        cred_gid: btf.member_offset("cred", "gid")?,
    })
}

/// The object loaded into the kernel: maps created, programs loaded (verified), none attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    pins: Option<PinDir>,
    /// `PROGRAM_EPOCH` of these programs: they decide once `Scope::epoch` names it.
    pub epoch: u32,
    /// The programs this kernel runs (`programs_for`).
    programs: Vec<&'static str>,
    links: Vec<(&'static str, Link)>,
}

/// An attached program's link: held by this process, or pinned so it outlives it.
enum Link {
    Held(LsmLinkId),
    Pinned(PinnedLink),
}

/// Kernel run-time statistics of one program (collected while `kernel.bpf_stats_enabled` is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Creates the maps and loads (verifies) the programs for this kernel, attaching none. With `pins`, the
/// persistent maps are pinned there, or reused if a previous daemon left them (after checking their
/// layout). The programs log through aya-log at `ebpf_log` and above; with `None` their logging is
/// pruned at load.
pub fn open(pins: Option<PinDir>, ebpf_log: Option<EbpfLogLevel>) -> Result<Loaded, KernelError> {
    let (offsets, programs) = {
        let kernel_btf = KernelBtf::from_sys_fs()?;
        (offsets_from_btf(&kernel_btf)?, programs_for(&kernel_btf))
    };
    // aya's parse of the kernel BTF is about 9 MB of heap: it is needed to load the programs only, so
    // it is dropped with this function instead of staying resident for the daemon's life.
    let btf = Btf::from_sys_fs()?;
    let epoch = new_epoch()?;
    let path_sequences = super::symbols::path_sequences();
    let mut loader = EbpfLoader::new();
    let log_level = ebpf_log::level_byte(ebpf_log);
    loader
        .btf(Some(&btf))
        .override_global("OFFSETS", &offsets, true)
        .override_global("PROGRAM_EPOCH", &epoch, true)
        .override_global("PATH_SEQUENCES", &path_sequences, true)
        .override_global(ebpf_log::LEVEL_GLOBAL, &log_level, true);
    if let Some(pins) = &pins {
        pins.check_compatible()?;
        pins.create()?;
        for map in &PERSISTENT_MAPS {
            loader.map_pin_path(map.name, pins.map(map.name));
        }
    }
    let mut ebpf = loader.load(OBJECT).map_err(KernelError::Object)?;
    for &name in &programs {
        lsm(&mut ebpf, name)?
            .load(name, &btf)
            .map_err(|source| KernelError::LoadProgram { program: name, source })?;
    }
    Ok(Loaded { ebpf, pins, epoch, programs, links: Vec::new() })
}

/// A random, non-zero epoch: distinct from whatever a previous daemon used.
fn new_epoch() -> Result<u32, KernelError> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes)
        .map_err(|e| KernelError::Pins(format!("no randomness for the program epoch: {e}")))?;
    Ok(u32::from_ne_bytes(bytes).max(1))
}

impl Loaded {
    /// The programs this kernel runs.
    pub fn programs(&self) -> &[&'static str] {
        &self.programs
    }

    /// Attaches every loaded program. The programs decide once `Scope::epoch` is this `epoch`; the maps
    /// must be filled before. Without pins, dropping `Loaded` detaches them all. With pins, the links
    /// are pinned under this epoch beside those of a previous daemon, whose programs keep deciding
    /// until the scope names the new epoch; then `retire_previous` unpins theirs.
    pub fn attach(&mut self) -> Result<(), KernelError> {
        if let Some(pins) = &self.pins {
            pins.create_links(self.epoch)?;
        }
        for name in self.programs.clone() {
            let id = lsm(&mut self.ebpf, name)?
                .attach()
                .map_err(|source| KernelError::AttachProgram { program: name, source })?;
            let Some(pins) = &self.pins else {
                self.links.push((name, Link::Held(id)));
                continue;
            };
            let link: FdLink = lsm(&mut self.ebpf, name)?
                .take_link(id)
                .map_err(|source| KernelError::AttachProgram { program: name, source })?
                .into();
            let path = pins.link(self.epoch, name);
            let pinned = link
                .pin(&path)
                .map_err(|e| KernelError::Pins(format!("cannot pin {}: {e}", path.display())))?;
            self.links.push((name, Link::Pinned(pinned)));
        }
        Ok(())
    }

    /// Unpins the links of every other epoch: call once the scope names this one.
    pub fn retire_previous(&self) -> Result<(), KernelError> {
        match &self.pins {
            Some(pins) => pins.remove_links_except(Some(self.epoch)),
            None => Ok(()),
        }
    }

    /// Unpins this run's links and leaves the rest: a start that failed before it took over.
    pub fn abandon(&mut self) -> Result<(), KernelError> {
        self.links.clear();
        match &self.pins {
            Some(pins) => pins.remove_links(self.epoch),
            None => Ok(()),
        }
    }

    /// Detaches every attached program and unpins the links of every epoch: the deliberate end of
    /// enforcement. The maps stay pinned until `remove_pins`, so that events still in the ring survive
    /// this process until they are recorded.
    pub fn detach(&mut self) -> Result<(), KernelError> {
        while let Some((name, link)) = self.links.pop() {
            match link {
                Link::Held(id) => lsm(&mut self.ebpf, name)?
                    .detach(id)
                    .map_err(|source| KernelError::AttachProgram { program: name, source })?,
                Link::Pinned(pinned) => {
                    drop(pinned.unpin().map_err(|e| KernelError::Pins(format!("cannot unpin {name}: {e}")))?)
                }
            }
        }
        match &self.pins {
            Some(pins) => pins.remove_links_except(None),
            None => Ok(()),
        }
    }

    /// Removes every pin, the maps' included: after `detach`, once the ring's events are recorded.
    pub fn remove_pins(&self) -> Result<(), KernelError> {
        match &self.pins {
            Some(pins) => pins.remove_all(),
            None => Ok(()),
        }
    }

    /// Run counts and times of each program, as the kernel accounts them.
    pub fn stats(&mut self) -> Result<Vec<ProgramStats>, KernelError> {
        self.programs
            .clone()
            .into_iter()
            .map(|name| {
                let info = lsm(&mut self.ebpf, name)?
                    .info()
                    .map_err(|source| KernelError::LoadProgram { program: name, source })?;
                Ok(ProgramStats {
                    name,
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }
}

fn lsm<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Lsm, KernelError> {
    let program = ebpf.program_mut(name).ok_or(KernelError::Missing { what: "program", name })?;
    program.try_into().map_err(|_| KernelError::Missing { what: "LSM program", name })
}

//! Loading the embedded eBPF object with this kernel's struct offsets, and attaching its programs.
use aya::{
    programs::{lsm::LsmLinkId, Lsm},
    Btf, Ebpf, EbpfLoader,
};

use safeclaw_common::KernelOffsets;

use super::btf::KernelBtf;
use super::KernelError;

/// The object built from safeclaw-ebpf by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/safeclaw"));

/// Each program is named after the LSM hook it attaches to.
pub const PROGRAMS: [&str; 15] = [
    "file_open",
    "bprm_check_security",
    "socket_connect",
    "socket_sendmsg",
    "task_kill",
    "ptrace_access_check",
    "bpf",
    "inode_permission",
    "kernel_read_file",
    "kernel_load_data",
    "sb_mount",
    "sb_umount",
    "sb_pivotroot",
    "move_mount",
    "userns_create",
];

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
        inode_i_sb: btf.member_offset("inode", "i_sb")?,
        super_block_s_magic: btf.member_offset("super_block", "s_magic")?,
        msghdr_msg_name: btf.member_offset("msghdr", "msg_name")?,
        msghdr_msg_namelen: btf.member_offset("msghdr", "msg_namelen")?,
    })
}

/// The object loaded into the kernel (maps created), programs not yet loaded.
pub struct Loaded {
    pub ebpf: Ebpf,
    btf: Btf,
    links: Vec<(&'static str, LsmLinkId)>,
}

/// Kernel run-time statistics of one program (collected while `kernel.bpf_stats_enabled` is on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Creates the maps and prepares the programs for this kernel.
pub fn open() -> Result<Loaded, KernelError> {
    let offsets = offsets_from_btf(&KernelBtf::from_sys_fs()?)?;
    let btf = Btf::from_sys_fs()?;
    let ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("OFFSETS", &offsets, true)
        .load(OBJECT)
        .map_err(KernelError::Object)?;
    Ok(Loaded { ebpf, btf, links: Vec::new() })
}

impl Loaded {
    /// Loads (verifies) every program without attaching any.
    pub fn load_programs(&mut self) -> Result<(), KernelError> {
        for name in PROGRAMS {
            lsm(&mut self.ebpf, name)?
                .load(name, &self.btf)
                .map_err(|source| KernelError::LoadProgram { program: name, source })?;
        }
        Ok(())
    }

    /// Attaches every loaded program. Enforcement starts with the first one; the maps must be filled
    /// before. Dropping `Loaded` detaches them all.
    pub fn attach(&mut self) -> Result<(), KernelError> {
        for name in PROGRAMS {
            let link = lsm(&mut self.ebpf, name)?
                .attach()
                .map_err(|source| KernelError::AttachProgram { program: name, source })?;
            self.links.push((name, link));
        }
        Ok(())
    }

    /// Detaches every attached program (they stay loaded and can be attached again).
    pub fn detach(&mut self) -> Result<(), KernelError> {
        while let Some((name, link)) = self.links.pop() {
            lsm(&mut self.ebpf, name)?
                .detach(link)
                .map_err(|source| KernelError::AttachProgram { program: name, source })?;
        }
        Ok(())
    }

    /// Run counts and times of each program, as the kernel accounts them.
    pub fn stats(&mut self) -> Result<Vec<ProgramStats>, KernelError> {
        PROGRAMS
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

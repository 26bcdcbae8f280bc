//! Code mapped from a file (`mmap` or `mprotect` with `PROT_EXEC`), decided by the exec rules: a
//! loader (`ld.so /path/to/binary`) or any program of the agent's own mapping a binary's code runs
//! it without an exec. During an exec, the kernel's mapping of the binary `bprm_check_security`
//! decided is left alone; the loader its ELF header names (`PT_INTERP`) is decided here like any
//! other mapping (flag `exec_loader`), or an ELF the agent writes could name a denied binary as its
//! loader and run it. Only denials are recorded: every program start maps its loader and libraries,
//! and an allowed mapping is part of running a program whose exec was recorded.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use safeclaw_common::{action, dfa_class, flag};

use crate::decide::{self, Verdict};
use crate::emit::{self, Pending};
use crate::{kernel, scope};

const PROT_EXEC: u64 = 0x4;

/// `mmap_file(struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags)`:
/// `prot` is what the kernel will map (READ_IMPLIES_EXEC included).
#[lsm(hook = "mmap_file")]
pub fn mmap_file(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    let prot: u64 = ctx.arg(2);
    let file: *const u8 = ctx.arg(0);
    // Every mmap of every task passes here: rule out data and anonymous mappings first.
    if prot & PROT_EXEC == 0 || file.is_null() {
        return previous;
    }
    let Some(scope) = scope::current() else { return previous };
    // During an exec, `current->mm->exe_file` is already the binary being started. Anything else
    // mapped executable then is its loader; on doubt (exe_file unreadable) the rules decide too.
    let loader = kernel::in_exec();
    if loader && kernel::is_exe_file(file) == Some(true) {
        return previous;
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    pending.set_file_action(action::PROCESS_MAP_EXEC, prot as u32, 0);
    if loader {
        pending.add_flags(flag::EXEC_LOADER);
    }
    let verdict = match pending.resolve_file_path(file) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some(len) => decide::by_path(pending.slot(), dfa_class::PROCESS_EXEC, pending.path(), len),
    };
    pending.finish_denial_only(verdict)
}

/// `file_mprotect(struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot)`: making a
/// file's mapping executable afterwards. `bpf_d_path` is not allowed here, so the path is walked.
#[lsm(hook = "file_mprotect")]
pub fn file_mprotect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return previous;
    }
    let Some(scope) = scope::current() else { return previous };
    let file = kernel::vma_file(ctx.arg(0));
    if file == 0 {
        return previous;
    }
    let Some(mut pending) = Pending::start(scope, previous) else { return emit::DENIED };
    pending.set_file_action(action::PROCESS_MAP_EXEC, prot as u32, 0);
    let path = file + kernel::offset(&kernel::OFFSETS.file_f_path) as u64;
    let dentry = kernel::path_dentry(path as *const u8);
    let verdict = match crate::resolve_dentry(
        &mut pending,
        dentry as *const u8,
        kernel::path_vfsmount(path as *const u8),
    ) {
        None => Verdict::flagged(flag::PATH_UNRESOLVED),
        Some(len) => decide::by_path(pending.slot(), dfa_class::PROCESS_EXEC, pending.path(), len),
    };
    pending.finish_denial_only(verdict)
}

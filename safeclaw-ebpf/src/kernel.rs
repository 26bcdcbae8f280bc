//! Kernel structure access. Offsets differ between kernels (`file.f_path` is 16 on 6.1, 64 on 6.12),
//! so they are read-only globals the loader sets from the running kernel's BTF; the verifier sees
//! them as constants and checks each access against BTF, so a wrong offset fails the load.
use core::ptr::read_volatile;

pub const FMODE_READ: u32 = 0x1;
pub const FMODE_WRITE: u32 = 0x2;

#[no_mangle]
static F_PATH_OFFSET: u64 = 0;
#[no_mangle]
static F_MODE_OFFSET: u64 = 0;
#[no_mangle]
static BPRM_FILE_OFFSET: u64 = 0;
#[no_mangle]
static SOCKET_TYPE_OFFSET: u64 = 0;

#[inline(always)]
fn offset(global: &'static u64) -> usize {
    // SAFETY: reading our own initialised static; volatile so the value set at load time is used.
    unsafe { read_volatile(global) as usize }
}

/// `file->f_mode`, read directly through the hook's trusted `struct file *`.
#[inline(always)]
pub fn file_mode(file: *const u8) -> u32 {
    // SAFETY: `file` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(file.add(offset(&F_MODE_OFFSET)) as *const u32) }
}

/// `&file->f_path`, still a trusted pointer as `bpf_d_path` requires.
#[inline(always)]
pub fn file_path(file: *const u8) -> *const u8 {
    // SAFETY: pointer arithmetic only; no access.
    unsafe { file.add(offset(&F_PATH_OFFSET)) }
}

/// `bprm->file`: the executable being checked.
#[inline(always)]
pub fn bprm_file(bprm: *const u8) -> *const u8 {
    // SAFETY: `bprm` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(bprm.add(offset(&BPRM_FILE_OFFSET)) as *const *const u8) }
}

/// `sock->type` (SOCK_STREAM, SOCK_DGRAM, ...).
#[inline(always)]
pub fn socket_type(sock: *const u8) -> i16 {
    // SAFETY: `sock` is the hook's BTF pointer; the verifier checks the field access.
    unsafe { *(sock.add(offset(&SOCKET_TYPE_OFFSET)) as *const i16) }
}

//! Runs of array entries written through a shared mapping of the map (`BPF_F_MMAPABLE`): a reload's
//! half a million DFA transitions become one memory copy instead of a kernel update per entry.
use std::os::fd::RawFd;

use aya::Ebpf;

use super::batch;
use super::KernelError;

/// Writes `values` into mmapable array map `map` at indices `first..first + values.len()`. A map
/// that cannot be mapped (one pinned by an older daemon, created without the flag) is written with
/// batched syscalls instead, with the same result.
pub fn write_run<V: aya::Pod>(
    ebpf: &Ebpf,
    map: &'static str,
    first: u32,
    values: &[V],
) -> Result<(), KernelError> {
    let fd = batch::array_fd(ebpf, map)?;
    match copy_into(fd, first, values) {
        Ok(()) => Ok(()),
        Err(error) => {
            tracing::warn!(
                "`{map}` cannot be mapped for writing ({error}); writing it with syscalls, slower"
            );
            batch::write_run(ebpf, map, first, values)
        }
    }
}

/// Maps the pages of array `fd` holding indices `first..first + values.len()`, copies `values` in
/// and unmaps them, so the daemon's RSS does not keep the tables. `V` must be the map's value type
/// (checked against the map's layout at load); the kernel stores each value padded to 8 bytes.
fn copy_into<V: aya::Pod>(fd: RawFd, first: u32, values: &[V]) -> std::io::Result<()> {
    if values.is_empty() {
        return Ok(());
    }
    let stride = std::mem::size_of::<V>().next_multiple_of(8);
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .map_err(|_| std::io::Error::other("no page size"))?;
    let start = first as usize * stride;
    let end = (first as usize + values.len()) * stride;
    let offset = start / page * page;
    let length = end - offset;
    let file_offset = libc::off_t::try_from(offset).map_err(|_| std::io::Error::other("offset too large"))?;
    // SAFETY: a fresh shared mapping of the map's own pages; the kernel refuses (EINVAL) a map
    // without BPF_F_MMAPABLE and any range past the map's end, so a successful mapping covers every
    // byte written below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            file_offset,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let run = (base as *mut u8).wrapping_add(start - offset);
    for (index, value) in values.iter().enumerate() {
        // SAFETY: `start - offset + index * stride + size_of::<V>() <= length`, inside the mapping;
        // unaligned writes because `V`'s alignment is not the mapping's business.
        unsafe { std::ptr::write_unaligned(run.add(index * stride).cast::<V>(), *value) };
    }
    // SAFETY: the mapping made above, unmapped once; nothing refers to it after this.
    if unsafe { libc::munmap(base, length) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

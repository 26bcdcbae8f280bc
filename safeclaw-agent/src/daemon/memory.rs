//! How the daemon's heap gives memory back, so that its RSS is its live data rather than the
//! high-water mark of everything it ever allocated.

/// Allocations from this size up get their own mapping, unmapped when freed. At 4 MiB the log's batch
/// buffers, once grown, are mapped while a policy compile's tables mostly come from the heap: 256 KiB
/// lowered the burst's peak RSS a little more (48 against 49-52 MB) but mapped and faulted in every
/// table of a compile, and made a 10,000-rule reload 9 % slower instead of 3 % (docs/benchmarks.md).
const MMAP_THRESHOLD: usize = 4 << 20;

/// Fixes glibc's mmap threshold. Left dynamic, glibc raises it to the size of each large block freed:
/// after the kernel BTF parse at start (about 9 MB) every batch buffer below that size would come
/// from the heap, where what a burst frees stays resident. Call before the first large allocation.
pub fn map_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter, under the allocator's own lock; a refused value
    // leaves the default in place.
    unsafe {
        let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
        if libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) != 1 {
            tracing::warn!("glibc refused a fixed mmap threshold; freed buffers may stay resident");
        }
    }
}

/// How far the main heap grows past a request while a policy is compiled: in steps this large the kernel
/// can back it with transparent huge pages, one fault per 2 MiB instead of per 4 KiB page. A 10,000-rule
/// reload touches about 40 MB; in the test VM it went from 1.6-2.4 s to 1.3-1.7 s (docs/benchmarks.md).
const COMPILE_TOP_PAD: usize = 64 << 20;
/// glibc's own top pad (`DEFAULT_TOP_PAD`), restored after a compile so that the heap's everyday frees
/// are trimmed as before.
const DEFAULT_TOP_PAD: usize = 128 << 10;

/// While alive, the main heap grows in `COMPILE_TOP_PAD` steps. Dropped, it grows as before; what the
/// compile freed is returned by `release_freed`.
pub struct CompileHeap(());

impl CompileHeap {
    pub fn grow_in_large_steps() -> CompileHeap {
        set_top_pad(COMPILE_TOP_PAD);
        CompileHeap(())
    }
}

impl Drop for CompileHeap {
    fn drop(&mut self) {
        set_top_pad(DEFAULT_TOP_PAD);
    }
}

fn set_top_pad(bytes: usize) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter, under the allocator's own lock; a refused value
    // leaves the previous one in place, which only costs speed.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX));
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = bytes;
}

/// glibc keeps what a compile freed resident: the automaton threads' arenas and the main arena. Without
/// a trim every reload would leave the daemon's RSS at the high-water mark of the largest compile it
/// ever ran.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

//! Returning the memory a policy install freed to the kernel, so the daemon's RSS is its live data.

/// glibc keeps what a compile freed resident: the automaton threads' arenas and, after the first
/// load, the kernel BTF parse in the main arena. Without a trim every reload would leave the daemon's
/// RSS at the high-water mark of the largest compile it ever ran.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

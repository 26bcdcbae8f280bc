//! Atomic read-modify-writes of 8-byte map values, written out in BPF assembly: aya-build links for
//! the generic CPU, where LLVM refuses to use the result of an atomic operation, so the fetching forms
//! (kernel >= 5.12) are spelled out.

macro_rules! fetch_op {
    ($(#[$doc:meta])* $name:ident, $mnemonic:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// `ptr` must be a valid, 8-byte aligned map value.
        #[inline(always)]
        pub unsafe fn $name(ptr: *mut u64, operand: u64) -> u64 {
            let mut value = operand;
            // SAFETY: the caller's promise.
            unsafe {
                core::arch::asm!(
                    concat!("{v} = ", $mnemonic, "((u64 *)({p} + 0), {v})"),
                    v = inout(reg) value,
                    p = in(reg) ptr,
                )
            };
            value
        }
    };
}

fetch_op!(
    /// Atomically adds `operand` to `*ptr`, returning the old value.
    fetch_add,
    "atomic_fetch_add"
);
fetch_op!(
    /// Atomically ORs `operand` into `*ptr`, returning the old value.
    fetch_or,
    "atomic_fetch_or"
);
fetch_op!(
    /// Atomically ANDs `operand` into `*ptr`, returning the old value.
    fetch_and,
    "atomic_fetch_and"
);

//! This CPU's scratch slots (`SCRATCH`, `WALK_SCRATCH`, `REPEAT_SCRATCH`): each decision claims one
//! for its whole run and gives it back when it ends. A task preempted mid-hook keeps its slot, so the
//! decisions of tasks that run meanwhile on the same CPU use other slots and never write into its
//! buffers (docs/threat-model.md, "Preempted decisions").
use core::ptr::{read_volatile, write_volatile};

use crate::atomic::{fetch_and, fetch_or};
use crate::maps::SCRATCH_CLAIMS;

/// Decisions one CPU holds at once: the running one and those of tasks preempted in a hook. A
/// decision that finds them all taken is denied unrecorded (a kernel-sequence hole, `NO_SCRATCH`).
pub const SCRATCH_SLOTS: u32 = 8;
const _: () = assert!(SCRATCH_SLOTS.is_power_of_two() && SCRATCH_SLOTS <= 8);

/// A scratch slot of this CPU, held until dropped. Only the slot's index: the decision keeps it on a
/// stack that some hooks fill to the verifier's 512 bytes.
pub struct Claim {
    slot: u8,
}

impl Claim {
    /// Claims the first free slot of this CPU. `None` if every slot is taken or the claims cannot be
    /// read.
    #[inline(always)]
    pub fn take() -> Option<Claim> {
        let claims = SCRATCH_CLAIMS.get_ptr_mut(0)?;
        for slot in 0..SCRATCH_SLOTS {
            let bit = 1u64 << slot;
            // SAFETY: an 8-byte aligned per-CPU array value; atomic because a task preempted between
            // the read and the write of a plain update would give the same slot to two decisions.
            if unsafe { fetch_or(claims, bit) } & bit == 0 {
                return Some(Claim { slot: slot as u8 });
            }
        }
        None
    }

    /// The slot's index into the scratch maps.
    #[inline(always)]
    pub fn slot(&self) -> u32 {
        u32::from(self.slot)
    }

    /// Passes the slot's index through `cell`, a word of the slot's own scratch that nothing else
    /// writes: the verifier then knows it only as a value below `SCRATCH_SLOTS`, and checks the rest
    /// of the program once rather than once per slot the claim could have found.
    #[inline(always)]
    pub fn forget_which(&mut self, cell: *mut u32) {
        // SAFETY: `cell` points into this slot's scratch value, which only this decision uses.
        let slot = unsafe {
            write_volatile(cell, self.slot());
            read_volatile(cell)
        };
        self.slot = crate::emit::masked::<{ SCRATCH_SLOTS as u64 - 1 }>(slot) as u8;
    }
}

impl Drop for Claim {
    #[inline(always)]
    fn drop(&mut self) {
        // The lookup `take` made: a fixed index of an array, which cannot fail.
        if let Some(claims) = SCRATCH_CLAIMS.get_ptr_mut(0) {
            // SAFETY: the claims word this claim was taken from, a live map value.
            unsafe { fetch_and(claims, !(1u64 << self.slot())) };
        }
    }
}

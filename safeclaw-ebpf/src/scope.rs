//! The one cheap check every task pays: is the current task inside the tagged agent cgroup?
use core::ptr::read_volatile;

use aya_ebpf::helpers::bpf_get_current_ancestor_cgroup_id;
use safeclaw_common::Scope;

use crate::maps::SCOPE;

/// Set by the loader, unique per daemon start: see `Scope::epoch`.
#[no_mangle]
static PROGRAM_EPOCH: u32 = 0;

/// The scope, if the current task is in the agent cgroup or any descendant (including cgroups
/// created after start: the ancestor id at the agent cgroup's level is the agent cgroup itself).
#[inline(always)]
pub fn current() -> Option<&'static Scope> {
    let scope = SCOPE.get(0)?;
    // SAFETY: reading our own initialised static; volatile so the value set at load time is used.
    if scope.enabled == 0 || scope.epoch != unsafe { read_volatile(&PROGRAM_EPOCH) } {
        return None;
    }
    // SAFETY: a plain helper call; any level is valid input (returns 0 past the task's depth).
    let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(scope.level as i32) };
    (ancestor == scope.cgroup_id).then_some(scope)
}

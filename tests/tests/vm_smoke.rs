//! Checks the harness contract of `cargo xtask test`: the tests run in the guest kernel they are told about,
//! with BPF LSM active, the agent binary at hand and a writable directory shared with the host.
use std::path::PathBuf;

/// A variable `cargo xtask test` sets; the tests are meaningless outside its VM, so they fail, not skip.
fn harness_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is unset: run the integration tests with `cargo xtask test`, which runs them in a VM")
    })
}

#[test]
fn the_guest_runs_the_kernel_line_it_names() {
    let line = harness_var("SAFECLAW_VM_KERNEL");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("reading the kernel release");
    assert!(
        release.starts_with(&format!("{line}.")),
        "SAFECLAW_VM_KERNEL={line} but the running kernel is {release}"
    );
    assert_eq!(harness_var("SAFECLAW_IN_VM"), "1");
}

#[test]
fn bpf_is_an_active_lsm() {
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").expect("reading /sys/kernel/security/lsm");
    assert!(lsms.trim_end().split(',').any(|lsm| lsm == "bpf"), "active LSMs: {lsms}");
}

#[test]
fn the_agent_binary_and_the_shared_output_directory_are_usable() {
    let agent = PathBuf::from(harness_var("SAFECLAW_AGENT_BIN"));
    assert!(agent.is_file(), "SAFECLAW_AGENT_BIN={} is not a file", agent.display());
    let marker = PathBuf::from(harness_var("SAFECLAW_TEST_OUT")).join("vm_smoke.txt");
    std::fs::write(&marker, "written in the guest\n").expect("writing to SAFECLAW_TEST_OUT");
    assert_eq!(std::fs::read_to_string(&marker).expect("reading it back"), "written in the guest\n");
}

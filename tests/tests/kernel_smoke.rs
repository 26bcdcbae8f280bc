//! The programs load on this kernel and deny an open inside the scope only.
use std::process::Command;

use aya::maps::RingBuf;
use safeclaw_agent::cgroup;
use safeclaw_agent::kernel::{events, loader, maps};
use safeclaw_integration::{deny_paths_policy, require_bpf_lsm};

#[test]
fn open_is_denied_inside_scope_and_allowed_outside() {
    require_bpf_lsm();
    let dir = std::env::temp_dir().join(format!("safeclaw-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    let mount = cgroup::find_mount().unwrap();
    let (agents, _) = cgroup::ensure(&mount, "smoke-agents").unwrap();

    let mut kernel = loader::open(None, None).unwrap();
    let policy = deny_paths_policy(secret.to_str().unwrap().as_bytes(), b"/nonexistent");
    maps::write_policy(&mut kernel.ebpf, 0, 1, &[&policy]).unwrap();
    maps::set_scope(&mut kernel.ebpf, maps::enforcing_scope(&agents, kernel.epoch)).unwrap();
    let mut ring = RingBuf::try_from(kernel.ebpf.take_map("EVENTS").unwrap()).unwrap();
    kernel.attach().unwrap();

    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret", "outside the scope nothing changes");
    let inside = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}/cgroup.procs && exec cat {}", agents.path.display(), secret.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&inside.stderr);
    assert!(!inside.status.success(), "cat inside the scope succeeded: {stderr}");
    assert!(stderr.contains("Operation not permitted"), "unexpected error: {stderr}");

    let mut denied = Vec::new();
    while let Some(item) = ring.next() {
        let event = events::decode(&item).unwrap();
        if let events::Detail::File { path, .. } = &event.detail {
            if path == secret.to_str().unwrap().as_bytes() {
                denied.push(event);
            }
        }
    }
    drop(kernel);
    std::fs::remove_dir(&agents.path).unwrap();
    assert_eq!(denied.len(), 1, "exactly one event for the denied open: {denied:?}");
    assert_eq!(denied[0].effect, safeclaw_agent::policy::compiled::Effect::Deny);
    assert_eq!(denied[0].rule, Some(0));
    assert_eq!(denied[0].comm, "cat");
}

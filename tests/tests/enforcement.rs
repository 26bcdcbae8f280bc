//! End to end on a real kernel: the daemon enforces each hook inside the agent cgroup (and its
//! descendants, created after start), leaves everything outside alone, writes exactly one audit entry
//! per attempt, and leaves nothing attached after SIGTERM.
use std::os::unix::fs::PermissionsExt as _;

use safeclaw_integration::{denied, entries_for, Daemon};

const POLICY: &str = r#"
version: 1
default: allow
rules:
  - name: secret-read
    action: file.read
    effect: deny
    paths: [/tmp/safeclaw-it-enforce/files/secret.txt]
    reason: the test's secret
  - name: protected-write
    action: file.write
    effect: deny
    paths: [/tmp/safeclaw-it-enforce/files/protected/**]
  - name: forbidden-binary
    action: process.exec
    effect: deny
    binary: [/tmp/safeclaw-it-enforce/files/forbidden.sh]
  - name: metadata
    action: network.connect
    effect: deny
    cidrs: [127.0.0.2/32]
    ports: [8080]
"#;

#[test]
fn each_hook_denies_inside_allows_outside_and_audits_every_attempt() {
    let daemon = Daemon::start("safeclaw-it-enforce", POLICY);
    let files = daemon.work().join("files");
    std::fs::create_dir_all(files.join("protected")).unwrap();
    std::fs::write(files.join("secret.txt"), "s3cret").unwrap();
    std::fs::write(files.join("public.txt"), "hello").unwrap();
    std::fs::write(files.join("forbidden.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(files.join("forbidden.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.2:8080").unwrap();
    let f = |name: &str| files.join(name).display().to_string();

    // Inside: each hook denies exactly what the policy names, with EPERM.
    let read = daemon.sh(&format!("exec cat {}", f("secret.txt")));
    assert!(denied(&read), "secret read inside: {read:?}");
    let write = daemon.sh(&format!("echo x > {}", f("protected/new.txt")));
    assert!(denied(&write), "protected write inside: {write:?}");
    assert!(!files.join("protected/new.txt").exists(), "a denied create leaves no file behind");
    let exec = daemon.sh(&format!("exec {}", f("forbidden.sh")));
    assert!(denied(&exec), "forbidden exec inside: {exec:?}");
    let connect =
        daemon.sh("exec python3 -c 'import socket; socket.create_connection((\"127.0.0.2\", 8080))'");
    assert!(!connect.status.success(), "connect inside succeeded");
    assert!(String::from_utf8_lossy(&connect.stderr).contains("PermissionError"), "{connect:?}");
    // ...and allows the rest.
    let allowed = daemon.sh(&format!("cat {}", f("public.txt")));
    assert!(allowed.status.success(), "public read inside: {allowed:?}");

    // A grandchild in a nested cgroup created after the daemon started is covered too.
    let nested = daemon.cgroup.join("late/deeper");
    let nested_read = Daemon::sh_in(&nested, &format!("sh -c 'cat {}'", f("secret.txt")));
    assert!(denied(&nested_read), "nested read: {nested_read:?}");

    // Outside the cgroup nothing changes.
    assert_eq!(std::fs::read_to_string(files.join("secret.txt")).unwrap(), "s3cret");
    std::fs::write(files.join("protected/outside.txt"), "ok").unwrap();
    let outside_exec = std::process::Command::new(files.join("forbidden.sh")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&outside_exec.stdout), "ran\n");
    std::net::TcpStream::connect("127.0.0.2:8080").unwrap();
    drop(listener);

    std::fs::remove_dir(&nested).unwrap();
    std::fs::remove_dir(nested.parent().unwrap()).unwrap();
    let (status, entries) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");

    // Exactly one entry per attempt, with the deciding rule and the kernel's details.
    let secret = entries_for(&entries, "file.read", &f("secret.txt"));
    assert_eq!(secret.len(), 2, "one entry for the direct read, one for the nested one: {secret:#?}");
    for entry in &secret {
        assert_eq!(entry["effect"], "deny");
        assert_eq!(entry["matchedRule"], "secret-read");
        assert_eq!(entry["reason"], "the test's secret");
        assert_eq!(entry["requestDetails"]["comm"], "cat");
        assert_eq!(entry["requestDetails"]["mode"], "r");
        assert!(entry["kernelSeq"].is_u64() && entry["policyHash"].as_str().unwrap().starts_with("sha256:"));
    }
    let protected = entries_for(&entries, "file.write", &f("protected/new.txt"));
    assert_eq!(protected.len(), 1, "{protected:#?}");
    assert_eq!(protected[0]["matchedRule"], "protected-write");
    let exec = entries_for(&entries, "process.exec", &f("forbidden.sh"));
    assert_eq!(exec.len(), 1, "{exec:#?}");
    assert_eq!(exec[0]["effect"], "deny");
    let connects: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "network.connect" && e["requestDetails"]["address"] == "127.0.0.2")
        .collect();
    assert_eq!(connects.len(), 1, "{connects:#?}");
    assert_eq!(connects[0]["requestDetails"]["port"], 8080);
    assert_eq!(connects[0]["requestDetails"]["protocol"], "tcp");
    assert_eq!(connects[0]["matchedRule"], "metadata");
    let public = entries_for(&entries, "file.read", &f("public.txt"));
    assert_eq!(public.len(), 1);
    assert_eq!(public[0]["effect"], "allow");
    assert!(public[0]["matchedRule"].is_null(), "the default decided");
    // Nothing done outside the cgroup was recorded.
    assert!(entries_for(&entries, "file.write", &f("protected/outside.txt")).is_empty());
}

#[test]
fn sigterm_detaches_every_program_and_removes_pins_and_cgroup() {
    // Programs of another binary's shared daemon may still be loaded while it stops: this test judges
    // only the programs that came with its own daemon.
    let before = safeclaw_programs();
    let daemon = Daemon::start("safeclaw-it-stop", "version: 1\ndefault: allow\nrules: []\n");
    let pin_dir = daemon.pin_dir.clone();
    let cgroup = daemon.cgroup.clone();
    assert!(
        safeclaw_integration::pinned_links(&pin_dir).iter().any(|l| l == "file_open"),
        "links are pinned while running"
    );
    let mine: Vec<u32> = safeclaw_programs().into_iter().filter(|id| !before.contains(id)).collect();
    assert!(mine.len() >= safeclaw_agent::kernel::loader::PROGRAMS.len(), "all programs loaded: {mine:?}");
    let (status, entries) = daemon.stop();
    assert!(status.success());
    // The kernel frees a program after an RCU grace period, not at the last close.
    let left = || -> Vec<u32> { safeclaw_programs().into_iter().filter(|id| mine.contains(id)).collect() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let left = left();
    assert!(left.is_empty(), "programs left loaded after SIGTERM: {left:?}");
    assert!(!pin_dir.exists(), "pins left in {}", pin_dir.display());
    assert!(!cgroup.exists(), "the cgroup this run created is removed");
    let last = entries.iter().rev().find(|e| e["action"] == "daemon.stop").expect("a daemon.stop entry");
    let reason = last["details"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("signal: SIGTERM from pid"), "names the signal and its sender: {reason}");
}

/// Ids of loaded BPF programs with SafeClaw's LSM program names.
fn safeclaw_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            // The kernel keeps 15 bytes of a program's name.
            p.name_as_str().is_some_and(|n| {
                let optional = &safeclaw_agent::kernel::loader::PROGRAMS_IF_PRESENT;
                let mut ours = safeclaw_agent::kernel::loader::PROGRAMS.iter().chain(optional.iter());
                !n.is_empty() && ours.any(|q| q.starts_with(n))
            })
        })
        .map(|p| p.id())
        .collect()
}

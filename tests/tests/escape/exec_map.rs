//! Escape suite, running a binary's code without exec'ing it: from inside a real agent session
//! (`safeclaw-agent exec --user nobody`), mapping the code of a binary the exec rules deny fails
//! with EPERM and leaves one `process.map_exec` deny entry; dynamically linked programs still run.
use std::path::Path;

use safeclaw_integration::{entries_for, probe_outcome, test_files_dir, RunAs, Turn};

use crate::{DAEMON, PROBE};

/// Debian's dynamic loader, which may be run as a program: `ld.so BINARY ARGS`.
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// The shared daemon allowing everything except executing a copy of `echo` at `files/denied-echo`.
fn start(name: &str) -> (Turn, String) {
    let denied = format!("/tmp/{name}/files/denied-echo");
    let policy = format!(
        "version: 1\ndefault: allow\nrules:\n  - name: denied-binary\n    action: process.exec\n    effect: deny\n    binary: [{denied}]\n"
    );
    let daemon = DAEMON.turn(&policy);
    test_files_dir(name);
    std::fs::copy("/bin/echo", &denied).unwrap();
    (daemon, denied)
}

/// Stops the daemon and checks the one `process.map_exec` denial of `path`.
fn assert_map_denied(daemon: Turn, path: &str) {
    let entries = daemon.entries();
    let found = entries_for(&entries, "process.map_exec", path);
    assert_eq!(found.len(), 1, "exactly one process.map_exec entry for {path}: {found:#?}");
    assert_eq!(found[0]["effect"], "deny", "{:#}", found[0]);
    assert_eq!(found[0]["matchedRule"], "denied-binary", "{:#}", found[0]);
}

#[test]
fn the_loader_cannot_run_a_denied_binary() {
    let (daemon, denied) = start("safeclaw-map-loader");
    assert!(Path::new(LOADER).exists(), "no dynamic loader at {LOADER}");
    let out = daemon.session("escape", RunAs::Nobody, &[LOADER, &denied, "EXECUTED"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("EXECUTED"), "the denied binary ran: {out:?}");
    assert!(!out.status.success(), "{out:?}");
    assert_map_denied(daemon, &denied);
}

#[test]
fn mapping_a_denied_binarys_code_is_refused() {
    let (daemon, denied) = start("safeclaw-map-mmap");
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "mmap-exec", &denied]);
    assert_eq!(probe_outcome(&out), "EPERM");
    assert_map_denied(daemon, &denied);
}

#[test]
fn making_a_mapping_of_it_executable_is_refused() {
    let (daemon, denied) = start("safeclaw-map-mprotect");
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "mprotect-exec", &denied]);
    assert_eq!(probe_outcome(&out), "EPERM");
    assert_map_denied(daemon, &denied);
}

#[test]
fn dynamically_linked_programs_and_the_loader_still_run_allowed_binaries() {
    let (daemon, _) = start("safeclaw-map-allowed");
    let script =
        format!("echo direct && {LOADER} /bin/echo loaded && python3 -c 'import ctypes; print(\"python\")'");
    let out = daemon.session("escape", RunAs::Nobody, &["/bin/sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "direct\nloaded\npython\n");
    let entries = daemon.entries();
    let denials: Vec<_> = entries.iter().filter(|e| e["effect"] == "deny").collect();
    assert!(denials.is_empty(), "{denials:#?}");
}

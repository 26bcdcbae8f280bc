//! The escape suite: from inside real agent sessions, every other way to reach an object or effect a
//! policy denies (other syscalls, aliases, namespaces, passed descriptors, signals, the control
//! plane) is refused and recorded. One test binary, so that its tests share one daemon: each daemon
//! start verifies every program and each stop waits for the kernel to free every link, about half a
//! minute in the emulated VM. Tests that stop, signal or edit their daemon start their own.
mod changes;
mod control;
mod exec;
mod exec_map;
mod files;
mod guard;
mod launcher;
mod listen;
mod net;
mod paths;
mod self_protection;
mod signals;
mod unix;

use safeclaw_integration::{SharedDaemon, NOBODY};

/// The probe a session runs to make each attempt and report its outcome.
const PROBE: &str = env!("CARGO_BIN_EXE_escape-probe");
/// A policy that allows every action a rule can name.
const ALLOW_ALL: &str = "version: 1\ndefault: allow\nrules: []\n";
/// The daemon of every test that leaves it running as it found it, each enforcing its own policy in turn.
static DAEMON: SharedDaemon = SharedDaemon::new("safeclaw-escape");

/// A process of the agent's user (nobody) outside the agent cgroup, for two minutes: only SafeClaw
/// stands between an agent running as nobody and it.
fn nobodys_process_outside() -> std::process::Child {
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new("sleep").arg("120").uid(NOBODY).gid(NOBODY).spawn().unwrap()
}

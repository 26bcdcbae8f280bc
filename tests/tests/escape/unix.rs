//! Escape suite, Unix sockets: a denied socket stays denied whatever name reaches it — `..`, a
//! symlink, a bind mount of its directory, a hard link — for stream connects, datagram sends and
//! datagram connects. Each try fails with EPERM and is one deny entry naming the path the socket
//! was bound at; an allowed socket is still reached and recorded.
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;

use safeclaw_integration::{probe_outcome, Mount, RunAs};

use crate::{DAEMON, PROBE};

const POLICY: &str = r#"version: 1
default: allow
rules:
  - name: runtime-socket
    action: network.connect
    effect: deny
    unix: [/run/esc-unix/**]
"#;

/// The directory of the denied sockets, open to every user.
const DENIED_DIR: &str = "/run/esc-unix";

/// A socket file every user may connect to (only SafeClaw stands in the way).
fn open_to_all(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
}

fn fresh_dir(path: &str) {
    let _ = std::fs::remove_dir_all(path);
    std::fs::create_dir_all(path).unwrap();
    open_to_all(Path::new(path));
}

/// The `network.connect` entries naming `path`.
fn entries_naming<'a>(entries: &'a [serde_json::Value], path: &str) -> Vec<&'a serde_json::Value> {
    entries
        .iter()
        .filter(|e| e["action"] == "network.connect" && e["requestDetails"]["path"] == path)
        .collect()
}

#[test]
fn a_denied_stream_socket_is_denied_by_every_name_that_reaches_it() {
    let daemon = DAEMON.turn(POLICY);
    fresh_dir(DENIED_DIR);
    let socket = format!("{DENIED_DIR}/docker.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    open_to_all(Path::new(&socket));
    // Other names of the same socket, made outside the agent.
    let symlink = "/tmp/esc-unix-link.sock";
    let _ = std::fs::remove_file(symlink);
    std::os::unix::fs::symlink(&socket, symlink).unwrap();
    fresh_dir("/run/esc-unix-other");
    let hard_link = "/run/esc-unix-other/hard.sock";
    std::fs::hard_link(&socket, hard_link).unwrap();
    fresh_dir("/tmp/esc-unix-alias");
    let bind = Mount::bind(Path::new(DENIED_DIR), Path::new("/tmp/esc-unix-alias"));
    let names = [
        socket.as_str(),
        "/tmp/../run/esc-unix/docker.sock",
        symlink,
        "/tmp/esc-unix-alias/docker.sock",
        hard_link,
        // The kernel's own link to the socket's directory, as a relative walk through /proc.
        "/proc/self/root/run/esc-unix/docker.sock",
    ];
    for name in names {
        let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "unix-connect", name]);
        assert_eq!(probe_outcome(&out), "EPERM", "{name}");
    }
    // An allowed socket is still reached, through a symlink too, and recorded by its own path.
    let allowed = "/tmp/esc-unix-ok.sock";
    let _ = std::fs::remove_file(allowed);
    let _allowed_listener = UnixListener::bind(allowed).unwrap();
    open_to_all(Path::new(allowed));
    let allowed_link = "/tmp/esc-unix-ok-link.sock";
    let _ = std::fs::remove_file(allowed_link);
    std::os::unix::fs::symlink(allowed, allowed_link).unwrap();
    for name in [allowed, allowed_link] {
        let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "unix-connect", name]);
        assert_eq!(probe_outcome(&out), "ok", "{name}");
    }
    drop(bind);
    let entries = daemon.entries();
    let found = entries_naming(&entries, &socket);
    assert_eq!(found.len(), names.len(), "one entry per try, each naming the bound path: {found:#?}");
    for entry in &found {
        assert_eq!(entry["effect"], "deny", "{entry:#}");
        assert_eq!(entry["matchedRule"], "runtime-socket");
        assert_eq!(entry["requestDetails"]["protocol"], "unix");
        assert!(entry["flags"].is_null(), "no flag: {entry:#}");
    }
    for name in &names[1..] {
        assert!(entries_naming(&entries, name).is_empty(), "no entry names the spelling {name}");
    }
    let allowed_entries = entries_naming(&entries, allowed);
    assert_eq!(allowed_entries.len(), 2, "{allowed_entries:#?}");
    assert!(allowed_entries.iter().all(|e| e["effect"] == "allow" && e["matchedRule"].is_null()));
}

#[test]
fn a_denied_datagram_socket_is_denied_to_sendto_and_connect_by_any_name() {
    let daemon = DAEMON.turn(POLICY);
    fresh_dir(DENIED_DIR);
    let socket = format!("{DENIED_DIR}/log.sock");
    let receiver = UnixDatagram::bind(&socket).unwrap();
    receiver.set_nonblocking(true).unwrap();
    open_to_all(Path::new(&socket));
    let symlink = "/tmp/esc-unix-log-link.sock";
    let _ = std::fs::remove_file(symlink);
    std::os::unix::fs::symlink(&socket, symlink).unwrap();
    let tries = [
        ("unix-dgram-sendto", socket.as_str()),
        ("unix-dgram-sendto", "/tmp/../run/esc-unix/log.sock"),
        ("unix-dgram-sendto", symlink),
        ("unix-dgram-connect", "/tmp/../run/esc-unix/log.sock"),
        ("unix-dgram-connect", symlink),
    ];
    for (how, name) in tries {
        let out = daemon.session("escape", RunAs::Nobody, &[PROBE, how, name]);
        assert_eq!(probe_outcome(&out), "EPERM", "{how} {name}");
    }
    let mut buf = [0u8; 8];
    assert!(receiver.recv(&mut buf).is_err(), "no datagram arrived");
    // An allowed datagram socket still receives, by its path and through a symlink.
    let allowed = "/tmp/esc-unix-ok-dgram.sock";
    let _ = std::fs::remove_file(allowed);
    let allowed_receiver = UnixDatagram::bind(allowed).unwrap();
    open_to_all(Path::new(allowed));
    let out = daemon.session(
        "escape",
        RunAs::Nobody,
        &[PROBE, "unix-dgram-sendto", "/tmp/./esc-unix-ok-dgram.sock"],
    );
    assert_eq!(probe_outcome(&out), "ok");
    assert_eq!(allowed_receiver.recv(&mut buf).unwrap(), 1);
    let entries = daemon.entries();
    let found = entries_naming(&entries, &socket);
    assert_eq!(found.len(), tries.len(), "{found:#?}");
    for (entry, (how, _)) in found.iter().zip(tries) {
        assert_eq!(entry["effect"], "deny", "{entry:#}");
        assert_eq!(entry["matchedRule"], "runtime-socket");
        let flags =
            if how == "unix-dgram-sendto" { serde_json::json!(["sendto"]) } else { serde_json::Value::Null };
        assert_eq!(entry["flags"], flags, "{how}: {entry:#}");
    }
    let allowed_entries = entries_naming(&entries, allowed);
    assert_eq!(allowed_entries.len(), 1, "{allowed_entries:#?}");
    assert_eq!(allowed_entries[0]["effect"], "allow");
}

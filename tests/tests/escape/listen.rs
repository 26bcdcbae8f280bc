//! Escape suite, inbound: an agent cannot serve beyond this host. A TCP listen and a UDP bind are
//! decided by the `network.listen` rules on the local address and port: the any-address (IPv4,
//! IPv6 dual-stack) and an unbound listen are denied with EPERM and one deny entry each; loopback
//! is still served.
use safeclaw_integration::{probe_outcome, RunAs};

use crate::{DAEMON, PROBE};

const POLICY: &str = r#"version: 1
default: allow
rules:
  - name: loopback-listen
    action: network.listen
    effect: allow
    cidrs: [127.0.0.0/8, "::1"]
  - name: no-serving
    action: network.listen
    effect: deny
"#;

/// The network.listen entries.
fn listens(entries: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    entries.iter().filter(|e| e["action"] == "network.listen").collect()
}

#[test]
fn serving_beyond_loopback_is_refused_and_loopback_is_served() {
    let daemon = DAEMON.turn(POLICY);
    let denied: [(&[&str], &str, u64, &str); 5] = [
        (&["tcp-listen", "0.0.0.0", "9990"], "0.0.0.0", 9990, "tcp"),
        (&["tcp-listen", "::", "9990"], "::", 9990, "tcp"),
        (&["tcp-listen-unbound", "inet"], "0.0.0.0", 0, "tcp"),
        (&["udp-bind", "0.0.0.0", "9991"], "0.0.0.0", 9991, "udp"),
        (&["udp-bind", "::", "9991"], "::", 9991, "udp"),
    ];
    for (args, ..) in &denied {
        let argv: Vec<&str> = std::iter::once(PROBE).chain(args.iter().copied()).collect();
        let out = daemon.session("escape", RunAs::Nobody, &argv);
        assert_eq!(probe_outcome(&out), "EPERM", "{args:?}");
    }
    let allowed: [(&[&str], &str, u64, &str); 3] = [
        (&["tcp-listen", "127.0.0.1", "9992"], "127.0.0.1", 9992, "tcp"),
        (&["tcp-listen", "::1", "9992"], "::1", 9992, "tcp"),
        (&["udp-bind", "127.0.0.1", "9993"], "127.0.0.1", 9993, "udp"),
    ];
    for (args, ..) in &allowed {
        let argv: Vec<&str> = std::iter::once(PROBE).chain(args.iter().copied()).collect();
        let out = daemon.session("escape", RunAs::Nobody, &argv);
        assert_eq!(probe_outcome(&out), "ok", "{args:?}");
    }
    // A UDP client's ephemeral port (bind to port 0, as Rust's and Java's sockets do before a
    // send) serves nothing it would not serve unbound: not decided, not recorded.
    let client = daemon.session("escape", RunAs::Nobody, &[PROBE, "udp-bind", "0.0.0.0", "0"]);
    assert_eq!(probe_outcome(&client), "ok");
    let entries = daemon.entries();
    let found = listens(&entries);
    assert_eq!(found.len(), denied.len() + allowed.len(), "one entry per try: {found:#?}");
    for (entry, (args, address, port, protocol)) in found.iter().zip(denied.iter().chain(&allowed)) {
        let deny = denied.iter().any(|d| d.0 == *args);
        assert_eq!(entry["effect"], if deny { "deny" } else { "allow" }, "{args:?}: {entry:#}");
        assert_eq!(entry["matchedRule"], if deny { "no-serving" } else { "loopback-listen" }, "{entry:#}");
        assert_eq!(entry["requestDetails"]["address"], *address, "{entry:#}");
        assert_eq!(entry["requestDetails"]["port"], *port, "{entry:#}");
        assert_eq!(entry["requestDetails"]["protocol"], *protocol, "{entry:#}");
    }
}

//! Escape suite, network: a denied address stays denied when reached without connect (UDP sendto),
//! through an IPv6 socket as an IPv4-mapped address, with an `AF_UNSPEC` family the kernel sends
//! as IPv4, or through another address of this host (loopback, any-address). Each try fails with
//! EPERM and is a deny entry. Repeated connects counted into one entry still account for each one.
use safeclaw_integration::{probe_outcome, RunAs};

use crate::{DAEMON, PROBE};

const POLICY: &str = r#"version: 1
default: allow
rules:
  - name: blocked-host
    action: network.connect
    effect: deny
    cidrs: [127.0.0.2/32]
    ports: [9999]
"#;

/// The network.connect entries for port 9999.
fn denials(entries: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    entries
        .iter()
        .filter(|e| e["action"] == "network.connect" && e["requestDetails"]["port"] == 9999)
        .collect()
}

/// The one denial among `entries`: a UDP send to 127.0.0.2 refused by `blocked-host`, with `flags`.
fn assert_one_udp_send_denied(entries: &[serde_json::Value], flags: &[&str]) {
    let found = denials(entries);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["effect"], "deny");
    assert_eq!(found[0]["matchedRule"], "blocked-host");
    assert_eq!(found[0]["requestDetails"]["protocol"], "udp");
    assert_eq!(found[0]["requestDetails"]["address"], "127.0.0.2");
    assert_eq!(found[0]["flags"], serde_json::json!(flags));
}

#[test]
fn udp_sendto_without_connect() {
    let daemon = DAEMON.turn(POLICY);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "udp-sendto", "127.0.0.2", "9999"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    assert_one_udp_send_denied(&daemon.entries(), &["sendto"]);
}

#[test]
fn ipv4_mapped_ipv6_is_decided_as_the_ipv4_address() {
    let daemon = DAEMON.turn(POLICY);
    // Listening, so that without SafeClaw the connect would succeed.
    let listener = std::net::TcpListener::bind("127.0.0.2:9999").unwrap();
    let tcp = daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect", "::ffff:127.0.0.2", "9999"]);
    assert_eq!(probe_outcome(&tcp), "EPERM");
    let udp = daemon.session("escape", RunAs::Nobody, &[PROBE, "udp-sendto", "::ffff:127.0.0.2", "9999"]);
    assert_eq!(probe_outcome(&udp), "EPERM");
    // The same IPv6 socket to an allowed port still connects: the rule, not the family, decided.
    let allowed =
        daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect", "::ffff:127.0.0.2", "9998"]);
    assert_eq!(probe_outcome(&allowed), "ECONNREFUSED");
    drop(listener);
    let entries = daemon.entries();
    let found = denials(&entries);
    assert_eq!(found.len(), 2, "{found:#?}");
    for entry in &found {
        assert_eq!(entry["effect"], "deny");
        assert_eq!(entry["matchedRule"], "blocked-host");
        assert_eq!(entry["requestDetails"]["address"], "::ffff:127.0.0.2");
    }
    let protocols: Vec<_> = found.iter().map(|e| e["requestDetails"]["protocol"].clone()).collect();
    assert_eq!(protocols, [serde_json::json!("tcp"), serde_json::json!("udp")]);
}

#[test]
fn udp_sendto_with_an_unspecified_family_is_decided_as_ipv4() {
    let daemon = DAEMON.turn(POLICY);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "udp-sendto-unspec", "127.0.0.2", "9999"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    // The same send to an allowed port goes out: the kernel does send AF_UNSPEC as IPv4.
    let allowed = daemon.session("escape", RunAs::Nobody, &[PROBE, "udp-sendto-unspec", "127.0.0.2", "9998"]);
    assert_eq!(probe_outcome(&allowed), "ok");
    // 127.0.0.2 is the address the kernel uses.
    assert_one_udp_send_denied(&daemon.entries(), &["sendto", "unspec_as_inet"]);
}

#[test]
fn every_alias_of_this_host_is_decided_as_the_denied_loopback_address() {
    let daemon = DAEMON.turn(POLICY);
    // One dual-stack listener answers all of them without SafeClaw.
    let listener = std::net::TcpListener::bind("[::]:9999").unwrap();
    let aliases = ["127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"];
    for alias in aliases {
        let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect", alias, "9999"]);
        assert_eq!(probe_outcome(&out), "EPERM", "{alias}");
    }
    // The listener is reachable on another port of the same aliases: the rule, not the address, decided.
    let listener_9998 = std::net::TcpListener::bind("[::]:9998").unwrap();
    let allowed = daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect", "::1", "9998"]);
    assert_eq!(probe_outcome(&allowed), "ok");
    drop((listener, listener_9998));
    let entries = daemon.entries();
    let found = denials(&entries);
    assert_eq!(found.len(), aliases.len(), "{found:#?}");
    for (entry, alias) in found.iter().zip(aliases) {
        assert_eq!(entry["effect"], "deny");
        assert_eq!(entry["matchedRule"], "blocked-host");
        assert_eq!(entry["requestDetails"]["address"], alias, "recorded as written");
    }
}

/// Repeated identical connects may be folded into one entry with a count (docs/audit-format.md,
/// "Repeated attempts"), so an agent could try to hide connects among repeats: every connect must
/// still be accounted for exactly once, and a denied one is never counted.
#[test]
fn repeated_connects_are_each_accounted_for_and_denials_are_never_counted() {
    let daemon = DAEMON.turn(POLICY);
    let listener = std::net::TcpListener::bind("127.0.0.1:9997").unwrap();
    let out =
        daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect-repeat", "127.0.0.1", "9997", "40"]);
    assert_eq!(probe_outcome(&out), "ok");
    let denied =
        daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect-repeat", "127.0.0.2", "9999", "3"]);
    assert_eq!(probe_outcome(&denied), "EPERM", "the first denied connect ends the probe");
    let again = daemon.session("escape", RunAs::Nobody, &[PROBE, "tcp-connect", "127.0.0.2", "9999"]);
    assert_eq!(probe_outcome(&again), "EPERM");
    drop(listener);
    // A count is written once its window (1 s by default) has closed: wait for all 40.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (allowed, accounted) = loop {
        let entries = daemon.entries();
        let allowed: Vec<serde_json::Value> = entries
            .into_iter()
            .filter(|e| e["action"] == "network.connect" && e["requestDetails"]["port"] == 9997)
            .collect();
        let accounted: u64 = allowed.iter().map(|e| e["repeats"]["count"].as_u64().unwrap_or(1)).sum();
        if accounted >= 40 || std::time::Instant::now() > deadline {
            break (allowed, accounted);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(accounted, 40, "each connect accounted for exactly once: {allowed:#?}");
    assert!(allowed.len() < 40, "repeats were counted, not recorded one by one: {} entries", allowed.len());
    for entry in &allowed {
        assert_eq!(entry["effect"], "allow");
        assert_eq!(entry["requestDetails"]["address"], "127.0.0.1");
        assert_eq!(entry["requestDetails"]["protocol"], "tcp");
        if entry["repeats"].is_object() {
            assert!(entry["kernelSeq"].is_null(), "a counted entry has no kernelSeq of its own: {entry}");
        }
    }
    let entries = daemon.entries();
    let found = denials(&entries);
    assert_eq!(found.len(), 2, "one entry per denied connect: {found:#?}");
    for entry in &found {
        assert_eq!(entry["effect"], "deny");
        assert!(entry["repeats"].is_null(), "a denial is never counted: {entry}");
    }
}

/// The raw-socket entries (`network.connect` flagged `raw_socket`).
fn raw_socket_entries(entries: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    entries
        .iter()
        .filter(|e| e["action"] == "network.connect" && e["flags"] == serde_json::json!(["raw_socket"]))
        .collect()
}

#[test]
fn raw_and_packet_sockets_follow_the_raw_rule() {
    let policy = "version: 1\ndefault: allow\nrules:\n  - {name: no-raw, action: network.connect, effect: deny, protocol: raw}\n";
    let daemon = DAEMON.turn(policy);
    // Root: without CAP_NET_RAW the kernel refuses these sockets before any LSM hook.
    for family in ["inet", "inet6", "packet"] {
        let out = daemon.session("escape", RunAs::Root, &[PROBE, "raw-socket", family]);
        assert_eq!(probe_outcome(&out), "EPERM", "{family}");
    }
    // Ordinary sockets are decided by their destination, not by the raw rule.
    let udp = daemon.session("escape", RunAs::Root, &[PROBE, "udp-sendto", "127.0.0.1", "9"]);
    assert_eq!(probe_outcome(&udp), "ok");
    let entries = daemon.entries();
    let found = raw_socket_entries(&entries);
    assert_eq!(found.len(), 3, "{found:#?}");
    for (entry, family) in found.iter().zip([2, 10, 17]) {
        assert_eq!(entry["effect"], "deny");
        assert_eq!(entry["matchedRule"], "no-raw");
        assert_eq!(entry["requestDetails"]["family"], family);
    }
}

#[test]
fn raw_and_packet_sockets_are_denied_under_the_default_policy() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
    let policy = std::fs::read_to_string(&path).unwrap();
    let daemon = DAEMON.turn(&policy);
    // An allowed interpreter (the probe's own directory is not an allowed place to run from).
    let script = [
        "import socket",
        "for f, p in ((socket.AF_INET, 1), (socket.AF_INET6, 58), (socket.AF_PACKET, 0x0300)):",
        "    try:",
        "        socket.socket(f, socket.SOCK_RAW, p)",
        "        print('ok')",
        "    except OSError as e:",
        "        print(e.errno)",
    ]
    .join("\n");
    let out = daemon.session("escape", RunAs::Root, &["/usr/bin/python3", "-c", &script]);
    assert_eq!(probe_outcome(&out), "1\n1\n1", "EPERM three times: {out:?}");
    let entries = daemon.entries();
    let found = raw_socket_entries(&entries);
    assert_eq!(found.len(), 3, "{found:#?}");
    for entry in found {
        assert_eq!(entry["effect"], "deny");
        assert!(entry.get("matchedRule").is_none(), "the deny default decided: {entry:#}");
    }
}

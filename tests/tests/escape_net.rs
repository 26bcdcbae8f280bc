//! Escape suite, network: a denied address stays denied when reached without connect (UDP sendto) or
//! through an IPv6 socket as an IPv4-mapped address. Each try fails with EPERM and is a deny entry.
use safeclaw_integration::{probe_outcome, Daemon, RunAs};

const PROBE: &str = env!("CARGO_BIN_EXE_escape-probe");

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

#[test]
fn udp_sendto_without_connect() {
    let daemon = Daemon::start("safeclaw-esc-sendto", POLICY);
    let out = daemon.session("escape", RunAs::Nobody, &[PROBE, "udp-sendto", "127.0.0.2", "9999"]);
    assert_eq!(probe_outcome(&out), "EPERM");
    let (status, entries) = daemon.stop();
    assert!(status.success());
    let found = denials(&entries);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["effect"], "deny");
    assert_eq!(found[0]["matchedRule"], "blocked-host");
    assert_eq!(found[0]["requestDetails"]["protocol"], "udp");
    assert_eq!(found[0]["requestDetails"]["address"], "127.0.0.2");
    assert_eq!(found[0]["flags"], serde_json::json!(["sendto"]));
}

#[test]
fn ipv4_mapped_ipv6_is_decided_as_the_ipv4_address() {
    let daemon = Daemon::start("safeclaw-esc-mapped", POLICY);
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
    let (status, entries) = daemon.stop();
    assert!(status.success());
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

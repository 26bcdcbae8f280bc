//! syslog destinations against a real rsyslog (Debian's package) on loopback, with UDP, TCP (octet
//! counting) and TLS (gtls) inputs writing what they receive to files through a template. rsyslog and the
//! delivering process are killed with SIGKILL and restarted mid-stream; every entry must arrive, in order.
//! CEF lines are checked field by field with the parser below, written from the CEF specification.
mod destinations_support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use destinations_support::rsyslog::Rsyslog;
use destinations_support::{assert_complete_in_order, wait_for, Deliverer, Workspace};

static RSYSLOG: Mutex<Option<Rsyslog>> = Mutex::new(None);

fn with_rsyslog<T>(f: impl FnOnce(&mut Rsyslog) -> T) -> T {
    let mut guard = RSYSLOG.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Rsyslog::start))
}

/// An RFC 5424 message as the receiver wrote it (`%rawmsg%`).
#[derive(Debug)]
struct Syslog5424 {
    pri: u8,
    timestamp: String,
    msgid: String,
    msg: String,
}

fn parse_5424(line: &str) -> Syslog5424 {
    let rest = line.strip_prefix('<').unwrap_or_else(|| panic!("no PRI: {line}"));
    let (pri, rest) = rest.split_once('>').unwrap();
    let rest = rest.strip_prefix("1 ").unwrap_or_else(|| panic!("not version 1: {line}"));
    let mut parts = rest.splitn(7, ' ');
    let mut next = || parts.next().unwrap_or_else(|| panic!("short header: {line}")).to_owned();
    let (timestamp, host, app, procid, msgid, sd, msg) =
        (next(), next(), next(), next(), next(), next(), next());
    assert!(!host.is_empty() && host != "-", "{line}");
    assert_eq!(app, "safeclaw", "{line}");
    assert!(procid.parse::<u32>().is_ok(), "{line}");
    assert_eq!(sd, "-", "{line}");
    Syslog5424 { pri: pri.parse().unwrap(), timestamp, msgid, msg }
}

/// A CEF:0 event, parsed by the specification: seven `|`-separated header fields where `\|` and `\\`
/// are escapes, then `key=value` pairs where values end at the space before the next unescaped
/// `key=`, with `\=`, `\\`, `\n` and `\r` as escapes.
#[derive(Debug)]
struct Cef {
    header: Vec<String>,
    extension: HashMap<String, String>,
}

fn parse_cef(text: &str) -> Cef {
    let body = text.strip_prefix("CEF:").unwrap_or_else(|| panic!("not CEF: {text}"));
    let mut header = Vec::new();
    let mut field = String::new();
    let mut chars = body.chars();
    while header.len() < 7 {
        match chars.next() {
            Some('\\') => match chars.next() {
                Some(c @ ('|' | '\\')) => field.push(c),
                other => panic!("bad header escape \\{other:?} in {text}"),
            },
            Some('|') => header.push(std::mem::take(&mut field)),
            Some(c) => field.push(c),
            None => panic!("header has {} fields: {text}", header.len()),
        }
    }
    let rest: Vec<char> = chars.collect();
    // Positions of unescaped '=' and the key before each.
    let mut pairs: Vec<(String, usize, usize)> = Vec::new(); // key, value start, key start
    let mut i = 0;
    while i < rest.len() {
        if rest[i] == '\\' {
            i += 2;
            continue;
        }
        if rest[i] == '=' {
            let mut start = i;
            while start > 0 && (rest[start - 1].is_ascii_alphanumeric() || rest[start - 1] == '_') {
                start -= 1;
            }
            assert!(start == 0 || rest[start - 1] == ' ', "unescaped '=' inside a value in {text}");
            pairs.push((rest[start..i].iter().collect(), i + 1, start));
        }
        i += 1;
    }
    let mut extension = HashMap::new();
    for (n, (key, value_start, _)) in pairs.iter().enumerate() {
        let value_end = pairs.get(n + 1).map_or(rest.len(), |next| next.2 - 1);
        let raw: String = rest[*value_start..value_end].iter().collect();
        let mut value = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('=') => value.push('='),
                    Some('\\') => value.push('\\'),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    other => panic!("bad extension escape \\{other:?} in {text}"),
                }
            } else {
                value.push(c);
            }
        }
        assert!(extension.insert(key.clone(), value).is_none(), "key {key} twice in {text}");
    }
    Cef { header, extension }
}

/// Checks one CEF event against the entry it came from, field by field.
fn check_cef(cef: &Cef, entry: &serde_json::Value) {
    let x = &cef.extension;
    assert_eq!(cef.header[0], "0");
    assert_eq!(cef.header[1], "Authensor");
    assert_eq!(cef.header[2], "SafeClaw");
    assert_eq!(cef.header[4], entry["action"].as_str().unwrap());
    let severity: u8 = cef.header[6].parse().unwrap();
    assert!(severity <= 10);
    assert_eq!(x["externalId"], entry["sequence"].to_string());
    assert_eq!(x["cs5Label"], "hash");
    assert_eq!(x["cs5"], entry["hash"].as_str().unwrap());
    assert_eq!(x["cs6Label"], "prevHash");
    assert_eq!(x["cs6"], entry["prevHash"].as_str().unwrap());
    let rt: u128 = x["rt"].parse().unwrap();
    assert!(rt > 1_700_000_000_000, "rt {rt}");
    if let Some(effect) = entry["effect"].as_str() {
        assert_eq!(x["act"], effect);
        assert_eq!(x["outcome"], if effect == "deny" { "failure" } else { "success" });
        assert_eq!(severity, if effect == "deny" { 7 } else { 3 });
        assert_eq!(x["suser"], entry["agentId"].as_str().unwrap());
        assert_eq!(x["duser"], entry["userId"].as_str().unwrap());
        assert_eq!(x["cs1Label"], "agentId");
        assert_eq!(x["cs2"], entry["sessionId"].as_str().unwrap());
        assert_eq!(x["cs3"], entry["matchedRule"].as_str().unwrap());
        assert_eq!(x["cs4Label"], "policyHash");
        assert_eq!(x["cs4"], entry["policyHash"].as_str().unwrap());
        assert_eq!(x["msg"], entry["reason"].as_str().unwrap());
        let details = &entry["requestDetails"];
        assert_eq!(x["spid"], details["pid"].to_string());
        assert_eq!(x["sproc"], details["comm"].as_str().unwrap());
        if let Some(path) = details["path"].as_str() {
            assert_eq!(x["filePath"], path);
            assert_eq!(x["fname"], path.rsplit('/').next().unwrap());
        }
        if let Some(address) = details["address"].as_str() {
            assert_eq!(x["dst"], address);
            assert_eq!(x["dpt"], details["port"].to_string());
        }
        if let Some(argv) = details["argv"].as_array() {
            let joined: Vec<&str> = argv.iter().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(x["flexString1"], joined.join(" "));
        }
    }
}

fn received(path: &Path) -> Vec<Syslog5424> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(parse_5424).collect()
}

/// 120,000 attempts written while they are delivered over TCP (CEF), TLS (JSON) and UDP (CEF); rsyslog
/// and then the delivering process are killed with SIGKILL and restarted in the middle of the stream.
#[test]
fn every_entry_arrives_in_order_through_kills_of_receiver_and_sender() {
    let workspace = Workspace::new();
    let (udp, tcp, tls, ca) = with_rsyslog(|r| (r.udp, r.tcp, r.tls, r.ca()));
    let config = workspace.config(&format!(
        "    - type: syslog\n      name: siem-tcp\n      host: 127.0.0.1\n      port: {tcp}\n      format: cef\n\
         \x20   - type: syslog\n      name: siem-tls\n      host: 127.0.0.1\n      port: {tls}\n      protocol: tls\n      format: json\n      tls:\n        caFile: {}\n        serverName: localhost\n\
         \x20   - type: syslog\n      name: siem-udp\n      host: 127.0.0.1\n      port: {udp}\n      protocol: udp\n      format: cef\n",
        ca.display()
    ));
    let writer = workspace.write_in_background(120_000, Duration::from_millis(5));
    let mut deliverer = Deliverer::start(&workspace, &config);
    let progress = |name: &str| workspace.status(name).delivered;
    wait_for("the first 20,000 entries over TCP", Duration::from_secs(600), || progress("siem-tcp") > 20_000);
    with_rsyslog(Rsyslog::kill9_and_restart);
    wait_for("50,000 entries over TCP and TLS", Duration::from_secs(600), || {
        progress("siem-tcp") > 50_000 && progress("siem-tls") > 50_000
    });
    deliverer.kill9_and_restart();
    writer.join().unwrap();
    let end = workspace.durable_end();
    assert!(end > 120_000, "{end}");
    wait_for("every entry delivered over TCP and TLS", Duration::from_secs(600), || {
        progress("siem-tcp") == end && progress("siem-tls") == end && progress("siem-udp") == end
    });
    // Delivered means rsyslog's TCP stack acknowledged it two seconds ago: it is in the files.
    deliverer.stop();
    for name in ["siem-tcp", "siem-tls", "siem-udp"] {
        assert_eq!(workspace.status(name).lost_to_retention, 0, "{name}");
    }

    let entries = workspace.entries();
    let values: Vec<serde_json::Value> =
        entries.iter().map(|e| serde_json::from_slice(&e.line).unwrap()).collect();
    let (tcp_file, tls_file, udp_file) =
        with_rsyslog(|r| (r.file("tcp.log"), r.file("tls.log"), r.file("udp.log")));

    let tcp_messages = received(&tcp_file);
    let mut sequences = Vec::new();
    for message in &tcp_messages {
        let cef = parse_cef(&message.msg);
        let sequence: u64 = cef.extension["externalId"].parse().unwrap();
        let entry = &values[sequence as usize];
        check_cef(&cef, entry);
        assert_eq!(message.timestamp, entry["timestamp"].as_str().unwrap());
        assert_eq!(message.msgid, entry["action"].as_str().unwrap());
        assert_eq!(message.pri / 8, 13, "facility log audit");
        sequences.push(sequence);
    }
    let restarts = assert_complete_in_order(&sequences, end);
    assert!(restarts >= 1, "killing rsyslog should have made the sender re-send a range");

    let tls_messages = received(&tls_file);
    let mut sequences = Vec::new();
    for message in &tls_messages {
        let value: serde_json::Value = serde_json::from_str(&message.msg).unwrap();
        let sequence = value["sequence"].as_u64().unwrap();
        assert_eq!(
            message.msg.as_bytes(),
            &entries[sequence as usize].line[..],
            "JSON must be the entry as written"
        );
        sequences.push(sequence);
    }
    assert_complete_in_order(&sequences, end);

    // UDP promises nothing across a receiver restart; what arrived is well-formed CEF of real entries.
    let udp_messages = received(&udp_file);
    assert!(udp_messages.len() > 1000, "{} UDP messages", udp_messages.len());
    for message in udp_messages.iter().step_by(97) {
        let cef = parse_cef(&message.msg);
        let sequence: usize = cef.extension["externalId"].parse().unwrap();
        check_cef(&cef, &values[sequence]);
    }
}

#[test]
fn cef_parser_reads_escapes_as_the_spec_defines_them() {
    let cef = parse_cef(r"CEF:0|V\|x|P\\y|1|c|n|5|msg=a\=b c\\d\ne cs1=x y");
    assert_eq!(cef.header[1], "V|x");
    assert_eq!(cef.header[2], "P\\y");
    assert_eq!(cef.extension["msg"], "a=b c\\d\ne");
    assert_eq!(cef.extension["cs1"], "x y");
}

/// Long paths are cut only with a marker, never silently; the CEF stays parseable.
#[test]
fn a_long_path_is_cut_with_a_marker() {
    let entry = serde_json::json!({
        "sequence": 5, "timestamp": "2026-02-13T10:45:23.102Z", "action": "file.read", "effect": "allow",
        "requestDetails": {"path": format!("/{}", "d/".repeat(3000)), "pid": 1, "comm": "x"},
        "hash": "sha256:aa", "prevHash": "sha256:bb"
    });
    let line = safeclaw_agent::destinations::cef::format(&entry, "h");
    let cef = parse_cef(&line);
    let path = &cef.extension["filePath"];
    assert!(path.len() <= 1023 && path.contains("…[cut ") && path.ends_with(" bytes]"), "{path}");
}

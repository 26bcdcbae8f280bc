//! Property test: the compiled kernel tables (`CompiledPolicy::decide`) and the reference evaluator
//! agree, effect and rule id, on random policies, paths and addresses; and loading never panics.

use std::net::IpAddr;

use proptest::prelude::*;
use safeclaw_agent::policy::compiled::Request;
use safeclaw_agent::policy::{compile_all, load_str, CompileContext, Evaluator, Glob, HostAddresses, Syntax};

const HOME: &str = "/h";

fn path_glob() -> impl Strategy<Value = String> {
    let start = prop::sample::select(vec!["/", "~/", "**/", "/a/", "/h/", "/a/**/"]);
    let segment = prop::sample::select(vec![
        "a", "b", ".env", "*", "?", "[ab]", "[!a]", "*.pem", "{a,b}", "{a,b/c}", "**", "x*y", "ab", "a?",
        "{,x}b",
    ]);
    (start, prop::collection::vec(segment, 0..4))
        .prop_map(|(start, segments)| {
            let glob = format!("{start}{}", segments.join("/"));
            glob.trim_end_matches('/').to_owned()
        })
        .prop_filter("valid path glob", |g| Glob::parse(g, Syntax::Path).is_ok())
}

fn binary_glob() -> impl Strategy<Value = String> {
    prop_oneof![path_glob(), prop::sample::select(vec!["a", "*.pem", "x*", "b"]).prop_map(str::to_owned)]
        .prop_filter("valid binary glob", |g| Glob::parse(g, Syntax::Binary).is_ok())
}

fn unix_glob() -> impl Strategy<Value = String> {
    prop_oneof![path_glob(), prop::sample::select(vec!["@a*", "@*", "@b"]).prop_map(str::to_owned)]
}

fn list<S: Strategy<Value = String>>(items: S) -> impl Strategy<Value = String> {
    prop::collection::vec(items, 1..3).prop_map(|items| {
        format!("[{}]", items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", "))
    })
}

fn effect() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["allow", "deny", "audit"])
}

/// One rule's YAML lines after `name:` (action, effect, matchers).
fn rule_body() -> impl Strategy<Value = String> {
    let cidrs = prop::sample::subsequence(
        vec![
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3",
            "::/0",
            "0.0.0.0/0",
            "fd00::/8",
            "192.168.0.0/24",
            "10.1.2.0/24",
        ],
        1..3,
    );
    let ports =
        prop::sample::subsequence(vec!["22", "80", "443", "\"8000-9000\"", "\"0-1024\"", "65535"], 1..3);
    let protocol = prop::sample::select(vec!["tcp", "udp", "any"]);
    prop_oneof![
        (
            prop::sample::select(vec!["file.read", "file.write", "file.*"]),
            effect(),
            prop::option::of(list(path_glob()))
        )
            .prop_map(|(action, effect, paths)| {
                let paths = paths.map(|p| format!("\n    paths: {p}")).unwrap_or_default();
                format!("    action: {action}\n    effect: {effect}{paths}")
            }),
        (effect(), prop::option::of(list(binary_glob()))).prop_map(|(effect, binary)| {
            let binary = binary.map(|b| format!("\n    binary: {b}")).unwrap_or_default();
            format!("    action: process.exec\n    effect: {effect}{binary}")
        }),
        (list(binary_glob()), prop::sample::select(vec!["[\"push*\"]", "[\"a\", \"*\"]"])).prop_map(
            |(binary, args)| {
                format!("    action: process.exec\n    effect: audit\n    binary: {binary}\n    args: {args}")
            }
        ),
        (effect(), prop::option::of(cidrs), prop::option::of(ports), prop::option::of(protocol)).prop_map(
            |(effect, cidrs, ports, protocol)| {
                let mut body = format!("    action: network.connect\n    effect: {effect}");
                if let Some(cidrs) = cidrs {
                    body.push_str(&format!(
                        "\n    cidrs: [{}]",
                        cidrs.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")
                    ));
                }
                if let Some(ports) = ports {
                    body.push_str(&format!("\n    ports: [{}]", ports.join(", ")));
                }
                if let Some(protocol) = protocol {
                    body.push_str(&format!("\n    protocol: {protocol}"));
                }
                body
            }
        ),
        (effect(), list(unix_glob())).prop_map(|(effect, unix)| format!(
            "    action: network.connect\n    effect: {effect}\n    unix: {unix}"
        )),
        (
            effect(),
            list(prop::sample::select(vec!["api.example.com", "other.example.com"]).prop_map(str::to_owned))
        )
            .prop_map(|(effect, hosts)| format!(
                "    action: network.connect\n    effect: {effect}\n    hosts: {hosts}"
            )),
        effect().prop_map(|effect| format!("    action: \"*\"\n    effect: {effect}")),
    ]
}

fn rules(prefix: &'static str, indent: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(rule_body(), 0..7).prop_map(move |bodies| {
        let pad = " ".repeat(indent);
        bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let body: String = body.lines().map(|l| format!("{pad}{l}\n")).collect();
                format!("{pad}  - name: {prefix}{i}\n{body}")
            })
            .collect()
    })
}

fn policy_text() -> impl Strategy<Value = String> {
    (effect(), rules("r", 0), rules("bot", 4)).prop_map(|(default, base, agent)| {
        format!("version: 1\ndefault: {default}\nrules:\n{base}agents:\n  bot:\n    rules:\n{agent}")
    })
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop::sample::select(vec!["a", "b", ".env", "x.pem", "ab", "xzy", "c", "h", "", "xy"]);
    prop_oneof![
        8 => (prop::sample::select(vec!["", "/h", "/a"]), prop::collection::vec(segment, 0..5))
            .prop_map(|(start, segments)| {
                let mut path = start.to_owned();
                for s in segments {
                    path.push('/');
                    path.push_str(s);
                }
                if path.is_empty() { "/".to_owned() } else { path }.into_bytes()
            }),
        1 => prop::sample::select(vec!["pipe:[1]", "@a", "@b", "", "/", "@ab"]).prop_map(|p| p.as_bytes().to_vec()),
        1 => Just(vec![b'a'; safeclaw_common::PATH_MAX]),
    ]
}

fn address() -> impl Strategy<Value = [u8; 16]> {
    prop::sample::select(vec![
        "10.1.2.3",
        "10.2.0.1",
        "10.1.2.200",
        "192.168.0.5",
        "8.8.8.8",
        "::1",
        "fd00::1",
        "2001:db8::1",
        "::ffff:10.1.2.3",
        "192.0.2.10",
        "192.0.2.11",
    ])
    .prop_map(|text| match text.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    })
}

/// (kind, path, address, port, protocol) of a request.
type RawRequest = (u8, Vec<u8>, [u8; 16], u16, u8);

fn requests() -> impl Strategy<Value = Vec<RawRequest>> {
    let port = prop::sample::select(vec![0u16, 22, 80, 443, 1024, 1025, 8080, 8500, 9000, 9001, 65535]);
    let protocol = prop::sample::select(vec![0u8, 6, 17, 132]);
    prop::collection::vec((0u8..7, path(), address(), port, protocol), 1..24)
}

fn request<'a>(kind: u8, path: &'a [u8], addr: [u8; 16], port: u16, protocol: u8) -> Request<'a> {
    match kind {
        0 => Request::FileOpen { path, read: true, write: false },
        1 => Request::FileOpen { path, read: false, write: true },
        2 => Request::FileOpen { path, read: true, write: true },
        3 => Request::FileOpen { path, read: false, write: false },
        4 => Request::Exec { path },
        5 => Request::ConnectUnix { path },
        _ => Request::ConnectInet { protocol, addr, port },
    }
}

fn context() -> CompileContext {
    let mut hosts = HostAddresses::default();
    hosts.insert(
        "api.example.com".parse().unwrap(),
        ["192.0.2.10".parse().unwrap(), "10.1.2.3".parse().unwrap()],
    );
    CompileContext::new(HOME).with_hosts(hosts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn compiled_tables_agree_with_the_evaluator(text in policy_text(), requests in requests()) {
        let policy = load_str("random.yaml", &text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let ctx = context();
        let compiled = compile_all(&policy, &ctx).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        for agent in [None, Some("bot")] {
            let profile = compiled.profile(agent);
            let evaluator = Evaluator::new(&policy, agent, &ctx).map_err(TestCaseError::fail)?;
            for (kind, path, addr, port, protocol) in &requests {
                let request = request(*kind, path, *addr, *port, *protocol);
                let kernel = profile.tables.decide(&request);
                let reference = evaluator.evaluate(&request);
                prop_assert_eq!(kernel, reference, "agent {:?}, request {:?}\n{}", agent, request, text);
                prop_assert_eq!(evaluator.explain(&request).decision, reference, "explain disagrees on {:?}", request);
            }
        }
    }

    #[test]
    fn loading_arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = load_str("fuzz.yaml", &text);
    }

    #[test]
    fn loading_mutated_policies_never_panics(text in policy_text(), cut in 0usize..2000, insert in "[\\[\\]{}:,*\\-\\n #&!|>'\"]{0,4}") {
        let at = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count().max(1)).unwrap_or(0);
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        if let Ok(policy) = load_str("mutated.yaml", &mutated) {
            let _ = compile_all(&policy, &context());
        }
    }
}

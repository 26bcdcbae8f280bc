//! Synthetic attempts shaped like real kernel events, for tests, benchmarks and the crash test's child
//! writer.
use std::time::SystemTime;

use super::chain::Digest;
use super::entry::{
    ActionRecord, ConnectTarget, FileMode, Identity, KernelFlags, ProcessInfo, Protocol, RequestDetails,
    RuleMeta,
};
use crate::policy::compiled::Effect;
use crate::policy::Severity;

/// A deterministic record for kernel sequence `kernel_seq`: file reads and writes, execs and connects in
/// turn, every seventh denied.
pub fn record(kernel_seq: u64) -> ActionRecord {
    let n = kernel_seq;
    let details = match n % 4 {
        0 => RequestDetails::File {
            path: format!("/home/agent/project/src/module_{}.rs", n % 97).into_bytes(),
            mode: FileMode::Read,
        },
        1 => RequestDetails::File {
            path: format!("/home/agent/project/target/out_{}.o", n % 89).into_bytes(),
            mode: FileMode::Write,
        },
        2 => RequestDetails::Exec {
            path: b"/usr/bin/git".to_vec(),
            argv: Some(vec!["git".into(), "commit".into(), "-m".into(), format!("change {n}")]),
        },
        _ => RequestDetails::Connect(ConnectTarget::Inet {
            address: std::net::IpAddr::from([10, 0, (n % 250) as u8, 7]),
            port: 443,
            protocol: Protocol::Tcp,
        }),
    };
    let denied = n.is_multiple_of(7);
    ActionRecord {
        time: SystemTime::now(),
        effect: if denied { Effect::Deny } else { Effect::Allow },
        matched_rule: Some(if denied { "block-outside-project".into() } else { "allow-project".into() }),
        reason: Some(if denied { "agents stay inside their project".into() } else { "project files".into() }),
        rule_meta: if denied {
            RuleMeta {
                severity: Some(Severity::High),
                tags: ["soc2:CC6.1", "hipaa:164.312(a)(1)", "iso27001:A.8.3", "pci-dss:7.2.1", "phi"]
                    .map(String::from)
                    .to_vec(),
            }
        } else {
            RuleMeta { severity: Some(Severity::Low), tags: vec!["soc2:CC6.1".into()] }
        },
        identity: Identity {
            agent_id: Some("coding-agent-01".into()),
            session_id: Some("sess_synthetic".into()),
            user_id: Some("dev@example.com".into()),
        },
        details,
        process: ProcessInfo {
            pid: 4242,
            tid: 4243,
            ppid: Some(4200),
            uid: 1000,
            comm: b"agent".to_vec(),
            cgroup: 9876,
        },
        evaluation_ns: 150 + n % 900,
        kernel_seq,
        policy_hash: Digest::of(b"synthetic policy"),
        flags: KernelFlags::default(),
        tool_use_id: None,
        repeats: None,
    }
}

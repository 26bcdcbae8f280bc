//! deploy/kubernetes/: the DaemonSet and ConfigMap pass `kubernetes-validate --strict` against the
//! Kubernetes schemas (they cannot be run on a cluster here), a broken copy does not, the DaemonSet has
//! what the agent needs from its node, and the policy and config it ships load.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize as _;
use serde_yaml::Value;

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/safeclaw.yaml")
}

fn validate(path: &Path) -> Output {
    Command::new("kubernetes-validate").arg("--strict").arg(path).output().unwrap_or_else(|e| {
        panic!("cannot run kubernetes-validate ({e}): `xtask/setup.sh` installs it from PyPI")
    })
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|doc| Value::deserialize(doc).unwrap()).collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn manifests_pass_the_kubernetes_schemas_and_a_broken_copy_does_not() {
    let output = validate(&manifest());
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{said}");
    assert_eq!(said.matches("passed for resource").count(), 3, "{said}");

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(manifest()).unwrap();
    std::fs::write(&broken, text.replace("hostPID: true", "hostPID: \"yes\"")).unwrap();
    assert!(!validate(&broken).status.success(), "kubernetes-validate accepted hostPID: \"yes\"");
}

#[test]
fn the_daemonset_has_what_the_agent_needs_from_its_node() {
    let docs = documents(&std::fs::read_to_string(manifest()).unwrap());
    let pod = &kind(&docs, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(args.contains(&"--ready-file=/run/safeclaw/ready"), "{args:?}");
    let probe: Vec<&str> = container["readinessProbe"]["exec"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(probe.last(), Some(&"/run/safeclaw/ready"));
    let host_paths: Vec<&str> =
        pod["volumes"].as_sequence().unwrap().iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    for path in ["/sys/fs/bpf", "/sys/fs/cgroup", "/var/lib/safeclaw", "/var/log/safeclaw", "/run/safeclaw"] {
        assert!(host_paths.contains(&path), "no hostPath {path}: {host_paths:?}");
    }
}

#[test]
fn the_configmap_policy_and_config_load() {
    let docs = documents(&std::fs::read_to_string(manifest()).unwrap());
    let data = &kind(&docs, "ConfigMap")["data"];
    let policy =
        safeclaw_agent::policy::load_str("configmap/policy.yaml", data["policy.yaml"].as_str().unwrap());
    assert!(policy.is_ok(), "{:?}", policy.err().map(|e| e.to_string()));
    let config = data["config.yaml"].as_str().unwrap();
    let config =
        safeclaw_agent::config::Config::parse(config, Path::new("/etc/safeclaw/config.yaml")).unwrap();
    assert_eq!(config.audit_log_path(None), PathBuf::from("/var/log/safeclaw/audit.jsonl"));
}

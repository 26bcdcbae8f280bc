//! The real Claude Code and Codex CLIs under `safeclaw-agent exec`, their hooks installed by
//! `safeclaw-agent hooks install`, driven offline by a scripted model server on 127.0.0.1: an allowed
//! Bash call runs and its tool entry, its shell command and the kernel's exec and open entries carry
//! one tool-use id; a denied call never runs and the model is told the rule and the entry's
//! sequence number; a call the hook allows but the kernel denies shows both entries; a hook run
//! from outside any session with forged JSON is refused and recorded; the chain verifies.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safeclaw_integration::{agent_bin, read_entries, Daemon, RunAs};

const POLICY: &str = r#"version: 1
default: allow
rules:
  - {name: no-ssh-keys, action: file.*, effect: deny, paths: ["/root/.ssh/**"], reason: SSH keys}
  - name: no-forbidden
    action: tool.call
    effect: deny
    tools: [Bash]
    input: {command: "*forbidden-marker*"}
    reason: the test forbids this command
  - {name: agent-tools, action: tool.*, effect: allow}
"#;

/// Where `xtask/setup.sh` installed the CLIs.
fn clis() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/agent-clis/node_modules");
    assert!(
        dir.join(".bin/claude").exists(),
        "the agent CLIs are not installed in {}: run `cargo xtask setup`",
        dir.display()
    );
    dir
}

fn claude_bin() -> PathBuf {
    clis().join("@anthropic-ai/claude-code/bin/claude.exe")
}

fn codex_bin() -> PathBuf {
    clis().join("@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex")
}

/// The scripted model server, started once for the whole binary: its port and its request log.
fn model_server() -> &'static (u16, PathBuf) {
    static SERVER: OnceLock<(u16, PathBuf)> = OnceLock::new();
    static PROCESS: OnceLock<std::process::Child> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join("safeclaw-model-server");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (port_file, log) = (dir.join("port"), dir.join("requests.jsonl"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/model_server.py");
        // Runs until this test binary exits; it answers nothing but loopback.
        let args = [script.into_os_string(), port_file.clone().into(), log.clone().into()];
        let child = safeclaw_integration::on_keeper_thread(move || {
            let mut command = std::process::Command::new("python3");
            command.args(args);
            safeclaw_integration::end_with_spawning_thread(&mut command);
            command.spawn().unwrap()
        });
        let _ = PROCESS.set(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
                break port;
            }
            assert!(std::time::Instant::now() < deadline, "the model server did not start within 60 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        (port, log)
    })
}

/// Everything the model server has been sent, as text.
fn model_requests() -> String {
    std::fs::read_to_string(&model_server().1).unwrap_or_default()
}

/// Environment that keeps both CLIs offline: every stray request goes to a dead loopback port.
fn offline_env(home: &Path) -> String {
    format!(
        "HOME={} HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 ALL_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost",
        home.display()
    )
}

/// How long one agent session may run in the emulated VM. Measured there (2 vCPUs under TCG, host load
/// 7-13): a Claude Code session of three calls 61-190 s, a Codex one 62-150 s.
const SESSION_LIMIT_SECS: u64 = 540;

/// Runs the CLI `agent` in one session, the model calling Bash once per command in order; its stdout.
fn run_agent(daemon: &Daemon, agent: &str, project: &Path, commands: &[String]) -> String {
    let (port, _) = model_server();
    let home = project.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let prompt: String = commands.iter().map(|c| format!("RUN: {c}\n")).collect();
    let script = match agent {
        "claude" => format!(
            "cd {} && exec env {} ANTHROPIC_BASE_URL=http://127.0.0.1:{port} ANTHROPIC_API_KEY=test DISABLE_TELEMETRY=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 DISABLE_ERROR_REPORTING=1 {} -p '{prompt}' --output-format json --allowedTools Bash </dev/null",
            project.display(),
            offline_env(&home),
            claude_bin().display()
        ),
        _ => format!(
            "cd {} && exec env {} CODEX_HOME={} SCRIPTED_KEY=test {} exec --skip-git-repo-check --dangerously-bypass-hook-trust '{prompt}' </dev/null",
            project.display(),
            offline_env(&home),
            project.join("codex-home").display(),
            codex_bin().display()
        ),
    };
    // Bounded: Codex 0.171 never gives up on a model endpoint it cannot reach (it prints
    // "Reconnecting... waiting for network" every few seconds, whatever `request_max_retries` and
    // `stream_max_retries` say), so a hang fails here with its output instead of at the VM's timeout.
    let limit = SESSION_LIMIT_SECS.to_string();
    let out = daemon.session(agent, RunAs::Root, &["timeout", "-k", "10", &limit, "/bin/sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let stderr_tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(
        out.status.success(),
        "{agent} failed or did not end within {SESSION_LIMIT_SECS} s ({}):\nstdout: {stdout}\nstderr (end): {stderr_tail}",
        out.status
    );
    stdout
}

/// A project for `agent` with SafeClaw's hooks installed by `hooks install`.
fn project(daemon: &Daemon, agent: &str) -> PathBuf {
    let project = daemon.work().join(format!("project-{agent}"));
    std::fs::create_dir_all(&project).unwrap();
    let socket = daemon.tool_socket();
    let install = |cli: &str, extra: &[(&str, &Path)]| {
        let mut command = std::process::Command::new(agent_bin());
        command.args(["hooks", "install", "--agent", cli, "--socket"]).arg(&socket);
        for (key, value) in extra {
            command.env(key, value);
        }
        command.arg("--project").arg(&project);
        let out = command.output().unwrap();
        assert!(out.status.success(), "hooks install: {out:?}");
    };
    match agent {
        "claude" => install("claude-code", &[]),
        _ => {
            let codex_home = project.join("codex-home");
            std::fs::create_dir_all(&codex_home).unwrap();
            let (port, _) = model_server();
            std::fs::write(
                codex_home.join("config.toml"),
                format!(
                    "model = \"scripted\"\nmodel_provider = \"scripted\"\napproval_policy = \"never\"\nsandbox_mode = \"danger-full-access\"\ncheck_for_update_on_startup = false\n[features]\nplugins = false\n[analytics]\nenabled = false\n[model_providers.scripted]\nname = \"scripted\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nenv_key = \"SCRIPTED_KEY\"\nwire_api = \"responses\"\n"
                ),
            )
            .unwrap();
            // The user-level hooks file of this CODEX_HOME (`--project` would need project trust).
            let mut command = std::process::Command::new(agent_bin());
            command.args(["hooks", "install", "--agent", "codex", "--socket"]).arg(&socket);
            let out = command.env("CODEX_HOME", &codex_home).output().unwrap();
            assert!(out.status.success(), "hooks install: {out:?}");
        }
    }
    project
}

fn tool_entries<'a>(
    entries: &'a [serde_json::Value],
    action: &str,
    command_part: &str,
) -> Vec<&'a serde_json::Value> {
    entries
        .iter()
        .filter(|e| e["action"] == action)
        .filter(|e| e["requestDetails"]["input"].as_str().is_some_and(|i| i.contains(command_part)))
        .collect()
}

fn check_cli(agent: &str, cli: &str) {
    let daemon = Daemon::start(&format!("safeclaw-hooks-{agent}"), POLICY);
    let project = project(&daemon, agent);
    let files = daemon.files_dir();
    let note = files.join(format!("note-{agent}.txt"));
    std::fs::write(&note, "project note\n").unwrap();
    std::fs::create_dir_all("/root/.ssh").unwrap();
    std::fs::write("/root/.ssh/id_rsa", "not a real key\n").unwrap();
    let marker = files.join(format!("forbidden-{agent}"));

    // One session (the CLIs start slowly in the emulated VM): allowed, denied by the hook, denied
    // by the kernel.
    let commands = [
        format!("cat {}", note.display()),
        format!("echo forbidden-marker > {}", marker.display()),
        "cat /root/.ssh/id_rsa".to_owned(),
    ];
    run_agent(&daemon, agent, &project, &commands);
    assert!(!marker.exists(), "the denied command ran");

    // A hook outside any session, claiming the agent's session in its JSON.
    let forged = serde_json::json!({
        "session_id": "sess_forged", "hook_event_name": "PreToolUse", "tool_name": "Bash",
        "tool_input": {"command": "echo forged"}, "tool_use_id": "toolu_forged",
        "agent_id": agent, "cgroup": daemon.cgroup.display().to_string(),
    });
    let mut hook = std::process::Command::new(agent_bin())
        .args(["hook", cli, "pre-tool-use", "--socket"])
        .arg(daemon.tool_socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    hook.stdin.take().unwrap().write_all(forged.to_string().as_bytes()).unwrap();
    let refused = hook.wait_with_output().unwrap();
    let refused: serde_json::Value = serde_json::from_slice(&refused.stdout).expect("a JSON answer");
    assert_eq!(refused["hookSpecificOutput"]["permissionDecision"], "deny", "{refused}");

    let log = daemon.audit_log.clone();
    let head = daemon.work().join("state/audit.head");
    let (status, entries) = daemon.stop();
    assert!(status.success());

    // Allowed: the tool call, its shell command and the kernel's exec and open share the tool-use id.
    let calls = tool_entries(&entries, "tool.call", &note.display().to_string());
    assert_eq!(calls.len(), 1, "one tool.call for the allowed command: {calls:#?}");
    let call = calls[0];
    assert_eq!(call["effect"], "allow", "{call:#}");
    assert_eq!(call["requestDetails"]["agentCli"], cli);
    assert_eq!(call["requestDetails"]["semanticAction"], "shell.execute");
    assert!(call["requestDetails"]["command"].as_str().unwrap().contains("cat "), "{call:#}");
    assert_eq!(call["sessionId"].as_str().map(|s| s.starts_with("sess_")), Some(true));
    let id = call["requestDetails"]["toolUseId"].as_str().expect("a tool-use id").to_owned();
    let linked: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["requestDetails"]["toolUseId"] == id.as_str()).collect();
    assert!(
        linked.iter().any(|e| e["action"] == "process.exec"
            && e["requestDetails"]["path"].as_str().is_some_and(|p| p.ends_with("/cat"))),
        "the exec of cat carries {id}: {linked:#?}"
    );
    assert!(
        linked
            .iter()
            .any(|e| e["action"] == "file.read" && e["requestDetails"]["path"] == note.display().to_string()),
        "the open of the note carries {id}: {linked:#?}"
    );
    assert!(linked.iter().any(|e| e["action"] == "tool.result"), "the result carries {id}");

    // Denied: never ran; the model was told the rule and the entry's sequence number.
    let denied = tool_entries(&entries, "tool.call", "forbidden-marker");
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["effect"], "deny");
    assert_eq!(denied[0]["matchedRule"], "no-forbidden");
    let sequence = denied[0]["sequence"].as_u64().unwrap();
    let told = model_requests();
    assert!(
        told.contains("rule `no-forbidden`") && told.contains(&format!("Audit entry #{sequence}.")),
        "the model server never received the deny reason with rule and entry #{sequence}"
    );

    // Allowed by the hook, denied by the kernel: both entries, linked.
    let secret = tool_entries(&entries, "tool.call", "/root/.ssh/id_rsa");
    assert_eq!(secret.len(), 1);
    assert_eq!(secret[0]["effect"], "allow");
    let secret_id = secret[0]["requestDetails"]["toolUseId"].as_str().unwrap();
    let kernel = entries
        .iter()
        .find(|e| e["action"] == "file.read" && e["requestDetails"]["path"] == "/root/.ssh/id_rsa")
        .expect("the kernel's entry for the key");
    assert_eq!(kernel["effect"], "deny");
    assert_eq!(kernel["matchedRule"], "no-ssh-keys");
    assert_eq!(kernel["requestDetails"]["toolUseId"], secret_id);

    // Outside any session: refused and recorded, the forged claims kept as claims.
    let forged: Vec<_> =
        entries.iter().filter(|e| e["requestDetails"]["toolUseId"] == "toolu_forged").collect();
    assert_eq!(forged.len(), 1, "{forged:#?}");
    assert_eq!(forged[0]["effect"], "deny");
    assert_eq!(forged[0]["matchedRule"], "builtin:outside-session");
    assert!(forged[0].get("sessionId").is_none() && forged[0].get("agentId").is_none(), "{:#}", forged[0]);

    // `audit tail --tool-use ID` shows the call and what the kernel saw of it.
    let tail = std::process::Command::new(agent_bin())
        .args(["audit", "tail", "--json", "-n", "1000", "--tool-use", &id])
        .arg(&log)
        .output()
        .unwrap();
    let tail = String::from_utf8_lossy(&tail.stdout);
    assert!(tail.contains("tool.call") && tail.contains("process.exec"), "{tail}");
    assert!(!tail.contains("forbidden-marker"), "only the entries of {id}: {tail}");

    let verify = std::process::Command::new(agent_bin())
        .args(["audit", "verify"])
        .arg(&log)
        .arg("--head")
        .arg(&head)
        .output()
        .unwrap();
    assert!(verify.status.success(), "the chain verifies: {verify:?}");
    let all = read_entries(&log);
    assert!(all.len() >= entries.len());
}

#[test]
fn claude_code_tool_calls_are_decided_recorded_and_linked() {
    check_cli("claude", "claude-code");
}

#[test]
fn codex_tool_calls_are_decided_recorded_and_linked() {
    check_cli("codex", "codex");
}

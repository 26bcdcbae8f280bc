//! A real HTTP server on loopback (Python's http.server, `webhook_server.py`) that the test programs to
//! stall, drop connections, or answer 500, 429, 400 and 200; it records the batches it accepted.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::free_port;

/// The webhook receiver; `control` sets its next answers.
pub struct HookServer {
    pub port: u16,
    record: PathBuf,
    child: Option<Child>,
}

impl HookServer {
    pub fn start(dir: &Path) -> HookServer {
        let mut server = HookServer { port: free_port(), record: dir.join("received.jsonl"), child: None };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/destinations_support/webhook_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.record)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 for the webhook server: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert!(line.starts_with("listening"), "the webhook server did not start: {line:?}");
        self.child = Some(child);
    }

    pub fn control(&self, script: &[&str], default: &str) {
        let body = serde_json::json!({"script": script, "default": default}).to_string();
        ureq::post(&format!("http://127.0.0.1:{}/control", self.port))
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .unwrap();
    }

    pub fn kill9_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        self.spawn();
    }

    /// Batches answered 200, in arrival order.
    pub fn batches(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! moto's standalone S3 server (installed by xtask/setup.sh in its own venv), started on 127.0.0.1 for
//! one test, and boto3 from the same venv as an independent client that reads the bucket back.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub const BUCKET: &str = "evidence";

/// Python: `all_keys(bucket)`, every key of a bucket, following the listing's continuation tokens.
const ALL_KEYS: &str = "def all_keys(bucket):
    keys, token = [], None
    while True:
        kw = dict(Bucket=bucket)
        if token: kw['ContinuationToken'] = token
        r = s3.list_objects_v2(**kw)
        keys += [o['Key'] for o in r.get('Contents', [])]
        token = r.get('NextContinuationToken')
        if not token: return keys
";

pub fn venv() -> PathBuf {
    let cache = std::env::var_os("SAFECLAW_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
            .join("safeclaw")
    });
    cache.join("moto")
}

pub struct Moto {
    child: Child,
    pub port: u16,
    /// Every request, appended by moto's recorder before it answers: replayed into a restarted server,
    /// as a store's disk would survive its crash.
    recording: tempfile::TempDir,
}

impl Moto {
    /// Starts moto_server and creates the bucket with object lock enabled; None (outside CI) when
    /// moto is not installed; under CI=true that fails the test with the reason.
    pub fn start() -> Option<Self> {
        let server = venv().join("bin/moto_server");
        if !server.exists() {
            let reason = format!("{} is missing: run xtask/setup.sh", server.display());
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
            eprintln!("SKIPPED (not CI): {reason}");
            return None;
        }
        let recording = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn(port, &recording);
        let moto = Moto { child, port, recording };
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        moto.python(&format!(
            "s3.create_bucket(Bucket='{BUCKET}', ObjectLockEnabledForBucket=True)\nprint('ok')"
        ));
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `code` with `s3` a boto3 client of this server and `all_keys(bucket)` every key of a
    /// bucket (all pages of the listing); its standard output.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json, sys, datetime\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1')\n{ALL_KEYS}{code}\n",
            self.endpoint()
        );
        let out = Command::new(venv().join("bin/python")).arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "python failed: {}\n{script}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// SIGKILL, then a new server on the same port with every recorded request replayed.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = spawn(self.port, &self.recording);
        let url = format!("{}/moto-api/recorder/replay-recording", self.endpoint());
        self.python(&format!("import requests\nassert requests.post('{url}').ok"));
    }

    /// SIGSTOP then SIGCONT after `pause`: the server hangs mid-stream, then answers again.
    pub fn stall(&self, pause: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(pause);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }
}

/// moto_server on 127.0.0.1:`port`, recording into `recording`, once it answers.
fn spawn(port: u16, recording: &tempfile::TempDir) -> Child {
    let server = venv().join("bin/moto_server");
    let child = Command::new(&server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_ENABLE_RECORDING", "true")
        .env("MOTO_RECORDER_FILEPATH", recording.path().join("requests.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
    wait_for("moto_server to answer", Duration::from_secs(60), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

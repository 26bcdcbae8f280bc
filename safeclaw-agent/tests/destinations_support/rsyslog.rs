//! A real rsyslogd (Debian's package) on loopback, with UDP, TCP (octet counting) and TLS (gtls)
//! inputs, each writing what it receives (`%rawmsg%`) to its own file; a throwaway CA for the TLS input.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use super::{free_port, wait_for};

/// The running rsyslogd's pid (0: none), for the exit handler: the test binary keeps its server in a
/// static, which is never dropped, and the server must not outlive the binary.
static RUNNING: AtomicI32 = AtomicI32::new(0);

extern "C" fn kill_at_exit() {
    let pid = RUNNING.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: plain syscall on our own unreaped child, whose pid therefore cannot be reused.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// An rsyslogd on loopback ports (one per test binary), writing each input's messages to a file.
pub struct Rsyslog {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub udp: u16,
    pub tcp: u16,
    pub tls: u16,
}

impl Rsyslog {
    pub fn start() -> Rsyslog {
        let rsyslogd = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"].into_iter().find(|p| Path::new(p).exists());
        let Some(rsyslogd) = rsyslogd else {
            panic!("rsyslogd is not installed (xtask/setup.sh installs rsyslog and rsyslog-gnutls)")
        };
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let (udp, tcp, tls) = (free_port(), free_port(), free_port());
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="64k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="off"
       defaultNetstreamDriverCAFile="{d}/ca.pem" defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
# Messages go to the files as they are read: a receiver holding them in a memory queue loses that
# queue when killed, which no sender can detect (see docs/audit.md).
main_queue(queue.type="Direct")
module(load="imudp")
module(load="imtcp" maxSessions="50")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="udp") {{ action(type="omfile" file="{d}/udp.log" template="raw") }}
ruleset(name="tcp") {{ action(type="omfile" file="{d}/tcp.log" template="raw") }}
ruleset(name="tls") {{ action(type="omfile" file="{d}/tls.log" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls" streamDriver.name="gtls"
      streamDriver.mode="1" streamDriver.authMode="anon")
"#
        );
        std::fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
        let mut server = Rsyslog { dir, child: None, udp, tcp, tls };
        server.spawn(rsyslogd);
        server
    }

    fn spawn(&mut self, rsyslogd: &str) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("rsyslogd.out")).unwrap();
        let child = Command::new(rsyslogd)
            .args(["-n", "-f"])
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {rsyslogd}: {e}"));
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a handler that only makes a syscall.
        AT_EXIT.call_once(|| assert_eq!(unsafe { libc::atexit(kill_at_exit) }, 0));
        RUNNING.store(child.id() as i32, Ordering::SeqCst);
        self.child = Some(child);
        let (tcp, tls) = (self.tcp, self.tls);
        let out = d.join("rsyslogd.out");
        wait_for("rsyslogd to listen", Duration::from_secs(20), || {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "rsyslogd exited with {status}: {}",
                        std::fs::read_to_string(&out).unwrap_or_default()
                    );
                }
            }
            [tcp, tls].iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
    }

    pub fn kill9_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            RUNNING.store(0, Ordering::SeqCst);
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let _ = std::fs::remove_file(self.dir.path().join("rsyslogd.pid"));
        std::thread::sleep(Duration::from_secs(2));
        self.spawn("/usr/sbin/rsyslogd");
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            RUNNING.store(0, Ordering::SeqCst);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A throwaway CA and a server certificate for `localhost` signed by it.
fn make_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "SafeClaw test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

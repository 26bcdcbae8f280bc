//! The syslog transport: RFC 5424 messages over UDP (RFC 5426), TCP with octet-counting framing
//! (RFC 6587) or TLS (RFC 5425, rustls), carrying each entry as CEF or as its exact JSON line.
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

use super::cef;
use super::config::{SyslogConfig, SyslogFormat, SyslogProtocol, TlsFiles};
use super::engine::{SendError, Sent, Transport};
use crate::audit::reader::ChainEntry;

/// RFC 5424 facility 13, "log audit".
const FACILITY: u8 = 13;
const APP_NAME: &str = "safeclaw";
/// Entries per write.
const BATCH: usize = 500;
/// A written batch counts as delivered once the receiver's TCP stack has acknowledged all of it, and
/// the connection has stayed up this long after that (time for the receiver to process it).
const SETTLE: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A receiver that takes no bytes for this long is treated as down (the batch is sent again).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum SyslogSetupError {
    #[error("syslog destination {host}:{port}: protocol tls needs tls.caFile")]
    MissingCa { host: String, port: u16 },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("syslog TLS settings: {0}")]
    Tls(String),
}

enum Connection {
    Udp(UdpSocket),
    Tcp(Counted),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Counted>>),
}

impl Connection {
    fn stream(&mut self) -> Option<&mut Counted> {
        match self {
            Connection::Udp(_) => None,
            Connection::Tcp(counted) => Some(counted),
            Connection::Tls(tls) => Some(&mut tls.sock),
        }
    }
}

/// A TCP stream that counts the bytes written to it, to compare with what the peer acknowledged.
struct Counted {
    stream: TcpStream,
    written: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl Counted {
    /// Bytes written that the peer's TCP stack has acknowledged.
    fn acknowledged(&self) -> io::Result<u64> {
        let mut unacknowledged: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) on a TCP socket writes one int: the bytes not yet acknowledged.
        let result = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::TIOCOUTQ, &mut unacknowledged) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.written.saturating_sub(u64::try_from(unacknowledged).unwrap_or(0)))
    }
}

/// A batch written to the current connection and not yet confirmed.
struct Pending {
    /// Last sequence + 1.
    end: u64,
    /// Bytes written on the connection once the batch was.
    offset: u64,
    /// When the peer was first seen to have acknowledged all of it.
    acknowledged_at: Option<Instant>,
}

pub struct SyslogTransport {
    config: SyslogConfig,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    connection: Option<Connection>,
    pending: VecDeque<Pending>,
    hostname: String,
    procid: String,
    buffer: Vec<u8>,
}

impl SyslogTransport {
    pub fn new(config: SyslogConfig) -> Result<Self, SyslogSetupError> {
        let tls = match (config.protocol, &config.tls) {
            (SyslogProtocol::Tls, Some(files)) => Some(tls_config(files, &config.host.0)?),
            (SyslogProtocol::Tls, None) => {
                return Err(SyslogSetupError::MissingCa { host: config.host.0.clone(), port: config.port })
            }
            _ => None,
        };
        Ok(SyslogTransport {
            config,
            tls,
            connection: None,
            pending: VecDeque::new(),
            hostname: hostname(),
            procid: std::process::id().to_string(),
            buffer: Vec::with_capacity(1 << 20),
        })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.config.host.0, self.config.port)
    }

    fn connect(&mut self) -> Result<&mut Connection, SendError> {
        if self.connection.is_none() {
            let address = self.address();
            let failed = |e: io::Error| SendError::retry(format!("cannot connect to {address}: {e}"));
            let target = address
                .to_socket_addrs()
                .map_err(failed)?
                .next()
                .ok_or_else(|| SendError::retry(format!("{address} resolves to no address")))?;
            let connection = match self.config.protocol {
                SyslogProtocol::Udp => {
                    let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                    let socket = UdpSocket::bind(bind).map_err(failed)?;
                    socket.connect(target).map_err(failed)?;
                    Connection::Udp(socket)
                }
                SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                    let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT).map_err(failed)?;
                    stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(failed)?;
                    stream.set_read_timeout(Some(WRITE_TIMEOUT)).map_err(failed)?;
                    let _ = stream.set_nodelay(true);
                    let stream = Counted { stream, written: 0 };
                    match &self.tls {
                        Some((config, name)) => {
                            let client = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                                .map_err(|e| SendError::retry(format!("TLS with {address}: {e}")))?;
                            let mut tls = rustls::StreamOwned::new(client, stream);
                            // Handshake now, so that a certificate problem shows as such.
                            while tls.conn.is_handshaking() {
                                tls.conn.complete_io(&mut tls.sock).map_err(|e| {
                                    SendError::retry(format!("TLS handshake with {address}: {e}"))
                                })?;
                            }
                            Connection::Tls(Box::new(tls))
                        }
                        None => Connection::Tcp(stream),
                    }
                }
            };
            self.connection = Some(connection);
        }
        self.connection.as_mut().ok_or_else(|| SendError::retry("not connected"))
    }

    /// Appends the RFC 5424 message for `entry` to `out`.
    fn message(&self, entry: &ChainEntry, out: &mut Vec<u8>) {
        let value: Value = serde_json::from_slice(&entry.line).unwrap_or(Value::Null);
        let severity = match value["effect"].as_str() {
            Some("deny") => 4,
            Some("audit") => 5,
            _ if cef::severity(&value) >= 8 => 3,
            _ => 6,
        };
        let timestamp =
            value["timestamp"].as_str().filter(|t| t.is_ascii() && !t.contains(' ')).unwrap_or("-");
        let msgid = printable(value["action"].as_str().unwrap_or("-"), 32);
        let header = format!(
            "<{}>1 {timestamp} {} {APP_NAME} {} {msgid} - ",
            FACILITY * 8 + severity,
            self.hostname,
            self.procid
        );
        out.extend_from_slice(header.as_bytes());
        match self.config.format {
            SyslogFormat::Json => out.extend_from_slice(&entry.line),
            SyslogFormat::Cef => out.extend_from_slice(cef::format(&value, &self.hostname).as_bytes()),
        }
    }

    fn fail(&mut self, e: io::Error) -> SendError {
        self.connection = None;
        self.pending.clear();
        SendError::retry(format!("sending to {}: {e}", self.address()))
    }
}

impl Transport for SyslogTransport {
    fn target(&self) -> String {
        let protocol = match self.config.protocol {
            SyslogProtocol::Udp => "udp",
            SyslogProtocol::Tcp => "tcp",
            SyslogProtocol::Tls => "tls",
        };
        let format = match self.config.format {
            SyslogFormat::Json => "json",
            SyslogFormat::Cef => "cef",
        };
        format!("syslog {protocol} {format} {}", self.address())
    }

    fn batch_size(&self) -> usize {
        BATCH
    }

    fn send(&mut self, batch: &[ChainEntry]) -> Result<Sent, SendError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        let result = self.send_with(batch, &mut buffer);
        self.buffer = buffer;
        result
    }

    fn confirmed(&mut self) -> Result<Option<u64>, SendError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let acknowledged = match &mut self.connection {
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed")),
            Some(Connection::Udp(_)) => return Ok(None),
            Some(Connection::Tcp(counted)) => {
                peer_open(&counted.stream).and_then(|()| counted.acknowledged())
            }
            Some(Connection::Tls(tls)) => tls_peer_open(tls).and_then(|()| tls.sock.acknowledged()),
        };
        let acknowledged = acknowledged.map_err(|e| self.fail(e))?;
        let now = Instant::now();
        for pending in self.pending.iter_mut().filter(|p| p.acknowledged_at.is_none()) {
            if pending.offset <= acknowledged {
                pending.acknowledged_at = Some(now);
            }
        }
        let mut confirmed = None;
        while let Some(front) = self.pending.front() {
            if front.acknowledged_at.is_none_or(|at| at.elapsed() < SETTLE) {
                break;
            }
            confirmed = Some(front.end);
            self.pending.pop_front();
        }
        Ok(confirmed)
    }
}

impl SyslogTransport {
    fn send_with(&mut self, batch: &[ChainEntry], buffer: &mut Vec<u8>) -> Result<Sent, SendError> {
        let mut message = Vec::with_capacity(1024);
        let udp = self.config.protocol == SyslogProtocol::Udp;
        for entry in batch {
            message.clear();
            self.message(entry, &mut message);
            if udp {
                let connection = self.connect()?;
                if let Connection::Udp(socket) = connection {
                    if let Err(e) = socket.send(&message) {
                        return Err(self.fail(e));
                    }
                }
            } else {
                buffer.extend_from_slice(message.len().to_string().as_bytes());
                buffer.push(b' ');
                buffer.extend_from_slice(&message);
            }
        }
        if udp {
            return Ok(Sent::Fired);
        }
        let connection = self.connect()?;
        let written = match connection {
            Connection::Tcp(stream) => stream.write_all(buffer).and_then(|()| stream.flush()),
            Connection::Tls(tls) => tls.write_all(buffer).and_then(|()| tls.flush()),
            Connection::Udp(_) => Ok(()),
        };
        let offset = connection.stream().map_or(0, |s| s.written);
        written.map_err(|e| self.fail(e))?;
        let end = batch.last().map_or(0, |e| e.sequence + 1);
        self.pending.push_back(Pending { end, offset, acknowledged_at: None });
        Ok(Sent::Written)
    }
}

/// Whether the receiver has not closed the connection: a syslog receiver never sends, so readable
/// means closed (or reset).
fn peer_open(stream: &TcpStream) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let mut byte = [0u8; 1];
    let result = match stream.peek(&mut byte) {
        Ok(0) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the receiver closed the connection")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    };
    stream.set_nonblocking(false)?;
    result
}

/// The same over TLS: reads whatever records arrived (session tickets, close_notify) without blocking.
fn tls_peer_open(tls: &mut rustls::StreamOwned<rustls::ClientConnection, Counted>) -> io::Result<()> {
    tls.sock.stream.set_nonblocking(true)?;
    let result = loop {
        match tls.conn.read_tls(&mut tls.sock) {
            Ok(0) => {
                break Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the receiver closed the connection",
                ))
            }
            Ok(_) => match tls.conn.process_new_packets() {
                Ok(state) if state.peer_has_closed() => {
                    break Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the receiver closed TLS"))
                }
                Ok(_) => {
                    // Discard application data (a syslog receiver sends none).
                    let mut sink = [0u8; 512];
                    while matches!(tls.conn.reader().read(&mut sink), Ok(n) if n > 0) {}
                }
                Err(e) => break Err(io::Error::other(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    tls.sock.stream.set_nonblocking(false)?;
    result
}

fn tls_config(
    files: &TlsFiles,
    host: &str,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), SyslogSetupError> {
    let pem = |path: &std::path::Path, reason: String| SyslogSetupError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = &files.ca_file.0;
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| pem(ca, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(ca, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(ca, "no certificate in the file".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| pem(ca, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SyslogSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(&cert.0)
                .map_err(|e| pem(&cert.0, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem(&cert.0, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_file(&key.0).map_err(|e| pem(&key.0, e.to_string()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| SyslogSetupError::Tls(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(SyslogSetupError::Tls("tls.certFile and tls.keyFile go together".into())),
    };
    let name = files.server_name.as_ref().map_or(host, |n| n.0.as_str()).to_owned();
    let name = ServerName::try_from(name).map_err(|e| SyslogSetupError::Tls(e.to_string()))?;
    Ok((Arc::new(config), name))
}

/// This host's name as RFC 5424 allows it (printable ASCII, no spaces, at most 255), or `-`.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = printable(name.trim(), 255);
    if name.is_empty() {
        "-".into()
    } else {
        name
    }
}

/// `text` with every character outside printable ASCII (33 to 126) replaced by `_`, cut to `max`.
fn printable(text: &str, max: usize) -> String {
    text.chars().take(max).map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvString;

    #[test]
    fn messages_are_rfc5424_with_the_entry_or_its_cef() {
        let config = SyslogConfig {
            name: None,
            host: EnvString("127.0.0.1".into()),
            port: 514,
            format: SyslogFormat::Json,
            protocol: SyslogProtocol::Tcp,
            tls: None,
        };
        let mut transport = SyslogTransport::new(config).unwrap();
        let line = br#"{"action":"file.read","effect":"deny","sequence":3,"timestamp":"2026-02-13T10:45:23.102Z","hash":"x"}"#;
        let entry = ChainEntry { sequence: 3, hash: crate::audit::Digest([0; 32]), line: line.to_vec() };
        let mut out = Vec::new();
        transport.message(&entry, &mut out);
        let text = String::from_utf8(out).unwrap();
        let expected_prefix = format!("<108>1 2026-02-13T10:45:23.102Z {} safeclaw ", transport.hostname);
        assert!(text.starts_with(&expected_prefix), "{text}");
        assert!(text.ends_with(&format!(" file.read - {}", String::from_utf8_lossy(line))), "{text}");
        transport.config.format = SyslogFormat::Cef;
        let mut out = Vec::new();
        transport.message(&entry, &mut out);
        assert!(String::from_utf8(out).unwrap().contains(" file.read - CEF:0|Authensor|SafeClaw|"));
    }
}

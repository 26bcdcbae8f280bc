//! Attempts as users write them (for `policy explain` and the cases of `policy test`), turned into
//! the requests the kernel and the evaluator decide.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::compiled::Request;
use super::net::{mapped, Protocol};

/// The kind of attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum AttemptAction {
    #[serde(rename = "file.read")]
    #[value(name = "file.read")]
    FileRead,
    #[serde(rename = "file.write")]
    #[value(name = "file.write")]
    FileWrite,
    /// An open for reading and writing: decided by both tables.
    #[serde(rename = "file.read-write")]
    #[value(name = "file.read-write")]
    FileReadWrite,
    #[serde(rename = "process.exec")]
    #[value(name = "process.exec")]
    ProcessExec,
    /// With `path`, a Unix socket connect; with `address` and `port`, an IP connect.
    #[serde(rename = "network.connect")]
    #[value(name = "network.connect")]
    NetworkConnect,
    /// With `address` and `port` (the local ones), a TCP listen or UDP bind.
    #[serde(rename = "network.listen")]
    #[value(name = "network.listen")]
    NetworkListen,
    /// An agent tool call (with `tool` and `input`): decided by the daemon, not the kernel.
    #[serde(rename = "tool.call")]
    #[value(name = "tool.call")]
    ToolCall,
    #[serde(rename = "tool.result")]
    #[value(name = "tool.result")]
    ToolResult,
}

impl AttemptAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptAction::FileRead => "file.read",
            AttemptAction::FileWrite => "file.write",
            AttemptAction::FileReadWrite => "file.read-write",
            AttemptAction::ProcessExec => "process.exec",
            AttemptAction::NetworkConnect => "network.connect",
            AttemptAction::NetworkListen => "network.listen",
            AttemptAction::ToolCall => "tool.call",
            AttemptAction::ToolResult => "tool.result",
        }
    }

    /// The phase of a tool attempt; `None` for the attempts the kernel decides.
    pub fn tool_phase(self) -> Option<super::ToolPhase> {
        match self {
            AttemptAction::ToolCall => Some(super::ToolPhase::Call),
            AttemptAction::ToolResult => Some(super::ToolPhase::Result),
            _ => None,
        }
    }
}

/// An attempt with everything it needs owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub action: AttemptAction,
    pub path: Vec<u8>,
    /// `argv[1..]` of an exec, if known.
    pub args: Option<Vec<Vec<u8>>>,
    pub inet: Option<(u8, [u8; 16], u16)>,
}

impl Attempt {
    /// Builds an attempt; `~` at the start of `path` is `home`.
    pub fn new(
        action: AttemptAction,
        path: Option<&str>,
        address: Option<IpAddr>,
        port: Option<u16>,
        protocol: Option<Protocol>,
        args: Option<Vec<String>>,
        home: &Path,
    ) -> Result<Attempt, String> {
        use std::os::unix::ffi::OsStrExt;
        let expand = |p: &str| -> Vec<u8> {
            match p.strip_prefix('~').filter(|rest| rest.is_empty() || rest.starts_with('/')) {
                Some(rest) => [home.as_os_str().as_bytes(), rest.as_bytes()].concat(),
                None => p.as_bytes().to_vec(),
            }
        };
        if action.tool_phase().is_some() {
            return Err(format!("{} takes `tool` and `input`, not a path or address", action.as_str()));
        }
        if args.is_some() && action != AttemptAction::ProcessExec {
            return Err("`args` only go with process.exec".to_owned());
        }
        let inet = match (action, path, address, port) {
            (AttemptAction::NetworkConnect, None, None, None) if protocol == Some(Protocol::Raw) => {
                Some((safeclaw_common::RAW_SOCKET_PROTOCOL, [0; 16], 0))
            }
            (AttemptAction::NetworkConnect | AttemptAction::NetworkListen, None, Some(address), Some(port)) => {
                let protocol = match protocol.unwrap_or(Protocol::Tcp) {
                    Protocol::Tcp => libc::IPPROTO_TCP as u8,
                    Protocol::Udp => libc::IPPROTO_UDP as u8,
                    Protocol::Any => return Err("an attempt has one protocol: tcp or udp".to_owned()),
                    Protocol::Raw => return Err("a raw socket attempt takes no address or port".to_owned()),
                };
                Some((protocol, mapped(address), port))
            }
            (AttemptAction::NetworkConnect, Some(_), None, None) => None,
            (AttemptAction::NetworkListen, _, _, _) => {
                return Err("network.listen takes the local `address` and `port`, and no path".to_owned())
            }
            (AttemptAction::NetworkConnect, _, _, _) => {
                return Err(
                    "network.connect takes either `path` (a Unix socket), `address` and `port`, or `protocol: raw` alone".to_owned()
                )
            }
            (_, Some(_), None, None) => None,
            (_, _, _, _) => return Err(format!("{} takes a `path` and no address or port", action.as_str())),
        };
        Ok(Attempt {
            action,
            path: path.map(expand).unwrap_or_default(),
            args: args.map(|args| args.into_iter().map(String::into_bytes).collect()),
            inet,
        })
    }

    /// The request as the kernel presents it (arguments are not part of it).
    pub fn request(&self) -> Request<'_> {
        let path = self.path.as_slice();
        match (self.action, self.inet) {
            (AttemptAction::FileRead, _) => Request::FileOpen { path, read: true, write: false },
            (AttemptAction::FileWrite, _) => Request::FileOpen { path, read: false, write: true },
            (AttemptAction::FileReadWrite, _) => Request::FileOpen { path, read: true, write: true },
            (AttemptAction::ProcessExec, _) => Request::Exec { path },
            (AttemptAction::NetworkConnect, Some((protocol, addr, port))) => {
                Request::ConnectInet { protocol, addr, port }
            }
            (AttemptAction::NetworkConnect, None) => Request::ConnectUnix { path },
            (AttemptAction::NetworkListen, Some((protocol, addr, port))) => {
                Request::ListenInet { protocol, addr, port }
            }
            // `Attempt::new` gives a listen an address.
            (AttemptAction::NetworkListen, None) => Request::ConnectOther,
            // `Attempt::new` refuses tool actions: the kernel never decides them.
            (AttemptAction::ToolCall | AttemptAction::ToolResult, _) => Request::ConnectOther,
        }
    }

    /// The arguments as slices, if any.
    pub fn arg_slices(&self) -> Option<Vec<&[u8]>> {
        self.args.as_ref().map(|args| args.iter().map(Vec::as_slice).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_and_address_forms() {
        let home = Path::new("/home/u");
        let read = Attempt::new(AttemptAction::FileRead, Some("~/x"), None, None, None, None, home).unwrap();
        assert_eq!(read.request(), Request::FileOpen { path: b"/home/u/x", read: true, write: false });
        let connect = Attempt::new(
            AttemptAction::NetworkConnect,
            None,
            Some("10.0.0.1".parse().unwrap()),
            Some(443),
            None,
            None,
            home,
        )
        .unwrap();
        assert!(matches!(connect.request(), Request::ConnectInet { protocol: 6, port: 443, .. }));
        assert!(Attempt::new(AttemptAction::FileRead, None, None, Some(1), None, None, home).is_err());
        assert!(
            Attempt::new(AttemptAction::FileRead, Some("/x"), None, None, None, Some(vec![]), home).is_err()
        );
    }
}

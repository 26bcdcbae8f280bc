//! What a compiled policy depends on besides its text: the launching user's home and the resolved
//! host names; and the rules made concrete with them (home-expanded globs, resolved CIDRs), which
//! the compiler and the evaluator both start from.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::glob::Token;
use super::hosts::HostAddresses;
use super::model::{InetMatch, Paths};
use super::net::{Cidr, Direction, HostName};

/// Inputs of `compile_all` and `Evaluator::new` beyond the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileContext {
    /// What `~` stands for.
    pub home: PathBuf,
    pub hosts: HostAddresses,
}

impl CompileContext {
    pub fn new(home: impl Into<PathBuf>) -> CompileContext {
        CompileContext { home: home.into(), hosts: HostAddresses::default() }
    }

    pub fn with_hosts(mut self, hosts: HostAddresses) -> CompileContext {
        self.hosts = hosts;
        self
    }

    /// The home as `~` expands: absolute, resolved-looking, no trailing `/` (empty for `/`).
    pub(crate) fn home_bytes(&self) -> Result<Vec<u8>, String> {
        let bytes = self.home.as_os_str().as_bytes();
        let segments_ok =
            bytes.split(|b| *b == b'/').skip(1).all(|s| !s.is_empty() && s != b"." && s != b"..");
        if bytes.first() != Some(&b'/') || bytes.contains(&0) || (bytes != b"/" && !segments_ok) {
            return Err(format!(
                "home directory `{}` must be an absolute path without `.`, `..`, `//` or a trailing `/`",
                self.home.display()
            ));
        }
        Ok(if bytes == b"/" { Vec::new() } else { bytes.to_vec() })
    }

    /// Rules made concrete for this context.
    pub(crate) fn expander(&self) -> Result<Expander<'_>, String> {
        Ok(Expander { home: self.home_bytes()?, hosts: &self.hosts })
    }
}

/// The home of the user who launched the agent: `SUDO_USER`'s when run through sudo, else
/// `$HOME`, else `/root`.
pub fn launching_user_home() -> PathBuf {
    let sudo_home = std::env::var("SUDO_USER")
        .ok()
        .and_then(|user| nix::unistd::User::from_name(&user).ok().flatten())
        .map(|user| user.dir);
    sudo_home
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute()))
        .unwrap_or_else(|| Path::new("/root").to_path_buf())
}

/// Which paths a rule matches, home expanded.
pub(crate) enum Alternatives {
    Every,
    /// `(index of the glob in the rule, one brace-free alternative)`.
    Globs(Vec<(usize, Vec<Token>)>),
}

pub(crate) struct Expander<'a> {
    home: Vec<u8>,
    hosts: &'a HostAddresses,
}

impl Expander<'_> {
    pub fn paths(&self, paths: &Paths) -> Alternatives {
        match paths {
            Paths::Every => Alternatives::Every,
            Paths::Globs(globs) => Alternatives::Globs(
                globs
                    .iter()
                    .enumerate()
                    .flat_map(|(index, glob)| {
                        glob.expand_home(&self.home).into_iter().map(move |alt| (index, alt))
                    })
                    .collect(),
            ),
        }
    }

    /// Whether the daemon tried to resolve `host`.
    pub fn resolved(&self, host: &HostName) -> bool {
        self.hosts.contains(host)
    }

    /// The prefixes an IP rule covers; empty if it names only hosts that have no address yet.
    pub fn cidrs(&self, inet: &InetMatch) -> Vec<Cidr> {
        if inet.every_address() {
            return vec![Cidr { addr: [0; 16], prefix_len: 0 }];
        }
        let mut cidrs = inet.cidrs.clone();
        cidrs.extend(inet.hosts.iter().flat_map(|host| self.hosts.get(host)).map(Cidr::host));
        match inet.direction {
            Direction::Listen => super::net::widen_any_address(&mut cidrs),
            Direction::Connect | Direction::Both => super::net::widen_to_this_host(&mut cidrs),
        }
        cidrs.sort();
        cidrs.dedup();
        cidrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_must_look_resolved() {
        assert_eq!(CompileContext::new("/home/u").home_bytes(), Ok(b"/home/u".to_vec()));
        assert_eq!(CompileContext::new("/").home_bytes(), Ok(Vec::new()));
        for bad in ["home/u", "/home/u/", "/home//u", "/home/../u", ""] {
            assert!(CompileContext::new(bad).home_bytes().is_err(), "{bad}");
        }
    }
}

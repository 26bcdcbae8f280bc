//! Network matcher values of policy rules: CIDRs (as the kernel keys them), port ranges, protocols
//! and host names.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::Deserialize;

/// An IPv6 prefix; IPv4 is kept IPv4-mapped (`::ffff:a.b.c.d`, prefix + 96) as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: [u8; 16],
    pub prefix_len: u8,
}

impl Cidr {
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr { addr: mapped(addr), prefix_len: 128 }
    }

    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        super::compiled::prefix_contains(&self.addr, self.prefix_len, addr)
    }

    /// Whether every address of `other` is in `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix_len <= other.prefix_len && self.contains(&other.addr)
    }
}

/// Addresses that all reach this host, whatever listens: loopback (`127.0.0.0/8`, `::1`) and the
/// any-address (`0.0.0.0`, `::`), to which the kernel connects as loopback. A listener on `0.0.0.0`
/// or `::` answers every one of them, so a rule naming one of them names them all.
pub const THIS_HOST: [Cidr; 4] = [
    Cidr { addr: [0; 16], prefix_len: 128 },
    Cidr { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], prefix_len: 128 },
    Cidr { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0], prefix_len: 128 },
    Cidr { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 0], prefix_len: 104 },
];

/// Adds every `THIS_HOST` prefix to `cidrs` if any of them overlaps one of `cidrs`: a rule written
/// for `127.0.0.1` also decides `127.0.0.2`, `0.0.0.0`, `::1` and `::` (each as IPv4-mapped too).
pub fn widen_to_this_host(cidrs: &mut Vec<Cidr>) {
    let overlaps = |a: &Cidr, b: &Cidr| a.covers(b) || b.covers(a);
    if cidrs.iter().any(|c| THIS_HOST.iter().any(|h| overlaps(c, h))) {
        cidrs.extend(THIS_HOST);
    }
}

/// The any-address, as IPv6 and as IPv4-mapped: a listener on either (a dual-stack `::`) serves
/// every address of this host.
pub const ANY_ADDRESS: [Cidr; 2] = [
    Cidr { addr: [0; 16], prefix_len: 128 },
    Cidr { addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0], prefix_len: 128 },
];

/// Adds both `ANY_ADDRESS` forms to a listen rule's `cidrs` if one of them covers either: a rule
/// for `0.0.0.0` also decides a listener on `::`. Loopback is not widened for listening: a
/// listener on `127.0.0.1` serves only this host, one on the any-address serves every network.
pub fn widen_any_address(cidrs: &mut Vec<Cidr>) {
    if cidrs.iter().any(|c| ANY_ADDRESS.iter().any(|a| c.covers(a))) {
        cidrs.extend(ANY_ADDRESS);
    }
}

/// Whether a rule with these (expanded) CIDRs and ports covers every address on every port, the
/// only rules that decide raw and packet sockets.
pub fn decides_raw_sockets(cidrs: &[Cidr], ports: &[PortRange]) -> bool {
    cidrs.iter().any(|c| c.prefix_len == 0) && ports.iter().all(|p| *p == PortRange::ALL)
}

/// The 16-byte form the kernel uses for `addr`.
pub fn mapped(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `addr` with the bits past `prefix_len` cleared.
pub fn mask(addr: &[u8; 16], prefix_len: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    let bits = usize::from(prefix_len.min(128));
    let (whole, rest) = (bits / 8, bits % 8);
    out[..whole].copy_from_slice(&addr[..whole]);
    if rest > 0 {
        out[whole] = addr[whole] & (0xffu8 << (8 - rest));
    }
    out
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.prefix_len >= 96 => write!(f, "{v4}/{}", self.prefix_len - 96),
            _ => write!(f, "{v6}/{}", self.prefix_len),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("`{0}` is not an IP address or CIDR (e.g. `10.0.0.0/8`, `fd00::/8`, `169.254.169.254`)")]
    BadCidr(String),
    #[error("`{0}`: prefix length must be at most {1}")]
    PrefixTooLong(String, u8),
    #[error("`{0}` has bits set past its prefix length; did you mean `{1}`?")]
    HostBitsSet(String, String),
    #[error("`{0}` is not a port or port range (`443`, `8000-8999`, ports 0-65535)")]
    BadPort(String),
    #[error("port range `{0}` is reversed")]
    ReversedPorts(String),
    #[error("`{0}` is not a host name{1}")]
    BadHost(String, &'static str),
}

impl FromStr for Cidr {
    type Err = NetError;
    fn from_str(text: &str) -> Result<Cidr, NetError> {
        let bad = || NetError::BadCidr(text.to_owned());
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len_text {
            None => max,
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) && len.len() <= 3 => {
                len.parse().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if len > max {
            return Err(NetError::PrefixTooLong(text.to_owned(), max));
        }
        let prefix_len = if addr.is_ipv4() { len + 96 } else { len };
        let full = mapped(addr);
        let masked = mask(&full, prefix_len);
        if masked != full {
            let suggestion = Cidr { addr: masked, prefix_len };
            return Err(NetError::HostBitsSet(text.to_owned(), suggestion.to_string()));
        }
        Ok(Cidr { addr: masked, prefix_len })
    }
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: u16::MAX };

    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = NetError;
    fn from_str(text: &str) -> Result<PortRange, NetError> {
        let port = |s: &str| -> Result<u16, NetError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NetError::BadPort(text.to_owned()));
            }
            s.parse().map_err(|_| NetError::BadPort(text.to_owned()))
        };
        let (lo, hi) = match text.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => {
                let single = port(text)?;
                (single, single)
            }
        };
        if lo > hi {
            return Err(NetError::ReversedPorts(text.to_owned()));
        }
        Ok(PortRange { lo, hi })
    }
}

/// Which socket actions an IP rule decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `network.connect`: connects, and datagrams sent with an address.
    #[default]
    Connect,
    /// `network.listen`: listen() on TCP sockets, bind() of UDP sockets.
    Listen,
    /// A `*` rule: both.
    Both,
}

/// Socket protocols a rule applies to; `Any` covers the three the kernel distinguishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    /// Raw IP and packet sockets, at their creation.
    Raw,
    #[default]
    Any,
}

impl Protocol {
    /// The kernel's protocol values (`NetKeyData::protocol`) a rule of this protocol covers. A raw
    /// socket has no destination when it is created and can reach any, so only a rule for every
    /// address and port (`every_address_and_port`, see `decides_raw_sockets`) covers it.
    pub fn wire_values(self, every_address_and_port: bool, direction: Direction) -> &'static [u8] {
        const RAW: u8 = safeclaw_common::RAW_SOCKET_PROTOCOL;
        const TCP: u8 = libc::IPPROTO_TCP as u8;
        const UDP: u8 = libc::IPPROTO_UDP as u8;
        const LISTEN_TCP: u8 = safeclaw_common::LISTEN_PROTOCOL | TCP;
        const LISTEN_UDP: u8 = safeclaw_common::LISTEN_PROTOCOL | UDP;
        match direction {
            Direction::Connect => {}
            Direction::Listen => {
                return match self {
                    Protocol::Tcp => &[LISTEN_TCP],
                    Protocol::Udp => &[LISTEN_UDP],
                    Protocol::Raw => &[],
                    Protocol::Any => &[LISTEN_TCP, LISTEN_UDP],
                }
            }
            Direction::Both => {
                return match (self, every_address_and_port) {
                    (Protocol::Tcp, _) => &[TCP, LISTEN_TCP],
                    (Protocol::Udp, _) => &[UDP, LISTEN_UDP],
                    (Protocol::Raw, true) => &[RAW],
                    (Protocol::Raw, false) => &[],
                    (Protocol::Any, true) => &[0, TCP, UDP, RAW, LISTEN_TCP, LISTEN_UDP],
                    (Protocol::Any, false) => &[0, TCP, UDP, LISTEN_TCP, LISTEN_UDP],
                }
            }
        }
        match (self, every_address_and_port) {
            (Protocol::Tcp, _) => &[libc::IPPROTO_TCP as u8],
            (Protocol::Udp, _) => &[libc::IPPROTO_UDP as u8],
            (Protocol::Raw, true) => &[RAW],
            (Protocol::Raw, false) => &[],
            (Protocol::Any, true) => &[0, libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8, RAW],
            (Protocol::Any, false) => &[0, libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Raw => "raw",
            Protocol::Any => "any",
        }
    }
}

/// A DNS name, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HostName {
    type Err = NetError;
    fn from_str(text: &str) -> Result<HostName, NetError> {
        let bad = |why| NetError::BadHost(text.to_owned(), why);
        if text.contains('*') {
            return Err(bad(": wildcards cannot be resolved; name each host, or use a CIDR"));
        }
        if text.parse::<IpAddr>().is_ok() || text.contains('/') {
            return Err(bad(": addresses and CIDRs go under `cidrs`"));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad(" (letters, digits and `-` in dot-separated labels of at most 63 bytes)"));
        }
        Ok(HostName(name.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_cidrs_are_mapped() {
        let cidr: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(cidr.prefix_len, 104);
        assert!(cidr.contains(&mapped("10.1.2.3".parse().unwrap())));
        assert!(!cidr.contains(&mapped("11.0.0.1".parse().unwrap())));
        assert_eq!(cidr.to_string(), "10.0.0.0/8");
        let host: Cidr = "169.254.169.254".parse().unwrap();
        assert_eq!(host.prefix_len, 128);
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert_eq!(v6.to_string(), "fd00::/8");
    }

    #[test]
    fn a_rule_on_one_local_address_covers_every_alias_of_this_host() {
        let widened = |text: &str| {
            let mut cidrs = vec![text.parse::<Cidr>().unwrap()];
            widen_to_this_host(&mut cidrs);
            cidrs
        };
        for rule in ["127.0.0.1/32", "127.0.0.2", "::1", "0.0.0.0", "::", "127.0.0.0/8", "0.0.0.0/1"] {
            let cidrs = widened(rule);
            for alias in ["127.0.0.1", "127.0.0.2", "127.255.0.9", "0.0.0.0", "::", "::1", "::ffff:0.0.0.0"] {
                let addr = mapped(alias.parse().unwrap());
                assert!(cidrs.iter().any(|c| c.contains(&addr)), "{rule} does not cover {alias}");
            }
        }
        for rule in ["10.0.0.0/8", "169.254.169.254", "fd00::/8", "128.0.0.0/1"] {
            assert_eq!(widened(rule).len(), 1, "{rule} is not a local address");
        }
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(NetError::HostBitsSet("10.0.0.1/8".into(), "10.0.0.0/8".into()))
        );
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(NetError::PrefixTooLong("10.0.0.0/33".into(), 32)));
        assert!(matches!("10.0.0/8".parse::<Cidr>(), Err(NetError::BadCidr(_))));
        assert!(matches!("10.0.0.0/+8".parse::<Cidr>(), Err(NetError::BadCidr(_))));
    }

    #[test]
    fn ports_and_ranges() {
        assert_eq!("443".parse::<PortRange>(), Ok(PortRange { lo: 443, hi: 443 }));
        assert_eq!("8000-8999".parse::<PortRange>(), Ok(PortRange { lo: 8000, hi: 8999 }));
        assert!(matches!("70000".parse::<PortRange>(), Err(NetError::BadPort(_))));
        assert!(matches!("9-1".parse::<PortRange>(), Err(NetError::ReversedPorts(_))));
        assert!(matches!("-1".parse::<PortRange>(), Err(NetError::BadPort(_))));
    }

    #[test]
    fn host_names() {
        assert_eq!("API.Company.com.".parse::<HostName>().unwrap().as_str(), "api.company.com");
        assert!("*.company.com".parse::<HostName>().is_err());
        assert!("10.0.0.1".parse::<HostName>().is_err());
        assert!("bad_name.com".parse::<HostName>().is_err());
        assert!("-x.com".parse::<HostName>().is_err());
    }
}

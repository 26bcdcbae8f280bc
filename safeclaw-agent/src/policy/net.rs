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

/// Socket protocols a rule applies to; `Any` covers the three the kernel distinguishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    #[default]
    Any,
}

impl Protocol {
    /// The kernel's protocol values (`NetKeyData::protocol`) this covers.
    pub fn wire_values(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => &[libc::IPPROTO_TCP as u8],
            Protocol::Udp => &[libc::IPPROTO_UDP as u8],
            Protocol::Any => &[0, libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
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

//! Host names of network rules, turned into the addresses the kernel can match: what the daemon
//! resolved, refreshed on a timer, with addresses that drop out of DNS answers kept for a grace
//! period.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use super::net::HostName;

/// How often the daemon re-resolves the policy's host names.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How long an address stays in the tables after the last answer that contained it. Agents cache
/// DNS answers themselves, so an address that just rotated out may still be the one they use.
pub const STALE_GRACE: Duration = Duration::from_secs(3600);

/// The addresses each host name stands for when a policy is compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAddresses {
    by_host: BTreeMap<HostName, BTreeSet<IpAddr>>,
}

impl HostAddresses {
    pub fn insert(&mut self, host: HostName, addrs: impl IntoIterator<Item = IpAddr>) {
        self.by_host.entry(host).or_default().extend(addrs);
    }

    /// Whether `host` was resolved (even to no address).
    pub fn contains(&self, host: &HostName) -> bool {
        self.by_host.contains_key(host)
    }

    /// The addresses of `host`; none if it was never resolved.
    pub fn get(&self, host: &HostName) -> impl Iterator<Item = IpAddr> + '_ {
        self.by_host.get(host).into_iter().flatten().copied()
    }
}

/// What the daemon knows of each host: every address seen, with when it was last in an answer.
#[derive(Clone, Debug, Default)]
pub struct HostCache {
    /// Seconds on the caller's monotonic clock.
    last_seen: BTreeMap<HostName, BTreeMap<IpAddr, u64>>,
}

impl HostCache {
    /// Resolves `names` (the policy's, see `Policy::host_names`) at `now` seconds. A failed
    /// resolution keeps the addresses already known; hosts no longer in `names` are forgotten.
    /// Returns the failures, for the daemon to log.
    pub fn refresh<E>(
        &mut self,
        names: &[HostName],
        now: u64,
        mut resolve: impl FnMut(&HostName) -> Result<Vec<IpAddr>, E>,
    ) -> Vec<(HostName, E)> {
        self.last_seen.retain(|host, _| names.contains(host));
        let mut failures = Vec::new();
        for name in names {
            match resolve(name) {
                Ok(addrs) => {
                    let seen = self.last_seen.entry(name.clone()).or_default();
                    for addr in addrs {
                        seen.insert(addr, now);
                    }
                }
                Err(e) => failures.push((name.clone(), e)),
            }
        }
        failures
    }

    /// The addresses seen within `STALE_GRACE` before `now`.
    pub fn addresses(&self, now: u64) -> HostAddresses {
        let grace = STALE_GRACE.as_secs();
        let mut out = HostAddresses::default();
        for (host, seen) in &self.last_seen {
            out.insert(
                host.clone(),
                seen.iter().filter(|(_, &at)| now.saturating_sub(at) <= grace).map(|(addr, _)| *addr),
            );
        }
        out
    }
}

/// Resolves `host` with the system resolver (blocking).
pub fn resolve_system(host: &HostName) -> std::io::Result<Vec<IpAddr>> {
    let mut addrs: Vec<IpAddr> = (host.as_str(), 0u16).to_socket_addrs()?.map(|sa| sa.ip()).collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_addresses_expire_after_the_grace_period_and_failures_keep_the_old_ones() {
        let host: HostName = "api.example.com".parse().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let mut cache = HostCache::default();
        let names = [host.clone()];
        assert!(cache.refresh(&names, 0, |_| Ok::<_, ()>(vec![a])).is_empty());
        cache.refresh(&names, 100, |_| Ok::<_, ()>(vec![b]));
        let both: Vec<IpAddr> = cache.addresses(100).get(&host).collect();
        assert_eq!(both, vec![a, b]);
        let failures = cache.refresh(&names, 200, |_| Err("timeout"));
        assert_eq!(failures.len(), 1);
        assert_eq!(cache.addresses(200).get(&host).count(), 2);
        let later = STALE_GRACE.as_secs() + 50;
        assert_eq!(cache.addresses(later).get(&host).collect::<Vec<_>>(), vec![b]);
        cache.refresh(&[], later, |_| Ok::<_, ()>(vec![a]));
        assert_eq!(cache.addresses(later).get(&host).count(), 0);
    }
}

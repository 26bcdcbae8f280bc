//! IP rules as the kernel's network tables: one longest-prefix entry per (protocol, CIDR) any rule
//! names, plus `/0`, each holding the disjoint port intervals of the first rule that matches them.
//!
//! An address whose longest stored prefix is P lies in exactly the rule CIDRs that contain P (a
//! longer one containing the address would itself be stored and win), so the first-match order
//! of the rules containing P decides every address that lands on P.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use safeclaw_common::{PortInterval, MAX_NET_PREFIXES, MAX_PORT_INTERVALS, POLICY_SLOTS};

use super::compiled::{CompiledNet, NetPrefix};
use super::net::{mask, Cidr, PortRange};

/// The IP side of one rule, addresses resolved.
#[derive(Clone, Debug)]
pub struct InetRule {
    pub rule: u32,
    /// Empty: the rule matches no address (e.g. its host names are unresolved).
    pub cidrs: Vec<Cidr>,
    /// Empty: every port.
    pub ports: Vec<PortRange>,
    pub protocols: &'static [u8],
}

/// Prefixes one policy may use: the LPM trie is shared by both slots, and a reload fills one
/// slot while the other still holds the running policy.
pub const PREFIXES_PER_POLICY: usize = (MAX_NET_PREFIXES / POLICY_SLOTS) as usize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetLimitError {
    #[error(
        "the network rules need more than {PREFIXES_PER_POLICY} (protocol, CIDR) prefixes; the kernel's LPM trie holds MAX_NET_PREFIXES = {MAX_NET_PREFIXES} shared by {POLICY_SLOTS} policy slots"
    )]
    TooManyPrefixes,
    #[error(
        "the network rules need more than MAX_PORT_INTERVALS = {MAX_PORT_INTERVALS} port intervals (each CIDR holds the port ranges of every rule that contains it); merge port ranges or CIDRs"
    )]
    TooManyIntervals,
}

/// Which rules win somewhere, and which decide in place of the others.
#[derive(Clone, Debug, Default)]
pub struct NetAnalysis {
    pub decides: BTreeSet<u32>,
    /// For a rule, the rules whose intervals cover its ports on its own CIDRs.
    pub decided_instead_by: HashMap<u32, BTreeSet<u32>>,
}

/// The protocols the kernel keys network entries by.
const PROTOCOLS: [u8; 6] = [
    0,
    libc::IPPROTO_TCP as u8,
    libc::IPPROTO_UDP as u8,
    safeclaw_common::RAW_SOCKET_PROTOCOL,
    safeclaw_common::LISTEN_PROTOCOL | libc::IPPROTO_TCP as u8,
    safeclaw_common::LISTEN_PROTOCOL | libc::IPPROTO_UDP as u8,
];

pub fn compile(rules: &[InetRule]) -> Result<(CompiledNet, NetAnalysis), NetLimitError> {
    let mut prefixes = Vec::new();
    let mut analysis = NetAnalysis::default();
    let mut interval_count = 0usize;
    for protocol in PROTOCOLS {
        // Rules of this protocol by the (length, masked address) of each of their CIDRs.
        let mut by_cidr: HashMap<(u8, [u8; 16]), Vec<usize>> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.protocols.contains(&protocol) {
                for cidr in &rule.cidrs {
                    let entry = by_cidr.entry((cidr.prefix_len, cidr.addr)).or_default();
                    if entry.last() != Some(&index) {
                        entry.push(index);
                    }
                }
            }
        }
        let lengths: BTreeSet<u8> = by_cidr.keys().map(|(len, _)| *len).collect();
        let mut stored: BTreeSet<(u8, [u8; 16])> = by_cidr.keys().copied().collect();
        stored.insert((0, [0; 16]));
        if prefixes.len() + stored.len() > PREFIXES_PER_POLICY {
            return Err(NetLimitError::TooManyPrefixes);
        }
        for (prefix_len, addr) in stored {
            let containing: Vec<&[usize]> = lengths
                .iter()
                .take_while(|&&len| len <= prefix_len)
                .filter_map(|&len| by_cidr.get(&(len, mask(&addr, len))))
                .map(Vec::as_slice)
                .collect();
            let intervals = first_match_intervals(merge_ascending(&containing).map(|i| &rules[i]));
            interval_count += intervals.len();
            if interval_count > MAX_PORT_INTERVALS as usize {
                return Err(NetLimitError::TooManyIntervals);
            }
            let own = by_cidr.get(&(prefix_len, addr)).map_or(&[][..], Vec::as_slice);
            note_winners(&intervals, own, rules, &mut analysis);
            prefixes.push(NetPrefix { protocol, addr, prefix_len, intervals });
        }
    }
    Ok((CompiledNet { prefixes }, analysis))
}

/// Disjoint intervals, sorted, each given to the first rule (in `ordered`) whose ports cover it;
/// adjacent intervals of one rule merged.
fn first_match_intervals<'a>(ordered: impl Iterator<Item = &'a InetRule>) -> Vec<PortInterval> {
    const ALL_PORTS: u32 = 1 << 16;
    let mut assigned: BTreeMap<u16, (u16, u32)> = BTreeMap::new();
    let mut covered = 0u32;
    for rule in ordered {
        let all = [PortRange::ALL];
        let ranges = if rule.ports.is_empty() { &all[..] } else { &rule.ports[..] };
        for range in ranges {
            for (lo, hi) in gaps(&assigned, range.lo, range.hi) {
                assigned.insert(lo, (hi, rule.rule));
                covered += u32::from(hi - lo) + 1;
            }
        }
        if covered == ALL_PORTS {
            break;
        }
    }
    let mut intervals: Vec<PortInterval> = Vec::with_capacity(assigned.len());
    for (lo, (hi, rule)) in assigned {
        match intervals.last_mut() {
            Some(last) if last.rule == rule && u32::from(last.hi) + 1 == u32::from(lo) => last.hi = hi,
            _ => intervals.push(PortInterval { lo, hi, rule }),
        }
    }
    intervals
}

/// The parts of `lo..=hi` no interval in `assigned` covers.
fn gaps(assigned: &BTreeMap<u16, (u16, u32)>, lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut gaps = Vec::new();
    let mut cursor = u32::from(lo);
    let from = assigned.range(..=lo).next_back().map_or(lo, |(&start, _)| start);
    for (&start, &(end, _)) in assigned.range(from..=hi) {
        if u32::from(end) < cursor {
            continue;
        }
        if u32::from(start) > cursor {
            gaps.push((cursor as u16, start - 1));
        }
        cursor = u32::from(end) + 1;
        if cursor > u32::from(hi) {
            return gaps;
        }
    }
    if cursor <= u32::from(hi) {
        gaps.push((cursor as u16, hi));
    }
    gaps
}

/// The union of ascending lists, ascending (duplicates kept), lazily: the caller may stop early.
fn merge_ascending<'a>(lists: &'a [&'a [usize]]) -> impl Iterator<Item = usize> + 'a {
    let mut heap: BinaryHeap<Reverse<(usize, usize, usize)>> = lists
        .iter()
        .enumerate()
        .filter_map(|(list, items)| items.first().map(|&first| Reverse((first, list, 0))))
        .collect();
    std::iter::from_fn(move || {
        let Reverse((item, list, position)) = heap.pop()?;
        if let Some(&next) = lists[list].get(position + 1) {
            heap.push(Reverse((next, list, position + 1)));
        }
        Some(item)
    })
}

/// Records which rules won on this prefix and, for the rules whose own CIDR it is (`own`), which
/// rules took their ports.
fn note_winners(intervals: &[PortInterval], own: &[usize], rules: &[InetRule], analysis: &mut NetAnalysis) {
    for interval in intervals {
        analysis.decides.insert(interval.rule);
    }
    for &index in own {
        let rule = &rules[index];
        if analysis.decides.contains(&rule.rule) {
            continue;
        }
        let all = [PortRange::ALL];
        let ranges = if rule.ports.is_empty() { &all[..] } else { &rule.ports[..] };
        let instead: BTreeSet<u32> = intervals
            .iter()
            .filter(|i| ranges.iter().any(|r| i.lo <= r.hi && r.lo <= i.hi) && i.rule != rule.rule)
            .map(|i| i.rule)
            .collect();
        analysis.decided_instead_by.entry(rule.rule).or_default().extend(instead);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rule: u32, cidrs: &[&str], ports: &[(u16, u16)]) -> InetRule {
        InetRule {
            rule,
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ports: ports.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
            protocols: &PROTOCOLS,
        }
    }

    fn addr(text: &str) -> [u8; 16] {
        super::super::net::mapped(text.parse().unwrap())
    }

    #[test]
    fn first_match_per_port_on_the_longest_prefix() {
        let rules = [
            rule(0, &["169.254.169.254"], &[]),
            rule(1, &["10.0.0.0/8"], &[(443, 443)]),
            rule(2, &["0.0.0.0/0"], &[(400, 500)]),
        ];
        let (net, analysis) = compile(&rules).unwrap();
        assert_eq!(net.lookup(6, &addr("169.254.169.254"), 80), Ok(Some(0)));
        assert_eq!(net.lookup(6, &addr("10.1.1.1"), 443), Ok(Some(1)));
        assert_eq!(net.lookup(6, &addr("10.1.1.1"), 444), Ok(Some(2)));
        assert_eq!(net.lookup(6, &addr("10.1.1.1"), 80), Ok(None));
        assert_eq!(net.lookup(17, &addr("8.8.8.8"), 450), Ok(Some(2)));
        // IPv6 addresses are outside 0.0.0.0/0 (which is ::ffff:0:0/96).
        assert_eq!(net.lookup(6, &addr("2001:db8::1"), 450), Ok(None));
        assert_eq!(analysis.decides, BTreeSet::from([0, 1, 2]));
    }

    #[test]
    fn shadowed_rule_is_named() {
        let rules = [rule(0, &["10.0.0.0/8"], &[]), rule(1, &["10.1.0.0/16"], &[(22, 22)])];
        let (_, analysis) = compile(&rules).unwrap();
        assert!(!analysis.decides.contains(&1));
        assert_eq!(analysis.decided_instead_by[&1], BTreeSet::from([0]));
    }

    #[test]
    fn intervals_merge_and_fill_gaps() {
        let rules =
            [rule(0, &[], &[]), rule(5, &["::/0"], &[(10, 20), (30, 40)]), rule(6, &["::/0"], &[(0, 100)])];
        let intervals = first_match_intervals(rules[1..].iter());
        let spans: Vec<(u16, u16, u32)> = intervals.iter().map(|i| (i.lo, i.hi, i.rule)).collect();
        assert_eq!(spans, vec![(0, 9, 6), (10, 20, 5), (21, 29, 6), (30, 40, 5), (41, 100, 6)]);
    }

    #[test]
    fn too_many_prefixes_name_the_limit() {
        let cidrs: Vec<String> =
            (0..PREFIXES_PER_POLICY as u32).map(|i| std::net::Ipv4Addr::from(i).to_string()).collect();
        let refs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
        let err = compile(&[rule(0, &refs, &[])]).unwrap_err();
        assert_eq!(err, NetLimitError::TooManyPrefixes);
        assert!(err.to_string().contains("MAX_NET_PREFIXES"));
    }
}

//! One action class's globs as a single byte DFA over the whole path (the kernel table format of
//! `compiled::CompiledDfa`), and what building it tells about rules that can never decide.
//!
//! Subset construction over glob items: an item is a rule and the rest of one of its glob
//! alternatives, interned so that alternatives ending alike share items (`{privkey,key}*.pem`
//! tracks `*.pem` once). A DFA state is the set of live items; the state reached at the end of a
//! path accepts the lowest rule with an item at its end. Items of rules that can no longer be
//! the lowest (a lower rule already matches every continuation, as inside `~/.ssh/**`) are
//! dropped. The result is minimized for that lowest-rule accept, and byte classes that behave
//! alike are merged.

use std::collections::{BTreeSet, HashMap, HashSet};

use safeclaw_common::{MAX_DFA_STATES, MAX_DFA_TRANSITIONS, NO_RULE};

use super::compiled::CompiledDfa;
use super::fasthash::FastMap;
use super::glob::{ByteSet, Token};

/// How many states the construction may reach before minimization, as a multiple of what the
/// kernel tables can hold after it.
const CONSTRUCTION_SLACK: usize = 2;

/// One rule's paths in the class.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// `None`: every path.
    pub alternatives: Option<Vec<Vec<Token>>>,
    pub rule: u32,
    /// Matches for the analysis only, never in the kernel table (exec rules with argument patterns).
    pub transparent: bool,
}

/// What the construction found out about the rules of the class.
#[derive(Clone, Debug, Default)]
pub struct ClassAnalysis {
    /// Rules that decide at least one path.
    pub decides: HashSet<u32>,
    /// For rules that match some path they do not decide: the rules that decide it instead.
    pub decided_instead_by: HashMap<u32, BTreeSet<u32>>,
    /// Rules (of the given patterns) that match no path at all.
    pub unmatched: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DfaError {
    #[error(
        "the globs need a DFA of {grew_to} states or more, past the {limit} states of {classes} byte classes that fit the kernel tables (MAX_DFA_TRANSITIONS = {MAX_DFA_TRANSITIONS}, MAX_DFA_STATES = {MAX_DFA_STATES}); each glob that starts with `**` multiplies with every directory rule after it: use fewer of them"
    )]
    TooManyStates { limit: usize, classes: usize, grew_to: usize },
}

/// What an item matches next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Byte(u8),
    /// One byte of `sets[index]`.
    Set(u32),
    /// Any bytes but `/`, then `next`.
    Star,
    /// A `/` then `next` (the `AnyLoop` of a subtree), or nothing and `skip`.
    OptionalSlash {
        skip: u32,
    },
    /// Any bytes, then `next`.
    AnyLoop,
    /// The path may end here.
    End,
}

#[derive(Clone, Copy, Debug)]
struct Item {
    rule: u32,
    transparent: bool,
    kind: Kind,
    /// The item after this one matched (unused for `End`).
    next: u32,
}

/// All items of a class, suffixes shared.
struct Items {
    items: Vec<Item>,
    interned: FastMap<(u32, bool, Kind, u32), u32>,
    sets: Vec<ByteSet>,
    not_slash: u32,
    /// Per pattern, its first items.
    starts: Vec<u32>,
}

impl Items {
    fn new(patterns: &[Pattern]) -> Items {
        let mut not_slash = ByteSet::default();
        not_slash.insert_range(0, 255);
        not_slash.remove(b'/');
        let mut items = Items {
            items: Vec::new(),
            interned: FastMap::default(),
            sets: vec![not_slash],
            not_slash: 0,
            starts: Vec::new(),
        };
        for pattern in patterns {
            let (rule, transparent) = (pattern.rule, pattern.transparent);
            let end = items.intern(rule, transparent, Kind::End, u32::MAX);
            match &pattern.alternatives {
                None => {
                    let every = items.intern(rule, transparent, Kind::AnyLoop, end);
                    items.starts.push(every);
                }
                Some(alternatives) => {
                    for tokens in alternatives {
                        let first = items.sequence(rule, transparent, tokens, end);
                        items.starts.push(first);
                    }
                }
            }
        }
        items
    }

    fn intern(&mut self, rule: u32, transparent: bool, kind: Kind, next: u32) -> u32 {
        let key = (rule, transparent, kind, next);
        if let Some(&id) = self.interned.get(&key) {
            return id;
        }
        let id = self.items.len() as u32;
        self.items.push(Item { rule, transparent, kind, next });
        self.interned.insert(key, id);
        id
    }

    fn set(&mut self, set: ByteSet) -> u32 {
        match self.sets.iter().position(|s| *s == set) {
            Some(index) => index as u32,
            None => {
                self.sets.push(set);
                (self.sets.len() - 1) as u32
            }
        }
    }

    /// The items of `tokens` followed by `next`, built from the end; returns the first.
    fn sequence(&mut self, rule: u32, transparent: bool, tokens: &[Token], mut next: u32) -> u32 {
        for token in tokens.iter().rev() {
            next = match token {
                Token::Literal(bytes) => {
                    for &byte in bytes.iter().rev() {
                        next = self.intern(rule, transparent, Kind::Byte(byte), next);
                    }
                    next
                }
                Token::AnyByte => self.intern(rule, transparent, Kind::Set(self.not_slash), next),
                Token::Class(set) => {
                    let set = self.set(*set);
                    self.intern(rule, transparent, Kind::Set(set), next)
                }
                Token::Star => self.intern(rule, transparent, Kind::Star, next),
                Token::Subtree => {
                    let any = self.intern(rule, transparent, Kind::AnyLoop, next);
                    self.intern(rule, transparent, Kind::OptionalSlash { skip: next }, any)
                }
                // Never present after home expansion; a set of no byte matches nothing, the safe reading.
                Token::Home => {
                    let nothing = self.set(ByteSet::default());
                    self.intern(rule, transparent, Kind::Set(nothing), next)
                }
            };
        }
        next
    }

    /// Whether `item` matches whatever follows (a `/**` or "every path" at its end).
    fn universal(&self, id: u32) -> bool {
        let item = self.items[id as usize];
        item.kind == Kind::AnyLoop && self.items[item.next as usize].kind == Kind::End
    }

    /// Byte classes: bytes no item tells apart share a class. Returns the byte → class table and
    /// a representative byte per class.
    fn byte_classes(&self) -> ([u8; 256], Vec<u8>) {
        let mut boundary = [false; 257];
        boundary[0] = true;
        let mut mark = |lo: u8, hi: u8| {
            boundary[usize::from(lo)] = true;
            boundary[usize::from(hi) + 1] = true;
        };
        mark(b'/', b'/');
        for item in &self.items {
            match item.kind {
                Kind::Byte(b) => mark(b, b),
                Kind::Set(set) => {
                    self.sets[set as usize].ranges().into_iter().for_each(|(lo, hi)| mark(lo, hi))
                }
                _ => {}
            }
        }
        let mut classes = [0u8; 256];
        let mut representatives = Vec::new();
        for byte in 0..=255u8 {
            if boundary[usize::from(byte)] {
                representatives.push(byte);
            }
            classes[usize::from(byte)] = (representatives.len() - 1) as u8;
        }
        (classes, representatives)
    }
}

/// Table sizes one class DFA may reach.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub states: usize,
    pub transitions: usize,
}

impl Limits {
    pub const KERNEL: Limits =
        Limits { states: MAX_DFA_STATES as usize, transitions: MAX_DFA_TRANSITIONS as usize };
}

/// A class DFA of the patterns.
pub fn build(patterns: &[Pattern], limits: Limits) -> Result<(CompiledDfa, ClassAnalysis), DfaError> {
    if patterns.is_empty() {
        return Ok((CompiledDfa::empty(), ClassAnalysis::default()));
    }
    let items = Items::new(patterns);
    let (classes, representatives) = items.byte_classes();
    let k = representatives.len();
    let kernel_states = limits.states.min(limits.transitions / k);
    // Construction comes within a small factor of the minimal DFA, so a build that grows past
    // this is refused without finishing it.
    let budget = (kernel_states * CONSTRUCTION_SLACK).min(limits.states);
    let too_many = |grew_to| DfaError::TooManyStates { limit: kernel_states, classes: k, grew_to };
    let slash_class = usize::from(classes[usize::from(b'/')]);
    let set_classes: Vec<Vec<usize>> =
        items.sets.iter().map(|set| (0..k).filter(|&c| set.contains(representatives[c])).collect()).collect();
    let mut construction = Construction::new(&items);
    let start = construction.closure(items.starts.iter().copied());
    let mut ids: FastMap<Vec<u32>, u32> = FastMap::default();
    ids.insert(start.clone(), 0);
    let mut states: Vec<Vec<u32>> = vec![start];
    let mut transitions: Vec<u32> = Vec::new();
    // Per state: the items every byte but `/` keeps (`*`, `/**`), those every byte keeps (`/**`),
    // and, for the few classes some item names, what those add.
    let mut any_byte: Vec<u32> = Vec::new();
    let mut not_slash: Vec<u32> = Vec::new();
    let mut extra: Vec<Vec<u32>> = vec![Vec::new(); k];
    let mut touched: Vec<usize> = Vec::new();
    let mut seeds: Vec<u32> = Vec::new();
    let mut row_targets: Vec<u32> = vec![0; k];
    let mut row = 0;
    while row < states.len() {
        any_byte.clear();
        not_slash.clear();
        for class in touched.drain(..) {
            extra[class].clear();
        }
        let mut touch = |class: usize, id: u32, extra: &mut Vec<Vec<u32>>| {
            if extra[class].is_empty() {
                touched.push(class);
            }
            extra[class].push(id);
        };
        for &id in &states[row] {
            let item = items.items[id as usize];
            match item.kind {
                Kind::Byte(byte) => touch(usize::from(classes[usize::from(byte)]), item.next, &mut extra),
                Kind::Set(set) => {
                    set_classes[set as usize].iter().for_each(|&c| touch(c, item.next, &mut extra))
                }
                Kind::Star => not_slash.push(id),
                Kind::OptionalSlash { .. } => touch(slash_class, item.next, &mut extra),
                Kind::AnyLoop => any_byte.push(id),
                Kind::End => {}
            }
        }
        not_slash.extend_from_slice(&any_byte);
        // The successor of every class nothing names.
        let mut successor =
            |seeds: &mut Vec<u32>, construction: &mut Construction<'_>| -> Result<u32, DfaError> {
                seeds.sort_unstable();
                seeds.dedup();
                let set = construction.closure(seeds.iter().copied());
                match ids.get(set.as_slice()) {
                    Some(&id) => Ok(id),
                    None if states.len() >= budget => Err(too_many(states.len())),
                    None => {
                        let id = states.len() as u32;
                        ids.insert(set.clone(), id);
                        states.push(set);
                        Ok(id)
                    }
                }
            };
        seeds.clear();
        seeds.extend_from_slice(&not_slash);
        let common = successor(&mut seeds, &mut construction)?;
        row_targets.fill(common);
        let slash_untouched = extra[slash_class].is_empty();
        if slash_untouched {
            seeds.clear();
            seeds.extend_from_slice(&any_byte);
            row_targets[slash_class] = successor(&mut seeds, &mut construction)?;
        }
        for &class in &touched {
            seeds.clear();
            seeds.extend_from_slice(if class == slash_class { &any_byte } else { &not_slash });
            seeds.extend_from_slice(&extra[class]);
            row_targets[class] = successor(&mut seeds, &mut construction)?;
        }
        transitions.extend_from_slice(&row_targets);
        row += 1;
    }
    let (accept, analysis) = accepts(&items, &states, patterns, construction.pruned);
    let table = table(classes, k, &transitions, &accept);
    if table.state_count() as usize > kernel_states {
        return Err(too_many(table.state_count() as usize));
    }
    Ok((table, analysis))
}

/// Closures of item sets, with the items of rules that can no longer be the lowest dropped.
struct Construction<'a> {
    items: &'a Items,
    /// `seen[item] == generation`: already in the closure being built.
    seen: Vec<u32>,
    generation: u32,
    stack: Vec<u32>,
    /// For each dropped rule, the rules whose universal items dropped it.
    pruned: HashMap<u32, BTreeSet<u32>>,
}

impl<'a> Construction<'a> {
    fn new(items: &'a Items) -> Construction<'a> {
        Construction {
            items,
            seen: vec![0; items.items.len()],
            generation: 0,
            stack: Vec::new(),
            pruned: HashMap::new(),
        }
    }

    /// The sorted set of items reachable from `seeds` without reading a byte, pruned.
    fn closure(&mut self, seeds: impl Iterator<Item = u32>) -> Vec<u32> {
        self.generation += 1;
        let generation = self.generation;
        let mut out = Vec::new();
        self.stack.extend(seeds);
        while let Some(id) = self.stack.pop() {
            if self.seen[id as usize] == generation {
                continue;
            }
            self.seen[id as usize] = generation;
            out.push(id);
            let item = self.items.items[id as usize];
            match item.kind {
                Kind::Star | Kind::AnyLoop => self.stack.push(item.next),
                Kind::OptionalSlash { skip } => self.stack.push(skip),
                Kind::Byte(_) | Kind::Set(_) | Kind::End => {}
            }
        }
        let lowest_universal = out
            .iter()
            .filter(|&&id| !self.items.items[id as usize].transparent && self.items.universal(id))
            .map(|&id| self.items.items[id as usize].rule)
            .min();
        if let Some(universal) = lowest_universal {
            let items = &self.items.items;
            for &id in &out {
                let rule = items[id as usize].rule;
                if rule > universal {
                    self.pruned.entry(rule).or_default().insert(universal);
                }
            }
            out.retain(|&id| items[id as usize].rule <= universal);
        }
        out.sort_unstable();
        out
    }
}

/// The rule each state accepts at the end of a path, and which rules win where.
fn accepts(
    items: &Items,
    states: &[Vec<u32>],
    patterns: &[Pattern],
    pruned: HashMap<u32, BTreeSet<u32>>,
) -> (Vec<u32>, ClassAnalysis) {
    let mut analysis = ClassAnalysis { decided_instead_by: pruned, ..ClassAnalysis::default() };
    let mut matched: HashSet<u32> = HashSet::new();
    let mut accept = Vec::with_capacity(states.len());
    for state in states {
        let ends: Vec<Item> =
            state.iter().map(|&id| items.items[id as usize]).filter(|i| i.kind == Kind::End).collect();
        let winner = ends.iter().filter(|i| !i.transparent).map(|i| i.rule).min();
        accept.push(winner.unwrap_or(NO_RULE));
        for end in &ends {
            matched.insert(end.rule);
            match winner {
                Some(w) if w < end.rule => {
                    analysis.decided_instead_by.entry(end.rule).or_default().insert(w);
                }
                _ => {
                    analysis.decides.insert(end.rule);
                }
            }
        }
    }
    analysis.unmatched = patterns
        .iter()
        .map(|p| p.rule)
        .filter(|rule| !matched.contains(rule) && !analysis.decided_instead_by.contains_key(rule))
        .collect();
    (accept, analysis)
}

/// The kernel table: minimized for the lowest-rule accept, numbered breadth-first from the start,
/// byte classes with identical columns merged, and the state that cannot reach an accept as the
/// dead state.
fn table(byte_classes: [u8; 256], k: usize, transitions: &[u32], accept: &[u32]) -> CompiledDfa {
    let (block, blocks) = minimize(transitions, accept, k);
    let mut representative = vec![u32::MAX; blocks];
    for (state, &b) in block.iter().enumerate() {
        if representative[b as usize] == u32::MAX {
            representative[b as usize] = state as u32;
        }
    }
    let mut number = vec![u32::MAX; blocks];
    let mut order = vec![block[0]];
    number[block[0] as usize] = 0;
    let mut next = 0;
    while let Some(&b) = order.get(next) {
        next += 1;
        let state = representative[b as usize] as usize;
        for class in 0..k {
            let target = block[transitions[state * k + class] as usize];
            if number[target as usize] == u32::MAX {
                number[target as usize] = order.len() as u32;
                order.push(target);
            }
        }
    }
    let n = order.len();
    let rows: Vec<usize> = order.iter().map(|&b| representative[b as usize] as usize).collect();
    let column = |class: usize| -> Vec<u32> {
        rows.iter().map(|&state| number[block[transitions[state * k + class] as usize] as usize]).collect()
    };
    // Classes whose columns are equal become one.
    let mut merged: HashMap<Vec<u32>, u8> = HashMap::new();
    let mut class_map = vec![0u8; k];
    let mut columns: Vec<Vec<u32>> = Vec::new();
    for (class, slot) in class_map.iter_mut().enumerate() {
        let col = column(class);
        let next_id = merged.len() as u8;
        *slot = *merged.entry(col.clone()).or_insert_with(|| {
            columns.push(col);
            next_id
        });
    }
    let classes = byte_classes.map(|c| class_map[usize::from(c)]);
    let merged_k = columns.len();
    let mut table_transitions = vec![0u32; n * merged_k];
    for (class, col) in columns.iter().enumerate() {
        for (state, &target) in col.iter().enumerate() {
            table_transitions[state * merged_k + class] = target;
        }
    }
    let table_accept: Vec<u32> = rows.iter().map(|&state| accept[state]).collect();
    let live = co_reachable(&table_transitions, &table_accept, n, merged_k);
    if !live[0] {
        return CompiledDfa::empty();
    }
    // Minimization leaves at most one state that cannot reach an accept.
    let dead = live.iter().position(|&l| !l).map(|d| d as u32);
    CompiledDfa {
        classes,
        class_count: merged_k as u32,
        start: 0,
        dead,
        transitions: table_transitions,
        accept: table_accept,
    }
}

/// Hopcroft's partition refinement: states are equivalent when they accept the same rule and
/// their successors on every class are equivalent. Returns each state's block and the block count.
fn minimize(transitions: &[u32], accept: &[u32], k: usize) -> (Vec<u32>, usize) {
    let n = accept.len();
    // Predecessors by (class, target), in compressed rows.
    let mut offsets = vec![0u32; n * k + 1];
    for (edge, &target) in transitions.iter().enumerate() {
        offsets[(edge % k) * n + target as usize + 1] += 1;
    }
    for i in 0..n * k {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut sources = vec![0u32; transitions.len()];
    for (edge, &target) in transitions.iter().enumerate() {
        let slot = &mut fill[(edge % k) * n + target as usize];
        sources[*slot as usize] = (edge / k) as u32;
        *slot += 1;
    }
    let mut partition = Partition::new(accept);
    let mut pending: Vec<(u32, u32)> = Vec::new();
    let mut is_pending: Vec<bool> = Vec::new();
    for block in 0..partition.blocks() {
        for class in 0..k as u32 {
            pending.push((block as u32, class));
        }
    }
    is_pending.resize(partition.blocks() * k, true);
    let mut splitter: Vec<u32> = Vec::new();
    while let Some((block, class)) = pending.pop() {
        is_pending[block as usize * k + class as usize] = false;
        splitter.clear();
        splitter.extend_from_slice(partition.members(block));
        for &target in &splitter {
            let row = class as usize * n + target as usize;
            for &source in &sources[offsets[row] as usize..offsets[row + 1] as usize] {
                partition.mark(source);
            }
        }
        for (old, new) in partition.split_marked() {
            is_pending.resize(partition.blocks() * k, false);
            for class in 0..k {
                // Hopcroft: if the old block is still to be used as a splitter, both halves must
                // be; otherwise the smaller half is enough.
                let old_pending = is_pending[old as usize * k + class];
                let add = if old_pending || partition.size(new) <= partition.size(old) { new } else { old };
                let index = add as usize * k + class;
                if !is_pending[index] {
                    is_pending[index] = true;
                    pending.push((add, class as u32));
                }
            }
        }
    }
    let blocks = partition.blocks();
    (partition.block_of, blocks)
}

/// Blocks of states, each a contiguous run of `elements`; marked states sit at the front of
/// their block.
struct Partition {
    elements: Vec<u32>,
    position: Vec<u32>,
    block_of: Vec<u32>,
    first: Vec<u32>,
    end: Vec<u32>,
    /// `elements[first[b]..marked_end[b]]` are marked.
    marked_end: Vec<u32>,
    touched: Vec<u32>,
}

impl Partition {
    /// One block per accept value.
    fn new(accept: &[u32]) -> Partition {
        let mut ids: HashMap<u32, u32> = HashMap::new();
        let block_of: Vec<u32> = accept
            .iter()
            .map(|a| {
                let next = ids.len() as u32;
                *ids.entry(*a).or_insert(next)
            })
            .collect();
        let blocks = ids.len();
        let mut elements: Vec<u32> = (0..accept.len() as u32).collect();
        elements.sort_by_key(|&s| block_of[s as usize]);
        let mut position = vec![0u32; accept.len()];
        let (mut first, mut end) = (vec![0u32; blocks], vec![0u32; blocks]);
        for (at, &state) in elements.iter().enumerate() {
            position[state as usize] = at as u32;
            let b = block_of[state as usize] as usize;
            if at == 0 || block_of[elements[at - 1] as usize] as usize != b {
                first[b] = at as u32;
            }
            end[b] = at as u32 + 1;
        }
        Partition { elements, position, block_of, marked_end: first.clone(), first, end, touched: Vec::new() }
    }

    fn blocks(&self) -> usize {
        self.first.len()
    }

    fn size(&self, block: u32) -> u32 {
        self.end[block as usize] - self.first[block as usize]
    }

    fn members(&self, block: u32) -> &[u32] {
        &self.elements[self.first[block as usize] as usize..self.end[block as usize] as usize]
    }

    fn mark(&mut self, state: u32) {
        let block = self.block_of[state as usize] as usize;
        let at = self.position[state as usize];
        let boundary = self.marked_end[block];
        if at < boundary {
            return;
        }
        if boundary == self.first[block] {
            self.touched.push(block as u32);
        }
        let other = self.elements[boundary as usize];
        self.elements.swap(at as usize, boundary as usize);
        self.position[other as usize] = at;
        self.position[state as usize] = boundary;
        self.marked_end[block] = boundary + 1;
    }

    /// Splits every block with marked and unmarked states; returns (old block, new block) pairs,
    /// the new block holding the marked states. Clears all marks.
    fn split_marked(&mut self) -> Vec<(u32, u32)> {
        let mut splits = Vec::new();
        for block in std::mem::take(&mut self.touched) {
            let b = block as usize;
            let marked_end = self.marked_end[b];
            self.marked_end[b] = self.first[b];
            if marked_end == self.end[b] {
                continue;
            }
            let new = self.first.len() as u32;
            self.first.push(self.first[b]);
            self.end.push(marked_end);
            self.marked_end.push(self.first[b]);
            self.first[b] = marked_end;
            self.marked_end[b] = marked_end;
            for at in self.first[new as usize]..marked_end {
                self.block_of[self.elements[at as usize] as usize] = new;
            }
            splits.push((block, new));
        }
        splits
    }
}

/// States from which an accepting state is reachable.
fn co_reachable(transitions: &[u32], accept: &[u32], n: usize, k: usize) -> Vec<bool> {
    // Reverse edges in compressed rows.
    let mut in_degree = vec![0u32; n + 1];
    for &target in transitions {
        in_degree[target as usize + 1] += 1;
    }
    for i in 0..n {
        in_degree[i + 1] += in_degree[i];
    }
    let offsets = in_degree.clone();
    let mut fill = offsets.clone();
    let mut sources = vec![0u32; transitions.len()];
    for (edge, &target) in transitions.iter().enumerate() {
        let slot = &mut fill[target as usize];
        sources[*slot as usize] = (edge / k) as u32;
        *slot += 1;
    }
    let mut live: Vec<bool> = accept.iter().map(|&a| a != NO_RULE).collect();
    let mut queue: Vec<usize> = (0..n).filter(|&s| live[s]).collect();
    while let Some(state) = queue.pop() {
        for &source in &sources[offsets[state] as usize..offsets[state + 1] as usize] {
            if !live[source as usize] {
                live[source as usize] = true;
                queue.push(source as usize);
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::super::glob::{Glob, Syntax};
    use super::*;

    fn patterns(globs: &[&str]) -> Vec<Pattern> {
        globs
            .iter()
            .enumerate()
            .map(|(rule, glob)| {
                let glob = Glob::parse(glob, Syntax::Path).unwrap();
                Pattern {
                    alternatives: Some(glob.expand_home(b"/home/u")),
                    rule: rule as u32,
                    transparent: false,
                }
            })
            .collect()
    }

    #[test]
    fn lowest_matching_rule_wins_at_the_end_of_the_path() {
        let (dfa, _) = build_kernel(&patterns(&["**/.env", "~/projects/**", "/**"])).unwrap();
        assert_eq!(dfa.lookup(b"/home/u/projects/a/.env"), Ok(Some(0)));
        assert_eq!(dfa.lookup(b"/home/u/projects/a/main.rs"), Ok(Some(1)));
        assert_eq!(dfa.lookup(b"/etc/passwd"), Ok(Some(2)));
        assert_eq!(dfa.lookup(b"pipe:[12]"), Ok(None));
    }

    #[test]
    fn paths_that_cannot_match_stop_in_the_dead_state() {
        let (dfa, _) = build_kernel(&patterns(&["/usr/**"])).unwrap();
        assert!(dfa.dead.is_some());
        assert_eq!(dfa.lookup(b"/etc/passwd"), Ok(None));
        assert_eq!(dfa.lookup(b"/usr"), Ok(Some(0)));
        assert_eq!(dfa.lookup(b"/usrx"), Ok(None));
    }

    #[test]
    fn analysis_names_the_rules_that_decide_instead() {
        let (_, analysis) = build_kernel(&patterns(&["/a/**", "/a/b", "/c"])).unwrap();
        assert!(analysis.decides.contains(&0) && analysis.decides.contains(&2));
        assert!(!analysis.decides.contains(&1));
        assert_eq!(analysis.decided_instead_by[&1], BTreeSet::from([0]));
        assert!(analysis.unmatched.is_empty());
    }

    #[test]
    fn shared_suffixes_keep_every_alternative() {
        let (dfa, _) = build_kernel(&patterns(&["**/{privkey,key}*.pem", "/a/{b,bc,b/d}"])).unwrap();
        for (path, rule) in [
            ("/x/privkey1.pem", Some(0)),
            ("/key.pem", Some(0)),
            ("/a/bc", Some(1)),
            ("/a/b/d", Some(1)),
            ("/a/", None),
        ] {
            assert_eq!(dfa.lookup(path.as_bytes()), Ok(rule), "{path}");
        }
        assert_eq!(dfa.lookup(b"/x/private.pem"), Ok(None));
        assert_eq!(dfa.lookup(b"/a/b/"), Ok(None));
    }

    #[test]
    fn every_path_and_transparent_patterns() {
        let every = Pattern { alternatives: None, rule: 1, transparent: false };
        let args = Pattern {
            alternatives: patterns(&["/bin/git"]).remove(0).alternatives,
            rule: 0,
            transparent: true,
        };
        let (dfa, analysis) = build_kernel(&[args, every]).unwrap();
        assert_eq!(dfa.lookup(b"/bin/git"), Ok(Some(1)));
        assert_eq!(dfa.lookup(b"pipe:[1]"), Ok(Some(1)));
        assert_eq!(dfa.lookup(b""), Ok(Some(1)));
        assert!(analysis.decides.contains(&0), "the argument rule may flag /bin/git");
    }

    fn build_kernel(patterns: &[Pattern]) -> Result<(CompiledDfa, ClassAnalysis), DfaError> {
        build(patterns, Limits::KERNEL)
    }

    #[test]
    fn a_dfa_past_the_limits_is_refused_naming_them() {
        // "the 10th byte from the end is `a`" needs 2^10 states.
        let blowup = patterns(&["**/*a?????????"]);
        let small = Limits { states: 4096, transitions: 1000 };
        let Err(error) = build(&blowup, small) else { panic!("built past the limit") };
        assert!(matches!(error, DfaError::TooManyStates { limit: 200, classes: 5, .. }), "{error:?}");
        assert!(error.to_string().contains("MAX_DFA_TRANSITIONS"), "{error}");
        assert!(build(&blowup, Limits { states: 4096, transitions: 1 << 20 }).is_ok());
    }

    #[test]
    fn no_patterns_give_the_empty_table() {
        assert_eq!(build_kernel(&[]).unwrap().0, CompiledDfa::empty());
    }
}

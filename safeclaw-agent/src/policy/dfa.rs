//! One action class's globs as a single byte DFA over the whole path (the kernel table format of
//! `compiled::CompiledDfa`), and what the DFA tells about rules that can never decide.
//!
//! Every glob alternative is one pattern of a multi-pattern DFA built by regex-automata with
//! `MatchKind::All`, so the state reached at the end of a path knows every pattern that matches
//! it; the table keeps only the lowest rule id among them.

use std::collections::{BTreeSet, HashMap, HashSet};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::{primitives::StateID, start};
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, Hir, Look, Repetition};
use safeclaw_common::{MAX_DFA_STATES, MAX_DFA_TRANSITIONS, NO_RULE};

use super::compiled::CompiledDfa;
use super::glob::{ByteSet, Token};

/// Heap regex-automata may use for the NFA of one class.
const NFA_SIZE_LIMIT: usize = 256 << 20;
/// Heap regex-automata may use while determinizing one class.
const DETERMINIZE_SIZE_LIMIT: usize = 512 << 20;

/// One pattern of the class: a glob alternative (or "every path") of a rule.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub hir: Hir,
    pub rule: u32,
    /// Matches for the analysis only, never in the kernel table (exec rules with argument patterns).
    pub transparent: bool,
}

/// What the walk over every DFA state found out about the rules of the class.
#[derive(Clone, Debug, Default)]
pub struct ClassAnalysis {
    /// Rules that decide at least one path.
    pub decides: HashSet<u32>,
    /// For rules that match some path: the rules that decide those paths instead of them.
    pub decided_instead_by: HashMap<u32, BTreeSet<u32>>,
    /// Indices (into the pattern list) of patterns no path matches.
    pub unmatched_patterns: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DfaError {
    #[error(
        "the globs need a DFA of more than {limit} states (with {classes} byte classes), past the kernel tables' MAX_DFA_TRANSITIONS = {MAX_DFA_TRANSITIONS} / MAX_DFA_STATES = {MAX_DFA_STATES}; globs starting with `**` multiply with every directory rule: use fewer of them, or merge rules"
    )]
    TooManyStates { limit: usize, classes: usize },
    #[error("cannot build the DFA: {0}")]
    Build(String),
}

/// A path DFA of the patterns (`Pattern::rule` ascending is not required).
pub fn build(patterns: &[Pattern]) -> Result<(CompiledDfa, ClassAnalysis), DfaError> {
    if patterns.is_empty() {
        return Ok((CompiledDfa::empty(), ClassAnalysis::default()));
    }
    let hirs: Vec<&Hir> = patterns.iter().map(|p| &p.hir).collect();
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .utf8(false)
                .shrink(false)
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(NFA_SIZE_LIMIT)),
        )
        .build_many_from_hir(&hirs)
        .map_err(|e| DfaError::Build(e.to_string()))?;
    let alphabet_len = nfa.byte_classes().alphabet_len();
    let class_count = alphabet_len.saturating_sub(1).max(1);
    let max_states = (MAX_DFA_STATES as usize).min(MAX_DFA_TRANSITIONS as usize / class_count);
    let too_many = DfaError::TooManyStates { limit: max_states, classes: class_count };
    // Dense DFA rows are a power of two wide; the slack covers regex-automata's own special
    // states and its storage of match sets.
    let dfa_size_limit = (max_states + 64) * alphabet_len.next_power_of_two() * 4 * 2;
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(StartKind::Anchored)
                .starts_for_each_pattern(false)
                .byte_classes(true)
                .unicode_word_boundary(false)
                .accelerate(false)
                .minimize(false)
                .specialize_start_states(false)
                .dfa_size_limit(Some(dfa_size_limit))
                .determinize_size_limit(Some(DETERMINIZE_SIZE_LIMIT)),
        )
        .build_from_nfa(&nfa)
        .map_err(|e| if e.to_string().contains("size limit") { too_many.clone() } else { DfaError::Build(e.to_string()) })?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .map_err(|e| DfaError::Build(e.to_string()))?;
    let walk = Walk::new(&dfa, start, class_count, max_states).ok_or(too_many)?;
    let (accept, analysis) = accepts(&dfa, &walk.states, patterns);
    Ok((walk.into_table(accept), analysis))
}

/// Every state reachable from the start, numbered in discovery order.
struct Walk {
    classes: [u8; 256],
    class_count: usize,
    states: Vec<StateID>,
    /// `transitions[state * class_count + class]`.
    transitions: Vec<u32>,
}

impl Walk {
    /// `None` if more than `max_states` states are reachable.
    fn new(dfa: &dense::DFA<Vec<u32>>, start: StateID, class_count: usize, max_states: usize) -> Option<Walk> {
        let byte_classes = dfa.byte_classes();
        let mut classes = [0u8; 256];
        let mut representatives = vec![None; class_count];
        for byte in 0..=255u8 {
            let class = byte_classes.get(byte);
            classes[usize::from(byte)] = class;
            representatives.get_mut(usize::from(class))?.get_or_insert(byte);
        }
        let representatives: Vec<u8> = representatives.into_iter().map(|r| r.unwrap_or(0)).collect();
        let mut ids: HashMap<StateID, u32> = HashMap::from([(start, 0)]);
        let mut states = vec![start];
        let mut transitions = Vec::new();
        let mut next_row = 0;
        while let Some(&state) = states.get(next_row) {
            next_row += 1;
            for &byte in &representatives {
                let next = dfa.next_state(state, byte);
                let id = match ids.get(&next) {
                    Some(&id) => id,
                    None => {
                        if states.len() >= max_states {
                            return None;
                        }
                        let id = states.len() as u32;
                        ids.insert(next, id);
                        states.push(next);
                        id
                    }
                };
                transitions.push(id);
            }
        }
        Some(Walk { classes, class_count, states, transitions })
    }

    /// The kernel table: minimized for the lowest-rule accept, numbered from the start in
    /// breadth-first order, with the states that cannot reach an accepting state as the dead state.
    fn into_table(self, accept: Vec<u32>) -> CompiledDfa {
        let k = self.class_count;
        let (block, blocks) = minimize(&self.transitions, &accept, k);
        // One representative per block, renumbered breadth-first from the start's block.
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
                let target = block[self.transitions[state * k + class] as usize];
                if number[target as usize] == u32::MAX {
                    number[target as usize] = order.len() as u32;
                    order.push(target);
                }
            }
        }
        let n = order.len();
        let mut transitions = Vec::with_capacity(n * k);
        let mut table_accept = Vec::with_capacity(n);
        for &b in &order {
            let state = representative[b as usize] as usize;
            table_accept.push(accept[state]);
            transitions.extend((0..k).map(|class| number[block[self.transitions[state * k + class] as usize] as usize]));
        }
        let live = co_reachable(&transitions, &table_accept, n, k);
        if !live[0] {
            return CompiledDfa::empty();
        }
        // Minimization leaves at most one state that cannot reach an accept.
        let dead = live.iter().position(|&l| !l).map(|d| d as u32);
        CompiledDfa { classes: self.classes, class_count: k as u32, start: 0, dead, transitions, accept: table_accept }
    }
}

/// Moore partition refinement: states are equivalent when they accept the same rule and their
/// successors on every class are equivalent. Returns each state's block and the block count.
fn minimize(transitions: &[u32], accept: &[u32], k: usize) -> (Vec<u32>, usize) {
    let n = accept.len();
    let mut ids: HashMap<u32, u32> = HashMap::new();
    let mut block: Vec<u32> = accept
        .iter()
        .map(|a| {
            let next = ids.len() as u32;
            *ids.entry(*a).or_insert(next)
        })
        .collect();
    let mut count = ids.len();
    let mut signature = vec![0u32; n * (k + 1)];
    loop {
        for state in 0..n {
            let row = &mut signature[state * (k + 1)..(state + 1) * (k + 1)];
            row[0] = block[state];
            for class in 0..k {
                row[class + 1] = block[transitions[state * k + class] as usize];
            }
        }
        let mut refined: HashMap<&[u32], u32> = HashMap::with_capacity(count * 2);
        let next_block: Vec<u32> = signature
            .chunks_exact(k + 1)
            .map(|row| {
                let next = refined.len() as u32;
                *refined.entry(row).or_insert(next)
            })
            .collect();
        let refined_count = refined.len();
        block = next_block;
        if refined_count == count {
            return (block, count);
        }
        count = refined_count;
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

/// The rule each state accepts at the end of a path, and the analysis of which rules win where.
fn accepts(dfa: &dense::DFA<Vec<u32>>, states: &[StateID], patterns: &[Pattern]) -> (Vec<u32>, ClassAnalysis) {
    let mut analysis = ClassAnalysis::default();
    let mut pattern_matched = vec![false; patterns.len()];
    let mut accept = Vec::with_capacity(states.len());
    let mut matching: Vec<usize> = Vec::new();
    for &state in states {
        let end = dfa.next_eoi_state(state);
        matching.clear();
        if dfa.is_match_state(end) {
            matching.extend((0..dfa.match_len(end)).map(|i| dfa.match_pattern(end, i).as_usize()));
        }
        let winner = matching.iter().filter(|&&p| !patterns[p].transparent).map(|&p| patterns[p].rule).min();
        accept.push(winner.unwrap_or(NO_RULE));
        for &p in &matching {
            pattern_matched[p] = true;
            let rule = patterns[p].rule;
            match winner {
                Some(w) if w < rule => {
                    analysis.decided_instead_by.entry(rule).or_default().insert(w);
                }
                _ => {
                    analysis.decides.insert(rule);
                }
            }
        }
    }
    analysis.unmatched_patterns = (0..patterns.len()).filter(|&p| !pattern_matched[p]).collect();
    (accept, analysis)
}

/// The anchored HIR of one home-expanded path-syntax alternative.
pub fn alternative_hir(tokens: &[Token]) -> Hir {
    let mut parts: Vec<Hir> = tokens
        .iter()
        .map(|token| match token {
            Token::Literal(bytes) => Hir::literal(bytes.clone()),
            Token::AnyByte => not_slash(),
            Token::Class(set) => byte_class(set),
            Token::Star => zero_or_more(not_slash()),
            Token::Subtree => Hir::repetition(Repetition {
                min: 0,
                max: Some(1),
                greedy: true,
                sub: Box::new(Hir::concat(vec![Hir::literal(*b"/"), zero_or_more(any_byte())])),
            }),
            // Never present after home expansion; matching nothing is the safe reading.
            Token::Home => Hir::fail(),
        })
        .collect();
    parts.push(Hir::look(Look::End));
    Hir::concat(parts)
}

/// Matches every path.
pub fn every_path_hir() -> Hir {
    Hir::concat(vec![zero_or_more(any_byte()), Hir::look(Look::End)])
}

fn any_byte() -> Hir {
    Hir::class(Class::Bytes(ClassBytes::new([ClassBytesRange::new(0, 255)])))
}

fn not_slash() -> Hir {
    Hir::class(Class::Bytes(ClassBytes::new([
        ClassBytesRange::new(0, b'/' - 1),
        ClassBytesRange::new(b'/' + 1, 255),
    ])))
}

fn byte_class(set: &ByteSet) -> Hir {
    Hir::class(Class::Bytes(ClassBytes::new(set.ranges().into_iter().map(|(lo, hi)| ClassBytesRange::new(lo, hi)))))
}

fn zero_or_more(sub: Hir) -> Hir {
    Hir::repetition(Repetition { min: 0, max: None, greedy: true, sub: Box::new(sub) })
}

#[cfg(test)]
mod tests {
    use super::super::glob::{Glob, Syntax};
    use super::*;

    fn patterns(globs: &[&str]) -> Vec<Pattern> {
        globs
            .iter()
            .enumerate()
            .flat_map(|(rule, glob)| {
                let glob = Glob::parse(glob, Syntax::Path).unwrap();
                glob.expand_home(b"/home/u")
                    .into_iter()
                    .map(move |alt| Pattern { hir: alternative_hir(&alt), rule: rule as u32, transparent: false })
            })
            .collect()
    }

    #[test]
    fn lowest_matching_rule_wins_at_the_end_of_the_path() {
        let (dfa, _) = build(&patterns(&["**/.env", "~/projects/**", "/**"])).unwrap();
        assert_eq!(dfa.lookup(b"/home/u/projects/a/.env"), Ok(Some(0)));
        assert_eq!(dfa.lookup(b"/home/u/projects/a/main.rs"), Ok(Some(1)));
        assert_eq!(dfa.lookup(b"/etc/passwd"), Ok(Some(2)));
        assert_eq!(dfa.lookup(b"pipe:[12]"), Ok(None));
    }

    #[test]
    fn paths_that_cannot_match_stop_in_the_dead_state() {
        let (dfa, _) = build(&patterns(&["/usr/**"])).unwrap();
        assert!(dfa.dead.is_some());
        assert_eq!(dfa.lookup(b"/etc/passwd"), Ok(None));
        assert_eq!(dfa.lookup(b"/usr"), Ok(Some(0)));
        assert_eq!(dfa.lookup(b"/usrx"), Ok(None));
    }

    #[test]
    fn analysis_names_the_rules_that_decide_instead() {
        let (_, analysis) = build(&patterns(&["/a/**", "/a/b", "/c"])).unwrap();
        assert!(analysis.decides.contains(&0) && analysis.decides.contains(&2));
        assert!(!analysis.decides.contains(&1));
        assert_eq!(analysis.decided_instead_by[&1], BTreeSet::from([0]));
        assert!(analysis.unmatched_patterns.is_empty());
    }

    #[test]
    fn no_patterns_give_the_empty_table() {
        assert_eq!(build(&[]).unwrap().0, CompiledDfa::empty());
    }
}

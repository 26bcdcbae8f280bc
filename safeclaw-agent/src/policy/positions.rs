//! Line and column of every value in a policy file, keyed by its path (`rules[3].paths[0]`), for
//! errors found after deserialization (duplicate names, shadowed rules, includes).

use yaml_rust2::parser::{Event, MarkedEventReceiver};
use yaml_rust2::scanner::Marker;

use super::fasthash::FastMap;
use crate::yaml_guard::TooDeep;

/// Positions of the values of one YAML document. Empty if the text does not parse (serde_yaml
/// reports why).
///
/// Stored as a tree rather than by path text: a 10,000-rule policy has some 70,000 values, and a
/// path string built, hashed and freed for each was most of the time a reload spent here.
#[derive(Debug, Default)]
pub struct Positions {
    /// `(line, column)` of each node by number; node 0 is the document's root.
    at: Vec<(usize, usize)>,
    /// The node of each (parent node, step) as `Step::packed`.
    children: FastMap<u64, u32>,
    /// The mapping keys, each numbered once.
    keys: FastMap<String, u32>,
}

/// How a node is reached from its parent.
#[derive(Clone, Copy)]
enum Step {
    /// The `n`-th item of a sequence.
    Item(u32),
    /// The value of a mapping key, by its number in `Positions::keys`.
    Key(u32),
}

impl Step {
    /// The step and its parent as one hash key. The top bit tells keys from items: neither a file's
    /// items nor its distinct keys reach 2^31 (files are bounded far below that).
    fn packed(self, parent: u32) -> u64 {
        let step = match self {
            Step::Item(n) => n,
            Step::Key(id) => id | 1 << 31,
        };
        u64::from(parent) << 32 | u64::from(step)
    }
}

impl Positions {
    /// Reads `text` once, as `yaml_guard::check_depth` does (and refusing what it refuses), so a
    /// policy is parsed once by yaml_rust2 and once by serde_yaml, never a third time.
    pub fn scan(text: &str) -> Result<Positions, TooDeep> {
        // About one value per 15 bytes in a large generated policy: sized so that the tables are
        // never regrown, each doubling being memory faulted in anew (slow in the emulator,
        // docs/benchmarks.md).
        let values = text.len() / 16;
        let positions = Positions {
            at: Vec::with_capacity(values),
            children: FastMap::with_capacity_and_hasher(values, Default::default()),
            keys: FastMap::default(),
        };
        let mut recorder = Recorder { positions, stack: Vec::new(), place_mapping: None };
        let parsed = crate::yaml_guard::walk(text, |event, mark| recorder.on_event(event, mark))?;
        Ok(if parsed { recorder.positions } else { Positions::default() })
    }

    /// `(line, column)`, both from 1. A path that could name several values (a key holding `.` or
    /// `[`) names the first that exists.
    pub fn get(&self, path: &str) -> Option<(usize, usize)> {
        self.find(0, path, true).and_then(|node| self.at.get(node as usize).copied())
    }

    /// The node `rest` leads to from `node`; at the root a key has no `.` in front.
    fn find(&self, node: u32, rest: &str, root: bool) -> Option<u32> {
        if rest.is_empty() {
            return Some(node);
        }
        if let Some(item) = rest.strip_prefix('[') {
            let (index, after) = item.split_once(']')?;
            let child = self.child(node, Step::Item(index.parse().ok()?))?;
            return self.find(child, after, false);
        }
        let key_and_after = if root { rest } else { rest.strip_prefix('.')? };
        // The key ends before a `.`, a `[` or the end; trying each keeps keys that hold them findable.
        let ends = key_and_after.match_indices(['.', '[']).map(|(at, _)| at).chain([key_and_after.len()]);
        for end in ends {
            let Some(&id) = self.keys.get(&key_and_after[..end]) else { continue };
            let Some(child) = self.child(node, Step::Key(id)) else { continue };
            if let Some(found) = self.find(child, &key_and_after[end..], false) {
                return Some(found);
            }
        }
        None
    }

    fn child(&self, parent: u32, step: Step) -> Option<u32> {
        self.children.get(&step.packed(parent)).copied()
    }
}

enum Frame {
    /// `key` is the key whose value comes next, if a key was read. A block mapping's start event
    /// is marked at its first `:`, so the mapping is placed at its first key instead.
    Mapping {
        node: u32,
        key: Option<u32>,
        placed: bool,
    },
    Sequence {
        node: u32,
        next: u32,
    },
}

struct Recorder {
    positions: Positions,
    stack: Vec<Frame>,
    /// A mapping whose first key was just read, to be placed there.
    place_mapping: Option<u32>,
}

impl Recorder {
    /// Numbers the node starting now at `position` and links it to its parent; `None` if it is a
    /// mapping key (`key` is its text), which is remembered for the value that follows.
    fn node(&mut self, key: Option<String>, position: (usize, usize)) -> Option<u32> {
        let node = u32::try_from(self.positions.at.len()).unwrap_or(u32::MAX);
        let (parent, step) = match self.stack.last_mut() {
            None => {
                self.positions.at.push(position);
                return Some(node);
            }
            Some(Frame::Sequence { node: parent, next }) => {
                let step = Step::Item(*next);
                *next += 1;
                (*parent, step)
            }
            Some(Frame::Mapping { node: parent, key: slot, placed }) => match slot.take() {
                Some(id) => (*parent, Step::Key(id)),
                None => {
                    let keys = &mut self.positions.keys;
                    let text = key.unwrap_or_else(|| "?".to_owned());
                    let fresh = u32::try_from(keys.len()).unwrap_or(u32::MAX);
                    *slot = Some(*keys.entry(text).or_insert(fresh));
                    if !*placed {
                        *placed = true;
                        self.place_mapping = Some(*parent);
                    }
                    return None;
                }
            },
        };
        self.positions.at.push(position);
        self.positions.children.insert(step.packed(parent), node);
        Some(node)
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let position = (mark.line(), mark.col() + 1);
        let is_scalar = matches!(event, Event::Scalar(..));
        match event {
            Event::Scalar(value, ..) => {
                self.node(Some(value), position);
            }
            Event::Alias(_) => {
                self.node(None, position);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key is numbered but reachable by no path.
                let node = self.node(None, position).unwrap_or_else(|| {
                    let node = u32::try_from(self.positions.at.len()).unwrap_or(u32::MAX);
                    self.positions.at.push(position);
                    node
                });
                self.stack.push(match event {
                    Event::MappingStart(..) => Frame::Mapping { node, key: None, placed: false },
                    _ => Frame::Sequence { node, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
        if let Some(mapping) = self.place_mapping.take().filter(|_| is_scalar) {
            self.positions.at[mapping as usize] = position;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_values() {
        let text = "version: 1\nrules:\n  - name: a\n    paths: [/x, /y]\n  - name: b\nagents:\n  bot:\n    rules:\n      - name: c\n";
        let positions = Positions::scan(text).unwrap();
        assert_eq!(positions.get("version"), Some((1, 10)));
        assert_eq!(positions.get("rules[0].name"), Some((3, 11)));
        assert_eq!(positions.get("rules[0].paths[1]"), Some((4, 17)));
        assert_eq!(positions.get("rules[1]"), Some((5, 5)));
        assert_eq!(positions.get("agents.bot.rules[0].name"), Some((9, 15)));
    }

    #[test]
    fn keys_holding_dots_or_brackets_are_found_and_missing_paths_are_not() {
        let text = "agents:\n  claude.code:\n    rules:\n      - name: c\n  claude:\n    x: 1\n  \"a[0]\": 2\nrules: []\n";
        let positions = Positions::scan(text).unwrap();
        assert_eq!(positions.get("agents.claude.code.rules[0].name"), Some((4, 15)));
        assert_eq!(positions.get("agents.claude.code"), Some((3, 5)));
        assert_eq!(positions.get("agents.claude.x"), Some((6, 8)));
        assert_eq!(positions.get("agents.a[0]"), Some((7, 11)));
        assert_eq!(positions.get("agents"), Some((2, 3)));
        for missing in
            ["agents.claude.code.rules[1]", "agents.nobody", "rules[0]", "rules.x", "agents.", "[0]", "x"]
        {
            assert_eq!(positions.get(missing), None, "{missing}");
        }
        assert_eq!(positions.get(""), Some((1, 1)));
    }

    #[test]
    fn broken_yaml_gives_no_positions() {
        assert_eq!(Positions::scan("a: [").unwrap().get("a"), None);
    }

    #[test]
    fn nesting_past_the_limit_is_refused_where_check_depth_refuses_it() {
        let deep = format!("a:\n  b: {}{}\n", "[".repeat(1000), "]".repeat(1000));
        assert_eq!(Positions::scan(&deep).err(), crate::yaml_guard::check_depth(&deep).err());
        assert!(Positions::scan(&deep).is_err());
    }
}

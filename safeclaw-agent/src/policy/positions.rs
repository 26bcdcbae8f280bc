//! Line and column of every value in a policy file, keyed by its path (`rules[3].paths[0]`), for
//! errors found after deserialization (duplicate names, shadowed rules, includes).

use yaml_rust2::parser::{Event, MarkedEventReceiver};
use yaml_rust2::scanner::Marker;

use super::fasthash::FastMap;
use crate::yaml_guard::TooDeep;

/// Positions of the values of one YAML document. Empty if the text does not parse (serde_yaml
/// reports why).
#[derive(Debug, Default)]
pub struct Positions {
    by_path: FastMap<String, (usize, usize)>,
}

impl Positions {
    /// Reads `text` once, as `yaml_guard::check_depth` does (and refusing what it refuses), so a
    /// policy is parsed once by yaml_rust2 and once by serde_yaml, never a third time.
    pub fn scan(text: &str) -> Result<Positions, TooDeep> {
        // About one value per 15 bytes in a large generated policy: sized so that the map is never
        // rehashed, each doubling being memory faulted in anew (slow in the emulator, docs/benchmarks.md).
        let by_path = FastMap::with_capacity_and_hasher(text.len() / 16, Default::default());
        let mut recorder = Recorder { by_path, ..Recorder::default() };
        let parsed = crate::yaml_guard::walk(text, |event, mark| recorder.on_event(event, mark))?;
        Ok(if parsed { Positions { by_path: recorder.by_path } } else { Positions::default() })
    }

    /// `(line, column)`, both from 1.
    pub fn get(&self, path: &str) -> Option<(usize, usize)> {
        self.by_path.get(path).copied()
    }
}

enum Frame {
    /// `key` is the key whose value comes next, if a key was read. A block mapping's start event
    /// is marked at its first `:`, so the mapping is placed at its first key instead.
    Mapping {
        path: String,
        key: Option<String>,
        placed: bool,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    by_path: FastMap<String, (usize, usize)>,
    /// A mapping whose first key was just read, to be placed there.
    place_mapping: Option<String>,
}

impl Recorder {
    /// The path of the node starting now, or `None` if it is a mapping key.
    fn node_path(&mut self, scalar_key: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let here = format!("{path}[{next}]");
                *next += 1;
                Some(here)
            }
            Some(Frame::Mapping { path, key, placed }) => match key.take() {
                Some(key) if path.is_empty() => Some(key),
                Some(key) => Some(format!("{path}.{key}")),
                None => {
                    *key = Some(scalar_key.unwrap_or("?").to_owned());
                    if !*placed {
                        *placed = true;
                        self.place_mapping = Some(path.clone());
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let position = (mark.line(), mark.col() + 1);
        let event_is_key_scalar = matches!(event, Event::Scalar(..));
        match event {
            Event::Scalar(ref value, ..) => {
                if let Some(path) = self.node_path(Some(value)) {
                    self.by_path.insert(path, position);
                }
            }
            Event::Alias(_) => {
                if let Some(path) = self.node_path(Some("?")) {
                    self.by_path.insert(path, position);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key gets a throwaway path.
                let path = self.node_path(None).unwrap_or_else(|| "?".to_owned());
                self.by_path.insert(path.clone(), position);
                self.stack.push(match event {
                    Event::MappingStart(..) => Frame::Mapping { path, key: None, placed: false },
                    _ => Frame::Sequence { path, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
        if let Some(mapping) = self.place_mapping.take().filter(|_| event_is_key_scalar) {
            self.by_path.insert(mapping, position);
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

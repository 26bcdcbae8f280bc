//! Bounds on YAML input checked before serde_yaml reads it: nesting depth (libyaml's scanner is
//! quadratic in flow nesting, so `[[[[…]]]]` of 320 KB took a minute of CPU to refuse), and elision
//! of user text echoed back in error messages.
use std::borrow::Cow;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// Deepest nesting of sequences and mappings accepted; policies and configs need fewer than ten.
pub const MAX_DEPTH: usize = 64;
/// Longest error message shown whole; longer ones keep their start and end.
pub const MAX_MESSAGE_CHARS: usize = 480;

/// Where the text nests too deep: 1-based line and column of the collection past the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("YAML nests deeper than {MAX_DEPTH} levels; refused before parsing")]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Streams the YAML events of `text` and stops at the first collection nested deeper than
/// `MAX_DEPTH`: linear time, since the scanner's per-token work grows only with the depth reached.
/// Text the scanner rejects is left to serde_yaml to report, after a plain bracket count bounds the
/// flow nesting it could reach.
pub fn check_depth(text: &str) -> Result<(), TooDeep> {
    walk(text, |_, _| {}).map(drop)
}

/// `check_depth` that also hands every event it reads, with where it starts, to `on_event`, so a
/// caller needing the events (policy positions) parses the text once. `Ok(true)` when the whole
/// text parsed, `Ok(false)` when the scanner rejected it (`on_event` then saw only a prefix).
pub fn walk(text: &str, mut on_event: impl FnMut(Event, Marker)) -> Result<bool, TooDeep> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            Err(_) => return check_brackets(text).map(|()| false),
        };
        match event {
            Event::StreamEnd => return Ok(true),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    // Where the scanner stands: a token or two past the collection's opening.
                    return Err(TooDeep { line: mark.line(), column: mark.col() + 1 });
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
        on_event(event, mark);
    }
}

/// Whether a plain bracket count (quotes ignored, so an over-count) keeps the flow nesting within
/// `MAX_DEPTH`: then libyaml cannot spend quadratic time on the text, whatever the guard finds.
pub fn flow_nesting_bounded(text: &str) -> bool {
    check_brackets(text).is_ok()
}

/// Flow nesting by counting brackets, quotes ignored: an over-count only refuses text with more
/// than `MAX_DEPTH` unclosed `[`/`{`, which no policy or config has.
fn check_brackets(text: &str) -> Result<(), TooDeep> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    for c in text.chars() {
        column += 1;
        match c {
            '\n' => (line, column) = (line + 1, 0),
            '[' | '{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(TooDeep { line, column });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// `message` whole if short, else its start and end around a note of how much was left out, so that
/// a 10 MB value quoted in an error does not flood the terminal or the audit log.
pub fn elide(message: &str) -> Cow<'_, str> {
    let chars = message.chars().count();
    if chars <= MAX_MESSAGE_CHARS {
        return Cow::Borrowed(message);
    }
    let keep = MAX_MESSAGE_CHARS / 2;
    let head: String = message.chars().take(keep).collect();
    let tail: String = message.chars().skip(chars - keep).collect();
    Cow::Owned(format!("{head}…[{} characters elided]…{tail}", chars - 2 * keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_nesting_is_refused_where_it_passes_the_limit() {
        let deep = format!("a:\n  b: {}{}\n", "[".repeat(160_000), "]".repeat(160_000));
        let err = check_depth(&deep).unwrap_err();
        // `a` and `b` are two mappings, so the 63rd bracket (column 6 + 62) is the 65th collection.
        assert_eq!(err.line, 2);
        assert!((6 + 62..6 + 66).contains(&err.column), "{err:?}");
        let ok = format!("a: {}{}\n", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert_eq!(check_depth(&ok), Ok(()));
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let deep = "- ".repeat(100_000) + "x\n";
        assert!(check_depth(&deep).is_err());
        let deep_maps = (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect::<String>();
        assert!(check_depth(&deep_maps).is_err());
    }

    #[test]
    fn broken_yaml_is_left_to_serde_unless_its_brackets_nest_too_deep() {
        assert_eq!(check_depth("a: [\n"), Ok(()));
        let broken_deep = format!("a: \"unclosed\nb: {}", "{".repeat(1000));
        assert!(check_depth(&broken_deep).is_err());
    }

    #[test]
    fn long_messages_keep_their_start_and_end() {
        assert_eq!(elide("short"), "short");
        let message = format!("bad glob `{}`: glob is too long", "A".repeat(10 << 20));
        let shown = elide(&message);
        assert!(shown.chars().count() < MAX_MESSAGE_CHARS + 64, "{}", shown.len());
        assert!(shown.starts_with("bad glob `AAA") && shown.ends_with("AAA`: glob is too long"), "{shown}");
        assert!(shown.contains("characters elided"), "{shown}");
    }
}

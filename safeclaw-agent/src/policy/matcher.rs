//! Userspace glob matching for the reference evaluator: whole-segment wildcard matching over the
//! expanded glob tokens, with no automaton, so that it checks the kernel DFA instead of sharing
//! its construction.

use std::cell::OnceCell;

use super::glob::{ByteSet, Token};

/// Matches within one path segment (or a whole argument): fixed-width pieces and `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    AnyByte,
    Class(ByteSet),
    Star,
}

/// A segment pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Segment {
    pieces: Vec<Piece>,
}

impl Segment {
    /// Classic wildcard matching; linear unless several stars must backtrack (then at worst
    /// `O(len(text) * len(pieces))`).
    fn matches(&self, text: &[u8]) -> bool {
        let pieces = &self.pieces;
        let (mut p, mut t) = (0usize, 0usize);
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if p < pieces.len() {
                match &pieces[p] {
                    Piece::Star => {
                        resume = Some((p, t));
                        p += 1;
                        continue;
                    }
                    Piece::Literal(bytes) if text[t..].starts_with(bytes) => {
                        p += 1;
                        t += bytes.len();
                        continue;
                    }
                    Piece::AnyByte if t < text.len() => {
                        p += 1;
                        t += 1;
                        continue;
                    }
                    Piece::Class(set) if t < text.len() && set.contains(text[t]) => {
                        p += 1;
                        t += 1;
                        continue;
                    }
                    _ => {}
                }
            } else if t == text.len() {
                return true;
            }
            match resume {
                Some((star, from)) if from < text.len() => {
                    resume = Some((star, from + 1));
                    p = star + 1;
                    t = from + 1;
                }
                _ => return false,
            }
        }
    }
}

/// After the first segment, a path is a list of `/segment` units; a glob's units are segment
/// patterns or a subtree (any number of units).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Unit {
    Segment(Segment),
    Subtree,
}

/// One expanded glob alternative, ready to match paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    /// Leading literal bytes: every matching path starts with them.
    prefix: Vec<u8>,
    /// Trailing literal bytes: every matching path ends with them.
    suffix: Vec<u8>,
    first: Segment,
    units: Vec<Unit>,
}

impl PathPattern {
    /// `tokens` must be home-expanded path-syntax tokens (as `Glob::expand_home` returns).
    pub fn new(tokens: &[Token]) -> PathPattern {
        let mut first: Option<Segment> = None;
        let mut units = Vec::new();
        let mut open = Some(Segment::default());
        let close = |segment: Segment, units: &mut Vec<Unit>, first: &mut Option<Segment>| {
            if first.is_none() {
                *first = Some(segment);
            } else {
                units.push(Unit::Segment(segment));
            }
        };
        for token in tokens {
            match token {
                Token::Literal(bytes) => {
                    for chunk in split_keeping_boundaries(bytes) {
                        match chunk {
                            Chunk::Slash => {
                                if let Some(segment) = open.take() {
                                    close(segment, &mut units, &mut first);
                                }
                                open = Some(Segment::default());
                            }
                            Chunk::Bytes(run) => push_piece(&mut open, Piece::Literal(run.to_vec())),
                        }
                    }
                }
                Token::AnyByte => push_piece(&mut open, Piece::AnyByte),
                Token::Class(set) => push_piece(&mut open, Piece::Class(*set)),
                Token::Star => push_piece(&mut open, Piece::Star),
                Token::Subtree => {
                    if let Some(segment) = open.take() {
                        close(segment, &mut units, &mut first);
                    }
                    units.push(Unit::Subtree);
                }
                // Never present after `expand_home`; a literal `~` would be wrong, matching nothing is safe.
                Token::Home => push_piece(&mut open, Piece::Class(ByteSet::default())),
            }
        }
        if let Some(segment) = open.take() {
            close(segment, &mut units, &mut first);
        }
        PathPattern {
            prefix: leading_literal(tokens),
            suffix: trailing_literal(tokens),
            first: first.unwrap_or_default(),
            units,
        }
    }

    /// The literal bytes every match starts with (for indexing).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The literal bytes every match ends with (for indexing).
    pub fn suffix(&self) -> &[u8] {
        &self.suffix
    }

    pub fn matches(&self, path: &SplitPath<'_>) -> bool {
        let bytes = path.bytes;
        if !bytes.starts_with(&self.prefix) || !bytes.ends_with(&self.suffix) {
            return false;
        }
        if !self.first.matches(path.first()) {
            return false;
        }
        let units = &self.units;
        let count = path.unit_count();
        let (mut u, mut s) = (0usize, 0usize);
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if u < units.len() {
                match &units[u] {
                    Unit::Subtree => {
                        resume = Some((u, s));
                        u += 1;
                        continue;
                    }
                    Unit::Segment(segment) if s < count && segment.matches(path.unit(s)) => {
                        u += 1;
                        s += 1;
                        continue;
                    }
                    Unit::Segment(_) => {}
                }
            } else if s == count {
                return true;
            }
            match resume {
                Some((subtree, from)) if from < count => {
                    resume = Some((subtree, from + 1));
                    u = subtree + 1;
                    s = from + 1;
                }
                _ => return false,
            }
        }
    }
}

/// A path cut at its `/` bytes once (when a pattern first needs it), for matching against many
/// patterns.
pub struct SplitPath<'a> {
    bytes: &'a [u8],
    slashes: OnceCell<Vec<usize>>,
}

impl<'a> SplitPath<'a> {
    pub fn new(bytes: &'a [u8]) -> SplitPath<'a> {
        SplitPath { bytes, slashes: OnceCell::new() }
    }

    fn slashes(&self) -> &[usize] {
        self.slashes.get_or_init(|| {
            self.bytes.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i).collect()
        })
    }

    fn first(&self) -> &'a [u8] {
        &self.bytes[..self.slashes().first().copied().unwrap_or(self.bytes.len())]
    }

    fn unit_count(&self) -> usize {
        self.slashes().len()
    }

    /// The bytes after the `index`-th `/`, up to the next one.
    fn unit(&self, index: usize) -> &'a [u8] {
        let slashes = self.slashes();
        let start = slashes[index] + 1;
        let end = slashes.get(index + 1).copied().unwrap_or(self.bytes.len());
        &self.bytes[start..end]
    }
}

/// An argument pattern: `*` and `?` match any bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgumentPattern {
    whole: Segment,
}

impl ArgumentPattern {
    /// `tokens` are argument-syntax tokens (no `/**`).
    pub fn new(tokens: &[Token]) -> ArgumentPattern {
        let pieces = tokens
            .iter()
            .map(|token| match token {
                Token::Literal(bytes) => Piece::Literal(bytes.clone()),
                Token::AnyByte => Piece::AnyByte,
                Token::Class(set) => Piece::Class(*set),
                Token::Star | Token::Subtree => Piece::Star,
                Token::Home => Piece::Literal(b"~".to_vec()),
            })
            .collect();
        ArgumentPattern { whole: Segment { pieces } }
    }

    pub fn matches(&self, argument: &[u8]) -> bool {
        self.whole.matches(argument)
    }
}

enum Chunk<'a> {
    Slash,
    Bytes(&'a [u8]),
}

fn split_keeping_boundaries(bytes: &[u8]) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    for (index, run) in bytes.split(|b| *b == b'/').enumerate() {
        if index > 0 {
            chunks.push(Chunk::Slash);
        }
        if !run.is_empty() {
            chunks.push(Chunk::Bytes(run));
        }
    }
    chunks
}

fn push_piece(open: &mut Option<Segment>, piece: Piece) {
    // `normalize` only lets `/` follow a subtree, so a segment is always open here; if one is
    // not, opening it keeps the match strict (the piece must still match).
    let segment = open.get_or_insert_with(Segment::default);
    match (segment.pieces.last_mut(), piece) {
        (Some(Piece::Literal(last)), Piece::Literal(more)) => last.extend_from_slice(&more),
        (_, piece) => segment.pieces.push(piece),
    }
}

fn leading_literal(tokens: &[Token]) -> Vec<u8> {
    match tokens.first() {
        Some(Token::Literal(bytes)) => bytes.clone(),
        _ => Vec::new(),
    }
}

fn trailing_literal(tokens: &[Token]) -> Vec<u8> {
    match tokens.last() {
        Some(Token::Literal(bytes)) if tokens.len() > 1 => bytes.clone(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::glob::{Glob, Syntax};
    use super::*;

    fn matches(glob: &str, path: &str) -> bool {
        let glob = Glob::parse(glob, Syntax::Path).unwrap();
        glob.expand_home(b"/home/u")
            .iter()
            .any(|alternative| PathPattern::new(alternative).matches(&SplitPath::new(path.as_bytes())))
    }

    #[test]
    fn subtree_matches_the_directory_and_everything_below() {
        assert!(matches("/a/**", "/a"));
        assert!(matches("/a/**", "/a/b/c"));
        assert!(!matches("/a/**", "/ab"));
        assert!(matches("~/projects/**", "/home/u/projects/x/y.rs"));
        assert!(matches("/**", "/"));
        assert!(matches("**", "/etc/passwd"));
    }

    #[test]
    fn leading_and_middle_double_stars_span_whole_segments() {
        assert!(matches("**/.env", "/.env"));
        assert!(matches("**/.env", "/a/b/.env"));
        assert!(!matches("**/.env", "/a/b/x.env"));
        assert!(matches("/a/**/b", "/a/b"));
        assert!(matches("/a/**/b", "/a/x/y/b"));
        assert!(!matches("/a/**/b", "/a/xb"));
    }

    #[test]
    fn single_star_and_question_stay_in_one_segment() {
        assert!(matches("/a/*.pem", "/a/k.pem"));
        assert!(!matches("/a/*.pem", "/a/b/k.pem"));
        assert!(matches("/a/*", "/a/"));
        assert!(matches("/a/?", "/a/x"));
        assert!(!matches("/a?b", "/a/b"));
        assert!(matches("/a/*x*y", "/a/zxxqy"));
        assert!(!matches("/a/*x*y", "/a/zxxqyz"));
    }

    #[test]
    fn classes_and_braces() {
        assert!(matches("/a/[bc]", "/a/c"));
        assert!(!matches("/a/[!bc]", "/a/c"));
        assert!(matches("~/{.ssh,.aws}/**", "/home/u/.aws/credentials"));
        assert!(!matches("~/{.ssh,.aws}/**", "/home/u/.gcp/x"));
    }

    #[test]
    fn arguments_match_across_slashes() {
        let pattern =
            |g: &str| ArgumentPattern::new(&Glob::parse(g, Syntax::Argument).unwrap().expand_home(b"")[0]);
        assert!(pattern("push*").matches(b"push"));
        assert!(pattern("push*").matches(b"push/x"));
        assert!(!pattern("push*").matches(b"pul"));
        assert!(pattern("--force?").matches(b"--forceX"));
    }
}

//! Glob syntax of policy patterns: parsing, brace expansion, and the checks that reject globs the
//! kernel could never match.
//!
//! A glob becomes a list of alternatives (its braces expanded), each a flat token sequence. Both the
//! kernel DFA (`dfa.rs`) and the userspace matcher (`matcher.rs`) start from these sequences, so the
//! two engines read one meaning of the syntax.

use std::fmt;

/// Longest glob source accepted, in bytes.
pub const MAX_GLOB_LEN: usize = 4096;
/// Most alternatives one glob may expand to (`{a,b}{c,d}` is 4).
pub const MAX_ALTERNATIVES: usize = 256;
/// Deepest nesting of braces.
pub const MAX_BRACE_DEPTH: usize = 8;

/// Where a glob is used, which decides how `*`, `**`, `~` and relative names read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// A file path: absolute, `~/…`, `**/…`, or a pseudo-file such as `pipe:*`.
    Path,
    /// An executable: like `Path`, and a bare name `git` means `**/git`.
    Binary,
    /// A Unix socket path; abstract names start with `@`.
    UnixSocket,
    /// A command-line argument: `*` and `?` match any bytes, `/` included.
    Argument,
}

impl Syntax {
    fn is_path(self) -> bool {
        self != Syntax::Argument
    }
}

/// A set of bytes (a `[...]` class).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte >> 6)] & (1u64 << (byte & 63)) != 0
    }

    pub fn insert_range(&mut self, lo: u8, hi: u8) {
        for byte in lo..=hi {
            self.0[usize::from(byte >> 6)] |= 1u64 << (byte & 63);
        }
    }

    pub fn remove(&mut self, byte: u8) {
        self.0[usize::from(byte >> 6)] &= !(1u64 << (byte & 63));
    }

    fn negate(&mut self) {
        for word in &mut self.0 {
            *word = !*word;
        }
    }

    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Maximal runs of member bytes, ascending.
    pub fn ranges(&self) -> Vec<(u8, u8)> {
        let mut ranges = Vec::new();
        let mut start: Option<u8> = None;
        for byte in 0..=255u8 {
            match (self.contains(byte), start) {
                (true, None) => start = Some(byte),
                (false, Some(lo)) => {
                    ranges.push((lo, byte - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(lo) = start {
            ranges.push((lo, 255));
        }
        ranges
    }
}

impl fmt::Debug for ByteSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteSet{:?}", self.ranges())
    }
}

/// One element of an expanded glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Literal(Vec<u8>),
    /// `~`: the launching user's home, substituted when a profile is compiled.
    Home,
    /// `?`: one byte (never `/` in path syntaxes).
    AnyByte,
    /// `[...]`: one byte of the set (`/` removed in path syntaxes).
    Class(ByteSet),
    /// `*`: any bytes (never `/` in path syntaxes).
    Star,
    /// `/**` (or a leading `**`): nothing, or `/` followed by anything.
    Subtree,
}

/// A parsed glob: its source and its brace-free alternatives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    syntax: Syntax,
    alternatives: Vec<Vec<Token>>,
}

/// Why a glob was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("glob is empty")]
    Empty,
    #[error("glob is {0} bytes long; at most {MAX_GLOB_LEN} are accepted")]
    TooLong(usize),
    #[error("a `\\` at the end escapes nothing")]
    TrailingEscape,
    #[error("`[` at byte {0} is never closed by `]`")]
    UnclosedClass(usize),
    #[error("character class at byte {0} matches no byte (`/` is never matched by a class in a path)")]
    EmptyClass(usize),
    #[error("character class at byte {0} has a reversed range `{1}-{2}`")]
    ReversedRange(usize, char, char),
    #[error("character class at byte {0} holds a non-ASCII character; classes match single bytes")]
    NonAsciiClass(usize),
    #[error(
        "POSIX classes such as `[:alpha:]` are not supported (byte {0}); list the bytes, e.g. `[a-zA-Z]`"
    )]
    PosixClass(usize),
    #[error("`{{` at byte {0} is never closed by `}}`")]
    UnclosedBrace(usize),
    #[error("braces nest deeper than {MAX_BRACE_DEPTH} levels")]
    BracesTooDeep,
    #[error("glob expands to more than {MAX_ALTERNATIVES} alternatives")]
    TooManyAlternatives,
    #[error("`**` must be a whole path segment: write `/**/`, end with `/**`, or start with `**/` (use `*` inside a segment)")]
    DoubleStarInSegment,
    #[error("`~user` is not supported: `~` is the launching user's home and must be followed by `/` or end the glob")]
    TildeUser,
    #[error("`{0}` is not absolute: paths start with `/`, `~/` or `**/`{1}")]
    NotAbsolute(String, &'static str),
    #[error("`{0}` can never match: {1}")]
    NeverMatches(String, &'static str),
}

impl Glob {
    pub fn parse(source: &str, syntax: Syntax) -> Result<Glob, GlobError> {
        if source.is_empty() {
            return Err(GlobError::Empty);
        }
        if source.len() > MAX_GLOB_LEN {
            return Err(GlobError::TooLong(source.len()));
        }
        let raw = Parser { bytes: source.as_bytes(), pos: 0, syntax }.parse_top()?;
        let mut alternatives = Vec::new();
        for expanded in expand(&raw)? {
            let mut tokens = normalize(&expanded, syntax)?;
            if syntax.is_path() {
                if syntax == Syntax::Binary && is_bare_name(&tokens) {
                    tokens.insert(0, Token::Subtree);
                    prepend_slash(&mut tokens);
                }
                check_absolute(&tokens, syntax)?;
                check_can_match(&tokens, syntax)?;
            }
            if !alternatives.contains(&tokens) {
                alternatives.push(tokens);
            }
        }
        Ok(Glob { source: source.to_owned(), syntax, alternatives })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    /// The alternatives with `~` replaced by `home` (absolute, no trailing `/`; empty for `/`).
    pub fn expand_home(&self, home: &[u8]) -> Vec<Vec<Token>> {
        self.alternatives
            .iter()
            .map(|alternative| {
                let mut out: Vec<Token> = Vec::with_capacity(alternative.len());
                for token in alternative {
                    match token {
                        Token::Home => push_literal(&mut out, home),
                        Token::Literal(bytes) => push_literal(&mut out, bytes),
                        other => out.push(other.clone()),
                    }
                }
                out
            })
            .collect()
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Appends `bytes` to `out`, merging with a trailing literal.
fn push_literal(out: &mut Vec<Token>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Token::Literal(last)) = out.last_mut() {
        last.extend_from_slice(bytes);
    } else {
        out.push(Token::Literal(bytes.to_vec()));
    }
}

/// The glob before brace expansion.
#[derive(Clone, Debug)]
enum Raw {
    Item(Item),
    Alternation(Vec<Vec<Raw>>),
}

/// One brace-free element, before `**` is given its meaning.
#[derive(Clone, Debug)]
enum Item {
    Byte(u8),
    AnyByte,
    Class(ByteSet),
    Star,
    DoubleStar,
    Home,
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
    syntax: Syntax,
}

impl Parser<'_> {
    fn parse_top(&mut self) -> Result<Vec<Raw>, GlobError> {
        self.parse_sequence(0, true)
    }

    /// Parses until the end, or (inside braces) an unescaped `,` or `}`, which is left unread.
    /// `at_start`: the sequence starts the glob (a leading `~` is the home).
    fn parse_sequence(&mut self, depth: usize, at_start: bool) -> Result<Vec<Raw>, GlobError> {
        let mut out = Vec::new();
        if at_start && self.syntax.is_path() && self.bytes.get(self.pos) == Some(&b'~') {
            match self.bytes.get(self.pos + 1) {
                None | Some(b'/') => {}
                Some(b',' | b'}') if depth > 0 => {}
                Some(_) => return Err(GlobError::TildeUser),
            }
            out.push(Raw::Item(Item::Home));
            self.pos += 1;
        }
        while let Some(&byte) = self.bytes.get(self.pos) {
            match byte {
                b',' | b'}' if depth > 0 => break,
                b'\\' => {
                    let escaped = *self.bytes.get(self.pos + 1).ok_or(GlobError::TrailingEscape)?;
                    out.push(Raw::Item(Item::Byte(escaped)));
                    self.pos += 2;
                }
                b'?' => {
                    out.push(Raw::Item(Item::AnyByte));
                    self.pos += 1;
                }
                b'*' => {
                    if self.bytes.get(self.pos + 1) == Some(&b'*') {
                        if self.bytes.get(self.pos + 2) == Some(&b'*') {
                            return Err(GlobError::DoubleStarInSegment);
                        }
                        out.push(Raw::Item(Item::DoubleStar));
                        self.pos += 2;
                    } else {
                        out.push(Raw::Item(Item::Star));
                        self.pos += 1;
                    }
                }
                b'[' => out.push(self.parse_class()?),
                b'{' => {
                    let group_at_start = at_start && out.is_empty();
                    out.push(self.parse_braces(depth, group_at_start)?);
                }
                _ => {
                    out.push(Raw::Item(Item::Byte(byte)));
                    self.pos += 1;
                }
            }
        }
        Ok(out)
    }

    fn parse_braces(&mut self, depth: usize, at_start: bool) -> Result<Raw, GlobError> {
        let open = self.pos;
        if depth >= MAX_BRACE_DEPTH {
            return Err(GlobError::BracesTooDeep);
        }
        self.pos += 1;
        let mut alternatives = Vec::new();
        loop {
            alternatives.push(self.parse_sequence(depth + 1, at_start)?);
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Raw::Alternation(alternatives));
                }
                _ => return Err(GlobError::UnclosedBrace(open)),
            }
        }
    }

    fn parse_class(&mut self) -> Result<Raw, GlobError> {
        let open = self.pos;
        self.pos += 1;
        let negated = matches!(self.bytes.get(self.pos), Some(b'!' | b'^'));
        if negated {
            self.pos += 1;
        }
        let mut set = ByteSet::default();
        let mut first = true;
        loop {
            let byte = *self.bytes.get(self.pos).ok_or(GlobError::UnclosedClass(open))?;
            if byte == b']' && !first {
                self.pos += 1;
                break;
            }
            if byte == b'[' && self.bytes.get(self.pos + 1) == Some(&b':') {
                return Err(GlobError::PosixClass(self.pos));
            }
            let lo = self.class_byte(open)?;
            let is_range = self.bytes.get(self.pos) == Some(&b'-')
                && self.bytes.get(self.pos + 1).is_some_and(|&next| next != b']');
            if is_range {
                self.pos += 1;
                let hi = self.class_byte(open)?;
                if lo > hi {
                    return Err(GlobError::ReversedRange(open, char::from(lo), char::from(hi)));
                }
                set.insert_range(lo, hi);
            } else {
                set.insert_range(lo, lo);
            }
            first = false;
        }
        if negated {
            set.negate();
        }
        if self.syntax.is_path() {
            set.remove(b'/');
        }
        if set.is_empty() {
            return Err(GlobError::EmptyClass(open));
        }
        Ok(Raw::Item(Item::Class(set)))
    }

    /// One (possibly escaped) ASCII byte of a class.
    fn class_byte(&mut self, open: usize) -> Result<u8, GlobError> {
        let mut byte = *self.bytes.get(self.pos).ok_or(GlobError::UnclosedClass(open))?;
        if byte == b'\\' {
            self.pos += 1;
            byte = *self.bytes.get(self.pos).ok_or(GlobError::UnclosedClass(open))?;
        }
        if !byte.is_ascii() {
            return Err(GlobError::NonAsciiClass(open));
        }
        self.pos += 1;
        Ok(byte)
    }
}

/// Cartesian product of the alternations, bounded by `MAX_ALTERNATIVES`.
fn expand(raw: &[Raw]) -> Result<Vec<Vec<Item>>, GlobError> {
    let mut results: Vec<Vec<Item>> = vec![Vec::new()];
    for element in raw {
        match element {
            Raw::Item(item) => results.iter_mut().for_each(|result| result.push(item.clone())),
            Raw::Alternation(alternatives) => {
                let mut options = Vec::new();
                for alternative in alternatives {
                    options.extend(expand(alternative)?);
                    if options.len() > MAX_ALTERNATIVES {
                        return Err(GlobError::TooManyAlternatives);
                    }
                }
                if results.len().saturating_mul(options.len()) > MAX_ALTERNATIVES {
                    return Err(GlobError::TooManyAlternatives);
                }
                results = results
                    .iter()
                    .flat_map(|prefix| {
                        options.iter().map(move |option| {
                            let mut joined = prefix.clone();
                            joined.extend(option.iter().cloned());
                            joined
                        })
                    })
                    .collect();
            }
        }
    }
    Ok(results)
}

/// Turns one brace-free sequence into tokens, giving `**` its whole-segment meaning.
fn normalize(items: &[Item], syntax: Syntax) -> Result<Vec<Token>, GlobError> {
    let mut out: Vec<Token> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item {
            Item::Byte(byte) => push_literal(&mut out, &[*byte]),
            Item::AnyByte => out.push(Token::AnyByte),
            Item::Class(set) => out.push(Token::Class(*set)),
            Item::Star => out.push(Token::Star),
            Item::Home => out.push(Token::Home),
            Item::DoubleStar if !syntax.is_path() => out.push(Token::Star),
            Item::DoubleStar => {
                let followed_ok = matches!(items.get(index + 1), None | Some(Item::Byte(b'/')));
                let after_slash =
                    matches!(out.last(), Some(Token::Literal(bytes)) if bytes.last() == Some(&b'/'));
                if !followed_ok || !(after_slash || out.is_empty()) {
                    return Err(GlobError::DoubleStarInSegment);
                }
                if let Some(Token::Literal(bytes)) = out.last_mut().filter(|_| after_slash) {
                    bytes.pop();
                    if bytes.is_empty() {
                        out.pop();
                    }
                }
                out.push(Token::Subtree);
            }
        }
    }
    Ok(out)
}

fn is_bare_name(tokens: &[Token]) -> bool {
    tokens.iter().all(|token| match token {
        Token::Literal(bytes) => !bytes.contains(&b'/'),
        Token::Home | Token::Subtree => false,
        Token::AnyByte | Token::Class(_) | Token::Star => true,
    })
}

fn prepend_slash(tokens: &mut Vec<Token>) {
    // tokens[0] is the Subtree just inserted.
    match tokens.get_mut(1) {
        Some(Token::Literal(bytes)) => bytes.insert(0, b'/'),
        _ => tokens.insert(1, Token::Literal(vec![b'/'])),
    }
}

/// A pseudo-file name as `bpf_d_path` prints it, e.g. `pipe:[1234]`, `anon_inode:[eventfd]`.
fn is_pseudo_file_prefix(bytes: &[u8]) -> bool {
    let name_len = bytes.iter().take_while(|b| b.is_ascii_lowercase() || **b == b'_').count();
    name_len > 0 && bytes.get(name_len) == Some(&b':')
}

fn check_absolute(tokens: &[Token], syntax: Syntax) -> Result<(), GlobError> {
    let ok = match tokens.first() {
        Some(Token::Home | Token::Subtree) => true,
        Some(Token::Literal(bytes)) => {
            bytes.first() == Some(&b'/')
                || (syntax == Syntax::UnixSocket && bytes.first() == Some(&b'@'))
                || (syntax == Syntax::Path && is_pseudo_file_prefix(bytes))
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let hint = match syntax {
        Syntax::UnixSocket => " (or `@` for an abstract socket)",
        Syntax::Path => " (or name a pseudo-file such as `pipe:*`)",
        Syntax::Binary | Syntax::Argument => "",
    };
    Err(GlobError::NotAbsolute(display_tokens(tokens), hint))
}

/// Rejects globs that only match paths the kernel never presents (it resolves `.`, `..`, `//`
/// and never ends a path with `/`).
fn check_can_match(tokens: &[Token], syntax: Syntax) -> Result<(), GlobError> {
    let never = |why| Err(GlobError::NeverMatches(display_tokens(tokens), why));
    if syntax == Syntax::UnixSocket {
        return Ok(());
    }
    for (index, token) in tokens.iter().enumerate() {
        let Token::Literal(bytes) = token else { continue };
        if bytes.contains(&0) {
            return never("paths never contain a NUL byte");
        }
        if bytes.windows(2).any(|w| w == b"//") {
            return never("the kernel presents paths without `//`");
        }
        if bytes.windows(3).any(|w| w == b"/./") || bytes.windows(4).any(|w| w == b"/../") {
            return never("the kernel presents resolved paths, without `.` or `..` segments");
        }
        let ends_segment = matches!(tokens.get(index + 1), None | Some(Token::Subtree));
        if ends_segment {
            if bytes.ends_with(b"/.") || bytes.ends_with(b"/..") {
                return never("the kernel presents resolved paths, without `.` or `..` segments");
            }
            let root_alone = tokens.len() == 1 && bytes.as_slice() == b"/";
            if bytes.last() == Some(&b'/') && !root_alone {
                return never("the kernel never presents a path ending in `/` (write `dir/**` or `dir`)");
            }
        }
    }
    Ok(())
}

/// Tokens written back as glob text, for messages.
pub fn display_tokens(tokens: &[Token]) -> String {
    let mut out = String::new();
    for token in tokens {
        match token {
            Token::Literal(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
            Token::Home => out.push('~'),
            Token::AnyByte => out.push('?'),
            Token::Class(_) => out.push_str("[…]"),
            Token::Star => out.push('*'),
            Token::Subtree => out.push_str("/**"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alts(source: &str, syntax: Syntax) -> Vec<Vec<Token>> {
        Glob::parse(source, syntax).map(|g| g.alternatives).unwrap_or_else(|e| panic!("{source}: {e}"))
    }

    fn lit(s: &str) -> Token {
        Token::Literal(s.as_bytes().to_vec())
    }

    #[test]
    fn double_star_segments_become_subtrees() {
        assert_eq!(alts("/a/**", Syntax::Path), vec![vec![lit("/a"), Token::Subtree]]);
        assert_eq!(alts("/a/**/b", Syntax::Path), vec![vec![lit("/a"), Token::Subtree, lit("/b")]]);
        assert_eq!(alts("**/.env", Syntax::Path), vec![vec![Token::Subtree, lit("/.env")]]);
        assert_eq!(alts("/**", Syntax::Path), vec![vec![Token::Subtree]]);
    }

    #[test]
    fn double_star_inside_a_segment_is_rejected() {
        for bad in ["/a/**b", "/a**", "/a/{**,b}x/c", "/***"] {
            assert_eq!(Glob::parse(bad, Syntax::Path), Err(GlobError::DoubleStarInSegment), "{bad}");
        }
    }

    #[test]
    fn braces_expand_and_may_hold_double_star_segments() {
        assert_eq!(
            alts("~/{.ssh,.aws}/**", Syntax::Path),
            vec![
                vec![Token::Home, lit("/.ssh"), Token::Subtree],
                vec![Token::Home, lit("/.aws"), Token::Subtree]
            ]
        );
        assert_eq!(alts("/x/{**,y}", Syntax::Path), vec![vec![lit("/x"), Token::Subtree], vec![lit("/x/y")]]);
    }

    #[test]
    fn home_is_substituted_as_a_literal() {
        let glob = Glob::parse("~/p/*", Syntax::Path).unwrap();
        assert_eq!(glob.expand_home(b"/home/a*b"), vec![vec![lit("/home/a*b/p/"), Token::Star]]);
        assert_eq!(Glob::parse("~bob/x", Syntax::Path), Err(GlobError::TildeUser));
        assert_eq!(
            alts("{~,/root}/.ssh", Syntax::Path),
            vec![vec![Token::Home, lit("/.ssh")], vec![lit("/root/.ssh")]]
        );
        assert_eq!(alts("/a/~", Syntax::Path), vec![vec![lit("/a/~")]]);
    }

    #[test]
    fn classes_exclude_slash_and_reject_nonsense() {
        let a = alts("/[!a]", Syntax::Path);
        let Token::Class(set) = &a[0][1] else { panic!("{a:?}") };
        assert!(!set.contains(b'/') && !set.contains(b'a') && set.contains(b'b') && set.contains(0xff));
        assert_eq!(Glob::parse("/[/]", Syntax::Path), Err(GlobError::EmptyClass(1)));
        assert_eq!(Glob::parse("/[z-a]", Syntax::Path), Err(GlobError::ReversedRange(1, 'z', 'a')));
        assert_eq!(Glob::parse("/[ab", Syntax::Path), Err(GlobError::UnclosedClass(1)));
        assert_eq!(Glob::parse("/[[:alpha:]]", Syntax::Path), Err(GlobError::PosixClass(2)));
        assert_eq!(Glob::parse("/[é]", Syntax::Path), Err(GlobError::NonAsciiClass(1)));
        let first_bracket = alts("/[]a]", Syntax::Path);
        let Token::Class(set) = &first_bracket[0][1] else { panic!() };
        assert!(set.contains(b']') && set.contains(b'a'));
    }

    #[test]
    fn relative_and_impossible_paths_are_rejected() {
        assert!(matches!(Glob::parse(".env", Syntax::Path), Err(GlobError::NotAbsolute(..))));
        assert!(matches!(Glob::parse("*.pem", Syntax::Path), Err(GlobError::NotAbsolute(..))));
        for never in ["/a//b", "/a/", "/a/../b", "/a/.", "/a//**", "/x\0"] {
            assert!(matches!(Glob::parse(never, Syntax::Path), Err(GlobError::NeverMatches(..))), "{never}");
        }
        assert!(Glob::parse("/", Syntax::Path).is_ok());
        assert!(Glob::parse("pipe:*", Syntax::Path).is_ok());
        assert!(Glob::parse("@*", Syntax::UnixSocket).is_ok());
        assert!(matches!(Glob::parse("@*", Syntax::Path), Err(GlobError::NotAbsolute(..))));
    }

    #[test]
    fn bare_binary_names_match_in_any_directory() {
        assert_eq!(alts("git", Syntax::Binary), vec![vec![Token::Subtree, lit("/git")]]);
        assert_eq!(
            alts("python3*", Syntax::Binary),
            vec![vec![Token::Subtree, lit("/python3"), Token::Star]]
        );
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(Glob::parse(&"/a".repeat(3000), Syntax::Path), Err(GlobError::TooLong(6000)));
        let many = "/{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}";
        assert_eq!(Glob::parse(many, Syntax::Path), Err(GlobError::TooManyAlternatives));
        let deep = format!("/{}x{}", "{".repeat(9), "}".repeat(9));
        assert_eq!(Glob::parse(&deep, Syntax::Path), Err(GlobError::BracesTooDeep));
        assert_eq!(Glob::parse("/a\\", Syntax::Path), Err(GlobError::TrailingEscape));
        assert_eq!(Glob::parse("/{a,b", Syntax::Path), Err(GlobError::UnclosedBrace(1)));
    }

    #[test]
    fn argument_globs_cross_slashes() {
        assert_eq!(alts("push*", Syntax::Argument), vec![vec![lit("push"), Token::Star]]);
        assert_eq!(alts("~/**", Syntax::Argument), vec![vec![lit("~/"), Token::Star]]);
    }
}

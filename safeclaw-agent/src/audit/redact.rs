//! Masks secrets (API keys, tokens, `KEY=value`, `Bearer …`) in paths and argv before an entry is hashed.
//!
//! Patterns are `regex` expressions (linear time, no backtracking). When a pattern has a capture group
//! named `secret`, only that group is masked (`API_KEY=[REDACTED]`); otherwise the whole match is.
use std::borrow::Cow;

use regex::{Regex, RegexSet};

/// What a masked secret is replaced with.
pub const MASK: &str = "[REDACTED]";
/// Patterns one redactor can hold (hits are tracked as bits of a `u64`).
pub const MAX_PATTERNS: usize = 64;

/// Built-in patterns, `(name, regex)`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("bearer-token", r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})"),
    ("github-token", r"\b(?:gh[opusr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    (
        "key-value",
        r"(?i)\b[A-Z0-9_.-]*(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)[A-Z0-9_.-]*=(?P<secret>[^\s&;]+)",
    ),
    ("openai-key", r"\bsk-[A-Za-z0-9_-]{16,}"),
];

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction pattern {name:?}: {source}")]
    BadPattern { name: String, source: regex::Error },
    #[error("redaction pattern name {0:?} is used twice")]
    DuplicateName(String),
    #[error("at most {MAX_PATTERNS} redaction patterns are supported, got {0}")]
    TooMany(usize),
}

struct Pattern {
    name: String,
    regex: Regex,
    secret_group: Option<usize>,
}

/// A compiled set of patterns.
pub struct Redactor {
    any: RegexSet,
    /// Sorted by name, so that hit bits iterate in name order.
    patterns: Vec<Pattern>,
}

/// Which patterns matched, one bit per pattern index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits(u64);

impl Hits {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Redactor {
    /// The built-in patterns (when `builtin`) plus `extra` `(name, regex)` pairs.
    pub fn new(builtin: bool, extra: &[(String, String)]) -> Result<Self, RedactError> {
        let mut named: Vec<(String, String)> = extra.to_vec();
        if builtin {
            named.extend(BUILTIN.iter().map(|(n, r)| (n.to_string(), r.to_string())));
        }
        if named.len() > MAX_PATTERNS {
            return Err(RedactError::TooMany(named.len()));
        }
        named.sort();
        if let Some(pair) = named.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RedactError::DuplicateName(pair[0].0.clone()));
        }
        let patterns = named
            .into_iter()
            .map(|(name, source)| {
                let regex = Regex::new(&source)
                    .map_err(|e| RedactError::BadPattern { name: name.clone(), source: e })?;
                let secret_group = regex.capture_names().position(|n| n == Some("secret"));
                Ok(Pattern { name, regex, secret_group })
            })
            .collect::<Result<Vec<_>, RedactError>>()?;
        let any = RegexSet::new(patterns.iter().map(|p| p.regex.as_str()))
            .map_err(|e| RedactError::BadPattern { name: "(all)".into(), source: e })?;
        Ok(Redactor { any, patterns })
    }

    /// The built-in patterns only.
    pub fn builtin() -> Self {
        match Self::new(true, &[]) {
            Ok(redactor) => redactor,
            Err(e) => unreachable!("built-in redaction patterns compile: {e}"),
        }
    }

    /// `text` with every secret masked; records the patterns that fired in `hits`.
    pub fn redact<'a>(&self, text: &'a str, hits: &mut Hits) -> Cow<'a, str> {
        let matched = self.any.matches(text);
        if !matched.matched_any() {
            return Cow::Borrowed(text);
        }
        let mut current = text.to_owned();
        for index in matched.iter() {
            let pattern = &self.patterns[index];
            let replaced = match pattern.secret_group {
                Some(group) => mask_group(&pattern.regex, group, &current),
                None => pattern.regex.replace_all(&current, MASK).into_owned(),
            };
            if replaced != current {
                hits.0 |= 1 << index;
                current = replaced;
            }
        }
        Cow::Owned(current)
    }

    /// Names of the patterns in `hits`, sorted.
    pub fn names(&self, hits: Hits) -> impl Iterator<Item = &str> {
        self.patterns
            .iter()
            .enumerate()
            .filter(move |(i, _)| hits.0 & (1 << i) != 0)
            .map(|(_, p)| p.name.as_str())
    }
}

fn mask_group(regex: &Regex, group: usize, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in regex.captures_iter(text) {
        if let Some(secret) = caps.get(group) {
            out.push_str(&text[last..secret.start()]);
            out.push_str(MASK);
            last = secret.end();
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> (String, Vec<String>) {
        let r = Redactor::builtin();
        let mut hits = Hits::default();
        let out = r.redact(text, &mut hits).into_owned();
        (out, r.names(hits).map(str::to_owned).collect())
    }

    #[test]
    fn masks_key_shapes() {
        assert_eq!(redact("curl -d sk-proj-abcdefghijklmnop1234").0, "curl -d [REDACTED]");
        assert_eq!(redact("ghp_abcdefghijklmnopqrstuvwxyz0123456789").0, "[REDACTED]");
        assert_eq!(redact("AKIAIOSFODNN7EXAMPLE").0, "[REDACTED]");
        let (out, names) = redact("Authorization: Bearer eyJhbGciOi.JIUzI1");
        assert_eq!(out, "Authorization: Bearer [REDACTED]");
        assert_eq!(names, ["bearer-token"]);
    }

    #[test]
    fn masks_only_the_value_of_key_value_pairs() {
        let (out, names) = redact("OPENAI_API_KEY=abc123 --password=hunter2 /tmp/ok");
        assert_eq!(out, "OPENAI_API_KEY=[REDACTED] --password=[REDACTED] /tmp/ok");
        assert_eq!(names, ["key-value"]);
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let (out, names) = redact("/home/user/sk-short/keyboard.txt");
        assert_eq!(out, "/home/user/sk-short/keyboard.txt");
        assert!(names.is_empty());
    }

    #[test]
    fn custom_patterns_join_and_bad_ones_are_errors() {
        let r = Redactor::new(false, &[("ssn".into(), r"\b\d{3}-\d{2}-\d{4}\b".into())]).unwrap();
        let mut hits = Hits::default();
        assert_eq!(r.redact("id 123-45-6789", &mut hits), "id [REDACTED]");
        assert_eq!(r.names(hits).collect::<Vec<_>>(), ["ssn"]);
        let err = Redactor::new(false, &[("bad".into(), "(".into())]).err().unwrap();
        assert!(err.to_string().contains("\"bad\""), "{err}");
        assert!(matches!(
            Redactor::new(true, &[("openai-key".into(), "x".into())]),
            Err(RedactError::DuplicateName(_))
        ));
    }
}

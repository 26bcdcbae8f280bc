//! Diagnostics of policy loading and compiling: where (file:line:column), how bad, and why.

use std::fmt;
use std::sync::Arc;

/// A place in a policy file; `line` and `column` count from 1, and 0 means unknown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl Location {
    pub fn new(file: &Arc<str>, line: usize, column: usize) -> Location {
        Location { file: Arc::clone(file), line, column }
    }

    /// The file as a whole (no better place is known).
    pub fn file(file: &Arc<str>) -> Location {
        Location::new(file, 0, 0)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub location: Location,
    pub message: String,
}

impl Diagnostic {
    /// Messages quoting a huge value are cut to their start and end (`yaml_guard::elide`).
    pub fn error(location: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Error, location, message: elided(message.into()) }
    }

    pub fn warning(location: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Warning, location, message: elided(message.into()) }
    }
}

fn elided(message: String) -> String {
    match crate::yaml_guard::elide(&message) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(short) => short,
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{}: {level}: {}", self.location, self.message)
    }
}

/// A policy that cannot be used: every error found, one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyError {
    pub fn single(location: Location, message: impl Into<String>) -> PolicyError {
        PolicyError { diagnostics: vec![Diagnostic::error(location, message)] }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, diagnostic) in self.diagnostics.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

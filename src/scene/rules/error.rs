//! What can be wrong with a rules document or a request to the rule engine. Each error names what
//! to fix: the file, the rule (by index and name) and its key, or the rule asked for.

use std::path::PathBuf;

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// Not TOML, or a key or value the rule format does not have (the text says which).
    #[error("rules: {0}")]
    Syntax(String),

    /// One rule's key has a value that cannot work, e.g.
    /// `rules[2].polygon (rule 'door'): needs at least 3 points, got 2`.
    #[error("rules[{index}].{key} (rule '{rule}'): {reason}")]
    Key {
        /// Position in the `[[rules]]` array, from 0.
        index: usize,
        rule: String,
        /// Relative to the rule's table, e.g. `polygon` or `per_class.car.near_y`.
        key: String,
        reason: String,
    },

    #[error("rules: {count} rules, at most {max} are allowed")]
    TooMany { count: usize, max: usize },

    /// Rules work in normalised coordinates, so they need the frame's size in pixels.
    #[error("rules: frame size {width}x{height} is empty")]
    EmptyFrame { width: u32, height: u32 },

    /// A request (such as enabling or disabling) named a rule the engine does not have.
    #[error("rules: no rule named '{0}'")]
    UnknownRule(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: larger than {max_bytes} bytes")]
    TooLarge { path: PathBuf, max_bytes: u64 },

    /// A rules file whose text is wrong; `source` says where in it.
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<RuleError>,
    },
}

/// Into the library's error: file problems keep their path in the crate's file variants, the rest
/// keep their message (which names the rule and key).
impl From<RuleError> for Error {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Io { path, source } => Error::Io { path, source },
            RuleError::InFile { path, source } => Error::Config {
                path,
                reason: source.to_string(),
            },
            RuleError::TooLarge { path, max_bytes } => Error::Config {
                path,
                reason: format!("larger than {max_bytes} bytes"),
            },
            e => Error::Other(e.to_string()),
        }
    }
}

//! One error type for the library. Every variant names the thing that was wrong (a file, a key, a
//! topic) so the CLI can print a single useful line and a long-running pipeline can log and go on.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },

    #[error("{path}: {key}: {reason}")]
    Manifest {
        path: PathBuf,
        key: String,
        reason: String,
    },

    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn image(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.as_ref().to_path_buf(),
            reason: reason.to_string(),
        }
    }
    pub fn model(path: impl AsRef<Path>, reason: impl std::fmt::Display) -> Self {
        Error::Model {
            path: path.as_ref().to_path_buf(),
            reason: reason.to_string(),
        }
    }
    pub fn manifest(path: impl AsRef<Path>, key: &str, reason: impl std::fmt::Display) -> Self {
        Error::Manifest {
            path: path.as_ref().to_path_buf(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

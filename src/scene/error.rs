//! A bad value in the `[events]` or `[describe]` settings, naming the table and key to fix.

use crate::error::Error;

/// E.g. `events.min_update_interval: -1 is not a number of seconds ≥ 0`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{table}.{key}: {reason}")]
pub struct SettingError {
    /// The config table, e.g. `events`.
    pub table: &'static str,
    pub key: &'static str,
    pub reason: String,
}

impl From<SettingError> for Error {
    fn from(e: SettingError) -> Self {
        Error::Other(e.to_string())
    }
}

//! The MQTT side's one error type: each variant is a kind a caller can act on (fix a setting,
//! replace a certificate, free disk space, retry later) and names the key, file, topic or broker
//! it is about.

use std::path::PathBuf;

pub type Result<T, E = MqttError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A setting of the `[mqtt]` table is out of range or contradicts another; `key` is its name
    /// there.
    #[error("mqtt.{key}: {reason}")]
    Config { key: String, reason: String },

    /// The broker URL cannot be used (from the config or the command line).
    #[error("mqtt broker URL {url:?}: {reason}")]
    BrokerUrl { url: String, reason: String },

    /// A topic level (device id, camera name, request id…) that is empty, too long, or would
    /// address other topics.
    #[error("mqtt: {what} {value:?}: {reason}")]
    Name {
        what: String,
        value: String,
        reason: String,
    },

    /// A CA, certificate or key file that cannot be read or used.
    #[error("{path}: {reason}")]
    Tls { path: PathBuf, reason: String },

    /// The spool file cannot be opened, read or written.
    #[error("{path}: spool: {reason}")]
    Spool { path: PathBuf, reason: String },

    /// Connecting to the broker failed; `reason` says what to check.
    #[error("mqtt: {reason}")]
    Connection { broker: String, reason: String },

    /// A message that can never be published as it is (invalid topic, larger than the spool
    /// accepts): sending it again will not help.
    #[error("mqtt: cannot publish to topic {topic:?}: {reason}")]
    Payload { topic: String, reason: String },

    /// A message refused for now (staging queue full, publisher shut down): retry later or drop
    /// it; the refusal is counted in the publisher's stats.
    #[error("mqtt: {class} message on {topic} dropped: {reason}")]
    Dropped {
        /// The message class's name (`alert`, `event`, …): a name, so this leaf file imports
        /// nothing from the topics it describes.
        class: &'static str,
        topic: String,
        reason: String,
    },

    /// A thread or the network runtime could not be started.
    #[error("mqtt: cannot start {what}: {reason}")]
    Start { what: String, reason: String },

    /// The embedded broker cannot listen on `addr`.
    #[error("embedded broker on {addr}: {reason}")]
    Broker { addr: String, reason: String },
}

impl MqttError {
    pub fn config(key: &str, reason: impl std::fmt::Display) -> Self {
        MqttError::Config {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn start(what: &str, reason: impl std::fmt::Display) -> Self {
        MqttError::Start {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Callers that work with the crate-wide error keep compiling; file errors keep their path in
/// the variant that carries one, the rest keep their message.
impl From<MqttError> for crate::error::Error {
    fn from(e: MqttError) -> Self {
        use crate::error::Error;
        match e {
            MqttError::Tls { path, reason } => Error::Config { path, reason },
            MqttError::Spool { path, reason } => Error::Io {
                path,
                source: std::io::Error::other(format!("spool: {reason}")),
            },
            other => Error::Other(other.to_string()),
        }
    }
}

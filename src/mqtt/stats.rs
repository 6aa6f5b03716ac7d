//! The publisher's counters and the `lookout/<device>/stats` payload that carries them.
//!
//! Kept apart from both the publisher (which fills them) and the topic schema (whose message
//! classes key them), so neither has to import the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::topics::MessageClass;

/// Counters a dashboard or `lookout/<device>/stats` shows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PublisherStats {
    pub connected: bool,
    /// Messages in the spool (queued or in flight).
    pub spool_depth: u64,
    pub spool_bytes: u64,
    pub depth_by_class: BTreeMap<MessageClass, u64>,
    /// Accepted by `publish` but not yet committed to the spool.
    pub staged: u64,
    /// Handed to the connection (re-sends after a reconnect count again).
    pub sent: u64,
    /// Removed from the spool because the broker has them.
    pub acked: u64,
    /// Evicted or refused, per class.
    pub dropped: BTreeMap<MessageClass, u64>,
    /// Successful connections after the first.
    pub reconnects: u64,
    pub connects: u64,
    /// Command messages discarded without a reply because the command queue held
    /// `INCOMING_CAP` (1024) messages.
    pub incoming_dropped: u64,
    /// The most recent reason a connection failed or ended; kept after reconnecting (with
    /// `last_error_ms`), so a device that is up again still shows what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When `last_error` happened (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<u64>,
    /// Connection attempts that failed before the broker accepted them (TLS, refused…).
    #[serde(default)]
    pub connect_failures: u64,
    /// Command messages answered "busy" because the queued commands held `INCOMING_MAX_BYTES`.
    #[serde(default)]
    pub incoming_busy: u64,
    /// Connections lost because the broker sent a packet over `max_incoming_bytes`.
    #[serde(default)]
    pub incoming_oversized: u64,
    /// Present while the command subscription is paused (publish-only) because subscribing
    /// brought an over-sized retained message: when it is tried again (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands_paused_until_ms: Option<u64>,
}

/// `lookout/<device>/stats`: the publisher's counters next to the pipeline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatsBody {
    pub mqtt: PublisherStats,
    /// Whatever the pipeline reports (fps, latencies…); absent when it reports nothing.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub pipeline: serde_json::Value,
}

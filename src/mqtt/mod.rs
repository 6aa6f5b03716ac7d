//! MQTT: publish what the cameras see to remote subscribers without ever losing an alert, and
//! take commands back. See `docs/mqtt.md` for the topic and payload schema.
//!
//! - [`topics`]: topic names, message classes (priority, QoS, retain) and the payload envelope;
//! - [`spool`]: the persistent, bounded store-and-forward queue;
//! - [`publisher`]: the connection that drains the spool, keeps the status and receives commands;
//! - [`stats`]: the publisher's counters and the `stats` payload;
//! - [`MqttError`]: what can go wrong, by kind;
//! - [`commands`]: parsing, validation and dispatch of `cmd/*`, replies on `reply/*`
//!   ([`recall_args`]: the arguments of `cmd/search` and `cmd/summary`);
//! - [`broker`]: an embedded broker (rumqttd);
//! - [`discovery`]: Home Assistant MQTT discovery configs and their clean-up;
//! - [`watch`]: a terminal subscriber for people.

pub mod broker;
pub mod commands;
pub mod discovery;
mod error;
pub mod publisher;
pub mod recall_args;
pub mod spool;
pub mod stats;
pub mod topics;
pub mod watch;

pub use broker::{EmbeddedBroker, EmbeddedBrokerConfig};
pub use commands::{
    ChannelHandler, Command, CommandHandler, CommandRequest, CommandServer, PendingCommand,
    Responder, Unsupported,
};
pub use error::MqttError;
pub use publisher::{probe, MqttConfig, Protocol, Publisher, PublisherHandle};
pub use spool::{Spool, SpoolLimits, SpoolMessage};
pub use stats::{PublisherStats, StatsBody};
pub use topics::{
    ClassPolicies, ClassPolicy, Envelope, MessageClass, Qos, ReplyBody, StatusBody, Topics,
};
pub use watch::{watch, WatchOptions};

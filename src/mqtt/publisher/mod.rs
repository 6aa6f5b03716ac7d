//! The MQTT connection: drains the spool to the broker, keeps the device's status, receives
//! commands. Split the way rumqttc splits a client from its event loop:
//!
//! - `config`: the `[mqtt]` settings, their validation, the broker URL and TLS set-up;
//! - `handle`: [`PublisherHandle`], what callers (the frame loop among them) hold: it only puts
//!   a message on a bounded staging queue and returns;
//! - `sender`: the *spool thread*, which owns the spool, commits staged messages in batches and
//!   hands them to the connection;
//! - `eventloop`: the *net thread*, which owns the connection and reports what happens on it;
//! - `state`: the socket-free in-flight bookkeeping the spool thread keeps per connection;
//! - `protocol`: MQTT 3.1.1 and 5 behind one client / event-stream pair;
//! - `presence`: a second, tiny connection carrying the plain `availability` topic and its will.
//!
//! The three parties are joined by channels so none waits on another. [`Publisher`] starts and
//! stops the two threads.

mod config;
mod eventloop;
mod handle;
mod presence;
mod protocol;
mod sender;
mod state;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use tokio::sync::Notify;

pub use self::config::{tls_config, BrokerUrl, MqttConfig, Protocol};
pub use self::eventloop::probe;
pub use self::handle::PublisherHandle;
// The counters moved to `mqtt::stats` (the topic schema needs them too); kept here so existing
// paths resolve.
pub use super::stats::PublisherStats;

use self::eventloop::NetLoop;
use self::presence::Presence;
use self::sender::SpoolSender;
use super::error::{MqttError, Result};
use super::spool::Spool;

/// A message received on a subscribed topic (commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// MQTT v5 request/response: where the requester wants the answer, and what to echo.
    pub response_topic: Option<String>,
    pub correlation: Option<Vec<u8>>,
    /// Sent by the broker because the message was retained (a subscription was made), not
    /// because someone published it just now. A retained command is never executed.
    pub retain: bool,
    /// The command queue was full: only the start of the payload was kept (enough to find the
    /// `request_id`), and the command is to be answered "busy", not executed.
    pub busy: bool,
    /// Keeps the payload counted against [`INCOMING_MAX_BYTES`] until the message is dropped.
    pub(super) held: Held,
}

/// A queued command's payload bytes, counted in the shared total until it is dropped, so the
/// bound holds whoever reads the queue and however they finish with a message.
#[derive(Debug, Default)]
pub(super) struct Held(Option<(Arc<AtomicUsize>, usize)>);

impl Held {
    fn new(total: &Arc<AtomicUsize>, n: usize) -> Held {
        total.fetch_add(n, Ordering::SeqCst);
        Held(Some((total.clone(), n)))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((total, n)) = &self.0 {
            total.fetch_sub(*n, Ordering::SeqCst);
        }
    }
}

/// A copy is not in the queue, so it is not counted.
impl Clone for Held {
    fn clone(&self) -> Held {
        Held(None)
    }
}

/// Bookkeeping only: two messages with the same content are equal.
impl PartialEq for Held {
    fn eq(&self, _: &Held) -> bool {
        true
    }
}
impl Eq for Held {}

/// Command messages waiting for the command server, at most; more are dropped and counted
/// (`stats.mqtt.incoming_dropped`), without a reply.
pub const INCOMING_CAP: usize = 1024;
/// Payload bytes of the waiting commands kept whole, at most. Past it a command is queued as a
/// "busy" stub of [`BUSY_STUB_BYTES`], so a burst of large commands cannot grow memory.
pub const INCOMING_MAX_BYTES: usize = 4 << 20;
/// What a "busy" stub keeps of a payload, topic and response topic: enough to reply.
pub const BUSY_STUB_BYTES: usize = 1024;

/// Owns the connection's threads. Derefs to [`PublisherHandle`]; dropping it is a
/// [`Publisher::shutdown`] without waiting for the spool to drain.
pub struct Publisher {
    handle: PublisherHandle,
    ctl_tx: Sender<Ctl>,
    incoming_rx: Receiver<IncomingMessage>,
    spool_thread: Option<JoinHandle<()>>,
    net_thread: Option<JoinHandle<()>>,
    presence: Option<Presence>,
}

impl std::ops::Deref for Publisher {
    type Target = PublisherHandle;
    fn deref(&self) -> &PublisherHandle {
        &self.handle
    }
}

/// Orders to the spool thread.
enum Ctl {
    Shutdown { drain_until: Instant },
}

/// Set by the spool thread once it has said goodbye; wakes the net thread wherever it waits.
#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Publisher {
    /// Opens the spool and starts connecting in the background; returns at once even when the
    /// broker is unreachable (messages wait in the spool).
    pub fn start(cfg: &MqttConfig) -> Result<Publisher> {
        let url = cfg.validate()?;
        let topics = cfg.topics()?;
        let tls = cfg.tls_for(&url)?;
        let presence = Presence::start(cfg, url.clone(), tls.clone(), topics.availability())?;
        let spool = Spool::open_or_recover(&cfg.spool_path, cfg.spool)?;

        let (staging_tx, staging_rx) = bounded(handle::STAGING_CAP);
        let (incoming_tx, incoming_rx) = bounded(INCOMING_CAP);
        let (net_tx, net_rx) = bounded(1024);
        let (ctl_tx, ctl_rx) = bounded(4);
        let handle = PublisherHandle::new(cfg, topics, staging_tx);
        let stop = Arc::new(Stop::default());

        let net = NetLoop {
            cfg: cfg.clone(),
            url,
            tls,
            handle: handle.clone(),
            events: net_tx,
            incoming: incoming_tx,
            incoming_bytes: Arc::new(AtomicUsize::new(0)),
            stop: stop.clone(),
            gen: AtomicU64::new(0),
        };
        let net_thread = std::thread::Builder::new()
            .name("mqtt-net".into())
            .spawn(move || net.run())
            .map_err(|e| MqttError::start("the network thread", e))?;

        let sender = SpoolSender::new(
            spool,
            handle.clone(),
            cfg.inflight as usize,
            cfg.commands,
            stop,
        );
        let spool_thread = std::thread::Builder::new()
            .name("mqtt-spool".into())
            .spawn(move || sender.run(staging_rx, net_rx, ctl_rx))
            .map_err(|e| MqttError::start("the spool thread", e))?;

        Ok(Publisher {
            handle,
            ctl_tx,
            incoming_rx,
            spool_thread: Some(spool_thread),
            net_thread: Some(net_thread),
            presence: Some(presence),
        })
    }

    pub fn handle(&self) -> PublisherHandle {
        self.handle.clone()
    }

    /// Messages received on `cmd/#`, for [`super::commands::CommandServer`].
    pub fn incoming(&self) -> Receiver<IncomingMessage> {
        self.incoming_rx.clone()
    }

    /// Waits up to `drain` for the spool to empty, publishes the retained `offline` status,
    /// disconnects cleanly (so the broker does not send the last will) and joins the threads.
    /// Whatever is still undelivered stays in the spool for the next start.
    pub fn shutdown(mut self, drain: Duration) {
        self.stop_threads(drain);
    }

    fn stop_threads(&mut self, drain: Duration) {
        self.handle.close();
        let _ = self.ctl_tx.send(Ctl::Shutdown {
            drain_until: Instant::now() + drain,
        });
        if let Some(t) = self.spool_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.net_thread.take() {
            let _ = t.join();
        }
        if let Some(mut p) = self.presence.take() {
            p.stop();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop_threads(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::spool::SpoolLimits;
    use crate::mqtt::topics::MessageClass;

    #[test]
    fn publish_never_blocks_without_a_broker() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MqttConfig {
            // Nothing listens on port 1 of loopback.
            broker: "mqtt://127.0.0.1:1".into(),
            device: "unit".into(),
            spool_path: dir.path().join("spool.redb"),
            reconnect_min_ms: 50,
            reconnect_max_ms: 100,
            ..MqttConfig::default()
        };
        let p = Publisher::start(&cfg).unwrap();
        for i in 0..100 {
            p.event(serde_json::json!({ "event_id": format!("e{i}") }))
                .unwrap();
        }
        assert!(p.publish(MessageClass::Event, "a/+/b", vec![]).is_err());
        assert!(!p.flush(Duration::from_millis(300)));
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.stats().spool_depth < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let st = p.stats();
        assert_eq!(st.spool_depth, 100);
        assert!(!st.connected);
        p.shutdown(Duration::ZERO);
        let s = Spool::open(dir.path().join("spool.redb"), SpoolLimits::default()).unwrap();
        assert_eq!(s.len(), 100);
    }
}

//! The MQTT connection: drains the spool to the broker, keeps the device's status, receives
//! commands.
//!
//! Three parties, joined by channels so none waits on another:
//! - callers (`PublisherHandle::publish*`, the frame loop among them) only put a message on a
//!   bounded staging queue and return;
//! - the *spool thread* owns the [`Spool`]: it commits staged messages in batches (one fsync per
//!   batch), hands up to `inflight` of them to rumqttc in key order, and deletes each one when
//!   the net thread reports it delivered;
//! - the *net thread* runs rumqttc's event loop on a one-thread tokio runtime and reports every
//!   connection, publish written, PUBACK and disconnect back to the spool thread.
//!
//! rumqttc numbers QoS 1 packets itself, so the spool thread remembers the keys it handed over in
//! order and pairs each with the packet id rumqttc reports for it when it is written (rumqttc
//! writes requests in the order they are queued). Each connection gets a fresh rumqttc event
//! loop: nothing stale survives a disconnect, and after reconnecting the spool thread simply
//! re-sends everything not yet acknowledged from the spool's head. The broker session itself is
//! durable (clean session off), so subscriptions and queued commands survive.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::spool::{Admission, Spool, SpoolLimits, SpoolMessage};
use super::topics::{
    now_ms, AlertBody, ClassPolicies, DetectionsBody, DeviceState, Envelope, EventBody, IdGen,
    MessageClass, Qos, ReplyBody, SceneBody, StatsBody, StatusBody, Topics,
};
use crate::error::{Error, Result};

/// Everything the MQTT side needs; deserialisable from the `[mqtt]` table of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (8883).
    pub broker: String,
    /// Device id: the second topic level. Letters, digits, `-`, `_`… no `/`, `+` or `#`.
    pub device: String,
    /// Defaults to `lookout-<device>`. Must be stable: the broker keeps the durable session by it.
    pub client_id: Option<String>,
    pub keep_alive_s: u64,
    pub connect_timeout_s: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle that signs the broker's certificate (required for `mqtts://`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require client certificates.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub spool_path: PathBuf,
    pub spool: SpoolLimits,
    /// QoS/retain overrides per class.
    pub classes: ClassPolicies,
    /// Messages handed to the broker and not yet acknowledged, at most.
    pub inflight: u16,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Subscribe to `lookout/<device>/cmd/#`.
    pub commands: bool,
    /// Largest packet accepted from the broker. A larger one makes rumqttc drop the connection
    /// (it then reconnects), so memory stays bounded whatever a peer publishes.
    pub max_incoming_bytes: usize,
    /// Reported in the `online` status.
    pub board: String,
    /// `"3.1.1"` (default) or `"5"`.
    pub protocol: Protocol,
    /// MQTT v5 only: how long the broker keeps the durable session after a disconnect.
    pub session_expiry_s: u32,
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker: "mqtt://127.0.0.1:1883".into(),
            device: "lookout".into(),
            client_id: None,
            keep_alive_s: 30,
            connect_timeout_s: 10,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            spool_path: PathBuf::from("lookout-spool.redb"),
            spool: SpoolLimits::default(),
            classes: ClassPolicies::default(),
            inflight: 64,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            commands: true,
            max_incoming_bytes: 256 << 10,
            board: "unknown".into(),
            protocol: Protocol::V311,
            session_expiry_s: 7 * 24 * 3600,
        }
    }
}

impl MqttConfig {
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("lookout-{}", self.device))
    }

    pub fn validate(&self) -> Result<BrokerUrl> {
        let url = BrokerUrl::parse(&self.broker)?;
        Topics::new(&self.device)?;
        let bad = |key: &str, why: &str| Err(Error::Other(format!("mqtt.{key}: {why}")));
        if self.keep_alive_s == 0 {
            return bad("keep_alive_s", "must be at least 1 second");
        }
        if self.inflight == 0 {
            return bad("inflight", "must be at least 1");
        }
        if self.client_id().is_empty() {
            return bad("client_id", "must not be empty");
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return bad("client_cert", "client_cert and client_key go together");
        }
        if url.tls && self.ca_file.is_none() {
            return bad(
                "ca_file",
                "mqtts:// needs the CA that signed the broker's certificate",
            );
        }
        if self.protocol == Protocol::V5 && self.keep_alive_s < 5 {
            return bad(
                "keep_alive_s",
                "MQTT 5 needs at least 5 seconds (rumqttc's minimum)",
            );
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return bad(
                "reconnect_min_ms",
                "need 0 < reconnect_min_ms ≤ reconnect_max_ms",
            );
        }
        Ok(url)
    }
}

/// A parsed `mqtt://` / `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl> {
        let bad = |why: &str| Err(Error::Other(format!("mqtt broker URL {url:?}: {why}")));
        let Some((scheme, rest)) = url.split_once("://") else {
            return bad("expected mqtt://host:port or mqtts://host:port");
        };
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            _ => return bad("scheme must be mqtt or mqtts"),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') {
            return bad("give only host and port (credentials go in username/password)");
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, p)) = v6.split_once(']') else {
                return bad("unclosed [");
            };
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return bad("missing host");
        }
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return bad("port must be 1-65535"),
            },
            None if tls => 8883,
            None => 1883,
        };
        Ok(BrokerUrl { tls, host, port })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

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
    /// Command messages discarded because the command queue was full.
    pub incoming_dropped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A message received on a subscribed topic (commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// MQTT v5 request/response: where the requester wants the answer, and what to echo.
    pub response_topic: Option<String>,
    pub correlation: Option<Vec<u8>>,
}

/// Messages accepted from callers but not yet in the spool, at most. A quarter of it is kept for
/// alerts so a flood of detections cannot crowd one out.
const STAGING_CAP: usize = 4096;
const STAGING_MAX_BYTES: u64 = 32 << 20;
const INCOMING_CAP: usize = 32;
/// Spool-thread batch: one fsync for up to this many messages.
const BATCH: usize = 512;
/// Bytes handed to the connection and not yet acknowledged, at most (one message may exceed
/// it): rumqttc keeps a copy of every unacknowledged QoS 1 message.
const INFLIGHT_BYTES: u64 = 8 << 20;
/// A non-alert message at the head of the queue that was in flight for this many consecutive
/// dropped connections is taken to be what makes the broker drop us (too large, refused) and
/// is discarded, so one bad message cannot stall the queue forever.
const POISON_ATTEMPTS: u32 = 8;

struct Shared {
    topics: Topics,
    ids: IdGen,
    policies: ClassPolicies,
    version: String,
    board: String,
    max_message_bytes: u64,
    staging_tx: Sender<SpoolMessage>,
    staged: AtomicU64,
    staged_bytes: AtomicU64,
    staging_dropped: [AtomicU64; MessageClass::ALL.len()],
    stats: Mutex<PublisherStats>,
    closed: AtomicBool,
}

/// A cheap, cloneable handle for publishing from any thread.
#[derive(Clone)]
pub struct PublisherHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PublisherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherHandle")
            .field("device", &self.shared.topics.device())
            .finish()
    }
}

impl PublisherHandle {
    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    /// Queues raw bytes with the class's QoS/retain. Never blocks: when the staging queue is
    /// full the message is refused (and counted) instead.
    pub fn publish(
        &self,
        class: MessageClass,
        topic: impl Into<String>,
        payload: Vec<u8>,
    ) -> Result<()> {
        let p = self.shared.policies.policy(class);
        self.publish_with(class, topic, payload, p.qos, p.retain)
    }

    pub fn publish_with(
        &self,
        class: MessageClass,
        topic: impl Into<String>,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<()> {
        self.publish_full(class, topic.into(), payload, qos, retain, None)
    }

    fn publish_full(
        &self,
        class: MessageClass,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
        correlation: Option<Vec<u8>>,
    ) -> Result<()> {
        if topic.is_empty() || topic.len() > u16::MAX as usize || !rumqttc::valid_topic(&topic) {
            return Err(Error::Other(format!(
                "mqtt: cannot publish to topic {topic:?}"
            )));
        }
        let s = &self.shared;
        let msg = SpoolMessage {
            class,
            topic,
            payload,
            qos,
            retain,
            created_ts: now_ms(),
            correlation,
        };
        let cost = msg.cost();
        let refuse = |why: &str| {
            s.staging_dropped[class.index()].fetch_add(1, Ordering::Relaxed);
            Err(Error::Other(format!(
                "mqtt: {class} message dropped: {why}"
            )))
        };
        if s.closed.load(Ordering::Relaxed) {
            return refuse("publisher is shut down");
        }
        if cost > s.max_message_bytes {
            return refuse("larger than spool.max_message_bytes");
        }
        if class != MessageClass::Alert
            && (s.staging_tx.len() >= STAGING_CAP * 3 / 4
                || s.staged_bytes.load(Ordering::Relaxed) + cost > STAGING_MAX_BYTES)
        {
            return refuse("staging queue full (spool writer behind)");
        }
        s.staged.fetch_add(1, Ordering::Relaxed);
        s.staged_bytes.fetch_add(cost, Ordering::Relaxed);
        match s.staging_tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(_) => {
                s.staged.fetch_sub(1, Ordering::Relaxed);
                s.staged_bytes.fetch_sub(cost, Ordering::Relaxed);
                refuse("staging queue full (spool writer behind)")
            }
        }
    }

    /// Wraps `body` in the versioned envelope and queues it; returns the payload's `id`.
    pub fn publish_json<T: Serialize>(
        &self,
        class: MessageClass,
        topic: impl Into<String>,
        body: T,
    ) -> Result<String> {
        let env = Envelope::new(&self.shared.ids, self.shared.topics.device(), body);
        self.publish(class, topic, env.to_json())?;
        Ok(env.id)
    }

    pub fn alert(&self, body: AlertBody) -> Result<String> {
        self.publish_json(MessageClass::Alert, self.topics().alerts(), body)
    }

    pub fn event(&self, body: EventBody) -> Result<String> {
        self.publish_json(MessageClass::Event, self.topics().events(), body)
    }

    pub fn scene(&self, body: SceneBody) -> Result<String> {
        self.publish_json(MessageClass::Scene, self.topics().scene(), body)
    }

    pub fn detections(&self, body: DetectionsBody) -> Result<String> {
        self.publish_json(MessageClass::Detections, self.topics().detections(), body)
    }

    /// JPEG bytes as they are (no envelope: subscribers display them directly).
    pub fn snapshot(&self, camera: &str, jpeg: Vec<u8>) -> Result<()> {
        let topic = self.topics().snapshot(camera)?;
        self.publish(MessageClass::Snapshot, topic, jpeg)
    }

    /// Publishes the current counters plus whatever the pipeline reports.
    pub fn publish_stats(&self, pipeline: serde_json::Value) -> Result<String> {
        let body = StatsBody {
            mqtt: self.stats(),
            pipeline,
        };
        self.publish_json(MessageClass::Stats, self.topics().stats(), body)
    }

    pub fn reply(&self, body: ReplyBody) -> Result<String> {
        let topic = self.topics().reply(&body.request_id)?;
        self.publish_json(MessageClass::Reply, topic, body)
    }

    /// A reply to an MQTT v5 request: on the requester's response topic, with its correlation
    /// data (which a 3.1.1 connection cannot carry and drops).
    pub fn reply_to(
        &self,
        response_topic: &str,
        correlation: Option<Vec<u8>>,
        body: ReplyBody,
    ) -> Result<String> {
        let env = Envelope::new(&self.shared.ids, self.shared.topics.device(), body);
        let p = self.shared.policies.policy(MessageClass::Reply);
        self.publish_full(
            MessageClass::Reply,
            response_topic.to_string(),
            env.to_json(),
            p.qos,
            p.retain,
            correlation,
        )?;
        Ok(env.id)
    }

    pub fn stats(&self) -> PublisherStats {
        let s = &self.shared;
        let mut st = s.stats.lock().map(|g| g.clone()).unwrap_or_default();
        st.staged = s.staged.load(Ordering::Relaxed);
        for c in MessageClass::ALL {
            *st.dropped.entry(c).or_default() +=
                s.staging_dropped[c.index()].load(Ordering::Relaxed);
        }
        st
    }

    /// Waits until everything published so far has been acknowledged by the broker, or until
    /// `timeout`. Returns whether the spool drained.
    /// Wait until everything published so far has left the in-memory staging queue for the
    /// spool on disk (written with fsync), or `timeout` passes. After `true`, a crash or kill
    /// loses none of it. Cheap: the spool thread writes a batch within milliseconds.
    pub fn sync(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.shared.staged.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline || self.shared.closed.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.stats();
            if st.staged == 0 && st.spool_depth == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn status_payload(&self, state: DeviceState, reason: Option<&str>) -> Vec<u8> {
        let s = &self.shared;
        Envelope::new(
            &s.ids,
            s.topics.device(),
            StatusBody {
                state,
                version: s.version.clone(),
                board: s.board.clone(),
                reason: reason.map(str::to_string),
            },
        )
        .to_json()
    }
}

/// Owns the connection's threads. Derefs to [`PublisherHandle`]; dropping it is a
/// [`Publisher::shutdown`] without waiting for the spool to drain.
pub struct Publisher {
    handle: PublisherHandle,
    ctl_tx: Sender<Ctl>,
    incoming_rx: Receiver<IncomingMessage>,
    spool_thread: Option<JoinHandle<()>>,
    net_thread: Option<JoinHandle<()>>,
}

impl std::ops::Deref for Publisher {
    type Target = PublisherHandle;
    fn deref(&self) -> &PublisherHandle {
        &self.handle
    }
}

enum Ctl {
    Shutdown { drain_until: Instant },
}

enum NetEvent {
    Connected {
        gen: u64,
        client: Client,
    },
    Published {
        gen: u64,
        pkid: u16,
    },
    Acked {
        gen: u64,
        pkid: u16,
        /// MQTT v5: the broker's reason for not accepting the message.
        refused: Option<String>,
    },
    DisconnectSent {
        gen: u64,
    },
    Disconnected {
        gen: u64,
        error: String,
        was_connected: bool,
    },
}

impl Publisher {
    /// Opens the spool and starts connecting in the background; returns at once even when the
    /// broker is unreachable (messages wait in the spool).
    pub fn start(cfg: &MqttConfig) -> Result<Publisher> {
        let url = cfg.validate()?;
        let topics = Topics::new(&cfg.device)?;
        let tls = if url.tls {
            Some(Arc::new(tls_config(cfg)?))
        } else {
            None
        };
        let spool = Spool::open(&cfg.spool_path, cfg.spool)?;

        let (staging_tx, staging_rx) = bounded(STAGING_CAP);
        let (incoming_tx, incoming_rx) = bounded(INCOMING_CAP);
        let (net_tx, net_rx) = bounded(1024);
        let (ctl_tx, ctl_rx) = bounded(4);
        let shared = Arc::new(Shared {
            topics,
            ids: IdGen::new(),
            policies: cfg.classes.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            board: cfg.board.clone(),
            max_message_bytes: cfg.spool.max_message_bytes,
            staging_tx,
            staged: AtomicU64::new(0),
            staged_bytes: AtomicU64::new(0),
            staging_dropped: Default::default(),
            stats: Mutex::new(PublisherStats::default()),
            closed: AtomicBool::new(false),
        });
        let handle = PublisherHandle { shared };
        let stop = Arc::new(Stop::default());

        let net = NetLoop {
            cfg: cfg.clone(),
            url,
            tls,
            handle: handle.clone(),
            events: net_tx,
            incoming: incoming_tx,
            stop: stop.clone(),
            gen: AtomicU64::new(0),
        };
        let net_thread = std::thread::Builder::new()
            .name("mqtt-net".into())
            .spawn(move || net.run())
            .map_err(|e| Error::Other(format!("mqtt: cannot start thread: {e}")))?;

        let mut sender = SpoolSender {
            spool,
            handle: handle.clone(),
            window: cfg.inflight as usize,
            commands: cfg.commands,
            conn: None,
            deletes: Vec::new(),
            attempts: HashMap::new(),
            drain_until: None,
            stop,
        };
        sender.update_stats();
        let spool_thread = std::thread::Builder::new()
            .name("mqtt-spool".into())
            .spawn(move || sender.run(staging_rx, net_rx, ctl_rx))
            .map_err(|e| Error::Other(format!("mqtt: cannot start thread: {e}")))?;

        Ok(Publisher {
            handle,
            ctl_tx,
            incoming_rx,
            spool_thread: Some(spool_thread),
            net_thread: Some(net_thread),
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
        self.handle.shared.closed.store(true, Ordering::Relaxed);
        let _ = self.ctl_tx.send(Ctl::Shutdown {
            drain_until: Instant::now() + drain,
        });
        if let Some(t) = self.spool_thread.take() {
            let _ = t.join();
        }
        if let Some(t) = self.net_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop_threads(Duration::ZERO);
    }
}

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

// ---------------------------------------------------------------------------------------------
// Net thread

struct NetLoop {
    cfg: MqttConfig,
    url: BrokerUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    handle: PublisherHandle,
    events: Sender<NetEvent>,
    incoming: Sender<IncomingMessage>,
    stop: Arc<Stop>,
    /// Connection generation; kept across restarts of the loop so stale events stay stale.
    gen: AtomicU64,
}

impl NetLoop {
    fn run(self) {
        while !self.stop.is_set() {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("mqtt: cannot start the network runtime: {e}");
                    return;
                }
            };
            // A panic inside the MQTT client must not silence the device for good: report the
            // connection lost and start over, as after any other failure.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(self.run_async())
            }));
            if run.is_ok() {
                return;
            }
            drop(rt);
            let error = "internal error in the MQTT client (panic); restarting it".to_string();
            log::error!("mqtt: {error}");
            self.send(NetEvent::Disconnected {
                gen: self.gen.load(Ordering::SeqCst),
                error,
                was_connected: true,
            });
            std::thread::sleep(Duration::from_millis(self.cfg.reconnect_max_ms));
        }
    }

    async fn run_async(&self) {
        let min = Duration::from_millis(self.cfg.reconnect_min_ms);
        let max = Duration::from_millis(self.cfg.reconnect_max_ms);
        let mut backoff = min;
        while !self.stop.is_set() {
            let gen = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
            let will_payload = self
                .handle
                .status_payload(DeviceState::Offline, Some("connection lost"));
            let session = match self.cfg.protocol {
                Protocol::V311 => self.session_v311(gen, will_payload).await,
                Protocol::V5 => self.session_v5(gen, will_payload).await,
            };
            let Some((error, connected)) = session else {
                return; // stopped
            };
            self.send(NetEvent::Disconnected {
                gen,
                error: error.clone(),
                was_connected: connected,
            });
            if connected {
                backoff = min;
                log::warn!("mqtt: disconnected from {}: {error}", self.url);
            } else {
                log::debug!("mqtt: cannot connect to {}: {error}", self.url);
            }
            // Jitter spreads a fleet's reconnects after a broker restart.
            let jitter = Duration::from_millis(now_ms() % (backoff.as_millis() as u64 / 4 + 1));
            tokio::select! {
                _ = tokio::time::sleep(backoff + jitter) => {}
                _ = self.stop.notify.notified() => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// One MQTT 3.1.1 connection, from connecting to losing it. `None` when stopped; otherwise
    /// why it ended and whether it had been established.
    async fn session_v311(&self, gen: u64, will_payload: Vec<u8>) -> Option<(String, bool)> {
        let will = LastWill::new(
            self.handle.topics().status(),
            will_payload,
            rumqttc::QoS::AtLeastOnce,
            true,
        );
        let opts = mqtt_options(&self.cfg, &self.url, self.tls.clone(), Some(will), false);
        let (client, mut el) = AsyncClient::new(opts, self.cfg.inflight as usize + 16);
        set_timeout(&mut el, self.cfg.connect_timeout_s);
        let mut connected = false;
        loop {
            let ev = tokio::select! {
                biased;
                _ = self.stop.notify.notified() => {
                    if self.stop.is_set() { return None; }
                    continue;
                }
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    self.send(NetEvent::Connected {
                        gen,
                        client: Client::V311(client.clone()),
                    });
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    self.send(NetEvent::Published { gen, pkid })
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => self.send(NetEvent::Acked {
                    gen,
                    pkid: ack.pkid,
                    refused: None,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => self.incoming(IncomingMessage {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    response_topic: None,
                    correlation: None,
                }),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    self.send(NetEvent::DisconnectSent { gen })
                }
                Ok(_) => {}
                Err(e) => {
                    return Some((
                        describe_connection_error(&e, &self.cfg, &self.url),
                        connected,
                    ))
                }
            }
        }
    }

    /// The same over MQTT v5, which adds reason codes on PUBACK and request/response properties.
    async fn session_v5(&self, gen: u64, will_payload: Vec<u8>) -> Option<(String, bool)> {
        use rumqttc::v5::mqttbytes::v5::{LastWill as Will5, Packet as P5, PubAckReason};
        use rumqttc::v5::{AsyncClient as Client5, Event as Event5};

        let will = Will5::new(
            self.handle.topics().status(),
            will_payload,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            None,
        );
        let opts = mqtt_options_v5(&self.cfg, &self.url, self.tls.clone(), Some(will), false);
        let (client, mut el) = Client5::new(opts, self.cfg.inflight as usize + 16);
        let mut connected = false;
        loop {
            let ev = tokio::select! {
                biased;
                _ = self.stop.notify.notified() => {
                    if self.stop.is_set() { return None; }
                    continue;
                }
                ev = el.poll() => ev,
            };
            match ev {
                Ok(Event5::Incoming(P5::ConnAck(_))) => {
                    connected = true;
                    self.send(NetEvent::Connected {
                        gen,
                        client: Client::V5(client.clone()),
                    });
                }
                Ok(Event5::Outgoing(Outgoing::Publish(pkid))) => {
                    self.send(NetEvent::Published { gen, pkid })
                }
                Ok(Event5::Incoming(P5::PubAck(ack))) => {
                    let refused = match ack.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                        other => Some(format!(
                            "{other:?}{}",
                            ack.properties
                                .and_then(|p| p.reason_string)
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        )),
                    };
                    self.send(NetEvent::Acked {
                        gen,
                        pkid: ack.pkid,
                        refused,
                    })
                }
                Ok(Event5::Incoming(P5::Publish(p))) => {
                    let props = p.properties.unwrap_or_default();
                    self.incoming(IncomingMessage {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        response_topic: props.response_topic,
                        correlation: props.correlation_data.map(|c| c.to_vec()),
                    })
                }
                Ok(Event5::Outgoing(Outgoing::Disconnect)) => {
                    self.send(NetEvent::DisconnectSent { gen })
                }
                Ok(_) => {}
                Err(e) => {
                    return Some((
                        describe_error_text(&e.to_string(), &self.cfg, &self.url),
                        connected,
                    ))
                }
            }
        }
    }

    fn incoming(&self, msg: IncomingMessage) {
        if let Err(TrySendError::Full(_)) = self.incoming.try_send(msg) {
            if let Ok(mut st) = self.handle.shared.stats.lock() {
                st.incoming_dropped += 1;
            }
        }
    }

    fn send(&self, ev: NetEvent) {
        // The spool thread outlives this one except at shutdown, when nothing is listening.
        let _ = self.events.send(ev);
    }
}

/// The connection's request handle, for either protocol version.
#[derive(Clone)]
enum Client {
    V311(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    fn try_publish(
        &self,
        topic: String,
        qos: Qos,
        retain: bool,
        payload: Vec<u8>,
        correlation: Option<Vec<u8>>,
    ) -> bool {
        match self {
            Client::V311(c) => c.try_publish(topic, qos.into(), retain, payload).is_ok(),
            Client::V5(c) => {
                use rumqttc::v5::mqttbytes::{v5::PublishProperties, QoS as Q5};
                let q = match qos {
                    Qos::AtMostOnce => Q5::AtMostOnce,
                    Qos::AtLeastOnce => Q5::AtLeastOnce,
                };
                match correlation {
                    Some(c5) => {
                        let props = PublishProperties {
                            correlation_data: Some(c5.into()),
                            ..Default::default()
                        };
                        c.try_publish_with_properties(topic, q, retain, payload, props)
                            .is_ok()
                    }
                    None => c.try_publish(topic, q, retain, payload).is_ok(),
                }
            }
        }
    }

    /// QoS 0: a command missed while offline is better lost than run late, and the broker then
    /// never holds an over-sized command for re-delivery.
    fn try_subscribe_qos0(&self, filter: String) -> bool {
        match self {
            Client::V311(c) => c.try_subscribe(filter, rumqttc::QoS::AtMostOnce).is_ok(),
            Client::V5(c) => c
                .try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtMostOnce)
                .is_ok(),
        }
    }

    fn try_disconnect(&self) -> bool {
        match self {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

fn mqtt_options_v5(
    cfg: &MqttConfig,
    url: &BrokerUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    will: Option<rumqttc::v5::mqttbytes::v5::LastWill>,
    clean: bool,
) -> rumqttc::v5::MqttOptions {
    let id = if clean {
        format!("{}-probe-{}", cfg.client_id(), std::process::id())
    } else {
        cfg.client_id()
    };
    let mut o = rumqttc::v5::MqttOptions::new(id, url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(1)));
    o.set_clean_start(clean);
    o.set_connection_timeout(cfg.connect_timeout_s.max(1));
    if !clean {
        // In v5 a session ends with the connection unless it is given an expiry.
        o.set_session_expiry_interval(Some(cfg.session_expiry_s));
    }
    // Announced to the broker, which then discards larger messages instead of sending them.
    o.set_max_packet_size(Some(cfg.max_incoming_bytes.max(1024) as u32));
    o.set_outgoing_inflight_upper_limit(cfg.inflight.saturating_add(8));
    if let Some(u) = &cfg.username {
        o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(w) = will {
        o.set_last_will(w);
    }
    if let Some(t) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(t)));
    }
    o
}

fn set_timeout(el: &mut EventLoop, secs: u64) {
    let mut n = el.network_options();
    n.set_connection_timeout(secs.max(1));
    el.set_network_options(n);
}

fn mqtt_options(
    cfg: &MqttConfig,
    url: &BrokerUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    will: Option<LastWill>,
    clean: bool,
) -> MqttOptions {
    let id = if clean {
        format!("{}-probe-{}", cfg.client_id(), std::process::id())
    } else {
        cfg.client_id()
    };
    let mut o = MqttOptions::new(id, url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(1)));
    o.set_clean_session(clean);
    let out_max = cfg.spool.max_message_bytes as usize + (u16::MAX as usize) + 64;
    o.set_max_packet_size(cfg.max_incoming_bytes.max(1024), out_max);
    o.set_inflight(cfg.inflight.saturating_add(8));
    if let Some(u) = &cfg.username {
        o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(w) = will {
        o.set_last_will(w);
    }
    if let Some(t) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(t)));
    }
    o
}

/// Builds the rustls client configuration from the CA file and optional client certificate.
pub fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // rumqttc is built without a crypto provider; ring is the one this crate ships.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = cfg
        .ca_file
        .as_ref()
        .ok_or_else(|| Error::Other("mqtt.ca_file: mqtts:// needs a CA file".into()))?;
    let pem_err = |p: &PathBuf, what: &str, e: &dyn std::fmt::Display| Error::Config {
        path: p.clone(),
        reason: format!("{what}: {e}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| pem_err(ca, "reading CA certificates", &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(ca, "reading CA certificates", &e))?;
    if certs.is_empty() {
        return Err(pem_err(ca, "CA file", &"no PEM certificates in it"));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| pem_err(ca, "CA certificate", &e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Other(format!("mqtt TLS: {e}")))?
    .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| pem_err(cert, "reading client certificate", &e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| pem_err(cert, "reading client certificate", &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_err(key, "reading client key", &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| pem_err(cert, "client certificate/key", &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Turns rumqttc's error into one line that says what to check.
fn describe_connection_error(e: &ConnectionError, cfg: &MqttConfig, url: &BrokerUrl) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "broker {url} refused the connection ({code:?}): check username/password and client id"
        ),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot reach {url}: connection refused (is the broker running?)")
        }
        _ => describe_error_text(&e.to_string(), cfg, url),
    }
}

/// The same from the error's text (rumqttc's v5 errors are a separate type with the same words).
fn describe_error_text(raw: &str, cfg: &MqttConfig, url: &BrokerUrl) -> String {
    let tls = raw.starts_with("TLS") || raw.contains("Tls");
    if tls && raw.to_ascii_lowercase().contains("certificate") {
        let ca = cfg
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "TLS handshake with {url} failed: {raw} (is the broker's certificate signed by the CA in {ca}, and issued for {}?)",
            url.host
        )
    } else if tls {
        format!("TLS handshake with {url} failed: {raw}")
    } else if raw.starts_with("I/O") && raw.contains("refused") {
        format!("cannot reach {url}: connection refused (is the broker running?)")
    } else if raw.starts_with("Connection refused") {
        format!(
            "broker {url} refused the connection ({raw}): check username/password and client id"
        )
    } else if raw.contains("Timeout") || raw.contains("timeout") || raw.contains("timed out") {
        format!("no answer from {url} ({raw})")
    } else {
        format!("{url}: {raw}")
    }
}

/// Connects once (clean session, its own client id, no last will) and disconnects: for
/// `lookout mqtt check`-style diagnostics and tests. The error says what to fix.
pub fn probe(cfg: &MqttConfig, timeout: Duration) -> Result<()> {
    let url = cfg.validate()?;
    let tls = if url.tls {
        Some(Arc::new(tls_config(cfg)?))
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("mqtt: runtime: {e}")))?;
    if cfg.protocol == Protocol::V5 {
        return rt.block_on(probe_v5(cfg, &url, tls, timeout));
    }
    let opts = mqtt_options(cfg, &url, tls, None, true);
    rt.block_on(async {
        let (client, mut el) = AsyncClient::new(opts, 4);
        set_timeout(&mut el, timeout.as_secs().max(1));
        let res = tokio::time::timeout(timeout, async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(describe_connection_error(&e, cfg, &url)),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {url} within {timeout:?}")));
        if res.is_ok() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
        }
        res.map_err(|e| Error::Other(format!("mqtt: {e}")))
    })
}

async fn probe_v5(
    cfg: &MqttConfig,
    url: &BrokerUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<()> {
    use rumqttc::v5::{mqttbytes::v5::Packet as P5, AsyncClient as Client5, Event as Event5};
    let mut opts = mqtt_options_v5(cfg, url, tls, None, true);
    opts.set_connection_timeout(timeout.as_secs().max(1));
    let (client, mut el) = Client5::new(opts, 4);
    let res = tokio::time::timeout(timeout, async {
        loop {
            match el.poll().await {
                Ok(Event5::Incoming(P5::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(describe_error_text(&e.to_string(), cfg, url)),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer from {url} within {timeout:?}")));
    if res.is_ok() {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    }
    res.map_err(|e| Error::Other(format!("mqtt: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Spool thread

enum Slot {
    Spool(u64),
    /// Status messages: not in the spool, re-sent on every connection anyway.
    Untracked,
}

struct Conn {
    gen: u64,
    client: Client,
    /// Handed to rumqttc, not yet reported written; rumqttc writes them in this order.
    sent: VecDeque<Slot>,
    /// Written QoS 1 messages by packet id, awaiting PUBACK (`None`: untracked).
    inflight: HashMap<u16, Option<u64>>,
    /// Next spool key to hand over.
    cursor: u64,
    /// Cost of each spool message handed over and not yet delivered, and their sum.
    sizes: HashMap<u64, u64>,
    bytes: u64,
}

impl Conn {
    fn used(&self) -> usize {
        self.sent.len() + self.inflight.len()
    }

    fn delivered(&mut self, key: u64) {
        if let Some(b) = self.sizes.remove(&key) {
            self.bytes -= b;
        }
    }

    /// The oldest spool message this connection handed over and the broker has not acknowledged.
    fn head(&self) -> Option<u64> {
        let a = self.inflight.values().flatten().min().copied();
        let b = self.sent.iter().find_map(|s| match s {
            Slot::Spool(k) => Some(*k),
            Slot::Untracked => None,
        });
        a.into_iter().chain(b).min()
    }
}

struct SpoolSender {
    spool: Spool,
    handle: PublisherHandle,
    window: usize,
    commands: bool,
    conn: Option<Conn>,
    deletes: Vec<u64>,
    /// Consecutive dropped connections during which a key was the oldest unacknowledged one.
    attempts: HashMap<u64, u32>,
    drain_until: Option<Instant>,
    stop: Arc<Stop>,
}

impl SpoolSender {
    fn run(mut self, staging: Receiver<SpoolMessage>, net: Receiver<NetEvent>, ctl: Receiver<Ctl>) {
        let mut batch = Vec::new();
        let mut net = net;
        loop {
            crossbeam_channel::select! {
                recv(staging) -> m => if let Ok(m) = m { batch.push(m) },
                recv(net) -> e => match e {
                    Ok(e) => self.on_net(e),
                    // The net thread is gone (it could not start its runtime): keep spooling,
                    // without spinning on a closed channel.
                    Err(_) => {
                        self.conn = None;
                        net = crossbeam_channel::never();
                    }
                },
                recv(ctl) -> c => match c {
                    Ok(Ctl::Shutdown { drain_until }) => self.drain_until = Some(drain_until),
                    Err(_) => self.drain_until = Some(Instant::now()),
                },
                default(Duration::from_millis(250)) => {}
            }
            while batch.len() < BATCH {
                match staging.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            while let Ok(e) = net.try_recv() {
                self.on_net(e);
            }
            let taken = batch.len() as u64;
            let taken_bytes: u64 = batch.iter().map(SpoolMessage::cost).sum();
            self.store(std::mem::take(&mut batch));
            self.flush_deletes();
            self.fill();
            self.update_stats();
            // Only now, with spool depth published, so `flush()` never sees an empty staging
            // queue and a stale empty spool at the same time.
            self.handle
                .shared
                .staged
                .fetch_sub(taken, Ordering::Relaxed);
            self.handle
                .shared
                .staged_bytes
                .fetch_sub(taken_bytes, Ordering::Relaxed);

            if let Some(until) = self.drain_until {
                let idle = staging.is_empty() && self.spool.is_empty();
                if idle || Instant::now() >= until {
                    // Whatever arrived after shutdown began still goes to disk.
                    let rest: Vec<_> = staging.try_iter().collect();
                    let (n, bytes) = (rest.len() as u64, rest.iter().map(SpoolMessage::cost).sum());
                    self.store(rest);
                    self.handle.shared.staged.fetch_sub(n, Ordering::Relaxed);
                    self.handle
                        .shared
                        .staged_bytes
                        .fetch_sub(bytes, Ordering::Relaxed);
                    self.say_goodbye(&net);
                    self.update_stats();
                    self.stop.set();
                    return;
                }
            }
        }
    }

    fn store(&mut self, batch: Vec<SpoolMessage>) {
        if batch.is_empty() {
            return;
        }
        let classes: Vec<MessageClass> = batch.iter().map(|m| m.class).collect();
        match self.spool.push_batch(batch) {
            Ok(adm) => {
                for (a, c) in adm.iter().zip(classes) {
                    if let Admission::Refused(why) = a {
                        if c == MessageClass::Alert {
                            log::error!("mqtt: alert dropped: {why}");
                        } else {
                            log::debug!("mqtt: {c} message dropped: {why}");
                        }
                    }
                }
            }
            Err(e) => {
                log::error!(
                    "mqtt: {} messages lost, spool write failed: {e}",
                    classes.len()
                );
                for c in classes {
                    self.spool.count_drop(c);
                }
            }
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected { gen, client } => {
                let mut conn = Conn {
                    gen,
                    client,
                    sent: VecDeque::new(),
                    inflight: HashMap::new(),
                    cursor: 0,
                    sizes: HashMap::new(),
                    bytes: 0,
                };
                let status = self.handle.status_payload(DeviceState::Online, None);
                let topic = self.handle.topics().status();
                if conn
                    .client
                    .try_publish(topic, Qos::AtLeastOnce, true, status, None)
                {
                    conn.sent.push_back(Slot::Untracked);
                }
                if self.commands {
                    let filter = self.handle.topics().commands_filter();
                    if !conn.client.try_subscribe_qos0(filter) {
                        log::warn!("mqtt: cannot subscribe to commands");
                    }
                }
                self.conn = Some(conn);
                if let Ok(mut st) = self.handle.shared.stats.lock() {
                    if st.connects > 0 {
                        st.reconnects += 1;
                    }
                    st.connects += 1;
                    st.connected = true;
                    st.last_error = None;
                }
                log::info!("mqtt: connected");
            }
            NetEvent::Published { gen, pkid } => {
                let Some(conn) = self.conn.as_mut().filter(|c| c.gen == gen) else {
                    return;
                };
                match conn.sent.pop_front() {
                    Some(Slot::Spool(key)) if pkid == 0 => {
                        conn.delivered(key);
                        self.deletes.push(key);
                        self.attempts.remove(&key);
                    }
                    Some(Slot::Spool(key)) => {
                        conn.inflight.insert(pkid, Some(key));
                    }
                    Some(Slot::Untracked) => {
                        if pkid != 0 {
                            conn.inflight.insert(pkid, None);
                        }
                    }
                    None => log::warn!("mqtt: publish {pkid} written that was never queued"),
                }
            }
            NetEvent::Acked { gen, pkid, refused } => {
                let Some(conn) = self.conn.as_mut().filter(|c| c.gen == gen) else {
                    return;
                };
                if let Some(Some(key)) = conn.inflight.remove(&pkid) {
                    conn.delivered(key);
                    self.attempts.remove(&key);
                    match refused {
                        None => self.deletes.push(key),
                        // Sending it again would be refused again: drop it, loudly.
                        Some(why) => self.refused(key, &why),
                    }
                }
            }
            NetEvent::DisconnectSent { .. } => {}
            NetEvent::Disconnected {
                gen,
                error,
                was_connected,
            } => {
                if let Some(conn) = self.conn.take_if(|c| c.gen == gen) {
                    if let Some(head) = conn.head() {
                        self.charge(head);
                    }
                }
                if let Ok(mut st) = self.handle.shared.stats.lock() {
                    st.connected = false;
                    st.last_error = Some(error);
                }
                let _ = was_connected;
            }
        }
    }

    /// Counts a dropped connection against the message at the head of the queue; see
    /// [`POISON_ATTEMPTS`].
    fn charge(&mut self, key: u64) {
        let n = self.attempts.entry(key).or_insert(0);
        *n += 1;
        if *n < POISON_ATTEMPTS {
            return;
        }
        self.attempts.remove(&key);
        let Ok(found) = self.spool.peek(key, 1) else {
            return;
        };
        if let Some((k, m)) = found.into_iter().next().filter(|(k, _)| *k == key) {
            if m.class == MessageClass::Alert {
                log::error!(
                    "mqtt: alert {k} on {} was in flight for {POISON_ATTEMPTS} dropped connections; keeping it (alerts are never dropped)",
                    m.topic
                );
                return;
            }
            log::error!(
                "mqtt: dropping {} message on {} ({} bytes): the broker dropped the connection {POISON_ATTEMPTS} times while it was in flight",
                m.class,
                m.topic,
                m.payload.len()
            );
            if self.spool.remove(&[k], true).is_ok() {
                self.spool.count_drop(m.class);
            }
        }
    }

    /// A message the broker acknowledged with an error reason (MQTT v5): not authorised, quota
    /// exceeded, invalid topic... Re-sending cannot help, so it leaves the spool and is counted.
    fn refused(&mut self, key: u64, why: &str) {
        let found = self
            .spool
            .peek(key, 1)
            .ok()
            .and_then(|v| v.into_iter().next());
        if let Some((k, m)) = found.filter(|(k, _)| *k == key) {
            log::error!(
                "mqtt: broker refused {} message on {}: {why}",
                m.class,
                m.topic
            );
            if self.spool.remove(&[k], true).is_ok() {
                self.spool.count_drop(m.class);
            }
        }
        if let Ok(mut st) = self.handle.shared.stats.lock() {
            st.last_error = Some(format!("broker refused a message: {why}"));
        }
    }

    fn flush_deletes(&mut self) {
        if self.deletes.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.deletes);
        match self.spool.remove(&keys, false) {
            Ok(_) => {
                if let Ok(mut st) = self.handle.shared.stats.lock() {
                    st.acked += keys.len() as u64;
                }
            }
            // They stay in the spool and go out again: a duplicate, not a loss.
            Err(e) => log::warn!("mqtt: {e}"),
        }
    }

    fn fill(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut handed = 0u64;
        'outer: while conn.used() < self.window && (conn.bytes < INFLIGHT_BYTES || conn.used() == 0)
        {
            let budget = INFLIGHT_BYTES.saturating_sub(conn.bytes);
            let batch =
                match self
                    .spool
                    .peek_bounded(conn.cursor, self.window - conn.used(), budget)
                {
                    Ok(b) => b,
                    Err(e) => {
                        log::error!("mqtt: {e}");
                        break;
                    }
                };
            if batch.is_empty() {
                break;
            }
            for (key, m) in batch {
                if !rumqttc::valid_topic(&m.topic) {
                    // publish() validates topics; this guards a spool written by other code.
                    log::error!(
                        "mqtt: discarding spooled message with invalid topic {:?}",
                        m.topic
                    );
                    self.deletes.push(key);
                    conn.cursor = key + 1;
                    continue;
                }
                let cost = m.cost();
                if !conn
                    .client
                    .try_publish(m.topic, m.qos, m.retain, m.payload, m.correlation)
                {
                    // Request queue full or the connection just went away: its events follow.
                    break 'outer;
                }
                conn.sizes.insert(key, cost);
                conn.bytes += cost;
                conn.sent.push_back(Slot::Spool(key));
                conn.cursor = key + 1;
                handed += 1;
            }
        }
        if handed > 0 {
            if let Ok(mut st) = self.handle.shared.stats.lock() {
                st.sent += handed;
            }
        }
    }

    /// Announces a clean `offline` and disconnects, waiting briefly for both to be written.
    fn say_goodbye(&mut self, net: &Receiver<NetEvent>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let gen = conn.gen;
        let payload = self
            .handle
            .status_payload(DeviceState::Offline, Some("shutdown"));
        if conn.client.try_publish(
            self.handle.topics().status(),
            Qos::AtLeastOnce,
            true,
            payload,
            None,
        ) {
            conn.sent.push_back(Slot::Untracked);
        }
        if !conn.client.try_disconnect() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(ev) = net.recv_deadline(deadline) {
            match ev {
                NetEvent::DisconnectSent { gen: g } | NetEvent::Disconnected { gen: g, .. }
                    if g == gen =>
                {
                    break
                }
                other => self.on_net(other),
            }
        }
        self.flush_deletes();
    }

    fn update_stats(&mut self) {
        let (depth, bytes) = (self.spool.len(), self.spool.bytes());
        let by_class = self.spool.depth_by_class();
        let dropped = self.spool.dropped_by_class();
        if let Ok(mut st) = self.handle.shared.stats.lock() {
            st.spool_depth = depth;
            st.spool_bytes = bytes;
            st.depth_by_class = by_class;
            st.dropped = dropped;
        }
        // Keys below the spool's head were delivered or evicted.
        if let Some(first) = self.spool.first_key() {
            self.attempts.retain(|k, _| *k >= first);
        } else {
            self.attempts.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtt://example.org").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "example.org", 1883)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.2:9999/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.2", 9999));
        let u = BrokerUrl::parse("mqtts://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8883));
        assert_eq!(u.to_string(), "mqtts://[::1]:8883");
        for bad in [
            "example.org",
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/x",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_validation_names_the_key() {
        let mut c = MqttConfig {
            broker: "mqtts://h".into(),
            ..MqttConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("ca_file"));
        c.broker = "mqtt://h".into();
        c.keep_alive_s = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("keep_alive_s"));
        c.keep_alive_s = 5;
        c.device = "a/b".into();
        assert!(c.validate().is_err());
        let parsed: MqttConfig = toml::from_str(
            "broker = \"mqtt://b:1\"\ndevice = \"porch\"\n[spool]\nmax_messages = 5\n[classes.scene]\nretain = true\n",
        )
        .unwrap();
        assert_eq!(parsed.spool.max_messages, 5);
        assert!(parsed.classes.policy(MessageClass::Scene).retain);
        assert!(toml::from_str::<MqttConfig>("brokr = \"x\"").is_err());
    }

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
            p.event(EventBody {
                event: format!("e{i}"),
                ..Default::default()
            })
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

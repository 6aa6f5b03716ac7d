//! [`PublisherHandle`]: the cheap, cloneable handle callers publish through. Publishing only
//! puts a message on a bounded staging queue and returns — it never waits for the disk or the
//! network — so the frame loop can call it on every frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::Serialize;

use super::config::MqttConfig;
use crate::error::Result;
use crate::mqtt::error::MqttError;
use crate::mqtt::spool::SpoolMessage;
use crate::mqtt::stats::{PublisherStats, StatsBody};
use crate::mqtt::topics::{
    now_ms, ClassPolicies, DeviceState, Envelope, IdGen, MessageClass, Qos, ReplyBody, StatusBody,
    Topics,
};

/// Messages accepted from callers but not yet in the spool, at most. A quarter of it is kept for
/// alerts so a flood of detections cannot crowd one out.
pub(super) const STAGING_CAP: usize = 4096;
const STAGING_MAX_BYTES: u64 = 32 << 20;

/// What every handle, the spool sender and the net thread share.
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
///
/// The publishing methods return the crate-wide [`crate::Error`] (converted from
/// [`MqttError`], message unchanged) because the pipeline's sink matches on that type.
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
    pub(super) fn new(
        cfg: &MqttConfig,
        topics: Topics,
        staging_tx: Sender<SpoolMessage>,
    ) -> PublisherHandle {
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
        PublisherHandle { shared }
    }

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
        Ok(self.stage(class, topic.into(), payload, qos, retain, None)?)
    }

    /// Puts one message on the staging queue, or says why not (see [`MqttError::Payload`] and
    /// [`MqttError::Dropped`]).
    fn stage(
        &self,
        class: MessageClass,
        topic: String,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
        correlation: Option<Vec<u8>>,
    ) -> std::result::Result<(), MqttError> {
        let s = &self.shared;
        let refuse = |topic: String, why: &str, lasting: bool| {
            s.staging_dropped[class.index()].fetch_add(1, Ordering::Relaxed);
            let reason = why.to_string();
            Err(if lasting {
                MqttError::Payload { topic, reason }
            } else {
                MqttError::Dropped {
                    class: class.name(),
                    topic,
                    reason,
                }
            })
        };
        if topic.is_empty() || topic.len() > u16::MAX as usize || !rumqttc::valid_topic(&topic) {
            return Err(MqttError::Payload {
                topic,
                reason: "not a valid topic name".into(),
            });
        }
        if s.closed.load(Ordering::Relaxed) {
            return refuse(topic, "publisher is shut down", false);
        }
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
        if cost > s.max_message_bytes {
            return refuse(msg.topic, "larger than spool.max_message_bytes", true);
        }
        if class != MessageClass::Alert
            && (s.staging_tx.len() >= STAGING_CAP * 3 / 4
                || s.staged_bytes.load(Ordering::Relaxed) + cost > STAGING_MAX_BYTES)
        {
            return refuse(msg.topic, "staging queue full (spool writer behind)", false);
        }
        s.staged.fetch_add(1, Ordering::Relaxed);
        s.staged_bytes.fetch_add(cost, Ordering::Relaxed);
        match s.staging_tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                s.staged.fetch_sub(1, Ordering::Relaxed);
                s.staged_bytes.fetch_sub(cost, Ordering::Relaxed);
                refuse(
                    e.into_inner().topic,
                    "staging queue full (spool writer behind)",
                    false,
                )
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

    /// An alert body: `lookout run` publishes `scene::Alert` (see `docs/mqtt.md`); any
    /// serialisable object goes in the envelope as it is.
    pub fn alert<T: Serialize>(&self, body: T) -> Result<String> {
        self.publish_json(MessageClass::Alert, self.topics().alerts(), body)
    }

    pub fn event<T: Serialize>(&self, body: T) -> Result<String> {
        self.publish_json(MessageClass::Event, self.topics().events(), body)
    }

    pub fn scene<T: Serialize>(&self, body: T) -> Result<String> {
        self.publish_json(MessageClass::Scene, self.topics().scene(), body)
    }

    pub fn detections<T: Serialize>(&self, body: T) -> Result<String> {
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
        self.stage(
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

    /// Waits until everything published so far has left the in-memory staging queue for the
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

    /// Waits until everything published so far has been acknowledged by the broker, or until
    /// `timeout`. Returns whether the spool drained.
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

    /// The retained `status` payload: `online` on connecting, `offline` as the last will and
    /// on a clean shutdown.
    pub(super) fn status_payload(&self, state: DeviceState, reason: Option<&str>) -> Vec<u8> {
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

    /// Updates the counters (the spool sender and the net thread keep them).
    pub(super) fn with_stats(&self, f: impl FnOnce(&mut PublisherStats)) {
        if let Ok(mut st) = self.shared.stats.lock() {
            f(&mut st);
        }
    }

    /// `n` messages of `bytes` in all left the staging queue for the spool.
    pub(super) fn unstage(&self, n: u64, bytes: u64) {
        self.shared.staged.fetch_sub(n, Ordering::Relaxed);
        self.shared.staged_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// From now on every publish is refused: the publisher is shutting down.
    pub(super) fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }
}

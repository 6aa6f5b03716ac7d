//! The MQTT topic schema and the envelope every JSON payload is published in.
//!
//! Everything a device publishes lives under `<topic_prefix>/<device>/` (`lookout/<device>/` by
//! default); see `docs/mqtt.md` for the table a subscriber reads. The transport's own bodies live
//! here (status, replies; the `stats` counters in [`super::stats`]). The bodies of alerts, events,
//! scene descriptions and detections are the pipeline's records themselves, published as they
//! are: the transport sits below the code that makes them, so it takes any serialisable body, and
//! the typed payloads (`Envelope<record>`) are named where the records are known, in
//! `pipeline::payload`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{MqttError, Result};

/// Version of the payload envelope; bumped only for changes that break existing subscribers.
/// 2: `ts` in Unix seconds (`f64`) like every other time in a payload (was milliseconds);
/// Frigate-shaped events (one `event_id` per object, `current_zones`, …).
pub const PAYLOAD_VERSION: u32 = 2;

/// The `v` a command may carry. Commands did not change with payload v2, so v1 clients keep
/// working.
pub const COMMAND_VERSION: u32 = 1;

/// Default first topic level (`[mqtt] topic_prefix`).
pub const DEFAULT_ROOT: &str = "lookout";

/// Checks a topic prefix such as `lookout` or `site/lookout`: one or more levels, each a valid
/// [`validate_segment`]. `what` names the config key in the error.
pub fn validate_prefix(what: &str, prefix: &str) -> Result<()> {
    if prefix.len() > 4 * MAX_SEGMENT_LEN {
        return Err(MqttError::Name {
            what: what.to_string(),
            value: prefix.to_string(),
            reason: format!("longer than {} bytes", 4 * MAX_SEGMENT_LEN),
        });
    }
    prefix.split('/').try_for_each(|level| {
        validate_segment(what, level).map_err(|e| match e {
            // Name the whole prefix: `"a/+"`, not just its bad level.
            MqttError::Name { reason, .. } => MqttError::Name {
                what: what.to_string(),
                value: prefix.to_string(),
                reason: format!("level {level:?} {reason}"),
            },
            other => other,
        })
    })
}

/// Longest device id, camera name or request id accepted as a topic level. Brokers accept far
/// longer topics; the limit keeps topics readable and stops a peer from making us allocate.
pub const MAX_SEGMENT_LEN: usize = 128;

/// What a message is, which decides its topic, its default QoS/retain and — when the spool is
/// full — who is dropped first. The derived `Ord` is the priority: `Alert` is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageClass {
    Detections = 0,
    Stats = 1,
    Snapshot = 2,
    Scene = 3,
    /// Replies to commands: a person is usually waiting for them, so they rank just below events.
    Reply = 4,
    Event = 5,
    Alert = 6,
}

impl MessageClass {
    /// Every class, lowest priority first (the order in which the spool evicts).
    pub const ALL: [MessageClass; 7] = [
        MessageClass::Detections,
        MessageClass::Stats,
        MessageClass::Snapshot,
        MessageClass::Scene,
        MessageClass::Reply,
        MessageClass::Event,
        MessageClass::Alert,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: u8) -> Option<MessageClass> {
        MessageClass::ALL.get(i as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageClass::Detections => "detections",
            MessageClass::Stats => "stats",
            MessageClass::Snapshot => "snapshot",
            MessageClass::Scene => "scene",
            MessageClass::Reply => "reply",
            MessageClass::Event => "event",
            MessageClass::Alert => "alert",
        }
    }

    /// QoS and retain used unless the configuration overrides them.
    pub fn default_policy(self) -> ClassPolicy {
        use Qos::*;
        let (qos, retain) = match self {
            MessageClass::Alert | MessageClass::Event | MessageClass::Reply => (AtLeastOnce, false),
            MessageClass::Scene => (AtLeastOnce, false),
            // Retained so a dashboard that connects later shows the last picture at once.
            MessageClass::Snapshot => (AtLeastOnce, true),
            MessageClass::Stats | MessageClass::Detections => (AtMostOnce, false),
        };
        ClassPolicy { qos, retain }
    }
}

impl fmt::Display for MessageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Outgoing QoS. QoS 2 is deliberately absent: the publisher starts a fresh MQTT session state
/// after every reconnect and re-sends from the spool, which would let a broker that still holds a
/// half-finished QoS 2 exchange discard the re-sent message. QoS 1 plus the unique `id` in every
/// payload gives subscribers the same effectively-once result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
}

impl TryFrom<u8> for Qos {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<Self, String> {
        match v {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            2 => Err("QoS 2 is not supported for publishing; use 1 (every payload carries an `id` to de-duplicate)".into()),
            n => Err(format!("QoS must be 0 or 1, got {n}")),
        }
    }
}

impl From<Qos> for u8 {
    fn from(q: Qos) -> u8 {
        q as u8
    }
}

impl From<Qos> for rumqttc::QoS {
    fn from(q: Qos) -> rumqttc::QoS {
        match q {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassPolicy {
    pub qos: Qos,
    pub retain: bool,
}

/// A partial override from the config file, e.g. `[mqtt.classes.scene] retain = true`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassOverride {
    pub qos: Option<Qos>,
    pub retain: Option<bool>,
}

/// Per-class QoS/retain: the defaults of [`MessageClass::default_policy`] with overrides on top.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClassPolicies(pub BTreeMap<MessageClass, ClassOverride>);

impl ClassPolicies {
    pub fn policy(&self, class: MessageClass) -> ClassPolicy {
        let mut p = class.default_policy();
        if let Some(o) = self.0.get(&class) {
            if let Some(q) = o.qos {
                p.qos = q;
            }
            if let Some(r) = o.retain {
                p.retain = r;
            }
        }
        p
    }
}

/// Checks one topic level that came from configuration or from a peer (device id, camera name,
/// request id). Wildcards and `/` would let a value address other topics.
pub fn validate_segment(what: &str, s: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(MqttError::Name {
            what: what.to_string(),
            value: s.to_string(),
            reason: reason.to_string(),
        })
    };
    if s.is_empty() {
        return bad("must not be empty");
    }
    if s.len() > MAX_SEGMENT_LEN {
        return bad(&format!("longer than {MAX_SEGMENT_LEN} bytes"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return bad(&format!("must not contain {c:?}"));
    }
    Ok(())
}

/// The topics of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    device: String,
    prefix: String,
}

impl Topics {
    /// Topics under `lookout/<device>/`.
    pub fn new(device: &str) -> Result<Topics> {
        Topics::with_root(DEFAULT_ROOT, device)
    }

    /// Topics under `<root>/<device>/`; `root` may have several levels (`site/lookout`).
    pub fn with_root(root: &str, device: &str) -> Result<Topics> {
        validate_prefix("topic_prefix", root)?;
        validate_segment("device id", device)?;
        Ok(Topics {
            device: device.to_string(),
            prefix: format!("{root}/{device}"),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// `<root>/<device>`
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Retained plain `online`/`offline` (no JSON): what Home Assistant and most dashboards read
    /// as availability. The last will of the device's second, presence-only connection.
    pub fn availability(&self) -> String {
        format!("{}/availability", self.prefix)
    }
    /// Where a rule's ON/OFF switch is commanded (Home Assistant `switch`).
    pub fn rule_set(&self, rule: &str) -> Result<String> {
        validate_segment("rule name", rule)?;
        Ok(format!("{}/rules/{rule}/set", self.prefix))
    }
    /// Retained `ON`/`OFF`: whether a rule is enabled.
    pub fn rule_state(&self, rule: &str) -> Result<String> {
        validate_segment("rule name", rule)?;
        Ok(format!("{}/rules/{rule}/state", self.prefix))
    }
    /// The filter the device subscribes to for rule switches.
    pub fn rule_set_filter(&self) -> String {
        format!("{}/rules/+/set", self.prefix)
    }
    /// The rule named by a `rules/<rule>/set` topic.
    pub fn rule_set_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/rules/")?
            .strip_suffix("/set")
            .filter(|n| validate_segment("rule name", n).is_ok())
    }
    /// Retained object count (plain integer) in one zone.
    pub fn zone_count(&self, zone: &str) -> Result<String> {
        validate_segment("zone name", zone)?;
        Ok(format!("{}/zones/{zone}/count", self.prefix))
    }
    /// Retained count (plain integer) of objects with one label in the device's view.
    pub fn label_count(&self, label: &str) -> Result<String> {
        validate_segment("label", label)?;
        Ok(format!("{}/labels/{label}/count", self.prefix))
    }

    /// Retained `online`/`offline` status; also the last-will topic.
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }
    pub fn alerts(&self) -> String {
        format!("{}/alerts", self.prefix)
    }
    pub fn scene(&self) -> String {
        format!("{}/scene", self.prefix)
    }
    pub fn detections(&self) -> String {
        format!("{}/detections", self.prefix)
    }
    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }
    /// Retained narrative of the last `[store] summary_every_s` seconds.
    pub fn summary(&self) -> String {
        format!("{}/summary", self.prefix)
    }
    /// Retained JPEG bytes of one camera.
    pub fn snapshot(&self, camera: &str) -> Result<String> {
        validate_segment("camera", camera)?;
        Ok(format!("{}/snapshot/{camera}", self.prefix))
    }
    /// Retained JPEG bytes of the latest alert about a `label` on one camera.
    pub fn snapshot_of(&self, camera: &str, label: &str) -> Result<String> {
        validate_segment("label", label)?;
        Ok(format!("{}/{label}", self.snapshot(camera)?))
    }
    /// Filter the device subscribes to. `#` rather than `+` because command names such as
    /// `rules/enable` span two levels.
    pub fn commands_filter(&self) -> String {
        format!("{}/cmd/#", self.prefix)
    }
    pub fn command(&self, name: &str) -> String {
        format!("{}/cmd/{name}", self.prefix)
    }
    pub fn reply(&self, request_id: &str) -> Result<String> {
        validate_segment("request id", request_id)?;
        Ok(format!("{}/reply/{request_id}", self.prefix))
    }

    /// The command name of a topic under `cmd/`, e.g. `rules/enable`.
    pub fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("/cmd/")
            .filter(|n| !n.is_empty())
    }

    /// The fixed topic of a class; `None` for snapshots and replies, whose topic needs a name.
    pub fn topic_of(&self, class: MessageClass) -> Option<String> {
        Some(match class {
            MessageClass::Alert => self.alerts(),
            MessageClass::Event => self.events(),
            MessageClass::Scene => self.scene(),
            MessageClass::Stats => self.stats(),
            MessageClass::Detections => self.detections(),
            MessageClass::Snapshot | MessageClass::Reply => return None,
        })
    }
}

/// Seconds since the Unix epoch (UTC), to the microsecond: the envelope's `ts`.
pub fn now_s() -> f64 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as f64)
        .unwrap_or(0.0);
    us / 1e6
}

/// Milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Makes the `id` every payload carries: `<boot>-<seq>`, where `boot` differs between process
/// starts, so ids stay unique across restarts without persisting a counter.
#[derive(Debug)]
pub struct IdGen {
    boot: u64,
    next: AtomicU64,
}

impl IdGen {
    pub fn new() -> IdGen {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Mixing in the pid separates two processes started within the clock's resolution.
        let boot = splitmix64(nanos ^ ((std::process::id() as u64) << 32));
        IdGen {
            boot,
            next: AtomicU64::new(1),
        }
    }

    /// The next (id, seq) pair.
    pub fn next(&self) -> (String, u64) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        (format!("{:016x}-{seq}", self.boot), seq)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new()
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every JSON payload: version, unique id, device, time, and the class's own fields flattened in.
///
/// ```json
/// {"v":2,"id":"5f0c…-17","device":"porch","ts":1767225600.125,"seq":17,"alert_id":"path-entry-2-1",…}
/// ```
///
/// The bodies `lookout run` publishes are the pipeline's own records, so the typed payloads are
/// `Envelope<scene::Alert>`, `Envelope<scene::Event>`, … (named in `pipeline::payload`); they live
/// with the code that makes them because this transport sits below it. Their own ids and times
/// are named so they never collide with the envelope's (`alert_id`, `event_id`, `frame_ts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    /// Unique per message (also across restarts): subscribers de-duplicate QoS 1 re-sends by it.
    pub id: String,
    pub device: String,
    /// Seconds since the Unix epoch (UTC) when the message was made, like every time in a payload.
    pub ts: f64,
    /// Per-process counter; a gap within one `id` prefix means messages were dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub body: T,
}

impl<T> Envelope<T> {
    pub fn new(ids: &IdGen, device: &str, body: T) -> Envelope<T> {
        let (id, seq) = ids.next();
        Envelope {
            v: PAYLOAD_VERSION,
            id,
            device: device.to_string(),
            ts: now_s(),
            seq: Some(seq),
            body,
        }
    }
}

impl<T: Serialize> Envelope<T> {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Online,
    Offline,
}

/// `lookout/<device>/status` (retained). `offline` comes either from a clean shutdown or from
/// the broker as the last will when the connection is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusBody {
    pub state: DeviceState,
    pub version: String,
    pub board: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `lookout/<device>/reply/<request-id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyBody {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_live_under_the_device() {
        let t = Topics::new("porch").unwrap();
        assert_eq!(t.status(), "lookout/porch/status");
        assert_eq!(t.alerts(), "lookout/porch/alerts");
        assert_eq!(t.snapshot("front").unwrap(), "lookout/porch/snapshot/front");
        assert_eq!(
            t.snapshot_of("front", "person").unwrap(),
            "lookout/porch/snapshot/front/person"
        );
        assert!(t.snapshot_of("front", "a/b").is_err());
        assert_eq!(t.reply("r1").unwrap(), "lookout/porch/reply/r1");
        assert_eq!(t.commands_filter(), "lookout/porch/cmd/#");
        assert_eq!(
            t.command_name("lookout/porch/cmd/rules/enable"),
            Some("rules/enable")
        );
        assert_eq!(t.command_name("lookout/porch/cmd/"), None);
        assert_eq!(t.command_name("lookout/other/cmd/ping"), None);
        assert_eq!(t.availability(), "lookout/porch/availability");
        assert_eq!(t.rule_set("path").unwrap(), "lookout/porch/rules/path/set");
        assert_eq!(
            t.rule_set_name("lookout/porch/rules/path/set"),
            Some("path")
        );
        assert_eq!(t.rule_set_name("lookout/porch/rules/a/b/set"), None);
        assert_eq!(t.rule_set_name("lookout/porch/rules//set"), None);
        assert_eq!(
            t.zone_count("path").unwrap(),
            "lookout/porch/zones/path/count"
        );
        assert_eq!(
            t.label_count("person").unwrap(),
            "lookout/porch/labels/person/count"
        );
    }

    #[test]
    fn the_topic_prefix_may_have_levels() {
        let t = Topics::with_root("site/cams", "porch").unwrap();
        assert_eq!(t.status(), "site/cams/porch/status");
        assert_eq!(t.command_name("site/cams/porch/cmd/ping"), Some("ping"));
        for bad in ["", "a//b", "a/+", "#", "/a"] {
            assert!(Topics::with_root(bad, "porch").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_and_slashes_are_refused_in_names() {
        for bad in ["", "a/b", "a+", "#", "x\0y", &"x".repeat(200)] {
            assert!(Topics::new(bad).is_err(), "{bad:?}");
        }
        let t = Topics::new("d").unwrap();
        assert!(t.snapshot("a/b").is_err());
        assert!(t.reply("+").is_err());
    }

    #[test]
    fn priorities_put_alerts_first() {
        assert!(MessageClass::Alert > MessageClass::Event);
        assert!(MessageClass::Event > MessageClass::Scene);
        assert!(MessageClass::Scene > MessageClass::Snapshot);
        assert!(MessageClass::Snapshot > MessageClass::Stats);
        assert!(MessageClass::Stats > MessageClass::Detections);
        for (i, c) in MessageClass::ALL.iter().enumerate() {
            assert_eq!(MessageClass::from_index(i as u8), Some(*c));
        }
    }

    #[test]
    fn policies_merge_overrides() {
        let p: ClassPolicies =
            toml::from_str("scene = { retain = true }\nstats = { qos = 1 }").unwrap();
        assert!(p.policy(MessageClass::Scene).retain);
        assert_eq!(p.policy(MessageClass::Stats).qos, Qos::AtLeastOnce);
        assert_eq!(p.policy(MessageClass::Detections).qos, Qos::AtMostOnce);
        assert!(toml::from_str::<ClassPolicies>("alert = { qos = 2 }").is_err());
    }

    #[test]
    fn envelope_flattens_the_body_and_ids_are_unique() {
        let ids = IdGen::new();
        let a = Envelope::new(
            &ids,
            "porch",
            ReplyBody {
                request_id: "r1".into(),
                command: None,
                ok: true,
                result: None,
                error: None,
            },
        );
        let b = Envelope::new(&ids, "porch", serde_json::json!({}));
        assert_ne!(a.id, b.id);
        let v: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(v["v"], 2);
        assert_eq!(v["device"], "porch");
        assert_eq!(v["request_id"], "r1");
        assert!(v["ts"].as_f64().unwrap() > 1.6e9, "seconds: {v}");
        let back: Envelope<ReplyBody> = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }
}

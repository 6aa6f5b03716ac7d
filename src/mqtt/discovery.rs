//! Home Assistant MQTT discovery: the retained `config` messages that make one lookout device
//! appear in Home Assistant as one device with its entities, without hand-written YAML; and the
//! bookkeeping that empties the configs of entities that are gone (a rule or zone removed
//! between two runs).
//!
//! Configs go to `<discovery_prefix>/<component>/<node_id>/<object_id>/config` (Home Assistant's
//! documented layout). The entities read topics the device publishes anyway (`alerts`, `stats`,
//! `snapshot/<camera>`, `availability`) plus the small retained state topics made for them
//! (`zones/<zone>/count`, `labels/<label>/count`, `rules/<rule>/state`); see
//! `docs/homeassistant.md`. This module only builds and publishes payloads: what the device has
//! (its [`Inventory`]) comes from the pipeline, which knows the config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::publisher::PublisherHandle;
use super::topics::{validate_segment, MessageClass, Qos, Topics};

/// A published-set file larger than this is not ours (or is damaged) and is ignored.
const MAX_STATE_BYTES: u64 = 1 << 20;

/// What a device has, as far as Home Assistant needs to know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub cameras: Vec<String>,
    /// Zone names (the `kind = "zone"` rules).
    pub zones: Vec<String>,
    /// Labels counted per device (the detector's classes).
    pub labels: Vec<String>,
    /// Every rule name (one switch each; also the alert event types).
    pub rules: Vec<String>,
    /// Whether the stats carry `temperature_c`.
    pub temperature: bool,
    /// Shown on the HA device page.
    pub board: String,
    pub version: String,
    /// Whether the device takes commands (`[mqtt] commands`); without them there are no rule
    /// switches and no buttons, which could only do nothing.
    pub commands: bool,
}

/// One discovery message: retained `payload` (JSON) on `topic`.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveryConfig {
    pub topic: String,
    pub payload: Value,
}

/// `name` as a Home Assistant object/node id: ASCII letters, digits, `_` and `-` only.
pub fn object_id(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

/// Builds every config for `inv`. Names that cannot be a topic level (a `/` in a zone name,
/// say) get no entity, and a warning, rather than a topic that addresses something else.
pub fn configs(topics: &Topics, discovery_prefix: &str, inv: &Inventory) -> Vec<DiscoveryConfig> {
    let mut b = Builder::new(topics, discovery_prefix, inv);
    for zone in &inv.zones {
        let Some(state) = usable("zone", zone, topics.zone_count(zone)) else {
            continue;
        };
        b.occupancy_and_count("zone", zone, &state);
    }
    for label in &inv.labels {
        let Some(state) = usable("label", label, topics.label_count(label)) else {
            continue;
        };
        b.occupancy_and_count("label", label, &state);
    }
    for camera in &inv.cameras {
        let Some(image_topic) = usable("camera", camera, topics.snapshot(camera)) else {
            continue;
        };
        b.add(
            "image",
            &format!("snapshot_{camera}"),
            json!({
                "name": format!("{camera} snapshot"),
                "image_topic": image_topic,
                "content_type": "image/jpeg",
            }),
        );
    }
    let switchable: &[String] = if inv.commands { &inv.rules } else { &[] };
    let rules: Vec<(&String, String, String)> = inv
        .rules
        .iter()
        .filter_map(|r| {
            let set = usable("rule", r, topics.rule_set(r))?;
            let state = topics.rule_state(r).ok()?;
            Some((r, set, state))
        })
        .collect();
    if !rules.is_empty() {
        // One event entity for every alert; its event type is the rule that fired, so an
        // automation can pick one rule without a template. `camera` is the rule of the
        // camera-down/recovered alerts (pipeline health), which fire without a configured rule.
        let mut event_types: Vec<&str> = rules.iter().map(|(r, _, _)| r.as_str()).collect();
        if !event_types.contains(&"camera") {
            event_types.push("camera");
        }
        b.add(
            "event",
            "alerts",
            json!({
                "name": "Alert",
                "state_topic": topics.alerts(),
                "event_types": event_types,
                "value_template": concat!(
                    "{{ {'event_type': value_json.rule, 'kind': value_json.get('kind'), ",
                    "'message': value_json.get('message'), 'severity': value_json.get('severity'), ",
                    "'alert_id': value_json.get('alert_id'), 'camera': value_json.get('camera'), ",
                    "'labels': value_json.get('labels'), ",
                    "'verification': value_json.get('verification')} | tojson }}"
                ),
            }),
        );
    }
    for (rule, set, state) in rules.iter().filter(|(r, _, _)| switchable.contains(r)) {
        b.add(
            "switch",
            &format!("rule_{rule}"),
            json!({
                "name": format!("{rule} rule"),
                "command_topic": set,
                "state_topic": state,
                "payload_on": "ON",
                "payload_off": "OFF",
                "entity_category": "config",
                "icon": "mdi:shield-check",
            }),
        );
    }
    let stats = topics.stats();
    let mut diag = |id: &str, name: &str, template: &str, extra: Value| {
        let mut p = json!({
            "name": name,
            "state_topic": stats,
            "value_template": template,
            "state_class": "measurement",
            "entity_category": "diagnostic",
        });
        merge(&mut p, extra);
        b.add("sensor", id, p);
    };
    diag(
        "fps",
        "Frames per second",
        "{{ value_json.pipeline.fps }}",
        json!({"unit_of_measurement": "fps", "suggested_display_precision": 1}),
    );
    diag(
        "inference_ms",
        "Inference time",
        "{{ value_json.pipeline.inference_ms }}",
        json!({"unit_of_measurement": "ms", "device_class": "duration",
               "suggested_display_precision": 0}),
    );
    diag(
        "spool_depth",
        "MQTT spool depth",
        "{{ value_json.mqtt.spool_depth }}",
        json!({"unit_of_measurement": "messages"}),
    );
    if inv.temperature {
        diag(
            "temperature",
            "Board temperature",
            "{{ value_json.pipeline.temperature_c }}",
            json!({"unit_of_measurement": "°C", "device_class": "temperature",
                   "suggested_display_precision": 1}),
        );
    }
    let buttons = [
        ("snapshot", "Take snapshot", "snapshot", "mdi:camera"),
        (
            "describe",
            "Describe scene",
            "describe",
            "mdi:text-box-search",
        ),
    ];
    for (id, name, cmd, icon) in buttons.into_iter().filter(|_| inv.commands) {
        b.add(
            "button",
            id,
            json!({
                "name": name,
                "command_topic": topics.command(cmd),
                "payload_press": "{}",
                "icon": icon,
            }),
        );
    }
    b.out
}

fn usable<E: std::fmt::Display>(
    what: &str,
    name: &str,
    topic: Result<String, E>,
) -> Option<String> {
    match topic {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("discovery: no Home Assistant entity for {what} {name:?}: {e}");
            None
        }
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, extra) {
        a.extend(b);
    }
}

/// Adds what every config shares: ids, the device, availability, origin.
struct Builder<'a> {
    prefix: &'a str,
    node: String,
    device: Value,
    origin: Value,
    availability: String,
    seen: BTreeSet<String>,
    out: Vec<DiscoveryConfig>,
}

impl<'a> Builder<'a> {
    fn new(topics: &Topics, prefix: &'a str, inv: &Inventory) -> Builder<'a> {
        // The topic prefix is part of the node id, so two installations under different
        // prefixes with the same device name stay two HA devices.
        let node = object_id(topics.prefix());
        Builder {
            prefix,
            device: json!({
                "identifiers": [node],
                "name": topics.device(),
                "manufacturer": "lookout",
                "model": format!("lookout edge inference ({})", inv.board),
                "sw_version": inv.version,
            }),
            origin: json!({
                "name": "lookout",
                "sw_version": inv.version,
            }),
            availability: topics.availability(),
            node,
            seen: BTreeSet::new(),
            out: Vec::new(),
        }
    }

    fn occupancy_and_count(&mut self, kind: &str, name: &str, state: &str) {
        self.add(
            "binary_sensor",
            &format!("{kind}_{name}_occupancy"),
            json!({
                "name": format!("{name} occupancy"),
                "state_topic": state,
                "value_template": "{{ 'ON' if (value | int(0)) > 0 else 'OFF' }}",
                "device_class": "occupancy",
            }),
        );
        self.add(
            "sensor",
            &format!("{kind}_{name}_count"),
            json!({
                "name": format!("{name} count"),
                "state_topic": state,
                "state_class": "measurement",
                "unit_of_measurement": "objects",
                "icon": if kind == "zone" { "mdi:vector-polygon" } else { "mdi:counter" },
            }),
        );
    }

    fn add(&mut self, component: &str, id: &str, mut payload: Value) {
        let mut object = object_id(id);
        // Two names that differ only in characters HA does not allow must stay two entities.
        let mut n = 2;
        while !self.seen.insert(format!("{component}/{object}")) {
            object = format!("{}_{n}", object_id(id));
            n += 1;
        }
        let unique = format!("{}_{object}", self.node);
        let mut common = Map::new();
        common.insert("unique_id".into(), unique.clone().into());
        // Predictable entity ids: `binary_sensor.lookout_porch_zone_path_occupancy`.
        common.insert("object_id".into(), unique.into());
        common.insert(
            "availability_topic".into(),
            self.availability.clone().into(),
        );
        common.insert("device".into(), self.device.clone());
        common.insert("origin".into(), self.origin.clone());
        merge(&mut payload, Value::Object(common));
        self.out.push(DiscoveryConfig {
            topic: format!("{}/{component}/{}/{object}/config", self.prefix, self.node),
            payload,
        });
    }
}

/// Where the set of config topics published last time is kept: beside the spool, so a device
/// that keeps its spool also remembers what it announced.
pub fn state_path(spool_path: &Path) -> PathBuf {
    let mut name = spool_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "lookout-spool".into());
    name.push(".discovery.json");
    spool_path.with_file_name(name)
}

/// The config topics published last time (empty when the file is missing, too large or not a
/// JSON list of strings; a damaged file costs at most a stale entity, never a failed start).
pub fn load_published(path: &Path) -> Vec<String> {
    let too_big = std::fs::metadata(path)
        .map(|m| m.len() > MAX_STATE_BYTES)
        .unwrap_or(true);
    if too_big {
        return Vec::new();
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .unwrap_or_default()
}

/// Publishes `configs` (retained, QoS 1) after emptying every topic in `previous` that is not
/// among them, which removes those entities from Home Assistant; then records the new set in
/// `state` (written to a temporary file and renamed, so a crash leaves the old or the new set).
/// With `configs` empty (discovery turned off) everything announced before is removed.
pub fn publish(
    publisher: &PublisherHandle,
    configs: &[DiscoveryConfig],
    previous: &[String],
    state: &Path,
) -> crate::error::Result<usize> {
    let now: BTreeSet<&str> = configs.iter().map(|c| c.topic.as_str()).collect();
    let mut removed = 0;
    for old in previous.iter().filter(|t| !now.contains(t.as_str())) {
        if !valid_config_topic(old) {
            continue;
        }
        publisher.publish_with(
            MessageClass::Event,
            old.clone(),
            Vec::new(),
            Qos::AtLeastOnce,
            true,
        )?;
        removed += 1;
    }
    for c in configs {
        let bytes = serde_json::to_vec(&c.payload).unwrap_or_default();
        publisher.publish_with(
            MessageClass::Event,
            c.topic.clone(),
            bytes,
            Qos::AtLeastOnce,
            true,
        )?;
    }
    let list: Vec<&str> = now.into_iter().collect();
    let tmp = state.with_extension("json.tmp");
    let write = std::fs::write(&tmp, serde_json::to_vec(&list).unwrap_or_default())
        .and_then(|()| std::fs::rename(&tmp, state));
    if let Err(e) = write {
        log::warn!(
            "discovery: cannot record the published configs in {}: {e} (entities removed later will stay in Home Assistant)",
            state.display()
        );
    }
    Ok(removed)
}

/// Only topics shaped like a discovery config are ever emptied: the state file is ours, but
/// a hand-edited one must not make the device clear someone else's retained message.
fn valid_config_topic(t: &str) -> bool {
    let levels: Vec<&str> = t.split('/').collect();
    levels.len() >= 4
        && levels.last() == Some(&"config")
        && levels.iter().all(|l| validate_segment("topic", l).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        Inventory {
            cameras: vec!["plaza".into()],
            zones: vec!["path".into(), "bad/zone".into()],
            labels: vec!["person".into(), "car".into()],
            rules: vec!["path".into(), "lamp post".into()],
            temperature: false,
            board: "rpi5".into(),
            version: "0.1.0".into(),
            commands: true,
        }
    }

    fn by_topic(cs: &[DiscoveryConfig], topic: &str) -> Value {
        cs.iter()
            .find(|c| c.topic == topic)
            .unwrap_or_else(|| {
                panic!(
                    "no {topic} in {:#?}",
                    cs.iter().map(|c| &c.topic).collect::<Vec<_>>()
                )
            })
            .payload
            .clone()
    }

    #[test]
    fn one_device_with_its_entities() {
        let t = Topics::new("porch").unwrap();
        let cs = configs(&t, "homeassistant", &inv());
        let occ = by_topic(
            &cs,
            "homeassistant/binary_sensor/lookout_porch/zone_path_occupancy/config",
        );
        assert_eq!(occ["state_topic"], "lookout/porch/zones/path/count");
        assert_eq!(occ["device_class"], "occupancy");
        assert_eq!(occ["availability_topic"], "lookout/porch/availability");
        assert_eq!(occ["device"]["identifiers"][0], "lookout_porch");
        assert_eq!(occ["unique_id"], "lookout_porch_zone_path_occupancy");
        let sw = by_topic(
            &cs,
            "homeassistant/switch/lookout_porch/rule_lamp_post/config",
        );
        assert_eq!(sw["command_topic"], "lookout/porch/rules/lamp post/set");
        assert_eq!(sw["state_topic"], "lookout/porch/rules/lamp post/state");
        let ev = by_topic(&cs, "homeassistant/event/lookout_porch/alerts/config");
        assert_eq!(ev["event_types"], json!(["path", "lamp post", "camera"]));
        let img = by_topic(
            &cs,
            "homeassistant/image/lookout_porch/snapshot_plaza/config",
        );
        assert_eq!(img["image_topic"], "lookout/porch/snapshot/plaza");
        by_topic(
            &cs,
            "homeassistant/sensor/lookout_porch/label_car_count/config",
        );
        by_topic(&cs, "homeassistant/button/lookout_porch/describe/config");
        // A zone whose name is not a topic level gets no entity; no temperature, no sensor.
        assert!(!cs.iter().any(|c| c.topic.contains("bad")));
        assert!(!cs.iter().any(|c| c.topic.contains("temperature")));
        // Every entity belongs to the same device and has a unique id.
        let ids: BTreeSet<&str> = cs
            .iter()
            .filter_map(|c| c.payload["unique_id"].as_str())
            .collect();
        assert_eq!(ids.len(), cs.len());
        assert!(cs.iter().all(|c| c.payload["device"] == occ["device"]));
    }

    #[test]
    fn without_commands_there_is_nothing_to_press() {
        let t = Topics::new("porch").unwrap();
        let cs = configs(
            &t,
            "homeassistant",
            &Inventory {
                commands: false,
                ..inv()
            },
        );
        assert!(!cs
            .iter()
            .any(|c| c.topic.contains("/switch/") || c.topic.contains("/button/")));
        // The alerts still arrive as events.
        by_topic(&cs, "homeassistant/event/lookout_porch/alerts/config");
    }

    #[test]
    fn names_that_clash_once_sanitised_stay_apart() {
        let t = Topics::with_root("site/cams", "porch").unwrap();
        let inv = Inventory {
            rules: vec!["a b".into(), "a_b".into()],
            ..inv()
        };
        let cs = configs(&t, "ha", &inv);
        let switches: Vec<&str> = cs
            .iter()
            .filter(|c| c.topic.starts_with("ha/switch/"))
            .map(|c| c.topic.as_str())
            .collect();
        assert_eq!(
            switches,
            [
                "ha/switch/site_cams_porch/rule_a_b/config",
                "ha/switch/site_cams_porch/rule_a_b_2/config"
            ]
        );
    }

    #[test]
    fn the_published_set_survives_a_round_trip_and_junk_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool.redb");
        let p = state_path(&spool);
        assert_eq!(p, dir.path().join("spool.redb.discovery.json"));
        assert!(load_published(&p).is_empty());
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load_published(&p).is_empty());
        std::fs::write(&p, br#"["homeassistant/switch/x/y/config"]"#).unwrap();
        assert_eq!(load_published(&p), ["homeassistant/switch/x/y/config"]);
        assert!(valid_config_topic("homeassistant/switch/x/y/config"));
        assert!(!valid_config_topic("lookout/porch/alerts"));
        assert!(!valid_config_topic("homeassistant/+/x/config"));
    }
}

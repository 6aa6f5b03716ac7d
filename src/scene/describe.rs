//! A plain-language description of the scene, built from tracks alone: deterministic and cheap
//! enough to produce every second, for logs, MQTT and as grounding context for a VLM prompt.
//!
//! Positions are thirds of the frame by box centre (left / ahead / right); distance is `near` when
//! the box bottom is low in the frame or the box is tall, which for a camera looking out at
//! roughly head height is a fair proxy for "close to the camera". Changes are computed against the
//! previous description from the same [`Describer`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::SettingError;
use super::text::{capitalise, counted};
use super::ZoneMembership;
use crate::track::Track;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DescribeConfig {
    /// Near when the box bottom is at or below this fraction of the frame height...
    pub near_y: f32,
    /// ...or the box is at least this fraction of the frame height tall.
    pub near_height: f32,
}

impl Default for DescribeConfig {
    fn default() -> Self {
        DescribeConfig {
            near_y: 0.9,
            near_height: 0.45,
        }
    }
}

impl DescribeConfig {
    /// The error names the key, relative to the `[describe]` table.
    pub fn validate(&self) -> Result<(), SettingError> {
        for (key, v) in [("near_y", self.near_y), ("near_height", self.near_height)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(SettingError {
                    table: "describe",
                    key,
                    reason: format!("{v} is outside (0, 1]"),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Left,
    Ahead,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    Near,
    Far,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    pub track_id: u64,
    pub label: String,
    pub position: Position,
    pub distance: Distance,
    pub zones: Vec<String>,
    /// Text read on the object (`[ocr]`), when there is some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// New in view.
    Appeared,
    /// Entered a zone.
    Entered,
    /// Left a zone (still in view).
    Exited,
    /// Went from far to near.
    Approached,
    /// Went from near to far.
    Receded,
    /// Gone from view.
    Left,
}

/// One line of "what changed", grouping objects of one label that did the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub label: String,
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub track_ids: Vec<u64>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneDescription {
    /// The camera described (set by the frame loop; empty from a bare [`Describer`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub camera: String,
    /// The described frame's time, Unix seconds (`frame_ts`, beside the MQTT envelope's `ts`).
    #[serde(rename = "frame_ts")]
    pub ts: f64,
    pub frame_id: u64,
    pub text: String,
    pub counts: BTreeMap<String, usize>,
    pub objects: Vec<SceneObject>,
    pub changes: Vec<Change>,
    /// A model-written description of the same frame, when a VLM is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlm: Option<VlmText>,
}

/// What a vision-language model wrote about a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlmText {
    pub text: String,
    pub model: String,
    pub prompt: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms_per_token: f64,
    /// Why it was written: `periodic`, `event` or `command`.
    pub trigger: String,
}

/// Keeps the previous description's objects so each description can say what changed.
#[derive(Debug, Clone)]
pub struct Describer {
    cfg: DescribeConfig,
    frame_w: f32,
    frame_h: f32,
    prev: Option<Vec<SceneObject>>,
}

impl Describer {
    pub fn new(cfg: DescribeConfig, frame_w: u32, frame_h: u32) -> Self {
        Describer {
            cfg,
            frame_w: frame_w.max(1) as f32,
            frame_h: frame_h.max(1) as f32,
            prev: None,
        }
    }

    pub fn set_frame_size(&mut self, frame_w: u32, frame_h: u32) {
        self.frame_w = frame_w.max(1) as f32;
        self.frame_h = frame_h.max(1) as f32;
    }

    /// Forget the previous description: the next one reports no changes.
    pub fn reset(&mut self) {
        self.prev = None;
    }

    /// The description `describe` would give now, without moving the "what changed" baseline.
    pub fn peek(
        &self,
        frame_id: u64,
        ts: f64,
        tracks: &[Track],
        zones: &ZoneMembership,
    ) -> SceneDescription {
        self.clone().describe(frame_id, ts, tracks, zones)
    }

    /// Describe confirmed and lost tracks (tentative ones are not yet believed), each in the zones
    /// `zones` gives it. The first description after `new` or `reset` has no changes.
    pub fn describe(
        &mut self,
        frame_id: u64,
        ts: f64,
        tracks: &[Track],
        zones: &ZoneMembership,
    ) -> SceneDescription {
        let mut objects: Vec<SceneObject> = tracks
            .iter()
            .filter(|t| t.is_established() && t.bbox.is_finite())
            .map(|t| self.object(t, zones.of(t.id)))
            .collect();
        objects.sort_by_key(|o| o.track_id);
        let mut counts = BTreeMap::new();
        for o in &objects {
            *counts.entry(o.label.clone()).or_insert(0) += 1;
        }
        let changes = match &self.prev {
            Some(prev) => changes(prev, &objects),
            None => Vec::new(),
        };
        let text = render(&counts, &objects, &changes);
        self.prev = Some(objects.clone());
        SceneDescription {
            camera: String::new(),
            ts,
            frame_id,
            text,
            counts,
            objects,
            changes,
            vlm: None,
        }
    }

    fn object(&self, t: &Track, zones: &[String]) -> SceneObject {
        let (cx, _) = t.bbox.center();
        let x = cx / self.frame_w;
        let position = if x < 1.0 / 3.0 {
            Position::Left
        } else if x <= 2.0 / 3.0 {
            Position::Ahead
        } else {
            Position::Right
        };
        let near = t.bbox.y2 / self.frame_h >= self.cfg.near_y
            || t.bbox.height() / self.frame_h >= self.cfg.near_height;
        SceneObject {
            track_id: t.id,
            label: t.label.to_string(),
            position,
            distance: if near { Distance::Near } else { Distance::Far },
            zones: zones.to_vec(),
            text: None,
        }
    }
}

impl SceneDescription {
    /// Adds the text read on its objects (`[ocr]`; `text_of` gives a track's last read): each
    /// object's `text`, and a sentence such as "A stop sign reading 'STOP'." at the end of `text`.
    pub fn add_texts<'a>(&mut self, text_of: impl Fn(u64) -> Option<&'a str>) {
        let mut read = Vec::new();
        for o in &mut self.objects {
            if let Some(t) = text_of(o.track_id).filter(|t| !t.trim().is_empty()) {
                read.push(format!(
                    "{} reading '{t}'",
                    super::text::counted(1, &o.label)
                ));
                o.text = Some(t.to_string());
            }
        }
        if !read.is_empty() {
            self.text.push(' ');
            self.text
                .push_str(&super::text::capitalise(&read.join("; ")));
            self.text.push('.');
        }
    }
}

fn changes(prev: &[SceneObject], now: &[SceneObject]) -> Vec<Change> {
    // (kind, label, zone) → track ids; ordered so the text comes out the same every time.
    let mut groups: BTreeMap<(ChangeKind, String, Option<String>), Vec<u64>> = BTreeMap::new();
    let mut add = |kind, label: &str, zone: Option<&str>, id| {
        groups
            .entry((kind, label.to_string(), zone.map(str::to_string)))
            .or_default()
            .push(id)
    };
    for o in now {
        match prev.iter().find(|p| p.track_id == o.track_id) {
            None => {
                add(ChangeKind::Appeared, &o.label, None, o.track_id);
                for z in &o.zones {
                    add(ChangeKind::Entered, &o.label, Some(z), o.track_id);
                }
            }
            Some(p) => {
                for z in o.zones.iter().filter(|z| !p.zones.contains(z)) {
                    add(ChangeKind::Entered, &o.label, Some(z), o.track_id);
                }
                for z in p.zones.iter().filter(|z| !o.zones.contains(z)) {
                    add(ChangeKind::Exited, &o.label, Some(z), o.track_id);
                }
                match (p.distance, o.distance) {
                    (Distance::Far, Distance::Near) => {
                        add(ChangeKind::Approached, &o.label, None, o.track_id)
                    }
                    (Distance::Near, Distance::Far) => {
                        add(ChangeKind::Receded, &o.label, None, o.track_id)
                    }
                    _ => {}
                }
            }
        }
    }
    for p in prev {
        if !now.iter().any(|o| o.track_id == p.track_id) {
            add(ChangeKind::Left, &p.label, None, p.track_id);
        }
    }
    groups
        .into_iter()
        .map(|((kind, label, zone), track_ids)| {
            let n = track_ids.len();
            let subject = counted(n, &label);
            let text = match (kind, &zone) {
                (ChangeKind::Appeared, _) => format!("{subject} appeared"),
                (ChangeKind::Entered, Some(z)) => format!("{subject} entered the {z} zone"),
                (ChangeKind::Exited, Some(z)) => format!("{subject} left the {z} zone"),
                (ChangeKind::Approached, _) => format!("{subject} came near"),
                (ChangeKind::Receded, _) => format!("{subject} moved away"),
                (ChangeKind::Left, _) => format!("{subject} left"),
                (_, None) => subject,
            };
            Change {
                kind,
                label,
                count: n,
                zone,
                track_ids,
                text,
            }
        })
        .collect()
}

fn render(counts: &BTreeMap<String, usize>, objects: &[SceneObject], changes: &[Change]) -> String {
    let mut text = if objects.is_empty() {
        "Nothing in view.".to_string()
    } else {
        let mut by_count: Vec<(&String, &usize)> = counts.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = by_count.iter().map(|(l, n)| counted(**n, l)).collect();
        format!("In view: {}.", parts.join(", "))
    };
    // Near things first: they matter most to someone acting on the description.
    let mut groups: BTreeMap<(Distance, Position, &str, &[String]), usize> = BTreeMap::new();
    for o in objects {
        *groups
            .entry((o.distance, o.position, &o.label, &o.zones))
            .or_insert(0) += 1;
    }
    let places: Vec<String> = groups
        .iter()
        .map(|((d, p, label, zones), n)| {
            let pos = match p {
                Position::Left => "on the left",
                Position::Ahead => "ahead",
                Position::Right => "on the right",
            };
            let dist = match d {
                Distance::Near => "near",
                Distance::Far => "far",
            };
            let mut s = format!("{} {pos}, {dist}", counted(*n, label));
            if !zones.is_empty() {
                s.push_str(&format!(", in {}", list(zones)));
            }
            s
        })
        .collect();
    if !places.is_empty() {
        text.push(' ');
        text.push_str(&capitalise(&places.join("; ")));
        text.push('.');
    }
    if !changes.is_empty() {
        let c: Vec<&str> = changes.iter().map(|c| c.text.as_str()).collect();
        text.push_str(" Changes: ");
        text.push_str(&c.join("; "));
        text.push('.');
    }
    text
}

fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::geometry::BBox;
    use crate::track::{TrackState, Velocity};

    fn track(id: u64, label: &str, b: [f32; 4]) -> Track {
        Track {
            id,
            label: Arc::from(label),
            class_id: 0,
            score: 0.9,
            bbox: BBox::from(b),
            velocity: Velocity::default(),
            age_frames: 5,
            hits: 5,
            missed_frames: 0,
            first_seen: 0.0,
            last_seen: 0.0,
            last_frame: 0,
            state: TrackState::Confirmed,
        }
    }

    #[test]
    fn text_read_on_objects_is_named() {
        let mut d = Describer::new(DescribeConfig::default(), 1000, 600);
        let t = vec![
            track(1, "stop sign", [100.0, 100.0, 200.0, 200.0]),
            track(2, "car", [600.0, 100.0, 700.0, 200.0]),
        ];
        let mut s = d.describe(1, 0.5, &t, &ZoneMembership::new());
        let before = s.text.clone();
        s.add_texts(|id| (id == 1).then_some("STOP"));
        assert_eq!(s.text, format!("{before} A stop sign reading 'STOP'."));
        assert_eq!(s.objects[0].text.as_deref(), Some("STOP"));
        assert_eq!(s.objects[1].text, None);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v["objects"][1].get("text").is_none(), "{v}");
        let mut s = d.describe(2, 1.0, &t, &ZoneMembership::new());
        let before = s.text.clone();
        s.add_texts(|_| None);
        assert_eq!(s.text, before, "nothing read, nothing added");
    }

    /// Track 1 in the crossing (first frame) or track 6 (second).
    fn in_crossing(id: u64) -> ZoneMembership {
        [(id, "crossing")].into_iter().collect()
    }

    #[test]
    fn describes_a_small_scene_and_its_changes() {
        let mut d = Describer::new(DescribeConfig::default(), 1000, 600);
        // A person ahead and close, in the crossing; two cars far on the right; one far left.
        let t0 = vec![
            track(1, "person", [450.0, 250.0, 550.0, 590.0]),
            track(2, "car", [700.0, 200.0, 800.0, 260.0]),
            track(3, "car", [850.0, 210.0, 950.0, 270.0]),
            track(4, "car", [10.0, 200.0, 110.0, 260.0]),
        ];
        let s0 = d.describe(10, 1.0, &t0, &in_crossing(1));
        assert_eq!(
            s0.text,
            "In view: 3 cars, a person. A person ahead, near, in crossing; a car on the left, \
             far; 2 cars on the right, far."
        );
        assert!(s0.changes.is_empty());
        assert_eq!(s0.counts["car"], 3);
        assert_eq!(s0.objects[0].position, Position::Ahead);
        assert_eq!(s0.objects[0].distance, Distance::Near);

        // The right-hand cars drive off, a dog appears on the left; the person leaves the
        // crossing and a second person enters it from far away.
        let mut t1 = vec![
            track(1, "person", [450.0, 250.0, 550.0, 590.0]),
            track(4, "car", [10.0, 200.0, 110.0, 260.0]),
            track(5, "dog", [100.0, 400.0, 160.0, 440.0]),
            track(6, "person", [300.0, 200.0, 330.0, 280.0]),
        ];
        t1.push(Track {
            state: TrackState::Tentative,
            id: 0,
            ..track(0, "cat", [0.0, 0.0, 5.0, 5.0])
        });
        let s1 = d.describe(20, 2.0, &t1, &in_crossing(6));
        let texts: Vec<&str> = s1.changes.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "a dog appeared",
                "a person appeared",
                "a person entered the crossing zone",
                "a person left the crossing zone",
                "2 cars left",
            ]
        );
        assert_eq!(s1.changes[4].track_ids, [2, 3]);
        assert!(s1.text.ends_with(
            "Changes: a dog appeared; a person appeared; a person entered the crossing zone; \
             a person left the crossing zone; 2 cars left."
        ));
        assert!(!s1.counts.contains_key("cat"));

        // Person 1 walks away from the camera.
        let t2 = vec![track(1, "person", [450.0, 100.0, 500.0, 200.0])];
        let s2 = d.describe(30, 3.0, &t2, &ZoneMembership::new());
        assert!(s2.changes.iter().any(|c| c.text == "a person moved away"));
        let s3 = d.describe(40, 4.0, &[], &ZoneMembership::new());
        assert!(s3
            .text
            .starts_with("Nothing in view. Changes: a person left."));
    }

    #[test]
    fn serialises_lowercase_enums() {
        let mut d = Describer::new(DescribeConfig::default(), 100, 100);
        let one = [track(1, "person", [0.0, 0.0, 10.0, 10.0])];
        let s = d.describe(1, 0.5, &one, &ZoneMembership::new());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["objects"][0]["position"], "left");
        assert_eq!(v["objects"][0]["distance"], "far");
        assert_eq!(v["counts"]["person"], 1);
    }
}

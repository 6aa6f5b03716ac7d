//! Object lifecycle events, shaped like Frigate's: one `new` when a track is confirmed,
//! `update`s when something a consumer would care about changed (rate-limited so a jittery box
//! does not flood MQTT), and one `end` when the tracker has dropped the track for good.
//!
//! One tracked object keeps one `event_id` from `new` to `end`, unique across restarts
//! (`<start time>-<boot tag>-<track id>`); `event_seq` counts that object's messages from 0, so
//! `(event_id, event_seq)` names one message. Every `update` and `end` carries `before` (the
//! `after` of the previous message for that object) and `after`, each the whole object so far
//! (label, scores, start/end time, zones, whether a snapshot exists), so a consumer that missed a
//! message still has the full picture. All times are Unix seconds (`f64`), all durations seconds.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::SettingError;
use super::ZoneMembership;
use crate::geometry::BBox;
use crate::track::{Track, TrackState, Velocity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    New,
    Update,
    End,
}

/// One tracked object as it was at one moment: Frigate's `before`/`after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectState {
    /// The event id (the same as the message's `event_id`; Frigate automations read `after.id`).
    pub id: String,
    pub camera: String,
    #[serde(with = "crate::detect::arc_str")]
    pub label: Arc<str>,
    /// Detector score at this moment, and the best over the object's life so far.
    pub score: f32,
    pub top_score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// Zones the object is in now, in rule-file order.
    pub current_zones: Vec<String>,
    /// Every zone it has been in since `new`, in the order it first entered them.
    pub entered_zones: Vec<String>,
    /// When the track was first seen.
    pub start_time: f64,
    /// When it was last seen; `null` until the `end` message.
    pub end_time: Option<f64>,
    /// Whether an alert about this object has published a snapshot (`snapshot/<camera>/<label>`).
    pub has_snapshot: bool,
    pub velocity: Velocity,
    pub state: TrackState,
    /// Frame id and time of the detection this state comes from.
    pub frame_id: u64,
    pub frame_time: f64,
    /// Text read on the object (`[ocr]`), its lines joined by a space; the last non-blank read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// How long an object stayed in one zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneStay {
    pub zone: String,
    /// The frame time it was first seen in the zone, and first seen outside it again (at `end`:
    /// last seen).
    pub entered: f64,
    pub left: f64,
    /// `left - entered`, seconds.
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// One id per tracked object, the same in its `new`, `update`s and `end`.
    #[serde(rename = "event_id")]
    pub id: String,
    /// This object's message counter: 0 for `new`, +1 per `update`, the last for `end`.
    pub event_seq: u32,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub camera: String,
    pub track_id: u64,
    #[serde(with = "crate::detect::arc_str")]
    pub label: Arc<str>,
    /// The frame being processed when the message was made (for `end`, a frame after the object
    /// was last seen: `after.frame_id` says when that was) and its time.
    pub frame_id: u64,
    #[serde(rename = "frame_ts")]
    pub ts: f64,
    pub before: Option<ObjectState>,
    pub after: ObjectState,
    /// Zones left since the previous message and how long the object stayed in each (on `end`,
    /// also the zones it was still in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exited_zones: Vec<ZoneStay>,
    /// On `end`: how long the object was tracked, `end_time - start_time` in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// When an `update` is worth sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventConfig {
    pub camera: String,
    /// Minimum seconds between two events for the same track (`new` and `end` are never held
    /// back).
    pub min_update_interval: f64,
    /// The box moved (centre) or changed size by more than this fraction of its size.
    pub move_fraction: f32,
    /// The score changed by at least this much.
    pub score_change: f32,
    /// Prepended to event ids (which are unique across restarts without it).
    pub id_prefix: String,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            camera: "camera".into(),
            min_update_interval: 1.0,
            move_fraction: 0.2,
            score_change: 0.15,
            id_prefix: String::new(),
        }
    }
}

impl EventConfig {
    /// The error names the key, relative to the `[events]` table.
    pub fn validate(&self) -> Result<(), SettingError> {
        let bad = |key: &'static str, reason: String| {
            Err(SettingError {
                table: "events",
                key,
                reason,
            })
        };
        if !(self.min_update_interval.is_finite() && self.min_update_interval >= 0.0) {
            return bad(
                "min_update_interval",
                format!(
                    "{} is not a number of seconds ≥ 0",
                    self.min_update_interval
                ),
            );
        }
        if !(self.move_fraction.is_finite() && self.move_fraction > 0.0) {
            return bad(
                "move_fraction",
                format!("{} is not > 0", self.move_fraction),
            );
        }
        if !(self.score_change.is_finite() && self.score_change > 0.0) {
            return bad("score_change", format!("{} is not > 0", self.score_change));
        }
        Ok(())
    }
}

/// What the builder keeps about one announced object.
#[derive(Debug, Clone)]
struct Known {
    track_id: u64,
    /// `after` of the latest message sent for this object.
    sent: ObjectState,
    sent_ts: f64,
    latest: ObjectState,
    seq: u32,
    /// Zone → frame time the object was first seen in it (this stay).
    in_zone: BTreeMap<String, f64>,
    /// Stays that ended since the last message.
    exits: Vec<ZoneStay>,
}

/// Turns the tracker's per-frame output into lifecycle events.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    cfg: EventConfig,
    /// Differs between builders (and so between process starts): with the start time and track
    /// id it makes event ids unique across restarts, where track ids start again from 1.
    boot: String,
    /// Ordered so `end` events come out in a reproducible order.
    known: BTreeMap<u64, Known>,
}

/// Six base-36 characters from the OS-seeded hasher std keeps for `HashMap`s: no extra crate,
/// different in every process.
fn boot_tag() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let mut n = h.finish();
    (0..6)
        .map(|_| {
            let c = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
            n /= 36;
            c as char
        })
        .collect()
}

impl EventBuilder {
    /// Out-of-range settings are replaced by defaults; call [`EventConfig::validate`] to report
    /// them.
    pub fn new(mut cfg: EventConfig) -> Self {
        let d = EventConfig::default();
        if !(cfg.min_update_interval.is_finite() && cfg.min_update_interval >= 0.0) {
            cfg.min_update_interval = d.min_update_interval;
        }
        if !(cfg.move_fraction.is_finite() && cfg.move_fraction > 0.0) {
            cfg.move_fraction = d.move_fraction;
        }
        if !(cfg.score_change.is_finite() && cfg.score_change > 0.0) {
            cfg.score_change = d.score_change;
        }
        EventBuilder {
            cfg,
            boot: boot_tag(),
            known: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &EventConfig {
        &self.cfg
    }

    /// Ids of the tracks a `new` has been sent for and no `end` yet.
    pub fn active(&self) -> impl Iterator<Item = u64> + '_ {
        self.known.keys().copied()
    }

    /// The event id of active track `track_id`.
    pub fn event_id(&self, track_id: u64) -> Option<&str> {
        self.known.get(&track_id).map(|k| k.latest.id.as_str())
    }

    /// Records that a snapshot showing track `track_id` was published; its next message says
    /// `has_snapshot: true` (and the change alone is worth an `update`).
    pub fn mark_snapshot(&mut self, track_id: u64) {
        if let Some(k) = self.known.get_mut(&track_id) {
            k.latest.has_snapshot = true;
        }
    }

    /// Records the text read on track `track_id` (`[ocr]`); its next message carries it as
    /// `after.text` (and a changed text alone is worth an `update`). Unknown tracks are ignored: a
    /// read that finished after the object's `end` has nowhere to go.
    pub fn set_text(&mut self, track_id: u64, text: &str) {
        if let Some(k) = self.known.get_mut(&track_id) {
            k.latest.text = Some(text.to_string());
        }
    }

    /// Events for one frame, given all of the tracker's current tracks and the zones they are in
    /// (a zone change is an update; pass an empty [`ZoneMembership`] without zone rules). A track
    /// missing from `tracks` has ended.
    pub fn update(
        &mut self,
        frame_id: u64,
        ts: f64,
        tracks: &[Track],
        zones: &ZoneMembership,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut present = Vec::with_capacity(tracks.len());
        for t in tracks.iter().filter(|t| t.is_established()) {
            present.push(t.id);
            let now_zones = zones.of(t.id);
            match self.known.get_mut(&t.id) {
                None => {
                    // A lost track we never announced (the builder was started or reset
                    // mid-stream) is announced when it is seen again.
                    if t.state != TrackState::Confirmed {
                        continue;
                    }
                    let id = format!(
                        "{}{:.6}-{}-{}",
                        self.cfg.id_prefix, t.first_seen, self.boot, t.id
                    );
                    let first = ObjectState {
                        id,
                        camera: self.cfg.camera.clone(),
                        label: t.label.clone(),
                        score: 0.0,
                        top_score: 0.0,
                        bbox: t.bbox,
                        current_zones: vec![],
                        entered_zones: vec![],
                        start_time: t.first_seen,
                        end_time: None,
                        has_snapshot: false,
                        velocity: t.velocity,
                        state: t.state,
                        frame_id: t.last_frame,
                        frame_time: t.last_seen,
                        text: None,
                    };
                    let mut k = Known {
                        track_id: t.id,
                        sent: first.clone(),
                        sent_ts: ts,
                        latest: first,
                        seq: 0,
                        in_zone: BTreeMap::new(),
                        exits: vec![],
                    };
                    k.observe(t, now_zones);
                    k.sent = k.latest.clone();
                    out.push(k.message(EventType::New, frame_id, ts, None));
                    self.known.insert(t.id, k);
                }
                Some(k) => {
                    k.observe(t, now_zones);
                    let due = ts - k.sent_ts >= self.cfg.min_update_interval;
                    if due && (!k.exits.is_empty() || meaningful(&self.cfg, &k.sent, &k.latest)) {
                        k.seq += 1;
                        let before = Some(k.sent.clone());
                        let ev = k.message(EventType::Update, frame_id, ts, before);
                        k.sent = k.latest.clone();
                        k.sent_ts = ts;
                        out.push(ev);
                    }
                }
            }
        }
        present.sort_unstable();
        let gone: Vec<u64> = self
            .known
            .keys()
            .copied()
            .filter(|id| present.binary_search(id).is_err())
            .collect();
        for id in gone {
            out.extend(self.end(id, frame_id, ts));
        }
        out
    }

    /// `end` for every active track, for a clean shutdown or a source that has finished.
    pub fn finish(&mut self, frame_id: u64, ts: f64) -> Vec<Event> {
        let ids: Vec<u64> = self.known.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.end(id, frame_id, ts))
            .collect()
    }

    fn end(&mut self, id: u64, frame_id: u64, ts: f64) -> Option<Event> {
        let mut k = self.known.remove(&id)?;
        k.seq += 1;
        // The object was last seen at `latest.frame_time`: its stays end there, not now.
        let last = k.latest.frame_time;
        let still_in = std::mem::take(&mut k.in_zone);
        for (zone, entered) in still_in {
            k.exits.push(ZoneStay::new(zone, entered, last));
        }
        k.latest.end_time = Some(last);
        let before = Some(k.sent.clone());
        let mut ev = k.message(EventType::End, frame_id, ts, before);
        ev.duration_s = Some(round_s(last - k.latest.start_time));
        Some(ev)
    }
}

impl Known {
    /// Takes in this frame's view of the object: score, box, zones (with stays begun and ended).
    fn observe(&mut self, t: &Track, zones: &[String]) {
        let now = t.last_seen;
        let l = &mut self.latest;
        l.bbox = t.bbox.rounded();
        // Rounded like the box: keeps payloads short, and no consumer needs more.
        l.score = (t.score * 1000.0).round() / 1000.0;
        l.top_score = l.top_score.max(l.score);
        l.velocity = Velocity {
            vx: (t.velocity.vx * 10.0).round() / 10.0,
            vy: (t.velocity.vy * 10.0).round() / 10.0,
        };
        l.state = t.state;
        l.frame_id = t.last_frame;
        l.frame_time = t.last_seen;
        l.current_zones = zones.to_vec();
        for z in zones {
            if !l.entered_zones.contains(z) {
                l.entered_zones.push(z.clone());
            }
            self.in_zone.entry(z.clone()).or_insert(now);
        }
        let left: Vec<String> = self
            .in_zone
            .keys()
            .filter(|z| !zones.contains(z))
            .cloned()
            .collect();
        for z in left {
            if let Some(entered) = self.in_zone.remove(&z) {
                self.exits.push(ZoneStay::new(z, entered, now));
            }
        }
    }

    fn message(
        &mut self,
        kind: EventType,
        frame_id: u64,
        ts: f64,
        before: Option<ObjectState>,
    ) -> Event {
        Event {
            id: self.latest.id.clone(),
            event_seq: self.seq,
            kind,
            camera: self.latest.camera.clone(),
            track_id: self.track_id,
            label: self.latest.label.clone(),
            frame_id,
            ts,
            before,
            after: self.latest.clone(),
            exited_zones: std::mem::take(&mut self.exits),
            duration_s: None,
        }
    }
}

impl ZoneStay {
    fn new(zone: String, entered: f64, left: f64) -> Self {
        ZoneStay {
            zone,
            entered,
            left,
            duration_s: round_s(left - entered),
        }
    }
}

/// Durations to the millisecond: frame times are no finer, and `0.30000000000000004` helps
/// nobody.
fn round_s(s: f64) -> f64 {
    (s.max(0.0) * 1000.0).round() / 1000.0
}

fn meaningful(cfg: &EventConfig, a: &ObjectState, b: &ObjectState) -> bool {
    if !same_set(&a.current_zones, &b.current_zones)
        || a.has_snapshot != b.has_snapshot
        || a.text != b.text
    {
        return true;
    }
    if (a.score - b.score).abs() >= cfg.score_change {
        return true;
    }
    let (w, h) = (a.bbox.width().max(1.0), a.bbox.height().max(1.0));
    let (ax, ay) = a.bbox.center();
    let (bx, by) = b.bbox.center();
    let f = cfg.move_fraction;
    (ax - bx).abs() > f * w
        || (ay - by).abs() > f * h
        || (a.bbox.width() - b.bbox.width()).abs() > f * w
        || (a.bbox.height() - b.bbox.height()).abs() > f * h
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|z| b.contains(z))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: u64, x: f32, score: f32, state: TrackState) -> Track {
        Track {
            id,
            label: Arc::from("person"),
            class_id: 0,
            score,
            bbox: BBox::from([x, 100.0, x + 50.0, 200.0]),
            velocity: Velocity::default(),
            age_frames: 3,
            hits: 3,
            missed_frames: 0,
            first_seen: 0.0,
            last_seen: 0.0,
            last_frame: 0,
            state,
        }
    }

    /// No track in any zone.
    fn none() -> ZoneMembership {
        ZoneMembership::new()
    }

    fn at(mut t: Track, frame: u64, ts: f64) -> Track {
        t.last_frame = frame;
        t.last_seen = ts;
        t
    }

    #[test]
    fn new_update_end_sequence_is_consistent() {
        let mut eb = EventBuilder::new(EventConfig {
            camera: "front".into(),
            ..Default::default()
        });
        let c = TrackState::Confirmed;
        let mut all = Vec::new();
        // Tentative tracks are not announced.
        let mut tent = track(0, 0.0, 0.9, TrackState::Tentative);
        tent.id = 0;
        assert!(eb.update(0, 0.0, &[tent], &none()).is_empty());
        for f in 1..=30u64 {
            let ts = f as f64 * 0.1;
            // Moves 2 px a frame: 10 px (> 20% of 50 px) every 0.5 s.
            let mut zones = ZoneMembership::new();
            if f >= 15 {
                zones.add(1, "yard");
            }
            let t = at(track(1, 2.0 * f as f32, 0.9, c), f, ts);
            all.extend(eb.update(f, ts, &[t], &zones));
        }
        all.extend(eb.update(31, 3.1, &[], &none()));
        let kinds: Vec<EventType> = all.iter().map(|e| e.kind).collect();
        assert_eq!(kinds[0], EventType::New);
        assert_eq!(*kinds.last().unwrap(), EventType::End);
        assert!(kinds[1..kinds.len() - 1]
            .iter()
            .all(|k| *k == EventType::Update));
        // Rate limited to one update a second.
        for w in all.windows(2) {
            if w[1].kind == EventType::Update {
                assert!(
                    w[1].ts - w[0].ts >= 1.0 - 1e-9,
                    "{} then {}",
                    w[0].ts,
                    w[1].ts
                );
            }
        }
        // Each event's `before` is the previous event's `after`.
        for w in all.windows(2) {
            assert_eq!(w[1].before.as_ref(), Some(&w[0].after));
        }
        assert!(all[0].before.is_none());
        // One event id from new to end; (event_id, event_seq) names each message.
        assert!(all.iter().all(|e| e.id == all[0].id && e.after.id == e.id));
        let seqs: Vec<u32> = all.iter().map(|e| e.event_seq).collect();
        assert_eq!(seqs, (0..all.len() as u32).collect::<Vec<_>>());
        assert!(all[0].id.starts_with("0.000000-") && all[0].id.ends_with("-1"));
        assert_eq!(all[0].camera, "front");
        // The zone change is in some update.
        assert!(all.iter().any(|e| e.kind == EventType::Update
            && e.before.as_ref().unwrap().current_zones.is_empty()
            && e.after.current_zones == ["yard"]));
        let end = all.last().unwrap();
        assert_eq!(end.after.frame_id, 30);
        assert_eq!(end.frame_id, 31);
        // Still in the yard when last seen (frames 15..=30, at 0.1 s a frame).
        assert_eq!(end.after.end_time, Some(3.0));
        assert_eq!(end.duration_s, Some(3.0));
        assert_eq!(end.exited_zones.len(), 1);
        assert_eq!(end.exited_zones[0].zone, "yard");
        assert!((end.exited_zones[0].duration_s - 1.5).abs() < 1e-9);
        assert_eq!(end.after.entered_zones, ["yard"]);
        assert!(all[..all.len() - 1]
            .iter()
            .all(|e| e.after.end_time.is_none() && e.duration_s.is_none()));
        assert_eq!(eb.active().count(), 0);
    }

    #[test]
    fn no_update_without_meaningful_change() {
        let mut eb = EventBuilder::new(EventConfig::default());
        let c = TrackState::Confirmed;
        let mut n = 0;
        for f in 0..100u64 {
            // One-pixel jitter and small score noise.
            let x = if f % 2 == 0 { 10.0 } else { 11.0 };
            let s = 0.8 + if f % 3 == 0 { 0.05 } else { 0.0 };
            n += eb
                .update(f, f as f64 * 0.1, &[track(5, x, s, c)], &none())
                .len();
        }
        assert_eq!(n, 1);
        // A lost track (same box) is still present; no end.
        let lost = track(5, 10.0, 0.8, TrackState::Lost);
        assert!(eb.update(100, 10.0, &[lost], &none()).is_empty());
        let ev = eb.finish(101, 10.1);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventType::End);
        assert_eq!(ev[0].after.state, TrackState::Lost);
    }

    #[test]
    fn score_change_triggers_update() {
        let mut eb = EventBuilder::new(EventConfig {
            min_update_interval: 0.0,
            ..Default::default()
        });
        let c = TrackState::Confirmed;
        assert_eq!(
            eb.update(0, 0.0, &[track(2, 0.0, 0.5, c)], &none())[0].kind,
            EventType::New
        );
        let ev = eb.update(1, 0.1, &[track(2, 0.0, 0.9, c)], &none());
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventType::Update);
        assert_eq!(ev[0].before.as_ref().unwrap().score, 0.5);
        assert_eq!(ev[0].after.score, 0.9);
    }

    #[test]
    fn serialises_type_and_box() {
        let mut eb = EventBuilder::new(EventConfig::default());
        let ev = eb.update(
            0,
            0.0,
            &[track(1, 0.0, 0.9, TrackState::Confirmed)],
            &none(),
        );
        let v = serde_json::to_value(&ev[0]).unwrap();
        assert_eq!(v["type"], "new");
        assert_eq!(v["label"], "person");
        assert!(v["before"].is_null());
        assert_eq!(
            v["after"]["box"],
            serde_json::json!([0.0, 100.0, 50.0, 200.0])
        );
        assert_eq!(v["after"]["state"], "confirmed");
        assert_eq!(v["event_id"], v["after"]["id"]);
        assert!(v["after"]["end_time"].is_null(), "null until end: {v}");
        assert!(v.get("id").is_none() && v.get("ts").is_none(), "{v}");
        let back: Event = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
    }

    #[test]
    fn a_zone_exit_says_how_long_the_object_stayed() {
        let mut eb = EventBuilder::new(EventConfig {
            min_update_interval: 0.0,
            ..Default::default()
        });
        let c = TrackState::Confirmed;
        let mut all = Vec::new();
        for f in 0..20u64 {
            let ts = 100.0 + f as f64 * 0.5;
            // In the zone for frames 4..=11: entered at 102.0, last seen in it at 105.5, out at 106.0.
            let zones: ZoneMembership = if (4..12).contains(&f) {
                [(3u64, "gate")].into_iter().collect()
            } else {
                none()
            };
            let mut t = at(track(3, 10.0, 0.9, c), f, ts);
            t.first_seen = 100.0;
            all.extend(eb.update(f, ts, &[t], &zones));
        }
        let exits: Vec<&Event> = all.iter().filter(|e| !e.exited_zones.is_empty()).collect();
        assert_eq!(exits.len(), 1, "{all:#?}");
        let x = &exits[0];
        assert_eq!(x.kind, EventType::Update);
        assert_eq!(x.before.as_ref().unwrap().current_zones, ["gate"]);
        assert!(x.after.current_zones.is_empty());
        assert_eq!(x.after.entered_zones, ["gate"]);
        let stay = &x.exited_zones[0];
        assert_eq!(
            (stay.entered, stay.left, stay.duration_s),
            (102.0, 106.0, 4.0)
        );
        // The end carries the whole life; no zone is left twice.
        let end = eb.finish(20, 110.0).pop().unwrap();
        assert_eq!(end.duration_s, Some(9.5));
        assert!(end.exited_zones.is_empty());
        assert_eq!(end.id, all[0].id);
    }

    #[test]
    fn ids_differ_between_builders_for_the_same_tracks() {
        let c = TrackState::Confirmed;
        let ids = |_: u32| {
            let mut eb = EventBuilder::new(EventConfig::default());
            let t = [track(1, 0.0, 0.9, c), track(2, 80.0, 0.9, c)];
            eb.update(0, 0.0, &t, &none())
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        };
        let (a, b) = (ids(0), ids(1));
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], a[1]);
        assert!(a.iter().all(|id| !b.contains(id)), "{a:?} {b:?}");
    }

    #[test]
    fn top_score_and_snapshot_follow_the_object() {
        let mut eb = EventBuilder::new(EventConfig {
            min_update_interval: 0.0,
            ..Default::default()
        });
        let c = TrackState::Confirmed;
        eb.update(0, 0.0, &[track(4, 0.0, 0.5, c)], &none());
        eb.update(1, 0.1, &[track(4, 0.0, 0.9, c)], &none());
        let ev = eb.update(2, 0.2, &[track(4, 0.0, 0.6, c)], &none());
        assert_eq!(ev[0].after.score, 0.6);
        assert_eq!(ev[0].after.top_score, 0.9);
        assert!(!ev[0].after.has_snapshot);
        eb.mark_snapshot(4);
        let ev = eb.update(3, 0.3, &[track(4, 0.0, 0.6, c)], &none());
        assert_eq!(ev.len(), 1, "a new snapshot is worth an update");
        assert!(ev[0].after.has_snapshot && !ev[0].before.as_ref().unwrap().has_snapshot);
        assert_eq!(eb.event_id(4), Some(ev[0].id.as_str()));
    }

    #[test]
    fn text_read_on_an_object_is_an_update_and_stays() {
        let mut eb = EventBuilder::new(EventConfig {
            min_update_interval: 0.0,
            ..Default::default()
        });
        let c = TrackState::Confirmed;
        let ev = eb.update(0, 0.0, &[track(5, 0.0, 0.5, c)], &none());
        let v = serde_json::to_value(&ev[0]).unwrap();
        assert!(v["after"].get("text").is_none(), "no text, no key: {v}");
        eb.set_text(5, "STOP");
        eb.set_text(99, "nobody");
        let ev = eb.update(1, 0.1, &[track(5, 0.0, 0.5, c)], &none());
        assert_eq!(ev.len(), 1, "a new text is worth an update");
        assert_eq!(ev[0].after.text.as_deref(), Some("STOP"));
        assert_eq!(ev[0].before.as_ref().unwrap().text, None);
        let ev = eb.finish(2, 0.2);
        assert_eq!(ev[0].after.text.as_deref(), Some("STOP"));
        assert_eq!(
            serde_json::to_value(&ev[0]).unwrap()["after"]["text"],
            "STOP"
        );
    }

    #[test]
    fn config_validation_names_the_key() {
        let e = toml::from_str::<EventConfig>("min_update_interval = -1.0")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("events.min_update_interval"), "{e}");
        assert!(toml::from_str::<EventConfig>("interval = 1.0")
            .unwrap_err()
            .to_string()
            .contains("interval"));
    }
}

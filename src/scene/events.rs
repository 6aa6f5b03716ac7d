//! Object lifecycle events, in the spirit of Frigate's: one `new` when a track is confirmed,
//! `update`s when something a consumer would care about changed (rate-limited so a jittery box
//! does not flood MQTT), and one `end` when the tracker has dropped the track for good.
//!
//! Every `update` and `end` carries `before` (the state in the previous event for that track) and
//! `after`, so a consumer that saw the previous event can apply the change without other state.

use std::collections::BTreeMap;
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

/// What an object looked like at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectState {
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub score: f32,
    pub zones: Vec<String>,
    pub velocity: Velocity,
    pub state: TrackState,
    /// Frame id and time of the detection this state comes from.
    pub frame_id: u64,
    pub ts: f64,
}

impl ObjectState {
    /// Track `t` as it is now, in `zones` (its entry in the frame's [`ZoneMembership`]).
    pub fn of(t: &Track, zones: &[String]) -> Self {
        ObjectState {
            bbox: t.bbox.rounded(),
            // Rounded like the box: keeps payloads short, and no consumer needs more.
            score: (t.score * 1000.0).round() / 1000.0,
            zones: zones.to_vec(),
            velocity: Velocity {
                vx: (t.velocity.vx * 10.0).round() / 10.0,
                vy: (t.velocity.vy * 10.0).round() / 10.0,
            },
            state: t.state,
            frame_id: t.last_frame,
            ts: t.last_seen,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `<id_prefix><frame_id>-<track_id>-<seq>`, `seq` counting this track's events from 0 (the
    /// `new`), so ids are unique within one builder.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub camera: String,
    pub track_id: u64,
    #[serde(with = "crate::detect::arc_str")]
    pub label: Arc<str>,
    /// The frame being processed when the event was raised (for `end`, a frame after the object
    /// was last seen: `after.frame_id` says when that was).
    pub frame_id: u64,
    pub ts: f64,
    /// When the track was first seen.
    pub first_seen: f64,
    pub before: Option<ObjectState>,
    pub after: ObjectState,
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
    /// Prepended to event ids; set it to something unique per run (such as the start time) when
    /// ids must not repeat across restarts.
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

#[derive(Debug, Clone)]
struct Known {
    label: Arc<str>,
    first_seen: f64,
    /// `after` of the latest event sent for this track.
    sent: ObjectState,
    sent_ts: f64,
    latest: ObjectState,
    seq: u64,
}

/// Turns the tracker's per-frame output into lifecycle events.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    cfg: EventConfig,
    /// Ordered so `end` events come out in a reproducible order.
    known: BTreeMap<u64, Known>,
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
            let now = ObjectState::of(t, zones.of(t.id));
            match self.known.get_mut(&t.id) {
                None => {
                    // A lost track we never announced (the builder was started or reset
                    // mid-stream) is announced when it is seen again.
                    if t.state != TrackState::Confirmed {
                        continue;
                    }
                    let k = Known {
                        label: t.label.clone(),
                        first_seen: t.first_seen,
                        sent: now.clone(),
                        sent_ts: ts,
                        latest: now,
                        seq: 0,
                    };
                    out.push(Self::make(
                        &self.cfg,
                        &k,
                        t.id,
                        EventType::New,
                        frame_id,
                        ts,
                        None,
                    ));
                    self.known.insert(t.id, k);
                }
                Some(k) => {
                    k.latest = now;
                    let due = ts - k.sent_ts >= self.cfg.min_update_interval;
                    if due && meaningful(&self.cfg, &k.sent, &k.latest) {
                        k.seq += 1;
                        let before = Some(k.sent.clone());
                        let ev =
                            Self::make(&self.cfg, k, t.id, EventType::Update, frame_id, ts, before);
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
        let before = Some(k.sent.clone());
        Some(Self::make(
            &self.cfg,
            &k,
            id,
            EventType::End,
            frame_id,
            ts,
            before,
        ))
    }

    fn make(
        cfg: &EventConfig,
        k: &Known,
        id: u64,
        kind: EventType,
        frame_id: u64,
        ts: f64,
        before: Option<ObjectState>,
    ) -> Event {
        Event {
            id: format!("{}{frame_id}-{id}-{}", cfg.id_prefix, k.seq),
            kind,
            camera: cfg.camera.clone(),
            track_id: id,
            label: k.label.clone(),
            frame_id,
            ts,
            first_seen: k.first_seen,
            before,
            after: k.latest.clone(),
        }
    }
}

fn meaningful(cfg: &EventConfig, a: &ObjectState, b: &ObjectState) -> bool {
    if !same_set(&a.zones, &b.zones) {
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
        // Ids are unique.
        let mut ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
        assert_eq!(all[0].id, "1-1-0");
        assert_eq!(all[0].camera, "front");
        // The zone change is in some update.
        assert!(all.iter().any(|e| e.kind == EventType::Update
            && e.before.as_ref().unwrap().zones.is_empty()
            && e.after.zones == ["yard"]));
        let end = all.last().unwrap();
        assert_eq!(end.after.frame_id, 30);
        assert_eq!(end.frame_id, 31);
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

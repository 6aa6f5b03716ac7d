//! Multi-object tracking: detections from successive frames become [`Track`]s with stable ids.
//!
//! [`Tracker`] is ByteTrack-style: confident detections are matched first, then low-score ones are
//! used only to keep existing tracks alive (an occluded or blurred object often scores low), and
//! boxes are predicted forward with a constant-velocity model so fast objects still overlap their
//! track. Tracks are born tentative and confirmed after `min_hits` consecutive matches, so a
//! single-frame false positive never gets an id; a confirmed track that goes unmatched is kept as
//! `lost` for up to `max_age_frames` (and optionally `max_age_s`) before it is dropped, so a brief
//! occlusion does not cause an id switch.

mod bytetrack;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use bytetrack::Tracker;

use crate::error::Error;
use crate::geometry::BBox;

/// Where a track is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackState {
    /// Seen in fewer than `min_hits` consecutive frames; has no id yet (id 0).
    Tentative,
    /// Matched in the latest frame (or missed ones without yet being lost).
    Confirmed,
    /// Confirmed before, unmatched in the latest frame; still believed present.
    Lost,
}

/// Box-centre velocity in pixels per second.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Velocity {
    pub vx: f32,
    pub vy: f32,
}

impl Velocity {
    pub fn speed(&self) -> f32 {
        self.vx.hypot(self.vy)
    }
}

/// One tracked object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Stable id, increasing from 1 in order of confirmation; 0 while tentative.
    pub id: u64,
    #[serde(with = "crate::detect::arc_str")]
    pub label: Arc<str>,
    pub class_id: usize,
    /// Score of the latest matched detection.
    pub score: f32,
    /// Box of the latest matched detection (for a lost track, where it was last seen).
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub velocity: Velocity,
    /// Frames since the track was born, including the first.
    pub age_frames: u64,
    /// Frames in which a detection was matched to it.
    pub hits: u64,
    /// Consecutive frames without a match, up to now.
    pub missed_frames: u32,
    /// Timestamps (seconds) of the first and the latest match.
    pub first_seen: f64,
    pub last_seen: f64,
    /// Frame id of the latest match.
    pub last_frame: u64,
    pub state: TrackState,
}

impl Track {
    /// Confirmed or lost: the tracker believes the object is there. Rules, events and descriptions
    /// only look at these, never at tentative tracks.
    pub fn is_established(&self) -> bool {
        self.id != 0 && self.state != TrackState::Tentative
    }
}

/// A bad value in the `[tracker]` table, e.g. `tracker.min_hits: must be at least 1`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tracker.{key}: {reason}")]
pub struct TrackerConfigError {
    /// Relative to the `[tracker]` table.
    pub key: &'static str,
    pub reason: String,
}

impl From<TrackerConfigError> for Error {
    fn from(e: TrackerConfigError) -> Self {
        Error::Other(e.to_string())
    }
}

/// Tuning of [`Tracker`]. Scores are detector scores in 0..1; IoUs are between the predicted box
/// of a track and a detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Detections at or above this score take part in the first association pass.
    pub track_high: f32,
    /// Detections between this and `track_high` only extend existing confirmed tracks.
    pub track_low: f32,
    /// An unmatched detection needs at least this score to start a new track.
    pub new_track_score: f32,
    /// Minimum IoU to match a high-score detection.
    pub match_iou: f32,
    /// Minimum IoU to match a low-score detection; stricter, since these are often clutter.
    pub low_match_iou: f32,
    /// Consecutive matched frames before a track is confirmed and gets an id.
    pub min_hits: u32,
    /// Missed frames after which a lost track is dropped.
    pub max_age_frames: u32,
    /// Seconds since last seen after which a lost track is dropped, whatever the frame count; for
    /// sources whose frame rate varies.
    pub max_age_s: Option<f64>,
    /// Only match a detection to a track of the same class.
    pub class_consistent: bool,
    /// Gains of the alpha-beta filter on box centres: how much of the measurement residual goes
    /// into the position and into the velocity.
    pub motion_alpha: f32,
    pub motion_beta: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            track_high: 0.5,
            track_low: 0.1,
            new_track_score: 0.6,
            match_iou: 0.2,
            low_match_iou: 0.5,
            min_hits: 3,
            max_age_frames: 30,
            max_age_s: None,
            class_consistent: true,
            motion_alpha: 0.7,
            motion_beta: 0.3,
        }
    }
}

impl TrackerConfig {
    /// Checks ranges; the error names the key (relative to the `[tracker]` table).
    pub fn validate(&self) -> Result<(), TrackerConfigError> {
        let bad = |key: &'static str, reason: String| Err(TrackerConfigError { key, reason });
        let unit = [
            ("track_high", self.track_high),
            ("track_low", self.track_low),
            ("new_track_score", self.new_track_score),
            ("match_iou", self.match_iou),
            ("low_match_iou", self.low_match_iou),
            ("motion_alpha", self.motion_alpha),
            ("motion_beta", self.motion_beta),
        ];
        for (key, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                return bad(key, format!("{v} is outside 0..1"));
            }
        }
        if self.track_low > self.track_high {
            return bad(
                "track_low",
                format!("{} is above track_high {}", self.track_low, self.track_high),
            );
        }
        if self.new_track_score < self.track_high {
            return bad(
                "new_track_score",
                format!(
                    "{} is below track_high {}; only high-score detections can start tracks",
                    self.new_track_score, self.track_high
                ),
            );
        }
        if self.min_hits == 0 {
            return bad("min_hits", "must be at least 1".into());
        }
        if let Some(s) = self.max_age_s {
            if !(s.is_finite() && s > 0.0) {
                return bad(
                    "max_age_s",
                    format!("{s} is not a positive number of seconds"),
                );
            }
        }
        Ok(())
    }

    /// Clamped into the ranges `validate` checks, so a tracker built from an unchecked config
    /// still behaves sensibly instead of panicking or never matching.
    fn sanitised(mut self) -> Self {
        let unit = |v: f32, d: f32| if v.is_finite() { v.clamp(0.0, 1.0) } else { d };
        let d = TrackerConfig::default();
        self.track_high = unit(self.track_high, d.track_high);
        self.track_low = unit(self.track_low, d.track_low).min(self.track_high);
        self.new_track_score = unit(self.new_track_score, d.new_track_score).max(self.track_high);
        self.match_iou = unit(self.match_iou, d.match_iou);
        self.low_match_iou = unit(self.low_match_iou, d.low_match_iou);
        self.motion_alpha = unit(self.motion_alpha, d.motion_alpha);
        self.motion_beta = unit(self.motion_beta, d.motion_beta);
        self.min_hits = self.min_hits.max(1);
        self.max_age_s = self.max_age_s.filter(|s| s.is_finite() && *s > 0.0);
        self
    }
}

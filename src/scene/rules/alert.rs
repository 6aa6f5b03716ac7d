//! What a rule raises: the [`Alert`] record published to sinks and MQTT, and the VLM's
//! [`Verification`] of it when alerts are verified.

use serde::{Deserialize, Serialize};

use super::config::{Direction, Severity};
use crate::geometry::BBox;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Entry,
    Exit,
    Dwell,
    Crossing,
    Proximity,
    Count,
    Presence,
    Absence,
    /// The camera stopped delivering frames (raised by the frame loop, not by a rule).
    CameraDown,
    /// The camera delivers frames again after a `camera_down`.
    CameraRecovered,
}

impl AlertKind {
    /// The name as serialised, for alert ids.
    pub(super) fn name(self) -> &'static str {
        match self {
            AlertKind::Entry => "entry",
            AlertKind::Exit => "exit",
            AlertKind::Dwell => "dwell",
            AlertKind::Crossing => "crossing",
            AlertKind::Proximity => "proximity",
            AlertKind::Count => "count",
            AlertKind::Presence => "presence",
            AlertKind::Absence => "absence",
            AlertKind::CameraDown => "camera_down",
            AlertKind::CameraRecovered => "camera_recovered",
        }
    }

    /// About one track (its id ends the alert id), rather than about the whole frame.
    pub(super) fn is_per_track(self) -> bool {
        !matches!(
            self,
            AlertKind::Count
                | AlertKind::Presence
                | AlertKind::Absence
                | AlertKind::CameraDown
                | AlertKind::CameraRecovered
        )
    }
}

/// Kind-specific facts about an alert; absent fields do not apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// For a crossing, the way it went (`a_to_b` or `b_to_a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Seconds the condition had held (dwell, presence, absence, count with a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// The track's box, in pixels (per-track alerts).
    #[serde(default, rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
    /// The track's reference point, normalised (per-track alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<[f32; 2]>,
}

/// Whether a message is an alert's first, or a later one about the same alert (the VLM's verdict
/// with `[vlm] verify_mode = "update"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertType {
    #[default]
    New,
    Update,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<rule>-<kind>-<frame_id>-<track_id>`, or `<rule>-<kind>-<frame_id>` for alerts about the
    /// whole frame (count, presence, absence). An `update` carries its alert's id.
    #[serde(rename = "alert_id")]
    pub id: String,
    /// `new` for the alert itself, `update` for the verdict that follows it.
    #[serde(rename = "type", default)]
    pub message_type: AlertType,
    pub rule: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub camera: String,
    /// The time of the frame it fired on, Unix seconds.
    #[serde(rename = "frame_ts")]
    pub ts: f64,
    pub frame_id: u64,
    pub track_ids: Vec<u64>,
    pub labels: Vec<String>,
    pub message: String,
    pub details: AlertDetails,
    /// The VLM's verdict, when alerts are verified (`[vlm] verify_alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// The annotated frame it fired on, as the topic under `<root>/<device>/` it was published
    /// on (`snapshot/<camera>/<label>`, retained, so it holds the latest such alert's frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The video clip around it (`[store] clip_pre_s`/`clip_post_s`), relative to the store
    /// folder. Named when the alert is published; the file is written after the post-roll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
}

/// What the VLM made of an alert it was asked to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    /// Asked, answer to follow as an `update` of the alert (`verify_mode = "update"`).
    Pending,
    /// The model answered yes.
    Confirmed,
    /// The model answered no.
    Rejected,
    /// The model answered, but neither yes nor no.
    Unclear,
    /// No answer in time (busy, timed out, failed or shutting down): see `answer`.
    Unverified,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub status: VerificationStatus,
    pub question: String,
    /// The model's answer, or why there is none.
    pub answer: String,
    pub model: String,
    /// How long the alert was held, milliseconds.
    pub held_ms: f64,
}

//! `[store]`: the on-device event store's folder, size and age bounds, clips and the periodic
//! summary (docs/recall.md). Kept apart from `mod.rs` so each section stays readable.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[store]`: where events, alerts, scene text and object crops are kept, and for how long.
/// Present means on: a board's disk (an SD card) is the user's to give, as Frigate's
/// `record`/`snapshots` are off until configured.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Folder holding `store.redb` and `media/` (crops and snapshots).
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Bound on what the store holds (records + JPEGs), in bytes; the oldest go first, alerts last.
    #[serde(default = "default_store_bytes")]
    pub max_bytes: u64,
    /// Records older than this many days are deleted (0 = no age limit).
    #[serde(default = "default_store_age")]
    pub max_age_days: f64,
    /// Sentence-embedding model for search (a name in the model folders or a path); `""` = none
    /// (search falls back to words).
    #[serde(default = "default_store_embedding")]
    pub embedding_model: String,
    /// Keep the best crop and a snapshot per tracked object.
    #[serde(default = "super::yes")]
    pub crops: bool,
    /// Seconds of video kept before each alert in its clip (0 with `clip_post_s` 0: no clips).
    #[serde(default)]
    pub clip_pre_s: f64,
    /// Seconds of video kept after each alert (an alert during a clip extends it).
    #[serde(default)]
    pub clip_post_s: f64,
    /// Frames per second kept in clips (at most the camera's).
    #[serde(default = "default_clip_fps")]
    pub clip_fps: f64,
    /// Memory bound per camera for the pre-roll ring plus the clips being collected, bytes.
    #[serde(default = "default_clip_buffer")]
    pub clip_buffer_bytes: u64,
    /// Publish a summary of the last this-many seconds on `<prefix>/summary` every as often
    /// (0 = off).
    #[serde(default)]
    pub summary_every_s: f64,
    /// The window each periodic summary tells, seconds (0 = `summary_every_s`).
    #[serde(default)]
    pub summary_window_s: f64,
}

fn default_clip_fps() -> f64 {
    5.0
}
fn default_clip_buffer() -> u64 {
    32 << 20
}

fn default_store_path() -> PathBuf {
    PathBuf::from("/var/lib/lookout/store")
}
fn default_store_bytes() -> u64 {
    2 << 30
}
fn default_store_age() -> f64 {
    30.0
}
fn default_store_embedding() -> String {
    crate::embed::DEFAULT_EMBEDDING_MODEL.into()
}

impl StoreConfig {
    /// The defaults with another folder (`lookout run --store DIR`).
    pub fn at(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            max_bytes: default_store_bytes(),
            max_age_days: default_store_age(),
            embedding_model: default_store_embedding(),
            crops: true,
            clip_pre_s: 0.0,
            clip_post_s: 0.0,
            clip_fps: default_clip_fps(),
            clip_buffer_bytes: default_clip_buffer(),
            summary_every_s: 0.0,
            summary_window_s: 0.0,
        }
    }

    /// Whether alerts get clips.
    pub fn clips(&self) -> bool {
        self.clip_pre_s > 0.0 || self.clip_post_s > 0.0
    }

    /// The clip and summary keys that are out of range, as (key, why).
    pub fn clip_problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let range = |x: f64, lo: f64, hi: f64| x.is_finite() && (lo..=hi).contains(&x);
        for (k, x, hi) in [
            ("store.clip_pre_s", self.clip_pre_s, 60.0),
            ("store.clip_post_s", self.clip_post_s, 300.0),
            (
                "store.summary_every_s",
                self.summary_every_s,
                7.0 * 86_400.0,
            ),
            (
                "store.summary_window_s",
                self.summary_window_s,
                30.0 * 86_400.0,
            ),
        ] {
            if !range(x, 0.0, hi) {
                v.push((k, format!("{x} must be 0..{hi}")));
            }
        }
        if !range(self.clip_fps, 0.5, 30.0) {
            v.push((
                "store.clip_fps",
                format!("{} must be 0.5..30", self.clip_fps),
            ));
        }
        if self.clip_buffer_bytes < 1 << 20 {
            let why = format!(
                "{} must be at least 1048576 (1 MiB)",
                self.clip_buffer_bytes
            );
            v.push(("store.clip_buffer_bytes", why));
        }
        v
    }
}

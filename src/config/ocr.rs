//! `[ocr]`: reading the text on tracked objects during `lookout run` — which objects (labels,
//! zones), how often per track, how many reads a frame, and which OCR model. Off without the table.

use serde::Deserialize;

use super::{Config, Issues};

/// `[ocr]`'s checks, with the zone names of every zone rule (top-level and per camera).
pub(super) fn validate(cfg: &Config, issues: &mut Issues) {
    let Some(o) = &cfg.ocr else { return };
    let rules = cfg
        .rules
        .iter()
        .chain(cfg.cameras.iter().flat_map(|c| &c.rules));
    let zones: Vec<&str> = rules
        .filter(|r| r.kind == crate::scene::RuleKind::Zone)
        .map(|r| r.name.as_str())
        .collect();
    o.validate(&zones, issues);
}

/// Most labels or zones one `[ocr]` may name (each is compared with every track every frame).
pub const MAX_OCR_NAMES: usize = 64;

/// `[ocr]`: objects of `labels`, or inside `zones`, are read at most once per `interval_s` each.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OcrConfig {
    /// Detector labels whose objects are read ("stop sign", "truck", "book").
    pub labels: Vec<String>,
    /// Zone names (from zone rules): any tracked object inside one is read.
    pub zones: Vec<String>,
    /// Seconds between two reads of the same track.
    pub interval_s: f64,
    /// The OCR model (a name under the model paths, or a folder).
    pub model: String,
    /// Reads started per frame at most; more wait for a later frame.
    pub max_per_frame: usize,
}

impl Default for OcrConfig {
    fn default() -> Self {
        OcrConfig {
            labels: Vec::new(),
            zones: Vec::new(),
            interval_s: 2.0,
            model: crate::ocr::DEFAULT_OCR_MODEL.to_string(),
            max_per_frame: 1,
        }
    }
}

impl OcrConfig {
    /// Value checks, each failing key named `ocr.<key>`; `zone_names` are the zones the rules
    /// define (a zone nobody defines would never match).
    pub fn validate(&self, zone_names: &[&str], issues: &mut Issues) {
        if self.labels.is_empty() && self.zones.is_empty() {
            issues.push(
                "ocr.labels",
                "name the labels (or ocr.zones) whose objects to read; without either nothing is read",
            );
        }
        for (key, names) in [("ocr.labels", &self.labels), ("ocr.zones", &self.zones)] {
            if names.len() > MAX_OCR_NAMES {
                issues.push(
                    key,
                    format!("{} names; at most {MAX_OCR_NAMES}", names.len()),
                );
            }
            if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
                issues.push(format!("{key}[{i}]"), "must not be empty");
            }
        }
        for (i, z) in self.zones.iter().enumerate() {
            if !zone_names.contains(&z.as_str()) {
                issues.push(
                    format!("ocr.zones[{i}]"),
                    format!(
                        "no zone rule named '{z}' (zones: {})",
                        zone_names.join(", ")
                    ),
                );
            }
        }
        if !(self.interval_s.is_finite() && self.interval_s >= 0.0) {
            issues.push(
                "ocr.interval_s",
                format!("{} is not a number of seconds ≥ 0", self.interval_s),
            );
        }
        if self.model.trim().is_empty() {
            issues.push("ocr.model", "must name an OCR model");
        }
        if self.max_per_frame == 0 || self.max_per_frame > 16 {
            issues.push(
                "ocr.max_per_frame",
                format!("{} must be 1..16", self.max_per_frame),
            );
        }
    }

    /// The read schedule's policy for these settings.
    pub fn policy(&self) -> crate::ocr::schedule::ReadPolicy {
        crate::ocr::schedule::ReadPolicy {
            labels: self.labels.clone(),
            interval_s: self.interval_s,
            max_per_frame: self.max_per_frame,
            ..Default::default()
        }
    }
}

//! Output records shared by the CLI's JSON Lines, the event log and MQTT payloads, so the three
//! never drift apart.

use serde::{Deserialize, Serialize};

use crate::detect::Detection;

/// One line of `lookout detect --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetectRecord {
    pub source: String,
    pub width: u32,
    pub height: u32,
    pub model: String,
    pub inference_ms: f64,
    pub detections: Vec<Detection>,
}

/// A line of `lookout detect --json` for an input that could not be processed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetectError {
    pub source: String,
    pub error: String,
}

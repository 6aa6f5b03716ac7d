//! # lookout
//!
//! An edge-inference runtime: frames from a camera, file or pipe → int8/fp32 detectors run by
//! [tract](https://github.com/sonos/tract) → tracks, rules and scene descriptions → MQTT.
//!
//! Data flows one way; each stage sits behind a trait so it can be tested alone:
//!
//! ```text
//! FrameSource ─Frame─▶ Detector ─Detections─▶ Tracker ─Tracks─▶ Rules/Describer ─Events─▶ Sink
//! ```
//!
//! [`capture`] reads frames, [`detect`] runs the models on [`engine`], [`track`] follows
//! objects, [`scene`] turns tracks into events, alerts and descriptions, and [`pipeline`] runs
//! those stages as a frame loop into its sinks (JSON Lines, the terminal, [`mqtt`]). [`vlm`] and
//! [`ground`] answer questions about a frame; the binary's subcommands are thin layers over
//! [`pipeline::Runtime`] and the rest.

pub mod annotate;
pub mod capture;
pub mod config;
pub mod detect;
pub mod embed;
pub mod engine;
pub mod error;
pub mod geometry;
pub mod ground;
pub mod http;
pub mod imageio;
pub mod models;
pub mod mqtt;
pub mod ocr;
pub mod pipeline;
pub mod scene;
pub mod schema;
pub mod segment;
pub mod store;
pub mod track;
pub mod util;
pub mod vlm;

pub use detect::{Detection, Detector, DetectorOptions, Manifest, ModelDetector};
pub use error::{Error, Result};
pub use geometry::BBox;

/// The cargo profile this crate was built with, `debug` or `release` (see build.rs), for reports
/// that name the build they timed.
pub const BUILD_PROFILE: &str = env!("LOOKOUT_BUILD_PROFILE");

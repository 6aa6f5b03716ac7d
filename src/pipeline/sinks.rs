//! Where the frame loop's records go: the [`Output`] they share and every [`Sink`] that takes them
//! (JSON Lines, readable terminal lines, MQTT, an in-memory collector).
//!
//! The records' own serde types are the JSON Lines objects and the MQTT payload bodies, so the
//! log, the broker and the CLI never drift apart: [`payload`] names the typed MQTT payloads
//! (`Envelope<record>`), and [`MqttSink`] publishes exactly those types.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::stats::Stats;
use crate::detect::Detection;
use crate::error::{Error, Result};
use crate::mqtt::topics::validate_segment;
use crate::mqtt::{MessageClass, PublisherHandle, PublisherStats};
use crate::scene::{Alert, AlertType, Event, SceneDescription};

/// The typed MQTT payloads `lookout run` publishes: the envelope with the pipeline's own record
/// flattened in. A subscriber written in Rust deserialises a message on `alerts` into
/// [`payload::AlertPayload`], and so on; `tests/events_schema.rs` round-trips every record of a
/// run through these.
pub mod payload {
    pub use super::{FrameDetections, PipelineStats};
    use crate::mqtt::Envelope;
    pub use crate::scene::{Alert, Event, SceneDescription};

    /// `<root>/<device>/alerts`
    pub type AlertPayload = Envelope<Alert>;
    /// `<root>/<device>/events`
    pub type EventPayload = Envelope<Event>;
    /// `<root>/<device>/scene`
    pub type ScenePayload = Envelope<SceneDescription>;
    /// `<root>/<device>/detections`
    pub type DetectionsPayload = Envelope<FrameDetections>;
    /// `<root>/<device>/stats`
    pub type StatsPayload = Envelope<PipelineStats>;
}

/// Everything the pipeline emits, in one JSON shape: `{"record": "event"|"alert"|"scene"|"detections"|"stats", ...}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum Output {
    Event(Event),
    Alert(Alert),
    Scene(SceneDescription),
    Detections(FrameDetections),
    Stats(Stats),
    /// Annotated JPEG of the frame an alert fired on. Not written to JSON Lines.
    #[serde(skip)]
    Snapshot(Snapshot),
    /// A frame events were raised on, for the event store's crops (only with `[store]`). Not
    /// written anywhere else.
    #[serde(skip)]
    Frame(FrameRef),
}

/// Frames on their way to the store at most; beyond this a frame is not passed on (its
/// events keep their previous crop), so a slow disk cannot pile up pictures in memory.
const FRAMES_IN_FLIGHT: usize = 4;
static FRAMES_OUT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A frame shared with the store; counted while it (or a clone) lives.
#[derive(Debug)]
pub struct FrameRef {
    pub camera: String,
    pub frame_id: u64,
    pub image: Arc<image::RgbImage>,
}

impl FrameRef {
    /// `None` while [`FRAMES_IN_FLIGHT`] frames are already on their way.
    pub fn new(camera: &str, frame_id: u64, image: Arc<image::RgbImage>) -> Option<FrameRef> {
        use std::sync::atomic::Ordering;
        if FRAMES_OUT.fetch_add(1, Ordering::AcqRel) >= FRAMES_IN_FLIGHT {
            FRAMES_OUT.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(FrameRef {
            camera: camera.to_string(),
            frame_id,
            image,
        })
    }
}

impl Clone for FrameRef {
    fn clone(&self) -> Self {
        FRAMES_OUT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        FrameRef {
            camera: self.camera.clone(),
            frame_id: self.frame_id,
            image: self.image.clone(),
        }
    }
}

impl Drop for FrameRef {
    fn drop(&mut self) {
        FRAMES_OUT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub camera: String,
    /// The alert's first label: the snapshot also goes to `snapshot/<camera>/<label>`.
    pub label: Option<String>,
    pub alert_id: String,
    pub jpeg: Vec<u8>,
}

impl Snapshot {
    /// The label when it can be a topic level.
    fn topic_label(&self) -> Option<&str> {
        self.label
            .as_deref()
            .filter(|l| validate_segment("label", l).is_ok())
    }

    /// Where the alert's snapshot is, relative to `<root>/<device>/` (the alert's `snapshot`):
    /// `snapshot/<camera>/<label>`, or `snapshot/<camera>` for an alert without a label.
    pub fn topic(&self) -> String {
        match self.topic_label() {
            Some(l) => format!("snapshot/{}/{l}", self.camera),
            None => format!("snapshot/{}", self.camera),
        }
    }
}

/// `stats`: the publisher's counters next to the pipeline's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineStats {
    pub mqtt: PublisherStats,
    pub pipeline: Stats,
}

/// One frame's detections (low priority, droppable).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameDetections {
    pub camera: String,
    pub frame_id: u64,
    #[serde(rename = "frame_ts")]
    pub ts: f64,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
}

/// Where outputs go: a JSON Lines file, MQTT, a test collector.
pub trait Sink: Send {
    fn send(&mut self, out: &Output) -> Result<()>;
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Writes one JSON object per line (snapshots are skipped).
pub struct JsonlSink<W: Write + Send> {
    w: W,
    flush_each: bool,
}

impl<W: Write + Send> JsonlSink<W> {
    /// `flush_each`: flush after every record (a live terminal or a tailing reader).
    pub fn new(w: W, flush_each: bool) -> Self {
        JsonlSink { w, flush_each }
    }
}

impl<W: Write + Send> Sink for JsonlSink<W> {
    fn send(&mut self, out: &Output) -> Result<()> {
        if matches!(out, Output::Snapshot(_) | Output::Frame(_)) {
            return Ok(());
        }
        let line =
            serde_json::to_string(out).map_err(|e| Error::Other(format!("serialise: {e}")))?;
        writeln!(self.w, "{line}").map_err(|e| Error::Other(format!("write: {e}")))?;
        if self.flush_each {
            self.w
                .flush()
                .map_err(|e| Error::Other(format!("flush: {e}")))?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        self.w
            .flush()
            .map_err(|e| Error::Other(format!("flush: {e}")))
    }
}

/// Readable one-liners for people watching a terminal: events, alerts, scene text and stats
/// (detections and snapshots are left out; they are for machines).
pub struct ReadableSink<W: Write + Send> {
    w: W,
    /// Start each line with `[<camera>] ` (several cameras in one run).
    camera_names: bool,
}

impl<W: Write + Send> ReadableSink<W> {
    pub fn new(w: W) -> Self {
        ReadableSink {
            w,
            camera_names: false,
        }
    }

    /// Lines start with the camera they are about, for runs with several cameras.
    pub fn with_camera_names(mut self, on: bool) -> Self {
        self.camera_names = on;
        self
    }
}

/// The camera a record is about, when it names one.
fn camera_of(out: &Output) -> Option<&str> {
    match out {
        Output::Event(e) => Some(&e.camera),
        Output::Alert(a) => Some(&a.camera),
        Output::Scene(d) => Some(&d.camera),
        Output::Stats(s) => Some(&s.camera),
        Output::Detections(d) => Some(&d.camera),
        Output::Snapshot(_) | Output::Frame(_) => None,
    }
}

/// The line [`ReadableSink`] prints for `out`, if any.
pub fn readable_line(out: &Output) -> Option<String> {
    Some(match out {
        Output::Alert(a) if a.message_type == AlertType::Update => format!(
            "ALERT [{}] {} (rule '{}', frame {}): {}",
            format!("{:?}", a.severity).to_lowercase(),
            a.message,
            a.rule,
            a.frame_id,
            a.verification
                .as_ref()
                .map(|v| format!("{:?}", v.status).to_lowercase())
                .unwrap_or_default()
        ),
        Output::Alert(a) => format!(
            "ALERT [{}] {} (rule '{}', frame {})",
            format!("{:?}", a.severity).to_lowercase(),
            a.message,
            a.rule,
            a.frame_id
        ),
        Output::Event(e) => format!(
            "event {:<6} {} #{} at [{:.0} {:.0} {:.0} {:.0}]{}",
            format!("{:?}", e.kind).to_lowercase(),
            e.label,
            e.track_id,
            e.after.bbox.x1,
            e.after.bbox.y1,
            e.after.bbox.x2,
            e.after.bbox.y2,
            if e.after.current_zones.is_empty() {
                String::new()
            } else {
                format!(" in {}", e.after.current_zones.join(", "))
            }
        ),
        Output::Scene(d) => format!("scene: {}", d.text),
        Output::Stats(s) => format!(
            "stats: {} frames, {:.1} fps, inference {:.1} ms, latency {:.1} ms, dropped {}, tracks {}{}",
            s.frames_processed,
            s.fps,
            s.inference_ms,
            s.latency_ms,
            s.frames_dropped,
            s.tracks,
            match s.health.last_frame_age_s {
                Some(age) if !s.health.connected => format!(", camera down ({age:.0} s)"),
                _ => String::new(),
            }
        ),
        Output::Detections(_) | Output::Snapshot(_) | Output::Frame(_) => return None,
    })
}

impl<W: Write + Send> Sink for ReadableSink<W> {
    fn send(&mut self, out: &Output) -> Result<()> {
        let Some(line) = readable_line(out) else {
            return Ok(());
        };
        let r = match camera_of(out).filter(|_| self.camera_names) {
            Some(c) => writeln!(self.w, "[{c}] {line}"),
            None => writeln!(self.w, "{line}"),
        };
        r.map_err(|e| Error::Other(format!("write: {e}")))
    }
    fn flush(&mut self) -> Result<()> {
        self.w
            .flush()
            .map_err(|e| Error::Other(format!("flush: {e}")))
    }
}

/// Collects outputs in memory (tests, embedding).
#[derive(Clone, Default)]
pub struct CollectSink(pub Arc<Mutex<Vec<Output>>>);

impl Sink for CollectSink {
    fn send(&mut self, out: &Output) -> Result<()> {
        if let Ok(mut v) = self.0.lock() {
            v.push(out.clone());
        }
        Ok(())
    }
}

/// Publishes the pipeline's records through the publisher's store-and-forward spool, each as
/// its [`payload`] type: the record flattened into the envelope, as it is.
pub struct MqttSink {
    publisher: PublisherHandle,
}

impl MqttSink {
    pub fn new(publisher: PublisherHandle) -> Self {
        MqttSink { publisher }
    }
}

impl Sink for MqttSink {
    fn send(&mut self, out: &Output) -> Result<()> {
        let p = &self.publisher;
        let t = p.topics();
        match out {
            Output::Alert(a) => {
                p.publish_json(MessageClass::Alert, t.alerts(), a)?;
                // The alert is on disk before anything else (the JSON Lines log, the terminal)
                // reports it, so a crash right after cannot lose an alert that was reported.
                if !p.sync(Duration::from_secs(2)) {
                    log::warn!("mqtt: alert {} not yet on disk after 2 s", a.id);
                }
                Ok(())
            }
            Output::Event(e) => p.publish_json(MessageClass::Event, t.events(), e).map(drop),
            Output::Scene(s) => p.publish_json(MessageClass::Scene, t.scene(), s).map(drop),
            Output::Detections(d) => p
                .publish_json(MessageClass::Detections, t.detections(), d)
                .map(drop),
            Output::Stats(s) => {
                let body = PipelineStats {
                    mqtt: p.stats(),
                    pipeline: s.clone(),
                };
                p.publish_json(MessageClass::Stats, t.stats(), body)
                    .map(drop)
            }
            Output::Snapshot(s) => {
                p.snapshot(&s.camera, s.jpeg.clone())?;
                match s.topic_label() {
                    Some(l) => p.publish(
                        MessageClass::Snapshot,
                        t.snapshot_of(&s.camera, l)?,
                        s.jpeg.clone(),
                    ),
                    None => Ok(()),
                }
            }
            Output::Frame(_) => Ok(()),
        }
    }
}

/// Feeds the web view (`[http]`): alerts, events and scene descriptions into its rings, stats into
/// its status and gauges. Frames reach it from the frame loop, not through here.
pub struct WebSink {
    state: Arc<crate::http::WebState>,
}

impl WebSink {
    pub fn new(state: Arc<crate::http::WebState>) -> Self {
        WebSink { state }
    }
}

impl Sink for WebSink {
    fn send(&mut self, out: &Output) -> Result<()> {
        let record =
            || serde_json::to_value(out).map_err(|e| Error::Other(format!("serialise: {e}")));
        match out {
            Output::Alert(a) => self.state.alert(a, record()?),
            Output::Event(e) => self.state.event(e.kind, record()?),
            Output::Scene(_) => self.state.scene(record()?),
            Output::Stats(s) => self
                .state
                .stats(record()?, s.fps, s.queue_depth, s.temperature_c),
            Output::Detections(_) | Output::Snapshot(_) | Output::Frame(_) => {}
        }
        Ok(())
    }
}

/// Hands events, alerts, scene text, snapshots and frames to the event store's thread
/// ([`crate::store::Ingest`]); an alert is committed before this returns (as the MQTT sink puts
/// it in the spool), everything else is queued and may be dropped when the store is behind.
pub struct StoreSink {
    ingest: Arc<crate::store::Ingest>,
    camera: String,
}

impl StoreSink {
    pub fn new(ingest: crate::store::Ingest, camera: &str) -> Self {
        Self::shared(Arc::new(ingest), camera)
    }

    /// One of several cameras' sinks feeding one store thread.
    pub fn shared(ingest: Arc<crate::store::Ingest>, camera: &str) -> Self {
        StoreSink {
            ingest,
            camera: camera.to_string(),
        }
    }
}

impl Sink for StoreSink {
    fn send(&mut self, out: &Output) -> Result<()> {
        use crate::store::Incoming;
        let m = match out {
            Output::Event(e) => Incoming::Event(e.clone()),
            Output::Alert(a) => {
                self.ingest.send(Incoming::Alert(a.clone()));
                if !self.ingest.sync(Duration::from_secs(10)) {
                    log::warn!("store: alert {} not yet committed after 10 s", a.id);
                }
                return Ok(());
            }
            Output::Scene(s) => Incoming::Scene {
                // Several cameras: the description names its own.
                camera: if s.camera.is_empty() {
                    self.camera.clone()
                } else {
                    s.camera.clone()
                },
                description: s.clone(),
            },
            Output::Snapshot(s) => Incoming::Snapshot {
                camera: s.camera.clone(),
                alert_id: s.alert_id.clone(),
                jpeg: s.jpeg.clone(),
            },
            Output::Frame(f) => Incoming::Frame {
                camera: f.camera.clone(),
                frame_id: f.frame_id,
                image: f.image.clone(),
                hold: Some(Box::new(f.clone())),
            },
            Output::Detections(_) | Output::Stats(_) => return Ok(()),
        };
        self.ingest.send(m);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        // The run is ending: clips still in their post-roll are written with what they have.
        self.ingest.finish_clips();
        if !self.ingest.sync(Duration::from_secs(10)) {
            log::warn!("store: not everything committed after 10 s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn a_snapshot_is_named_by_camera_and_label() {
        let mut s = Snapshot {
            camera: "plaza".into(),
            label: Some("person".into()),
            alert_id: "a".into(),
            jpeg: vec![],
        };
        assert_eq!(s.topic(), "snapshot/plaza/person");
        s.label = Some("a/b".into());
        assert_eq!(s.topic(), "snapshot/plaza");
        s.label = None;
        assert_eq!(s.topic(), "snapshot/plaza");
    }

    #[test]
    fn jsonl_skips_snapshots_and_readable_skips_detections() {
        let snap = Output::Snapshot(Snapshot {
            camera: "c".into(),
            label: None,
            alert_id: "a".into(),
            jpeg: vec![1],
        });
        let dets = Output::Detections(FrameDetections {
            camera: "c".into(),
            frame_id: 3,
            ts: 1.0,
            width: 4,
            height: 4,
            detections: vec![],
        });
        let stats = Output::Stats(Stats {
            frames_processed: 7,
            ..Default::default()
        });
        let mut buf = Vec::new();
        let mut j = JsonlSink::new(&mut buf, false);
        for o in [&snap, &dets, &stats] {
            j.send(o).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["record"], "detections");
        assert_eq!(records[1]["record"], "stats");
        assert!(readable_line(&dets).is_none() && readable_line(&snap).is_none());
        assert!(readable_line(&stats)
            .unwrap()
            .starts_with("stats: 7 frames"));
    }

    #[test]
    fn readable_lines_name_the_camera_when_asked() {
        let stats = Output::Stats(Stats {
            camera: "rear".into(),
            ..Default::default()
        });
        let mut buf = Vec::new();
        ReadableSink::new(&mut buf)
            .with_camera_names(true)
            .send(&stats)
            .unwrap();
        ReadableSink::new(&mut buf).send(&stats).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("[rear] stats: "), "{text}");
        assert!(lines[1].starts_with("stats: "), "{text}");
    }
}

//! Where the frame loop's records go: the [`Output`] they share and every [`Sink`] that takes them
//! (JSON Lines, readable terminal lines, MQTT, an in-memory collector).
//!
//! The records' own serde types are the JSON Lines objects and the MQTT payload bodies, so the
//! log, the broker and the CLI never drift apart.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::stats::Stats;
use crate::detect::Detection;
use crate::error::{Error, Result};
use crate::mqtt::{MessageClass, PublisherHandle};
use crate::scene::{Alert, Event, SceneDescription};

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
    pub alert_id: String,
    pub jpeg: Vec<u8>,
}

/// One frame's detections (low priority, droppable).
#[derive(Debug, Clone, Serialize)]
pub struct FrameDetections {
    pub camera: String,
    pub frame_id: u64,
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
}

impl<W: Write + Send> ReadableSink<W> {
    pub fn new(w: W) -> Self {
        ReadableSink { w }
    }
}

/// The line [`ReadableSink`] prints for `out`, if any.
pub fn readable_line(out: &Output) -> Option<String> {
    Some(match out {
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
            if e.after.zones.is_empty() {
                String::new()
            } else {
                format!(" in {}", e.after.zones.join(", "))
            }
        ),
        Output::Scene(d) => format!("scene: {}", d.text),
        Output::Stats(s) => format!(
            "stats: {} frames, {:.1} fps, inference {:.1} ms, latency {:.1} ms, dropped {}, tracks {}",
            s.frames_processed, s.fps, s.inference_ms, s.latency_ms, s.frames_dropped, s.tracks
        ),
        Output::Detections(_) | Output::Snapshot(_) | Output::Frame(_) => return None,
    })
}

impl<W: Write + Send> Sink for ReadableSink<W> {
    fn send(&mut self, out: &Output) -> Result<()> {
        match readable_line(out) {
            Some(line) => {
                writeln!(self.w, "{line}").map_err(|e| Error::Other(format!("write: {e}")))
            }
            None => Ok(()),
        }
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

/// Publishes the pipeline's records through the publisher's store-and-forward spool.
///
/// The envelope's `id`/`ts` (unique across restarts, for de-duplication) take those names; the
/// record's own are kept as `<record>_id` and `frame_ts`.
pub struct MqttSink {
    publisher: PublisherHandle,
}

impl MqttSink {
    pub fn new(publisher: PublisherHandle) -> Self {
        MqttSink { publisher }
    }
}

/// Serialise `rec`, renaming its `id`/`ts` so they do not collide with the envelope's.
fn body(rec: &impl Serialize, id_name: &str) -> Result<Value> {
    let mut v = serde_json::to_value(rec).map_err(|e| Error::Other(format!("serialise: {e}")))?;
    if let Value::Object(m) = &mut v {
        if let Some(id) = m.remove("id") {
            m.insert(id_name.to_string(), id);
        }
        if let Some(ts) = m.remove("ts") {
            m.insert("frame_ts".into(), ts);
        }
    }
    Ok(v)
}

impl Sink for MqttSink {
    fn send(&mut self, out: &Output) -> Result<()> {
        let p = &self.publisher;
        let t = p.topics();
        match out {
            Output::Alert(a) => {
                p.publish_json(MessageClass::Alert, t.alerts(), body(a, "alert_id")?)?;
                // The alert is on disk before anything else (the JSON Lines log, the terminal)
                // reports it, so a crash right after cannot lose an alert that was reported.
                if !p.sync(Duration::from_secs(2)) {
                    log::warn!("mqtt: alert {} not yet on disk after 2 s", a.id);
                }
                Ok(())
            }
            Output::Event(e) => p
                .publish_json(MessageClass::Event, t.events(), body(e, "event_id")?)
                .map(drop),
            Output::Scene(s) => p
                .publish_json(MessageClass::Scene, t.scene(), body(s, "scene_id")?)
                .map(drop),
            Output::Detections(d) => p
                .publish_json(
                    MessageClass::Detections,
                    t.detections(),
                    body(d, "detections_id")?,
                )
                .map(drop),
            Output::Stats(s) => {
                let mqtt = p.stats();
                let v = serde_json::json!({ "pipeline": body(s, "stats_id")?, "mqtt": mqtt });
                p.publish_json(MessageClass::Stats, t.stats(), v).map(drop)
            }
            Output::Snapshot(s) => p.snapshot(&s.camera, s.jpeg.clone()),
            Output::Frame(_) => Ok(()),
        }
    }
}

/// Hands events, alerts, scene text, snapshots and frames to the event store's thread
/// ([`crate::store::Ingest`]); an alert is committed before this returns (as the MQTT sink puts
/// it in the spool), everything else is queued and may be dropped when the store is behind.
pub struct StoreSink {
    ingest: crate::store::Ingest,
    camera: String,
}

impl StoreSink {
    pub fn new(ingest: crate::store::Ingest, camera: &str) -> Self {
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
                camera: self.camera.clone(),
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
        if !self.ingest.sync(Duration::from_secs(10)) {
            log::warn!("store: not everything committed after 10 s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mqtt_body_keeps_the_records_id_and_ts_under_other_names() {
        let v = body(
            &serde_json::json!({"id": "a1", "ts": 2.5, "x": 1}),
            "alert_id",
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"alert_id": "a1", "frame_ts": 2.5, "x": 1})
        );
    }

    #[test]
    fn jsonl_skips_snapshots_and_readable_skips_detections() {
        let snap = Output::Snapshot(Snapshot {
            camera: "c".into(),
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
}

//! [`WebState`]: what the web view shows, fed by the pipeline and read by the server — the newest
//! frame (a slot, not a queue), bounded rings of recent records, the status and the metrics.
//!
//! The frame loop only drops an `Arc` of its frame and a copy of the tracks into the slot; the
//! JPEG is drawn and encoded later, on a server thread, once per frame however many viewers there
//! are, and only when someone is looking. So the web view never slows detection, and costs
//! nothing while nobody watches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;
use serde_json::{json, Value};

use super::metrics::{Metrics, StageSample, Totals};
use crate::detect::Detection;
use crate::mqtt::PublisherStats;
use crate::scene::{Alert, EventType, RuleConfig, RuleKind};
use crate::track::{Track, TrackState};

/// A zone or line of the rules, in normalised coordinates (0..1, y down), for drawing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    pub name: String,
    /// `zone` or `line`.
    pub kind: RuleKind,
    pub points: Vec<[f32; 2]>,
    pub enabled: bool,
}

/// The rules' geometry the page draws over the stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overlay {
    pub shapes: Vec<Shape>,
}

impl Overlay {
    /// Every zone polygon and line among `rules` (other kinds have no geometry of their own).
    pub fn from_rules(rules: &[RuleConfig]) -> Overlay {
        let shapes = rules
            .iter()
            .filter_map(|r| {
                let points = match (r.kind, &r.polygon, &r.line) {
                    (RuleKind::Zone, Some(p), _) => p.clone(),
                    (RuleKind::Line, _, Some(l)) => l.to_vec(),
                    _ => return None,
                };
                Some(Shape {
                    name: r.name.clone(),
                    kind: r.kind,
                    points,
                    enabled: r.enabled,
                })
            })
            .collect();
        Overlay { shapes }
    }
}

/// What the web view is about and how much it keeps.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub device: String,
    pub camera: String,
    /// Records kept per kind (alerts, events, scene descriptions) for `/api/events`.
    pub recent: usize,
    /// JPEG quality of the stream and snapshots, 1..100.
    pub jpeg_quality: u8,
}

/// The newest frame as the pipeline left it: not yet drawn on or encoded.
struct Slot {
    /// Counts frames put in the slot; viewers wait for it to change.
    seq: u64,
    frame_id: u64,
    ts: f64,
    image: Option<Arc<RgbImage>>,
    tracks: Vec<Track>,
}

/// The slot's frame, drawn and encoded.
struct Encoded {
    seq: u64,
    jpeg: Arc<Vec<u8>>,
}

/// A record kept for `/api/events`, numbered in arrival order across kinds.
struct Kept {
    seq: u64,
    record: Value,
}

/// Bounded rings of recent records, one per kind, so a flood of events cannot push the last
/// alerts out.
#[derive(Default)]
struct Recent {
    next: u64,
    alerts: VecDeque<Kept>,
    events: VecDeque<Kept>,
    scene: VecDeque<Kept>,
    /// The last stats record, for `/api/status`.
    stats: Value,
}

/// How the server asks the publisher for its counters, at the moment it needs them.
pub type MqttProbe = Box<dyn Fn() -> PublisherStats + Send + Sync>;

/// Shared between the pipeline (writer) and the HTTP server (reader).
pub struct WebState {
    opts: WebOptions,
    overlay: Overlay,
    slot: Mutex<Slot>,
    new_frame: Condvar,
    encoded: Mutex<Option<Encoded>>,
    recent: Mutex<Recent>,
    metrics: Metrics,
    mqtt: Mutex<Option<MqttProbe>>,
    recall: Mutex<Option<super::RecallFn>>,
    pub(super) streams: AtomicUsize,
    /// Set when the run ends, so open streams finish.
    closed: AtomicBool,
}

impl WebState {
    pub fn new(opts: WebOptions, overlay: Overlay) -> Arc<WebState> {
        Arc::new(WebState {
            metrics: Metrics::new(&opts.device, &opts.camera),
            opts,
            overlay,
            slot: Mutex::new(Slot {
                seq: 0,
                frame_id: 0,
                ts: 0.0,
                image: None,
                tracks: Vec::new(),
            }),
            new_frame: Condvar::new(),
            encoded: Mutex::new(None),
            recent: Mutex::new(Recent::default()),
            mqtt: Mutex::new(None),
            recall: Mutex::new(None),
            streams: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    pub fn camera(&self) -> &str {
        &self.opts.camera
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Where the MQTT numbers come from, when the run publishes.
    pub fn set_mqtt_probe(&self, probe: MqttProbe) {
        if let Ok(mut m) = self.mqtt.lock() {
            *m = Some(probe);
        }
    }

    /// Who answers `/api/search` and `/api/summary`, when the run keeps a store.
    pub fn set_recall(&self, f: super::RecallFn) {
        if let Ok(mut r) = self.recall.lock() {
            *r = Some(f);
        }
    }

    /// The store's answerer (cloned out, so a slow search holds no lock).
    pub fn recall(&self) -> Option<super::RecallFn> {
        self.recall.lock().ok().and_then(|r| r.clone())
    }

    /// The frame loop finished a frame: keep it as the newest (cheap: an `Arc` and the tracks)
    /// and count its times.
    pub fn frame(
        &self,
        frame_id: u64,
        ts: f64,
        image: Arc<RgbImage>,
        tracks: &[Track],
        times: &StageSample,
        totals: Totals,
    ) {
        let shown: Vec<Track> = tracks
            .iter()
            .filter(|t| t.state == TrackState::Confirmed)
            .cloned()
            .collect();
        self.metrics.frame(times, totals, shown.len());
        if let Ok(mut s) = self.slot.lock() {
            s.seq += 1;
            s.frame_id = frame_id;
            s.ts = ts;
            s.image = Some(image);
            s.tracks = shown;
        }
        self.new_frame.notify_all();
    }

    /// An alert (as its JSON record) went out.
    pub fn alert(&self, a: &Alert, record: Value) {
        self.metrics.alert(&a.rule, a.severity);
        self.keep(|r| &mut r.alerts, record);
    }

    pub fn event(&self, kind: EventType, record: Value) {
        self.metrics.event(kind);
        self.keep(|r| &mut r.events, record);
    }

    pub fn scene(&self, record: Value) {
        self.metrics.description();
        self.keep(|r| &mut r.scene, record);
    }

    /// A periodic stats record: shown by `/api/status`, its gauges by `/metrics`.
    pub fn stats(&self, record: Value, fps: f64, queue_depth: usize, temperature_c: Option<f64>) {
        self.metrics.health(fps, queue_depth, temperature_c);
        if let Ok(mut r) = self.recent.lock() {
            r.stats = record;
        }
    }

    fn keep(&self, ring: impl Fn(&mut Recent) -> &mut VecDeque<Kept>, record: Value) {
        let cap = self.opts.recent.max(1);
        let Ok(mut r) = self.recent.lock() else {
            return;
        };
        r.next += 1;
        let seq = r.next;
        let q = ring(&mut r);
        while q.len() >= cap {
            q.pop_front();
        }
        q.push_back(Kept { seq, record });
    }

    /// The run is over: open streams end after their current frame.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.new_frame.notify_all();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Records after `since` (a `seq` from an earlier answer), oldest first, at most `limit`
    /// (the newest ones), each with its `seq`.
    pub fn recent(&self, since: u64, limit: usize) -> Value {
        let Ok(r) = self.recent.lock() else {
            return json!({ "next": 0, "records": [] });
        };
        let mut all: Vec<&Kept> = r
            .alerts
            .iter()
            .chain(&r.events)
            .chain(&r.scene)
            .filter(|k| k.seq > since)
            .collect();
        all.sort_by_key(|k| k.seq);
        let skip = all.len().saturating_sub(limit);
        let records: Vec<Value> = all[skip..]
            .iter()
            .map(|k| {
                let mut v = k.record.clone();
                if let Value::Object(m) = &mut v {
                    m.insert("seq".into(), json!(k.seq));
                }
                v
            })
            .collect();
        json!({ "next": r.next, "records": records })
    }

    /// `/api/status`: who this is, the newest frame's tracks, the last stats record, MQTT.
    pub fn status(&self) -> Value {
        let (frame, tracks) = match self.slot.lock() {
            Ok(s) => {
                let (w, h) = s.image.as_ref().map(|i| i.dimensions()).unwrap_or((0, 0));
                (
                    json!({ "frame_id": s.frame_id, "ts": s.ts, "width": w, "height": h, "seq": s.seq }),
                    serde_json::to_value(&s.tracks).unwrap_or(Value::Null),
                )
            }
            Err(_) => (Value::Null, Value::Null),
        };
        let stats = self
            .recent
            .lock()
            .map(|r| r.stats.clone())
            .unwrap_or(Value::Null);
        json!({
            "device": self.opts.device,
            "camera": self.opts.camera,
            "frame": frame,
            "tracks": tracks,
            "stats": stats,
            "mqtt": self.mqtt_now().map(|s| json!(s)).unwrap_or(Value::Null),
            "overlay": self.overlay,
            "streams": self.streams.load(Ordering::Relaxed),
        })
    }

    fn mqtt_now(&self) -> Option<PublisherStats> {
        let m = self.mqtt.lock().ok()?;
        m.as_ref().map(|probe| probe())
    }

    /// `/metrics`, with the MQTT numbers read now.
    pub fn metrics_text(&self, openmetrics: bool) -> String {
        if let Some(s) = self.mqtt_now() {
            self.metrics.mqtt(&s);
        }
        if openmetrics {
            self.metrics.openmetrics_text()
        } else {
            self.metrics.prometheus_text()
        }
    }

    pub(super) fn frame_seq(&self) -> u64 {
        self.slot.lock().map(|s| s.seq).unwrap_or(0)
    }

    /// Wait up to `timeout` for a frame newer than `seen`; its number, if one came.
    pub(super) fn wait_newer(&self, seen: u64, timeout: Duration) -> Option<u64> {
        let s = self.slot.lock().ok()?;
        let (s, _) = self
            .new_frame
            .wait_timeout_while(s, timeout, |s| s.seq <= seen && !self.is_closed())
            .ok()?;
        (s.seq > seen).then_some(s.seq)
    }

    /// The newest frame with its tracks drawn, as JPEG; encoded at most once per frame.
    pub(super) fn jpeg(&self) -> Option<(u64, Arc<Vec<u8>>)> {
        // Holding `encoded` while encoding makes concurrent viewers wait for this one encode
        // instead of each doing their own.
        let mut enc = self.encoded.lock().ok()?;
        let (seq, image, tracks) = {
            let s = self.slot.lock().ok()?;
            (s.seq, s.image.clone()?, s.tracks.clone())
        };
        if let Some(e) = enc.as_ref().filter(|e| e.seq == seq) {
            return Some((seq, e.jpeg.clone()));
        }
        let jpeg = Arc::new(draw(&image, &tracks, self.opts.jpeg_quality)?);
        *enc = Some(Encoded {
            seq,
            jpeg: jpeg.clone(),
        });
        Some((seq, jpeg))
    }
}

/// `image` with each track's box and `#id label` drawn, as JPEG.
fn draw(image: &RgbImage, tracks: &[Track], quality: u8) -> Option<Vec<u8>> {
    let mut canvas = image.clone();
    let boxes: Vec<Detection> = tracks
        .iter()
        .map(|t| Detection {
            label: format!("#{} {}", t.id, t.label).into(),
            class_id: t.class_id,
            score: t.score,
            bbox: t.bbox,
        })
        .collect();
    crate::annotate::annotate(&mut canvas, &boxes);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality.clamp(1, 100))
        .encode_image(&canvas)
        .map_err(|e| log::warn!("http: encoding the stream frame: {e}"))
        .ok()?;
    Some(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(recent: usize) -> Arc<WebState> {
        WebState::new(
            WebOptions {
                device: "d".into(),
                camera: "c".into(),
                recent,
                jpeg_quality: 70,
            },
            Overlay::default(),
        )
    }

    #[test]
    fn each_ring_keeps_its_newest_records_only() {
        let s = state(2);
        for i in 0..5 {
            s.event(EventType::Update, json!({ "record": "event", "i": i }));
        }
        s.scene(json!({ "record": "scene" }));
        let v = s.recent(0, 100);
        let recs = v["records"].as_array().unwrap();
        assert_eq!(recs.len(), 3, "{v}");
        assert_eq!(recs[0]["i"], 3);
        assert_eq!(recs[2]["record"], "scene");
        assert_eq!(v["next"], 6);
        assert_eq!(s.recent(5, 100)["records"].as_array().unwrap().len(), 1);
        assert_eq!(s.recent(0, 1)["records"][0]["record"], "scene");
    }

    #[test]
    fn a_frame_is_encoded_once_and_waiters_see_it() {
        let s = state(4);
        assert!(s.jpeg().is_none(), "no frame yet");
        assert_eq!(s.wait_newer(0, Duration::from_millis(1)), None);
        let img = Arc::new(RgbImage::new(32, 24));
        s.frame(7, 1.0, img, &[], &StageSample::default(), Totals::default());
        assert_eq!(s.wait_newer(0, Duration::from_millis(1)), Some(1));
        let (seq, a) = s.jpeg().unwrap();
        let (_, b) = s.jpeg().unwrap();
        assert_eq!(seq, 1);
        assert!(Arc::ptr_eq(&a, &b), "the second viewer reuses the encode");
        assert_eq!(&a[..2], &[0xFF, 0xD8]);
        assert_eq!(s.status()["frame"]["width"], 32);
    }
}

//! `/metrics`: the run's numbers as Prometheus metrics, kept with the `prometheus-client` crate
//! (the Prometheus project's own Rust client) and written in the Prometheus text format 0.0.4, or
//! OpenMetrics when a scraper asks for it.
//!
//! The pipeline hands over running totals (frames, drops) and each frame's stage times; the
//! totals become counters by adding what is new since the last frame, so a counter never goes
//! down even if the pipeline's own numbers were reset. MQTT numbers are read from the publisher
//! when a scrape comes in, so spool depth is never staler than the scrape.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::mqtt::PublisherStats;
use crate::scene::{EventType, Severity};

/// Running totals of the frame loop, as the pipeline counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub captured: u64,
    pub processed: u64,
    pub dropped: u64,
    pub bad: u64,
    pub detect_errors: u64,
    pub outputs_dropped: u64,
}

/// One frame's time in each stage, milliseconds (see `pipeline::StageTimes` for what each spans).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageSample {
    pub capture_ms: f64,
    pub queue_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub analyse_ms: f64,
    /// Capture done to analysis done.
    pub latency_ms: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: String,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorLabel {
    sensor: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

/// Seconds: 0.5 ms to 5 s, roughly ×2 apart — a Pi's inference (~50–300 ms) and a desktop's
/// (~5 ms) both land in the middle.
const STAGE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0,
];

type GaugeF = Gauge<f64, AtomicU64>;

/// Every metric `/metrics` shows, and the registry that writes them.
pub struct Metrics {
    registry: Registry,
    frames_captured: Counter,
    frames_processed: Counter,
    frames_dropped: Counter,
    bad_frames: Counter,
    detect_errors: Counter,
    outputs_dropped: Counter,
    fps: GaugeF,
    queue_depth: Gauge,
    tracks: Gauge,
    /// Empty (no sample at all) until the board reports a temperature, rather than a false 0.
    temperature: Family<SensorLabel, GaugeF>,
    stage_seconds: Family<StageLabel, Histogram>,
    latency_seconds: Histogram,
    alerts: Family<AlertLabels, Counter>,
    events: Family<KindLabel, Counter>,
    descriptions: Counter,
    stream_clients: Gauge,
    stream_frames: Counter,
    mqtt_connected: Gauge,
    mqtt_spool_depth: Gauge,
    mqtt_spool_bytes: Gauge,
    mqtt_reconnects: Counter,
    mqtt_sent: Counter,
    mqtt_acked: Counter,
    mqtt_dropped: Family<ClassLabel, Counter>,
    /// The totals last added, so the next call adds only the difference.
    last: Mutex<(Totals, PublisherStats)>,
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The type's name as records spell it (`new`, `update`, `end`, …).
fn event_name(k: EventType) -> String {
    match serde_json::to_value(k) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{k:?}").to_lowercase(),
    }
}

/// Adds to `c` what `now` has beyond `before` (nothing if the source went backwards).
fn advance(c: &Counter, before: u64, now: u64) {
    if now > before {
        c.inc_by(now - before);
    }
}

impl Metrics {
    /// Metrics named `lookout_…`, each labelled with the device and camera.
    pub fn new(device: &str, camera: &str) -> Metrics {
        let labels = [
            ("device".into(), device.to_string().into()),
            ("camera".into(), camera.to_string().into()),
        ];
        let mut r = Registry::with_prefix_and_labels("lookout", labels.into_iter());
        let m = Metrics {
            registry: Registry::default(),
            frames_captured: Counter::default(),
            frames_processed: Counter::default(),
            frames_dropped: Counter::default(),
            bad_frames: Counter::default(),
            detect_errors: Counter::default(),
            outputs_dropped: Counter::default(),
            fps: GaugeF::default(),
            queue_depth: Gauge::default(),
            tracks: Gauge::default(),
            temperature: Family::default(),
            stage_seconds: Family::new_with_constructor(|| Histogram::new(STAGE_BUCKETS)),
            latency_seconds: Histogram::new(STAGE_BUCKETS),
            alerts: Family::default(),
            events: Family::default(),
            descriptions: Counter::default(),
            stream_clients: Gauge::default(),
            stream_frames: Counter::default(),
            mqtt_connected: Gauge::default(),
            mqtt_spool_depth: Gauge::default(),
            mqtt_spool_bytes: Gauge::default(),
            mqtt_reconnects: Counter::default(),
            mqtt_sent: Counter::default(),
            mqtt_acked: Counter::default(),
            mqtt_dropped: Family::default(),
            last: Mutex::new(Default::default()),
        };
        r.register(
            "frames_captured",
            "Frames read from the source",
            m.frames_captured.clone(),
        );
        r.register(
            "frames_processed",
            "Frames the detector finished",
            m.frames_processed.clone(),
        );
        r.register(
            "frames_dropped",
            "Frames dropped because detection was behind (live sources)",
            m.frames_dropped.clone(),
        );
        r.register(
            "bad_frames",
            "Frames the source could not decode (skipped)",
            m.bad_frames.clone(),
        );
        r.register(
            "detect_errors",
            "Frames the detector failed on",
            m.detect_errors.clone(),
        );
        r.register(
            "outputs_dropped",
            "Droppable records (detections, snapshots, stats) the sinks could not take in time",
            m.outputs_dropped.clone(),
        );
        r.register(
            "fps",
            "Processed frames per second over the last stats interval",
            m.fps.clone(),
        );
        r.register(
            "queue_depth",
            "Frames waiting for a detector at the last stats record",
            m.queue_depth.clone(),
        );
        r.register(
            "tracks",
            "Objects tracked in the newest frame",
            m.tracks.clone(),
        );
        r.register_with_unit(
            "board_temperature",
            "SoC temperature, where the board reports it",
            Unit::Celsius,
            m.temperature.clone(),
        );
        r.register_with_unit(
            "stage_duration",
            "Time one frame spent in each stage (capture, queue, preprocess, inference, \
             postprocess, analyse; publish is per output record)",
            Unit::Seconds,
            m.stage_seconds.clone(),
        );
        r.register_with_unit(
            "frame_latency",
            "Capture done to analysis done, per frame",
            Unit::Seconds,
            m.latency_seconds.clone(),
        );
        r.register("alerts", "Alerts raised, per rule", m.alerts.clone());
        r.register(
            "events",
            "Object events, per type (new, update, end)",
            m.events.clone(),
        );
        r.register(
            "descriptions",
            "Scene descriptions written",
            m.descriptions.clone(),
        );
        r.register(
            "http_stream_clients",
            "MJPEG viewers connected now",
            m.stream_clients.clone(),
        );
        r.register(
            "http_stream_frames",
            "JPEG frames sent to MJPEG viewers",
            m.stream_frames.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while the MQTT connection is up",
            m.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_spool_depth",
            "Messages in the store-and-forward spool (queued or in flight)",
            m.mqtt_spool_depth.clone(),
        );
        r.register_with_unit(
            "mqtt_spool",
            "Size of the messages in the spool",
            Unit::Bytes,
            m.mqtt_spool_bytes.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "Successful MQTT connections after the first",
            m.mqtt_reconnects.clone(),
        );
        r.register(
            "mqtt_sent",
            "Messages handed to the MQTT connection (re-sends count again)",
            m.mqtt_sent.clone(),
        );
        r.register(
            "mqtt_acked",
            "Messages the broker acknowledged",
            m.mqtt_acked.clone(),
        );
        r.register(
            "mqtt_dropped",
            "Messages evicted from or refused by the spool, per class",
            m.mqtt_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// One frame through the loop: its stage times and the loop's totals after it.
    pub fn frame(&self, t: &StageSample, totals: Totals, tracks: usize) {
        for (stage, ms) in [
            ("capture", t.capture_ms),
            ("queue", t.queue_ms),
            ("preprocess", t.preprocess_ms),
            ("inference", t.inference_ms),
            ("postprocess", t.postprocess_ms),
            ("analyse", t.analyse_ms),
        ] {
            self.stage_seconds
                .get_or_create(&StageLabel { stage })
                .observe(ms / 1e3);
        }
        self.latency_seconds.observe(t.latency_ms / 1e3);
        self.tracks.set(tracks as i64);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let b = last.0;
        advance(&self.frames_captured, b.captured, totals.captured);
        advance(&self.frames_processed, b.processed, totals.processed);
        advance(&self.frames_dropped, b.dropped, totals.dropped);
        advance(&self.bad_frames, b.bad, totals.bad);
        advance(&self.detect_errors, b.detect_errors, totals.detect_errors);
        advance(
            &self.outputs_dropped,
            b.outputs_dropped,
            totals.outputs_dropped,
        );
        last.0 = Totals {
            captured: b.captured.max(totals.captured),
            processed: b.processed.max(totals.processed),
            dropped: b.dropped.max(totals.dropped),
            bad: b.bad.max(totals.bad),
            detect_errors: b.detect_errors.max(totals.detect_errors),
            outputs_dropped: b.outputs_dropped.max(totals.outputs_dropped),
        };
    }

    /// Handing one output record to the sinks took `s` seconds.
    pub fn publish(&self, s: f64) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage: "publish" })
            .observe(s);
    }

    pub fn alert(&self, rule: &str, severity: Severity) {
        self.alerts
            .get_or_create(&AlertLabels {
                rule: rule.to_string(),
                severity: severity_name(severity),
            })
            .inc();
    }

    pub fn event(&self, kind: EventType) {
        self.events
            .get_or_create(&KindLabel {
                kind: event_name(kind),
            })
            .inc();
    }

    pub fn description(&self) {
        self.descriptions.inc();
    }

    /// The numbers of a periodic stats record that are not running totals.
    pub fn health(&self, fps: f64, queue_depth: usize, temperature_c: Option<f64>) {
        self.fps.set(fps);
        self.queue_depth.set(queue_depth as i64);
        if let Some(t) = temperature_c {
            self.temperature
                .get_or_create(&SensorLabel {
                    sensor: "thermal_zone0",
                })
                .set(t);
        }
    }

    pub(super) fn stream_clients(&self, n: usize) {
        self.stream_clients.set(n as i64);
    }

    pub(super) fn stream_frame(&self) {
        self.stream_frames.inc();
    }

    /// The publisher's counters as they are now.
    pub fn mqtt(&self, s: &PublisherStats) {
        self.mqtt_connected.set(i64::from(s.connected));
        self.mqtt_spool_depth.set(s.spool_depth as i64);
        self.mqtt_spool_bytes.set(s.spool_bytes as i64);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let b = &last.1;
        advance(&self.mqtt_reconnects, b.reconnects, s.reconnects);
        advance(&self.mqtt_sent, b.sent, s.sent);
        advance(&self.mqtt_acked, b.acked, s.acked);
        for (class, n) in &s.dropped {
            let before = b.dropped.get(class).copied().unwrap_or(0);
            let c = self.mqtt_dropped.get_or_create(&ClassLabel {
                class: class.to_string(),
            });
            advance(&c, before, *n);
        }
        last.1 = s.clone();
    }

    /// The Prometheus text format, version 0.0.4.
    pub fn prometheus_text(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut s, &self.registry);
        s
    }

    /// OpenMetrics 1.0 text (ends with `# EOF`).
    pub fn openmetrics_text(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_become_counters_that_never_go_down() {
        let m = Metrics::new("d", "c");
        let t = |captured| Totals {
            captured,
            ..Default::default()
        };
        m.frame(&StageSample::default(), t(5), 1);
        m.frame(&StageSample::default(), t(3), 1);
        m.frame(&StageSample::default(), t(7), 1);
        assert_eq!(m.frames_captured.get(), 7);
        let text = m.prometheus_text();
        assert!(
            text.contains("lookout_frames_captured_total{device=\"d\",camera=\"c\"} 7"),
            "{text}"
        );
        assert!(m.openmetrics_text().ends_with("# EOF\n"));
    }

    #[test]
    fn alerts_are_counted_per_rule() {
        let m = Metrics::new("d", "c");
        m.alert("door", Severity::Warning);
        m.alert("door", Severity::Warning);
        m.alert("path", Severity::Info);
        let text = m.prometheus_text();
        assert!(
            text.contains("lookout_alerts_total{device=\"d\",camera=\"c\",rule=\"door\",severity=\"warning\"} 2"),
            "{text}"
        );
    }
}

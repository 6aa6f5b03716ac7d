//! The frame loop's health numbers: counters shared by its threads, per-stage latency windows and
//! the periodic [`Stats`] record built from them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::util::unix_now;

/// Periodic health record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub camera: String,
    #[serde(rename = "frame_ts")]
    pub ts: f64,
    pub uptime_s: f64,
    pub frames_captured: u64,
    pub frames_processed: u64,
    /// Frames dropped because detection was behind (drop-oldest).
    pub frames_dropped: u64,
    pub bad_frames: u64,
    pub detect_errors: u64,
    /// Processed frames per second over the last interval.
    pub fps: f64,
    /// Mean over the last interval, milliseconds.
    pub latency_ms: f64,
    pub inference_ms: f64,
    /// Where the time of a frame went, stage by stage, over the last interval.
    pub stages: StageTimes,
    pub queue_depth: usize,
    pub tracks: usize,
    pub events: u64,
    pub alerts: u64,
    /// Output records the sinks could not take quickly enough (droppable classes only).
    pub outputs_dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// The camera: connected, reconnects, last frame age, decode errors (see
    /// [`HealthStats`](super::health::HealthStats)).
    pub health: super::health::HealthStats,
}

/// Per-stage latency over one stats interval, milliseconds: the mean and the worst frame.
///
/// A frame's path is capture → queue → pre-process → inference → post-process → analyse
/// (tracking, rules, events, descriptions) → publish. `latency_ms` in [`Stats`] spans capture
/// done to analysis done; publishing runs on its own thread and is timed per output record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StageTimes {
    /// Reading and decoding or converting one frame in the source.
    pub capture: StageTime,
    /// Waiting in the frame queue for a detection worker.
    pub queue: StageTime,
    pub preprocess: StageTime,
    pub inference: StageTime,
    pub postprocess: StageTime,
    /// Tracking, rules, events and scene description for one frame.
    pub analyse: StageTime,
    /// Handing one output record to every sink (MQTT, files).
    pub publish: StageTime,
}

/// Mean and maximum of one stage over a stats interval, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct StageTime {
    pub mean_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct StageAcc {
    n: u64,
    sum: f64,
    max: f64,
}

impl StageAcc {
    fn add(&mut self, ms: f64) {
        self.n += 1;
        self.sum += ms;
        self.max = self.max.max(ms);
    }
    fn take(&mut self) -> StageTime {
        let t = StageTime {
            mean_ms: if self.n == 0 {
                0.0
            } else {
                self.sum / self.n as f64
            },
            max_ms: self.max,
        };
        *self = StageAcc::default();
        t
    }
}

/// Publish times, written by the sink thread and read by the scene thread's stats window.
#[derive(Default)]
pub(crate) struct PublishAcc {
    n: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl PublishAcc {
    pub(crate) fn add(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.n.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }
    fn take(&self) -> StageTime {
        let n = self.n.swap(0, Ordering::Relaxed);
        let sum = self.sum_us.swap(0, Ordering::Relaxed) as f64 / 1e3;
        let max = self.max_us.swap(0, Ordering::Relaxed) as f64 / 1e3;
        StageTime {
            mean_ms: if n == 0 { 0.0 } else { sum / n as f64 },
            max_ms: max,
        }
    }
}

/// Counts every thread of the frame loop adds to; atomics, so no stage waits on another to count.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) captured: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) bad: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) detect_errors: AtomicU64,
    pub(crate) outputs_dropped: AtomicU64,
    pub(crate) publish: PublishAcc,
}

impl Counters {
    /// The totals as the web view's metrics count them.
    pub(crate) fn totals(&self) -> crate::http::Totals {
        crate::http::Totals {
            captured: self.captured.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            bad: self.bad.load(Ordering::Relaxed),
            detect_errors: self.detect_errors.load(Ordering::Relaxed),
            outputs_dropped: self.outputs_dropped.load(Ordering::Relaxed),
        }
    }
}

/// How long one frame spent before analysis: measured by capture and the detection worker.
pub(crate) struct FrameTimes {
    /// When the source handed the frame over; latency is measured from here.
    pub(crate) captured_at: Instant,
    pub(crate) capture_ms: f64,
    pub(crate) queue_ms: f64,
    pub(crate) detect: crate::detect::Timings,
}

/// Sums over one stats interval, kept by the scene thread.
#[derive(Default)]
pub(crate) struct StatsWindow {
    n: u64,
    latency: f64,
    inference: f64,
    capture: StageAcc,
    queue: StageAcc,
    pre: StageAcc,
    infer: StageAcc,
    post: StageAcc,
    analyse: StageAcc,
}

impl StatsWindow {
    pub(crate) fn add(&mut self, t: &FrameTimes, analyse: Duration) {
        self.n += 1;
        self.latency += t.captured_at.elapsed().as_secs_f64() * 1e3;
        self.inference += t.detect.inference_ms;
        self.capture.add(t.capture_ms);
        self.queue.add(t.queue_ms);
        self.pre.add(t.detect.preprocess_ms);
        self.infer.add(t.detect.inference_ms);
        self.post.add(t.detect.postprocess_ms);
        self.analyse.add(analyse.as_secs_f64() * 1e3);
    }

    /// The record for the interval that just ended; starts the next one.
    pub(crate) fn take(
        &mut self,
        camera: &str,
        c: &Counters,
        started: Instant,
        (tracks, queue_depth): (usize, usize),
        (events, alerts): (u64, u64),
        window: Duration,
    ) -> Stats {
        let n = self.n.max(1) as f64;
        let s = Stats {
            camera: camera.to_string(),
            ts: unix_now(),
            uptime_s: started.elapsed().as_secs_f64(),
            frames_captured: c.captured.load(Ordering::Relaxed),
            frames_processed: c.processed.load(Ordering::Relaxed),
            frames_dropped: c.dropped.load(Ordering::Relaxed),
            bad_frames: c.bad.load(Ordering::Relaxed),
            detect_errors: c.detect_errors.load(Ordering::Relaxed),
            fps: self.n as f64 / window.as_secs_f64().max(1e-3),
            latency_ms: self.latency / n,
            inference_ms: self.inference / n,
            stages: StageTimes {
                capture: self.capture.take(),
                queue: self.queue.take(),
                preprocess: self.pre.take(),
                inference: self.infer.take(),
                postprocess: self.post.take(),
                analyse: self.analyse.take(),
                publish: c.publish.take(),
            },
            queue_depth,
            tracks,
            events,
            alerts,
            outputs_dropped: c.outputs_dropped.load(Ordering::Relaxed),
            temperature_c: board_temperature(),
            health: Default::default(),
        };
        *self = StatsWindow::default();
        s
    }
}

/// SoC temperature where the board exposes it (Raspberry Pi, Jetson: thermal_zone0).
pub fn board_temperature() -> Option<f64> {
    let t = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    t.trim().parse::<f64>().ok().map(|m| m / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_reports_mean_and_max_then_starts_over() {
        let mut a = StageAcc::default();
        for ms in [1.0, 3.0, 2.0] {
            a.add(ms);
        }
        assert_eq!(
            a.take(),
            StageTime {
                mean_ms: 2.0,
                max_ms: 3.0
            }
        );
        assert_eq!(a.take(), StageTime::default());
    }

    #[test]
    fn publish_times_are_read_once() {
        let p = PublishAcc::default();
        p.add(Duration::from_millis(2));
        p.add(Duration::from_millis(4));
        let t = p.take();
        assert!((t.mean_ms - 3.0).abs() < 1e-9 && (t.max_ms - 4.0).abs() < 1e-9);
        assert_eq!(p.take(), StageTime::default());
    }
}

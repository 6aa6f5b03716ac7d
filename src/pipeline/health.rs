//! Camera health: whether the source is delivering frames, how often it came back, how old its
//! last frame is and how many decode errors it had, for the `stats` record; and the one alert
//! per outage (`camera_down`, then `camera_recovered`), sent like any rule's alert so that it
//! goes through the spool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::capture::{CaptureError, CaptureStats};
use crate::scene::{Alert, AlertDetails, AlertKind};
use crate::util::unix_now;

/// The camera's health as the `stats` record carries it (`health`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthStats {
    /// The source delivered its last frame without an outage since.
    pub connected: bool,
    /// Times frames resumed after an outage (a reconnection, a reopened source).
    pub reconnects: u64,
    /// Seconds since the last frame arrived; absent before the first one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_frame_age_s: Option<f64>,
    /// Frames that could not be decoded plus errors the decoder concealed (ffmpeg's, on RTSP).
    pub decode_errors: u64,
}

/// Written by the capture thread, read by the scene thread for `stats`.
#[derive(Default)]
pub struct CameraHealth {
    connected: AtomicBool,
    reconnects: AtomicU64,
    decode_errors: AtomicU64,
    last_frame: Mutex<Option<Instant>>,
}

impl CameraHealth {
    pub fn snapshot(&self) -> HealthStats {
        HealthStats {
            connected: self.connected.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_frame_age_s: self
                .last_frame
                .lock()
                .ok()
                .and_then(|t| t.map(|t| t.elapsed().as_secs_f64())),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn counters(&self, s: CaptureStats) {
        self.reconnects.store(s.reconnects, Ordering::Relaxed);
        self.decode_errors
            .store(s.bad_frames + s.decode_errors, Ordering::Relaxed);
    }
}

/// The capture thread's view: turns what the source returns into health and alerts.
pub(crate) struct HealthWatch<'a> {
    health: &'a CameraHealth,
    camera: String,
    /// When the current outage began and why, once its alert has gone out.
    down: Option<(Instant, String)>,
    outages: u64,
    last_frame_id: u64,
}

impl<'a> HealthWatch<'a> {
    pub(crate) fn new(health: &'a CameraHealth, camera: &str) -> Self {
        HealthWatch {
            health,
            camera: camera.to_string(),
            down: None,
            outages: 0,
            last_frame_id: 0,
        }
    }

    /// A frame arrived: the recovery alert when the camera was down.
    pub(crate) fn frame(&mut self, frame_id: u64, stats: CaptureStats) -> Option<Alert> {
        self.health.connected.store(true, Ordering::Relaxed);
        if let Ok(mut t) = self.health.last_frame.lock() {
            *t = Some(Instant::now());
        }
        self.health.counters(stats);
        self.last_frame_id = frame_id;
        let (since, _) = self.down.take()?;
        let secs = since.elapsed().as_secs_f64();
        Some(self.alert(
            AlertKind::CameraRecovered,
            crate::scene::Severity::Info,
            format!(
                "camera '{}' is delivering frames again after {secs:.1} s",
                self.camera
            ),
            Some(secs),
        ))
    }

    /// The source reported `e`: the down alert when this begins an outage (a disconnection,
    /// or the source failing for good).
    pub(crate) fn error(&mut self, e: &CaptureError, stats: CaptureStats) -> Option<Alert> {
        self.health.counters(stats);
        let reason = match e {
            CaptureError::BadFrame { .. } => return None,
            CaptureError::Disconnected { reason, .. } | CaptureError::Fatal { reason, .. } => {
                reason.clone()
            }
            CaptureError::Uri { param, reason, .. } => format!("{param}: {reason}"),
        };
        self.health.connected.store(false, Ordering::Relaxed);
        if self.down.is_some() {
            return None;
        }
        self.down = Some((Instant::now(), reason.clone()));
        self.outages += 1;
        Some(self.alert(
            AlertKind::CameraDown,
            crate::scene::Severity::Warning,
            format!("camera '{}' is down: {reason}", self.camera),
            None,
        ))
    }

    fn alert(
        &self,
        kind: AlertKind,
        severity: crate::scene::Severity,
        message: String,
        duration_s: Option<f64>,
    ) -> Alert {
        let name = match kind {
            AlertKind::CameraDown => "down",
            _ => "recovered",
        };
        Alert {
            id: format!("camera-{name}-{}-{}", self.last_frame_id, self.outages),
            message_type: Default::default(),
            rule: "camera".into(),
            kind,
            severity,
            camera: self.camera.clone(),
            ts: unix_now(),
            frame_id: self.last_frame_id,
            track_ids: vec![],
            labels: vec![],
            message,
            details: AlertDetails {
                duration_s,
                ..AlertDetails::default()
            },
            verification: None,
            // No frame to show: the camera is what is missing.
            snapshot: None,
            clip: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_alert_per_outage_and_one_recovery() {
        let h = CameraHealth::default();
        let mut w = HealthWatch::new(&h, "yard");
        let lost = CaptureError::Disconnected {
            stream: Arc::from("rtsp://cam/s"),
            reason: "the stream ended".into(),
            retry_in: Duration::from_millis(500),
        };
        let s = CaptureStats::default();
        assert!(w.frame(0, s).is_none(), "no recovery without an outage");
        assert!(h.snapshot().connected);
        let a = w.error(&lost, s).unwrap();
        assert_eq!((a.kind, a.rule.as_str()), (AlertKind::CameraDown, "camera"));
        assert!(a.message.contains("yard") && a.message.contains("stream ended"));
        assert!(w.error(&lost, s).is_none(), "one alert per outage");
        assert!(!h.snapshot().connected);
        let stats = CaptureStats {
            reconnects: 1,
            bad_frames: 2,
            decode_errors: 3,
            ..s
        };
        let r = w.frame(7, stats).unwrap();
        assert_eq!(r.kind, AlertKind::CameraRecovered);
        assert!(r.details.duration_s.is_some());
        assert_ne!(a.id, r.id);
        let snap = h.snapshot();
        assert_eq!(
            (snap.connected, snap.reconnects, snap.decode_errors),
            (true, 1, 5)
        );
        assert!(snap.last_frame_age_s.is_some_and(|s| s >= 0.0));
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"kind\":\"camera_down\""), "{json}");
    }
}

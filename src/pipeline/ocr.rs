//! The OCR worker beside the frame loop (`[ocr]`): one thread that owns an [`ocr::Reader`] and
//! reads the text on tracked objects the loop picks with [`Schedule`], so a read that takes
//! seconds never stalls detection.
//!
//! The loop hands over at most `max_per_frame` reads a frame into a queue of [`QUEUE`]; when it
//! is full the read is skipped and the track tried again on a later frame (the loop never waits).
//! A job holds the frame by `Arc` (no copy), so the worker keeps at most `QUEUE + 1` frames alive.
//! Results come back on a bounded channel the loop drains every frame, and go into the object's
//! next event as `after.text`. At the end of an offline source the reads already queued are
//! finished first, so their text reaches the `end` events.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use image::RgbImage;

use crate::config::OcrConfig;
use crate::error::{Error, Result};
use crate::geometry::BBox;
use crate::ocr::schedule::Schedule;
use crate::ocr::{OcrManifest, Reader, ReaderOptions};
use crate::scene::{EventBuilder, ZoneMembership};
use crate::track::Track;

/// Reads waiting for the worker at most (one more may be under way).
pub const QUEUE: usize = 2;
/// Finished reads waiting for the loop at most (it drains them every frame).
const RESULTS: usize = 64;

struct Job {
    track_id: u64,
    image: Arc<RgbImage>,
    bbox: BBox,
}

struct Done {
    track_id: u64,
    /// The lines read in reading order joined by a space; `None` when nothing was read.
    text: Option<String>,
}

/// The loop's side of `[ocr]`: which tracks to read, the worker reading them, the texts read.
pub struct OcrRun {
    cfg: OcrConfig,
    schedule: Schedule,
    tx: Option<Sender<Job>>,
    rx: Receiver<Done>,
    worker: Option<JoinHandle<()>>,
    camera: String,
}

impl OcrRun {
    /// Loads the `[ocr]` model (an error names it) and starts the worker for camera `camera`.
    pub fn start(cfg: &OcrConfig, camera: &str) -> Result<OcrRun> {
        let manifest =
            OcrManifest::find(&cfg.model).map_err(|e| Error::Other(format!("ocr.model: {e}")))?;
        let mut reader = Reader::load(&manifest, &ReaderOptions::default())
            .map_err(|e| Error::Other(format!("ocr.model {}: {e}", manifest.dir.display())))?;
        let (tx, jobs) = bounded::<Job>(QUEUE);
        let (done_tx, rx) = bounded::<Done>(RESULTS);
        let name = camera.to_string();
        let worker = std::thread::Builder::new()
            .name(format!("ocr-{camera}"))
            .spawn(move || {
                for j in jobs.iter() {
                    let t0 = std::time::Instant::now();
                    let text = match reader.read_in_box(&j.image, &j.bbox) {
                        Ok(lines) => Some(
                            lines
                                .iter()
                                .map(|l| l.text.trim())
                                .filter(|t| !t.is_empty())
                                .collect::<Vec<_>>()
                                .join(" "),
                        )
                        .filter(|t| !t.is_empty()),
                        Err(e) => {
                            log::warn!("ocr {name}: track {}: {e}", j.track_id);
                            None
                        }
                    };
                    log::debug!(
                        "ocr {name}: track {} read {text:?} in {:.0} ms",
                        j.track_id,
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                    let _ = done_tx.try_send(Done {
                        track_id: j.track_id,
                        text,
                    });
                }
            })
            .map_err(|e| Error::Other(format!("spawn ocr: {e}")))?;
        Ok(OcrRun {
            cfg: cfg.clone(),
            schedule: Schedule::new(cfg.policy()),
            tx: Some(tx),
            rx,
            worker: Some(worker),
            camera: camera.to_string(),
        })
    }

    /// One frame: texts read since the last frame go to `events` (before it makes this frame's
    /// events), then the tracks due a read are handed to the worker, never waiting for it.
    pub fn frame(
        &mut self,
        ts: f64,
        image: &Arc<RgbImage>,
        tracks: &[Track],
        zones: &ZoneMembership,
        events: &mut EventBuilder,
    ) {
        self.collect(ts, events);
        let chosen = tracks.iter().filter(|t| {
            t.is_established()
                && (self.cfg.labels.iter().any(|l| *l == *t.label)
                    || zones.of(t.id).iter().any(|z| self.cfg.zones.contains(z)))
        });
        let ids: Vec<u64> = chosen.map(|t| t.id).collect();
        let Some(tx) = &self.tx else { return };
        for id in self.schedule.due_among(ids, ts) {
            let Some(t) = tracks.iter().find(|t| t.id == id) else {
                continue;
            };
            let job = Job {
                track_id: id,
                image: image.clone(),
                bbox: t.bbox,
            };
            match tx.try_send(job) {
                // Read now: not due again for `interval_s` (the text comes later).
                Ok(()) => self.schedule.record(id, None, ts),
                // Busy: skipped, due again next frame.
                Err(TrySendError::Full(_)) => break,
                Err(TrySendError::Disconnected(_)) => {
                    log::warn!("ocr {}: the worker has stopped", self.camera);
                    self.tx = None;
                    break;
                }
            }
        }
    }

    /// The last text read on a track.
    pub fn text(&self, track_id: u64) -> Option<&str> {
        self.schedule.text(track_id)
    }

    /// Texts read so far go to `events`.
    fn collect(&mut self, ts: f64, events: &mut EventBuilder) {
        while let Ok(d) = self.rx.try_recv() {
            self.schedule.record(d.track_id, d.text, ts);
            if let Some(t) = self.schedule.text(d.track_id) {
                events.set_text(d.track_id, t);
            }
        }
    }

    /// End of the run: unless `fast` (a stop was asked for), the reads queued are finished and
    /// their texts given to `events`, so the `end` events carry them; then the worker is joined.
    pub fn finish(&mut self, fast: bool, ts: f64, events: &mut EventBuilder) {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            if fast {
                // The read under way cannot be interrupted; the thread ends after it, unjoined.
                return;
            }
            let _ = w.join();
        }
        self.collect(ts, events);
    }
}

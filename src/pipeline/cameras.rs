//! Starting the cameras of a run: one frame loop ([`super::run`]) per camera, each with its own
//! source, tracker, rules, events and stats, all detecting through one shared
//! [`DetectorPool`](super::pool::DetectorPool), their records merged into one set of sinks.
//!
//! With one camera its loop runs on the caller's thread straight into the sinks, exactly as
//! before `[[cameras]]` existed. With several, each loop runs on its own thread and hands its
//! records to the caller's thread, which alone owns the sinks (MQTT, JSON Lines, store), so the
//! sinks need not be shared and a camera's records keep their order.

use std::thread;

use crossbeam_channel::{bounded, Sender};
use serde::Serialize;

use super::pool::{DetectorPool, LaneStats, PoolCamera};
use super::sinks::{Output, Sink};
use super::{Handle, RunOptions, Summary};
use crate::capture::FrameSource;
use crate::config::Config;
use crate::detect::Detector;
use crate::error::{Error, Result};

/// One opened camera, ready to run.
pub struct Camera {
    /// The whole config as this camera sees it (`[[cameras]]` entry over `[camera]`, its rules).
    pub cfg: Config,
    pub source: Box<dyn FrameSource>,
    /// Its latest frame, rule switches and VLM; the stop flag is shared by every camera.
    pub handle: Handle,
    /// Drop the oldest queued frame when the pool is behind (live sources).
    pub live: bool,
}

/// What one camera did in a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CameraSummary {
    pub camera: String,
    pub frames_captured: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub events: u64,
    pub alerts: u64,
    /// What the shared detector pool did for this camera.
    pub pool: LaneStats,
    /// Why this camera's loop could not run, when it could not (the others go on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Opens every camera of `cfg` (its `[[cameras]]`, or the single `[camera]`), failing on the
/// first source that cannot be opened and naming its camera. `first` becomes the first camera's
/// handle; the others get their own, sharing its stop flag.
pub fn open(
    cfg: &Config,
    first: &Handle,
    open_source: impl Fn(&Config) -> Result<Box<dyn FrameSource>>,
    is_live: impl Fn(&str) -> bool,
) -> Result<Vec<Camera>> {
    let several = !cfg.cameras.is_empty();
    cfg.per_camera()
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let source = open_source(&c).map_err(|e| match several {
                true => Error::Other(format!("cameras[{i}] '{}': {e}", c.camera.name)),
                false => e,
            })?;
            let handle = if i == 0 {
                first.clone()
            } else {
                Handle {
                    stop: first.stop.clone(),
                    clips: first.clips.clone(),
                    recall: first.recall.clone(),
                    ..Handle::default()
                }
            };
            Ok(Camera {
                live: is_live(&c.source()),
                cfg: c,
                source,
                handle,
            })
        })
        .collect()
}

/// The cameras as the pool schedules them.
pub fn pool_cameras(cameras: &[Camera]) -> Vec<PoolCamera> {
    cameras
        .iter()
        .map(|c| PoolCamera {
            name: c.cfg.camera.name.clone(),
            detect_fps: c.cfg.camera.detect_fps,
        })
        .collect()
}

/// Runs every camera's loop until each ends (its source ended, `max_frames`, or the shared stop
/// flag), detecting through `pool` with `clients` detectors per camera. `opts.vlm` goes to the
/// first camera (one VLM is one model, and it describes one picture at a time).
pub fn run(
    mut cameras: Vec<Camera>,
    pool: &DetectorPool,
    clients: usize,
    mut sinks: Vec<Box<dyn Sink>>,
    opts: RunOptions,
) -> Result<Summary> {
    let detectors = |i: usize| -> Vec<Box<dyn Detector>> {
        (0..clients.max(1))
            .map(|_| Box::new(pool.client(i)) as Box<dyn Detector>)
            .collect()
    };
    if cameras.len() == 1 {
        let Some(c) = cameras.pop() else {
            return Err(Error::Other("no camera to run".into()));
        };
        let opts = RunOptions {
            drop_oldest: c.live,
            ..opts
        };
        let name = c.cfg.camera.name.clone();
        let mut s = super::run(&c.cfg, c.source, detectors(0), sinks, opts, c.handle)?;
        s.cameras = vec![camera_summary(&name, &s, None)];
        return finish(s, pool);
    }
    let (tx, rx) = bounded::<Output>(1024);
    let mut loops = Vec::with_capacity(cameras.len());
    let mut vlm = opts.vlm;
    for (i, c) in cameras.into_iter().enumerate() {
        let name = c.cfg.camera.name.clone();
        let o = RunOptions {
            max_frames: opts.max_frames,
            drop_oldest: c.live,
            vlm: vlm.take(),
        };
        let (dets, fwd) = (detectors(i), Forward(tx.clone()));
        let t = thread::Builder::new()
            .name(format!("camera-{i}"))
            .spawn(move || {
                let sinks: Vec<Box<dyn Sink>> = vec![Box::new(fwd)];
                super::run(&c.cfg, c.source, dets, sinks, o, c.handle)
            })
            .map_err(|e| Error::Other(format!("spawn camera {name}: {e}")))?;
        loops.push((name, t));
    }
    drop(tx);
    // The records of every camera, as they come; the loop ends when every camera's loop has.
    for out in rx.iter() {
        for s in sinks.iter_mut() {
            if let Err(e) = s.send(&out) {
                log::warn!("sink: {e}");
            }
        }
    }
    for s in sinks.iter_mut() {
        let _ = s.flush();
    }
    let mut total = Summary::default();
    let mut failed = Vec::new();
    for (name, t) in loops {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(Error::Other("its frame loop panicked".into())));
        match r {
            Ok(s) => {
                total.frames_captured += s.frames_captured;
                total.frames_processed += s.frames_processed;
                total.frames_dropped += s.frames_dropped;
                total.bad_frames += s.bad_frames;
                total.events += s.events;
                total.alerts += s.alerts;
                total.descriptions += s.descriptions;
                total.wall_s = total.wall_s.max(s.wall_s);
                total.cameras.push(camera_summary(&name, &s, None));
            }
            Err(e) => {
                log::error!("camera {name}: {e}");
                total.cameras.push(camera_summary(
                    &name,
                    &Summary::default(),
                    Some(e.to_string()),
                ));
                failed.push(format!("camera {name}: {e}"));
            }
        }
    }
    if failed.len() == total.cameras.len() {
        return Err(Error::Other(failed.join("; ")));
    }
    finish(total, pool)
}

fn camera_summary(name: &str, s: &Summary, error: Option<String>) -> CameraSummary {
    CameraSummary {
        camera: name.to_string(),
        frames_captured: s.frames_captured,
        frames_processed: s.frames_processed,
        frames_dropped: s.frames_dropped,
        events: s.events,
        alerts: s.alerts,
        pool: LaneStats::default(),
        error,
    }
}

/// The pool's per-camera numbers and model count into the summary.
fn finish(mut s: Summary, pool: &DetectorPool) -> Result<Summary> {
    let lanes = pool.stats();
    for c in s.cameras.iter_mut() {
        if let Some(l) = lanes.iter().find(|l| l.camera == c.camera) {
            c.pool = l.clone();
        }
    }
    s.models_loaded = pool.models();
    Ok(s)
}

/// A camera loop's sink: its records go to the thread that owns the real sinks.
struct Forward(Sender<Output>);

impl Sink for Forward {
    fn send(&mut self, out: &Output) -> Result<()> {
        self.0
            .send(out.clone())
            .map_err(|_| Error::Other("the sinks have stopped".into()))
    }
}

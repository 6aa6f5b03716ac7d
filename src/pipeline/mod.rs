//! The frame loop: capture → detect → track → rules/events/descriptions → sinks, each stage on its
//! own thread(s) joined by bounded channels.
//!
//! Capture never waits for detection on a live source: when the queue is full the oldest frame is
//! dropped (and counted), so the detector always works on the newest picture. Offline sources
//! (files, pipes) apply back-pressure instead, so a clip is processed completely and repeatably.
//!
//! Around the loop: [`sinks`] (where records go), [`stats`] (health numbers), [`vlm`] (the VLM
//! worker beside it), [`mqtt`] (publisher, broker and commands wired to it) and [`runtime`]
//! (everything above started from one [`RunSettings`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use image::RgbImage;
use serde::Serialize;

use crate::capture::{CaptureError, Frame, FrameSource};
use crate::config::{Config, VlmSchedule};
use crate::detect::{Detection, Detector};
use crate::error::{Error, Result};
use crate::scene::{
    Alert, AlertType, Describer, Evaluation, EventBuilder, EventType, RuleEngine, ZoneMembership,
};
use crate::track::{Track, Tracker};
use crate::util::unix_now;

pub mod cameras;
pub mod health;
pub mod mqtt;
pub mod ocr;
pub mod pool;
pub mod privacy;
pub mod runtime;
pub mod sinks;
pub mod stats;
pub mod vlm;

pub use health::{CameraHealth, HealthStats};
pub use mqtt::{Broker, LazyGrounder, MqttRuntime, PipelineCommands, DEFAULT_EMBEDDED_PORT};
pub use runtime::{RunSettings, Runtime};
pub use sinks::{
    payload, readable_line, CollectSink, FrameDetections, FrameRef, JsonlSink, MqttSink, Output,
    PipelineStats, ReadableSink, Sink, Snapshot, StoreSink, WebSink,
};
pub use stats::{board_temperature, StageTime, StageTimes, Stats};
pub use vlm::SharedVlm;

use stats::{Counters, FrameTimes, StatsWindow};
use vlm::{Trigger, VlmFrame, VlmHandle, VlmWorker, WorkerOutput};

/// The newest processed frame with its tracks, for commands (snapshot, ground, describe).
#[derive(Clone)]
pub struct Latest {
    pub frame_id: u64,
    pub ts: f64,
    pub image: Arc<RgbImage>,
    pub tracks: Vec<Track>,
    /// Which zones each of `tracks` is in, from the rules.
    pub zones: ZoneMembership,
    /// The frame as it may leave the device (`[privacy]`: people blurred); `image` otherwise.
    pub outbound: Arc<RgbImage>,
}

/// Shared view of the running pipeline.
#[derive(Clone, Default)]
pub struct Handle {
    pub stop: Arc<AtomicBool>,
    pub latest: Arc<Mutex<Option<Latest>>>,
    /// Rule enable/disable requests applied by the scene thread.
    pub rule_switches: Arc<Mutex<Vec<(String, bool)>>>,
    /// The VLM worker while one runs (`cmd/describe` asks it).
    pub vlm: Arc<Mutex<Option<VlmHandle>>>,
    /// The web view's state when `[http]` serves one: the loop leaves each frame there.
    pub web: Option<Arc<crate::http::WebState>>,
    /// The store's clip recorder (`[store] clip_pre_s`/`clip_post_s`): the loop hands it each
    /// frame and names each alert's clip with it.
    pub clips: Option<Arc<crate::store::Clips>>,
    /// Searches and summaries of the run's store (`cmd/search`, `/api/search`, `summary`).
    pub recall: Option<Arc<crate::store::Recall>>,
}

/// How one call to [`run`] behaves beyond what the config says.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many frames have been captured.
    pub max_frames: Option<u64>,
    /// Drop the oldest queued frame when detection is behind (live cameras). Off: back-pressure.
    pub drop_oldest: bool,
    /// A VLM for model-written descriptions and alert verification, scheduled by `cfg.vlm`.
    pub vlm: Option<SharedVlm>,
}

/// What a run did, for the CLI and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub frames_captured: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub bad_frames: u64,
    pub events: u64,
    pub alerts: u64,
    pub descriptions: u64,
    pub wall_s: f64,
    /// Detector models loaded for the whole run (the shared pool's, however many cameras).
    pub models_loaded: usize,
    /// Each camera's part (filled by [`cameras::run`]).
    pub cameras: Vec<cameras::CameraSummary>,
}

/// One frame's detections on their way to the scene thread.
struct DetResult {
    frame_id: u64,
    ts: f64,
    image: Arc<RgbImage>,
    detections: Vec<Detection>,
    times: FrameTimes,
}

/// Run until the source ends, `max_frames` is reached or `handle.stop` is set.
pub fn run(
    cfg: &Config,
    mut source: Box<dyn FrameSource>,
    detectors: Vec<Box<dyn Detector>>,
    mut sinks: Vec<Box<dyn Sink>>,
    opts: RunOptions,
    handle: Handle,
) -> Result<Summary> {
    if detectors.is_empty() {
        return Err(Error::Other("pipeline needs at least one detector".into()));
    }
    // `[ocr]`: a missing or broken OCR model stops the run before any thread starts.
    let ocr = match &cfg.ocr {
        Some(o) => Some(ocr::OcrRun::start(o, &cfg.camera.name)?),
        None => None,
    };
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let (frame_tx, frame_rx) = bounded::<Captured>(cfg.pipeline.queue);
    // Only read for its length, to report queue depth in stats.
    let frame_rx_depth = frame_rx.clone();
    let (det_tx, det_rx) = bounded::<DetResult>(cfg.pipeline.queue * 2 + detectors.len());
    let (out_tx, out_rx) = bounded::<Output>(1024);

    // A source blocked in a read or a reconnect wait sees Ctrl-C within ~0.1 s, not after its
    // read timeout.
    source.watch_stop(handle.stop.clone());
    // Capture.
    let health = Arc::new(health::CameraHealth::default());
    let cap = {
        let (stop, counters, frame_rx_oldest) =
            (handle.stop.clone(), counters.clone(), frame_rx.clone());
        let max = opts.max_frames;
        let drop_oldest = opts.drop_oldest;
        // Camera down / recovered alerts go out like rule alerts (never dropped, spooled).
        let (health, alert_tx, camera) = (health.clone(), out_tx.clone(), cfg.camera.name.clone());
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut watch = health::HealthWatch::new(&health, &camera);
                let raise = |a: Option<Alert>| {
                    if let Some(a) = a {
                        let _ = alert_tx.send(Output::Alert(a));
                    }
                };
                log::info!("capture: {}", source.describe());
                while !stop.load(Ordering::Relaxed) {
                    if max.is_some_and(|m| counters.captured.load(Ordering::Relaxed) >= m) {
                        break;
                    }
                    let t0 = Instant::now();
                    match source.next_frame() {
                        Ok(Some(f)) => {
                            raise(watch.frame(f.id, source.stats()));
                            counters.captured.fetch_add(1, Ordering::Relaxed);
                            let at = Instant::now();
                            let mut item = Captured {
                                frame: f,
                                at,
                                capture_ms: (at - t0).as_secs_f64() * 1e3,
                            };
                            if drop_oldest {
                                loop {
                                    match frame_tx.try_send(item) {
                                        Ok(()) => break,
                                        Err(TrySendError::Full(back)) => {
                                            item = back;
                                            if frame_rx_oldest.try_recv().is_ok() {
                                                counters.dropped.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                        Err(TrySendError::Disconnected(_)) => return,
                                    }
                                }
                            } else if frame_tx.send(item).is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) if e.is_recoverable() => {
                            if matches!(e, CaptureError::BadFrame { .. }) {
                                counters.bad.fetch_add(1, Ordering::Relaxed);
                            }
                            log::warn!("{e}");
                            raise(watch.error(&e, source.stats()));
                        }
                        Err(e) => {
                            log::error!("{e}");
                            raise(watch.error(&e, source.stats()));
                            break;
                        }
                    }
                }
            })
            .map_err(|e| Error::Other(format!("spawn capture: {e}")))?
    };

    // Detection workers.
    let mut workers = Vec::new();
    for (i, mut det) in detectors.into_iter().enumerate() {
        let (rx, tx, counters) = (frame_rx.clone(), det_tx.clone(), counters.clone());
        workers.push(
            thread::Builder::new()
                .name(format!("detect-{i}"))
                .spawn(move || {
                    for c in rx.iter() {
                        let queue_ms = c.at.elapsed().as_secs_f64() * 1e3;
                        let frame = c.frame;
                        match det.detect(&frame.image) {
                            Ok(detections) => {
                                counters.processed.fetch_add(1, Ordering::Relaxed);
                                let r = DetResult {
                                    frame_id: frame.id,
                                    ts: frame.ts,
                                    image: Arc::new(frame.image),
                                    detections,
                                    times: FrameTimes {
                                        captured_at: c.at,
                                        capture_ms: c.capture_ms,
                                        queue_ms,
                                        detect: det.last_timings(),
                                    },
                                };
                                if tx.send(r).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                counters.detect_errors.fetch_add(1, Ordering::Relaxed);
                                log::warn!("frame {}: {e}", frame.id);
                            }
                        }
                    }
                })
                .map_err(|e| Error::Other(format!("spawn detector: {e}")))?,
        );
    }
    drop(frame_rx);
    drop(det_tx);

    // The VLM worker, fed by the scene thread and by commands; it publishes through `out_tx`.
    let vlm = match opts.vlm.and_then(|m| m.take()) {
        Some(model) => {
            let tx = out_tx.clone();
            let emit = Box::new(move |o: WorkerOutput| {
                let _ = tx.send(match o {
                    WorkerOutput::Scene(s) => Output::Scene(*s),
                    WorkerOutput::Alert(a) => Output::Alert(*a),
                });
            });
            let w = VlmWorker::spawn(model, cfg.vlm.clone(), emit)
                .map_err(|e| Error::Other(format!("spawn vlm: {e}")))?;
            if let Ok(mut h) = handle.vlm.lock() {
                *h = Some(w.handle());
            }
            Some(w)
        }
        None => None,
    };

    // Tracking, rules, events, descriptions.
    let scene = {
        let cfg = cfg.clone();
        let (counters, handle, out_tx) = (counters.clone(), handle.clone(), out_tx.clone());
        let frame_queue = frame_rx_depth;
        let rules = RuleEngine::new(cfg.rules.clone(), 1, 1)?.with_camera(cfg.camera.name.clone());
        thread::Builder::new()
            .name("scene".into())
            .spawn(move || {
                let ctx = SceneCtx {
                    counters,
                    handle: handle.clone(),
                    started,
                    frame_queue,
                    vlm: vlm.as_ref().map(|w| w.handle()),
                    health,
                    ocr,
                };
                scene_loop(cfg, det_rx, out_tx, ctx, rules);
                // Alerts held for verification are published before the output loop can end.
                if let Ok(mut h) = handle.vlm.lock() {
                    *h = None;
                }
                if let Some(w) = vlm {
                    w.finish(handle.stop.load(Ordering::Relaxed));
                }
            })
            .map_err(|e| Error::Other(format!("spawn scene: {e}")))?
    };
    drop(out_tx);

    // Sinks on this thread: they are the slowest and least important part of the loop.
    let mut summary = Summary::default();
    for out in out_rx.iter() {
        match &out {
            Output::Event(_) => summary.events += 1,
            // A verdict sent as an update is not another alert.
            Output::Alert(a) if a.message_type == AlertType::New => summary.alerts += 1,
            Output::Scene(_) => summary.descriptions += 1,
            _ => {}
        }
        let t0 = Instant::now();
        for s in sinks.iter_mut() {
            if let Err(e) = s.send(&out) {
                log::warn!("sink: {e}");
            }
        }
        counters.publish.add(t0.elapsed());
        if let Some(w) = &handle.web {
            w.metrics().publish(t0.elapsed().as_secs_f64());
        }
    }
    for s in sinks.iter_mut() {
        let _ = s.flush();
    }
    let _ = cap.join();
    for w in workers {
        let _ = w.join();
    }
    let _ = scene.join();
    summary.frames_captured = counters.captured.load(Ordering::Relaxed);
    summary.frames_processed = counters.processed.load(Ordering::Relaxed);
    summary.frames_dropped = counters.dropped.load(Ordering::Relaxed);
    summary.bad_frames = counters.bad.load(Ordering::Relaxed);
    summary.wall_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// What the scene thread shares with the rest of the pipeline.
struct SceneCtx {
    counters: Arc<Counters>,
    handle: Handle,
    started: Instant,
    frame_queue: Receiver<Captured>,
    vlm: Option<VlmHandle>,
    health: Arc<health::CameraHealth>,
    /// `[ocr]`: the reads of chosen tracks and their worker.
    ocr: Option<ocr::OcrRun>,
}

/// A frame on its way to detection, with when it left the source and how long reading it took.
struct Captured {
    frame: Frame,
    at: Instant,
    capture_ms: f64,
}

fn scene_loop(
    cfg: Config,
    rx: Receiver<DetResult>,
    out: Sender<Output>,
    ctx: SceneCtx,
    mut rules: RuleEngine,
) {
    let SceneCtx {
        counters,
        handle,
        started,
        frame_queue,
        vlm,
        health,
        mut ocr,
    } = ctx;
    let mut last_vlm = f64::NEG_INFINITY;
    let camera = cfg.camera.name.clone();
    let mut tracker = Tracker::new(cfg.tracker.clone());
    let mut ecfg = cfg.events.clone();
    if ecfg.camera == crate::scene::EventConfig::default().camera {
        ecfg.camera = camera.clone();
    }
    let mut events = EventBuilder::new(ecfg);
    let mut describer: Option<Describer> = None;
    let privacy = privacy::Outbound::new(&cfg.privacy, &camera);
    let classes: Vec<String> = cfg.detector.classes.clone();
    let mut last_frame: Option<u64> = None;
    let (mut last_describe, mut last_stats) = (f64::NEG_INFINITY, Instant::now());
    let (mut n_events, mut n_alerts) = (0u64, 0u64);
    let mut window = StatsWindow::default();
    let mut last_ts = 0.0;
    let send = |o: Output, droppable: bool| {
        if droppable {
            if out.try_send(o).is_err() {
                counters.outputs_dropped.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            let _ = out.send(o);
        }
    };

    // Stats go on while the camera is down, so that its health is seen.
    let tick = std::time::Duration::from_millis(500);
    let gap = cfg.camera.track_gap_s;
    let mut last_arrival = Instant::now();
    loop {
        let mut r = match rx.recv_timeout(tick) {
            Ok(r) => r,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // A long outage ends every track (short ones keep them: see below).
                let open = !tracker.tracks().is_empty() || events.active().next().is_some();
                if open && !health.is_connected() && last_arrival.elapsed().as_secs_f64() > gap {
                    let gap_ts = last_ts + last_arrival.elapsed().as_secs_f64();
                    for ev in events.finish(last_frame.unwrap_or(0), gap_ts) {
                        n_events += 1;
                        send(Output::Event(ev), false);
                    }
                    tracker.reset();
                }
                if cfg.pipeline.stats_interval > 0.0
                    && last_stats.elapsed().as_secs_f64() >= cfg.pipeline.stats_interval
                {
                    let mut s = window.take(
                        &camera,
                        &counters,
                        started,
                        (tracker.tracks().len(), frame_queue.len()),
                        (n_events, n_alerts),
                        last_stats.elapsed(),
                    );
                    s.health = health.snapshot();
                    last_stats = Instant::now();
                    send(Output::Stats(s), true);
                }
                continue;
            }
        };
        // With several workers results can arrive out of order; an older frame is stale.
        if last_frame.is_some_and(|l| r.frame_id <= l) {
            continue;
        }
        last_arrival = Instant::now();
        // Frames resume after a gap longer than `track_gap_s`: the objects seen before are
        // not assumed to be the ones seen now.
        if last_frame.is_some() && r.ts - last_ts > gap {
            for ev in events.finish(last_frame.unwrap_or(0), last_ts) {
                n_events += 1;
                send(Output::Event(ev), false);
            }
            tracker.reset();
        }
        let analyse_start = Instant::now();
        last_frame = Some(r.frame_id);
        last_ts = r.ts;
        let (w, h) = r.image.dimensions();
        if describer.is_none() {
            if let Err(e) = rules.set_frame_size(w, h) {
                log::error!("rules: {e}");
            }
            describer = Some(Describer::new(cfg.describe.clone(), w, h));
        }
        if let Ok(mut sw) = handle.rule_switches.lock() {
            for (name, on) in sw.drain(..) {
                if let Err(e) = rules.set_enabled(&name, on) {
                    log::warn!("rules: {e}");
                }
            }
        }
        let all = std::mem::take(&mut r.detections);
        // every person detected, before `detector.classes` narrows what is tracked
        let people = privacy.as_ref().map(|_| privacy::Outbound::people(&all));
        let dets: Vec<Detection> = if classes.is_empty() {
            all
        } else {
            all.into_iter()
                .filter(|d| classes.iter().any(|c| c.as_str() == &*d.label))
                .collect()
        };
        if cfg.pipeline.publish_detections {
            send(
                Output::Detections(FrameDetections {
                    camera: camera.clone(),
                    frame_id: r.frame_id,
                    ts: r.ts,
                    width: w,
                    height: h,
                    detections: dets.clone(),
                }),
                true,
            );
        }
        let tracks: Vec<Track> = tracker.update(r.frame_id, r.ts, &dets).to_vec();
        // The one copy of this frame that snapshots, the web view, store media and clips are made
        // from: people blurred under `[privacy]`, the frame itself otherwise.
        let outbound = match (&privacy, people) {
            (Some(p), Some(mut boxes)) => {
                privacy::Outbound::add_tracks(&mut boxes, &tracks);
                p.frame(&r.image, &boxes)
            }
            _ => r.image.clone(),
        };
        let Evaluation { alerts, zones } = rules.evaluate(r.frame_id, r.ts, &tracks);
        let mut saw_new = false;
        if let Some(o) = ocr.as_mut() {
            o.frame(r.ts, &r.image, &tracks, &zones, &mut events);
        }
        let evs = events.update(r.frame_id, r.ts, &tracks, &zones);
        // The store cuts object crops from the frame its events were raised on.
        if cfg.store.is_some() && evs.iter().any(|e| e.kind != EventType::End) {
            if let Some(f) = FrameRef::new(&camera, r.frame_id, outbound.clone()) {
                send(Output::Frame(f), true);
            }
        }
        for ev in evs {
            n_events += 1;
            saw_new |= ev.kind == EventType::New;
            send(Output::Event(ev), false);
        }
        if let Some(c) = &handle.clips {
            c.frame(&camera, r.ts, &outbound);
        }
        let frame = || VlmFrame {
            frame_id: r.frame_id,
            ts: r.ts,
            image: r.image.clone(),
        };
        for mut a in alerts {
            n_alerts += 1;
            a.clip = handle.clips.as_ref().and_then(|c| c.alert(&a));
            let snap = snapshot(&outbound, &tracks, &a, &camera);
            if let Some(s) = &snap {
                a.snapshot = Some(s.topic());
                for id in &a.track_ids {
                    events.mark_snapshot(*id);
                }
            }
            match vlm.as_ref().filter(|v| v.verifies(&a.rule)) {
                Some(v) => {
                    for now in v.verify(a, frame()) {
                        send(Output::Alert(now), false);
                    }
                }
                None => send(Output::Alert(a), false),
            }
            if let Some(s) = snap {
                send(Output::Snapshot(s), true);
            }
        }
        if cfg.pipeline.describe_interval > 0.0
            && r.ts - last_describe >= cfg.pipeline.describe_interval
        {
            last_describe = r.ts;
            if let Some(d) = describer.as_mut() {
                let mut scene = d.describe(r.frame_id, r.ts, &tracks, &zones);
                scene.camera = camera.clone();
                if let Some(o) = &ocr {
                    scene.add_texts(|id| o.text(id));
                }
                send(Output::Scene(scene), false);
            }
        }
        if let (Some(v), Some(d)) = (vlm.as_ref(), describer.as_ref()) {
            let c = v.config();
            let trigger = match c.schedule {
                VlmSchedule::Periodic => Some(Trigger::Periodic),
                VlmSchedule::OnEvent if saw_new => Some(Trigger::Event),
                _ => None,
            };
            // One description at a time: a busy VLM skips a turn rather than queueing stale frames.
            if let Some(t) = trigger.filter(|_| r.ts - last_vlm >= c.interval_s && v.pending() == 0)
            {
                last_vlm = r.ts;
                let mut scene = d.peek(r.frame_id, r.ts, &tracks, &zones);
                scene.camera = camera.clone();
                v.describe(frame(), scene, None, t, None);
            }
        }
        let analyse = analyse_start.elapsed();
        window.add(&r.times, analyse);
        if let Some(web) = &handle.web {
            let t = &r.times;
            let sample = crate::http::StageSample {
                capture_ms: t.capture_ms,
                queue_ms: t.queue_ms,
                preprocess_ms: t.detect.preprocess_ms,
                inference_ms: t.detect.inference_ms,
                postprocess_ms: t.detect.postprocess_ms,
                analyse_ms: analyse.as_secs_f64() * 1e3,
                latency_ms: t.captured_at.elapsed().as_secs_f64() * 1e3,
            };
            let totals = counters.totals();
            web.frame(r.frame_id, r.ts, outbound.clone(), &tracks, &sample, totals);
        }
        if let Ok(mut l) = handle.latest.lock() {
            *l = Some(Latest {
                frame_id: r.frame_id,
                ts: r.ts,
                image: r.image,
                tracks: tracks.clone(),
                zones,
                outbound,
            });
        }
        if cfg.pipeline.stats_interval > 0.0
            && last_stats.elapsed().as_secs_f64() >= cfg.pipeline.stats_interval
        {
            let mut s = window.take(
                &camera,
                &counters,
                started,
                (tracks.len(), frame_queue.len()),
                (n_events, n_alerts),
                last_stats.elapsed(),
            );
            s.health = health.snapshot();
            last_stats = Instant::now();
            send(Output::Stats(s), true);
        }
    }
    // End of stream: close every open track's lifecycle so subscribers see `end`.
    let end_frame = last_frame.unwrap_or(0);
    // Reads still queued finish first (unless stopping), so `end` carries their text.
    if let Some(o) = ocr.as_mut() {
        o.finish(handle.stop.load(Ordering::Relaxed), last_ts, &mut events);
    }
    for ev in events.finish(end_frame, last_ts.max(unix_now().min(last_ts + 1.0))) {
        n_events += 1;
        send(Output::Event(ev), false);
    }
    let mut s = window.take(
        &camera,
        &counters,
        started,
        (0, frame_queue.len()),
        (n_events, n_alerts),
        last_stats.elapsed(),
    );
    s.health = health.snapshot();
    send(Output::Stats(s), false);
}

/// The alert's frame with its tracks drawn (all tracks when the alert names none).
fn snapshot(img: &RgbImage, tracks: &[Track], alert: &Alert, camera: &str) -> Option<Snapshot> {
    let shown = tracks
        .iter()
        .filter(|t| alert.track_ids.is_empty() || alert.track_ids.contains(&t.id));
    let jpeg = crate::annotate::annotated_jpeg(img, shown, 80).ok()?;
    Some(Snapshot {
        camera: camera.to_string(),
        label: alert.labels.first().cloned(),
        alert_id: alert.id.clone(),
        jpeg,
    })
}

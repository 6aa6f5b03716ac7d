//! A whole run started from one [`RunSettings`]: the frame source, the detector workers, MQTT and
//! the VLM, then the frame loop, then an orderly MQTT shutdown.
//!
//! `lookout run` fills the settings from its flags and config file; everything that follows from
//! them happens here, so the binary never wires run-time parts itself.

use std::path::PathBuf;
use std::time::Instant;

use super::cameras::Camera;
use super::mqtt::{Broker, MqttRuntime};
use super::pool::DetectorPool;
use super::sinks::{MqttSink, Sink, StoreSink, WebSink};
use super::vlm::SharedVlm;
use super::{Handle, RunOptions, Summary};
use crate::capture::FrameSource;
use crate::config::{Config, VlmConfig};
use crate::detect::{Detector, DetectorOptions, ModelDetector};
use crate::error::{Error, Result};
use crate::http::{HttpServer, Overlay, ServerOptions, WebOptions, WebState};

/// What to run: the config (with any overrides already applied) and the run-time choices that
/// are not part of it.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub config: Config,
    /// Stop after this many frames have been captured.
    pub max_frames: Option<u64>,
    /// Where to publish.
    pub broker: Broker,
    /// Store-and-forward spool file, overriding `mqtt.spool_path`.
    pub spool: Option<PathBuf>,
}

/// Receives one line for people per thing started or stopped; `lookout run` prints them on
/// stderr, an embedding program may log them or drop them.
pub type Notify = Box<dyn FnMut(&str) + Send>;

/// A started run: sources open, detectors and VLM loaded, MQTT connected; [`Runtime::run`] runs
/// it.
pub struct Runtime {
    cfg: Config,
    /// Every camera (`[[cameras]]`, or the one `[camera]`), the first with the caller's handle.
    cameras: Vec<Camera>,
    /// The detectors, loaded once for all cameras.
    pool: DetectorPool,
    opts: RunOptions,
    mqtt: Option<MqttRuntime>,
    handle: Handle,
    notify: Notify,
    /// The web view, when `[http] listen` is set.
    http: Option<HttpServer>,
    /// The event store's thread, with `[store]`.
    store: Option<crate::store::Ingest>,
}

impl Runtime {
    /// Opens every camera's source, loads `detector.workers` detectors into the shared pool
    /// (once, however many cameras), starts MQTT and loads the VLM, in that order, so a bad
    /// source or model fails before anything is published. `handle` is how the caller stops the
    /// run (its `stop` flag) and sees the first camera's latest frame.
    pub fn start(settings: RunSettings, mut handle: Handle, mut notify: Notify) -> Result<Runtime> {
        let RunSettings {
            config: cfg,
            max_frames,
            broker,
            spool,
        } = settings;
        let uri = cfg.source();
        // The store before the cameras and MQTT: every camera's loop hands frames to its clip
        // recorder, and commands and the `summary` topic answer from it.
        let store = match &cfg.store {
            Some(s) => {
                let ingest = crate::store::Ingest::start(s)?;
                handle.clips = ingest.clips();
                handle.recall = Some(std::sync::Arc::new(ingest.recall()));
                notify(&format!(
                    "store: {} (max {} MB, {} days{})",
                    s.path.display(),
                    s.max_bytes >> 20,
                    s.max_age_days,
                    match ingest.clips() {
                        Some(c) => format!(", {} clips", c.format().extension()),
                        None => String::new(),
                    }
                ));
                Some(ingest)
            }
            None => None,
        };
        let cameras = super::cameras::open(&cfg, &handle, open_source, is_live)?;
        let manifest = crate::models::find(&cfg.detector.model)?;
        let opts = DetectorOptions {
            threads: cfg.detector.threads,
            conf: cfg.detector.conf,
            iou: cfg.detector.iou,
            precision: cfg.detector.precision,
        };
        let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
        for _ in 0..cfg.detector.workers {
            detectors.push(Box::new(ModelDetector::load(manifest.clone(), &opts)?));
        }
        let pool = DetectorPool::new(detectors, &super::cameras::pool_cameras(&cameras))?;
        // Tests and the bench count this line: one per process, however many cameras.
        log::info!(
            "detector pool: {} loaded {}× for {} camera(s)",
            manifest.model.name,
            pool.models(),
            cameras.len()
        );
        let named: Vec<(String, Handle)> = cameras
            .iter()
            .map(|c| (c.cfg.camera.name.clone(), c.handle.clone()))
            .collect();
        let mqtt = MqttRuntime::start(&broker, spool.as_deref(), &cfg, &named, &mut *notify)?;
        notify(&format!(
            "lookout run: {} on {} ({} worker(s) × {} thread(s)){}",
            manifest.model.name,
            cameras_line(&cameras, &uri),
            cfg.detector.workers,
            cfg.detector.threads,
            cfg.board
                .as_ref()
                .map(|b| format!(", board {b}"))
                .unwrap_or_default()
        ));
        let vlm = load_vlm(&cfg.vlm, &mut *notify)?;
        let http = start_http(&cfg, &mut handle, &mut *notify)?;
        if let (Some(web), Some(r)) = (&handle.web, &handle.recall) {
            web.set_recall(recall_for_web(r.clone()));
        }
        Ok(Runtime {
            store,
            opts: RunOptions {
                max_frames,
                drop_oldest: is_live(&uri),
                vlm,
            },
            cfg,
            cameras,
            pool,
            mqtt,
            handle,
            notify,
            http,
        })
    }

    /// Where the web view listens, when it runs (the real port when `listen` asked for port 0).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    /// Runs the frame loop until the source ends, `max_frames` or the handle's stop flag; the
    /// records go to MQTT (when started) and then to `sinks`. MQTT is drained and stopped after.
    pub fn run(self, sinks: Vec<Box<dyn Sink>>) -> Result<Summary> {
        let Runtime {
            cfg,
            mut cameras,
            pool,
            opts,
            mqtt,
            handle,
            mut notify,
            http,
            store,
        } = self;
        // MQTT first: a record is in the store-and-forward spool before any log line reports it.
        let mut all: Vec<Box<dyn Sink>> = Vec::with_capacity(sinks.len() + 1);
        if let Some(m) = &mqtt {
            all.push(Box::new(MqttSink::new(m.publisher.handle())));
        }
        if let Some(web) = &handle.web {
            if let Some(m) = &mqtt {
                let p = m.publisher.handle();
                web.set_mqtt_probe(Box::new(move || p.stats()));
            }
            all.push(Box::new(WebSink::new(web.clone())));
        }
        // The store next: an alert is committed there too before a log line reports it.
        if let Some(ingest) = store {
            all.push(Box::new(StoreSink::new(ingest, &cfg.camera.name)));
        }
        all.extend(sinks);
        // The web view was started after the cameras were opened: the first camera feeds it.
        if let Some(first) = cameras.first_mut() {
            first.handle.web = handle.web.clone();
        }
        let clients = cfg.detector.workers;
        let summary = super::cameras::run(cameras, &pool, clients, all, opts);
        drop(pool);
        if let Some(h) = http {
            h.stop();
        }
        let summary = summary?;
        if let Some(m) = mqtt {
            m.stop(&mut *notify);
        }
        Ok(summary)
    }
}

/// `plaza on file:…`, or `front, rear` for several cameras.
fn cameras_line(cameras: &[Camera], uri: &str) -> String {
    match cameras {
        [one] => crate::capture::redact(&one.cfg.source()),
        [] => crate::capture::redact(uri),
        many => format!(
            "{} cameras ({})",
            many.len(),
            many.iter()
                .map(|c| c.cfg.camera.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The configured source: healing itself (`[camera] heal`, the default) or as it is.
fn open_source(cfg: &Config) -> Result<Box<dyn FrameSource>> {
    let uri = cfg.source();
    let with = crate::capture::OpenOptions {
        hwdecode: cfg.camera.hwdecode,
    };
    Ok(if cfg.camera.heal {
        Box::new(crate::capture::open_healing(
            &uri,
            with,
            cfg.camera.heal_policy(),
        )?)
    } else {
        crate::capture::open_with(&uri, with)?
    })
}

/// The web view's server, started when `[http] listen` is set; its state goes into `handle`,
/// where the frame loop finds it. With `best_effort` (the embedded demo) a port in use is a
/// warning, not a failure.
fn start_http(
    cfg: &Config,
    handle: &mut Handle,
    notify: &mut dyn FnMut(&str),
) -> Result<Option<HttpServer>> {
    let h = &cfg.http;
    let Some(listen) = h.listen else {
        return Ok(None);
    };
    if let Some((key, why)) = h.problems().into_iter().next() {
        return Err(Error::Other(format!("{key}: {why}")));
    }
    let state = WebState::new(
        WebOptions {
            device: cfg.device.clone(),
            // With `[[cameras]]`, the first camera feeds the view.
            camera: cfg.camera_names().swap_remove(0),
            recent: h.recent,
            jpeg_quality: h.jpeg_quality,
        },
        Overlay::from_rules(&cfg.rules),
    );
    let opts = ServerOptions {
        listen,
        token: h.token.clone(),
        max_streams: h.max_streams,
        stream_fps: h.stream_fps,
    };
    match HttpServer::start(opts, state.clone()) {
        Ok(s) => {
            notify(&format!("web view: http://{}/", s.addr()));
            handle.web = Some(state);
            Ok(Some(s))
        }
        Err(e) if h.best_effort => {
            notify(&format!(
                "web view off: {e} (pass --http ADDR for another address)"
            ));
            Ok(None)
        }
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// `/api/search` and `/api/summary` answered by the store (`http/` cannot reach it itself).
fn recall_for_web(r: std::sync::Arc<crate::store::Recall>) -> crate::http::RecallFn {
    use crate::http::RecallQuery;
    std::sync::Arc::new(move |q: RecallQuery| {
        match q {
            RecallQuery::Search {
                query,
                since,
                camera,
                limit,
            } => r.search(&crate::store::SearchRequest {
                query,
                since,
                camera,
                limit,
            }),
            RecallQuery::Summary { since, camera } => {
                r.summary(since.as_deref(), camera.as_deref())
            }
        }
        .map_err(|e| e.to_string())
    })
}

/// Live sources drop the oldest frame when detection is behind; recorded ones wait for it.
fn is_live(uri: &str) -> bool {
    let lower = uri.to_ascii_lowercase();
    ["v4l:", "mjpeg+http:", "rtsp:", "rtsps:"]
        .iter()
        .any(|s| lower.starts_with(s))
}

/// The `[vlm] model`, loaded, when one is configured.
fn load_vlm(c: &VlmConfig, notify: &mut dyn FnMut(&str)) -> Result<Option<SharedVlm>> {
    let Some(dir) = &c.model else {
        return Ok(None);
    };
    let variant: crate::vlm::Variant = c
        .variant
        .parse()
        .map_err(|e| Error::Other(format!("vlm.variant '{}': {e}", c.variant)))?;
    let t = Instant::now();
    let m = crate::vlm::load(dir, variant, c.threads)
        .map_err(|e| Error::Other(format!("vlm.model {}: {e}", dir.display())))?;
    notify(&format!(
        "vlm: {} from {} in {:.1} s ({:?} schedule{})",
        m.name(),
        dir.display(),
        t.elapsed().as_secs_f64(),
        c.schedule,
        if c.verify_alerts {
            ", verifying alerts"
        } else {
            ""
        }
    ));
    Ok(Some(SharedVlm::new(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cameras_and_streams_are_live() {
        assert!(is_live("v4l:///dev/video0"));
        assert!(is_live("mjpeg+http://cam/stream"));
        assert!(is_live("rtsp://cam/stream"));
        assert!(!is_live("file:samples/vtest?fps=10"));
        assert!(!is_live("video:clip.mp4"));
    }
}

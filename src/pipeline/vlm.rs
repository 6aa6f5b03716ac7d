//! The VLM worker: one thread that owns the model and answers jobs from the frame loop and from
//! commands, so a generation that takes seconds never stalls detection.
//!
//! It lives in the pipeline, not in `vlm`, because the run's `[vlm]` config schedules it and it
//! speaks the scene's records (alerts, descriptions); `vlm` only runs models.
//!
//! Jobs wait in a bounded queue. When it is full a description is skipped and an alert goes out
//! at once as `unverified`: the frame loop never waits for the VLM, and an alert is never dropped.
//! An alert waits at most `verify_timeout_s` plus the one generation under way (a vision encoder
//! pass cannot be interrupted); at shutdown, alerts still queued go out unverified
//! without running the model.
//!
//! `verify_mode = "update"` publishes the alert at once (`verification.status = "pending"`) and
//! the verdict later as `type: "update"` of the same `alert_id`; every rule above applies to that
//! update instead, so each verified alert yields exactly one `new` and one `update`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use image::RgbImage;

use crate::config::{VerifyMode, VlmConfig};
use crate::geometry::BBox;
use crate::scene::{Alert, AlertType, SceneDescription, Verification, VerificationStatus, VlmText};
use crate::vlm::{GenerateOptions, Generation, StopReason, VisionLanguageModel};

/// A loaded VLM handed to [`super::run`], which starts its worker thread.
#[derive(Clone)]
pub struct SharedVlm(pub Arc<Mutex<Option<Box<dyn VisionLanguageModel>>>>);

impl SharedVlm {
    pub fn new(model: Box<dyn VisionLanguageModel>) -> Self {
        SharedVlm(Arc::new(Mutex::new(Some(model))))
    }

    /// The model, once: the worker that takes it owns it from then on.
    pub(crate) fn take(&self) -> Option<Box<dyn VisionLanguageModel>> {
        self.0.lock().ok().and_then(|mut m| m.take())
    }
}

impl std::fmt::Debug for SharedVlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedVlm")
    }
}

/// A frame as the VLM sees it.
#[derive(Clone)]
pub struct VlmFrame {
    pub frame_id: u64,
    pub ts: f64,
    pub image: Arc<RgbImage>,
}

/// Called once with the finished description, or why there is none.
pub type Reply = Box<dyn FnOnce(Result<SceneDescription, String>) + Send>;

/// What the worker gives back to the pipeline.
pub enum WorkerOutput {
    Scene(Box<SceneDescription>),
    Alert(Box<Alert>),
}

/// Why a description was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Periodic,
    Event,
    Command,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Periodic => "periodic",
            Trigger::Event => "event",
            Trigger::Command => "command",
        }
    }
}

enum Job {
    Describe {
        frame: VlmFrame,
        /// The detector-based description of the same frame, which the model's text joins.
        scene: Box<SceneDescription>,
        prompt: String,
        trigger: Trigger,
        reply: Option<Reply>,
    },
    Verify {
        alert: Box<Alert>,
        frame: VlmFrame,
        since: Instant,
    },
}

/// The frame loop's and the command server's way in. Cheap to clone.
#[derive(Clone)]
pub struct VlmHandle {
    tx: Sender<Job>,
    pending: Arc<AtomicUsize>,
    cfg: Arc<VlmConfig>,
    model: Arc<str>,
}

impl VlmHandle {
    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Whether `rule`'s alerts are to be verified.
    pub fn verifies(&self, rule: &str) -> bool {
        self.cfg.verify_alerts
            && (self.cfg.verify_rules.is_empty() || self.cfg.verify_rules.iter().any(|r| r == rule))
    }

    pub fn config(&self) -> &VlmConfig {
        &self.cfg
    }

    /// Queues a description; `false` (and `reply` told why) when the queue is full.
    pub fn describe(
        &self,
        frame: VlmFrame,
        scene: SceneDescription,
        prompt: Option<String>,
        trigger: Trigger,
        reply: Option<Reply>,
    ) -> bool {
        let prompt = prompt.unwrap_or_else(|| self.cfg.describe_prompt.clone());
        let job = Job::Describe {
            frame,
            scene: Box::new(scene),
            prompt,
            trigger,
            reply,
        };
        match self.submit(job) {
            Ok(()) => true,
            Err(Job::Describe {
                reply: Some(reply), ..
            }) => {
                reply(Err(format!("VLM busy: {} jobs waiting", self.cfg.queue)));
                false
            }
            Err(_) => false,
        }
    }

    /// Queues `alert` for verification and returns what to publish now, in order: nothing
    /// (`hold`: the worker publishes it with its verdict) or the alert marked `pending`
    /// (`update`: the worker publishes the verdict as an update). When the queue is full, the
    /// verdict `unverified` is among them, so nothing waits on a VLM that cannot take it.
    pub fn verify(&self, mut alert: Alert, frame: VlmFrame) -> Vec<Alert> {
        let q = question(&self.cfg.verify_prompt, &alert);
        let mut now = Vec::new();
        if self.cfg.verify_mode == VerifyMode::Update {
            let mut pending = alert.clone();
            pending.verification = Some(Verification {
                status: VerificationStatus::Pending,
                question: q.clone(),
                answer: String::new(),
                model: self.model.to_string(),
                held_ms: 0.0,
            });
            now.push(pending);
            alert.message_type = AlertType::Update;
        }
        let job = Job::Verify {
            alert: Box::new(alert),
            frame,
            since: Instant::now(),
        };
        match self.submit(job) {
            Ok(()) => {}
            Err(Job::Verify { mut alert, .. }) => {
                alert.verification = Some(Verification {
                    status: VerificationStatus::Unverified,
                    question: q,
                    answer: format!("VLM busy: {} jobs waiting", self.cfg.queue),
                    model: self.model.to_string(),
                    held_ms: 0.0,
                });
                now.push(*alert);
            }
            Err(Job::Describe { .. }) => unreachable!("submit returns the job it was given"),
        }
        now
    }

    fn submit(&self, job: Job) -> Result<(), Job> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                Err(j)
            }
        }
    }
}

/// The running worker thread.
pub struct VlmWorker {
    handle: VlmHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl VlmWorker {
    /// Starts the thread. `emit` receives descriptions and verified alerts.
    pub fn spawn(
        model: Box<dyn VisionLanguageModel>,
        cfg: VlmConfig,
        emit: Box<dyn FnMut(WorkerOutput) + Send>,
    ) -> std::io::Result<VlmWorker> {
        let (tx, rx) = bounded::<Job>(cfg.queue);
        let cfg = Arc::new(cfg);
        let name: Arc<str> = model.name().into();
        let pending = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cfg, pending, stop) = (cfg.clone(), pending.clone(), stop.clone());
            std::thread::Builder::new()
                .name("vlm".into())
                .spawn(move || {
                    lower_priority(cfg.nice);
                    Runner {
                        model,
                        cfg,
                        emit,
                        pending,
                        stop,
                    }
                    .run(rx)
                })?
        };
        Ok(VlmWorker {
            handle: VlmHandle {
                tx,
                pending,
                cfg,
                model: name,
            },
            stop,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> VlmHandle {
        self.handle.clone()
    }

    /// Waits for queued jobs. With `fast`, alerts still queued go out unverified and
    /// descriptions are dropped instead of running the model.
    pub fn finish(self, fast: bool) {
        if fast {
            self.stop.store(true, Ordering::Relaxed);
        }
        let VlmWorker { handle, thread, .. } = self;
        // Until every clone of the handle is dropped the channel stays open, so tell the thread
        // to leave once the queue is empty instead of waiting on `recv`.
        let _ = handle.tx.send_timeout(
            Job::Describe {
                frame: VlmFrame {
                    frame_id: u64::MAX,
                    ts: 0.0,
                    image: Arc::new(RgbImage::new(1, 1)),
                },
                scene: Box::new(empty_scene()),
                prompt: String::new(),
                trigger: Trigger::Command,
                reply: None,
            },
            Duration::from_secs(3600),
        );
        drop(handle);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The end-of-queue marker `finish` sends.
fn is_sentinel(job: &Job) -> bool {
    matches!(job, Job::Describe { frame, prompt, .. } if frame.frame_id == u64::MAX && prompt.is_empty())
}

fn empty_scene() -> SceneDescription {
    SceneDescription {
        camera: String::new(),
        ts: 0.0,
        frame_id: u64::MAX,
        text: String::new(),
        counts: Default::default(),
        objects: vec![],
        changes: vec![],
        vlm: None,
    }
}

struct Runner {
    model: Box<dyn VisionLanguageModel>,
    cfg: Arc<VlmConfig>,
    emit: Box<dyn FnMut(WorkerOutput) + Send>,
    pending: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Runner {
    fn run(mut self, rx: Receiver<Job>) {
        for job in rx.iter() {
            if is_sentinel(&job) {
                break;
            }
            self.handle(job);
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, job: Job) {
        let stopping = self.stop.load(Ordering::Relaxed);
        match job {
            Job::Describe {
                frame,
                mut scene,
                prompt,
                trigger,
                reply,
            } => {
                if stopping {
                    if let Some(r) = reply {
                        r(Err("lookout is stopping".into()));
                    }
                    return;
                }
                let opts = GenerateOptions {
                    max_new_tokens: self.cfg.max_new_tokens,
                    time_budget: None,
                };
                match self
                    .model
                    .generate(&frame.image, &prompt, &opts, &mut |_| {})
                {
                    Ok(g) => {
                        scene.vlm = Some(vlm_text(&g, self.model.name(), prompt, trigger));
                        match reply {
                            Some(r) => r(Ok(*scene)),
                            None => (self.emit)(WorkerOutput::Scene(scene)),
                        }
                    }
                    Err(e) => {
                        log::warn!("vlm: describe frame {}: {e}", frame.frame_id);
                        if let Some(r) = reply {
                            r(Err(format!("VLM failed: {e}")));
                        }
                    }
                }
            }
            Job::Verify {
                mut alert,
                frame,
                since,
            } => {
                let q = question(&self.cfg.verify_prompt, &alert);
                let timeout = Duration::from_secs_f64(self.cfg.verify_timeout_s);
                let left = timeout.saturating_sub(since.elapsed());
                let (status, answer) = if stopping {
                    (VerificationStatus::Unverified, "lookout is stopping".into())
                } else if left.is_zero() {
                    (
                        VerificationStatus::Unverified,
                        format!("not answered within {:.0} s", timeout.as_secs_f64()),
                    )
                } else {
                    let image = if self.cfg.verify_crop {
                        alert
                            .details
                            .bbox
                            .map(|b| crop_around(&frame.image, &b))
                            .unwrap_or_else(|| (*frame.image).clone())
                    } else {
                        (*frame.image).clone()
                    };
                    let opts = GenerateOptions {
                        max_new_tokens: self.cfg.max_new_tokens.min(16),
                        time_budget: Some(left),
                    };
                    match self.model.generate(&image, &q, &opts, &mut |_| {}) {
                        Ok(g) if g.stop == StopReason::TimeBudget && g.text.trim().is_empty() => (
                            VerificationStatus::Unverified,
                            format!("not answered within {:.0} s", timeout.as_secs_f64()),
                        ),
                        Ok(g) => (yes_no(&g.text), g.text.trim().to_string()),
                        Err(e) => (VerificationStatus::Unverified, format!("VLM failed: {e}")),
                    }
                };
                alert.verification = Some(Verification {
                    status,
                    question: q,
                    answer,
                    model: self.model.name().to_string(),
                    held_ms: since.elapsed().as_secs_f64() * 1e3,
                });
                (self.emit)(WorkerOutput::Alert(alert));
            }
        }
    }
}

fn vlm_text(g: &Generation, model: &str, prompt: String, trigger: Trigger) -> VlmText {
    VlmText {
        text: g.text.trim().to_string(),
        model: model.to_string(),
        prompt,
        prompt_tokens: g.prompt_tokens,
        new_tokens: g.token_ids.len(),
        vision_ms: g.timings.vision_ms,
        prefill_ms: g.timings.prefill_ms,
        decode_ms_per_token: g.timings.decode_ms_per_token,
        trigger: trigger.as_str().to_string(),
    }
}

/// The verification question for `alert`: `{label}` and `{message}` filled in.
pub fn question(template: &str, alert: &Alert) -> String {
    let label = alert.labels.first().map(String::as_str).unwrap_or("object");
    template
        .replace("{label}", label)
        .replace("{message}", &alert.message)
}

/// Reads a yes/no answer: the first word decides.
pub fn yes_no(answer: &str) -> VerificationStatus {
    let first = answer
        .trim_start()
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())
        .unwrap_or("")
        .to_ascii_lowercase();
    match first.as_str() {
        "yes" | "yeah" | "yep" | "true" | "correct" => VerificationStatus::Confirmed,
        "no" | "nope" | "false" | "not" => VerificationStatus::Rejected,
        _ => VerificationStatus::Unclear,
    }
}

/// The box grown by half its size on each side (context helps a small VLM), at least 64 px,
/// clipped to the image.
pub fn crop_around(img: &RgbImage, b: &BBox) -> RgbImage {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (bw, bh) = (b.width().max(1.0), b.height().max(1.0));
    let (cx, cy) = b.center();
    let (half_w, half_h) = (bw.max(32.0), bh.max(32.0));
    let x0 = (cx - half_w).clamp(0.0, w - 1.0).floor() as u32;
    let y0 = (cy - half_h).clamp(0.0, h - 1.0).floor() as u32;
    let x1 = (cx + half_w).clamp(x0 as f32 + 1.0, w).ceil() as u32;
    let y1 = (cy + half_h).clamp(y0 as f32 + 1.0, h).ceil() as u32;
    image::imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread).
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority with PRIO_PROCESS and who = 0 changes only the calling thread on
        // Linux; it reads no memory of ours.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        if rc != 0 {
            log::warn!(
                "vlm: could not set nice {nice}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn yes_no_reads_the_first_word() {
        assert_eq!(yes_no("Yes, there is."), VerificationStatus::Confirmed);
        assert_eq!(yes_no("  no."), VerificationStatus::Rejected);
        assert_eq!(yes_no("There is a dog"), VerificationStatus::Unclear);
        assert_eq!(yes_no(""), VerificationStatus::Unclear);
    }

    fn alert() -> Alert {
        serde_json::from_value(serde_json::json!({
            "alert_id": "path-entry-2-1", "type": "new", "rule": "path", "kind": "entry",
            "severity": "info", "camera": "plaza", "frame_ts": 1.5, "frame_id": 2,
            "track_ids": [1], "labels": ["person"], "message": "person entered zone 'path'",
            "details": {}
        }))
        .unwrap()
    }

    fn handle(mode: VerifyMode, tx: Sender<Job>) -> VlmHandle {
        VlmHandle {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            cfg: Arc::new(VlmConfig {
                verify_alerts: true,
                verify_mode: mode,
                ..VlmConfig::default()
            }),
            model: "stub".into(),
        }
    }

    fn frame() -> VlmFrame {
        VlmFrame {
            frame_id: 2,
            ts: 1.5,
            image: Arc::new(RgbImage::new(4, 4)),
        }
    }

    #[test]
    fn update_mode_publishes_at_once_and_queues_the_verdict() {
        let (tx, rx) = bounded(4);
        let now = handle(VerifyMode::Update, tx).verify(alert(), frame());
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].message_type, AlertType::New);
        let v = now[0].verification.as_ref().unwrap();
        assert_eq!(v.status, VerificationStatus::Pending);
        assert!(v.question.contains("person"));
        match rx.try_recv().unwrap() {
            Job::Verify { alert, .. } => {
                assert_eq!(alert.message_type, AlertType::Update);
                assert_eq!(alert.id, now[0].id);
                assert!(alert.verification.is_none());
            }
            Job::Describe { .. } => panic!("a verify job"),
        }
        // Hold mode publishes nothing now.
        let (tx, _rx) = bounded(4);
        assert!(handle(VerifyMode::Hold, tx)
            .verify(alert(), frame())
            .is_empty());
    }

    #[test]
    fn a_full_queue_still_yields_every_message_of_the_alert() {
        // No worker takes jobs: the alert and its (unverified) verdict go out at once.
        let (tx, rx) = bounded(1);
        drop(rx);
        let now = handle(VerifyMode::Update, tx.clone()).verify(alert(), frame());
        let kinds: Vec<_> = now
            .iter()
            .map(|a| (a.message_type, a.verification.as_ref().unwrap().status))
            .collect();
        assert_eq!(
            kinds,
            [
                (AlertType::New, VerificationStatus::Pending),
                (AlertType::Update, VerificationStatus::Unverified)
            ]
        );
        assert_eq!(now[0].id, now[1].id);
        let now = handle(VerifyMode::Hold, tx).verify(alert(), frame());
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].message_type, AlertType::New);
        assert_eq!(
            now[0].verification.as_ref().unwrap().status,
            VerificationStatus::Unverified
        );
    }

    #[test]
    fn crop_stays_inside_the_image() {
        let img = RgbImage::new(100, 80);
        for b in [
            bb(0.0, 0.0, 5.0, 5.0),
            bb(90.0, 70.0, 100.0, 80.0),
            bb(-50.0, -50.0, 500.0, 500.0),
            bb(40.0, 30.0, 60.0, 50.0),
        ] {
            let c = crop_around(&img, &b);
            assert!(c.width() >= 1 && c.width() <= 100, "{b:?} {}", c.width());
            assert!(c.height() >= 1 && c.height() <= 80, "{b:?} {}", c.height());
        }
        let c = crop_around(&img, &bb(40.0, 30.0, 60.0, 50.0));
        assert_eq!((c.width(), c.height()), (64, 64));
    }
}

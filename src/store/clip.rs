//! Video clips around alerts (`[store] clip_pre_s`, `clip_post_s`): a pre-roll ring of
//! JPEG-encoded frames per camera, and for each alert a clip of the ring's last `clip_pre_s`
//! seconds plus the next `clip_post_s`, written as MP4 through an `ffmpeg` child (frames piped
//! in) where `ffmpeg` is on the PATH, else as MJPEG (the JPEGs concatenated, `.mjpeg`, which
//! ffmpeg, VLC and browsers' `<img>` read).
//!
//! Nothing here runs in the frame loop but two cheap calls that never block: [`Clips::frame`]
//! hands the frame's `Arc` to the recorder thread (left out when that thread is behind) and
//! [`Clips::alert`] names the clip at once (no clip when 64 alerts are already waiting), so the
//! alert is published without waiting; the recorder encodes frames,
//! keeps the ring and collects the post-roll, and a writer thread runs ffmpeg. What was written
//! goes back to the store thread ([`Clips::take_done`]), which charges the clip's bytes to the
//! alert record so retention bounds clips with everything else.
//!
//! An alert while a clip of the same camera is still collecting joins that clip (and extends
//! it, by at most [`MAX_EXTEND_S`]), so an alert storm makes one clip, not fifteen. The clip's
//! bytes are charged to the newest alert sharing it, which retention (oldest first) removes last.
//!
//! Memory is bounded per camera by `clip_buffer_bytes`: half for the ring, half for the clips
//! being collected (a clip that would exceed it is cut short, and says so in the log).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use image::RgbImage;

use super::{StoreError, MEDIA_DIR};
use crate::config::StoreConfig;
use crate::scene::Alert;

/// Frames waiting for the recorder thread; beyond this a frame is left out of the ring.
const FRAME_QUEUE: usize = 4;
/// Alerts (clip starts and extensions) waiting for the recorder; beyond this an alert gets no
/// clip rather than wait.
const CONTROL_QUEUE: usize = 64;
/// Clips waiting for the writer thread.
const WRITE_QUEUE: usize = 4;
/// Clips being collected per camera at most; an alert beyond this gets no clip.
const MAX_COLLECTING: usize = 4;
/// How much later than `clip_pre_s + clip_post_s` joining alerts may make a clip end.
pub const MAX_EXTEND_S: f64 = 60.0;
/// Frames wider than this are scaled down before encoding (a clip is for seeing what happened).
const MAX_WIDTH: u32 = 1280;
const JPEG_QUALITY: u8 = 75;
/// A clip whose camera sends no frame for its post-roll plus this is written as it is.
const STALL: Duration = Duration::from_secs(10);

/// What a clip is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipFormat {
    /// H.264 (or MPEG-4 part 2 without libx264) in MP4, through an `ffmpeg` child.
    Mp4,
    /// Concatenated JPEGs.
    Mjpeg,
}

impl ClipFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ClipFormat::Mp4 => "mp4",
            ClipFormat::Mjpeg => "mjpeg",
        }
    }

    /// MP4 when an `ffmpeg` on the PATH answers `-version`, else MJPEG.
    pub fn detect() -> ClipFormat {
        let ok = Command::new("ffmpeg")
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            ClipFormat::Mp4
        } else {
            ClipFormat::Mjpeg
        }
    }
}

/// A clip the writer finished (or gave up on), for the store thread.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipDone {
    pub camera: String,
    /// Ids of the alerts sharing it, oldest first.
    pub alerts: Vec<String>,
    /// The path the alerts were published with, relative to the store folder.
    pub named: String,
    /// The path written (differs from `named` when ffmpeg failed and MJPEG was written
    /// instead); `None` when nothing could be written.
    pub written: Option<String>,
    pub bytes: u64,
    pub frames: usize,
}

/// One encoded frame.
type Jpeg = (f64, Arc<[u8]>);

enum Msg {
    Frame {
        camera: String,
        ts: f64,
        image: Arc<RgbImage>,
    },
    Start {
        camera: String,
        rel: String,
        alert: String,
        start: f64,
        end: f64,
    },
    Extend {
        rel: String,
        alert: String,
        end: f64,
    },
}

/// The clip of a camera that later alerts may still join.
struct OpenClip {
    rel: String,
    start: f64,
    end: f64,
}

#[derive(Default)]
struct CamState {
    last_ts: Option<f64>,
    open: Option<OpenClip>,
}

/// The clip recorder of one store: shared by the frame loop (its two hooks) and the store thread.
pub struct Clips {
    /// (frames, alerts): two queues, so an alert never waits behind frames being encoded.
    tx: Mutex<Option<(Sender<Msg>, Sender<Msg>)>>,
    pre_s: f64,
    post_s: f64,
    min_gap_s: f64,
    format: ClipFormat,
    nonce: String,
    cams: Mutex<HashMap<String, CamState>>,
    done: Arc<Mutex<Vec<ClipDone>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Clips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clips")
            .field("format", &self.format)
            .finish()
    }
}

impl Clips {
    /// Starts the recorder and writer threads for the store in `cfg.path`, writing `format`.
    pub fn start(cfg: &StoreConfig, format: ClipFormat, nonce: &str) -> super::Result<Clips> {
        let (tx, rx) = bounded(FRAME_QUEUE);
        let (ctx, crx) = bounded(CONTROL_QUEUE);
        let (wtx, wrx) = bounded::<Finished>(WRITE_QUEUE);
        let done = Arc::new(Mutex::new(Vec::new()));
        let spawn_err = |e: std::io::Error| StoreError::Io {
            path: cfg.path.clone(),
            reason: format!("cannot start the clip threads: {e}"),
        };
        let recorder = Recorder {
            pre_s: cfg.clip_pre_s,
            post_s: cfg.clip_post_s,
            half_budget: cfg.clip_buffer_bytes / 2,
            rings: HashMap::new(),
            collecting: Vec::new(),
            writer: wtx,
            done: done.clone(),
        };
        let r = std::thread::Builder::new()
            .name("clips".into())
            .spawn(move || recorder.run(rx, crx))
            .map_err(spawn_err)?;
        let (dir, done_w) = (cfg.path.clone(), done.clone());
        let w = std::thread::Builder::new()
            .name("clip-writer".into())
            .spawn(move || {
                for f in wrx.iter() {
                    let d = write(&dir, format, f);
                    if let Ok(mut v) = done_w.lock() {
                        v.push(d);
                    }
                }
            })
            .map_err(spawn_err)?;
        Ok(Clips {
            tx: Mutex::new(Some((tx, ctx))),
            pre_s: cfg.clip_pre_s,
            post_s: cfg.clip_post_s,
            min_gap_s: 0.95 / cfg.clip_fps.max(0.01),
            format,
            nonce: nonce.to_string(),
            cams: Mutex::new(HashMap::new()),
            done,
            threads: Mutex::new(vec![r, w]),
        })
    }

    pub fn format(&self) -> ClipFormat {
        self.format
    }

    fn senders(&self) -> Option<(Sender<Msg>, Sender<Msg>)> {
        self.tx.lock().ok()?.clone()
    }

    /// The frame loop's frame hook: `image` (the outbound copy, as snapshots see it) joins the
    /// camera's ring, at most `clip_fps` a second; never blocks.
    pub fn frame(&self, camera: &str, ts: f64, image: &Arc<RgbImage>) {
        {
            let Ok(mut cams) = self.cams.lock() else {
                return;
            };
            let c = cams.entry(camera.to_string()).or_default();
            if c.last_ts
                .is_some_and(|l| ts - l < self.min_gap_s && ts >= l)
            {
                return;
            }
            c.last_ts = Some(ts);
        }
        if let Some((tx, _)) = self.senders() {
            let _ = tx.try_send(Msg::Frame {
                camera: camera.to_string(),
                ts,
                image: image.clone(),
            });
        }
    }

    /// The frame loop's alert hook: the path (relative to the store folder) the alert's clip
    /// will have, at once; the clip is written after the post-roll. `None` when the recorder
    /// has stopped.
    pub fn alert(&self, a: &Alert) -> Option<String> {
        let (_, tx) = self.senders()?;
        let mut cams = self.cams.lock().ok()?;
        let c = cams.entry(a.camera.clone()).or_default();
        let end = a.ts + self.post_s;
        if let Some(o) = c
            .open
            .as_mut()
            .filter(|o| a.ts <= o.end && end - o.start <= self.pre_s + self.post_s + MAX_EXTEND_S)
        {
            o.end = o.end.max(end);
            let m = Msg::Extend {
                rel: o.rel.clone(),
                alert: a.id.clone(),
                end: o.end,
            };
            tx.try_send(m).ok()?;
            return Some(o.rel.clone());
        }
        let rel = format!(
            "{MEDIA_DIR}/{}/{}-clip-{}.{}",
            super::ingest::safe(&a.camera),
            self.nonce,
            super::ingest::safe(&a.id),
            self.format.extension()
        );
        let start = a.ts - self.pre_s;
        let m = Msg::Start {
            camera: a.camera.clone(),
            rel: rel.clone(),
            alert: a.id.clone(),
            start,
            end,
        };
        tx.try_send(m).ok()?;
        c.open = Some(OpenClip {
            rel: rel.clone(),
            start,
            end,
        });
        Some(rel)
    }

    /// Clips written (or given up on) since the last call.
    pub fn take_done(&self) -> Vec<ClipDone> {
        self.done
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// Writes the clips being collected with what they have, and stops both threads (later
    /// hooks do nothing). Waits for the writer.
    pub fn finish(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Clips {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A clip complete in memory, on its way to the writer.
struct Finished {
    camera: String,
    rel: String,
    alerts: Vec<String>,
    frames: Vec<Jpeg>,
}

struct Collecting {
    camera: String,
    rel: String,
    alerts: Vec<String>,
    start: f64,
    end: f64,
    frames: Vec<Jpeg>,
    bytes: u64,
    last_frame: Instant,
    cut_short: bool,
}

#[derive(Default)]
struct Ring {
    frames: VecDeque<Jpeg>,
    bytes: u64,
}

struct Recorder {
    pre_s: f64,
    post_s: f64,
    half_budget: u64,
    rings: HashMap<String, Ring>,
    collecting: Vec<Collecting>,
    writer: Sender<Finished>,
    done: Arc<Mutex<Vec<ClipDone>>>,
}

impl Recorder {
    /// Frames and alerts arrive on two queues; their order does not matter, since a clip takes
    /// the frames whose times fall in its window, from the ring or as they come.
    fn run(mut self, frames: Receiver<Msg>, alerts: Receiver<Msg>) {
        loop {
            let m = crossbeam_channel::select! {
                recv(alerts) -> m => m,
                recv(frames) -> m => m,
                default(Duration::from_secs(1)) => {
                    self.close_stalled();
                    continue;
                }
            };
            match m {
                Ok(m) => self.take(m),
                Err(_) => break,
            }
            self.close_stalled();
        }
        // Stopping: alerts still queued are taken, then every clip is written.
        for m in alerts.try_iter() {
            self.take(m);
        }
        self.close(|_| true);
    }

    /// A camera that went quiet: its clips are written with what they have.
    fn close_stalled(&mut self) {
        let stall = Duration::from_secs_f64(self.post_s) + STALL;
        self.close(|c| c.last_frame.elapsed() > stall);
    }

    fn take(&mut self, m: Msg) {
        match m {
            Msg::Frame { camera, ts, image } => self.frame(&camera, ts, &image),
            Msg::Start {
                camera,
                rel,
                alert,
                start,
                end,
            } => self.start(camera, rel, alert, start, end),
            Msg::Extend { rel, alert, end } => {
                if let Some(c) = self.collecting.iter_mut().find(|c| c.rel == rel) {
                    c.end = c.end.max(end);
                    c.alerts.push(alert);
                }
            }
        }
    }

    fn frame(&mut self, camera: &str, ts: f64, image: &RgbImage) {
        let jpeg = match encode(image) {
            Ok(j) => j,
            Err(e) => {
                log::warn!("clips: {camera}: {e}");
                return;
            }
        };
        let len = jpeg.len() as u64;
        let frame: Jpeg = (ts, jpeg.into());
        let ring = self.rings.entry(camera.to_string()).or_default();
        ring.frames.push_back(frame.clone());
        ring.bytes += len;
        while let Some((t, j)) = ring.frames.front() {
            let stale = *t < ts - self.pre_s - 0.5;
            if !(stale || ring.bytes > self.half_budget) {
                break;
            }
            ring.bytes -= j.len() as u64;
            ring.frames.pop_front();
        }
        let mut held: u64 = self
            .collecting
            .iter()
            .filter(|c| c.camera == camera)
            .map(|c| c.bytes)
            .sum();
        for c in self.collecting.iter_mut().filter(|c| c.camera == camera) {
            c.last_frame = Instant::now();
            if ts < c.start || ts > c.end {
                continue;
            }
            if held + len > self.half_budget {
                if !c.cut_short {
                    log::warn!(
                        "clips: {}: cut short at {} frames (store.clip_buffer_bytes)",
                        c.rel,
                        c.frames.len()
                    );
                }
                c.cut_short = true;
                continue;
            }
            held += len;
            c.bytes += len;
            c.frames.push(frame.clone());
        }
        self.close(|c| c.camera == camera && ts > c.end);
    }

    fn start(&mut self, camera: String, rel: String, alert: String, start: f64, end: f64) {
        if self
            .collecting
            .iter()
            .filter(|c| c.camera == camera)
            .count()
            >= MAX_COLLECTING
        {
            log::warn!("clips: {camera}: {MAX_COLLECTING} clips already being collected; none for alert {alert}");
            self.report(ClipDone {
                camera,
                alerts: vec![alert],
                named: rel,
                written: None,
                bytes: 0,
                frames: 0,
            });
            return;
        }
        let frames: Vec<Jpeg> = self
            .rings
            .get(&camera)
            .map(|r| {
                r.frames
                    .iter()
                    .filter(|(t, _)| *t >= start)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let bytes = frames.iter().map(|(_, j)| j.len() as u64).sum();
        self.collecting.push(Collecting {
            camera,
            rel,
            alerts: vec![alert],
            start,
            end,
            frames,
            bytes,
            last_frame: Instant::now(),
            cut_short: false,
        });
    }

    /// Hands the clips `done` picks to the writer.
    fn close(&mut self, done: impl Fn(&Collecting) -> bool) {
        let (finished, keep): (Vec<Collecting>, Vec<Collecting>) =
            std::mem::take(&mut self.collecting)
                .into_iter()
                .partition(|c| done(c));
        self.collecting = keep;
        for c in finished {
            let f = Finished {
                camera: c.camera,
                rel: c.rel,
                alerts: c.alerts,
                frames: c.frames,
            };
            if let Err(e) = self.writer.send(f) {
                let f = e.into_inner();
                self.report(ClipDone {
                    camera: f.camera,
                    alerts: f.alerts,
                    named: f.rel,
                    written: None,
                    bytes: 0,
                    frames: 0,
                });
            }
        }
    }

    fn report(&self, d: ClipDone) {
        if let Ok(mut v) = self.done.lock() {
            v.push(d);
        }
    }
}

fn encode(img: &RgbImage) -> Result<Vec<u8>, String> {
    let scaled;
    let img = if img.width() > MAX_WIDTH {
        let h = (img.height() as f64 * MAX_WIDTH as f64 / img.width() as f64).round() as u32;
        scaled = image::imageops::resize(img, MAX_WIDTH, h.max(1), image::imageops::Triangle);
        &scaled
    } else {
        img
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode_image(img)
        .map_err(|e| format!("cannot encode a JPEG: {e}"))?;
    Ok(out)
}

/// Writes one clip under the store folder `dir`: MP4 through ffmpeg (H.264, else MPEG-4 part 2),
/// falling back to MJPEG beside the published name when ffmpeg fails.
fn write(dir: &Path, format: ClipFormat, f: Finished) -> ClipDone {
    let mut d = ClipDone {
        camera: f.camera.clone(),
        alerts: f.alerts,
        named: f.rel.clone(),
        written: None,
        bytes: 0,
        frames: f.frames.len(),
    };
    if f.frames.is_empty() {
        log::warn!("clips: {}: no frames to write", f.rel);
        return d;
    }
    let mut rel = f.rel.clone();
    let mut result = Err(String::from("not written"));
    if format == ClipFormat::Mp4 {
        for codec in ["libx264", "mpeg4"] {
            result = write_mp4(&dir.join(&rel), &f.frames, codec);
            match &result {
                Ok(_) => break,
                Err(e) => log::warn!("clips: {rel} with {codec}: {e}"),
            }
        }
        if result.is_err() {
            rel = format!("{}.mjpeg", rel.trim_end_matches(".mp4"));
        }
    }
    if result.is_err() {
        result = write_mjpeg(&dir.join(&rel), &f.frames);
    }
    match result {
        Ok(bytes) => {
            log::info!("clips: {rel}: {} frames, {bytes} bytes", f.frames.len());
            d.written = Some(rel);
            d.bytes = bytes;
        }
        Err(e) => log::warn!("clips: {rel}: {e}"),
    }
    d
}

/// The temporary name a clip is written under before the rename (a reader never sees half).
fn temporary(path: &Path) -> Result<PathBuf, String> {
    let dir = path.parent().ok_or("no folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path.file_name().ok_or("no name")?.to_string_lossy();
    Ok(dir.join(format!(".{name}.tmp")))
}

fn finish_file(tmp: &Path, path: &Path) -> Result<u64, String> {
    let bytes = std::fs::metadata(tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?
        .len();
    if bytes == 0 {
        let _ = std::fs::remove_file(tmp);
        return Err("empty output".into());
    }
    std::fs::rename(tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes)
}

fn write_mjpeg(path: &Path, frames: &[Jpeg]) -> Result<u64, String> {
    let tmp = temporary(path)?;
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?,
    );
    for (_, j) in frames {
        out.write_all(j)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    out.into_inner()
        .map_err(|e| format!("{}: {e}", tmp.display()))?
        .sync_all()
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    finish_file(&tmp, path)
}

/// The frame rate the clip's timestamps say (frames are kept at most `clip_fps` a second, and
/// fewer when detection is slower).
fn rate(frames: &[Jpeg]) -> f64 {
    let span = frames.last().map_or(0.0, |l| l.0) - frames.first().map_or(0.0, |f| f.0);
    if frames.len() < 2 || span <= 0.0 {
        return 1.0;
    }
    ((frames.len() - 1) as f64 / span).clamp(0.5, 30.0)
}

fn write_mp4(path: &Path, frames: &[Jpeg], codec: &str) -> Result<u64, String> {
    let tmp = temporary(path)?;
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "image2pipe",
        ])
        .args(["-framerate", &format!("{:.3}", rate(frames))])
        .args([
            "-c:v", "mjpeg", "-i", "-", "-c:v", codec, "-pix_fmt", "yuv420p",
        ])
        // Even sizes (yuv420p needs them) and a quick preset: a Pi writes clips beside detection.
        .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-threads", "2"])
        .args(if codec == "libx264" {
            ["-preset", "veryfast"]
        } else {
            ["-q:v", "5"]
        })
        .args(["-movflags", "+faststart", "-f", "mp4"])
        .arg(&tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start ffmpeg: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        for (_, j) in frames {
            // ffmpeg that stopped early says why on stderr, read below.
            if stdin.write_all(j).is_err() {
                break;
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let why = String::from_utf8_lossy(&out.stderr);
        let why: String = why.trim().chars().take(300).collect();
        return Err(format!("ffmpeg {}: {why}", out.status));
    }
    finish_file(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> StoreConfig {
        let mut c = StoreConfig::at(dir);
        c.clip_pre_s = 1.0;
        c.clip_post_s = 1.0;
        c.clip_fps = 10.0;
        c
    }

    fn alert(id: &str, ts: f64) -> Alert {
        serde_json::from_value(serde_json::json!({
            "alert_id": id, "rule": "r", "kind": "count", "severity": "info", "camera": "cam",
            "frame_ts": ts, "frame_id": 1, "track_ids": [], "labels": [], "message": "m",
            "details": {}
        }))
        .unwrap()
    }

    fn wait_done(c: &Clips, n: usize) -> Vec<ClipDone> {
        let mut all = Vec::new();
        for _ in 0..300 {
            all.extend(c.take_done());
            if all.len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        all
    }

    #[test]
    fn an_mjpeg_clip_holds_pre_and_post_roll_and_later_alerts_join_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = Clips::start(&cfg(dir.path()), ClipFormat::Mjpeg, "n").unwrap();
        let img = Arc::new(RgbImage::new(32, 24));
        let mut named = Vec::new();
        for i in 0..40 {
            let ts = 100.0 + i as f64 * 0.1;
            c.frame("cam", ts, &img);
            // Give the recorder time so no frame is dropped for a full queue.
            std::thread::sleep(Duration::from_millis(5));
            if i == 15 || i == 20 {
                named.push(c.alert(&alert(&format!("a{i}"), ts)).unwrap());
            }
        }
        assert_eq!(named[0], named[1], "the second alert joins the first clip");
        assert!(named[0].starts_with("media/cam/n-clip-a15") && named[0].ends_with(".mjpeg"));
        let done = wait_done(&c, 1);
        assert_eq!(done.len(), 1, "{done:?}");
        let d = &done[0];
        assert_eq!(d.alerts, ["a15", "a20"]);
        assert_eq!(d.written.as_deref(), Some(named[0].as_str()));
        // 1 s before 101.5 to 1 s after 102.0, at 10 fps: about 26 frames.
        assert!((20..=27).contains(&d.frames), "{d:?}");
        let bytes = std::fs::read(dir.path().join(&named[0])).unwrap();
        assert_eq!(bytes.len() as u64, d.bytes);
        assert_eq!(
            bytes.windows(2).filter(|w| w == &[0xFF, 0xD8]).count(),
            d.frames
        );
        c.finish();
        assert!(c.alert(&alert("late", 200.0)).is_none());
    }

    #[test]
    fn the_ring_stays_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut conf = cfg(dir.path());
        conf.clip_pre_s = 60.0;
        conf.clip_buffer_bytes = 1 << 20;
        let c = Clips::start(&conf, ClipFormat::Mjpeg, "n").unwrap();
        // Noise does not compress: each frame is tens of kilobytes.
        let mut img = RgbImage::new(160, 120);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([
                (i * 7919 % 251) as u8,
                (i * 31 % 253) as u8,
                (i % 256) as u8,
            ]);
        }
        let img = Arc::new(img);
        for i in 0..200 {
            c.frame("cam", i as f64 * 0.1, &img);
            std::thread::sleep(Duration::from_millis(2));
        }
        c.alert(&alert("a", 20.0)).unwrap();
        c.finish();
        let d = c.take_done();
        assert_eq!(d.len(), 1);
        assert!(d[0].bytes <= 1 << 19, "{:?}", d[0]);
        assert!(d[0].frames > 3, "{:?}", d[0]);
    }
}

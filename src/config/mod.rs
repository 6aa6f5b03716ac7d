//! `lookout run` configuration: a TOML file, optionally layered over a board profile
//! (`boards/<name>.toml`). The board gives sensible defaults for the hardware; the user's file
//! overrides any key. Unknown keys and bad values are errors naming the key and the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::scene::{DescribeConfig, EventConfig, RuleConfig};
use crate::track::TrackerConfig;

mod cameras;
mod check;
mod store;
pub use cameras::{CameraEntry, MAX_CAMERAS};
pub use check::{check, Checked, Issue, Issues};
pub use store::StoreConfig;
mod ocr;
pub use ocr::OcrConfig;

/// Where `source` comes from when the config names none: the bundled clip.
pub const DEFAULT_SOURCE: &str = "file:samples/vtest?fps=10&loop=false";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Board profile the rest is layered on (a name in `boards/` or a path).
    #[serde(default)]
    pub board: Option<String>,
    /// Identifies this box in MQTT topics (`lookout/<device>/…`).
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default)]
    pub camera: CameraConfig,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub tracker: TrackerConfig,
    #[serde(default)]
    pub events: EventConfig,
    #[serde(default)]
    pub describe: DescribeConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub output: OutputConfig,
    /// MQTT settings; kept as a table here and validated by the MQTT module.
    #[serde(default)]
    pub mqtt: Option<toml::Table>,
    /// Board facts for reports (name, cores, memory); free-form.
    #[serde(default)]
    pub hardware: Option<toml::Table>,
    /// The VLM worker: which model, when it describes, whether it verifies alerts.
    #[serde(default)]
    pub vlm: VlmConfig,
    /// The live web view and `/metrics` (off unless `listen` is set).
    #[serde(default)]
    pub http: HttpConfig,
    /// The on-device event store (`lookout events`, `search`, `summary`); off without `[store]`.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// Several cameras in one process (`[[cameras]]`, docs/cameras.md); empty: `[camera]` alone.
    #[serde(default)]
    pub cameras: Vec<CameraEntry>,
    /// `[privacy]`: people blurred in everything that leaves the device (`docs/privacy.md`).
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// `[ocr]`: text read on chosen tracked objects (`docs/ocr.md`); off without the table.
    #[serde(default)]
    pub ocr: Option<OcrConfig>,
}

/// `[privacy]`: what the one outbound copy of each frame (snapshots, web view, store media, clips)
/// hides. Detection, tracking, grounding and the VLM see the frame unblurred.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Blur every person (detected this frame or tracked) in outbound frames.
    #[serde(default)]
    pub blur_people: bool,
    /// `mask`: blur the person's shape from the segmentation model (falls back to `box`, with a
    /// warning, when the model is not installed); `box`: blur the whole box.
    #[serde(default)]
    pub shape: crate::segment::BlurShape,
    /// The segmentation model for `shape = "mask"` (a name under the model paths or a folder).
    #[serde(default = "default_segmenter")]
    pub segmenter: String,
}

fn default_segmenter() -> String {
    crate::segment::DEFAULT_SEGMENTER.to_string()
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            blur_people: false,
            shape: Default::default(),
            segmenter: default_segmenter(),
        }
    }
}

/// `[http]`: the live web view and Prometheus endpoint (`docs/web.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// IP address and port to serve on, e.g. `127.0.0.1:8080`; absent: no web view.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token every request must carry; required when `listen` is not a loopback address.
    #[serde(default)]
    pub token: Option<String>,
    /// MJPEG viewers at once.
    #[serde(default = "default_http_streams")]
    pub max_streams: usize,
    /// Frames per second sent to one viewer at most.
    #[serde(default = "default_http_stream_fps")]
    pub stream_fps: f64,
    /// JPEG quality of the stream and snapshots, 1..100.
    #[serde(default = "default_http_quality")]
    pub jpeg_quality: u8,
    /// Recent alerts, events and scene descriptions kept (each) for `/api/events`.
    #[serde(default = "default_http_recent")]
    pub recent: usize,
    /// Set by `lookout run` for the embedded demo only: a port already in use is a warning there,
    /// not a failure (the demo must run beside another lookout).
    #[serde(skip)]
    pub best_effort: bool,
}

/// A token shorter than this is refused: it guards a camera picture on a network.
pub const MIN_HTTP_TOKEN: usize = 16;

fn default_http_streams() -> usize {
    4
}
fn default_http_stream_fps() -> f64 {
    10.0
}
fn default_http_quality() -> u8 {
    75
}
fn default_http_recent() -> usize {
    100
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            token: None,
            max_streams: default_http_streams(),
            stream_fps: default_http_stream_fps(),
            jpeg_quality: default_http_quality(),
            recent: default_http_recent(),
            best_effort: false,
        }
    }
}

impl HttpConfig {
    /// Every value problem, each with its key (`http.token`, …).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(t) = &self.token {
            if t.chars().count() < MIN_HTTP_TOKEN || !t.chars().all(|c| c.is_ascii_graphic()) {
                v.push((
                    "http.token",
                    format!(
                        "must be at least {MIN_HTTP_TOKEN} printable ASCII characters without spaces"
                    ),
                ));
            }
        }
        if let Some(a) = self.listen {
            if !a.ip().is_loopback() && self.token.is_none() {
                v.push((
                    "http.token",
                    format!(
                        "http.listen {a} is reachable beyond this machine; set http.token \
                         (or listen on 127.0.0.1)"
                    ),
                ));
            }
        }
        if self.max_streams == 0 || self.max_streams > 64 {
            v.push((
                "http.max_streams",
                format!("{} must be 1..64", self.max_streams),
            ));
        }
        if !(self.stream_fps > 0.0 && self.stream_fps <= 60.0) {
            v.push((
                "http.stream_fps",
                format!("{} must be in (0, 60]", self.stream_fps),
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            v.push((
                "http.jpeg_quality",
                format!("{} must be 1..100", self.jpeg_quality),
            ));
        }
        if self.recent == 0 || self.recent > 10_000 {
            v.push(("http.recent", format!("{} must be 1..10000", self.recent)));
        }
        v
    }
}

/// When the VLM writes a scene description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VlmSchedule {
    /// Only when asked (`cmd/describe`).
    #[default]
    OnCommand,
    /// Every `interval_s`, when the worker is free.
    Periodic,
    /// When a new object appears, at most every `interval_s`.
    OnEvent,
}

/// `[vlm]`: a vision-language model beside the detector. Without `model` there is no VLM and the
/// rest only records the board's intended schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VlmConfig {
    /// Model folder (a `config.json` and an `onnx/` folder, as `lookout models pull` writes).
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Model file variant: `fp32`, `int8`, `uint8`, `quantized`.
    #[serde(default = "default_vlm_variant")]
    pub variant: String,
    /// tract threads for the VLM.
    #[serde(default = "one")]
    pub threads: usize,
    #[serde(default)]
    pub schedule: VlmSchedule,
    /// Seconds between model-written descriptions (`periodic`, `on-event`).
    #[serde(default = "default_vlm_interval")]
    pub interval_s: f64,
    /// Hold rule alerts until the VLM confirms or rejects them.
    #[serde(default)]
    pub verify_alerts: bool,
    /// Only verify alerts of these rules (empty = every rule).
    #[serde(default)]
    pub verify_rules: Vec<String>,
    #[serde(default = "default_describe_prompt")]
    pub describe_prompt: String,
    /// Yes/no question for verification; `{label}` and `{message}` are filled from the alert.
    #[serde(default = "default_verify_prompt")]
    pub verify_prompt: String,
    /// Verify on a crop around the alert's box rather than the whole frame.
    #[serde(default = "yes")]
    pub verify_crop: bool,
    /// An alert held longer than this is published as `unverified`.
    #[serde(default = "default_verify_timeout")]
    pub verify_timeout_s: f64,
    #[serde(default = "default_vlm_tokens")]
    pub max_new_tokens: usize,
    /// Jobs waiting for the VLM; beyond this, descriptions are skipped and alerts go out unverified.
    #[serde(default = "default_vlm_queue")]
    pub queue: usize,
    /// Niceness of the VLM thread, so the frame loop keeps its cores (0 = as the rest).
    #[serde(default = "default_vlm_nice")]
    pub nice: i32,
    /// With `verify_alerts`: `hold` an alert until its verdict, or publish it at once and the
    /// verdict as an `update` of the same alert id.
    #[serde(default)]
    pub verify_mode: VerifyMode,
}

/// `[vlm] verify_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// One message per alert, published once the VLM has answered (or `verify_timeout_s` passed).
    #[default]
    Hold,
    /// The alert at once (`verification.status = "pending"`), its verdict as `type: "update"`.
    Update,
}

fn default_vlm_variant() -> String {
    "fp32".into()
}
fn default_vlm_interval() -> f64 {
    30.0
}
fn default_describe_prompt() -> String {
    "Describe what is happening in this image in one sentence.".into()
}
fn default_verify_prompt() -> String {
    "Is there a {label} in this image? Answer yes or no.".into()
}
fn yes() -> bool {
    true
}
fn default_verify_timeout() -> f64 {
    30.0
}
fn default_vlm_tokens() -> usize {
    48
}
fn default_vlm_queue() -> usize {
    8
}
fn default_vlm_nice() -> i32 {
    10
}

impl Default for VlmConfig {
    fn default() -> Self {
        VlmConfig {
            model: None,
            variant: default_vlm_variant(),
            threads: 1,
            schedule: VlmSchedule::default(),
            interval_s: default_vlm_interval(),
            verify_alerts: false,
            verify_rules: vec![],
            describe_prompt: default_describe_prompt(),
            verify_prompt: default_verify_prompt(),
            verify_crop: true,
            verify_timeout_s: default_verify_timeout(),
            max_new_tokens: default_vlm_tokens(),
            queue: default_vlm_queue(),
            nice: default_vlm_nice(),
            verify_mode: VerifyMode::default(),
        }
    }
}

fn default_device() -> String {
    "lookout".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    #[serde(default = "default_camera_name")]
    pub name: String,
    /// Frame source URI (`v4l://`, `file:`, `pipe:`, `video:`, `mjpeg+http://`, `rtsp://`).
    #[serde(default)]
    pub source: Option<String>,
    /// Hardware decoder for `rtsp://` streams (`off`, `v4l2m2m`, `nvv4l2dec`); set by the board
    /// profile, falling back to software when it fails.
    #[serde(default)]
    pub hwdecode: crate::capture::HwDecode,
    /// Reopen a source that ends, fails or stalls (docs/cameras.md); off: the run ends with it.
    #[serde(default = "yes")]
    pub heal: bool,
    /// Seconds without a frame after which a source counts as stalled and is reopened (0: never).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_s: f64,
    /// First wait before reopening a lost source, seconds; doubled per failed attempt…
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_s: f64,
    /// …up to this many seconds.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_s: f64,
    /// A source that has never delivered a frame stops being retried after this many seconds,
    /// and the run fails. Once frames have flowed it is retried forever.
    #[serde(default = "default_give_up")]
    pub give_up_after_s: f64,
    /// A gap in the frames longer than this many seconds ends every track (`end` events); a
    /// shorter one keeps them, so a brief reconnect does not change ids.
    #[serde(default = "default_track_gap")]
    pub track_gap_s: f64,
    /// Most frames per second this camera sends to the shared detector pool (none: its fair
    /// share of whatever the pool can do).
    #[serde(default)]
    pub detect_fps: Option<f64>,
}

fn default_camera_name() -> String {
    "cam0".into()
}
fn default_stall_timeout() -> f64 {
    10.0
}
fn default_backoff_initial() -> f64 {
    0.5
}
fn default_backoff_max() -> f64 {
    10.0
}
fn default_give_up() -> f64 {
    30.0
}
fn default_track_gap() -> f64 {
    10.0
}

impl Default for CameraConfig {
    fn default() -> Self {
        CameraConfig {
            name: default_camera_name(),
            source: None,
            hwdecode: crate::capture::HwDecode::default(),
            heal: true,
            stall_timeout_s: default_stall_timeout(),
            backoff_initial_s: default_backoff_initial(),
            backoff_max_s: default_backoff_max(),
            give_up_after_s: default_give_up(),
            track_gap_s: default_track_gap(),
            detect_fps: None,
        }
    }
}

impl CameraConfig {
    /// The healing policy these keys describe (checked by `Config::validate`).
    pub fn heal_policy(&self) -> crate::capture::HealPolicy {
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.0, 1e6));
        let d = crate::capture::HealPolicy::default();
        crate::capture::HealPolicy {
            stall_timeout: (self.stall_timeout_s > 0.0).then(|| secs(self.stall_timeout_s)),
            backoff: crate::capture::Backoff {
                initial: secs(self.backoff_initial_s),
                max: secs(self.backoff_max_s.max(self.backoff_initial_s)),
                factor: d.backoff.factor,
            },
            jitter: d.jitter,
            give_up_after: secs(self.give_up_after_s),
        }
    }

    /// Value checks of the camera keys under `section` (`camera`, `cameras[1]`), each failure
    /// naming its key.
    fn validate_as(&self, section: &str, issues: &mut Issues) {
        for (k, v, min) in [
            ("stall_timeout_s", self.stall_timeout_s, 0.0),
            ("backoff_initial_s", self.backoff_initial_s, 0.001),
            ("backoff_max_s", self.backoff_max_s, 0.001),
            ("give_up_after_s", self.give_up_after_s, 0.0),
            ("track_gap_s", self.track_gap_s, 0.001),
        ] {
            if !v.is_finite() || v < min || v > 86_400.0 {
                issues.push(
                    format!("{section}.{k}"),
                    format!("{v} must be {min}..86400 seconds"),
                );
            }
        }
        if self.backoff_max_s < self.backoff_initial_s {
            issues.push(
                format!("{section}.backoff_max_s"),
                format!(
                    "{} is below {section}.backoff_initial_s ({})",
                    self.backoff_max_s, self.backoff_initial_s
                ),
            );
        }
        if let Some(f) = self.detect_fps {
            if !f.is_finite() || f <= 0.0 || f > 1000.0 {
                issues.push(
                    format!("{section}.detect_fps"),
                    format!("{f} must be in (0, 1000]"),
                );
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    #[serde(default = "default_model")]
    pub model: String,
    pub conf: Option<f32>,
    pub iou: Option<f32>,
    /// tract threads per worker.
    #[serde(default = "one")]
    pub threads: usize,
    /// Parallel inference workers (each loads its own copy of the model).
    #[serde(default = "one")]
    pub workers: usize,
    /// Only these labels go on to tracking (empty = all).
    #[serde(default)]
    pub classes: Vec<String>,
    /// "f32" (default) or "f16": half-precision arithmetic where the CPU has it (Pi 5, Orin;
    /// docs/precision.md). Refused at load on a CPU without FP16 arithmetic.
    #[serde(default)]
    pub precision: crate::detect::Precision,
}

fn default_model() -> String {
    crate::models::DEFAULT_MODEL.into()
}
fn one() -> usize {
    1
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            model: default_model(),
            conf: None,
            iou: None,
            threads: 1,
            workers: 1,
            classes: vec![],
            precision: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Frames waiting for a detector; the oldest is dropped when full, so detection always sees
    /// the newest frame.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Seconds between scene descriptions (0 = never).
    #[serde(default = "default_describe")]
    pub describe_interval: f64,
    /// Seconds between stats records (0 = never).
    #[serde(default = "default_stats")]
    pub stats_interval: f64,
    /// Emit every frame's detections (low priority, droppable).
    #[serde(default)]
    pub publish_detections: bool,
    /// Pace a file source in real time instead of as fast as detection goes.
    #[serde(default)]
    pub realtime: bool,
}

fn default_queue() -> usize {
    2
}
fn default_describe() -> f64 {
    1.0
}
fn default_stats() -> f64 {
    5.0
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            queue: default_queue(),
            describe_interval: default_describe(),
            stats_interval: default_stats(),
            publish_detections: false,
            realtime: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// JSON Lines file for events, alerts, descriptions and stats (`-` = stdout).
    pub events_out: Option<PathBuf>,
}

/// Folders searched for board profiles: `$LOOKOUT_BOARDS`, `./boards`, the source tree's `boards/`.
pub fn board_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("LOOKOUT_BOARDS") {
        v.extend(std::env::split_paths(&p));
    }
    v.push(PathBuf::from("boards"));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin) = exe.parent() {
            v.push(bin.join("../share/lookout/boards"));
        }
    }
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards"));
    v
}

pub fn find_board(name: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    for d in board_dirs() {
        let f = d.join(format!("{name}.toml"));
        if f.is_file() {
            return Ok(f);
        }
    }
    Err(Error::Other(format!(
        "board '{name}' not found in {:?}",
        board_dirs()
    )))
}

fn read_table(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    if text.len() > 1 << 20 {
        return Err(Error::Config {
            path: path.into(),
            reason: "larger than 1 MiB".into(),
        });
    }
    toml::from_str(&text).map_err(|e| Error::Config {
        path: path.into(),
        reason: one_line(&e, &text),
    })
}

fn one_line(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(s) => format!(
            "line {}: {}",
            text[..s.start.min(text.len())].matches('\n').count() + 1,
            e.message()
        ),
        None => e.message().to_string(),
    }
}

/// `over` wins; tables merge key by key, everything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The display name of a config's origin, for error messages.
fn source_name(path: Option<&Path>) -> PathBuf {
    path.map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("(defaults)"))
}

/// The user's file layered over its board profile (or `board_override`), untyped, and the board
/// file used. Errors here stop loading: the file cannot be read, is not TOML, or names a board
/// that does not exist.
fn merged_table(
    path: Option<&Path>,
    board_override: Option<&str>,
) -> Result<(toml::Table, Option<PathBuf>)> {
    let mut user = match path {
        Some(p) => read_table(p)?,
        None => toml::Table::new(),
    };
    let board = board_override.map(str::to_owned).or_else(|| {
        user.get("board")
            .and_then(|b| b.as_str())
            .map(str::to_owned)
    });
    let (mut merged, board_file) = match &board {
        Some(b) => {
            let bp = find_board(b).map_err(|e| Error::Config {
                path: source_name(path),
                reason: format!("board: {e}"),
            })?;
            let mut t = read_table(&bp)?;
            t.insert("board".into(), toml::Value::String(b.clone()));
            (t, Some(bp))
        }
        None => (toml::Table::new(), None),
    };
    user.remove("board");
    merge(&mut merged, user);
    Ok((merged, board_file))
}

impl Config {
    /// Load a config file, layering it over its board (or `board_override`). `None` gives the
    /// embedded default: defaults layered over `board_override` if given. Every problem found is
    /// in the one error, each naming its key.
    pub fn load(path: Option<&Path>, board_override: Option<&str>) -> Result<Config> {
        let (merged, _) = merged_table(path, board_override)?;
        Self::from_table(merged, source_name(path))
    }

    /// Parse from text (tests, embedded defaults).
    pub fn parse(text: &str) -> Result<Config> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::Config {
            path: "(text)".into(),
            reason: one_line(&e, text),
        })?;
        Self::from_table(table, PathBuf::from("(text)"))
    }

    fn from_table(table: toml::Table, path: PathBuf) -> Result<Config> {
        let mut issues = Issues::default();
        match check::typed(&table, &mut issues) {
            Some(cfg) if issues.is_empty() => Ok(cfg),
            _ => Err(Error::Config {
                path,
                reason: issues.to_string(),
            }),
        }
    }

    /// The `[mqtt]` table as the MQTT module's settings, with the device and board filled in
    /// from the rest of the config. `None` when there is no `[mqtt]` table.
    pub fn mqtt_config(&self) -> std::result::Result<Option<crate::mqtt::MqttConfig>, Issues> {
        let Some(t) = &self.mqtt else {
            return Ok(None);
        };
        let mut issues = Issues::default();
        let Some(mut mc) = check::section::<crate::mqtt::MqttConfig>(
            "mqtt",
            &toml::Value::Table(t.clone()),
            &mut issues,
        ) else {
            return Err(issues);
        };
        if !t.contains_key("device") {
            mc.device = self.device.clone();
        }
        if let Some(b) = &self.board {
            mc.board = b.clone();
        }
        Ok(Some(mc))
    }

    /// Value checks beyond the types, every failing key recorded.
    fn validate(&self, issues: &mut Issues) {
        self.camera.validate_as("camera", issues);
        cameras::validate(self, issues);
        ocr::validate(self, issues);
        if self.privacy.segmenter.trim().is_empty() {
            issues.push("privacy.segmenter", "must name a segmentation model");
        }
        let d = &self.detector;
        if d.workers == 0 || d.workers > 16 {
            issues.push("detector.workers", format!("{} must be 1..16", d.workers));
        }
        if d.threads == 0 || d.threads > 64 {
            issues.push("detector.threads", format!("{} must be 1..64", d.threads));
        }
        for (k, v) in [("detector.conf", d.conf), ("detector.iou", d.iou)] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    issues.push(k, format!("{v} must be in 0..1"));
                }
            }
        }
        if self.pipeline.queue == 0 || self.pipeline.queue > 64 {
            issues.push(
                "pipeline.queue",
                format!("{} must be 1..64", self.pipeline.queue),
            );
        }
        for (k, v) in [
            (
                "pipeline.describe_interval",
                self.pipeline.describe_interval,
            ),
            ("pipeline.stats_interval", self.pipeline.stats_interval),
        ] {
            if !v.is_finite() || v < 0.0 {
                issues.push(k, format!("{v} must be ≥ 0"));
            }
        }
        if self.device.is_empty() || self.device.contains(['/', '+', '#']) {
            issues.push(
                "device",
                format!(
                    "'{}' must be non-empty without '/', '+' or '#'",
                    self.device
                ),
            );
        }
        if let Err(e) = self.tracker.validate() {
            issues.push("tracker", e);
        }
        if let Err(e) = self.events.validate() {
            issues.push("events", e);
        }
        if let Err(e) = self.describe.validate() {
            issues.push("describe", e);
        }
        let v = &self.vlm;
        if v.threads == 0 || v.threads > 64 {
            issues.push("vlm.threads", format!("{} must be 1..64", v.threads));
        }
        if v.queue == 0 || v.queue > 256 {
            issues.push("vlm.queue", format!("{} must be 1..256", v.queue));
        }
        if v.max_new_tokens == 0 || v.max_new_tokens > 4096 {
            issues.push(
                "vlm.max_new_tokens",
                format!("{} must be 1..4096", v.max_new_tokens),
            );
        }
        if !(-20..=19).contains(&v.nice) {
            issues.push("vlm.nice", format!("{} must be -20..19", v.nice));
        }
        for (k, x) in [
            ("vlm.interval_s", v.interval_s),
            ("vlm.verify_timeout_s", v.verify_timeout_s),
        ] {
            if !x.is_finite() || x <= 0.0 {
                issues.push(k, format!("{x} must be > 0"));
            }
        }
        for (k, why) in self.http.problems() {
            issues.push(k, why);
        }
        if let Some(st) = &self.store {
            if st.max_bytes < 1 << 20 {
                issues.push(
                    "store.max_bytes",
                    format!("{} must be at least 1048576 (1 MiB)", st.max_bytes),
                );
            }
            if !st.max_age_days.is_finite() || st.max_age_days < 0.0 {
                issues.push(
                    "store.max_age_days",
                    format!("{} must be ≥ 0", st.max_age_days),
                );
            }
            if st.path.as_os_str().is_empty() {
                issues.push("store.path", "must name a folder");
            }
            for (k, why) in st.clip_problems() {
                issues.push(k, why);
            }
        }
        match self.mqtt_config() {
            Ok(Some(mc)) => {
                if let Err(e) = mc.validate() {
                    issues.push("mqtt", e);
                }
            }
            Ok(None) => {}
            Err(found) => issues.0.extend(found.0),
        }
    }

    pub fn source(&self) -> String {
        self.camera
            .source
            .clone()
            .unwrap_or_else(|| DEFAULT_SOURCE.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = Config::parse("[detector]\nmodle = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("modle"), "{e}");
        let e = Config::parse("[detector]\nworkers = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("detector.workers"), "{e}");
        let e = Config::parse("device = \"a/b\"\n").unwrap_err().to_string();
        assert!(e.contains("device"), "{e}");
        let e = Config::parse("[pipeline]\nqueue = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") || e.contains("queue"), "{e}");
    }

    #[test]
    fn camera_healing_keys_are_checked() {
        let c = Config::parse("[camera]\nhwdecode = \"v4l2m2m\"\nstall_timeout_s = 0\n").unwrap();
        assert_eq!(c.camera.hwdecode, crate::capture::HwDecode::V4l2m2m);
        assert!(c.camera.heal);
        assert_eq!(c.camera.heal_policy().stall_timeout, None);
        let e = Config::parse("[camera]\nhwdecode = \"cuda\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("camera.hwdecode"), "{e}");
        let e =
            Config::parse("[camera]\nbackoff_initial_s = 5\nbackoff_max_s = 1\ntrack_gap_s = -1\n")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("camera.backoff_max_s") && e.contains("camera.track_gap_s"),
            "{e}"
        );
    }

    #[test]
    fn http_beyond_loopback_needs_a_token() {
        let c = Config::parse("[http]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(c.http.listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(
            Config::parse("").unwrap().http.listen.is_none(),
            "off by default"
        );
        let e = Config::parse("[http]\nlisten = \"0.0.0.0:8080\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.token"), "{e}");
        Config::parse("[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"0123456789abcdef\"\n").unwrap();
        let e = Config::parse("[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.token"), "{e}");
        let e = Config::parse("[http]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http.listen"), "{e}");
    }

    #[test]
    fn every_board_profile_loads_and_user_keys_override_it() {
        for b in ["rpi4", "rpi5", "jetson-orin-nano", "jetson-nano", "x86-dev"] {
            let c = Config::load(None, Some(b)).unwrap_or_else(|e| panic!("{b}: {e}"));
            assert_eq!(c.board.as_deref(), Some(b));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "board = \"rpi4\"\n[detector]\nthreads = 3\n").unwrap();
        let c = Config::load(Some(&p), None).unwrap();
        let board = Config::load(None, Some("rpi4")).unwrap();
        assert_eq!(c.detector.threads, 3);
        assert_eq!(
            c.detector.model, board.detector.model,
            "untouched keys come from the board"
        );
    }
}

//! The `lookout` command line: a thin layer over the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lookout::detect::{Detector, DetectorOptions, ModelDetector};
use lookout::schema::{DetectError, DetectRecord};
use lookout::{annotate, imageio, models};

mod cli;

#[derive(Parser)]
#[command(
    name = "lookout",
    version,
    about = "Edge inference: camera → detections → events → MQTT"
)]
struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Detect objects in image files or folders.
    Detect(DetectArgs),
    /// The main job: camera → detect → track → rules → events, alerts and scene descriptions.
    /// With no arguments: the bundled model on the bundled clip with a demo zone.
    Run(RunArgs),
    /// Print events, alerts and scene descriptions from MQTT as they arrive.
    Watch(WatchArgs),
    /// Time a model on an image: start-up, pre-processing, inference, post-processing.
    Bench(BenchArgs),
    /// Which object an instruction means: `lookout ground IMAGE "pick up the red cup on the left"`.
    Ground(cli::ground::GroundArgs),
    /// Describe an image with a vision-language model.
    Describe(cli::describe::DescribeArgs),
    /// Ask a vision-language model a question about an image.
    Ask(cli::describe::AskArgs),
    /// Check a config as a run would read it (board, [mqtt], models, zones, source) and print it resolved.
    Check(cli::check::CheckArgs),
    /// List the installed models, or pull one (`lookout models pull smolvlm-256m`).
    Models {
        /// One JSON object per model.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<cli::pull::ModelsCmd>,
    },
}

#[derive(clap::Args)]
struct DetectArgs {
    /// Model name (a folder under the model paths) or a model folder / model.toml.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// Score threshold (default: the model's).
    #[arg(long)]
    conf: Option<f32>,
    /// IoU threshold for NMS (default: the model's).
    #[arg(long)]
    iou: Option<f32>,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One JSON object per image per line on stdout.
    #[arg(long)]
    json: bool,
    /// Write annotated images: a file (one input) or a folder (several).
    #[arg(long, value_name = "OUT")]
    annotate: Option<PathBuf>,
    /// Image files or folders.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Config file (TOML). Default: the embedded demo (samples/demo.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Board profile (boards/<NAME>.toml) under the config.
    #[arg(long)]
    board: Option<String>,
    /// Frame source URI, overriding the config: v4l:///dev/video0?…, file:DIR?fps=…, video:clip.mp4, pipe:…, mjpeg+http://…
    #[arg(long)]
    source: Option<String>,
    /// Model name or folder, overriding the config.
    #[arg(long)]
    model: Option<String>,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    /// Write events, alerts, descriptions and stats as JSON Lines here (`-` = stdout).
    #[arg(long)]
    events_out: Option<PathBuf>,
    /// Print JSON Lines on stdout instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Print a summary as JSON on stdout at the end.
    #[arg(long)]
    summary_json: bool,
    /// Publish over MQTT: a broker URL (mqtt://host:port, mqtts://…), `embedded` to start the
    /// built-in broker on 127.0.0.1:1883, or `none`. Default: the config's [mqtt] table, if any.
    #[arg(long)]
    broker: Option<String>,
    /// Port for `--broker embedded`.
    #[arg(long, default_value_t = 1883)]
    embedded_port: u16,
    /// Store-and-forward spool file (default: the config's mqtt.spool_path).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// VLM folder for model-written descriptions and alert verification, overriding `[vlm] model`.
    #[arg(long)]
    vlm: Option<PathBuf>,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// Broker URL.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Only this device (default: every device).
    #[arg(long)]
    device: Option<String>,
    /// One JSON object per message.
    #[arg(long)]
    json: bool,
    /// Also show online/offline status.
    #[arg(long)]
    status: bool,
    /// CA file for mqtts://.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    max_messages: Option<usize>,
    /// Stop when nothing arrived for this many seconds.
    #[arg(long)]
    idle_timeout: Option<f64>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Model name or folder.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed iterations (after 3 warm-up runs).
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Also time every node of the plan and print where inference time goes, per operator kind.
    #[arg(long)]
    profile: bool,
    /// Image to run on (default: a bundled test photo).
    image: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // rumqttd logs every client disconnect as an error; keep it quiet unless debugging.
    let filter = if cli.verbose >= 2 {
        level.to_string()
    } else {
        format!("{level},rumqttd=off")
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    let res = match cli.cmd {
        Cmd::Detect(a) => detect(a),
        Cmd::Run(a) => run(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Watch(a) => watch(a),
        Cmd::Ground(a) => cli::ground::run(a),
        Cmd::Check(a) => cli::check::run(a),
        Cmd::Describe(a) => cli::describe::describe(a),
        Cmd::Ask(a) => cli::describe::ask(a),
        Cmd::Models {
            action: Some(a), ..
        } => cli::pull::run(a),
        Cmd::Models { json, .. } => list_models(json),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Expand folders (sorted, images only) and keep files as given, so a bad file is reported.
fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && imageio::is_image_path(f))
                .collect();
            files.sort();
            if files.is_empty() {
                log::warn!(
                    "{}: no images (.jpg .jpeg .png .bmp) in this folder",
                    p.display()
                );
            }
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn annotate_path(out: &Path, src: &Path, many: bool) -> PathBuf {
    if many || out.is_dir() {
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        out.join(format!("{stem}.annotated.jpg"))
    } else {
        out.to_path_buf()
    }
}

fn detect(a: DetectArgs) -> anyhow::Result<ExitCode> {
    let manifest = models::find(&a.model)?;
    let opts = DetectorOptions {
        threads: a.threads,
        conf: a.conf,
        iou: a.iou,
    };
    let mut det = ModelDetector::load(manifest, &opts)?;
    let files = expand_inputs(&a.inputs)?;
    let many = files.len() > 1;
    if let Some(out) = &a.annotate {
        if many {
            std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
        }
    }
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    let mut failures = 0usize;
    for f in &files {
        let src = f.display().to_string();
        let result = imageio::load_rgb(f)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                let dets = det.detect(&img)?;
                Ok((img, dets))
            });
        match result {
            Ok((mut img, dets)) => {
                let rec = DetectRecord {
                    source: src,
                    width: img.width(),
                    height: img.height(),
                    model: det.name().to_string(),
                    inference_ms: (det.last_timings().inference_ms * 100.0).round() / 100.0,
                    detections: dets
                        .into_iter()
                        .map(|mut d| {
                            d.bbox = d.bbox.rounded();
                            d.score = (d.score * 10_000.0).round() / 10_000.0;
                            d
                        })
                        .collect(),
                };
                if a.json {
                    writeln!(so, "{}", serde_json::to_string(&rec)?)?;
                } else {
                    print_table(&mut so, &rec)?;
                }
                if let Some(out) = &a.annotate {
                    annotate::annotate(&mut img, &rec.detections);
                    let p = annotate_path(out, f, many);
                    img.save(&p)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
                if a.json {
                    let rec = DetectError {
                        source: src,
                        error: format!("{e:#}"),
                    };
                    writeln!(so, "{}", serde_json::to_string(&rec)?)?;
                }
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_table(w: &mut impl Write, r: &DetectRecord) -> std::io::Result<()> {
    writeln!(
        w,
        "{} ({}x{}, {}, {:.1} ms): {} objects",
        r.source,
        r.width,
        r.height,
        r.model,
        r.inference_ms,
        r.detections.len()
    )?;
    for d in &r.detections {
        let b = d.bbox;
        writeln!(
            w,
            "  {:<16} {:>5.2}  [{:>7.1} {:>7.1} {:>7.1} {:>7.1}]",
            d.label, d.score, b.x1, b.y1, b.x2, b.y2
        )?;
    }
    Ok(())
}

fn list_models(json: bool) -> anyhow::Result<ExitCode> {
    let mut so = std::io::stdout().lock();
    if !json {
        writeln!(
            so,
            "{:<22} {:<11} {:<14} {:<18} {:>8}  description",
            "name", "family", "variant", "input", "MB"
        )?;
    }
    for m in models::list() {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        let size = std::fs::metadata(&m.model_path)
            .map(|md| md.len() as f64 / 1e6)
            .ok();
        if json {
            let v = serde_json::json!({
                "name": m.model.name, "family": m.model.family, "variant": m.model.variant,
                "input": m.input.shape, "file": m.model_path, "size_mb": size,
                "labels": m.labels.len(), "description": m.model.description,
                "source": m.source.package, "licence": m.source.licence,
            });
            writeln!(so, "{v}")?;
        } else {
            writeln!(
                so,
                "{:<22} {:<11} {:<14} {:<18} {:>8}  {}",
                m.model.name,
                m.model.family.as_str(),
                m.model.variant,
                format!("{:?}", m.input.shape),
                size.map_or("missing".into(), |s| format!("{s:.2}")),
                m.model.description
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    use std::time::Instant;
    let t0 = Instant::now();
    let manifest = models::find(&a.model)?;
    let mut det = ModelDetector::load(
        manifest,
        &DetectorOptions {
            threads: a.threads,
            ..Default::default()
        },
    )?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let img = match &a.image {
        Some(p) => imageio::load_rgb(p)?,
        None => imageio::decode_rgb(include_bytes!("../tests/fixtures/images/messi5.jpg"))
            .map_err(anyhow::Error::msg)?,
    };
    let first = det.detect(&img)?;
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
    for _ in 0..2 {
        det.detect(&img)?;
    }
    let mut samples = Vec::with_capacity(a.iters);
    for _ in 0..a.iters.max(1) {
        let t = Instant::now();
        det.detect(&img)?;
        samples.push((t.elapsed().as_secs_f64() * 1e3, det.last_timings()));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let total = median(samples.iter().map(|s| s.0).collect());
    let pre = median(samples.iter().map(|s| s.1.preprocess_ms).collect());
    let inf = median(samples.iter().map(|s| s.1.inference_ms).collect());
    let post = median(samples.iter().map(|s| s.1.postprocess_ms).collect());
    let profile = if a.profile {
        Some(det.profile(&img, a.iters.max(1))?)
    } else {
        None
    };
    let report = serde_json::json!({
        "model": det.name(), "variant": det.manifest().model.variant, "threads": a.threads,
        "iters": samples.len(), "image": [img.width(), img.height()], "detections": first.len(),
        "load_ms": load_ms, "first_detection_ms": first_ms,
        "median_ms": {"total": total, "preprocess": pre, "inference": inf, "postprocess": post},
        "overhead_pct": 100.0 * (total - inf) / inf,
        "profile": profile,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "{} ({}), {} thread(s): load {load_ms:.0} ms, first detection {first_ms:.0} ms; median per image {total:.2} ms = pre {pre:.2} + inference {inf:.2} + post {post:.2} ms ({:.1}% outside inference)",
            det.name(),
            det.manifest().model.variant,
            a.threads,
            100.0 * (total - inf) / inf
        );
        if let Some(p) = &profile {
            let sum: f64 = p.iter().map(|o| o.ms).sum();
            println!(
                "{:<28} {:>5} {:>9} {:>6}  slowest node",
                "operator", "nodes", "ms/run", "share"
            );
            for o in p {
                println!(
                    "{:<28} {:>5} {:>9.3} {:>5.1}%  {} ({:.3} ms)",
                    o.op,
                    o.nodes,
                    o.ms,
                    100.0 * o.ms / sum.max(1e-9),
                    o.slowest_node,
                    o.slowest_ms
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Readable one-liners for people watching a terminal.
struct ReadableSink;

impl lookout::pipeline::Sink for ReadableSink {
    fn send(&mut self, out: &lookout::pipeline::Output) -> lookout::Result<()> {
        use lookout::pipeline::Output;
        let line = match out {
            Output::Alert(a) => format!("ALERT [{}] {} (rule '{}', frame {})", format!("{:?}", a.severity).to_lowercase(), a.message, a.rule, a.frame_id),
            Output::Event(e) => format!(
                "event {:<6} {} #{} at [{:.0} {:.0} {:.0} {:.0}]{}",
                format!("{:?}", e.kind).to_lowercase(),
                e.label,
                e.track_id,
                e.after.bbox.x1,
                e.after.bbox.y1,
                e.after.bbox.x2,
                e.after.bbox.y2,
                if e.after.zones.is_empty() { String::new() } else { format!(" in {}", e.after.zones.join(", ")) }
            ),
            Output::Scene(d) => format!("scene: {}", d.text),
            Output::Stats(s) => format!(
                "stats: {} frames, {:.1} fps, inference {:.1} ms, latency {:.1} ms, dropped {}, tracks {}",
                s.frames_processed, s.fps, s.inference_ms, s.latency_ms, s.frames_dropped, s.tracks
            ),
            Output::Detections(_) | Output::Snapshot(_) => return Ok(()),
        };
        println!("{line}");
        Ok(())
    }
}

fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    use lookout::config::Config;
    use lookout::pipeline::{self, Handle, JsonlSink, RunOptions, Sink};
    use std::sync::atomic::Ordering;

    let mut cfg = match &a.config {
        Some(p) => Config::load(Some(p), a.board.as_deref())?,
        None => {
            let (_dir, p) = cli::demo_config_file()?;
            Config::load(Some(&p), a.board.as_deref())?
        }
    };
    if let Some(s) = &a.source {
        cfg.camera.source = Some(s.clone());
    }
    if let Some(m) = &a.model {
        cfg.detector.model = m.clone();
    }
    if let Some(v) = &a.vlm {
        cfg.vlm.model = Some(v.clone());
    }
    let uri = cfg.source();
    let source = lookout::capture::open(&uri)?;
    let live = uri.starts_with("v4l:") || uri.starts_with("mjpeg+http:");
    let manifest = models::find(&cfg.detector.model)?;
    let opts = DetectorOptions {
        threads: cfg.detector.threads,
        conf: cfg.detector.conf,
        iou: cfg.detector.iou,
    };
    let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
    for _ in 0..cfg.detector.workers {
        detectors.push(Box::new(ModelDetector::load(manifest.clone(), &opts)?));
    }
    let handle = Handle::default();
    let mqtt = start_mqtt(&a, &cfg, &handle)?;
    // MQTT first: a record is in the store-and-forward spool before any log line reports it.
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(m) = &mqtt {
        sinks.push(Box::new(lookout::mqtt::bridge::MqttSink::new(
            m.publisher.handle(),
        )));
    }
    match &a.events_out {
        Some(p) if p.as_os_str() == "-" => {
            sinks.push(Box::new(JsonlSink::new(std::io::stdout(), true)))
        }
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("{}", p.display()))?;
            sinks.push(Box::new(JsonlSink::new(std::io::BufWriter::new(f), true)));
        }
        None => {}
    }
    if a.json {
        if a.events_out.as_deref() != Some(Path::new("-")) {
            sinks.push(Box::new(JsonlSink::new(std::io::stdout(), true)));
        }
    } else if !a.summary_json {
        sinks.push(Box::new(ReadableSink));
    }
    {
        let stop = handle.stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("stopping (Ctrl-C again to exit at once)");
        })?;
    }
    eprintln!(
        "lookout run: {} on {} ({} worker(s) × {} thread(s)){}",
        manifest.model.name,
        uri,
        cfg.detector.workers,
        cfg.detector.threads,
        cfg.board
            .as_ref()
            .map(|b| format!(", board {b}"))
            .unwrap_or_default()
    );
    let vlm = match &cfg.vlm.model {
        Some(dir) => {
            let variant: lookout::vlm::Variant = cfg
                .vlm
                .variant
                .parse()
                .with_context(|| format!("vlm.variant '{}'", cfg.vlm.variant))?;
            let t = std::time::Instant::now();
            let m = lookout::vlm::load(dir, variant, cfg.vlm.threads)
                .with_context(|| format!("vlm.model {}", dir.display()))?;
            eprintln!(
                "vlm: {} from {} in {:.1} s ({:?} schedule{})",
                m.name(),
                dir.display(),
                t.elapsed().as_secs_f64(),
                cfg.vlm.schedule,
                if cfg.vlm.verify_alerts {
                    ", verifying alerts"
                } else {
                    ""
                }
            );
            Some(pipeline::SharedVlm::new(m))
        }
        None => None,
    };
    let summary = pipeline::run(
        &cfg,
        source,
        detectors,
        sinks,
        RunOptions {
            max_frames: a.max_frames,
            drop_oldest: live,
            vlm,
        },
        handle,
    )?;
    if let Some(m) = mqtt {
        m.stop();
    }
    if a.summary_json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    eprintln!(
        "done: {} frames in {:.1} s ({:.1} fps), {} events, {} alerts, {} descriptions, {} dropped, {} bad",
        summary.frames_processed,
        summary.wall_s,
        summary.frames_processed as f64 / summary.wall_s.max(1e-9),
        summary.events,
        summary.alerts,
        summary.descriptions,
        summary.frames_dropped,
        summary.bad_frames
    );
    Ok(ExitCode::SUCCESS)
}

/// The MQTT side of a run: the embedded broker (if asked for), the publisher and the command server.
struct MqttRuntime {
    publisher: lookout::mqtt::Publisher,
    commands: Option<lookout::mqtt::CommandServer>,
    _broker: Option<lookout::mqtt::EmbeddedBroker>,
}

impl MqttRuntime {
    fn stop(self) {
        let drain = std::time::Duration::from_secs(5);
        if !self.publisher.flush(drain) {
            eprintln!("mqtt: not everything was acknowledged yet; it stays in the spool for the next start");
        }
        self.publisher.shutdown(std::time::Duration::from_secs(1));
        if let Some(c) = self.commands {
            c.join();
        }
    }
}

fn start_mqtt(
    a: &RunArgs,
    cfg: &lookout::config::Config,
    handle: &lookout::pipeline::Handle,
) -> anyhow::Result<Option<MqttRuntime>> {
    use lookout::mqtt::{
        bridge::PipelineCommands, CommandServer, EmbeddedBroker, EmbeddedBrokerConfig, MqttConfig,
        Publisher,
    };
    // The embedded default (no --config) is self-contained: it brings its own broker.
    let choice = a
        .broker
        .clone()
        .or_else(|| a.config.is_none().then(|| "embedded".to_string()));
    if choice.as_deref() == Some("none") || (choice.is_none() && cfg.mqtt.is_none()) {
        return Ok(None);
    }
    let mut mc: MqttConfig = match cfg.mqtt_config() {
        Ok(Some(mc)) => mc,
        Ok(None) => {
            let mut mc = MqttConfig::default();
            mc.device = cfg.device.clone();
            if let Some(b) = &cfg.board {
                mc.board = b.clone();
            }
            mc
        }
        Err(issues) => anyhow::bail!("{issues}"),
    };
    if let Some(p) = &a.spool {
        mc.spool_path = p.clone();
    }
    let mut broker = None;
    match choice.as_deref() {
        Some("embedded") => {
            let bc = EmbeddedBrokerConfig {
                listen: ([127, 0, 0, 1], a.embedded_port).into(),
                ..Default::default()
            };
            let b = match EmbeddedBroker::start(&bc) {
                Ok(b) => b,
                // Port taken (another broker, another demo): any free loopback port will do.
                Err(e) if a.embedded_port == 1883 => {
                    log::info!("embedded broker on 1883: {e}; using a free port");
                    EmbeddedBroker::start(&EmbeddedBrokerConfig {
                        listen: ([127, 0, 0, 1], 0).into(),
                        ..bc
                    })?
                }
                Err(e) => return Err(e.into()),
            };
            eprintln!(
                "mqtt: embedded broker on {} (watch it with: lookout watch --broker {})",
                b.url(),
                b.url()
            );
            mc.broker = b.url();
            broker = Some(b);
        }
        Some(url) => mc.broker = url.to_string(),
        None => {}
    }
    mc.validate()?;
    let publisher = Publisher::start(&mc)?;
    let commands = if mc.commands {
        let handler = PipelineCommands {
            handle: handle.clone(),
            publisher: publisher.handle(),
            camera: cfg.camera.name.clone(),
            rule_names: cfg.rules.iter().map(|r| r.name.clone()).collect(),
            grounder: lookout::mqtt::bridge::LazyGrounder::for_model(&cfg.detector.model),
        };
        Some(CommandServer::start(&publisher, handler)?)
    } else {
        None
    };
    eprintln!(
        "mqtt: publishing to {} as lookout/{}/… (spool {})",
        mc.broker,
        mc.device,
        mc.spool_path.display()
    );
    Ok(Some(MqttRuntime {
        publisher,
        commands,
        _broker: broker,
    }))
}

fn watch(a: WatchArgs) -> anyhow::Result<ExitCode> {
    let opts = lookout::mqtt::WatchOptions {
        broker: a.broker,
        device: a.device,
        json: a.json,
        status: a.status,
        ca_file: a.ca_file,
        username: a.username,
        password: a.password,
        max_messages: a.max_messages,
        idle_timeout: a.idle_timeout.map(std::time::Duration::from_secs_f64),
    };
    let n = lookout::mqtt::watch(&opts, &mut std::io::stdout().lock())?;
    eprintln!("{n} messages");
    Ok(ExitCode::SUCCESS)
}

//! `lookout run`: the flags and the config file become one [`RunSettings`]; the library starts
//! and runs everything from it. This file only picks the terminal outputs and prints the summary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;

use lookout::config::Config;
use lookout::pipeline::{
    Broker, Handle, JsonlSink, ReadableSink, RunSettings, Runtime, Sink, DEFAULT_EMBEDDED_PORT,
};

#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Append events, alerts, descriptions and stats as JSON Lines here (`-` = stdout). The file
    /// is appended to, so the local record of alerts survives restarts like the spool does.
    #[arg(long)]
    events_out: Option<PathBuf>,
    /// Start `--events-out` afresh instead of appending to it.
    #[arg(long, requires = "events_out")]
    truncate_events: bool,
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
    #[arg(long, default_value_t = DEFAULT_EMBEDDED_PORT)]
    embedded_port: u16,
    /// Store-and-forward spool file (default: the config's mqtt.spool_path).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// VLM folder for model-written descriptions and alert verification, overriding `[vlm] model`.
    #[arg(long)]
    vlm: Option<PathBuf>,
    /// Serve the live web view and /metrics on IP:PORT (port 0: a free one, printed at start),
    /// or `off`. Default: the config's `[http] listen`; the embedded demo serves on
    /// 127.0.0.1:8080 (or goes without when that port is taken).
    #[arg(long, value_name = "ADDR", value_parser = parse_http)]
    http: Option<HttpFlag>,
    /// Keep events, alerts, scene text and crops in this event store folder (`lookout events`,
    /// `search`, `summary`), overriding `[store] path` and turning the store on.
    #[arg(long)]
    store: Option<PathBuf>,
}

/// Where the embedded demo serves its web view.
const DEMO_HTTP: &str = "127.0.0.1:8080";

/// `--http`: an address or `off`.
#[derive(Clone, Copy, Debug)]
enum HttpFlag {
    Off,
    At(std::net::SocketAddr),
}

fn parse_http(s: &str) -> Result<HttpFlag, String> {
    match s {
        "off" | "none" => Ok(HttpFlag::Off),
        _ => s
            .parse()
            .map(HttpFlag::At)
            .map_err(|e| format!("'{s}': {e} (want IP:PORT such as 127.0.0.1:8080, or off)")),
    }
}

/// The config file (or the embedded demo) with the command line's overrides applied.
fn config(a: &RunArgs) -> anyhow::Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(Some(p), a.board.as_deref())?,
        None => {
            let (_dir, p) = super::demo_config_file()?;
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
    match a.http {
        Some(HttpFlag::Off) => cfg.http.listen = None,
        Some(HttpFlag::At(addr)) => cfg.http.listen = Some(addr),
        None if a.config.is_none() && cfg.http.listen.is_none() => {
            cfg.http.listen = DEMO_HTTP.parse().ok();
            cfg.http.best_effort = true;
        }
        None => {}
    }
    if let Some((key, why)) = cfg.http.problems().into_iter().next() {
        anyhow::bail!("{key}: {why}");
    }
    if let Some(dir) = &a.store {
        match &mut cfg.store {
            Some(s) => s.path = dir.clone(),
            None => cfg.store = Some(lookout::config::StoreConfig::at(dir)),
        }
    }
    Ok(cfg)
}

/// `--broker`; without it the embedded demo brings its own broker, a config file its `[mqtt]`.
fn broker(a: &RunArgs) -> Broker {
    match a.broker.as_deref() {
        Some("none") => Broker::Off,
        Some("embedded") => Broker::Embedded {
            port: a.embedded_port,
        },
        Some(url) => Broker::Url(url.to_string()),
        None if a.config.is_none() => Broker::Embedded {
            port: a.embedded_port,
        },
        None => Broker::Config,
    }
}

/// The terminal and file outputs; MQTT is added by the library, ahead of them. With several
/// cameras the readable lines name theirs.
fn sinks(a: &RunArgs, several_cameras: bool) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let events_to_stdout = a.events_out.as_deref() == Some(Path::new("-"));
    match &a.events_out {
        Some(_) if events_to_stdout => {
            sinks.push(Box::new(JsonlSink::new(std::io::stdout(), true)))
        }
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(!a.truncate_events)
                .truncate(a.truncate_events)
                .open(p)
                .with_context(|| format!("{}", p.display()))?;
            sinks.push(Box::new(JsonlSink::new(std::io::BufWriter::new(f), true)));
        }
        None => {}
    }
    if a.json {
        if !events_to_stdout {
            sinks.push(Box::new(JsonlSink::new(std::io::stdout(), true)));
        }
    } else if !a.summary_json {
        sinks.push(Box::new(
            ReadableSink::new(std::io::stdout()).with_camera_names(several_cameras),
        ));
    }
    Ok(sinks)
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = RunSettings {
        config: config(&a)?,
        max_frames: a.max_frames,
        broker: broker(&a),
        spool: a.spool.clone(),
    };
    let sinks = sinks(&a, settings.config.cameras.len() > 1)?;
    let handle = Handle::default();
    // Ctrl-C before the first frame is not a source failure.
    let stop = handle.stop.clone();
    {
        let stop = handle.stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("stopping (Ctrl-C again to exit at once)");
        })?;
    }
    let runtime = Runtime::start(settings, handle, Box::new(|line| eprintln!("{line}")))?;
    let summary = runtime.run(sinks)?;
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
    // A source that never gave a frame (a missing file, a command that exits at once, a camera
    // that stayed away through every retry) is a failure systemd and scripts must see.
    let asked_to_stop = stop.load(Ordering::SeqCst) || a.max_frames == Some(0);
    if summary.frames_captured == 0 && !asked_to_stop {
        eprintln!("error: no frame could be read from the source; nothing was processed");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

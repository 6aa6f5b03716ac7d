//! `lookout bench`: time a model on one image: start-up, pre-processing, inference and
//! post-processing, and with `--profile` where inference time goes per operator kind.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use lookout::detect::{Detector, DetectorOptions, ModelDetector, Precision};
use lookout::{imageio, models};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model name or folder.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    model: String,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Arithmetic precision: f32, or f16 on ARM CPUs with FP16 arithmetic (Pi 5, Orin).
    #[arg(long, default_value = "f32")]
    precision: Precision,
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

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let manifest = models::find(&a.model)?;
    let mut det = ModelDetector::load(
        manifest,
        &DetectorOptions {
            threads: a.threads,
            precision: a.precision,
            ..Default::default()
        },
    )?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let img = match &a.image {
        Some(p) => imageio::load_rgb(p)?,
        None => imageio::decode_rgb(include_bytes!("../../tests/fixtures/images/messi5.jpg"))
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
        "precision": a.precision.as_str(),
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

//! `lookout detect`: objects in image files or folders, as a table, JSON Lines or annotated images.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use lookout::detect::{Detector, DetectorOptions, ModelDetector, Precision};
use lookout::schema::{DetectError, DetectRecord};
use lookout::{annotate, imageio, models};

#[derive(clap::Args)]
pub struct DetectArgs {
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
    /// Arithmetic precision: f32, or f16 on ARM CPUs with FP16 arithmetic (Pi 5, Orin).
    #[arg(long, default_value = "f32")]
    precision: Precision,
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

/// Expand folders (sorted, images only) and keep files as given, so a bad file is reported.
pub(crate) fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
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

/// Where the drawn copy of `src` goes: `out` itself for one image, else `<stem>.<kind>.jpg` in the
/// folder `out` (`lookout detect` and `lookout read` share this).
pub(crate) fn annotate_path(out: &Path, src: &Path, many: bool, kind: &str) -> PathBuf {
    if many || out.is_dir() {
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
        out.join(format!("{stem}.{kind}.jpg"))
    } else {
        out.to_path_buf()
    }
}

/// Exit code 1 when any input failed (each is reported and the rest still run).
pub fn run(a: DetectArgs) -> anyhow::Result<ExitCode> {
    let manifest = models::find(&a.model)?;
    let opts = DetectorOptions {
        threads: a.threads,
        conf: a.conf,
        iou: a.iou,
        precision: a.precision,
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
                    let p = annotate_path(out, f, many, "annotated");
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

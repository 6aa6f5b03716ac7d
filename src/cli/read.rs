//! `lookout read`: the text in image files or folders (OCR), as a table, JSON Lines or annotated images.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use image::{Rgb, RgbImage};
use serde::Serialize;

use lookout::ocr::{OcrManifest, OcrTimings, Reader, ReaderOptions, TextLine, DEFAULT_OCR_MODEL};
use lookout::{annotate, imageio};

#[derive(clap::Args)]
pub struct ReadArgs {
    /// OCR model name (a folder under the model paths) or a model folder / model.toml.
    #[arg(long, default_value = DEFAULT_OCR_MODEL)]
    model: String,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Skip the text-angle classifier (upside-down text is then misread).
    #[arg(long)]
    no_cls: bool,
    /// One JSON object per image per line on stdout.
    #[arg(long)]
    json: bool,
    /// Write annotated images: a file (one input) or a folder (several).
    #[arg(long, value_name = "OUT")]
    annotate: Option<PathBuf>,
    /// Read each image this many times and report the median stage times (for benches; the text is
    /// the same every time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// Image files or folders.
    #[arg(required = true, value_name = "IMAGE")]
    inputs: Vec<PathBuf>,
}

/// One image's result (`--json`).
#[derive(Serialize)]
struct ReadRecord<'a> {
    source: String,
    width: u32,
    height: u32,
    model: &'a str,
    elapsed_ms: f64,
    /// median stage times over `--repeat` reads
    timings: OcrTimings,
    lines: Vec<TextLine>,
}

#[derive(Serialize)]
struct ReadError {
    source: String,
    error: String,
}

/// Exit code 1 when any input failed (each is reported and the rest still run).
pub fn run(a: ReadArgs) -> anyhow::Result<ExitCode> {
    let manifest = OcrManifest::find(&a.model)?;
    let opts = ReaderOptions {
        threads: a.threads,
        use_cls: !a.no_cls,
    };
    let mut reader = Reader::load(&manifest, &opts)?;
    let files = super::detect::expand_inputs(&a.inputs)?;
    let many = files.len() > 1;
    if let (Some(out), true) = (&a.annotate, many) {
        std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    }
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    let mut failures = 0usize;
    for f in &files {
        let src = f.display().to_string();
        let t0 = Instant::now();
        let result = imageio::load_rgb(f)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                let mut runs = Vec::with_capacity(a.repeat as usize);
                let mut lines = Vec::new();
                for _ in 0..a.repeat {
                    lines = reader.read(&img).with_context(|| src.clone())?;
                    runs.push(reader.last_timings());
                }
                Ok((lines, img, median(runs)))
            });
        match result {
            Ok((lines, mut img, timings)) => {
                let rec = ReadRecord {
                    source: src,
                    width: img.width(),
                    height: img.height(),
                    model: &manifest.model.name,
                    elapsed_ms: (t0.elapsed().as_secs_f64() * 1e5).round() / 100.0,
                    timings,
                    lines,
                };
                if a.json {
                    writeln!(so, "{}", serde_json::to_string(&rec)?)?;
                } else {
                    print_table(&mut so, &rec)?;
                }
                if let Some(out) = &a.annotate {
                    draw(&mut img, &rec.lines);
                    let p = super::detect::annotate_path(out, f, many, "read");
                    img.save(&p)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e:#}");
                if a.json {
                    let rec = ReadError {
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

/// Each stage's median over the runs.
fn median(runs: Vec<OcrTimings>) -> OcrTimings {
    let med = |f: fn(&OcrTimings) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2)
            .map_or(0.0, |m| (m * 100.0).round() / 100.0)
    };
    OcrTimings {
        det_ms: med(|t| t.det_ms),
        cls_ms: med(|t| t.cls_ms),
        rec_ms: med(|t| t.rec_ms),
    }
}

fn print_table(w: &mut impl Write, r: &ReadRecord) -> std::io::Result<()> {
    writeln!(
        w,
        "{} ({}x{}, {}, {:.1} ms): {} lines",
        r.source,
        r.width,
        r.height,
        r.model,
        r.elapsed_ms,
        r.lines.len()
    )?;
    for l in &r.lines {
        let b = l.bbox();
        writeln!(
            w,
            "  {:>5.2}  [{:>6.0} {:>6.0} {:>6.0} {:>6.0}]  {}",
            l.score, b.x1, b.y1, b.x2, b.y2, l.text
        )?;
    }
    Ok(())
}

/// Outline each line's polygon and write its text above it (the bitmap font has ASCII only; other
/// characters show as '?').
fn draw(img: &mut RgbImage, lines: &[TextLine]) {
    let c = Rgb([255, 40, 40]);
    for l in lines {
        for i in 0..4 {
            let (a, b) = (l.polygon[i], l.polygon[(i + 1) % 4]);
            let n = ((b[0] - a[0]).abs().max((b[1] - a[1]).abs()) as usize).max(1);
            for k in 0..=n {
                let t = k as f32 / n as f32;
                let (x, y) = (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                    let (px, py) = (x as i64 + dx, y as i64 + dy);
                    if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height()
                    {
                        img.put_pixel(px as u32, py as u32, c);
                    }
                }
            }
        }
        let b = l.bbox();
        annotate::draw_text(img, b.x1 as i64, b.y1 as i64 - 10, &l.text, c, 1);
    }
}

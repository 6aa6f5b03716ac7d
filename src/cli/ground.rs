//! `lookout ground IMAGE "instruction"`: which object the instruction means, from the detector's
//! boxes in one image.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use image::Rgb;

use lookout::detect::{Detector, DetectorOptions, ModelDetector};
use lookout::embed::{Embedder, EmbeddingManifest, DEFAULT_EMBEDDING_MODEL};
use lookout::ground::{GroundResult, Grounder, Object, Status};
use lookout::ocr::{OcrManifest, Reader, ReaderOptions};
use lookout::segment::{self, PersonSegmenter};
use lookout::{annotate, imageio, models};

#[derive(clap::Args)]
pub struct GroundArgs {
    /// Detector: a model name (a folder under the model paths) or a model folder / model.toml.
    #[arg(long, default_value = models::GROUND_MODEL)]
    pub model: String,
    /// Detection score threshold.
    #[arg(long, default_value_t = lookout::ground::DETECTOR_CONF)]
    pub conf: f32,
    /// Sentence-embedding model for matching nouns to labels (name or folder).
    #[arg(long, default_value = DEFAULT_EMBEDDING_MODEL)]
    pub embedding: String,
    /// Florence-2 model folder for VLM grounding.
    #[arg(long, value_name = "DIR")]
    pub vlm: Option<PathBuf>,
    /// Person-segmentation model (name or folder) for the `mask` of a person target; `none` for no
    /// mask.
    #[arg(long, default_value = lookout::segment::DEFAULT_SEGMENTER)]
    pub segmenter: String,
    /// OCR model (name or folder) that reads the text on each candidate when the instruction asks
    /// for it ("the box that says FRAGILE"); `none` to never read.
    #[arg(long, default_value = lookout::ocr::DEFAULT_OCR_MODEL)]
    pub ocr: String,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the answer as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the image with the chosen box (and the candidates) drawn.
    #[arg(long, value_name = "OUT")]
    pub annotate: Option<PathBuf>,
    /// The image.
    pub image: PathBuf,
    /// What to find, e.g. "pick up the red cup on the left".
    pub instruction: String,
}

pub fn run(a: GroundArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.vlm {
        anyhow::bail!(
            "--vlm {}: VLM grounding is not available in this build (use the detector path without --vlm)",
            dir.display()
        );
    }
    let manifest = models::find(&a.model)?;
    let mut det = ModelDetector::load(
        manifest,
        &DetectorOptions {
            threads: a.threads,
            conf: Some(a.conf),
            iou: None,
            ..Default::default()
        },
    )?;
    let em = EmbeddingManifest::find(&a.embedding)?;
    let embedder = Embedder::load(&em)?;
    let mut grounder = Grounder::new(det.labels(), Some(embedder))?;
    let mut img = imageio::load_rgb(&a.image)?;
    let dets = det.detect(&img)?;
    let mut objects: Vec<Object> = dets.iter().map(Object::from).collect();
    if grounder.parse(&a.instruction).text.is_some() {
        read_text(&mut objects, &img, &a.ocr, a.threads)?;
    }
    let mut res = grounder
        .ground(&img, &objects, &a.instruction)
        .with_context(|| format!("{}", a.image.display()))?;
    add_mask(&mut res, &img, &a.segmenter, a.threads)?;
    let mut so = std::io::stdout().lock();
    if a.json {
        writeln!(so, "{}", serde_json::to_string(&res)?)?;
    } else {
        print_answer(&mut so, &res)?;
    }
    if let Some(out) = &a.annotate {
        draw(&mut img, &res);
        img.save(out)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills each object's `text` with what the OCR model reads inside its box, for instructions that
/// name a text. Only then: reading costs a detection and a recognition pass per box. A missing default
/// model is a warning (grounding goes on without text), a named one an error.
fn read_text(
    objects: &mut [Object],
    img: &image::RgbImage,
    name: &str,
    threads: usize,
) -> anyhow::Result<()> {
    if name == "none" || objects.is_empty() {
        return Ok(());
    }
    let opts = ReaderOptions {
        threads,
        ..ReaderOptions::default()
    };
    let reader = OcrManifest::find(name).and_then(|m| Reader::load(&m, &opts));
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) if name == lookout::ocr::DEFAULT_OCR_MODEL => {
            log::warn!("no text read on the objects: {e}");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("--ocr {name}")),
    };
    for o in objects.iter_mut() {
        let lines = reader
            .read_in_box(img, &o.bbox)
            .with_context(|| format!("reading the text on the {} box", o.label))?;
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        if !text.is_empty() {
            o.text = Some(text.join(" "));
        }
    }
    Ok(())
}

/// A person target gets its mask (in source pixels) from the segmentation model. The model is only
/// loaded when the answer is a person; a missing default model is a warning, a named one an error.
fn add_mask(
    res: &mut GroundResult,
    img: &image::RgbImage,
    name: &str,
    threads: usize,
) -> anyhow::Result<()> {
    let Some(t) = res.target.as_mut().filter(|t| segment::is_person(&t.label)) else {
        return Ok(());
    };
    if name == "none" {
        return Ok(());
    }
    let seg = match PersonSegmenter::find(name, threads) {
        Ok(s) => s,
        Err(e) if name == segment::DEFAULT_SEGMENTER => {
            log::warn!("no person mask: {e}");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("--segmenter {name}")),
    };
    t.mask = Some(seg.mask(img, Some(&t.bbox))?);
    Ok(())
}

fn print_answer(w: &mut impl Write, r: &GroundResult) -> std::io::Result<()> {
    let status = match r.status {
        Status::Found => "found",
        Status::Ambiguous => "ambiguous",
        Status::NotFound => "not found",
    };
    match &r.target {
        Some(t) => {
            let b = t.bbox;
            writeln!(
                w,
                "{status}: {} [{:.0} {:.0} {:.0} {:.0}] score {:.2}{}",
                t.label,
                b.x1,
                b.y1,
                b.x2,
                b.y2,
                t.score,
                t.track_id
                    .map(|i| format!(" track {i}"))
                    .unwrap_or_default()
            )?;
            writeln!(w, "  because: {}", t.reason)?;
            if let Some(m) = &t.mask {
                writeln!(w, "  mask: {} px (COCO RLE in --json)", m.area())?;
            }
        }
        None => writeln!(w, "{status}: {}", r.reason)?,
    }
    for c in &r.candidates {
        let b = c.bbox;
        writeln!(
            w,
            "  candidate {:<12} [{:>4.0} {:>4.0} {:>4.0} {:>4.0}] {:.2}  {}",
            c.label, b.x1, b.y1, b.x2, b.y2, c.score, c.reason
        )?;
    }
    Ok(())
}

fn draw(img: &mut image::RgbImage, r: &GroundResult) {
    let scale = ((img.width().max(img.height()) / 640) as i64).clamp(1, 4);
    let grey = Rgb([200, 200, 200]);
    let amber = Rgb([255, 176, 0]);
    let tied = r.status == Status::Ambiguous;
    for c in &r.candidates {
        annotate::draw_box(img, &c.bbox, if tied { amber } else { grey }, scale);
    }
    if let Some(t) = &r.target {
        let green = Rgb([0, 230, 60]);
        if let Some(m) = &t.mask {
            tint(img, m, green);
        }
        annotate::draw_box(img, &t.bbox, green, 3 * scale);
        let text = format!("{} {:.2}", t.label, t.score);
        let y = (t.bbox.y1 as i64 - 10 * scale).max(0);
        annotate::draw_text(img, t.bbox.x1 as i64 + scale, y, &text, green, scale);
    }
}

/// Tint the mask's pixels halfway towards `c`.
fn tint(img: &mut image::RgbImage, m: &segment::Mask, c: Rgb<u8>) {
    for (x, y, p) in img.enumerate_pixels_mut() {
        if m.get(x, y) {
            for k in 0..3 {
                p.0[k] = ((p.0[k] as u16 + c.0[k] as u16) / 2) as u8;
            }
        }
    }
}

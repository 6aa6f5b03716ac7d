//! Reading text in images (OCR) with PaddleOCR's PP-OCRv6 models run by tract: detect text quads
//! (`det`), cut each out as an upright strip (`crop`), turn the upside-down ones (`cls`), recognise
//! (`rec`). Pre- and post-processing follow rapidocr 3.10.0 on onnxruntime, the reference
//! `tests/ocr_reference.rs` compares against (docs/ocr.md). [`Reader::read_in_box`] reads inside one
//! box of a frame, for the run loop and grounding.

pub mod cls;
pub mod crop;
pub mod det;
pub mod quad;
pub mod rec;
pub mod schedule;
mod sessions;

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::engine::session::{Dim, SessionOptions};
use crate::error::{Error, Result};
use crate::geometry::BBox;
use quad::Quad;
use sessions::Graph;

/// The OCR model folder `lookout read` uses unless told otherwise.
pub const DEFAULT_OCR_MODEL: &str = "ppocr-v6";
/// `Global.text_score`: lines recognised with less are dropped.
pub const TEXT_SCORE: f32 = 0.5;
/// `Global.min_side_len` / `max_side_len`: images are first brought within these.
const MIN_SIDE_LEN: u32 = 30;
const MAX_SIDE_LEN: u32 = 2000;
/// `Global.min_height` / `width_height_ratio`: short or very wide images get black bands above and
/// below before detection.
const MIN_HEIGHT: u32 = 30;
const WIDTH_HEIGHT_RATIO: f32 = 8.0;
/// Largest image side accepted at all, and the most elongated image: together they bound the memory
/// rapidocr's bounds and padding steps can ask for (a 16384×1 strip would be scaled up to 30 high and
/// padded to a ratio of 8, over a hundred gigabytes).
pub const MAX_IMAGE_SIDE: u32 = 16384;
pub const MAX_ASPECT: u32 = 64;

/// One line of text: what it says, how sure the recogniser is (0..1), and where it is, as a quad in
/// source pixels (top-left, top-right, bottom-right, bottom-left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextLine {
    pub text: String,
    pub score: f32,
    pub polygon: [[f32; 2]; 4],
}

impl TextLine {
    /// The axis-aligned box around the polygon.
    pub fn bbox(&self) -> BBox {
        let b = quad::bounds(&self.polygon);
        BBox {
            x1: b[0],
            y1: b[1],
            x2: b[2],
            y2: b[3],
        }
    }
}

/// `model.toml` of an OCR model folder (`[model] kind = "ocr"`).
#[derive(Debug, Clone, Deserialize)]
pub struct OcrManifest {
    pub model: OcrModelSection,
    pub files: OcrFiles,
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OcrModelSection {
    pub kind: String,
    pub name: String,
}

/// The files of an OCR model folder, relative to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcrFiles {
    pub det: String,
    pub rec: String,
    pub cls: Option<String>,
    pub characters: String,
}

impl OcrManifest {
    /// Reads a `model.toml` (or the folder holding one).
    pub fn load(path: &Path) -> Result<OcrManifest> {
        let file = if path.is_dir() {
            path.join("model.toml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut m: OcrManifest = toml::from_str(&text)
            .map_err(|e| Error::manifest(&file, "model", e.message().to_string()))?;
        if m.model.kind != "ocr" {
            return Err(Error::manifest(
                &file,
                "model.kind",
                format!("is '{}', not 'ocr'", m.model.kind),
            ));
        }
        m.dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(m)
    }

    /// An OCR model by folder name in the model search path, or a path as given.
    pub fn find(name_or_path: &str) -> Result<OcrManifest> {
        let p = Path::new(name_or_path);
        if p.is_file() || p.join("model.toml").is_file() {
            return Self::load(p);
        }
        for dir in crate::models::search_dirs() {
            let candidate = dir.join(name_or_path).join("model.toml");
            if candidate.is_file() {
                return Self::load(&candidate);
            }
        }
        Err(Error::Other(format!(
            "OCR model '{name_or_path}' not found in {:?} (models/tools/fetch_ocr.py fetches ppocr-v6)",
            crate::models::search_dirs()
        )))
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// How a [`Reader`] runs.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Threads for tract's kernels.
    pub threads: usize,
    /// Use the angle classifier (rapidocr's `use_cls`, on by default).
    pub use_cls: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            threads: 1,
            use_cls: true,
        }
    }
}

/// Where the last [`Reader::read`] spent its time, in milliseconds; each stage as rapidocr times its
/// own (`elapse_list`): detection with its pre- and post-processing, the angle classifier with the
/// strips' resizing, recognition with resizing and decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OcrTimings {
    pub det_ms: f64,
    pub cls_ms: f64,
    pub rec_ms: f64,
}

/// The loaded models. Not shared between threads: each worker loads its own.
pub struct Reader {
    timings: OcrTimings,
    det: Graph,
    cls: Option<Graph>,
    rec: Graph,
    charset: rec::Charset,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("det", &self.det.path())
            .field("rec", &self.rec.path())
            .finish()
    }
}

impl Reader {
    /// Loads the models a manifest names.
    pub fn load(m: &OcrManifest, opts: &ReaderOptions) -> Result<Reader> {
        let so = SessionOptions {
            threads: opts.threads.max(1),
        };
        let img = vec![Dim::Fixed(1), Dim::Fixed(3), Dim::Sym("h"), Dim::Sym("w")];
        let det = Graph::load(&m.path(&m.files.det), img, &so)?;
        let strip = vec![
            Dim::Sym("n"),
            Dim::Fixed(3),
            Dim::Fixed(rec::HEIGHT as usize),
            Dim::Sym("w"),
        ];
        let rec = Graph::load(&m.path(&m.files.rec), strip, &so)?;
        let cls = match (&m.files.cls, opts.use_cls) {
            (Some(f), true) => {
                let shape = vec![
                    Dim::Fixed(1),
                    Dim::Fixed(3),
                    Dim::Fixed(cls::HEIGHT as usize),
                    Dim::Fixed(cls::WIDTH as usize),
                ];
                Some(Graph::load(&m.path(f), shape, &so)?)
            }
            _ => None,
        };
        let charset = rec::Charset::load(&m.path(&m.files.characters))?;
        Ok(Reader {
            timings: OcrTimings::default(),
            det,
            cls,
            rec,
            charset,
        })
    }

    /// Loads [`DEFAULT_OCR_MODEL`] from the model search path.
    pub fn load_default(opts: &ReaderOptions) -> Result<Reader> {
        Self::load(&OcrManifest::find(DEFAULT_OCR_MODEL)?, opts)
    }

    /// Stage times of the last [`Reader::read`].
    pub fn last_timings(&self) -> OcrTimings {
        self.timings
    }

    /// Every line of text in the image, in reading order.
    pub fn read(&mut self, img: &RgbImage) -> Result<Vec<TextLine>> {
        let (ow, oh) = img.dimensions();
        let t0 = std::time::Instant::now();
        let (work, ratio_w, ratio_h, top, boxes) = self.detect_boxes(img)?;
        let t1 = std::time::Instant::now();
        let mut strips = Vec::with_capacity(boxes.len());
        let mut kept = Vec::with_capacity(boxes.len());
        for b in boxes {
            if let Some(s) = crop::rotate_crop(&work, &b.quad) {
                strips.push(s);
                kept.push(b);
            }
        }
        if self.cls.is_some() {
            for s in strips.iter_mut() {
                if self.upside_down(s)? {
                    image::imageops::rotate180_in_place(s);
                }
            }
        }
        let t2 = std::time::Instant::now();
        let texts = self.recognise(&strips)?;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        self.timings = OcrTimings {
            det_ms: ms(t1 - t0),
            cls_ms: ms(t2 - t1),
            rec_ms: ms(t2.elapsed()),
        };
        let mut lines = Vec::new();
        for (b, (text, score)) in kept.into_iter().zip(texts) {
            if text.trim().is_empty() || score < TEXT_SCORE {
                continue;
            }
            lines.push(TextLine {
                text,
                score,
                polygon: to_source(b.quad, ratio_w, ratio_h, top, ow, oh),
            });
        }
        Ok(lines)
    }

    /// The lines of text inside `bbox` (source pixels, clipped to the image), with polygons in the
    /// whole image's pixels: what is written on one detected object. Lines whose centre lies outside
    /// the box are left out.
    ///
    /// The box is read at the scale the whole image would be read at, not blown up to the detector's
    /// 736-pixel minimum on its own: a small box (a sign 100 pixels wide) upscaled twelvefold comes
    /// out of the DB detector as one blob. So the box, with a small margin of context, is placed on a
    /// black canvas whose sides are at least `min(736, shorter image side)`.
    pub fn read_in_box(&mut self, img: &RgbImage, bbox: &BBox) -> Result<Vec<TextLine>> {
        const MARGIN: f32 = 8.0;
        let (w, h) = img.dimensions();
        let clip = |v: f32, hi: u32| (v.max(0.0) as u32).min(hi);
        let (x1, y1) = (
            clip((bbox.x1 - MARGIN).floor(), w),
            clip((bbox.y1 - MARGIN).floor(), h),
        );
        let (x2, y2) = (
            clip((bbox.x2 + MARGIN).ceil(), w),
            clip((bbox.y2 + MARGIN).ceil(), h),
        );
        if x2 <= x1 || y2 <= y1 || bbox.x2 <= bbox.x1 || bbox.y2 <= bbox.y1 {
            return Ok(Vec::new());
        }
        let side = w.min(h).min(det::LIMIT_SIDE_LEN as u32);
        let (cw, ch) = (x2 - x1, y2 - y1);
        let mut canvas = RgbImage::new(cw.max(side), ch.max(side));
        let sub = image::imageops::crop_imm(img, x1, y1, cw, ch);
        image::imageops::replace(&mut canvas, &*sub, 0, 0);
        let mut lines = self.read(&canvas)?;
        lines.retain_mut(|l| {
            for p in l.polygon.iter_mut() {
                p[0] += x1 as f32;
                p[1] += y1 as f32;
            }
            let c = l.bbox();
            let (cx, cy) = ((c.x1 + c.x2) / 2.0, (c.y1 + c.y2) / 2.0);
            cx >= bbox.x1 && cx <= bbox.x2 && cy >= bbox.y1 && cy <= bbox.y2
        });
        Ok(lines)
    }

    /// Only the detector: text quads in source pixels, in reading order, with their mean
    /// probabilities (benches, and the reference test's box check).
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<(Quad, f32)>> {
        let (ow, oh) = img.dimensions();
        let (_, ratio_w, ratio_h, top, boxes) = self.detect_boxes(img)?;
        Ok(boxes
            .into_iter()
            .map(|b| (to_source(b.quad, ratio_w, ratio_h, top, ow, oh), b.score))
            .collect())
    }

    /// rapidocr's steps up to the detector's boxes: the image brought within [30, 2000] a side
    /// (`preprocess_img`), black bands above and below when short or very wide
    /// (`apply_vertical_padding`), detection, reading order. Returns the image the boxes are in and
    /// what maps them back to the source.
    #[allow(clippy::type_complexity)]
    fn detect_boxes<'a>(
        &mut self,
        img: &'a RgbImage,
    ) -> Result<(
        std::borrow::Cow<'a, RgbImage>,
        f32,
        f32,
        u32,
        Vec<det::DetBox>,
    )> {
        let (ow, oh) = img.dimensions();
        if ow > MAX_IMAGE_SIDE || oh > MAX_IMAGE_SIDE {
            return Err(Error::Other(format!(
                "image {ow}×{oh} is larger than {MAX_IMAGE_SIDE} on a side: too large to read"
            )));
        }
        if ow.max(oh) > ow.min(oh).saturating_mul(MAX_ASPECT) {
            return Err(Error::Other(format!(
                "image {ow}×{oh} is more than {MAX_ASPECT} times as long as it is wide: too elongated to read"
            )));
        }
        if ow == 0 || oh == 0 {
            return Ok((std::borrow::Cow::Borrowed(img), 1.0, 1.0, 0, Vec::new()));
        }
        let (work, ratio_w, ratio_h) = within_bounds(img);
        let (work, top) = vertical_padding(work);
        let (ww, wh) = work.dimensions();
        let (dh, dw) = det::input_size(wh, ww);
        if dh == 0 || dw == 0 {
            return Ok((work, ratio_w, ratio_h, top, Vec::new()));
        }
        let shape = [1, 3, dh as usize, dw as usize];
        let (oshape, prob) = self.det.run(&shape, det::tensor(&work, (dh, dw)))?;
        let (ph, pw) = match oshape[..] {
            [_, _, h, w] => (h, w),
            _ => {
                return Err(Error::model(
                    self.det.path(),
                    format!("output shape {oshape:?}, expected [1, 1, H, W]"),
                ))
            }
        };
        let mut boxes = det::boxes(&prob, pw, ph, ww, wh);
        det::reading_order(&mut boxes);
        Ok((work, ratio_w, ratio_h, top, boxes))
    }

    fn upside_down(&mut self, strip: &RgbImage) -> Result<bool> {
        let Some(cls) = &mut self.cls else {
            return Ok(false);
        };
        let shape = [1, 3, cls::HEIGHT as usize, cls::WIDTH as usize];
        let (_, probs) = cls.run(&shape, cls::tensor(strip))?;
        Ok(cls::upside_down(&probs))
    }

    /// Recognises strips in rapidocr's batches (sorted by width/height, six at a time, each batch as
    /// wide as its widest strip): the padding a strip gets changes its result a little, so the
    /// batches are kept to stay equal to the reference.
    pub fn recognise(&mut self, strips: &[RgbImage]) -> Result<Vec<(String, f32)>> {
        let ratios: Vec<f64> = strips
            .iter()
            .map(|s| s.width() as f64 / s.height().max(1) as f64)
            .collect();
        let mut order: Vec<usize> = (0..strips.len()).collect();
        order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
        let mut res = vec![(String::new(), 0.0f32); strips.len()];
        for batch in order.chunks(rec::BATCH) {
            let br: Vec<f64> = batch.iter().map(|&i| ratios[i]).collect();
            let width = rec::batch_width(&br);
            let mut data =
                Vec::with_capacity(batch.len() * 3 * rec::HEIGHT as usize * width as usize);
            for &i in batch {
                data.extend(rec::tensor(&strips[i], width));
            }
            let xshape = [batch.len(), 3, rec::HEIGHT as usize, width as usize];
            let (shape, probs) = self.rec.run(&xshape, data)?;
            let classes = self.charset.len();
            if shape.len() != 3 || shape[0] != batch.len() || shape[2] != classes {
                return Err(Error::model(
                    self.rec.path(),
                    format!(
                        "output shape {shape:?}, expected [{}, T, {classes}] for {classes} classes (characters.txt + blank + space)",
                        batch.len()
                    ),
                ));
            }
            let per = shape[1] * classes;
            for (k, &i) in batch.iter().enumerate() {
                res[i] = rec::decode(&probs[k * per..(k + 1) * per], classes, &self.charset);
            }
        }
        Ok(res)
    }
}

/// A quad in the working image back in source pixels (rapidocr's `map_boxes_to_original`).
fn to_source(q: Quad, ratio_w: f32, ratio_h: f32, top: u32, ow: u32, oh: u32) -> Quad {
    q.map(|p| {
        [
            (p[0] * ratio_w).clamp(0.0, ow as f32),
            ((p[1] - top as f32) * ratio_h).clamp(0.0, oh as f32),
        ]
    })
}

/// rapidocr's `resize_image_within_bounds`: the image and the factors taking its pixels back to the
/// source's (x, y).
fn within_bounds(img: &RgbImage) -> (std::borrow::Cow<'_, RgbImage>, f32, f32) {
    let (w, h) = img.dimensions();
    let mut cur: std::borrow::Cow<'_, RgbImage> = std::borrow::Cow::Borrowed(img);
    let (mut rw, mut rh) = (1.0f32, 1.0f32);
    let rescale = |im: &RgbImage, ratio: f32| -> Option<(RgbImage, f32, f32)> {
        let (iw, ih) = im.dimensions();
        let nh = det::round32((ih as f32 * ratio) as u32);
        let nw = det::round32((iw as f32 * ratio) as u32);
        if nh == 0 || nw == 0 {
            return None;
        }
        // the ratios are against the ORIGINAL size, as rapidocr computes them from `h, w` of the
        // image it was given (the source, or the already reduced one)
        Some((
            resize(im, nw, nh),
            ih as f32 / nh as f32,
            iw as f32 / nw as f32,
        ))
    };
    if w.max(h) > MAX_SIDE_LEN {
        let ratio = MAX_SIDE_LEN as f32 / w.max(h) as f32;
        if let Some((im, a, b)) = rescale(&cur, ratio) {
            cur = std::borrow::Cow::Owned(im);
            rh = a;
            rw = b;
        }
    }
    let (cw, ch) = cur.dimensions();
    if cw.min(ch) < MIN_SIDE_LEN {
        let ratio = MIN_SIDE_LEN as f32 / cw.min(ch) as f32;
        if let Some((im, a, b)) = rescale(&cur, ratio) {
            cur = std::borrow::Cow::Owned(im);
            rh = a;
            rw = b;
        }
    }
    (cur, rw, rh)
}

/// rapidocr's `apply_vertical_padding`: black bands above and below when the image is at most 30
/// high or more than 8 times as wide as high. Returns the image and the band height.
fn vertical_padding(img: std::borrow::Cow<'_, RgbImage>) -> (std::borrow::Cow<'_, RgbImage>, u32) {
    let (w, h) = img.dimensions();
    if h > MIN_HEIGHT && (w as f32 / h as f32) <= WIDTH_HEIGHT_RATIO {
        return (img, 0);
    }
    let new_h = ((w as f32 / WIDTH_HEIGHT_RATIO) as u32).max(MIN_HEIGHT) * 2;
    let pad = new_h.abs_diff(h) / 2;
    let mut out = RgbImage::new(w, h + 2 * pad);
    image::imageops::replace(&mut out, img.as_ref(), 0, pad as i64);
    (std::borrow::Cow::Owned(out), pad)
}

/// Bilinear resize equal to OpenCV's `cv2.resize(INTER_LINEAR)` on 8-bit images.
pub(crate) fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    let mut out = RgbImage::new(w, h);
    let mut buf = Vec::new();
    crate::detect::preprocess::resize_into(img, &mut out, (0, 0), (w, h), &mut buf);
    out
}

/// `[3, h, w]` in BGR order, `(v / 255 − 0.5) / 0.5`.
pub(crate) fn chw_bgr(img: &RgbImage, w: usize) -> Vec<f32> {
    padded_chw_bgr(img, w)
}

/// Like [`chw_bgr`] into a tensor `width` wide, zeros (grey after normalisation) right of the image.
pub(crate) fn padded_chw_bgr(img: &RgbImage, width: usize) -> Vec<f32> {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * ih * width];
    let raw = img.as_raw();
    for y in 0..ih {
        for x in 0..iw.min(width) {
            let p = &raw[(y * iw + x) * 3..(y * iw + x) * 3 + 3];
            for (c, &src) in [2usize, 1, 0].iter().enumerate() {
                out[c * ih * width + y * width + x] = (p[src] as f32 / 255.0 - 0.5) / 0.5;
            }
        }
    }
    out
}

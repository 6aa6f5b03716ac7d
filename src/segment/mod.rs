//! Person segmentation: a person mask in source pixels from a segmentation model (MediaPipe selfie
//! segmentation, `models/selfie-seg/`), for a whole image or for one person's box.
//!
//! How a box is cut (measured on real photos, `models/tools/README.md`): a square around the box's
//! centre, `max(w, h)` plus a margin on each side, padded with black where it leaves the image (the
//! model wants a person at about the scale of its selfie training images, undistorted); resized to
//! the model's input with OpenCV's bilinear resize; the probability map is sampled back bilinearly
//! (OpenCV's half-pixel mapping) at every source pixel of the box and thresholded. Pixels outside the
//! box stay off: the mask is the box's person, not a neighbour that shares the square.

mod blur;
mod manifest;
mod mask;

use std::path::Path;

use image::RgbImage;

pub use blur::{blur_people, BlurShape};
pub use manifest::SegmentManifest;
pub use mask::{Mask, Rle, RleError};

use crate::detect::preprocess::resize_into;
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::geometry::BBox;

/// The segmentation model `lookout` uses when none is named.
pub const DEFAULT_SEGMENTER: &str = "selfie-seg";

/// Room around a person's box, as a fraction of its longer side, on each side of the square cut.
pub const BOX_MARGIN: f32 = 0.1;

/// A loaded person-segmentation model.
pub struct PersonSegmenter {
    engine: Engine,
    manifest: SegmentManifest,
}

impl std::fmt::Debug for PersonSegmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonSegmenter")
            .field("model", &self.manifest.model.name)
            .finish()
    }
}

/// The square cut of the source a mask is computed from (may reach outside the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub left: i64,
    pub top: i64,
    pub side: u32,
}

impl Cut {
    /// The square around `b` (the whole image when `None`) with `BOX_MARGIN` (none for the whole
    /// image).
    pub fn around(b: Option<&BBox>, (w, h): (u32, u32)) -> Cut {
        let (b, margin) = match b {
            Some(b) => (*b, BOX_MARGIN),
            None => (BBox::from([0.0, 0.0, w as f32, h as f32]), 0.0),
        };
        let long = b.width().max(b.height()).max(1.0);
        let side = (long * (1.0 + 2.0 * margin)).round().max(1.0);
        let (cx, cy) = b.center();
        Cut {
            left: (cx - side / 2.0).round() as i64,
            top: (cy - side / 2.0).round() as i64,
            side: side as u32,
        }
    }
}

impl PersonSegmenter {
    /// Find a segmentation model by name (a folder under the model paths) or folder and load it.
    pub fn find(name_or_path: &str, threads: usize) -> Result<PersonSegmenter> {
        PersonSegmenter::load(SegmentManifest::find(name_or_path)?, threads)
    }

    pub fn load(manifest: SegmentManifest, threads: usize) -> Result<PersonSegmenter> {
        let path = manifest.model_path();
        let engine = Engine::load(
            &path,
            &EngineOptions {
                threads: threads.max(1),
                input_shape: Some(manifest.input.shape.to_vec()),
                ..Default::default()
            },
        )?;
        let want = manifest.input_hw();
        let out = engine.outputs().first().map(|o| o.shape.clone());
        if out.as_ref().map(|s| s.iter().product::<usize>()) != Some(want.0 * want.1) {
            return Err(Error::model(
                &path,
                format!(
                    "output shape {out:?} is not one probability per input pixel ({}x{})",
                    want.0, want.1
                ),
            ));
        }
        Ok(PersonSegmenter { engine, manifest })
    }

    pub fn manifest(&self) -> &SegmentManifest {
        &self.manifest
    }

    /// The model's person probabilities (`h × w`, row-major) for a square cut of `img`.
    pub fn probabilities(&self, img: &RgbImage, cut: Cut) -> Result<Vec<f32>> {
        let (h, w) = self.manifest.input_hw();
        let square = cut_square(img, cut);
        let mut canvas = RgbImage::new(w as u32, h as u32);
        let mut row_buf = Vec::new();
        resize_into(
            &square,
            &mut canvas,
            (0, 0),
            (w as u32, h as u32),
            &mut row_buf,
        );
        let tensor = self.manifest.to_tensor(&canvas);
        let out = self.engine.run(&self.manifest.input.shape, tensor)?;
        let v = out
            .get(0)
            .ok_or_else(|| Error::model(self.engine.path(), "the model gave no output"))?;
        Ok(v.data.to_vec())
    }

    /// The person mask of `img` (of the person in `bbox` when given), in source pixels.
    pub fn mask(&self, img: &RgbImage, bbox: Option<&BBox>) -> Result<Mask> {
        let (iw, ih) = img.dimensions();
        let cut = Cut::around(bbox, (iw, ih));
        let prob = self.probabilities(img, cut)?;
        let (h, w) = self.manifest.input_hw();
        let thr = self.manifest.output.threshold;
        let whole = BBox::from([0.0, 0.0, iw as f32, ih as f32]);
        let b = bbox.copied().unwrap_or(whole);
        let (x0, x1) = span(b.x1, b.x2, iw);
        let (y0, y1) = span(b.y1, b.y2, ih);
        let mut m = Mask::empty(iw, ih);
        let sx = w as f32 / cut.side as f32;
        let sy = h as f32 / cut.side as f32;
        for y in y0..y1 {
            let (ya, yb, fy) = tap((y as i64 - cut.top) as f32, sy, h);
            for x in x0..x1 {
                let (xa, xb, fx) = tap((x as i64 - cut.left) as f32, sx, w);
                let top = prob[ya * w + xa] * (1.0 - fx) + prob[ya * w + xb] * fx;
                let bot = prob[yb * w + xa] * (1.0 - fx) + prob[yb * w + xb] * fx;
                if top * (1.0 - fy) + bot * fy > thr {
                    m.set(x, y, true);
                }
            }
        }
        Ok(m)
    }
}

/// The source pixels `[a, b)` a box edge pair covers, clamped to the image.
fn span(a: f32, b: f32, n: u32) -> (u32, u32) {
    let lo = a.max(0.0).floor().min(n as f32) as u32;
    let hi = b.max(0.0).ceil().min(n as f32) as u32;
    (lo, hi.max(lo))
}

/// OpenCV's bilinear mapping of destination pixel `d` (in the cut) into a source grid of `n` cells
/// at `scale = n / side`: the two taps and the weight of the second.
fn tap(d: f32, scale: f32, n: usize) -> (usize, usize, f32) {
    let s = ((d + 0.5) * scale - 0.5).max(0.0);
    let i = (s.floor() as usize).min(n - 1);
    let f = if i + 1 >= n { 0.0 } else { s - i as f32 };
    (i, (i + 1).min(n - 1), f)
}

/// The square cut as its own image, black outside the source.
fn cut_square(img: &RgbImage, c: Cut) -> RgbImage {
    let mut sq = RgbImage::new(c.side, c.side);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let x_lo = c.left.max(0);
    let x_hi = (c.left + c.side as i64).min(iw);
    if x_hi <= x_lo {
        return sq;
    }
    let n = (x_hi - x_lo) as usize * 3;
    let src = img.as_raw();
    let side = c.side as usize;
    let dst = sq.as_mut();
    for y in c.top.max(0)..(c.top + c.side as i64).min(ih) {
        let s_off = (y * iw + x_lo) as usize * 3;
        let d_off = ((y - c.top) as usize * side + (x_lo - c.left) as usize) * 3;
        dst[d_off..d_off + n].copy_from_slice(&src[s_off..s_off + n]);
    }
    sq
}

/// Whether a detector label names what the segmentation model masks.
pub fn is_person(label: &str) -> bool {
    label == "person"
}

/// Load an image and segment it: a convenience for tools and tests.
pub fn mask_file(seg: &PersonSegmenter, path: &Path, bbox: Option<&BBox>) -> Result<Mask> {
    let img = crate::imageio::load_rgb(path)?;
    seg.mask(&img, bbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_is_a_square_around_the_box_with_margin() {
        let b = BBox::from([100.0, 50.0, 150.0, 250.0]);
        let c = Cut::around(Some(&b), (640, 480));
        assert_eq!(c.side, 240);
        assert_eq!((c.left, c.top), (5, 30));
        let whole = Cut::around(None, (640, 480));
        assert_eq!(
            whole,
            Cut {
                left: 0,
                top: -80,
                side: 640
            }
        );
    }

    #[test]
    fn square_cut_pads_black_outside_the_image() {
        let img = RgbImage::from_pixel(4, 2, image::Rgb([9, 9, 9]));
        let sq = cut_square(
            &img,
            Cut {
                left: -1,
                top: -1,
                side: 4,
            },
        );
        assert_eq!(sq.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(sq.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(3, 2).0, [9, 9, 9]);
        assert_eq!(sq.get_pixel(3, 3).0, [0, 0, 0]);
    }

    #[test]
    fn tap_follows_opencv_half_pixel_mapping() {
        // 2x upsampling: destination 0 and 1 map to -0.25 (clamped to 0) and 0.25
        assert_eq!(tap(0.0, 0.5, 4), (0, 1, 0.0));
        assert_eq!(tap(1.0, 0.5, 4), (0, 1, 0.25));
        assert_eq!(tap(7.0, 0.5, 4), (3, 3, 0.0));
    }
}

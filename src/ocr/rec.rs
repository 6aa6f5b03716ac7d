//! Text recognition (PP-OCRv6 small rec, CTC): strips resized to height 48 keeping their proportion,
//! batched as rapidocr batches them (six at a time by width, each batch padded to its widest strip and
//! at least 320), and the `[T, classes]` output decoded greedily — best class per step, repeats
//! merged, blanks dropped, the score the mean of the kept steps' probabilities.

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};

/// `rec_img_shape` height and the narrowest batch width.
pub const HEIGHT: u32 = 48;
pub const MIN_WIDTH: u32 = 320;
/// `rec_batch_num`.
pub const BATCH: usize = 6;

/// The recogniser's classes: 0 the CTC blank, then the model's characters, then a space
/// (`CTCLabelDecode.get_character` with `use_space_char`).
#[derive(Debug, Clone)]
pub struct Charset {
    classes: Vec<String>,
}

impl Charset {
    /// One character per line, as `models/tools/fetch_ocr.py` writes the ONNX metadata key
    /// `character` (split on `\n` only: an entry may be any other character, a space included).
    pub fn load(path: &Path) -> Result<Charset> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let body = text.strip_suffix('\n').unwrap_or(&text);
        if body.is_empty() {
            return Err(Error::model(path, "no characters in the list"));
        }
        let mut classes = Vec::with_capacity(body.len() / 3 + 2);
        classes.push(String::new());
        classes.extend(body.split('\n').map(str::to_string));
        classes.push(" ".to_string());
        Ok(Charset { classes })
    }
    /// Number of classes the model must output.
    pub fn len(&self) -> usize {
        self.classes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

/// The batch width for strips of these width/height ratios: `int(48 · max(320/48, ratios))`.
pub fn batch_width(ratios: &[f64]) -> u32 {
    let max = ratios
        .iter()
        .copied()
        .fold(MIN_WIDTH as f64 / HEIGHT as f64, f64::max);
    (HEIGHT as f64 * max) as u32
}

/// One strip as `3 × 48 × width` values (resized to `min(width, ceil(48 · ratio))`, zero padded).
pub fn tensor(strip: &RgbImage, width: u32) -> Vec<f32> {
    let (w, h) = strip.dimensions();
    let ratio = w as f64 / h.max(1) as f64;
    let rw = ((HEIGHT as f64 * ratio).ceil() as u32).clamp(1, width.max(1));
    let resized = super::resize(strip, rw, HEIGHT);
    super::padded_chw_bgr(&resized, width as usize)
}

/// Greedy CTC decoding of one strip's `steps × classes` probabilities.
pub fn decode(probs: &[f32], classes: usize, charset: &Charset) -> (String, f32) {
    let mut text = String::new();
    let mut confs: Vec<f64> = Vec::new();
    let mut prev: Option<usize> = None;
    for step in probs.chunks_exact(classes) {
        let (mut best, mut p) = (0usize, f32::MIN);
        for (i, &v) in step.iter().enumerate() {
            // argmax keeps the first of equal values, as numpy's
            if v > p {
                best = i;
                p = v;
            }
        }
        let repeat = prev == Some(best);
        prev = Some(best);
        if repeat || best == 0 {
            continue;
        }
        if let Some(c) = charset.classes.get(best) {
            text.push_str(c);
            confs.push(round5(p as f64));
        }
    }
    let score = if confs.is_empty() {
        0.0
    } else {
        round5(confs.iter().sum::<f64>() / confs.len() as f64)
    };
    (text, score as f32)
}

fn round5(v: f64) -> f64 {
    (v * 1e5).round_ties_even() / 1e5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charset() -> Charset {
        Charset {
            classes: vec!["".into(), "a".into(), "b".into(), " ".into()],
        }
    }

    #[test]
    fn repeats_merge_and_blanks_split() {
        #[rustfmt::skip]
        let p = [
            0.1, 0.8, 0.05, 0.05,   // a
            0.1, 0.9, 0.0, 0.0,     // a (repeat)
            0.9, 0.1, 0.0, 0.0,     // blank
            0.0, 0.6, 0.4, 0.0,     // a
            0.0, 0.0, 0.1, 0.9,     // space
            0.0, 0.0, 1.0, 0.0,     // b
        ];
        let (t, s) = decode(&p, 4, &charset());
        assert_eq!(t, "aa b");
        assert!((s - (0.8 + 0.6 + 0.9 + 1.0) / 4.0).abs() < 1e-5);
    }

    #[test]
    fn batch_width_is_at_least_320() {
        assert_eq!(batch_width(&[1.0, 2.0]), 320);
        assert_eq!(batch_width(&[10.0]), 480);
    }
}

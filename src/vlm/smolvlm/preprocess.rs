//! SmolVLM's image processor for one frame without tiling, as transformers' Idefics3 image
//! processor does it with `do_image_splitting=False`: longest edge to `size.longest_edge`, then
//! squashed to `max_image_size`² (Pillow's filters, [`crate::vlm::resample`]), rescaled and
//! normalised, CHW.

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;

use super::config::Config;
use crate::vlm::contract::{read_json, VlmError};
use crate::vlm::resample::{self, Filter};

/// transformers' cap on the first resize (`MAX_IMAGE_SIZE` in image_processing_idefics3.py).
const MAX_IMAGE_SIZE: usize = 4096;

/// The image processor settings (`preprocessor_config.json`), for the no-splitting case.
#[derive(Debug, Clone)]
pub struct Preprocess {
    /// First resize: longest edge to this (`size.longest_edge`); `None` when `do_resize` is false.
    pub longest_edge: Option<usize>,
    /// Square side fed to the vision encoder (`max_image_size.longest_edge`).
    pub side: usize,
    pub filter: Filter,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Deserialize)]
struct Edge {
    longest_edge: Option<usize>,
}

#[derive(Deserialize)]
struct PreprocessorFile {
    do_resize: Option<bool>,
    size: Option<Edge>,
    max_image_size: Option<Edge>,
    resample: Option<i64>,
    rescale_factor: Option<f64>,
    do_rescale: Option<bool>,
    do_normalize: Option<bool>,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

impl Preprocess {
    pub fn load(path: &Path, cfg: &Config) -> Result<Preprocess, VlmError> {
        let v = read_json(path)?;
        let f: PreprocessorFile = serde_json::from_value(v).map_err(|e| VlmError::Load {
            path: path.to_path_buf(),
            reason: format!("unexpected content: {e}"),
        })?;
        let err = |field: &str, why: String| VlmError::Load {
            path: path.to_path_buf(),
            reason: format!("field `{field}`: {why}"),
        };
        let resample = f.resample.unwrap_or(1);
        let filter = Filter::from_pil(resample).ok_or_else(|| {
            err(
                "resample",
                format!("{resample} (only 1 Lanczos, 2 bilinear, 3 bicubic are implemented)"),
            )
        })?;
        let side = f
            .max_image_size
            .and_then(|m| m.longest_edge)
            .unwrap_or(cfg.image_size);
        if side != cfg.image_size {
            return Err(err(
                "max_image_size.longest_edge",
                format!("{side}, but the vision encoder takes {} px", cfg.image_size),
            ));
        }
        let three =
            |v: Option<Vec<f32>>, field: &str, default: f32| -> Result<[f32; 3], VlmError> {
                match v {
                    None => Ok([default; 3]),
                    Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
                    Some(v) if v.len() == 1 => Ok([v[0]; 3]),
                    Some(v) => Err(err(field, format!("{} values, expected 3", v.len()))),
                }
            };
        let normalize = f.do_normalize.unwrap_or(true);
        let std = if normalize {
            three(f.image_std, "image_std", 0.5)?
        } else {
            [1.0; 3]
        };
        if std.contains(&0.0) {
            return Err(err("image_std", "contains 0".into()));
        }
        Ok(Preprocess {
            longest_edge: if f.do_resize.unwrap_or(true) {
                Some(f.size.and_then(|s| s.longest_edge).unwrap_or(4 * side))
            } else {
                None
            },
            side,
            filter,
            rescale: if f.do_rescale.unwrap_or(true) {
                f.rescale_factor.unwrap_or(1.0 / 255.0)
            } else {
                1.0
            },
            mean: if normalize {
                three(f.image_mean, "image_mean", 0.5)?
            } else {
                [0.0; 3]
            },
            std,
        })
    }

    /// The two resizes of the reference processor, as 8-bit RGB (`side` × `side`).
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        let first = match self.longest_edge {
            Some(edge) => {
                let (h, w) = first_resize_size(img.height() as usize, img.width() as usize, edge);
                if (w as u32, h as u32) == img.dimensions() {
                    img.clone()
                } else {
                    resample::resize(img, w as u32, h as u32, self.filter)
                }
            }
            None => img.clone(),
        };
        let s = self.side as u32;
        if first.dimensions() == (s, s) {
            first
        } else {
            resample::resize(&first, s, s, self.filter)
        }
    }

    /// `pixel_values` for one frame: CHW, `(u8 × rescale − mean) / std`.
    pub fn pixel_values(&self, img: &RgbImage) -> Vec<f32> {
        let r = self.resize(img);
        let n = self.side * self.side;
        let mut out = vec![0f32; 3 * n];
        for (i, p) in r.pixels().enumerate() {
            for c in 0..3 {
                // transformers rescales in float64, normalises in float32.
                let x = (p.0[c] as f64 * self.rescale) as f32;
                out[c * n + i] = (x - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// transformers' `_resize_output_size_rescale_to_max_len` then `_resize_output_size_scale_below_upper_bound`
/// (Idefics3): longest edge to `max_len`, the other edge truncated and rounded up to even. Returns (h, w).
pub fn first_resize_size(height: usize, width: usize, max_len: usize) -> (usize, usize) {
    let (mut h, mut w) = (height.max(1), width.max(1));
    let aspect = w as f64 / h as f64;
    if w >= h {
        w = max_len;
        h = (w as f64 / aspect) as usize;
        if !h.is_multiple_of(2) {
            h += 1;
        }
    } else {
        h = max_len;
        w = (h as f64 * aspect) as usize;
        if !w.is_multiple_of(2) {
            w += 1;
        }
    }
    h = h.max(1);
    w = w.max(1);
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX_IMAGE_SIZE {
        w = MAX_IMAGE_SIZE;
        h = (w as f64 / aspect) as usize;
    } else if h > w && h > MAX_IMAGE_SIZE {
        h = MAX_IMAGE_SIZE;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_resize_matches_transformers_rules() {
        // 548x342 (w x h) -> w 2048, h int(2048 / (548/342)) = 1278 (even).
        assert_eq!(first_resize_size(342, 548, 2048), (1278, 2048));
        // portrait: 335/480*2048 = 1429.3 -> 1429, odd, rounded up to 1430
        assert_eq!(first_resize_size(480, 335, 2048), (2048, 1430));
        assert_eq!(first_resize_size(480, 333, 2048), (2048, 1420));
        // square
        assert_eq!(first_resize_size(10, 10, 2048), (2048, 2048));
        // very wide: the short edge never reaches 0
        assert_eq!(first_resize_size(1, 5000, 2048), (1, 2048));
    }
}

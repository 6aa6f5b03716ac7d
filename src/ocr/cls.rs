//! The text-angle classifier (PP-OCR mobile v2.0 cls): is a strip upside down? Strips go in as
//! `[1, 3, 48, 192]` (height 48, width kept in proportion up to 192, zero padding on the right); a
//! strip classed 180° with more than 0.9 is turned (rapidocr's `TextClassifier`, `Cls` config).

use image::RgbImage;

/// `cls_image_shape` height and width.
pub const HEIGHT: u32 = 48;
pub const WIDTH: u32 = 192;
/// `cls_thresh`: how sure the classifier must be before a strip is turned.
pub const THRESH: f32 = 0.9;

/// The strip as the classifier's input, `3 × 48 × 192` values.
pub fn tensor(strip: &RgbImage) -> Vec<f32> {
    let (w, h) = strip.dimensions();
    let ratio = w as f64 / h.max(1) as f64;
    let rw = ((HEIGHT as f64 * ratio).ceil() as u32).clamp(1, WIDTH);
    let resized = super::resize(strip, rw, HEIGHT);
    super::padded_chw_bgr(&resized, WIDTH as usize)
}

/// Whether the classifier's two outputs `[p0°, p180°]` say "turn it".
pub fn upside_down(probs: &[f32]) -> bool {
    match probs {
        [p0, p180, ..] => p180 > p0 && *p180 > THRESH,
        _ => false,
    }
}

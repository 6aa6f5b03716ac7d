//! Florence-2 pre-processing as its reference processor does it (transformers' CLIP image
//! processor, PIL backend): bicubic resize to the square input with Pillow's resampler
//! ([`crate::vlm::resample`], whose bytes equal `Image.resize(size, BICUBIC)`'s), rescale by 1/255,
//! normalise with the ImageNet mean/std, CHW.

use image::RgbImage;

use crate::vlm::resample::{self, Filter};

/// Pillow-exact bicubic resize of packed RGB (`w`×`h`) to `ow`×`oh`.
pub fn resize_bicubic(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    match RgbImage::from_raw(w as u32, h as u32, src.to_vec()) {
        Some(img) => resample::resize(&img, ow as u32, oh as u32, Filter::Bicubic).into_raw(),
        // A buffer that is not w×h×3 bytes: nothing sensible to resize.
        None => vec![0; ow * oh * 3],
    }
}

/// `pixel_values` for one image, `[3, side, side]` row-major (the batch dimension is implied).
pub fn pixel_values(image: &RgbImage, side: u32, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let resized = resample::resize(image, side, side, Filter::Bicubic);
    normalise(resized.as_raw(), mean, std)
}

/// Packed RGB bytes → CHW, `(v / 255 - mean) / std` in f32 as the processor computes it.
pub fn normalise(rgb: &[u8], mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let n = rgb.len() / 3;
    let mut out = vec![0f32; n * 3];
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_bicubic(&src, 4, 3, 4, 3), src);
    }

    #[test]
    fn flat_image_stays_flat() {
        let src = vec![77u8; 50 * 30 * 3];
        let out = resize_bicubic(&src, 50, 30, 17, 64);
        assert!(out.iter().all(|&v| v == 77));
    }
}

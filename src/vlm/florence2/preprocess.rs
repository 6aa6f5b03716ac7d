//! Florence-2 pre-processing as its reference processor does it (transformers' CLIP image
//! processor, PIL backend): bicubic resize to the square input with Pillow's resampler, rescale by
//! 1/255, normalise with the ImageNet mean/std, CHW.
//!
//! The resize is a port of Pillow's `ImagingResample` for 8-bit images (separable, horizontal pass
//! first into an 8-bit intermediate, fixed-point coefficients with 22 fractional bits, support
//! widened by the scale when shrinking), so its bytes equal `Image.resize(size, BICUBIC)`'s.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: first source index, tap count, and `ksize` fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, &kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { kx };
            let scaled = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow-exact bicubic resize of packed RGB (`w`×`h`) to `ow`×`oh`.
pub fn resize_bicubic(src: &[u8], w: usize, h: usize, ow: usize, oh: usize) -> Vec<u8> {
    if (w, h) == (ow, oh) {
        return src.to_vec();
    }
    let vert = coeffs(h, oh);
    // Only the source rows the vertical pass reads go through the horizontal pass.
    let (y_first, y_last) = if h != oh {
        let first = vert.bounds.first().map_or(0, |b| b.0);
        let last = vert.bounds.last().map_or(h, |b| b.0 + b.1);
        (first, last)
    } else {
        (0, h)
    };
    let half = 1i64 << (PRECISION_BITS - 1);
    let (tmp, tw) = if w != ow {
        let hor = coeffs(w, ow);
        let rows = y_last - y_first;
        let mut tmp = vec![0u8; ow * rows * 3];
        for y in 0..rows {
            let row = &src[(y + y_first) * w * 3..(y + y_first + 1) * w * 3];
            for (xx, &(xmin, n)) in hor.bounds.iter().enumerate() {
                let k = &hor.weights[xx * hor.ksize..xx * hor.ksize + n];
                let mut ss = [half; 3];
                for (x, &kx) in k.iter().enumerate() {
                    let p = &row[(xmin + x) * 3..(xmin + x) * 3 + 3];
                    for c in 0..3 {
                        ss[c] += p[c] as i64 * kx as i64;
                    }
                }
                let o = (y * ow + xx) * 3;
                for c in 0..3 {
                    tmp[o + c] = clip8(ss[c]);
                }
            }
        }
        (tmp, ow)
    } else {
        (src[y_first * w * 3..y_last * w * 3].to_vec(), w)
    };
    if h == oh {
        return tmp;
    }
    let mut out = vec![0u8; ow * oh * 3];
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        let y0 = ymin - y_first;
        for xx in 0..tw {
            let mut ss = [half; 3];
            for (y, &ky) in k.iter().enumerate() {
                let p = &tmp[((y0 + y) * tw + xx) * 3..((y0 + y) * tw + xx) * 3 + 3];
                for c in 0..3 {
                    ss[c] += p[c] as i64 * ky as i64;
                }
            }
            let o = (yy * ow + xx) * 3;
            for c in 0..3 {
                out[o + c] = clip8(ss[c]);
            }
        }
    }
    out
}

/// `pixel_values` for one image, `[3, side, side]` row-major (the batch dimension is implied).
pub fn pixel_values(image: &RgbImage, side: u32, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let resized = resize_bicubic(
        image.as_raw(),
        w as usize,
        h as usize,
        side as usize,
        side as usize,
    );
    normalise(&resized, mean, std)
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

    #[test]
    fn weights_sum_to_one() {
        for (i, o) in [(1000, 768), (600, 768), (5, 768)] {
            let c = coeffs(i, o);
            for (xx, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i64 = c.weights[xx * c.ksize..xx * c.ksize + n]
                    .iter()
                    .map(|&w| w as i64)
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= n as i64,
                    "{i}->{o} #{xx}: {s}"
                );
            }
        }
    }
}

//! Image resizing that reproduces Pillow's `Image.resize` on 8-bit RGB (libImaging/Resample.c):
//! separable convolution, horizontal pass first, coefficients normalised per output pixel and
//! rounded to 22-bit fixed point, intermediate image in 8 bits. The transformers image processors
//! resize through Pillow, so matching it keeps the model's inputs identical to the reference's.

use image::RgbImage;

/// Pillow's resampling filters (the `resample` numbers of `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 1 = `Image.LANCZOS`
    Lanczos,
    /// 2 = `Image.BILINEAR`
    Bilinear,
    /// 3 = `Image.BICUBIC`
    Bicubic,
}

impl Filter {
    /// From Pillow's enum value; `None` for filters not implemented here (NEAREST 0, BOX 4, HAMMING 5).
    pub fn from_pil(v: i64) -> Option<Filter> {
        match v {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                let a = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index and the fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; the clamps make the sign irrelevant.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..xx * ksize + ksize];
        for x in 0..n {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            row[x] = if w < 0.0 {
                (-0.5 + f) as i32
            } else {
                (0.5 + f) as i32
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

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1i32 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes like Pillow's `img.resize((width, height), filter)`. Sizes of 0 give an error-free
/// 0-sized image; callers validate sizes.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (width as usize, height as usize);
    if ow == 0 || oh == 0 || iw == 0 || ih == 0 {
        return RgbImage::new(width, height);
    }
    let src = img.as_raw();
    let need_h = ow != iw;
    let need_v = oh != ih;
    let vert = precompute(ih, oh, filter);
    // Horizontal pass over the rows the vertical pass will read (as Pillow does).
    let (tmp, row0) = if need_h {
        let horiz = precompute(iw, ow, filter);
        let first = vert.bounds.first().map_or(0, |b| b.0);
        let last = vert.bounds.last().map_or(ih, |b| b.0 + b.1);
        let (first, last) = if need_v { (first, last) } else { (0, ih) };
        let rows = last - first;
        let mut out = vec![0u8; rows * ow * 3];
        for y in 0..rows {
            let srow = &src[(y + first) * iw * 3..(y + first + 1) * iw * 3];
            let drow = &mut out[y * ow * 3..(y + 1) * ow * 3];
            for xx in 0..ow {
                let (xmin, n) = horiz.bounds[xx];
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + n];
                // 32-bit accumulators as in Pillow (|sum| < 2^31 for these filters).
                let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
                let px = &srow[xmin * 3..(xmin + k.len()) * 3];
                for (p, &w) in px.chunks_exact(3).zip(k) {
                    acc[0] = acc[0].wrapping_add((p[0] as i32).wrapping_mul(w));
                    acc[1] = acc[1].wrapping_add((p[1] as i32).wrapping_mul(w));
                    acc[2] = acc[2].wrapping_add((p[2] as i32).wrapping_mul(w));
                }
                drow[xx * 3] = clip8(acc[0]);
                drow[xx * 3 + 1] = clip8(acc[1]);
                drow[xx * 3 + 2] = clip8(acc[2]);
            }
        }
        (out, first)
    } else {
        (src.clone(), 0)
    };
    if !need_v {
        return RgbImage::from_raw(width, height, tmp)
            .unwrap_or_else(|| RgbImage::new(width, height));
    }
    let mut out = vec![0u8; oh * ow * 3];
    // Row by row (integer sums, so the order of terms does not change the result).
    let mut acc = vec![0i32; ow * 3];
    for yy in 0..oh {
        let (ymin, n) = vert.bounds[yy];
        let ymin = ymin - row0;
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        acc.fill(1i32 << (PRECISION_BITS - 1));
        for (y, &w) in k.iter().enumerate() {
            let srow = &tmp[(ymin + y) * ow * 3..(ymin + y + 1) * ow * 3];
            for (a, &p) in acc.iter_mut().zip(srow) {
                *a = a.wrapping_add((p as i32).wrapping_mul(w));
            }
        }
        for (d, &a) in out[yy * ow * 3..(yy + 1) * ow * 3].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one() {
        for (i, o) in [(1000, 768), (600, 768), (5, 768)] {
            let c = precompute(i, o, Filter::Bicubic);
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

    #[test]
    fn a_flat_image_stays_flat_through_up_and_down_sizing() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        for (w, h) in [(512, 512), (8, 5), (37, 100)] {
            for f in [Filter::Lanczos, Filter::Bilinear, Filter::Bicubic] {
                let r = resize(&img, w, h, f);
                assert!(r.pixels().all(|p| p.0 == [10, 128, 250]), "{w}x{h} {f:?}");
            }
        }
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize(&img, 5, 4, Filter::Lanczos), img);
    }
}

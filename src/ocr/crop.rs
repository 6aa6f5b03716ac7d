//! Cutting a text quad out of the image as an upright strip (rapidocr's `get_rotate_crop_image`):
//! a perspective warp onto a `width × height` rectangle, bicubic (OpenCV's a = −0.75) with the border
//! replicated, then turned a quarter when the strip stands taller than 1.5× its width.

use image::{Rgb, RgbImage};

use super::quad::{self, Quad};

/// The strip under `q` (top-left, top-right, bottom-right, bottom-left), or `None` for a quad of no
/// width or height.
pub fn rotate_crop(img: &RgbImage, q: &Quad) -> Option<RgbImage> {
    let d = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let cw = d(q[0], q[1]).max(d(q[2], q[3])) as u32;
    let ch = d(q[0], q[3]).max(d(q[1], q[2])) as u32;
    if cw == 0 || ch == 0 || img.width() == 0 || img.height() == 0 {
        return None;
    }
    let dst: Quad = [
        [0.0, 0.0],
        [cw as f32, 0.0],
        [cw as f32, ch as f32],
        [0.0, ch as f32],
    ];
    // the inverse map, destination pixel -> source point, as warpPerspective samples
    let m = quad::perspective(&dst, q)?;
    let mut out = RgbImage::new(cw, ch);
    for y in 0..ch {
        for x in 0..cw {
            let (fx, fy) = (x as f64, y as f64);
            let w = m[6] * fx + m[7] * fy + m[8];
            if w.abs() < 1e-12 {
                continue;
            }
            let sx = (m[0] * fx + m[1] * fy + m[2]) / w;
            let sy = (m[3] * fx + m[4] * fy + m[5]) / w;
            out.put_pixel(x, y, bicubic(img, sx, sy));
        }
    }
    if ch as f32 / cw as f32 >= 1.5 {
        out = image::imageops::rotate270(&out); // np.rot90: a quarter turn counter-clockwise
    }
    Some(out)
}

fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

fn bicubic(img: &RgbImage, x: f64, y: f64) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (wx, wy) = (cubic_weights(x - x0), cubic_weights(y - y0));
    let (x0, y0) = (x0 as i64, y0 as i64);
    let mut acc = [0f64; 3];
    for (j, wyj) in wy.iter().enumerate() {
        let sy = (y0 - 1 + j as i64).clamp(0, h - 1) as u32;
        for (i, wxi) in wx.iter().enumerate() {
            let sx = (x0 - 1 + i as i64).clamp(0, w - 1) as u32;
            let p = img.get_pixel(sx, sy).0;
            for c in 0..3 {
                acc[c] += p[c] as f64 * wxi * wyj;
            }
        }
    }
    Rgb(acc.map(|v| v.round().clamp(0.0, 255.0) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_axis_quad_crops_the_pixels_under_it() {
        let img = RgbImage::from_fn(40, 20, |x, y| Rgb([x as u8 * 5, y as u8 * 10, 7]));
        let q: Quad = [[10.0, 5.0], [30.0, 5.0], [30.0, 15.0], [10.0, 15.0]];
        let c = rotate_crop(&img, &q).unwrap();
        assert_eq!(c.dimensions(), (20, 10));
        assert_eq!(c.get_pixel(0, 0).0, [50, 50, 7]);
        assert_eq!(c.get_pixel(19, 9).0, [145, 140, 7]);
    }

    #[test]
    fn a_tall_quad_is_turned() {
        let img = RgbImage::new(40, 40);
        let q: Quad = [[10.0, 0.0], [14.0, 0.0], [14.0, 30.0], [10.0, 30.0]];
        assert_eq!(rotate_crop(&img, &q).unwrap().dimensions(), (30, 4));
    }
}

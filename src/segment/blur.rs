//! Blurring people out of a frame (`[privacy] blur_people`): a strong box blur over each person's
//! mask, or over the whole box when there is no mask.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::Mask;
use crate::geometry::BBox;

/// What is blurred: the person's mask (from the segmentation model) or the whole box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlurShape {
    #[default]
    Mask,
    Box,
}

/// Blur each region in place. A region is a person's box and, for a mask-shaped blur, its mask (in
/// the image's pixels), grown by a 32nd of the box's longer side (at least 2 px) so the person's
/// outline, where the model is least sure, is blurred too; pixels of the box off the grown mask are
/// kept. The blur radius grows with the box (an eighth of its longer side, at least 6 px) so a face
/// stays unreadable at any distance.
pub fn blur_people(img: &mut RgbImage, regions: &[(BBox, Option<&Mask>)]) {
    for (b, mask) in regions {
        blur_region(img, b, *mask);
    }
}

fn blur_region(img: &mut RgbImage, b: &BBox, mask: Option<&Mask>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let clamp = |v: f32, n: i64| (v.max(0.0) as i64).min(n);
    let (x0, y0) = (clamp(b.x1.floor(), w), clamp(b.y1.floor(), h));
    let (x1, y1) = (clamp(b.x2.ceil(), w), clamp(b.y2.ceil(), h));
    if x1 <= x0 || y1 <= y0 || !b.is_finite() {
        return;
    }
    let r = ((b.width().max(b.height()) / 8.0) as i64).max(6);
    // Integral image of the box grown by the radius, so pixels near the edge average real
    // neighbours rather than a shrinking window.
    let (gx0, gy0) = ((x0 - r).max(0), (y0 - r).max(0));
    let (gx1, gy1) = ((x1 + r).min(w), (y1 + r).min(h));
    let (gw, gh) = ((gx1 - gx0) as usize, (gy1 - gy0) as usize);
    let stride = gw + 1;
    let mut sums = vec![[0u64; 3]; stride * (gh + 1)];
    let raw = img.as_raw();
    for y in 0..gh {
        let mut row = [0u64; 3];
        for x in 0..gw {
            let o = (((gy0 + y as i64) * w + gx0 + x as i64) * 3) as usize;
            for c in 0..3 {
                row[c] += raw[o + c] as u64;
                sums[(y + 1) * stride + x + 1][c] = sums[y * stride + x + 1][c] + row[c];
            }
        }
    }
    let grown = mask.map(|m| Grown::new(m, (x0, y0, x1, y1), b));
    let out = img.as_mut();
    for y in y0..y1 {
        for x in x0..x1 {
            if let Some(g) = &grown {
                if !g.on(x, y) {
                    continue;
                }
            }
            let (ax, ay) = (
                ((x - r).max(gx0) - gx0) as usize,
                ((y - r).max(gy0) - gy0) as usize,
            );
            let (bx, by) = (
                ((x + r + 1).min(gx1) - gx0) as usize,
                ((y + r + 1).min(gy1) - gy0) as usize,
            );
            let n = ((bx - ax) * (by - ay)) as u64;
            let o = ((y * w + x) * 3) as usize;
            for c in 0..3 {
                let s = sums[by * stride + bx][c] + sums[ay * stride + ax][c]
                    - sums[ay * stride + bx][c]
                    - sums[by * stride + ax][c];
                out[o + c] = ((s + n / 2) / n) as u8;
            }
        }
    }
}

/// A mask grown by `k` pixels inside a box: on where any mask pixel lies in the (2k+1)² window,
/// from an integral image of the mask over the box.
struct Grown {
    k: i64,
    origin: (i64, i64),
    size: (i64, i64),
    sums: Vec<u32>,
}

impl Grown {
    fn new(m: &Mask, (x0, y0, x1, y1): (i64, i64, i64, i64), b: &BBox) -> Grown {
        let k = ((b.width().max(b.height()) / 32.0) as i64).max(2);
        let (w, h) = (x1 - x0, y1 - y0);
        let stride = (w + 1) as usize;
        let mut sums = vec![0u32; stride * (h + 1) as usize];
        for y in 0..h {
            let mut row = 0u32;
            for x in 0..w {
                row += m.get((x0 + x) as u32, (y0 + y) as u32) as u32;
                let i = (y + 1) as usize * stride + (x + 1) as usize;
                sums[i] = sums[i - stride] + row;
            }
        }
        Grown {
            k,
            origin: (x0, y0),
            size: (w, h),
            sums,
        }
    }

    fn on(&self, x: i64, y: i64) -> bool {
        let (w, h) = self.size;
        let (lx, ly) = (x - self.origin.0, y - self.origin.1);
        let (ax, ay) = ((lx - self.k).max(0) as usize, (ly - self.k).max(0) as usize);
        let (bx, by) = (
            (lx + self.k + 1).min(w) as usize,
            (ly + self.k + 1).min(h) as usize,
        );
        let stride = w as usize + 1;
        let s = self.sums[by * stride + bx] + self.sums[ay * stride + ax]
            - self.sums[ay * stride + bx]
            - self.sums[by * stride + ax];
        s > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn box_blur_flattens_inside_and_keeps_outside() {
        let src = checker(80, 60);
        let mut img = src.clone();
        let b = BBox::from([20.0, 10.0, 60.0, 50.0]);
        blur_people(&mut img, &[(b, None)]);
        for (x, y, p) in img.enumerate_pixels() {
            let inside = (20..60).contains(&x) && (10..50).contains(&y);
            if inside {
                assert!((100..=155).contains(&p.0[0]), "({x},{y}) = {:?}", p.0);
            } else {
                assert_eq!(p, src.get_pixel(x, y));
            }
        }
    }

    #[test]
    fn mask_blur_keeps_box_pixels_off_the_mask() {
        let src = checker(40, 40);
        let mut img = src.clone();
        let mut m = Mask::empty(40, 40);
        for y in 0..40 {
            for x in 0..20 {
                m.set(x, y, true);
            }
        }
        blur_people(&mut img, &[(BBox::from([0.0, 0.0, 40.0, 40.0]), Some(&m))]);
        assert_ne!(img.get_pixel(5, 5), src.get_pixel(5, 5));
        // the mask ends at x = 19; grown by 2 px (a 40 px box), x = 21 is blurred, x = 22 is not
        assert_ne!(img.get_pixel(21, 5), src.get_pixel(21, 5));
        for x in 22..40 {
            assert_eq!(img.get_pixel(x, 5), src.get_pixel(x, 5), "x = {x}");
        }
    }

    #[test]
    fn degenerate_boxes_are_ignored() {
        let src = checker(10, 10);
        let mut img = src.clone();
        blur_people(
            &mut img,
            &[
                (BBox::from([5.0, 5.0, 5.0, 9.0]), None),
                (BBox::from([-50.0, -50.0, -10.0, -10.0]), None),
                (BBox::from([f32::NAN, 0.0, 3.0, 3.0]), None),
            ],
        );
        assert_eq!(img, src);
    }
}

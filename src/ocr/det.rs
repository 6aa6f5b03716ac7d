//! Text detection (PaddleOCR's DB head): the image sized for the detector, and the probability map
//! turned into text quads — threshold, 2×2 dilation, regions, rotated rectangles, the mean-score
//! test, unclip, clipping, reading order. Constants are rapidocr 3.10.0's `config.yaml` (`Det`) and
//! `ch_ppocr_det/utils.py`.

use image::RgbImage;

use super::quad::{self, Quad};

/// `Det.limit_side_len` with `limit_type: min`: the shorter side is brought up to this.
pub const LIMIT_SIDE_LEN: f32 = 736.0;
/// `Det.thresh`: probability above which a pixel is text.
pub const THRESH: f32 = 0.3;
/// `Det.box_thresh`: mean probability a box needs.
pub const BOX_THRESH: f32 = 0.5;
/// `Det.max_candidates`.
pub const MAX_CANDIDATES: usize = 1000;
/// `Det.unclip_ratio`.
pub const UNCLIP_RATIO: f32 = 1.6;
/// `DBPostProcess.min_size`.
const MIN_SIZE: f32 = 3.0;
/// `_BOX_SORT_Y_THRESHOLD`: boxes whose tops differ by less are on one line.
const LINE_Y_THRESHOLD: f32 = 10.0;

/// The detector's input size for an `h × w` image: the shorter side scaled up to 736 (never down),
/// both sides rounded to multiples of 32 (`DetPreProcess.resize`).
pub fn input_size(h: u32, w: u32) -> (u32, u32) {
    let (hf, wf) = (h as f32, w as f32);
    let ratio = if hf.min(wf) < LIMIT_SIDE_LEN {
        if h < w {
            LIMIT_SIDE_LEN / hf
        } else {
            LIMIT_SIDE_LEN / wf
        }
    } else {
        1.0
    };
    let rh = (hf * ratio) as u32;
    let rw = (wf * ratio) as u32;
    (round32(rh), round32(rw))
}

/// `int(round(v / 32) * 32)` with Python's round-half-even.
pub fn round32(v: u32) -> u32 {
    ((v as f64 / 32.0).round_ties_even() * 32.0) as u32
}

/// A text quad in the detector's image and its mean probability.
#[derive(Debug, Clone)]
pub struct DetBox {
    pub quad: Quad,
    pub score: f32,
}

/// DB post-processing of the probability map `pred` (`ph × pw`) for an image of `dest_w × dest_h`.
pub fn boxes(pred: &[f32], pw: usize, ph: usize, dest_w: u32, dest_h: u32) -> Vec<DetBox> {
    if pw == 0 || ph == 0 || pred.len() < pw * ph {
        return Vec::new();
    }
    let seg: Vec<bool> = pred[..pw * ph].iter().map(|&p| p > THRESH).collect();
    // cv2.dilate with a 2×2 kernel (anchor at its centre (1, 1)): a pixel is set when it or its left,
    // upper or upper-left neighbour is
    let mut mask = vec![0u8; pw * ph];
    for y in 0..ph {
        for x in 0..pw {
            let s = |xx: usize, yy: usize| seg[yy * pw + xx];
            let on = s(x, y)
                || (x > 0 && s(x - 1, y))
                || (y > 0 && s(x, y - 1))
                || (x > 0 && y > 0 && s(x - 1, y - 1));
            mask[y * pw + x] = on as u8;
        }
    }
    let mut out = Vec::new();
    for region in quad::regions(&mask, pw, ph, MAX_CANDIDATES) {
        let Some(rect) = quad::min_area_rect(&region) else {
            continue;
        };
        if rect.short_side() < MIN_SIZE {
            continue;
        }
        let q = quad::mini_box_order(rect.corners);
        let score = box_score_fast(pred, pw, ph, &q);
        if score < BOX_THRESH {
            continue;
        }
        let Some(grown) = quad::unclip(&q, UNCLIP_RATIO) else {
            continue;
        };
        if grown.short_side() < MIN_SIZE + 2.0 {
            continue;
        }
        let mut g = quad::mini_box_order(grown.corners);
        for p in g.iter_mut() {
            // np.round (half to even), then int32
            p[0] = (p[0] / pw as f32 * dest_w as f32)
                .round_ties_even()
                .clamp(0.0, dest_w as f32);
            p[1] = (p[1] / ph as f32 * dest_h as f32)
                .round_ties_even()
                .clamp(0.0, dest_h as f32);
        }
        // filter_det_res: clockwise order, clip to the last pixel, drop slivers
        let mut c = quad::order_clockwise(g);
        for p in c.iter_mut() {
            p[0] = p[0].clamp(0.0, dest_w.saturating_sub(1) as f32).trunc();
            p[1] = p[1].clamp(0.0, dest_h.saturating_sub(1) as f32).trunc();
        }
        let dist = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]) as i64;
        if dist(c[0], c[1]) <= 3 || dist(c[0], c[3]) <= 3 {
            continue;
        }
        out.push(DetBox { quad: c, score });
    }
    out
}

/// Mean probability inside the quad (`box_score_fast`: the quad's corners truncated to pixels).
fn box_score_fast(pred: &[f32], w: usize, h: usize, q: &Quad) -> f32 {
    let b = quad::bounds(q);
    let xmin = (b[0].floor() as i64).clamp(0, w as i64 - 1);
    let xmax = (b[2].ceil() as i64).clamp(0, w as i64 - 1);
    let ymin = (b[1].floor() as i64).clamp(0, h as i64 - 1);
    let ymax = (b[3].ceil() as i64).clamp(0, h as i64 - 1);
    // cv2.fillPoly gets the corners relative to (xmin, ymin), cast to int32 (truncation)
    let mut local = [[0f32; 2]; 4];
    for (l, p) in local.iter_mut().zip(q) {
        *l = [(p[0] - xmin as f32).trunc(), (p[1] - ymin as f32).trunc()];
    }
    let (mut sum, mut n) = (0f64, 0usize);
    for y in ymin..=ymax {
        for x in xmin..=xmax {
            if quad::in_convex(&local, (x - xmin) as f32, (y - ymin) as f32) {
                sum += pred[y as usize * w + x as usize] as f64;
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum / n as f64) as f32
    }
}

/// Reading order (`TextDetector.sorted_boxes`): a stable sort by the top-left corner's y, boxes whose
/// tops are within 10 pixels of the one before on the same line, each line left to right.
pub fn reading_order(boxes: &mut Vec<DetBox>) {
    boxes.sort_by(|a, b| a.quad[0][1].total_cmp(&b.quad[0][1]));
    let mut line = 0usize;
    let mut keyed: Vec<(usize, f32, DetBox)> = Vec::with_capacity(boxes.len());
    let mut prev_y: Option<f32> = None;
    for b in boxes.drain(..) {
        if let Some(py) = prev_y {
            if b.quad[0][1] - py >= LINE_Y_THRESHOLD {
                line += 1;
            }
        }
        prev_y = Some(b.quad[0][1]);
        keyed.push((line, b.quad[0][0], b));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    boxes.extend(keyed.into_iter().map(|k| k.2));
}

/// The image as the detector's tensor `[1, 3, h, w]`: resized (bilinear, as cv2), channels in BGR
/// order (rapidocr works on OpenCV's BGR images), `(v / 255 − 0.5) / 0.5`.
pub fn tensor(img: &RgbImage, (h, w): (u32, u32)) -> Vec<f32> {
    let resized = super::resize(img, w, h);
    super::chw_bgr(&resized, w as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_follow_rapidocr() {
        // 640×480: min side 480 → ×1.5333 → 736×981 → 736×992
        assert_eq!(input_size(480, 640), (736, 992));
        assert_eq!(input_size(1000, 800), (992, 800));
    }

    #[test]
    fn a_bright_bar_becomes_one_box() {
        let (w, h) = (64usize, 32usize);
        let mut pred = vec![0f32; w * h];
        for y in 10..16 {
            for x in 8..50 {
                pred[y * w + x] = 0.9;
            }
        }
        let b = boxes(&pred, w, h, 128, 64);
        assert_eq!(b.len(), 1, "{b:?}");
        let q = b[0].quad;
        // the bar spans x 8..=50 after dilation, doubled in the 128-wide image, then grown
        assert!(q[0][0] < 16.0 && q[1][0] > 100.0, "{q:?}");
        assert!((b[0].score - 0.9).abs() < 0.2);
    }
}

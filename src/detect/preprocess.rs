//! Image → model input: resize (letterbox or stretch), channel order, normalisation, layout.
//!
//! Resizing reproduces OpenCV's `cv2.resize(INTER_LINEAR)` on 8-bit images (half-pixel centres,
//! 11-bit fixed-point weights), because that is the pre-processing YOLOX, NanoDet and FastestDet
//! were trained and exported with; `tests/preprocess.rs` checks it against cv2 output pixel by pixel.

use image::RgbImage;

use super::manifest::{Align, ColorOrder, InputSection, Layout, Manifest, ResizeMode};
use crate::geometry::BBox;

const COEF_BITS: i32 = 11;
const COEF_SCALE: i32 = 1 << COEF_BITS;

/// How source-image pixels map into the model's input: `input = src * scale + offset`, per axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    pub src_width: u32,
    pub src_height: u32,
}

impl Transform {
    /// Map a box from input-tensor pixels back to the source image, clipped to it.
    pub fn to_source(&self, b: BBox) -> BBox {
        let w = self.src_width as f32;
        let h = self.src_height as f32;
        BBox {
            x1: ((b.x1 - self.offset_x) / self.scale_x).clamp(0.0, w),
            y1: ((b.y1 - self.offset_y) / self.scale_y).clamp(0.0, h),
            x2: ((b.x2 - self.offset_x) / self.scale_x).clamp(0.0, w),
            y2: ((b.y2 - self.offset_y) / self.scale_y).clamp(0.0, h),
        }
    }
}

/// Pre-computed taps for one axis of a bilinear resize: source index and fixed-point weights.
#[derive(Debug, Clone, Default)]
struct Taps {
    idx: Vec<usize>,
    w0: Vec<i32>,
    w1: Vec<i32>,
}

fn taps(src: usize, dst: usize) -> Taps {
    let scale = src as f64 / dst as f64;
    let mut t = Taps {
        idx: Vec::with_capacity(dst),
        w0: Vec::with_capacity(dst),
        w1: Vec::with_capacity(dst),
    };
    for d in 0..dst {
        let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let mut s = f.floor() as i64;
        f -= s as f32;
        if s < 0 {
            s = 0;
            f = 0.0;
        }
        if s as usize >= src - 1 {
            s = src as i64 - 1;
            f = 0.0;
        }
        let a0 = ((1.0 - f) * COEF_SCALE as f32).round() as i32;
        t.idx.push(s as usize);
        t.w0.push(a0);
        t.w1.push(COEF_SCALE - a0);
    }
    t
}

/// Bilinear resize of an RGB image into a `dw × dh` region of `dst` starting at `(ox, oy)`.
/// Reuses `row_buf` between calls so a frame loop does not allocate.
pub fn resize_into(
    src: &RgbImage,
    dst: &mut RgbImage,
    (ox, oy): (u32, u32),
    (dw, dh): (u32, u32),
    row_buf: &mut Vec<i32>,
) {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = (dw as usize, dh as usize);
    if dw == 0 || dh == 0 || sw == 0 || sh == 0 {
        return;
    }
    let tx = taps(sw, dw);
    let ty = taps(sh, dh);
    let s = src.as_raw();
    let dst_w = dst.width() as usize;
    let d = dst.as_mut();
    // Horizontal pass for the two source rows a destination row needs, cached by source row index.
    row_buf.clear();
    row_buf.resize(2 * dw * 3, 0);
    let (mut r0_idx, mut r1_idx) = (usize::MAX, usize::MAX);
    let hpass = |row: usize, out: &mut [i32]| {
        let line = &s[row * sw * 3..(row + 1) * sw * 3];
        for x in 0..dw {
            let sx = tx.idx[x];
            let sx1 = (sx + 1).min(sw - 1);
            let (a0, a1) = (tx.w0[x], tx.w1[x]);
            for c in 0..3 {
                out[x * 3 + c] = line[sx * 3 + c] as i32 * a0 + line[sx1 * 3 + c] as i32 * a1;
            }
        }
    };
    for y in 0..dh {
        let sy = ty.idx[y];
        let sy1 = (sy + 1).min(sh - 1);
        let (b0, b1) = (ty.w0[y], ty.w1[y]);
        let (first, second) = row_buf.split_at_mut(dw * 3);
        if r0_idx != sy {
            if r1_idx == sy {
                first.copy_from_slice(second);
            } else {
                hpass(sy, first);
            }
            r0_idx = sy;
            r1_idx = usize::MAX;
        }
        if r1_idx != sy1 {
            hpass(sy1, second);
            r1_idx = sy1;
        }
        let out_off = ((oy as usize + y) * dst_w + ox as usize) * 3;
        let out = &mut d[out_off..out_off + dw * 3];
        for i in 0..dw * 3 {
            // OpenCV's vectorised vertical pass: 16×16→high-16 products of the row sums (pre-shifted
            // by 4) and the weights, then a rounding shift by 2. Reproducing it keeps us bit-exact.
            let v = ((b0 * (first[i] >> 4)) >> 16) + ((b1 * (second[i] >> 4)) >> 16);
            out[i] = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
}

/// Place `src` into the model's input geometry as the manifest says (u8, RGB, HWC).
/// Returns the canvas and the mapping back to source pixels.
pub fn fit(src: &RgbImage, input: &InputSection, (h, w): (usize, usize)) -> (RgbImage, Transform) {
    let mut canvas = RgbImage::new(w as u32, h as u32);
    let mut buf = Vec::new();
    let t = fit_into(src, input, &mut canvas, &mut buf);
    (canvas, t)
}

/// As [`fit`], into an existing canvas of the input size.
pub fn fit_into(
    src: &RgbImage,
    input: &InputSection,
    canvas: &mut RgbImage,
    row_buf: &mut Vec<i32>,
) -> Transform {
    let (w, h) = (canvas.width(), canvas.height());
    let (sw, sh) = (src.width().max(1), src.height().max(1));
    match input.resize {
        ResizeMode::Stretch => {
            resize_into(src, canvas, (0, 0), (w, h), row_buf);
            Transform {
                scale_x: w as f32 / sw as f32,
                scale_y: h as f32 / sh as f32,
                offset_x: 0.0,
                offset_y: 0.0,
                src_width: sw,
                src_height: sh,
            }
        }
        ResizeMode::Letterbox => {
            // YOLOX's preproc, in f64 like Python: int(w * r), int(h * r).
            let r = (w as f64 / sw as f64).min(h as f64 / sh as f64);
            let nw = ((sw as f64 * r) as u32).clamp(1, w);
            let nh = ((sh as f64 * r) as u32).clamp(1, h);
            let r = r as f32;
            let (ox, oy) = match input.align {
                Align::TopLeft => (0, 0),
                Align::Center => ((w - nw) / 2, (h - nh) / 2),
            };
            let pad = input.pad_value;
            for p in canvas.pixels_mut() {
                p.0 = [pad; 3];
            }
            resize_into(src, canvas, (ox, oy), (nw, nh), row_buf);
            Transform {
                scale_x: r,
                scale_y: r,
                offset_x: ox as f32,
                offset_y: oy as f32,
                src_width: sw,
                src_height: sh,
            }
        }
    }
}

/// Fill `out` (length = 3·H·W) from a canvas of the input size: channel order, `(p·scale − mean)/std`,
/// layout.
pub fn to_tensor(canvas: &RgbImage, input: &InputSection, out: &mut [f32]) {
    let plane = (canvas.width() * canvas.height()) as usize;
    debug_assert_eq!(out.len(), plane * 3);
    let order: [usize; 3] = match input.color {
        ColorOrder::Rgb => [0, 1, 2],
        ColorOrder::Bgr => [2, 1, 0],
    };
    // Per channel: v = p * k + b, with k = scale/std and b = -mean/std, as a 256-entry table.
    let mut lut = [[0f32; 256]; 3];
    for ((table, mean), std) in lut.iter_mut().zip(input.mean).zip(input.std) {
        let k = input.scale / std;
        let b = -mean / std;
        for (p, v) in table.iter_mut().enumerate() {
            *v = p as f32 * k + b;
        }
    }
    let px = canvas.as_raw();
    match input.layout {
        Layout::Nchw => {
            let (p0, rest) = out.split_at_mut(plane);
            let (p1, p2) = rest.split_at_mut(plane);
            for (i, rgb) in px.chunks_exact(3).enumerate() {
                p0[i] = lut[0][rgb[order[0]] as usize];
                p1[i] = lut[1][rgb[order[1]] as usize];
                p2[i] = lut[2][rgb[order[2]] as usize];
            }
        }
        Layout::Nhwc => {
            for (o, rgb) in out.chunks_exact_mut(3).zip(px.chunks_exact(3)) {
                o[0] = lut[0][rgb[order[0]] as usize];
                o[1] = lut[1][rgb[order[1]] as usize];
                o[2] = lut[2][rgb[order[2]] as usize];
            }
        }
    }
}

/// Reusable buffers for turning frames into input tensors without allocating per frame.
#[derive(Debug)]
pub struct Preprocessor {
    input: InputSection,
    canvas: RgbImage,
    row_buf: Vec<i32>,
    tensor: Vec<f32>,
}

impl Preprocessor {
    pub fn new(manifest: &Manifest) -> Self {
        let (h, w) = manifest.input_hw();
        Preprocessor {
            input: manifest.input.clone(),
            canvas: RgbImage::new(w as u32, h as u32),
            row_buf: Vec::new(),
            tensor: vec![0.0; 3 * h * w],
        }
    }

    /// Resize and normalise `img`; the tensor is then in [`Preprocessor::tensor`].
    pub fn run(&mut self, img: &RgbImage) -> Transform {
        let t = fit_into(img, &self.input, &mut self.canvas, &mut self.row_buf);
        to_tensor(&self.canvas, &self.input, &mut self.tensor);
        t
    }

    /// Use an already-fitted canvas (e.g. a reference fixture) as the input.
    pub fn run_fitted(&mut self, canvas: &RgbImage) {
        to_tensor(canvas, &self.input, &mut self.tensor);
    }

    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }
    pub fn canvas(&self) -> &RgbImage {
        &self.canvas
    }
}

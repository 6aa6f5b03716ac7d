//! [`super::qconv::QConv`]'s product on x86 CPUs with AVX-512 VNNI: a direct int8 convolution,
//! requantized to 8 bits in the same pass. This file lays out the input and shares out the work;
//! `vnni.rs` holds the kernels.
//!
//! Why not tract's int8 matrix product there: measured on a 2-core AMD EPYC (Zen 5, 2026-12-07,
//! 1 thread), nanodet-g-int8-qdq's 3x3 QConvs ran about 1.7× onnxruntime's QLinearConvs (128→128
//! at 52x52: 1.16 ms against 0.75), in tract's `avx512vnni_mmm_i32_16x16` behind an im2col that
//! writes every tap of every position (nine times the input for a 3x3 conv), then a separate
//! requantization pass over the i32 products.
//!
//! Here no im2col is made. The input is copied once into the phase planes of [`super::grid`], in
//! words: a word holds four input channels' bytes of one column, so that the VNNI dot product of a
//! word with a weight word sums four channels' taps; vectors take 16 consecutive positions of the
//! grid, across output rows (a 52-column map computes 54 lanes per row, where vectors per output
//! row computed 64). Channels past the input's last group of four have zero weights. A padded tap
//! holds the input zero point (plus 128 for i8 inputs, whose bytes are flipped to u8, the operand
//! VNNI multiplies unsigned): its share `x0·Σw` is folded into the bias once, as in `QConv`'s
//! other kernels. Work is shared out by (grid block, channel tile), in tiles of six or four
//! channels as in [`super::fdirect`]; each step's accumulators are requantized in registers with
//! `QConv`'s arithmetic, so the bytes equal its other kernels' (tested below and in
//! `tests/qconv.rs`).

// Off x86 the kernel is never planned ([`available`] is false): its types are built but not read.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
mod vnni;

#[cfg(target_arch = "x86_64")]
use super::fdirect::CT;
use super::fdirect::{tiles, Tile};
#[cfg(target_arch = "x86_64")]
use super::grid::Grid;
use super::grid::{place, Layout, BLOCK};
use super::im2col::Geometry;
use super::par::{for_each_chunk, for_each_range, SharedOut};
use super::scratch::Scratch;

/// Whether this CPU runs the kernels (AVX-512 F, BW and VNNI).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f") && has!("avx512bw") && has!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether plans made now use these kernels: where the CPU runs them, unless
/// [`super::I8_KERNEL_ENV`] names another int8 kernel (`tract` or `avx2`).
pub(super) fn chosen() -> bool {
    available() && super::i8gemm::vnni_chosen()
}

/// One conv's weights, bias and requantization as the kernels read them.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Per tile of six or four channels, per tap `(group of four input channels, ky, kx)`, the
    /// tile's channels' weight words side by side; zero past `c_out` and past `c_in`.
    w: Vec<u32>,
    tiles: Vec<Tile>,
    /// Per tile slot (`Tile::at / taps`), its channel's bias with the zero point folded in, and
    /// its scale.
    bias: Vec<i32>,
    scale: Vec<f32>,
    y0: f32,
    /// The output is i8 (else u8).
    y_signed: bool,
    /// The input's bytes are i8: XOR-ed with 0x80 into the u8 the kernel multiplies.
    x_signed: bool,
    /// The byte of a padded tap (the input zero point, as flipped bytes hold it).
    pad: u8,
    /// The geometry the plan was made for.
    g: Geometry,
}

/// The conv's integer parameters for [`Plan::new`].
pub(super) struct Quant<'a> {
    /// Weights minus their zero point (each an i8), `[c_out][c_in·kh·kw]` (OIHW).
    pub w: &'a [i32],
    /// i32 bias per output channel, in units of the accumulator.
    pub bias: &'a [i32],
    /// Per output channel: `k_scale · x_scale / y_scale`, positive.
    pub scale: &'a [f32],
    pub x0: i32,
    pub x_signed: bool,
    pub y0: i32,
    pub y_signed: bool,
}

impl Plan {
    /// The plan for `g` (group 1), or why the kernel does not take it.
    pub(super) fn new(g: &Geometry, q: Quant) -> Result<Plan, String> {
        let k = g.k();
        if q.w.len() != g.c_out * k || q.bias.len() != g.c_out || q.scale.len() != g.c_out {
            return Err("weights, bias or scales of the wrong length".into());
        }
        if q.w.iter().any(|v| !(-128..=127).contains(v)) {
            return Err("weights leave the i8 range".into());
        }
        if q.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("a scale is not positive and finite".into());
        }
        let pad = q.x0 + if q.x_signed { 128 } else { 0 };
        let pad = u8::try_from(pad).map_err(|_| format!("input zero point {}", q.x0))?;
        let groups = g.c_in.div_ceil(4);
        let (kh, kw) = (g.kh, g.kw);
        let taps = groups * kh * kw;
        let (tiles, len) = tiles(g.c_out, taps);
        let mut w = vec![0u32; len];
        let slots = len / taps.max(1);
        let (mut bias, mut scale) = (vec![0i32; slots], vec![1f32; slots]);
        for t in &tiles {
            for j in 0..t.width.min(g.c_out - t.c0) {
                let c = t.c0 + j;
                let wc = &q.w[c * k..][..k];
                for tap in 0..taps {
                    let (grp, yx) = (tap / (kh * kw), tap % (kh * kw));
                    let mut bytes = [0u8; 4];
                    for (i, b) in bytes.iter_mut().enumerate() {
                        let ci = 4 * grp + i;
                        if ci < g.c_in {
                            *b = wc[ci * kh * kw + yx] as i8 as u8;
                        }
                    }
                    w[t.at + tap * t.width + j] = u32::from_le_bytes(bytes);
                }
                let sum: i32 = wc.iter().sum();
                bias[t.at / taps.max(1) + j] =
                    q.bias[c].wrapping_sub(i32::from(pad).wrapping_mul(sum));
                scale[t.at / taps.max(1) + j] = q.scale[c];
            }
        }
        Ok(Plan {
            w,
            tiles,
            bias,
            scale,
            y0: q.y0 as f32,
            y_signed: q.y_signed,
            x_signed: q.x_signed,
            pad,
            g: g.clone(),
        })
    }

    /// Groups of four input channels.
    fn groups(&self) -> usize {
        self.g.c_in.div_ceil(4)
    }
}

/// The conv of `x` (`[1, c_in, in_h, in_w]` bytes, u8 or i8 as planned) into `out`
/// (`[c_out][out_h·out_w]` bytes, every one written), requantized.
pub(super) fn conv(p: &Plan, x: &[u8], out: &mut [u8]) {
    let g = &p.g;
    let n = g.n();
    assert!(available() && x.len() >= g.c_in * g.in_h * g.in_w && out.len() == g.c_out * n);
    let lay = Layout::of(g, p.groups());
    let mut planes = Scratch::<u32>::stale(lay.len);
    fill(p, &lay, x, &mut planes);
    let taps = lay.taps.len();
    let (lo, hi) = if p.y_signed {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    let end = lay.end(g);
    let dst = SharedOut::new(out);
    let tiles = p.tiles.len();
    for_each_range(
        end.div_ceil(BLOCK) * tiles,
        || (),
        |units, _| {
            for u in units {
                let (f0, t) = (u / tiles * BLOCK, p.tiles[u % tiles]);
                let slot = t.at / taps.max(1);
                let channels = t.width.min(g.c_out - t.c0);
                let wt = &p.w[t.at..][..t.width * taps];
                #[cfg(target_arch = "x86_64")]
                {
                    let f = vnni::Finish {
                        bias: &p.bias[slot..slot + t.width],
                        scale: &p.scale[slot..slot + t.width],
                        y0: p.y0,
                        lo,
                        hi,
                    };
                    let grid = Grid {
                        wq: lay.wq,
                        out_w: g.out_w,
                        end: end.min(f0 + BLOCK),
                    };
                    let (x, out) = (planes.as_ptr(), (dst.at(t.c0 * n), n));
                    // SAFETY: the CPU runs the kernels (asserted); reads within `planes`
                    // (`Layout::of` asserts it); writes the tile's channels of the outputs of
                    // grid positions `f0 .. f0 + BLOCK`, which no other unit writes.
                    unsafe {
                        if t.width == CT {
                            vnni::run::<CT>(x, (f0, grid), &lay.taps, wt, &f, out, channels)
                        } else {
                            vnni::run::<4>(x, (f0, grid), &lay.taps, wt, &f, out, channels)
                        }
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (f0, channels, wt, slot, lo, hi, &dst);
            }
        },
    );
}

/// `x` into the planes of `lay`: per group of four channels (all its phases: one task), per
/// padded row, the group's four input rows interleaved into words, then each column phase's
/// words into the row's phase planes; [`Plan::pad`] bytes where the padding is.
fn fill(p: &Plan, lay: &Layout, x: &[u8], planes: &mut [u32]) {
    let g = &p.g;
    let (ph, pw) = g.pad;
    let pad = u32::from_le_bytes([p.pad; 4]);
    let flip = if p.x_signed { 0x8080_8080 } else { 0 };
    let hw = g.in_h * g.in_w;
    // The rows of channels past `c_in` (weights zero there: any byte will do).
    let none = vec![0u8; g.in_w];
    let none_plane = if g.c_in.is_multiple_of(4) {
        vec![]
    } else {
        vec![0u8; hw]
    };
    let (planes, slack) = planes.split_at_mut(p.groups() * lay.channel());
    slack.fill(pad);
    // Unpadded and unstrided (a 1x1 conv): a group's plane is its four channels interleaved
    // whole, in one call (a row at a time, the unpacks' 64-column steps fit few rows).
    let whole = lay.sh * lay.sw == 1 && g.pad == (0, 0) && lay.wq == g.in_w && lay.hq == g.in_h;
    for_each_chunk(
        planes,
        lay.channel(),
        || vec![0u32; g.in_w],
        |grp, dst, line| {
            if whole {
                let src = std::array::from_fn(|i| {
                    let c = 4 * grp + i;
                    if c < g.c_in {
                        &x[c * hw..][..hw]
                    } else {
                        &none_plane[..]
                    }
                });
                return interleave(src, flip, &mut dst[..hw]);
            }
            for r in 0..lay.hq * lay.sh {
                let row = |phx: usize| lay.row(r, phx);
                let Some(y) = r.checked_sub(ph).filter(|y| *y < g.in_h) else {
                    for phx in 0..lay.sw {
                        dst[row(phx)..][..lay.wq].fill(pad);
                    }
                    continue;
                };
                let src: [&[u8]; 4] = std::array::from_fn(|i| {
                    let c = 4 * grp + i;
                    if c < g.c_in {
                        &x[c * hw + y * g.in_w..][..g.in_w]
                    } else {
                        &none[..]
                    }
                });
                if lay.sw == 1 {
                    // One phase: the words go straight into the row, between its pad columns.
                    let row = &mut dst[row(0)..][..lay.wq];
                    let (left, rest) = row.split_at_mut(pw);
                    let (mid, right) = rest.split_at_mut(g.in_w);
                    left.fill(pad);
                    right.fill(pad);
                    interleave(src, flip, mid);
                } else {
                    interleave(src, flip, line);
                    for phx in 0..lay.sw {
                        let out = &mut dst[row(phx)..][..lay.wq];
                        place((line, out), (pw, phx, lay.sw), pad);
                    }
                }
            }
        },
    );
}

/// [`vnni::interleave`] (the CPU has AVX-512: plans are made only where [`available`]).
fn interleave(src: [&[u8]; 4], flip: u32, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernels run only where the CPU has AVX-512 F and BW (`conv` asserts it).
    unsafe {
        vnni::interleave(src, flip, out)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (src, flip, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testvals::bytes;

    /// The conv in plain integer arithmetic (`acc = bias + Σ w·(x − x0)` over in-image taps),
    /// requantized with `QConv`'s own per-channel function.
    fn reference(g: &Geometry, q: &Quant, x: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; g.c_out * g.n()];
        let mut acc = vec![0i32; g.n()];
        for co in 0..g.c_out {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut a = q.bias[co];
                    for ci in 0..g.c_in {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize
                                    - g.pad.0 as isize;
                                let ix = (ox * g.stride.1 + kx * g.dilation.1) as isize
                                    - g.pad.1 as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= g.in_h as isize
                                    || ix >= g.in_w as isize
                                {
                                    continue;
                                }
                                let b = x[(ci * g.in_h + iy as usize) * g.in_w + ix as usize];
                                let v = if q.x_signed { b as i8 as i32 } else { b as i32 };
                                let wv = q.w[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx];
                                a += wv * (v - q.x0);
                            }
                        }
                    }
                    acc[oy * g.out_w + ox] = a;
                }
            }
            super::super::qconv::requant_channel(
                &acc,
                q.scale[co],
                q.y0 as f32,
                q.y_signed,
                &mut out[co * g.n()..][..g.n()],
            );
        }
        out
    }

    /// Every row width from 1 to 70 (each tail step, 64-column steps, several short rows per
    /// step and a last group of fewer), channel counts that leave a partial group of four and
    /// tiles of six and four, strides 1 and 2, 1x1, 3x3 and 5x5 kernels, a dilation, u8 and i8
    /// inputs and outputs: the kernel's bytes equal the plain arithmetic's.
    #[test]
    fn equals_plain_integer_arithmetic() {
        if !available() {
            eprintln!("SKIP: this CPU has no AVX-512 VNNI");
            return;
        }
        let mut checked = 0;
        for w in 1..=70usize {
            for (case, &(c_in, c_out, k, s, d)) in [
                (5usize, 10usize, 3usize, 1usize, 1usize),
                (8, 6, 3, 2, 1),
                (3, 16, 1, 1, 1),
                (4, 4, 5, 2, 1),
                (6, 8, 3, 1, 2),
            ]
            .iter()
            .enumerate()
            {
                let pad = d * (k / 2);
                let h = if w % 3 == 0 { 29 } else { 7 };
                let g = Geometry {
                    c_in,
                    c_out,
                    in_h: h,
                    in_w: w,
                    out_h: (h + 2 * pad - d * (k - 1) - 1) / s + 1,
                    out_w: (w + 2 * pad - d * (k - 1) - 1) / s + 1,
                    kh: k,
                    kw: k,
                    stride: (s, s),
                    dilation: (d, d),
                    pad: (pad, pad),
                    batched: true,
                };
                let signed = (w + case) % 2 == 1;
                let x = bytes(c_in * h * w, w as u64);
                let wts: Vec<i32> = bytes(c_out * g.k(), 3 + case as u64)
                    .iter()
                    .map(|b| *b as i8 as i32)
                    .collect();
                let bias: Vec<i32> = (0..c_out as i32).map(|c| c * 37 - 100).collect();
                let scale: Vec<f32> = (0..c_out).map(|c| 0.002 + c as f32 * 0.0003).collect();
                let q = Quant {
                    w: &wts,
                    bias: &bias,
                    scale: &scale,
                    x0: if signed { -3 } else { 131 },
                    x_signed: signed,
                    y0: if signed { 5 } else { 120 },
                    y_signed: signed,
                };
                let want = reference(&g, &q, &x);
                let plan = Plan::new(&g, q).unwrap();
                let mut got = vec![0xAAu8; want.len()];
                conv(&plan, &x, &mut got);
                assert_eq!(got, want, "{c_in}→{c_out} k {k} s {s} d {d} width {w}");
                let distinct: std::collections::BTreeSet<u8> = got.iter().copied().collect();
                assert!(
                    distinct.len() > 8 || got.len() < 64,
                    "degenerate: {distinct:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 350);
    }
}

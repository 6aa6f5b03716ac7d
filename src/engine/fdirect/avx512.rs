//! [`super`]'s kernels on AVX-512 (F): 16 floats per vector, 32 vector registers.
//!
//! Why a second set: on a CPU with AVX-512 onnxruntime's NCHWc convs use it, and the AVX2
//! kernels ran nanodet-g's 3x3 convs at about half its speed (measured on a 2-core AMD EPYC, Zen 5,
//! 2026-12-07: 32→32 at 104x104, 1.73 ms against 0.80). With 32 registers a step keeps six
//! channels × four vectors of accumulators: 24 FMA chains per tap for four loads.
//!
//! Convs run over the grid of [`super::super::grid`] ([`grid_run`]), whose vectors cross output
//! rows; 1x1 convs by blocks of positions and depthwise convs by output rows ([`rows`]). A row
//! runs in 64-column steps while more than 48 columns are left, then one step of one to three
//! vectors for the rest: reads end at the row's width rounded up to 16, as the AVX2 kernels' do,
//! so both share [`super::Layout`]. A depthwise conv's short rows are taken several at a time
//! (up to eight rows of one vector), so that a step keeps 8 FMA chains. Partial vectors are
//! stored under a mask. Sums run in tap order per output, as in the AVX2 kernels: the two give
//! the same bits.

use std::arch::x86_64::*;

use super::super::grid::Grid;
use super::super::vmath::exp512;
use super::Act;

/// Floats per vector.
const L: usize = 16;

/// Bias, activation and the store of `lanes` (1..=16) floats of `v`, `ps`
/// floats apart (1: one vector store).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn finish(v: __m512, bias: f32, act: Act, dst: *mut f32, lanes: usize, ps: usize) {
    let v = activate(v, bias, act);
    if ps != 1 {
        // Channels last: a value per position, `ps` (the channel count) apart.
        let mut lane = [0f32; L];
        _mm512_storeu_ps(lane.as_mut_ptr(), v);
        for (l, v) in lane.iter().enumerate().take(lanes) {
            *dst.add(l * ps) = *v;
        }
    } else if lanes >= L {
        _mm512_storeu_ps(dst, v);
    } else {
        _mm512_mask_storeu_ps(dst, ((1u32 << lanes) - 1) as __mmask16, v);
    }
}

/// `v` plus the bias, through the activation.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn activate(v: __m512, bias: f32, act: Act) -> __m512 {
    let mut v = _mm512_add_ps(v, _mm512_set1_ps(bias));
    match act {
        // Slope 0 is a Relu: tract's `max(x, 0)` gives +0 where x ≤ 0 (x·0 would give -0).
        Act::Leaky(0.0) => v = _mm512_max_ps(v, _mm512_setzero_ps()),
        Act::Leaky(alpha) => {
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, _mm512_setzero_ps());
            v = _mm512_mask_blend_ps(positive, _mm512_mul_ps(v, _mm512_set1_ps(alpha)), v);
        }
        Act::Silu => {
            // x / (1 + e^−x): e^−x overflows to +inf below x ≈ −88, giving −0 as x·sigmoid(x)
            // rounds there.
            let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
            v = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e));
        }
        Act::Linear => {}
    }
    v
}

/// Where a step reads and writes: rows `rs` floats apart in the planes and `os` apart in the
/// output, `cols` columns of each, a column's outputs `ps` floats after the previous one's (1
/// for channels-first outputs).
#[derive(Clone, Copy)]
struct Block {
    p: *const f32,
    rs: usize,
    out: *mut f32,
    os: usize,
    cols: usize,
    ps: usize,
}

/// `R` rows of `V` vectors (16·V columns each) of `W` channels: per tap, `R·V` loads at
/// `p + r·rs + tap` and `W` broadcast weights into `W·R·V` accumulators. Arrays of constant size,
/// unrolled, so that the accumulators live in registers (W·R·V ≤ 24).
///
/// # Safety
/// AVX-512F; `p + r·rs + tap + 16·V` readable for every row and tap; `w` holds `taps.len()·W`
/// floats and `bias` `W`; `out + j·n + r·os + i·ps` writable for `j < channels`, `i < cols`;
/// `cols ≤ 16·V`.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const R: usize, const V: usize, const W: usize>(
    b: Block,
    taps: &[usize],
    w: *const f32,
    bias: &[f32],
    act: Act,
    n: usize,
    channels: usize,
) {
    let mut acc = [[[_mm512_setzero_ps(); V]; R]; W];
    for (kk, &t) in taps.iter().enumerate() {
        let mut a = [[_mm512_setzero_ps(); V]; R];
        for (r, a) in a.iter_mut().enumerate() {
            let q = b.p.add(r * b.rs + t);
            for (v, a) in a.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(q.add(v * L));
            }
        }
        let wk = w.add(kk * W);
        for (j, acc) in acc.iter_mut().enumerate() {
            let wj = _mm512_set1_ps(*wk.add(j));
            for (acc, a) in acc.iter_mut().zip(&a) {
                for (acc, a) in acc.iter_mut().zip(a) {
                    *acc = _mm512_fmadd_ps(*a, wj, *acc);
                }
            }
        }
    }
    for (j, acc) in acc.iter().enumerate().take(channels) {
        for (r, acc) in acc.iter().enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                if v * L < b.cols {
                    let dst = b.out.add(j * n + r * b.os + v * L * b.ps);
                    finish(*acc, bias[j], act, dst, b.cols - v * L, b.ps);
                }
            }
        }
    }
}

/// Accumulators a step of `w` channels aims at: 24 of the 32 registers (the rest hold a tap's
/// loads and a weight), or 8 for one channel (a depthwise conv loads once per FMA: 8 chains cover
/// the FMA latency, more only add loads).
fn accumulators(w: usize) -> usize {
    if w == 1 {
        8
    } else {
        24
    }
}

/// How many output rows of `out_w` columns one step of `w` channels takes: enough to fill
/// [`accumulators`] (one where a row alone fills them).
pub(super) fn rows_per_step(out_w: usize, w: usize) -> usize {
    (accumulators(w) / (w * out_w.div_ceil(L).max(1))).max(1)
}

/// `rows` consecutive output rows (`rs` floats apart in the planes; `out_w` columns apart in the
/// output) of one channel tile of `W` channels (six, four or, for a depthwise conv, one): see
/// [`super::Weights::rows`]. `rows` is at most [`rows_per_step`]`(out_w, W)`. A column's outputs
/// are `ps` floats after the previous column's: 1 channels-first; the channel count for a 1x1
/// conv writing channels last (`n` is then 1).
///
/// # Safety
/// AVX-512F; `x + r·rs + tap + 16·⌈out_w / 16⌉` readable for every row and tap; `w` holds
/// `taps.len()·W` floats, `bias` `W`; `out + j·n + (r·out_w + i)·ps` writable for
/// `j < channels`, `i < out_w`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows<const W: usize>(
    x: *const f32,
    rs: usize,
    rows: usize,
    taps: &[usize],
    w: &[f32],
    bias: &[f32],
    act: Act,
    out_w: usize,
    out: *mut f32,
    (n, ps): (usize, usize),
    channels: usize,
) {
    assert!(w.len() >= taps.len() * W && bias.len() >= W && channels <= W && ps >= 1);
    assert!(rows >= 1 && rows <= rows_per_step(out_w, W));
    let w = w.as_ptr();
    // Columns `x0 .. x0 + cols` of row `r`.
    let block = |r: usize, x0: usize, cols: usize| Block {
        p: x.add(r * rs + x0),
        rs,
        out: out.add((r * out_w + x0) * ps),
        os: out_w * ps,
        cols,
        ps,
    };
    let vectors = out_w.div_ceil(L);
    // Several rows per step: the row fits in the vectors of the step's shape.
    macro_rules! by_shape {
        ($(($r:literal, $v:literal)),*) => {
            match (rows, vectors) {
                $(($r, $v) => {
                    return step::<$r, $v, W>(block(0, 0, out_w), taps, w, bias, act, n, channels)
                })*
                _ => {}
            }
        };
    }
    if rows > 1 {
        // Every shape `rows_per_step` gives for one channel (a depthwise conv: the only caller
        // that takes several rows).
        by_shape!(
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 1),
            (6, 1),
            (7, 1),
            (8, 1),
            (2, 2),
            (3, 2),
            (4, 2),
            (2, 3),
            (2, 4)
        );
    }
    // One row at a time: steps of the widest shape that holds 24 accumulators, then one step
    // for the rest.
    let wide = (accumulators(W) / W).clamp(1, 8) * L;
    for r in 0..rows {
        let block = |x0: usize, cols: usize| block(r, x0, cols);
        let mut x0 = 0;
        while out_w - x0 > wide - L {
            let cols = (out_w - x0).min(wide);
            let b = block(x0, cols);
            match wide / L {
                8 => step::<1, 8, W>(b, taps, w, bias, act, n, channels),
                6 => step::<1, 6, W>(b, taps, w, bias, act, n, channels),
                4 => step::<1, 4, W>(b, taps, w, bias, act, n, channels),
                _ => step::<1, 1, W>(b, taps, w, bias, act, n, channels),
            }
            x0 += cols;
        }
        let (b, cols) = (block(x0, out_w - x0), out_w - x0);
        match cols.div_ceil(L) {
            7 => step::<1, 7, W>(b, taps, w, bias, act, n, channels),
            6 => step::<1, 6, W>(b, taps, w, bias, act, n, channels),
            5 => step::<1, 5, W>(b, taps, w, bias, act, n, channels),
            4 => step::<1, 4, W>(b, taps, w, bias, act, n, channels),
            3 => step::<1, 3, W>(b, taps, w, bias, act, n, channels),
            2 => step::<1, 2, W>(b, taps, w, bias, act, n, channels),
            1 => step::<1, 1, W>(b, taps, w, bias, act, n, channels),
            _ => {}
        }
    }
}

/// `V` vectors of outputs at grid positions `f0 ..` ([`Grid`]) of `W` channels: per tap, `V`
/// loads at `x + f0 + tap` and `W` broadcast weights into `W·V` accumulators (≤ 24), summed in tap
/// order as [`step`] does (the same bits); the lanes that are outputs stored compressed.
///
/// # Safety
/// AVX-512F; `x + f0 + tap + 16·V` readable for every tap; `w` holds `taps.len()·W` floats and
/// `bias` `W`; `out + j·n + o` writable for `j < channels` and every output `o` of the lanes.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn grid_step<const V: usize, const W: usize>(
    x: *const f32,
    f0: usize,
    grid: &Grid,
    taps: &[usize],
    (w, bias, act): (*const f32, &[f32], Act),
    (out, n): (*mut f32, usize),
    channels: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; W];
    let p = x.add(f0);
    for (kk, &t) in taps.iter().enumerate() {
        let mut a = [_mm512_setzero_ps(); V];
        for (v, a) in a.iter_mut().enumerate() {
            *a = _mm512_loadu_ps(p.add(t + v * L));
        }
        let wk = w.add(kk * W);
        for (j, acc) in acc.iter_mut().enumerate() {
            let wj = _mm512_set1_ps(*wk.add(j));
            for (acc, a) in acc.iter_mut().zip(&a) {
                *acc = _mm512_fmadd_ps(*a, wj, *acc);
            }
        }
    }
    let mut lanes = [(0u16, 0usize); V];
    for (v, lanes) in lanes.iter_mut().enumerate() {
        *lanes = grid.lanes(f0 + v * L);
    }
    for (j, acc) in acc.iter().enumerate().take(channels) {
        for (acc, &(mask, o)) in acc.iter().zip(&lanes) {
            let dst = out.add(j * n + o);
            let v = activate(*acc, bias[j], act);
            match mask {
                0 => {}
                u16::MAX => _mm512_storeu_ps(dst, v),
                _ => _mm512_mask_compressstoreu_ps(dst as *mut _, mask, v),
            }
        }
    }
}

/// Grid positions `lo .. grid.end` of one tile of `W` channels (six or four), from the planes
/// of [`super::super::grid`]: steps of four vectors, then one of fewer. See [`super::conv`].
///
/// # Safety
/// AVX-512F; `x + f + tap` readable for every tap and every `f` below `grid.end` rounded up to
/// 16 from `lo`; `w` holds `taps.len()·W` floats, `bias` `W`; `out + j·n + o` writable for
/// `j < channels` and the outputs `o` of positions `lo .. grid.end`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn grid_run<const W: usize>(
    x: *const f32,
    (lo, grid): (usize, Grid),
    taps: &[usize],
    (w, bias, act): (&[f32], &[f32], Act),
    out: (*mut f32, usize),
    channels: usize,
) {
    assert!(w.len() >= taps.len() * W && bias.len() >= W && channels <= W);
    let wb = (w.as_ptr(), bias, act);
    let mut f0 = lo;
    while grid.end.saturating_sub(f0) > 3 * L {
        grid_step::<4, W>(x, f0, &grid, taps, wb, out, channels);
        f0 += 4 * L;
    }
    match grid.end.saturating_sub(f0).div_ceil(L) {
        3 => grid_step::<3, W>(x, f0, &grid, taps, wb, out, channels),
        2 => grid_step::<2, W>(x, f0, &grid, taps, wb, out, channels),
        1 => grid_step::<1, W>(x, f0, &grid, taps, wb, out, channels),
        _ => {}
    }
}

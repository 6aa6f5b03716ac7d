//! [`super`]'s kernels on AVX2 and FMA: 8 floats per vector, 16 vector registers.

use super::{Act, COLS};
use std::arch::x86_64::*;

/// `x > 0 ? x : alpha·x` (tract's LeakyRelu) on 8 lanes.
#[inline(always)]
unsafe fn leaky_relu(v: __m256, alpha: __m256) -> __m256 {
    _mm256_blendv_ps(
        _mm256_mul_ps(v, alpha),
        v,
        _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_setzero_ps()),
    )
}

/// Bias, activation and the store of one channel's 16 columns (`lanes` of
/// them kept).
#[inline(always)]
unsafe fn finish((lo, hi): (__m256, __m256), bias: f32, act: Act, dst: *mut f32, lanes: usize) {
    let b = _mm256_set1_ps(bias);
    let (mut lo, mut hi) = (_mm256_add_ps(lo, b), _mm256_add_ps(hi, b));
    match act {
        // Slope 0 is a Relu: tract's `max(x, 0)` gives +0 where x ≤ 0 (x·0 would give -0).
        Act::Leaky(0.0) => {
            let z = _mm256_setzero_ps();
            (lo, hi) = (_mm256_max_ps(lo, z), _mm256_max_ps(hi, z));
        }
        Act::Leaky(alpha) => {
            let a = _mm256_set1_ps(alpha);
            (lo, hi) = (leaky_relu(lo, a), leaky_relu(hi, a));
        }
        // Not planned on AVX2 (`Act::fuses`); element by element, so that it is still right.
        Act::Silu => {
            let mut tmp = [0f32; COLS];
            _mm256_storeu_ps(tmp.as_mut_ptr(), lo);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(8), hi);
            for v in &mut tmp {
                *v /= 1.0 + (-*v).exp();
            }
            (lo, hi) = (
                _mm256_loadu_ps(tmp.as_ptr()),
                _mm256_loadu_ps(tmp.as_ptr().add(8)),
            );
        }
        Act::Linear => {}
    }
    if lanes == COLS {
        _mm256_storeu_ps(dst, lo);
        _mm256_storeu_ps(dst.add(8), hi);
    } else {
        let mut tmp = [0f32; COLS];
        _mm256_storeu_ps(tmp.as_mut_ptr(), lo);
        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), hi);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, lanes);
    }
}

/// One output row of one channel tile of `$width` channels (accumulators `$lo`/`$hi` per
/// channel: columns 0–7 and 8–15): `out_w` columns in steps of 16, each the sum over every
/// tap of two 8-float loads at `x + tap + x0` times the tap's weight of each channel. Named
/// accumulators, not an array, so that they stay in registers.
///
/// # Safety
/// AVX2 and FMA; `x + tap + x0 + 16` within the planes for every tap and step; `w` holds
/// `taps.len()·$width` floats, `bias` `$width`; `out + j·n + out_w` writable for
/// `j < channels`.
macro_rules! row_kernel {
    ($name:ident, $width:expr, $(($j:expr, $lo:ident, $hi:ident)),+) => {
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn $name(
            x: *const f32,
            taps: &[usize],
            w: &[f32],
            bias: &[f32],
            act: Act,
            out_w: usize,
            out: *mut f32,
            n: usize,
            channels: usize,
        ) {
            assert!(w.len() >= taps.len() * $width && bias.len() >= $width);
            let w = w.as_ptr();
            let mut x0 = 0;
            while x0 < out_w {
                let p = x.add(x0);
                $(let (mut $lo, mut $hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());)+
                for (kk, &t) in taps.iter().enumerate() {
                    let a0 = _mm256_loadu_ps(p.add(t));
                    let a1 = _mm256_loadu_ps(p.add(t + 8));
                    let wk = w.add(kk * $width);
                    $(
                        let b = _mm256_broadcast_ss(&*wk.add($j));
                        $lo = _mm256_fmadd_ps(a0, b, $lo);
                        $hi = _mm256_fmadd_ps(a1, b, $hi);
                    )+
                }
                let lanes = COLS.min(out_w - x0);
                $(
                    if $j < channels {
                        finish(($lo, $hi), bias[$j], act, out.add($j * n + x0), lanes);
                    }
                )+
                x0 += COLS;
            }
        }
    };
}

/// One output row of a depthwise conv: 64 columns per step (eight accumulators, so that the
/// FMA units' latency is covered), then 16 at a time.
///
/// # Safety
/// AVX2 and FMA; `x + tap + x0 + 16` within the planes for every tap and every 16-column step
/// up to `row.len()` rounded up to 16; `w` holds `taps.len()` floats.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dw_row(
    x: *const f32,
    taps: &[usize],
    w: &[f32],
    bias: f32,
    act: Act,
    row: &mut [f32],
) {
    assert!(w.len() >= taps.len());
    let out_w = row.len();
    let out = row.as_mut_ptr();
    let mut x0 = 0;
    while x0 + 4 * COLS <= out_w {
        let p = x.add(x0);
        let z = _mm256_setzero_ps();
        let (mut a0, mut a1, mut a2, mut a3) = (z, z, z, z);
        let (mut a4, mut a5, mut a6, mut a7) = (z, z, z, z);
        for (&t, wt) in taps.iter().zip(w) {
            let b = _mm256_broadcast_ss(wt);
            let q = p.add(t);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q), b, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(8)), b, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(16)), b, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(24)), b, a3);
            a4 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(32)), b, a4);
            a5 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(40)), b, a5);
            a6 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(48)), b, a6);
            a7 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(56)), b, a7);
        }
        let o = out.add(x0);
        finish((a0, a1), bias, act, o, COLS);
        finish((a2, a3), bias, act, o.add(16), COLS);
        finish((a4, a5), bias, act, o.add(32), COLS);
        finish((a6, a7), bias, act, o.add(48), COLS);
        x0 += 4 * COLS;
    }
    while x0 < out_w {
        let p = x.add(x0);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for (&t, wt) in taps.iter().zip(w) {
            let b = _mm256_broadcast_ss(wt);
            lo = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(t)), b, lo);
            hi = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(t + 8)), b, hi);
        }
        finish((lo, hi), bias, act, out.add(x0), COLS.min(out_w - x0));
        x0 += COLS;
    }
}

row_kernel!(
    row6,
    6,
    (0, l0, h0),
    (1, l1, h1),
    (2, l2, h2),
    (3, l3, h3),
    (4, l4, h4),
    (5, l5, h5)
);
row_kernel!(row4, 4, (0, l0, h0), (1, l1, h1), (2, l2, h2), (3, l3, h3));

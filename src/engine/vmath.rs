//! Vector math the AVX-512 kernels share: the exponential (softmax in `attention.rs`, the sigmoid of
//! the GELU in `gelu.rs`), and whether the CPU has AVX-512F for them.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this machine has AVX-512F (false off x86-64): the ops built on this file's functions
/// are planned only then.
pub(super) fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `e^x` to about one ulp (Cephes' `expf`: `x = n·ln 2 + r`, a degree-6 polynomial in `r`,
/// `2^n` applied by `vscalefps`). Below −103 the result is 0 (as `e^x` rounds there); NaN stays
/// NaN.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn exp512(x: __m512) -> __m512 {
    // max(c, x) returns x when x is NaN.
    let x = _mm512_max_ps(_mm512_set1_ps(-103.0), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        p,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_scalef_ps(y, n)
}

//! [`super`]'s kernels on AVX-512 with VNNI: `vpdpbusd` multiplies 16 words of four u8 inputs by
//! 16 words of four i8 weights and adds each word's four products to an i32 lane, without the
//! 16-bit saturation of AVX2's `vpmaddubsw`. A word of the planes holds four input channels of
//! one column, so one instruction takes four channels' taps of 16 neighbouring outputs.
//!
//! A step keeps six (or four) output channels × four vectors of 16 outputs in registers, as the
//! f32 kernels of `fdirect/avx512.rs` do: per tap, one load per vector and one broadcast weight
//! word per channel. The 16 outputs of a vector are 16 consecutive positions of the planes' grid
//! (rows `wq` words apart, [`super`]), which crosses output rows: the lanes past a row's last
//! output compute nothing anyone reads and are dropped at the store, which compresses the others
//! together. The accumulators start at the bias and are requantized to 8 bits in registers.

use std::arch::x86_64::*;

use super::super::grid::Grid;

/// Words per vector.
const L: usize = 16;

/// What turns a tile's accumulators into bytes: per channel of the tile its i32 bias and scale,
/// then the output zero point and the output type's bounds (tract's arithmetic: `qconv::requant`).
pub(super) struct Finish<'a> {
    pub bias: &'a [i32],
    pub scale: &'a [f32],
    pub y0: f32,
    pub lo: f32,
    pub hi: f32,
}

/// `round_ties_even(|v|·s)` with `v`'s sign, `+ y0`, clamped to `[lo, hi]`: the bytes of
/// `qconv::requant_channel` (one f32 product, rounding to nearest-even, exact integers after), of
/// the lanes of `acc` in `mask`, stored one after another from `dst`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn finish(acc: __m512i, s: f32, f: &Finish, dst: *mut u8, mask: u16) {
    let sign = _mm512_set1_epi32(i32::MIN);
    let v = _mm512_castps_si512(_mm512_cvtepi32_ps(acc));
    let m = _mm512_mul_ps(
        _mm512_castsi512_ps(_mm512_andnot_si512(sign, v)),
        _mm512_set1_ps(s),
    );
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(m);
    let r = _mm512_or_si512(_mm512_castps_si512(r), _mm512_and_si512(sign, v));
    let r = _mm512_add_ps(_mm512_castsi512_ps(r), _mm512_set1_ps(f.y0));
    let r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(f.lo)), _mm512_set1_ps(f.hi));
    // In [lo, hi] and integral: the conversion is exact, and the low byte is the u8 or i8.
    let q = _mm512_cvttps_epi32(r);
    if mask == u16::MAX {
        _mm512_mask_cvtepi32_storeu_epi8(dst as *mut _, mask, q);
    } else {
        let q = _mm512_maskz_compress_epi32(mask, q);
        let kept = (1u32 << mask.count_ones()) - 1;
        _mm512_mask_cvtepi32_storeu_epi8(dst as *mut _, kept as u16, q);
    }
}

/// `V` vectors of outputs at grid positions `f0 ..` of `W` channels: per tap, `V` loads at
/// `x + f0 + tap` and `W` broadcast weight words into `W·V` accumulators (≤ 24, in registers).
///
/// # Safety
/// AVX-512F and VNNI; `x + f0 + tap + 16·V` words readable for every tap; `w` holds
/// `taps.len()·W` words and `f` `W` channels; `out + j·n + o` writable for `j < channels` and
/// every output `o` of the grid's lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn step<const V: usize, const W: usize>(
    x: *const u32,
    f0: usize,
    grid: &Grid,
    taps: &[usize],
    w: *const u32,
    f: &Finish,
    (out, n): (*mut u8, usize),
    channels: usize,
) {
    let mut acc = [[_mm512_setzero_si512(); V]; W];
    for (j, acc) in acc.iter_mut().enumerate() {
        acc.fill(_mm512_set1_epi32(f.bias[j]));
    }
    let p = x.add(f0);
    for (kk, &t) in taps.iter().enumerate() {
        let mut a = [_mm512_setzero_si512(); V];
        for (v, a) in a.iter_mut().enumerate() {
            *a = _mm512_loadu_si512(p.add(t + v * L) as *const _);
        }
        let wk = w.add(kk * W);
        for (j, acc) in acc.iter_mut().enumerate() {
            let wj = _mm512_set1_epi32(*wk.add(j) as i32);
            for (acc, a) in acc.iter_mut().zip(&a) {
                *acc = _mm512_dpbusd_epi32(*acc, *a, wj);
            }
        }
    }
    let mut lanes = [(0u16, 0usize); V];
    for (v, lanes) in lanes.iter_mut().enumerate() {
        *lanes = grid.lanes(f0 + v * L);
    }
    for (j, acc) in acc.iter().enumerate().take(channels) {
        for (acc, &(mask, o)) in acc.iter().zip(&lanes) {
            if mask != 0 {
                finish(*acc, f.scale[j], f, out.add(j * n + o), mask);
            }
        }
    }
}

/// Grid positions `lo .. grid.end` of one tile of `W` channels (six or four): steps of four
/// vectors, then one of fewer. See [`super::Plan`].
///
/// # Safety
/// AVX-512F and VNNI; `x + f + tap` words readable for every tap and every `f` below `grid.end`
/// rounded up to 16 from `lo`; `w` holds `taps.len()·W` words, `f` `W` channels; `out + j·n + o`
/// writable for `j < channels` and the outputs `o` of positions `lo .. grid.end`.
#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run<const W: usize>(
    x: *const u32,
    (lo, grid): (usize, Grid),
    taps: &[usize],
    w: &[u32],
    f: &Finish,
    out: (*mut u8, usize),
    channels: usize,
) {
    assert!(w.len() >= taps.len() * W && f.bias.len() >= W && f.scale.len() >= W);
    assert!(channels <= W);
    let w = w.as_ptr();
    let mut f0 = lo;
    while grid.end.saturating_sub(f0) > 3 * L {
        step::<4, W>(x, f0, &grid, taps, w, f, out, channels);
        f0 += 4 * L;
    }
    match grid.end.saturating_sub(f0).div_ceil(L) {
        3 => step::<3, W>(x, f0, &grid, taps, w, f, out, channels),
        2 => step::<2, W>(x, f0, &grid, taps, w, f, out, channels),
        1 => step::<1, W>(x, f0, &grid, taps, w, f, out, channels),
        _ => {}
    }
}

/// `out[j]` = the bytes `src[i][j]` of four channels as one word (channel `i` in byte `i`), each
/// byte XOR-ed with `flip`'s. Every `src[i]` holds at least `out.len()` bytes. 64 columns per
/// step: byte and word unpacks interleave them within 128-bit lanes, and a 4x4 transpose of
/// those lanes puts the words in column order (about half the instructions of widening each
/// channel's 16 bytes to words and shifting them into place, which the last columns still do).
///
/// # Safety
/// AVX-512F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn interleave(src: [&[u8]; 4], flip: u32, out: &mut [u32]) {
    let n = out.len();
    assert!(src.iter().all(|s| s.len() >= n));
    let flip_v = _mm512_set1_epi32(flip as i32);
    let o = out.as_mut_ptr();
    let mut j = 0;
    while j + 4 * L <= n {
        let [a, b, c, d] = src.map(|s| _mm512_loadu_si512(s.as_ptr().add(j) as *const _));
        let (ab_lo, ab_hi) = (_mm512_unpacklo_epi8(a, b), _mm512_unpackhi_epi8(a, b));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_epi8(c, d), _mm512_unpackhi_epi8(c, d));
        // 128-bit lane k of q0 holds columns 16k .. 16k + 4, of q1 the next four, and so on.
        let q0 = _mm512_unpacklo_epi16(ab_lo, cd_lo);
        let q1 = _mm512_unpackhi_epi16(ab_lo, cd_lo);
        let q2 = _mm512_unpacklo_epi16(ab_hi, cd_hi);
        let q3 = _mm512_unpackhi_epi16(ab_hi, cd_hi);
        let t0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q0, q1);
        let t1 = _mm512_shuffle_i32x4::<0b01_00_01_00>(q2, q3);
        let t2 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q0, q1);
        let t3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(q2, q3);
        let words = [
            _mm512_shuffle_i32x4::<0b10_00_10_00>(t0, t1),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(t0, t1),
            _mm512_shuffle_i32x4::<0b10_00_10_00>(t2, t3),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(t2, t3),
        ];
        for (v, w) in words.into_iter().enumerate() {
            _mm512_storeu_si512(o.add(j + v * L) as *mut _, _mm512_xor_si512(w, flip_v));
        }
        j += 4 * L;
    }
    let load = |i: usize, j: usize| {
        _mm512_cvtepu8_epi32(_mm_loadu_si128(src[i].as_ptr().add(j) as *const __m128i))
    };
    while j + L <= n {
        let v = _mm512_or_si512(
            _mm512_or_si512(load(0, j), _mm512_slli_epi32::<8>(load(1, j))),
            _mm512_or_si512(
                _mm512_slli_epi32::<16>(load(2, j)),
                _mm512_slli_epi32::<24>(load(3, j)),
            ),
        );
        _mm512_storeu_si512(o.add(j) as *mut _, _mm512_xor_si512(v, flip_v));
        j += L;
    }
    for (j, o) in out.iter_mut().enumerate().skip(j) {
        *o = u32::from_le_bytes([src[0][j], src[1][j], src[2][j], src[3][j]]) ^ flip;
    }
}

//! The fused attention's AVX-512F kernels: six query rows' scores against a slice's key panel,
//! their softmax, and the six rows of `P · V` (see `attention.rs` for the why).

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::vmath::exp512 as exp;
use super::{Geometry, ROWS};

/// Output rows `rows` of one slice: `inputs` are the slice's `Q`, `V` and mask from their first
/// value on, `panel` its keys as `pack_keys` laid them out, `scores` a buffer of this worker's.
///
/// # Safety
/// The CPU has AVX-512F; `out` is the slice's first output value, in a buffer that holds every
/// row of `rows` (`g.out_row` apart, `g.dv` values each) and that no one else writes now; the
/// input slices hold every row `g` says they have.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rows(
    g: &Geometry,
    rows: Range<usize>,
    (q, v, mask): (&[f32], &[f32], Option<&[f32]>),
    panel: &[f32],
    scores: &mut Vec<f32>,
    out: *mut f32,
) {
    let kp = g.keys_padded();
    debug_assert!(panel.len() >= g.d * kp);
    if scores.len() < ROWS * kp {
        scores.resize(ROWS * kp, 0.0);
    }
    let s = scores.as_mut_ptr();
    let mut r0 = rows.start;
    while r0 < rows.end {
        let n = (rows.end - r0).min(ROWS);
        // A block of fewer rows repeats its first: the extra rows' results are not stored.
        let pick = |i: usize| if i < n { i } else { 0 };
        let qrows: [*const f32; ROWS] =
            std::array::from_fn(|i| q.as_ptr().add((r0 + pick(i)) * g.q_row));
        score_rows(g, &qrows, panel.as_ptr(), s);
        let mut inv = [0f32; ROWS];
        for (i, inv) in inv.iter_mut().enumerate().take(n) {
            let m = mask.map(|m| m.as_ptr().add((r0 + i) * g.mask_row));
            *inv = 1.0 / softmax_row(s.add(i * kp), g.keys, m, g.mask_key);
        }
        let prows: [*const f32; ROWS] = std::array::from_fn(|i| s.add(pick(i) * kp) as *const _);
        let mut c = 0;
        while c < g.dv {
            let w = (g.dv - c).min(64);
            let tile = Tile {
                keys: g.keys,
                v: v.as_ptr().add(c),
                v_row: g.v_row,
                width: w,
                out: out.add(r0 * g.out_row + c),
                out_row: g.out_row,
                rows: n,
            };
            match w.div_ceil(16) {
                4 => weighted_tile::<4>(&tile, &prows, &inv),
                3 => weighted_tile::<3>(&tile, &prows, &inv),
                2 => weighted_tile::<2>(&tile, &prows, &inv),
                _ => weighted_tile::<1>(&tile, &prows, &inv),
            }
            c += 64;
        }
        r0 += n;
    }
}

/// `scale · q·kᵀ` for six query rows against every key of the panel (row length `kp`, a whole
/// number of vectors), into six score rows `kp` apart at `s`.
#[inline(always)]
unsafe fn score_rows(g: &Geometry, q: &[*const f32; ROWS], panel: *const f32, s: *mut f32) {
    let kp = g.keys_padded();
    let mut j = 0;
    while j + 64 <= kp {
        score_tile::<4>(g, q, panel.add(j), s.add(j));
        j += 64;
    }
    while j < kp {
        score_tile::<1>(g, q, panel.add(j), s.add(j));
        j += 16;
    }
}

/// Six rows × `V` vectors of keys: each step broadcasts one head value of each query row against
/// `V` vectors of the panel's row for that head value.
#[inline(always)]
unsafe fn score_tile<const V: usize>(
    g: &Geometry,
    q: &[*const f32; ROWS],
    panel: *const f32,
    s: *mut f32,
) {
    let kp = g.keys_padded();
    let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
    for dd in 0..g.d {
        let p = panel.add(dd * kp);
        let b: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(p.add(16 * v)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*q[r].add(dd));
            for (acc, &b) in acc.iter_mut().zip(&b) {
                *acc = _mm512_fmadd_ps(a, b, *acc);
            }
        }
    }
    // Scaled after the sum, as tract's plan and onnxruntime scale the product.
    let scale = _mm512_set1_ps(g.scale);
    for (r, acc) in acc.iter().enumerate() {
        for (v, &acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(s.add(r * kp + 16 * v), _mm512_mul_ps(acc, scale));
        }
    }
}

/// The lanes of the last vector of `n` values (all 16 when `n` is a multiple of 16).
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    match n % 16 {
        0 => 0xffff,
        r => (1u32 << r) as __mmask16 - 1,
    }
}

/// One score row's softmax, unnormalised: the mask added (one value per key when `mask_key` is 1,
/// one for the row when 0), then `exp(x − max)` in place over the `keys` values. Returns the sum
/// of the exponentials.
#[inline(always)]
unsafe fn softmax_row(s: *mut f32, keys: usize, mask: Option<*const f32>, mask_key: usize) -> f32 {
    let full = keys / 16;
    let tail = tail_mask(keys);
    let last = keys.div_ceil(16);
    let lanes = |i: usize| if i == full { tail } else { 0xffff };
    if let Some(m) = mask {
        for i in 0..last {
            let x = _mm512_maskz_loadu_ps(lanes(i), s.add(16 * i));
            let y = if mask_key == 1 {
                _mm512_maskz_loadu_ps(lanes(i), m.add(16 * i))
            } else {
                _mm512_set1_ps(*m)
            };
            _mm512_mask_storeu_ps(s.add(16 * i), lanes(i), _mm512_add_ps(x, y));
        }
    }
    let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in 0..last {
        let x = _mm512_mask_loadu_ps(mx, lanes(i), s.add(16 * i));
        mx = _mm512_max_ps(mx, x);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut sum = _mm512_setzero_ps();
    for i in 0..last {
        let x = _mm512_maskz_loadu_ps(lanes(i), s.add(16 * i));
        let e = exp(_mm512_sub_ps(x, max));
        _mm512_mask_storeu_ps(s.add(16 * i), lanes(i), e);
        sum = _mm512_mask_add_ps(sum, lanes(i), sum, e);
    }
    _mm512_reduce_add_ps(sum)
}

/// One tile of `P · V`: up to 64 columns (`width`) of the value rows from `v`, for the block's
/// rows (`rows` of six stored).
struct Tile {
    keys: usize,
    v: *const f32,
    v_row: usize,
    width: usize,
    out: *mut f32,
    out_row: usize,
    rows: usize,
}

/// Six rows × `V` vectors of output columns: each step broadcasts one key's weight in each row
/// against `V` vectors of that key's value row; each row is divided by its sum at the store.
#[inline(always)]
unsafe fn weighted_tile<const V: usize>(t: &Tile, p: &[*const f32; ROWS], inv: &[f32; ROWS]) {
    let lanes: [__mmask16; V] = std::array::from_fn(|i| {
        if i + 1 == V {
            tail_mask(t.width)
        } else {
            0xffff
        }
    });
    let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
    for j in 0..t.keys {
        let row = t.v.add(j * t.v_row);
        let b: [__m512; V] =
            std::array::from_fn(|i| _mm512_maskz_loadu_ps(lanes[i], row.add(16 * i)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*p[r].add(j));
            for (acc, &b) in acc.iter_mut().zip(&b) {
                *acc = _mm512_fmadd_ps(a, b, *acc);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(t.rows) {
        let s = _mm512_set1_ps(inv[r]);
        for (i, &acc) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(
                t.out.add(r * t.out_row + 16 * i),
                lanes[i],
                _mm512_mul_ps(acc, s),
            );
        }
    }
}

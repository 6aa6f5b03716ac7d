//! [`super::QMatMul`]'s products of several activation rows on AVX-512 VNNI
//! ([`super::ManyRows::Vnni`]), with the zero-point compensation in the epilogue.
//!
//! Why: on x86 with VNNI these products ran tract's own plan (an activation packing node, the
//! `avx512vnni_mmm_i32_16x16` kernel, then the compensation and scale nodes): in a profile of
//! SmolVLM-256M's int8 vision encoder (Zen 5, 1 thread) its 73 int8 products took 421 ms and their
//! packing 48 ms, against onnxruntime's whole encoder in 605 ms.
//!
//! Here the activation is read in place. A `vpdpbusd` multiplies a broadcast word of four
//! consecutive bytes of one activation row (u8; i8 activations flipped to u8, as the one-row
//! kernels do) by 16 words of four weight bytes, one word per output column, and adds each
//! word's four products to that column's i32 lane: the weight is packed at load in blocks of 64
//! columns, four k at a time. A step keeps six rows × four vectors (64 columns) of accumulators:
//! per four k, four weight loads and six broadcasts for 24 dot products. The sums are exactly
//! [`super::gemv`]'s (`Σ xu·wt`, in i32), compensated by the same formula, so the output is
//! tract's (tests below and `tests/engine_qmatmul.rs`).
//!
//! The epilogue works on the registers: compensation, then (for a product whose `Cast → Mul` is
//! fused) conversion to f32 and the scale, stored with a lane mask. It used to go through a tile
//! and a per-value closure: in SmolVLM's int8 prefill (78 tokens, 1 thread) that scalar loop was
//! as long as the dot products; with it in registers the 211 products took 26.8–27.0 ms instead
//! of 38.4–39.4 (`qmatmul_profile`, two binaries, two rounds).

use std::arch::x86_64::*;

use super::super::par::SharedOut;
use super::formula::{column_terms, row_sum};
use super::{Out, Packed};

/// Columns per block (four vectors of 16).
const NB: usize = 64;
/// Rows per step.
const MR: usize = 6;
/// Rows per unit of work (shared over the pool with the column blocks).
const ROWS_PER_UNIT: usize = 48;

/// The weight as the kernel reads it: per block of 64 columns, per four k, 64 words (a column's
/// four i8 of the stored, shifted weight `wt`), zero past `n`.
#[derive(Debug)]
pub(super) struct Weights {
    words: Vec<u32>,
    /// k / 4 (k is a multiple of 4: [`super::plan`] checks it).
    k4: usize,
}

impl Weights {
    /// From `wt(j, kk)`, the stored weight of column `j` at depth `kk` (`n` columns, `k` deep).
    pub(super) fn pack(n: usize, k: usize, wt: impl Fn(usize, usize) -> i8) -> Weights {
        assert!(k.is_multiple_of(4));
        let k4 = k / 4;
        let blocks = n.div_ceil(NB);
        let mut words = vec![0u32; blocks * k4 * NB];
        for b in 0..blocks {
            for q in 0..k4 {
                for c in 0..NB {
                    let j = b * NB + c;
                    if j < n {
                        let bytes: [u8; 4] = std::array::from_fn(|i| wt(j, 4 * q + i) as u8);
                        words[(b * k4 + q) * NB + c] = u32::from_le_bytes(bytes);
                    }
                }
            }
        }
        Weights { words, k4 }
    }
}

/// Whether the CPU runs the kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
}

/// Where a step's sums go: the output's first value and its row length, as i32 or as f32 times
/// the scale (one value, or one per column).
#[derive(Clone, Copy)]
enum Dest<'a> {
    I32(SharedOut<i32>),
    Scaled(SharedOut<f32>, &'a [f32]),
}

/// The product of the activation rows `xs` (`rows × k` bytes) into `out` (`rows × n`), each sum
/// `y` the i32 of [`super::gemv`]'s formula.
pub(super) fn gemm(
    p: &Packed,
    w: &Weights,
    xs: &[u8],
    rows: usize,
    signed: bool,
    x0: i32,
    out: Out,
) {
    let (k, n) = (p.k, p.n);
    assert!(available() && k == 4 * w.k4 && xs.len() >= rows * k);
    let dest = match out {
        Out::I32(ys) => {
            assert!(ys.len() >= rows * n);
            Dest::I32(SharedOut::new(ys))
        }
        Out::Scaled(os, scale) => {
            assert!(os.len() >= rows * n && (scale.len() == 1 || scale.len() == n));
            Dest::Scaled(SharedOut::new(os), scale)
        }
    };
    let xoff = if signed { 128 } else { 0 };
    // The kernel's sums are Σ xu·wt itself; `c` and `d` are padded to whole column blocks.
    let (c, d) = column_terms(p, n.div_ceil(NB) * NB, |_| 0, xoff, x0);
    let sx: Vec<i32> = xs[..rows * k]
        .chunks_exact(k)
        .map(|row| row_sum(row, signed))
        .collect();
    let blocks = n.div_ceil(NB);
    let units = rows.div_ceil(ROWS_PER_UNIT) * blocks;
    super::super::par::for_each_range(
        units,
        || (),
        |units, _| {
            for u in units {
                let (g, b) = (u / blocks, u % blocks);
                let r_end = ((g + 1) * ROWS_PER_UNIT).min(rows);
                let mut r0 = g * ROWS_PER_UNIT;
                let j0 = b * NB;
                let wb = &w.words[b * w.k4 * NB..][..w.k4 * NB];
                while r0 < r_end {
                    let mr = (r_end - r0).min(MR);
                    let x = &xs[r0 * k..][..mr * k];
                    let at = Block {
                        j0,
                        width: (n - j0).min(NB),
                        first: r0 * n + j0,
                        n,
                    };
                    // SAFETY: the CPU runs the kernel (asserted); `x` holds `mr` rows of `k`
                    // bytes, `wb` the block's `k4·64` words, `c`/`d` 64 values from `j0`; units
                    // write disjoint (rows, column block) pieces of the output, which holds
                    // rows·n values (asserted), and (r0 + mr − 1)·n + j0 + width ≤ rows·n.
                    unsafe {
                        step(
                            x,
                            (mr, k, signed),
                            wb,
                            (&c[j0..j0 + NB], &d[j0..j0 + NB], &sx[r0..r0 + mr]),
                            dest,
                            at,
                        )
                    };
                    r0 += mr;
                }
            }
        },
    );
}

/// Where one step's tile lands: its first column, how many of its 64 columns exist, the offset
/// of its first value in the output and the output's row length.
#[derive(Clone, Copy)]
struct Block {
    j0: usize,
    width: usize,
    first: usize,
    n: usize,
}

/// The compensated sums of rows `r < mr` of `x` (`k` bytes each) and the block's 64 columns,
/// written to `dest` at `at`.
///
/// # Safety
/// AVX-512F and VNNI; `x` holds `mr ≤ 6` rows of `k` bytes, `wb` `k/4 · 64` words; `dest` holds
/// the tile's rows and columns at `at`, and no one else writes them now.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn step(
    x: &[u8],
    (mr, k, signed): (usize, usize, bool),
    wb: &[u32],
    terms: (&[i32], &[i32], &[i32]),
    dest: Dest,
    at: Block,
) {
    macro_rules! go {
        ($r:literal) => {
            if signed {
                rows::<$r, true>(x, k, wb, terms, dest, at)
            } else {
                rows::<$r, false>(x, k, wb, terms, dest, at)
            }
        };
    }
    match mr {
        6 => go!(6),
        5 => go!(5),
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        _ => go!(1),
    }
}

/// [`step`] for `R` rows: `R × 4` accumulators in registers. An i8 activation (`SIGNED`) is
/// flipped to u8 after its broadcast; a u8 one is broadcast straight from memory.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn rows<const R: usize, const SIGNED: bool>(
    x: &[u8],
    k: usize,
    wb: &[u32],
    (c, d, sx): (&[i32], &[i32], &[i32]),
    dest: Dest,
    at: Block,
) {
    const V: usize = NB / 16;
    assert!(x.len() >= R * k && wb.len() >= k / 4 * NB && c.len() >= NB && d.len() >= NB);
    let mut acc = [[_mm512_setzero_si512(); V]; R];
    let (xp, wp) = (x.as_ptr(), wb.as_ptr());
    let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
    for q in 0..k / 4 {
        let mut wv = [_mm512_setzero_si512(); V];
        for (v, wv) in wv.iter_mut().enumerate() {
            *wv = _mm512_loadu_si512(wp.add(q * NB + v * 16) as *const _);
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            let word = (xp.add(r * k + 4 * q) as *const i32).read_unaligned();
            let mut xb = _mm512_set1_epi32(word);
            if SIGNED {
                xb = _mm512_xor_si512(xb, flip);
            }
            for (acc, wv) in acc.iter_mut().zip(&wv) {
                *acc = _mm512_dpbusd_epi32(*acc, xb, *wv);
            }
        }
    }
    // The lanes of each vector that are columns of the output.
    let lanes: [__mmask16; V] = std::array::from_fn(|v| {
        let have = at.width.saturating_sub(16 * v).min(16);
        ((1u32 << have) - 1) as __mmask16
    });
    for (r, acc) in acc.iter().enumerate() {
        let s = _mm512_set1_epi32(sx[r]);
        for (v, acc) in acc.iter().enumerate() {
            let cv = _mm512_loadu_si512(c.as_ptr().add(v * 16) as *const _);
            let dv = _mm512_loadu_si512(d.as_ptr().add(v * 16) as *const _);
            let y = _mm512_add_epi32(_mm512_add_epi32(*acc, cv), _mm512_mullo_epi32(dv, s));
            let off = at.first + r * at.n + 16 * v;
            match dest {
                Dest::I32(out) => _mm512_mask_storeu_epi32(out.at(off) as *mut _, lanes[v], y),
                Dest::Scaled(out, scale) => {
                    // `y as f32 · scale`: two roundings, as tract's Cast then Mul.
                    let sv = if scale.len() == 1 {
                        _mm512_set1_ps(scale[0])
                    } else {
                        _mm512_maskz_loadu_ps(lanes[v], scale.as_ptr().add(at.j0 + 16 * v))
                    };
                    let f = _mm512_mul_ps(_mm512_cvtepi32_ps(y), sv);
                    _mm512_mask_storeu_ps(out.at(off), lanes[v], f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_rows;
    use super::*;

    /// The several-row product on the VNNI kernel against the formula's definition
    /// (`check_rows`): row counts that fill no step, one, several units and a part of one; column
    /// counts within one vector, one block and several; both epilogues (i32, scaled f32).
    #[test]
    fn vnni_rows_equal_definition() {
        if !available() {
            eprintln!("SKIP: no AVX-512 VNNI");
            return;
        }
        let shapes = [(2, 4, 1), (6, 16, 5), (53, 48, 70), (101, 100, 131)];
        check_rows(&shapes, |p, w, w_signed, x, x_signed, rows, x0| {
            let wv = Weights::pack(p.n, p.k, |j, kk| {
                let b = w[kk * p.n + j];
                if w_signed {
                    b as i8
                } else {
                    (b ^ 0x80) as i8
                }
            });
            let mut ys = vec![0; rows * p.n];
            gemm(p, &wv, x, rows, x_signed, x0, Out::I32(&mut ys));
            // The scaled epilogue: each sum as f32 times its column's scale, or one scale, with
            // the bits of the scalar `y as f32 · s`.
            let per_column: Vec<f32> = (0..p.n).map(|j| 0.013 + j as f32 * 1e-3).collect();
            for scale in [&per_column[..], &[0.37f32][..]] {
                let mut fs = vec![0f32; rows * p.n];
                gemm(p, &wv, x, rows, x_signed, x0, Out::Scaled(&mut fs, scale));
                for (i, (&f, &y)) in fs.iter().zip(&ys).enumerate() {
                    let s = scale[if scale.len() == 1 { 0 } else { i % p.n }];
                    assert_eq!(f.to_bits(), (y as f32 * s).to_bits(), "#{i}");
                }
            }
            ys
        });
    }
}

//! [`super::qconv::QConv`]'s product on x86 CPUs that have AVX2 but neither VNNI nor AMX (AMD Zen
//! 1–3, Intel before Ice Lake): lookout's own int8 kernel, with the requantization in the same
//! pass.
//!
//! Why not tract's kernel there: tract 0.23.9 picks `avx2_mmm_i32_8x8`, whose int8 loop reads each
//! A column with a legacy-SSE `movq` while the upper halves of the ymm registers are in use. On a
//! 2-core AMD EPYC VM (2026-12-06) that instruction cost about 110 ns every time (a two-instruction
//! loop measured 112.8 ns per iteration with `movq`, 0.58 ns with `vmovq`), so nanodet-g-int8-qdq
//! took 4.0 s per image at 1 thread, 45× its fp32 model: 99 % of it in that kernel's loads
//! (`perf annotate`). Even without the stall, that loop widens every byte to i32 and spends ~40
//! instructions on 64 products.
//!
//! This kernel multiplies a 16-column panel of the packed im2col (tract's `PackedI8K4` layout with
//! `r` = 16, [`super::im2col::for_each_panel16`], k in groups of four) by two output channels at a
//! time, whose weights were widened to i16 once at load ([`Weights`]): per four k, four
//! `vpmovsxbw` loads of the panel (four columns × four k each), one 64-bit broadcast per channel,
//! and `vpmaddwd` (exact: i8·i8 products summed in pairs cannot overflow i32) — 128 products in 20
//! vector operations. The pair sums are added once per tile (`vphaddd`), then bias, scale, rounding
//! and clamping as [`super::qconv`]'s requantization does them (same operations, same bytes), and
//! each channel's 16 output bytes are stored where they belong: one parallel section per conv
//! (packing, product and requantization of a panel together, while the panel is in the
//! first-level cache) instead of three.

// Off x86 the kernel is never planned ([`available`] is false): its types are built but not read.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

/// Output channels per kernel step (two: 8 accumulators, 4 panel registers and a broadcast fit the
/// 16 ymm registers; three spilled and were 25 % slower on nanodet-g-int8-qdq). The kernel loop is
/// written for two.
const NR: usize = 2;

/// Weights `[c_out][k]` (zero point subtracted, in i8's range) as the kernel reads them: channels
/// in pairs, k in groups of four, i16: pair `p`, group `q`, channel `j`, `k % 4` at
/// `((p·kq + q)·NR + j)·4 + k % 4`. Missing channels and the k past `k` are zero.
#[derive(Debug, Clone)]
pub(super) struct Weights {
    w: Vec<i16>,
    c_out: usize,
    /// Groups of four k.
    kq: usize,
}

impl Weights {
    pub(super) fn pack(w: &[i32], c_out: usize, k: usize) -> Weights {
        Weights::pack_with(c_out, k, |c, kk| w[c * k + kk] as i16)
    }

    /// [`Weights::pack`] from any source: `get(c, kk)` is channel `c`'s weight `kk`.
    pub(super) fn pack_with(c_out: usize, k: usize, get: impl Fn(usize, usize) -> i16) -> Weights {
        let kq = k.div_ceil(4);
        let mut data = vec![0i16; c_out.div_ceil(NR) * kq * NR * 4];
        for c in 0..c_out {
            let (p, j) = (c / NR, c % NR);
            for kk in 0..k {
                data[((p * kq + kk / 4) * NR + j) * 4 + kk % 4] = get(c, kk);
            }
        }
        Weights { w: data, c_out, kq }
    }

    /// Bytes of packed im2col one panel must hold.
    pub(super) fn panel_len(&self) -> usize {
        self.kq * 64
    }
}

/// Per output channel: what requantization needs (see [`super::qconv`]'s module doc).
pub(super) struct Requant<'a> {
    /// Bias plus the input zero-point fold.
    pub bias: &'a [i32],
    /// `k_scale · x_scale / y_scale`.
    pub scale: &'a [f32],
    pub y0: i32,
    /// Output bytes are i8 (else u8).
    pub signed: bool,
}

/// The conv's output, `[c_out][n]` bytes, written by several panels at once: each writes only its
/// own columns of every channel.
pub(super) struct Output {
    ptr: *mut u8,
    len: usize,
    n: usize,
}

// SAFETY: the panels of one conv write disjoint columns (see `Output::new`'s callers).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    pub(super) fn new(out: &mut [u8], n: usize) -> Output {
        Output {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            n,
        }
    }
}

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which int8 kernel QConv and QMatMul run: `tract` (tract's choice, always) or `avx2`
/// (this module's wherever the CPU has AVX2); unset, this kernel replaces tract's AVX2 and AVX
/// int8 kernels (`avx2_mmm_i32_8x8`, `avx_mmm_i32_8x4`) and nothing else, and QConv runs its
/// convs on [`super::qdirect`]'s direct kernels where the CPU has AVX-512 VNNI. For A/B runs and
/// for tests that check them all on one machine; read when a plan is made.
pub const I8_KERNEL_ENV: &str = "LOOKOUT_I8_KERNEL";

/// Whether to run this kernel where tract would run `tract_kernel` ([`I8_KERNEL_ENV`]).
pub(super) fn replaces(tract_kernel: &str) -> bool {
    if !available() {
        return false;
    }
    match std::env::var(I8_KERNEL_ENV).as_deref() {
        Ok("tract") => false,
        Ok("avx2") => true,
        _ => matches!(tract_kernel, "avx2_mmm_i32_8x8" | "avx_mmm_i32_8x4"),
    }
}

/// Whether plans made now run lookout's AVX-512 VNNI int8 kernels (QConv's direct conv, QMatMul's
/// several-row products): where the CPU has AVX-512 F, BW and VNNI, unless [`I8_KERNEL_ENV`] names
/// another kernel (`tract` or `avx2`).
pub(super) fn vnni_chosen() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512f")
            && has!("avx512bw")
            && has!("avx512vnni")
            && !matches!(
                std::env::var(I8_KERNEL_ENV).as_deref(),
                Ok("tract") | Ok("avx2")
            )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether lookout's own int8 kernels (AVX2, or AVX-512 VNNI) run QMatMul's several-row products
/// on this machine ([`I8_KERNEL_ENV`] as now set).
pub fn own_int8_gemm() -> bool {
    own_int8_kernel() || vnni_chosen()
}

/// Whether lookout's AVX2 int8 kernel runs this machine's int8 products (QConv, and QMatMul's
/// several-row products) in place of tract's ([`I8_KERNEL_ENV`] as now set).
pub fn own_int8_kernel() -> bool {
    replaces_at(64)
}

/// Whether this kernel runs int8 products of depth `k` where tract would run its pick.
pub(super) fn replaces_at(k: usize) -> bool {
    tract_pick(None, k, None).is_some_and(|(mmm, _)| replaces(mmm.name()))
}

/// The int8 kernel tract picks for an `m × k × n` product (i8 × i8 → i32, the query of tract's
/// own quantized conv), and its packing.
pub(super) fn tract_pick(
    m: Option<usize>,
    k: usize,
    n: Option<usize>,
) -> Option<(Box<dyn tract_linalg::mmm::MatMatMul>, usize)> {
    use tract_core::internal::*;
    let query = tract_linalg::mmm::Query {
        weight: i8::datum_type().into(),
        activation: i8::datum_type(),
        accumulators: tvec!(i32::datum_type()),
        store: None,
        allow_extractor: false,
        m,
        k: Some(k),
        n,
    };
    tract_linalg::MmmDispatch::native()
        .pick(&query)
        .map(|(mmm, packing, _)| (mmm, packing))
}

/// Multiplies one packed 16-column panel (`panel_len` bytes) by every channel's weights and stores
/// the requantized bytes of columns `col0 .. col0 + lanes` of every channel into `out`.
///
/// # Safety
/// The CPU has AVX2 ([`available`]); no other call writes these columns of `out` meanwhile.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn panel(
    panel: &[u8],
    w: &Weights,
    rq: &Requant,
    col0: usize,
    lanes: usize,
    out: &Output,
) {
    assert!(
        panel.len() >= w.panel_len()
            && lanes <= 16
            && col0 + lanes <= out.n
            && rq.bias.len() >= w.c_out
            && rq.scale.len() >= w.c_out
            && w.c_out * out.n <= out.len
    );
    // SAFETY: AVX2 is the caller's promise; the reads and writes are within the bounds above.
    unsafe { x86::panel(panel, w, rq, col0, lanes, out) }
}

/// The plain products of one packed 16-column panel with every channel: `out[c][col]` = Σ_k
/// panel column `col` · channel `c` (all 16 columns; those past the data are the padding's).
///
/// # Safety
/// The CPU has AVX2 ([`available`]).
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn sums(panel: &[u8], w: &Weights, out: &mut [[i32; 16]]) {
    assert!(panel.len() >= w.panel_len() && out.len() >= w.c_out);
    // SAFETY: AVX2 is the caller's promise; the reads and writes are within the bounds above.
    unsafe { x86::sums(panel, w, out) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Output, Requant, Weights, NR};
    use std::arch::x86_64::*;

    /// The kernel's loop: for every channel `c` of `$w`, the 16 sums of the panel `$panel` ·
    /// channel `c` as two vectors (columns 0–7 and 8–15), handed to `$each(c, c0_7, c8_15)`. A
    /// macro so that each caller's epilogue is compiled into its own AVX2 function, not called.
    macro_rules! for_each_channel {
        ($panel:expr, $w:expr, |$c:ident, $lo8:ident, $hi8:ident| $each:block) => {{
            let (w, kq) = ($w, $w.kq);
            let x = $panel.as_ptr();
            for p in 0..w.c_out.div_ceil(NR) {
                let wp = w.w.as_ptr().add(p * kq * NR * 4);
                // Channel j (of the pair), columns 4i .. 4i+4: acc_j_i, two pair sums per column.
                // Named, not an array: so that the accumulators stay in registers at the dev
                // profile's opt-level 1 too (an array lived in memory there, 4× slower).
                let z = _mm256_setzero_si256();
                let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
                let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
                let mut q = 0;
                while q < kq {
                    let xq = x.add(q * 64) as *const __m128i;
                    let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(xq));
                    let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(xq.add(1)));
                    let a2 = _mm256_cvtepi8_epi16(_mm_loadu_si128(xq.add(2)));
                    let a3 = _mm256_cvtepi8_epi16(_mm_loadu_si128(xq.add(3)));
                    let wq = wp.add(q * NR * 4) as *const i64;
                    let b = _mm256_set1_epi64x(wq.read_unaligned());
                    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(a0, b));
                    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(a1, b));
                    c02 = _mm256_add_epi32(c02, _mm256_madd_epi16(a2, b));
                    c03 = _mm256_add_epi32(c03, _mm256_madd_epi16(a3, b));
                    let b = _mm256_set1_epi64x(wq.add(1).read_unaligned());
                    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(a0, b));
                    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(a1, b));
                    c12 = _mm256_add_epi32(c12, _mm256_madd_epi16(a2, b));
                    c13 = _mm256_add_epi32(c13, _mm256_madd_epi16(a3, b));
                    q += 1;
                }
                for (j, acc) in [[c00, c01, c02, c03], [c10, c11, c12, c13]]
                    .iter()
                    .enumerate()
                {
                    let $c = p * NR + j;
                    if $c >= w.c_out {
                        break;
                    }
                    // hadd of columns 0-3 and 4-7: [0 1 4 5 | 2 3 6 7]; the permute orders them.
                    let $lo8 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[0], acc[1]), 0xD8);
                    let $hi8 = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[2], acc[3]), 0xD8);
                    $each
                }
            }
        }};
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn panel(
        panel: &[u8],
        w: &Weights,
        rq: &Requant,
        col0: usize,
        lanes: usize,
        out: &Output,
    ) {
        let (lo, hi) = if rq.signed { (-128, 127) } else { (0, 255) };
        for_each_channel!(panel, w, |c, c0_7, c8_15| {
            let bytes = requant16(
                c0_7,
                c8_15,
                rq.bias[c],
                rq.scale[c],
                rq.y0,
                lo,
                hi,
                rq.signed,
            );
            let dst = out.ptr.add(c * out.n + col0);
            if lanes == 16 {
                _mm_storeu_si128(dst as *mut __m128i, bytes);
            } else {
                let mut tmp = [0u8; 16];
                _mm_storeu_si128(tmp.as_mut_ptr() as *mut __m128i, bytes);
                std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, lanes);
            }
        });
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sums(panel: &[u8], w: &Weights, out: &mut [[i32; 16]]) {
        for_each_channel!(panel, w, |c, c0_7, c8_15| {
            let o = out[c].as_mut_ptr() as *mut __m256i;
            _mm256_storeu_si256(o, c0_7);
            _mm256_storeu_si256(o.add(1), c8_15);
        });
    }

    /// `qconv::requant_channel` on 16 accumulators: `(acc + bias)` as f32 times the scale,
    /// rounded half to even (the default MXCSR mode, as `round_ties_even(|v|)·sign`), plus the
    /// output zero point, clamped, as 16 bytes. The clamp to ±1e9 before the conversion only keeps
    /// an out-of-range product from wrapping (it clamps to the same byte either way).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn requant16(
        c0_7: __m256i,
        c8_15: __m256i,
        bias: i32,
        scale: f32,
        y0: i32,
        lo: i32,
        hi: i32,
        signed: bool,
    ) -> __m128i {
        let (b, s, lim) = (
            _mm256_set1_epi32(bias),
            _mm256_set1_ps(scale),
            _mm256_set1_ps(1e9),
        );
        let (y0, lo, hi) = (
            _mm256_set1_epi32(y0),
            _mm256_set1_epi32(lo),
            _mm256_set1_epi32(hi),
        );
        let q = |acc: __m256i| {
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, b)), s);
            let v = _mm256_max_ps(
                _mm256_min_ps(v, lim),
                _mm256_sub_ps(_mm256_setzero_ps(), lim),
            );
            let v = _mm256_add_epi32(_mm256_cvtps_epi32(v), y0);
            _mm256_min_epi32(_mm256_max_epi32(v, lo), hi)
        };
        // packs: [0-3 8-11 | 4-7 12-15] as i16; the permute puts them in order.
        let w = _mm256_permute4x64_epi64(_mm256_packs_epi32(q(c0_7), q(c8_15)), 0xD8);
        let (l, h) = (_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        if signed {
            _mm_packs_epi16(l, h)
        } else {
            _mm_packus_epi16(l, h)
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    /// The kernel's bytes equal `qconv::requant_channel` of the plain i32 product, for channel
    /// counts with and without a missing pair member, k with and without a partial group of four,
    /// short last panels, both output signs, and extreme values (±128 on both sides).
    #[test]
    fn panel_equals_the_scalar_product_and_requantization() {
        if !available() {
            eprintln!("skipped: no AVX2");
            return;
        }
        let mut seed = 7u64;
        for (c_out, k, lanes, signed, extreme) in [
            // (channels, k, columns, signed output, only ±128 / 127 values)
            (4usize, 8usize, 16usize, false, false),
            (5, 27, 16, true, false),
            (3, 9, 7, false, true),
            (16, 1152, 16, false, false),
            (1, 1, 1, true, true),
            (7, 130, 13, true, false),
        ] {
            let kq = k.div_ceil(4);
            let val = |seed: &mut u64| -> i32 {
                if extreme {
                    if lcg(seed).is_multiple_of(2) {
                        -128
                    } else {
                        127
                    }
                } else {
                    (lcg(seed) % 256) as i32 - 128
                }
            };
            let w: Vec<i32> = (0..c_out * k).map(|_| val(&mut seed)).collect();
            // x[col][kk] as i8; packed K4 with r = 16: (kk/4)·64 + col·4 + kk%4.
            let x: Vec<Vec<i8>> = (0..lanes)
                .map(|_| (0..k).map(|_| val(&mut seed) as i8).collect())
                .collect();
            let mut packed = vec![0u8; kq * 64];
            for (col, xs) in x.iter().enumerate() {
                for (kk, v) in xs.iter().enumerate() {
                    packed[(kk / 4) * 64 + col * 4 + kk % 4] = *v as u8;
                }
            }
            let bias: Vec<i32> = (0..c_out).map(|_| lcg(&mut seed) as i32 % 5000).collect();
            let scale: Vec<f32> = (0..c_out)
                .map(|_| (lcg(&mut seed) % 1000 + 1) as f32 * if extreme { 1e-3 } else { 2e-5 })
                .collect();
            let y0 = if signed { -3 } else { 120 };
            let rq = Requant {
                bias: &bias,
                scale: &scale,
                y0,
                signed,
            };
            let n = lanes + 5;
            let col0 = 3;
            let mut got = vec![0xAAu8; c_out * n];
            let weights = Weights::pack(&w, c_out, k);
            unsafe {
                panel(
                    &packed,
                    &weights,
                    &rq,
                    col0,
                    lanes,
                    &Output::new(&mut got, n),
                )
            };
            for c in 0..c_out {
                let acc: Vec<i32> = x
                    .iter()
                    .map(|xs| {
                        let dot: i32 = xs
                            .iter()
                            .zip(&w[c * k..][..k])
                            .map(|(a, b)| *a as i32 * b)
                            .sum();
                        dot.wrapping_add(bias[c])
                    })
                    .collect();
                let mut want = vec![0u8; lanes];
                super::super::qconv::requant_channel(&acc, scale[c], y0 as f32, signed, &mut want);
                let row = &got[c * n..][..n];
                assert_eq!(
                    &row[col0..col0 + lanes],
                    &want[..],
                    "c_out {c_out} k {k} channel {c}"
                );
                assert!(
                    row[..col0]
                        .iter()
                        .chain(&row[col0 + lanes..])
                        .all(|b| *b == 0xAA),
                    "wrote outside its columns"
                );
            }
        }
    }
}

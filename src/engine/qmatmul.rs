//! `QMatMul`: onnxruntime's dynamically quantised MatMul with a constant weight —
//! `MatMulInteger(x_q, W_q, x_zp, w_zp) → Cast(f32) → Mul(x_scale · w_scale)` — as one op, with the
//! weight packed at load and an int8 matrix-vector kernel for a decoder's one-token rows.
//!
//! Why: tract lowers each such MatMul into an integer einsum plus, per call, an activation packing
//! node, zero-point compensation nodes, the i32 → f32 `Cast` and the scale `Mul`; with one activation
//! row that work around the kernel costs as much as the product. (The brief's first suspect, 8×8
//! int8 tiles padding a one-row product, is not what costs on x86 with VNNI: tract 0.23.9 picks VNNI
//! kernels there and its lm_head product runs at about memory bandwidth; other CPUs: not measured.)
//!
//! What it computes, exactly as tract's einsum does, in i32 (exact: `255 · 128 · k` stays far below
//! 2^31 for the VLMs' k ≤ 4096, and tract's i32 accumulation is just as exact):
//! `y[r, j] = Σ_k (x[r, k] − x0) · (W[k, j] − w0[j])`
//! `       = Σ x·W − w0[j] · Σ_k x[r, k] − x0 · colsum[j] + k · x0 · w0[j]`,
//! then, when the `Cast → Mul` behind has no other use, `y as f32 · scale[j]`: the same two roundings
//! as tract's nodes, so the output is bit-identical to tract's plan (tests/engine_qmatmul.rs). The
//! activation quantisation in front (`DynamicQuantizeLinear`, shared by the q, k and v projections)
//! stays tract's (or `FastDynQuantize`).
//!
//! The weight is stored transposed (`[n][k]`, k padded to 32) as i8: u8 weights are shifted by −128
//! at load and `128 · Σ x` added back, so one kernel (u8 activation · i8 weight) serves both; an i8
//! activation is flipped to u8 and `128 · Σ w` taken off. Kernels: x86-64 `vpdpbusd` (AVX-VNNI or
//! AVX-512 VNNI), else AVX2 (`vpmaddwd` on values widened to i16, exact); aarch64 NEON (`vmovl` +
//! `vmlal_s16`); a portable loop. Output columns are split over tract's thread pool when the plan runs
//! with several threads and the product is large. Skipped under `LOOKOUT_PLAIN_TRACT=1` or
//! `LOOKOUT_NO_QMATMUL=1` (an A/B of this pass alone).
//!
//! Several rows (a vision encoder's 1 024 patch tokens, a decoder's prompt) run lookout's own
//! int8 kernels where the CPU suits them: AVX-512 VNNI (`qmatmul/vnni.rs`, the activation read in
//! place) or, on x86 without VNNI, AVX2 (`qmatmul/rows.rs`). Elsewhere only an activation that can
//! have one row is taken: a product known at load to have several stays tract's, whose whole plan
//! also fuses the bias `Add` behind; and a decoder's row count is a symbol (the prompt, then one
//! token), so for several rows at run time the op runs tract's own plan of the same product (einsum
//! → Cast → Mul), built at load from the same constants — which holds each weight twice (+115–220 MB
//! peak RSS on SmolVLM-256M and Florence-2-base int8; benches/VLM_SMOLVLM.md, VLM_FLORENCE2.md).

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cast::Cast;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::einsum::EinSum;

use super::i8gemm;
use super::par::SharedOut;
use super::pass::{env_off, GraphPass, Stage};

mod formula;
mod rows;
use formula::{compensate, row_sum};
#[cfg(target_arch = "x86_64")]
mod vnni;

/// Set to `1` to leave every `MatMulInteger` to tract (the A/B of this pass alone).
pub const NO_QMATMUL_ENV: &str = "LOOKOUT_NO_QMATMUL";

/// k is padded to this many values so the kernels run no tails (one 256-bit load of bytes).
const KPAD: usize = 32;
/// Columns per kernel step (four dot products sharing the activation loads).
const COLS: usize = 4;

/// Products of several activation rows.
#[derive(Debug)]
enum ManyRows {
    /// tract's own plan of the same product, whose matrix kernels beat this op's matrix-vector
    /// loop.
    Tract(Arc<TypedRunnableModel>),
    /// lookout's AVX2 int8 kernel, the weight packed for it ([`i8gemm`]): x86 without VNNI, where
    /// tract's plan would run its AVX2 int8 kernel (which stalls there).
    Avx2(i8gemm::Weights),
    /// lookout's AVX-512 VNNI kernel, the weight packed for it (`vnni.rs`): x86 with AVX-512 VNNI.
    #[cfg(target_arch = "x86_64")]
    Vnni(vnni::Weights),
}

/// What a several-row product writes for each sum `y`: the i32 itself, or `y as f32 · scale`
/// (one scale, or one per column): tract's Cast then Mul, the same two roundings.
enum Out<'a> {
    I32(&'a mut [i32]),
    Scaled(&'a mut [f32], &'a [f32]),
}

impl ManyRows {
    /// The product of `rows` activation rows into `out` (`rows × n`) on lookout's kernel (not
    /// `Tract`).
    fn gemm(&self, p: &Packed, xs: &[u8], rows: usize, signed: bool, x0: i32, out: Out) {
        match (self, out) {
            (ManyRows::Avx2(w16), Out::I32(ys)) => {
                rows::gemm(p, w16, xs, rows, signed, x0, ys, |_, a| a)
            }
            (ManyRows::Avx2(w16), Out::Scaled(os, scale)) => {
                let per_column = scale.len() > 1;
                rows::gemm(p, w16, xs, rows, signed, x0, os, |j, a| {
                    a as f32 * scale[if per_column { j } else { 0 }]
                })
            }
            #[cfg(target_arch = "x86_64")]
            (ManyRows::Vnni(w), out) => vnni::gemm(p, w, xs, rows, signed, x0, out),
            (ManyRows::Tract(_), _) => unreachable!("tract's plan runs its own products"),
        }
    }
}

/// The weight, packed at load.
#[derive(Debug)]
struct Packed {
    k: usize,
    n: usize,
    /// k rounded up to [`KPAD`].
    kp: usize,
    /// `[n rounded up to COLS][kp]`: column j of W as i8 (u8 weights shifted by −128), zero padded.
    wt: Vec<i8>,
    /// Σ_k wt[j, k] (the stored, shifted column): compensates an i8 activation flipped to u8.
    wt_sum: Vec<i32>,
    /// Σ_k W[k, j] of the file's weight (before any shift).
    colsum: Vec<i32>,
    /// The weight's zero point per column.
    w0: Vec<i32>,
    /// 128 when the file's weight is u8 (the shift to add back, times Σ x), else 0.
    shift: i32,
    /// How activations of more than one row (a prefill, a vision encoder) are multiplied.
    many_rows: ManyRows,
}

/// Drop-in replacement for the integer einsum tract wires for `MatMulInteger` with a constant
/// weight. Inputs: the quantised activation `[.., m, k]` (u8 or i8) and its zero point (a scalar);
/// output: the i32 product `[.., m, n]`.
#[derive(Debug, Clone)]
pub struct QMatMul {
    w: Arc<Packed>,
    /// Whether the `Cast(f32) → Mul(scale)` behind the product is fused in: a third input, the
    /// scale (one value or one per column), and an f32 output.
    scaled: bool,
}

impl PartialEq for QMatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.w, &other.w) && self.scaled == other.scaled
    }
}
impl Eq for QMatMul {}

impl Op for QMatMul {
    fn name(&self) -> StaticName {
        "QMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "k:{} n:{} {} weight, one-row kernel {}{}",
            self.w.k,
            self.w.n,
            if self.w.shift != 0 { "u8" } else { "i8" },
            Kernel::detect().name(),
            if self.scaled { ", scaled to f32" } else { "" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &*self.w;
        let x = &inputs[0];
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&p.k),
            "QMatMul: activation of shape {shape:?}, expected last axis {}",
            p.k
        );
        let rows = x.len() / p.k;
        let several = match (rows, &p.many_rows) {
            (1, _) => None,
            // tract's plan, with the Cast → Mul when they are fused here (its kernels store f32).
            (_, ManyRows::Tract(plan)) => return plan.run(inputs),
            (_, many) => Some(many),
        };
        let x0 = inputs[1].cast_to_scalar::<i32>()?;
        let signed = x.datum_type().unquantized() == i8::datum_type();
        let mut out_shape: TVec<usize> = shape.into();
        *out_shape.last_mut().expect("rank checked at load") = p.n;
        let scale = if self.scaled {
            let scale = inputs[2].try_as_plain_ram()?;
            let scale = scale.as_slice::<f32>()?.to_vec();
            ensure!(
                scale.len() == 1 || scale.len() == p.n,
                "QMatMul: {} scales for {} columns",
                scale.len(),
                p.n
            );
            Some(scale)
        } else {
            None
        };
        // Several rows, scaled: the kernel's epilogue stores f32 (tract's Cast then Mul, the same
        // two roundings), with no i32 tensor between.
        if let (Some(many), Some(scale)) = (several, &scale) {
            let mut out = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
            {
                let mut plain = out.try_as_plain_ram_mut()?;
                let os = plain.as_slice_mut::<f32>()?;
                many.gemm(p, x.as_bytes(), rows, signed, x0, Out::Scaled(os, scale));
            }
            return Ok(tvec!(out.into_tvalue()));
        }
        let y = {
            let mut y = unsafe { Tensor::uninitialized::<i32>(&out_shape)? };
            {
                let mut plain = y.try_as_plain_ram_mut()?;
                let ys = plain.as_slice_mut::<i32>()?;
                match several {
                    Some(many) => many.gemm(p, x.as_bytes(), rows, signed, x0, Out::I32(ys)),
                    None => gemv(p, x.as_bytes(), signed, x0, ys),
                }
            }
            y.into_tvalue()
        };
        let Some(scale) = scale else {
            return Ok(tvec!(y));
        };
        let acc = y.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        let mut out = unsafe { Tensor::uninitialized::<f32>(y.shape())? };
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let os = plain.as_slice_mut::<f32>()?;
            // tract's Cast then Mul, element by element: the same two roundings, the same bits.
            if scale.len() == 1 {
                let s = scale[0];
                for (o, &a) in os.iter_mut().zip(acc) {
                    *o = a as f32 * s;
                }
            } else {
                for (orow, arow) in os.chunks_exact_mut(p.n).zip(acc.chunks_exact(p.n)) {
                    for ((o, &a), &s) in orow.iter_mut().zip(arow).zip(&scale) {
                        *o = a as f32 * s;
                    }
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(!shape.is_empty(), "QMatMul: scalar activation");
        *shape.last_mut().expect("not empty") = self.w.n.into();
        Ok(tvec!(if self.scaled {
            f32::fact(shape)
        } else {
            i32::fact(shape)
        }))
    }

    as_op!();
}

/// `ys[j]` for the one activation row `xs` (see the module doc for the formula).
fn gemv(p: &Packed, xs: &[u8], signed: bool, x0: i32, ys: &mut [i32]) {
    // The kernels multiply u8 by i8: an i8 activation is flipped to u8 (x + 128), and 128 · Σ wt
    // taken off again below. Zero padded to kp.
    let mut xu = vec![0u8; p.kp];
    let flip = if signed { 0x80 } else { 0 };
    for (d, &b) in xu.iter_mut().zip(xs) {
        *d = b ^ flip;
    }
    let sx = row_sum(xs, signed);
    let xoff = if signed { 128 } else { 0 };
    let kernel = Kernel::detect();
    let blocks = p.n.div_ceil(COLS);
    let out = SharedOut::new(ys);
    let task = |b0: usize, b1: usize| {
        let mut dots = vec![0i32; (b1 - b0) * COLS];
        kernel.dots(
            &xu,
            &p.wt[b0 * COLS * p.kp..b1 * COLS * p.kp],
            p.kp,
            &mut dots,
        );
        let j1 = (b1 * COLS).min(p.n);
        for (j, &dot) in (b0 * COLS..j1).zip(&dots) {
            let y = compensate(p, j, dot, xoff, sx, x0);
            // SAFETY: tasks write disjoint columns of `ys`, and j < n = ys.len().
            unsafe { *out.at(j) = y };
        }
    };
    par_blocks(blocks, p.kp * p.n, task);
}

/// Runs `task(b0, b1)` over `0..blocks` in chunks: on tract's thread pool when the plan runs with
/// one (`threads > 1`; tract installs it around every run) and the product is big enough to pay
/// for the hand-off, else on this thread.
fn par_blocks(blocks: usize, macs: usize, task: impl Fn(usize, usize) + Sync + Send) {
    use rayon::prelude::*;
    use tract_linalg::multithread::{current_tract_executor, Executor};
    // Below about a million products (~0.1 ms) the hand-off costs more than it saves (measured
    // on a loaded 2-core machine only: untuned).
    const MIN_MACS: usize = 1 << 20;
    if let Executor::MultiThread(pool) = current_tract_executor() {
        let threads = pool.current_num_threads();
        if threads > 1 && macs >= MIN_MACS && blocks > 1 {
            // A few chunks per thread, so a thread slowed by another process does not hold all.
            let chunk = blocks.div_ceil(threads * 4).max(1);
            pool.install(|| {
                (0..blocks.div_ceil(chunk))
                    .into_par_iter()
                    .for_each(|c| task(c * chunk, ((c + 1) * chunk).min(blocks)))
            });
            return;
        }
    }
    task(0, blocks);
}

/// The one-row kernel this CPU runs: u8 activation · i8 columns, i32 dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// x86-64 `vpdpbusd` (AVX-VNNI or AVX-512 VNNI): four u8·i8 products into each i32 lane.
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// x86-64 AVX2: widened to i16, `vpmaddwd` (two i16 products into each i32 lane, exact for
    /// |x| ≤ 255, |w| ≤ 128).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// aarch64 NEON (baseline): widened to i16, `vmlal_s16`.
    #[cfg(target_arch = "aarch64")]
    Neon,
    Portable,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avxvnni") {
                return Kernel::AvxVnni;
            }
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl")
            {
                return Kernel::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        return Kernel::Neon;
        #[allow(unreachable_code)]
        Kernel::Portable
    }

    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "neon",
            Kernel::Portable => "portable",
        }
    }

    /// `dots[j] = Σ_k x[k] · w[j, k]` for the `dots.len()` (a multiple of COLS) columns of `w`
    /// (`[dots.len()][kp]`), `x` of length kp.
    fn dots(self, x: &[u8], w: &[i8], kp: usize, dots: &mut [i32]) {
        assert!(
            x.len() == kp
                && kp.is_multiple_of(KPAD)
                && dots.len().is_multiple_of(COLS)
                && w.len() == dots.len() * kp
        );
        // SAFETY (every arm): the CPU feature was detected by `detect`, and the lengths are
        // checked above; the kernels read kp values of x and of each of the columns.
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => unsafe { x86::dots_avxvnni(x, w, kp, dots) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { x86::dots_avx512vnni(x, w, kp, dots) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::dots_avx2(x, w, kp, dots) },
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => unsafe { arm::dots(x, w, kp, dots) },
            Kernel::Portable => {
                for (d, col) in dots.iter_mut().zip(w.chunks_exact(kp)) {
                    *d = x.iter().zip(col).map(|(&a, &b)| a as i32 * b as i32).sum();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::COLS;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// One kernel body per instruction set: `$step(acc, x 32 bytes, w 32 bytes)` accumulates
    /// 32 products. Four columns per pass, each with its own accumulator (named, not an array,
    /// so a build at opt-level 1 keeps them in registers).
    macro_rules! dots_kernel {
        ($name:ident, $feature:literal, $step:expr) => {
            #[target_feature(enable = $feature)]
            pub unsafe fn $name(x: &[u8], w: &[i8], kp: usize, dots: &mut [i32]) {
                let step = $step;
                let xp = x.as_ptr();
                for (b, out) in dots.chunks_exact_mut(COLS).enumerate() {
                    let w0 = w.as_ptr().add(b * COLS * kp);
                    let (w1, w2, w3) = (w0.add(kp), w0.add(2 * kp), w0.add(3 * kp));
                    let (mut a0, mut a1, mut a2, mut a3) = (
                        _mm256_setzero_si256(),
                        _mm256_setzero_si256(),
                        _mm256_setzero_si256(),
                        _mm256_setzero_si256(),
                    );
                    let mut i = 0;
                    while i < kp {
                        let xv = _mm256_loadu_si256(xp.add(i) as *const __m256i);
                        let ld = |p: *const i8| _mm256_loadu_si256(p.add(i) as *const __m256i);
                        a0 = step(a0, xv, ld(w0));
                        a1 = step(a1, xv, ld(w1));
                        a2 = step(a2, xv, ld(w2));
                        a3 = step(a3, xv, ld(w3));
                        i += 32;
                    }
                    out[0] = hsum(a0);
                    out[1] = hsum(a1);
                    out[2] = hsum(a2);
                    out[3] = hsum(a3);
                }
            }
        };
    }

    dots_kernel!(dots_avxvnni, "avx2,avxvnni", |a, x, w| {
        _mm256_dpbusd_avx_epi32(a, x, w)
    });
    dots_kernel!(dots_avx512vnni, "avx2,avx512vnni,avx512vl", |a, x, w| {
        _mm256_dpbusd_epi32(a, x, w)
    });
    // AVX2: both halves widened to i16 (u8 zero-extended, i8 sign-extended), `vpmaddwd`.
    dots_kernel!(dots_avx2, "avx2", |a, x: __m256i, w: __m256i| {
        let xl = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(x));
        let xh = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(x, 1));
        let wl = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w));
        let wh = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(w, 1));
        _mm256_add_epi32(
            a,
            _mm256_add_epi32(_mm256_madd_epi16(xl, wl), _mm256_madd_epi16(xh, wh)),
        )
    });
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::COLS;
    use std::arch::aarch64::*;

    /// 8 products per step: x widened u8 → i16 (≤ 255, fits), w i8 → i16, `vmlal_s16` into i32.
    pub unsafe fn dots(x: &[u8], w: &[i8], kp: usize, dots: &mut [i32]) {
        let xp = x.as_ptr();
        for (b, out) in dots.chunks_exact_mut(COLS).enumerate() {
            let wp = w.as_ptr().add(b * COLS * kp);
            let (mut a0, mut a1, mut a2, mut a3) = (
                vdupq_n_s32(0),
                vdupq_n_s32(0),
                vdupq_n_s32(0),
                vdupq_n_s32(0),
            );
            let mut i = 0;
            while i < kp {
                let xv = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(xp.add(i))));
                let xl = vget_low_s16(xv);
                let mac = |a: int32x4_t, c: usize| {
                    let wv = vmovl_s8(vld1_s8(wp.add(c * kp + i)));
                    vmlal_high_s16(vmlal_s16(a, xl, vget_low_s16(wv)), xv, wv)
                };
                a0 = mac(a0, 0);
                a1 = mac(a1, 1);
                a2 = mac(a2, 2);
                a3 = mac(a3, 3);
                i += 8;
            }
            out[0] = vaddvq_s32(a0);
            out[1] = vaddvq_s32(a1);
            out[2] = vaddvq_s32(a2);
            out[3] = vaddvq_s32(a3);
        }
    }
}

/// Swaps the integer einsum of every `MatMulInteger` with a constant weight for [`QMatMul`]. Runs
/// on the typed graph before decluttering, while the einsum still has its nine inputs (codegen
/// then spreads it over packing, matmul and compensation nodes).
pub struct QMatMulPass;

impl GraphPass for QMatMulPass {
    fn name(&self) -> &'static str {
        "QMatMul"
    }
    fn replaces(&self) -> &'static str {
        "MatMulInteger"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeOptimise
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_QMATMUL_ENV) {
            return Ok(0);
        }
        replace_qmatmul(model)
    }
}

/// Replaces every integer einsum [`QMatMul`] can run; returns how many.
pub fn replace_qmatmul(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<EinSum>()
                .is_some_and(|e| e.q_params == Some(i32::datum_type()))
        })
        .map(|n| n.id)
        .collect();
    let mut replaced = 0;
    for id in candidates {
        let node = model.node(id);
        // With the scale fused, tract's plan for several rows must end in the same Cast → Mul.
        let tail = scale_tail(model, node);
        match plan(model, node, tail.map(|t| t.1)) {
            Ok(mut op) => {
                let mut patch = TypedModelPatch::new(format!("QMatMul {}", node.name));
                let x = patch.tap_model(model, node.inputs[0])?;
                let x0 = patch.tap_model(model, node.inputs[3])?;
                let (mut inputs, mut end) = (vec![x, x0], OutletId::from(id));
                if let Some((mul, scale)) = tail {
                    op.scaled = true;
                    inputs.push(patch.tap_model(model, scale)?);
                    end = mul.into();
                }
                let y = patch.wire_node(&node.name, op, &inputs)?[0];
                patch.shunt_outside(model, end, y)?;
                patch.apply(model)?;
                replaced += 1;
            }
            Err(why) => log::debug!("{}: left to tract's integer einsum: {why:#}", node.name),
        }
    }
    Ok(replaced)
}

/// The `Cast(f32) → Mul(scale)` onnxruntime writes behind a `MatMulInteger`, when the product has
/// no other consumer and the scale is one value or one per column: the Mul's node and the scale.
fn scale_tail(model: &TypedModel, node: &TypedNode) -> Option<(usize, OutletId)> {
    let cast = model.single_succ(node.id).ok()??;
    if cast.op_as::<Cast>()?.to != f32::datum_type() || cast.outputs[0].successors.len() != 1 {
        return None;
    }
    let mul = model.single_succ(cast.id).ok()??;
    let bin = mul.op_as::<TypedBinOp>()?;
    if bin.0.name() != "Mul" || bin.1.is_some() || mul.inputs.len() != 2 {
        return None;
    }
    let scale = *mul.inputs.iter().find(|i| i.node != cast.id)?;
    let fact = model.outlet_fact(scale).ok()?;
    let out = model.outlet_fact(OutletId::new(cast.id, 0)).ok()?;
    // The scale only broadcasts: ones everywhere but the last axis, which is 1 or n.
    let dims: Vec<Option<i64>> = fact.shape.iter().map(|d| d.to_i64().ok()).collect();
    let (last, rest) = dims.split_last()?;
    let fits = fact.datum_type == f32::datum_type()
        && fact.rank() == out.rank()
        && rest.iter().all(|d| *d == Some(1))
        && (*last == Some(1) || out.shape.last() == fact.shape.last());
    fits.then_some((mul.id, scale))
}

/// The value of `outlet` when it is a constant, possibly behind axis changes and casts (the
/// broadcast `AddAxis` tract wires in front of a weight before constants are propagated).
pub(super) fn const_value(
    model: &TypedModel,
    outlet: OutletId,
    depth: usize,
) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    if let Some(k) = &fact.konst {
        return Some(k.clone());
    }
    let node = model.node(outlet.node);
    if depth == 0 || node.inputs.len() != 1 || !(node.op_is::<AxisOp>() || node.op_is::<Cast>()) {
        return None;
    }
    let input = const_value(model, node.inputs[0], depth - 1)?;
    let out = node
        .op
        .eval_out_of_plan(tvec!(input.into_tvalue()))
        .ok()??;
    Some(out.into_iter().next()?.into_arc_tensor())
}

/// The scalar constant at input `slot`, as f64.
pub(super) fn scalar(model: &TypedModel, node: &TypedNode, slot: usize) -> TractResult<f64> {
    let t = const_value(model, node.inputs[slot], 4)
        .with_context(|| format!("input {slot} is not a constant"))?;
    ensure!(t.len() == 1, "input {slot} is not a scalar");
    t.cast_to_scalar::<f64>()
}

fn plan(model: &TypedModel, node: &TypedNode, scale: Option<OutletId>) -> TractResult<QMatMul> {
    let op = node.op_as::<EinSum>().context("not an einsum")?;
    ensure!(
        node.inputs.len() == 9,
        "{} inputs, not 9",
        node.inputs.len()
    );
    ensure!(op.operating_dt == i32::datum_type(), "not an i32 einsum");
    let x_fact = model.outlet_fact(node.inputs[0])?;
    let xdt = x_fact.datum_type.unquantized();
    ensure!(
        xdt == u8::datum_type() || xdt == i8::datum_type(),
        "activation is {xdt:?}"
    );
    let r = x_fact.rank();
    ensure!(r >= 2, "activation of rank {r}");
    // Where tract's int8 kernel would be its AVX2 one (x86 without VNNI), lookout's own multiplies
    // several rows too ([`i8gemm`]), and tract's plan is not built.
    let k_known = x_fact.shape[r - 1].to_usize().unwrap_or(64);
    let own_kernel = i8gemm::replaces_at(k_known);
    // On AVX-512 VNNI, lookout's kernel multiplies several rows (`vnni.rs`; k a multiple of 4).
    let vnni = !own_kernel && i8gemm::vnni_chosen() && k_known.is_multiple_of(4);
    // Else rows known at load to be several (a vision encoder's patch tokens): tract's whole plan,
    // which also fuses the bias Add behind into its kernels, measured faster than this op's
    // fallback.
    let rows: Option<i64> = x_fact
        .shape
        .iter()
        .take(r - 1)
        .map(|d| d.to_i64().ok())
        .product();
    ensure!(
        rows.is_none_or(|m| m == 1) || own_kernel || vnni,
        "{} activation rows: left to tract's matrix kernels",
        rows.unwrap_or_default()
    );
    let axes = &op.axes;
    ensure!(
        axes.rank(InOut::In(1)) == r && axes.rank(InOut::Out(0)) == r,
        "not a matmul of equal ranks"
    );
    // The layout wire_as_einsum gives MatMulInteger: [.., m, k] x [.., k, n] -> [.., m, n].
    let tracks = |from: (InOut, usize), to: InOut| axes.track_axis(from, to).ok().flatten();
    ensure!(
        tracks((InOut::In(0), r - 1), InOut::In(1)) == Some(r - 2)
            && tracks((InOut::In(0), r - 1), InOut::Out(0)).is_none()
            && tracks((InOut::In(0), r - 2), InOut::Out(0)) == Some(r - 2)
            && tracks((InOut::In(0), r - 2), InOut::In(1)).is_none()
            && tracks((InOut::In(1), r - 1), InOut::Out(0)) == Some(r - 1)
            && (0..r - 2).all(|a| tracks((InOut::In(0), a), InOut::Out(0)) == Some(a)),
        "not a plain matmul: {axes}"
    );
    ensure!(
        model.outlet_fact(node.inputs[3])?.rank() == 0,
        "activation zero point is not a scalar"
    );
    for (slot, want) in [(2, 0.0), (4, 1.0), (6, 1.0), (7, 0.0), (8, 1.0)] {
        let v = scalar(model, node, slot)?;
        ensure!(v == want, "input {slot} is {v}, not {want}");
    }
    let w = const_value(model, node.inputs[1], 4).context("the weight is not a constant")?;
    let wdt = w.datum_type().unquantized();
    ensure!(
        wdt == u8::datum_type() || wdt == i8::datum_type(),
        "weight is {wdt:?}"
    );
    let ws = w.shape();
    ensure!(
        ws.len() == r && ws[..r - 2].iter().all(|&d| d == 1),
        "weight of shape {ws:?} is batched"
    );
    let (k, n) = (ws[r - 2], ws[r - 1]);
    ensure!(
        x_fact.shape[r - 1].to_usize().ok() == Some(k),
        "activation's k is {}, the weight's {k}",
        x_fact.shape[r - 1]
    );
    // 255 · 255 · 2^15 < 2^31: no sum, in this op or in tract's, can wrap.
    ensure!(k > 0 && n > 0 && k <= 1 << 15, "k = {k}, n = {n}");
    let w0t = const_value(model, node.inputs[5], 4).context("weight zero point not constant")?;
    let w0t = w0t.cast_to::<i32>()?;
    let w0s = w0t.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
    let w0 = match w0s.len() {
        1 => vec![w0s[0]; n],
        len if len == n => w0s,
        len => bail!("weight zero point of {len} values for {n} columns"),
    };
    let w_signed = wdt == i8::datum_type();
    let many_rows = if own_kernel {
        // The stored weight (u8 shifted by −128, as `pack` stores it), widened for the kernel.
        let bytes = w.as_bytes();
        ManyRows::Avx2(i8gemm::Weights::pack_with(n, k, |j, kk| {
            let b = bytes[kk * n + j];
            (if w_signed { b as i8 } else { (b ^ 0x80) as i8 }) as i16
        }))
    } else if vnni && k.is_multiple_of(4) {
        vnni_rows(w.as_bytes(), w_signed, k, n)
    } else {
        ManyRows::Tract(
            many_rows_plan(model, node, op, &w, scale)
                .context("planning tract's product for several rows")?,
        )
    };
    Ok(QMatMul {
        w: Arc::new(pack(w.as_bytes(), w_signed, k, n, w0, many_rows)),
        scaled: false,
    })
}

/// The weight (`bytes`, `[k][n]`) packed for the AVX-512 VNNI kernel, as the i8 it stores (u8
/// weights shifted by −128).
#[cfg(target_arch = "x86_64")]
fn vnni_rows(bytes: &[u8], w_signed: bool, k: usize, n: usize) -> ManyRows {
    ManyRows::Vnni(vnni::Weights::pack(n, k, |j, kk| {
        let b = bytes[kk * n + j];
        if w_signed {
            b as i8
        } else {
            (b ^ 0x80) as i8
        }
    }))
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni_rows(_: &[u8], _: bool, _: usize, _: usize) -> ManyRows {
    unreachable!("the VNNI kernel is only chosen on x86")
}

/// tract's own plan of the einsum at `node` alone (its constants copied in, lookout's constant
/// folding and zero-term dropping applied): what [`QMatMul`] runs for activations of more than one
/// row. The activation's symbolic dimensions are fresh symbols of its own, bound by each run's input.
fn many_rows_plan(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    w: &Arc<Tensor>,
    scale: Option<OutletId>,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut sub = TypedModel::default();
    let x_fact = model.outlet_fact(node.inputs[0])?;
    let shape = fresh_symbols(&sub, &x_fact.shape, "qmm")?;
    let mut wires = tvec![sub.add_source("x", x_fact.datum_type.fact(shape))?];
    for slot in 1..9 {
        let wire = if slot == 3 {
            sub.add_source("x0", model.outlet_fact(node.inputs[3])?.without_value())?
        } else if slot == 1 {
            sub.add_const("w", w.clone())?
        } else {
            let v = const_value(model, node.inputs[slot], 4)
                .with_context(|| format!("input {slot} is not a constant"))?;
            sub.add_const(format!("c{slot}"), v)?
        };
        wires.push(wire);
    }
    let mut y = sub.wire_node("einsum", op.clone(), &wires)?;
    if let Some(scale) = scale {
        let s = sub.add_source("scale", model.outlet_fact(scale)?.without_value())?;
        let c = sub.wire_node("cast", Cast::new(f32::datum_type()), &y)?[0];
        y = sub.wire_node("scaled", tract_core::ops::math::mul(), &[c, s])?;
    }
    sub.select_output_outlets(&y)?;
    let mut sub = sub.into_optimized()?;
    super::fold::fold_const_chains(&mut sub)?;
    super::zeroterm::drop_zero_terms(&mut sub)?;
    sub.into_runnable()
}

/// `shape` for a sub-model of one op: known lengths kept, each symbolic one a fresh symbol of
/// `sub`'s (`{prefix}_{axis}`), so the sub-plan binds it from each run's input alone. Each is
/// declared at least 1 (`session::at_least_one`; the sub-plans run for several rows, never for an
/// empty tensor): without the bound tract cannot prove the dequantising multiply behind the product
/// long enough for its by-scalar kernel and runs its generic broadcasting loop.
pub(super) fn fresh_symbols(
    sub: &TypedModel,
    shape: &ShapeFact,
    prefix: &str,
) -> TractResult<TVec<TDim>> {
    shape
        .iter()
        .enumerate()
        .map(|(i, d)| match d.to_i64() {
            Ok(v) => Ok(TDim::from(v)),
            _ => {
                super::session::at_least_one(&sub.symbols, &format!("{prefix}_{i}")).map(TDim::from)
            }
        })
        .collect()
}

/// Transposes `[k][n]` weight bytes into the kernels' layout (see [`Packed`]).
fn pack(
    bytes: &[u8],
    signed: bool,
    k: usize,
    n: usize,
    w0: Vec<i32>,
    many_rows: ManyRows,
) -> Packed {
    let kp = k.div_ceil(KPAD) * KPAD;
    let np = n.div_ceil(COLS) * COLS;
    let mut wt = vec![0i8; np * kp];
    let mut colsum = vec![0i32; n];
    let mut wt_sum = vec![0i32; n];
    for kk in 0..k {
        let row = &bytes[kk * n..(kk + 1) * n];
        for (j, &b) in row.iter().enumerate() {
            let (v, s) = if signed {
                (b as i8, b as i8 as i32)
            } else {
                ((b ^ 0x80) as i8, b as i32)
            };
            wt[j * kp + kk] = v;
            colsum[j] += s;
            wt_sum[j] += v as i32;
        }
    }
    Packed {
        k,
        n,
        kp,
        wt,
        wt_sum,
        colsum,
        w0,
        shift: if signed { 0 } else { 128 },
        many_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) use crate::engine::testvals::bytes as lcg;

    /// `product`'s several-row sums (from the packed weight, the weight's bytes and signedness,
    /// the activation rows, their signedness, row count and zero point) against the formula's
    /// definition, on every `(rows, k, n)` of `shapes`: u8 and i8 weights and activations,
    /// per-column zero points, extreme bytes in the first row.
    #[allow(clippy::type_complexity)]
    pub(super) fn check_rows(
        shapes: &[(usize, usize, usize)],
        product: impl Fn(&Packed, &[u8], bool, &[u8], bool, usize, i32) -> Vec<i32>,
    ) {
        let empty = Arc::new(TypedModel::default())
            .into_runnable()
            .expect("empty plan");
        for &(rows, k, n) in shapes {
            for (w_signed, x_signed) in [(false, false), (true, false), (true, true), (false, true)]
            {
                let w = lcg(k * n, 3 + k as u64);
                let mut x = lcg(rows * k, 11 + n as u64);
                x[..k].fill(if x_signed { 0x80 } else { 255 });
                let w0: Vec<i32> = (0..n).map(|j| (j as i32 * 37) % 200 - 60).collect();
                let x0 = 77;
                let p = pack(
                    &w,
                    w_signed,
                    k,
                    n,
                    w0.clone(),
                    ManyRows::Tract(empty.clone()),
                );
                let ys = product(&p, &w, w_signed, &x, x_signed, rows, x0);
                let val = |b: u8, s: bool| if s { b as i8 as i32 } else { b as i32 };
                for r in 0..rows {
                    for j in 0..n {
                        let want: i32 = (0..k)
                            .map(|kk| {
                                (val(x[r * k + kk], x_signed) - x0)
                                    * (val(w[kk * n + j], w_signed) - w0[j])
                            })
                            .sum();
                        assert_eq!(
                            ys[r * n + j],
                            want,
                            "rows {rows} k {k} n {n} row {r} col {j}"
                        );
                    }
                }
            }
        }
    }

    /// The one-row product against the formula's definition, for u8 and i8 weights and
    /// activations, per-column zero points, k and n not multiples of the padding.
    #[test]
    fn gemv_equals_definition() {
        let empty = Arc::new(TypedModel::default())
            .into_runnable()
            .expect("empty plan");
        for (k, n) in [(1, 1), (17, 5), (48, 24), (100, 9), (576, 13)] {
            for (w_signed, x_signed) in [(false, false), (true, false), (true, true), (false, true)]
            {
                let w = lcg(k * n, 3 + k as u64);
                let x = lcg(k, 11 + n as u64);
                let w0: Vec<i32> = (0..n).map(|j| (j as i32 * 37) % 200 - 60).collect();
                let x0 = 77;
                let p = pack(
                    &w,
                    w_signed,
                    k,
                    n,
                    w0.clone(),
                    ManyRows::Tract(empty.clone()),
                );
                let mut ys = vec![0; n];
                gemv(&p, &x, x_signed, x0, &mut ys);
                let val = |b: u8, s: bool| if s { b as i8 as i32 } else { b as i32 };
                for j in 0..n {
                    let want: i32 = (0..k)
                        .map(|kk| {
                            (val(x[kk], x_signed) - x0) * (val(w[kk * n + j], w_signed) - w0[j])
                        })
                        .sum();
                    assert_eq!(ys[j], want, "k {k} n {n} j {j}");
                }
            }
        }
    }

    /// Every kernel this CPU has gives the portable loop's dot products, on extreme bytes too.
    #[test]
    fn kernels_agree() {
        let kp = 96;
        let mut x = lcg(kp, 5);
        let mut w: Vec<i8> = lcg(8 * kp, 9).into_iter().map(|b| b as i8).collect();
        x[..8].fill(255);
        w[..8].fill(-128);
        w[kp..kp + 8].fill(127);
        let mut want = vec![0; 8];
        Kernel::Portable.dots(&x, &w, kp, &mut want);
        #[allow(unused_mut)] // pushed to on x86-64 only
        let mut kernels = vec![Kernel::detect()];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            kernels.push(Kernel::Avx2);
        }
        for kernel in kernels {
            let mut got = vec![0; 8];
            kernel.dots(&x, &w, kp, &mut got);
            assert_eq!(got, want, "{}", kernel.name());
        }
    }
}

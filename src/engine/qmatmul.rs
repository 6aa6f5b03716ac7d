//! `QMatMul`: the integer product of onnxruntime's dynamically quantised MatMul
//! (`MatMulInteger(x_q, W_q, x_zp, w_zp)` with a constant weight) as one op with the weight packed
//! at load and an int8 matrix-vector kernel for the one-token rows of a decoder.
//!
//! Why it matters: tract lowers `MatMulInteger` into its int8 matrix kernels, whose x86 tiles are
//! 8×8: with one activation row (a decoder's token) 7/8 of every tile is padding, and the activation
//! is packed and its zero-point compensation computed through separate nodes on every call. The
//! VLMs' int8 decode therefore ran slower than their fp32.
//!
//! What it computes, exactly as tract's einsum does, in i32 (exact: `255 · 255 · k` stays far below
//! 2^31 for the VLMs' k ≤ 4096, where tract's i32 accumulation is just as exact):
//! `y[r, j] = Σ_k (x[r, k] − x0) · (W[k, j] − w0[j])`
//! `       = Σ x·W − w0[j] · Σ_k x[r, k] − x0 · colsum[j] + k · x0 · w0[j]`.
//! The activation quantisation in front (`DynamicQuantizeLinear`, often shared by the q, k and v
//! projections) and the `Cast → Mul` by the scales behind stay tract's (or `FastDynQuantize`), so
//! the output is bit-identical to tract's plan (tests/engine_qmatmul.rs).
//!
//! The weight is stored transposed (`[n][k]`, k padded to 16) as i8: u8 weights are shifted by
//! −128 at load and `128 · Σ x` added back, so one signed kernel serves both. The activation row is
//! widened to i16 once; kernels: x86-64 AVX2 (`vpmovsxbw` + `vpmaddwd`, exact: two i16 products
//! summed into i32), aarch64 NEON (`vmovl_s8` + `vmlal_s16`), and a portable loop. Output columns
//! are split over tract's thread pool when the plan runs with several threads. Skipped under
//! `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_QMATMUL=1` (an A/B of this pass alone).

use tract_core::internal::*;
use tract_core::ops::cast::Cast;
use tract_core::ops::change_axes::AxisOp;
use tract_core::ops::einsum::EinSum;

use super::pass::{GraphPass, Stage};

/// Set to `1` to leave every `MatMulInteger` to tract (the A/B of this pass alone).
pub const NO_QMATMUL_ENV: &str = "LOOKOUT_NO_QMATMUL";

/// k is padded to this many values so the kernels run no tails.
const KPAD: usize = 16;
/// Columns per kernel call (the kernels compute four dot products sharing the activation loads).
const COLS: usize = 4;

/// The weight, packed at load.
#[derive(Debug)]
struct Packed {
    k: usize,
    n: usize,
    /// k rounded up to [`KPAD`].
    kp: usize,
    /// `[n rounded up to COLS][kp]`: column j of W as i8 (u8 weights shifted by −128), zero padded.
    wt: Vec<i8>,
    /// Σ_k W[k, j] of the file's weight (before any shift).
    colsum: Vec<i32>,
    /// The weight's zero point per column.
    w0: Vec<i32>,
    /// 128 when the file's weight is u8 (the shift to add back, times Σ x), else 0.
    shift: i32,
}

/// Drop-in replacement for the integer einsum tract wires for `MatMulInteger` with a constant
/// weight. Inputs: the quantised activation `[.., m, k]` (u8 or i8) and its zero point (a scalar);
/// output: the i32 product `[.., m, n]`.
#[derive(Debug, Clone)]
pub struct QMatMul {
    w: Arc<Packed>,
}

impl PartialEq for QMatMul {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.w, &other.w)
    }
}
impl Eq for QMatMul {}

impl Op for QMatMul {
    fn name(&self) -> StaticName {
        "QMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "k:{} n:{} {} weight, kernel {}",
            self.w.k,
            self.w.n,
            if self.w.shift != 0 { "u8" } else { "i8" },
            kernel_name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &*self.w;
        let x = &inputs[0];
        let x0 = inputs[1].cast_to_scalar::<i32>()?;
        let shape = x.shape();
        ensure!(
            shape.last() == Some(&p.k),
            "QMatMul: activation of shape {shape:?}, expected last axis {}",
            p.k
        );
        let signed = x.datum_type().unquantized() == i8::datum_type();
        let bytes = x.as_bytes();
        let rows = bytes.len() / p.k;
        let mut out_shape: TVec<usize> = shape.into();
        *out_shape.last_mut().expect("rank checked at load") = p.n;
        let mut y = unsafe { Tensor::uninitialized::<i32>(&out_shape)? };
        {
            let mut plain = y.try_as_plain_ram_mut()?;
            let ys = plain.as_slice_mut::<i32>()?;
            matmul(p, bytes, signed, x0, rows, ys);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for QMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        ensure!(!shape.is_empty(), "QMatMul: scalar activation");
        *shape.last_mut().expect("not empty") = self.w.n.into();
        Ok(tvec!(i32::fact(shape)))
    }

    as_op!();
}

/// `ys[r, j]` for every activation row `r` (see the module doc for the formula).
fn matmul(p: &Packed, xs: &[u8], signed: bool, x0: i32, rows: usize, ys: &mut [i32]) {
    // The activation rows widened to i16 (zero padded to kp), and their sums.
    let mut x16 = vec![0i16; rows * p.kp];
    let mut sx = vec![0i32; rows];
    for r in 0..rows {
        let row = &xs[r * p.k..(r + 1) * p.k];
        let dst = &mut x16[r * p.kp..r * p.kp + p.k];
        if signed {
            for (d, &b) in dst.iter_mut().zip(row) {
                *d = b as i8 as i16;
            }
        } else {
            for (d, &b) in dst.iter_mut().zip(row) {
                *d = b as i16;
            }
        }
        sx[r] = dst.iter().map(|&v| v as i32).sum();
    }
    let kx0w0 = p.k as i32 * x0;
    let finish = |r: usize, j: usize, dot: i32| -> i32 {
        // Σ x·W, then the zero-point compensation; wrapping like tract's i32 arithmetic (never
        // reached for the sizes this op takes).
        let xw = dot.wrapping_add(p.shift.wrapping_mul(sx[r]));
        xw.wrapping_sub(p.w0[j].wrapping_mul(sx[r]))
            .wrapping_sub(x0.wrapping_mul(p.colsum[j]))
            .wrapping_add(kx0w0.wrapping_mul(p.w0[j]))
    };
    let blocks = p.n.div_ceil(COLS);
    let out = SyncPtr(ys.as_mut_ptr());
    // One task: column blocks [b0, b1) for every row.
    let task = |b0: usize, b1: usize| {
        let mut w16 = Vec::new();
        for b in b0..b1 {
            let j0 = b * COLS;
            let wb = &p.wt[j0 * p.kp..(j0 + COLS) * p.kp];
            let store = |r: usize, d: [i32; COLS]| {
                for (c, &dot) in d.iter().enumerate() {
                    let j = j0 + c;
                    if j < p.n {
                        // SAFETY: tasks write disjoint columns of `ys`, in bounds (r < rows, j < n).
                        unsafe { *out.get().add(r * p.n + j) = finish(r, j, dot) };
                    }
                }
            };
            if rows == 1 {
                store(0, dot4_i8(&x16, wb, p.kp));
            } else {
                // Several rows: widen the block once, then every row reads i16 from cache.
                w16.clear();
                w16.extend(wb.iter().map(|&v| v as i16));
                for r in 0..rows {
                    store(r, dot4_i16(&x16[r * p.kp..(r + 1) * p.kp], &w16, p.kp));
                }
            }
        }
    };
    par_blocks(blocks, rows * p.kp * p.n, task);
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut i32);
// SAFETY: only used to write disjoint elements from the tasks of one `par_blocks` call.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut i32 {
        self.0
    }
}

/// Runs `task(b0, b1)` over `0..blocks` in chunks: on tract's thread pool when the plan runs with
/// one (`threads > 1`; tract installs it around every run) and the product is big enough to pay
/// for the hand-off, else on this thread.
fn par_blocks(blocks: usize, macs: usize, task: impl Fn(usize, usize) + Sync + Send) {
    use rayon::prelude::*;
    use tract_linalg::multithread::{current_tract_executor, Executor};
    const MIN_MACS: usize = 1 << 16;
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

fn kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return "avx2";
    }
    #[cfg(target_arch = "aarch64")]
    return "neon";
    #[allow(unreachable_code)]
    "portable"
}

/// Four dot products of the i16 row `x` (length `kp`) with the four i8 columns in `w` (`4 · kp`).
fn dot4_i8(x: &[i16], w: &[i8], kp: usize) -> [i32; COLS] {
    debug_assert!(x.len() >= kp && w.len() == COLS * kp && kp % KPAD == 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 detected; lengths checked above (kp a multiple of 16).
        return unsafe { x86::dot4_i8(x.as_ptr(), w.as_ptr(), kp) };
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; lengths as above.
    return unsafe { arm::dot4_i8(x.as_ptr(), w.as_ptr(), kp) };
    #[allow(unreachable_code)]
    portable_dot4(x, kp, |c, i| w[c * kp + i] as i32)
}

/// As [`dot4_i8`], with the columns already widened to i16.
fn dot4_i16(x: &[i16], w: &[i16], kp: usize) -> [i32; COLS] {
    debug_assert!(x.len() >= kp && w.len() == COLS * kp && kp % KPAD == 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 detected; lengths checked above.
        return unsafe { x86::dot4_i16(x.as_ptr(), w.as_ptr(), kp) };
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is baseline on aarch64; lengths as above.
    return unsafe { arm::dot4_i16(x.as_ptr(), w.as_ptr(), kp) };
    #[allow(unreachable_code)]
    portable_dot4(x, kp, |c, i| w[c * kp + i] as i32)
}

#[inline(always)]
fn portable_dot4(x: &[i16], kp: usize, w: impl Fn(usize, usize) -> i32) -> [i32; COLS] {
    let mut acc = [0i32; COLS];
    for (c, a) in acc.iter_mut().enumerate() {
        *a = (0..kp).map(|i| x[i] as i32 * w(c, i)).sum();
    }
    acc
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

    /// `vpmaddwd` multiplies i16 pairs and adds adjacent products into i32: exact for |x| ≤ 255
    /// and |w| ≤ 128 (each pair sum ≤ 2 · 32 640).
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot4_i8(x: *const i16, w: *const i8, kp: usize) -> [i32; COLS] {
        let mut acc = [_mm256_setzero_si256(); COLS];
        let mut i = 0;
        while i < kp {
            let xv = _mm256_loadu_si256(x.add(i) as *const __m256i);
            for (c, a) in acc.iter_mut().enumerate() {
                let wb = _mm_loadu_si128(w.add(c * kp + i) as *const __m128i);
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, _mm256_cvtepi8_epi16(wb)));
            }
            i += 16;
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn dot4_i16(x: *const i16, w: *const i16, kp: usize) -> [i32; COLS] {
        let mut acc = [_mm256_setzero_si256(); COLS];
        let mut i = 0;
        while i < kp {
            let xv = _mm256_loadu_si256(x.add(i) as *const __m256i);
            for (c, a) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_si256(w.add(c * kp + i) as *const __m256i);
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(xv, wv));
            }
            i += 16;
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::COLS;
    use std::arch::aarch64::*;

    /// `vmlal_s16`: i16 × i16 products accumulated into i32 lanes, exact.
    pub unsafe fn dot4_i8(x: *const i16, w: *const i8, kp: usize) -> [i32; COLS] {
        let mut acc = [vdupq_n_s32(0); COLS];
        let mut i = 0;
        while i < kp {
            let xv = vld1q_s16(x.add(i));
            for (c, a) in acc.iter_mut().enumerate() {
                let wv = vmovl_s8(vld1_s8(w.add(c * kp + i)));
                *a = vmlal_s16(*a, vget_low_s16(xv), vget_low_s16(wv));
                *a = vmlal_high_s16(*a, xv, wv);
            }
            i += 8;
        }
        [
            vaddvq_s32(acc[0]),
            vaddvq_s32(acc[1]),
            vaddvq_s32(acc[2]),
            vaddvq_s32(acc[3]),
        ]
    }

    pub unsafe fn dot4_i16(x: *const i16, w: *const i16, kp: usize) -> [i32; COLS] {
        let mut acc = [vdupq_n_s32(0); COLS];
        let mut i = 0;
        while i < kp {
            let xv = vld1q_s16(x.add(i));
            for (c, a) in acc.iter_mut().enumerate() {
                let wv = vld1q_s16(w.add(c * kp + i));
                *a = vmlal_s16(*a, vget_low_s16(xv), vget_low_s16(wv));
                *a = vmlal_high_s16(*a, xv, wv);
            }
            i += 8;
        }
        [
            vaddvq_s32(acc[0]),
            vaddvq_s32(acc[1]),
            vaddvq_s32(acc[2]),
            vaddvq_s32(acc[3]),
        ]
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
        if std::env::var(NO_QMATMUL_ENV).is_ok_and(|v| v == "1") {
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
        match plan(model, node) {
            Ok(op) => {
                let mut patch = TypedModelPatch::new(format!("QMatMul {}", node.name));
                let x = patch.tap_model(model, node.inputs[0])?;
                let x0 = patch.tap_model(model, node.inputs[3])?;
                let y = patch.wire_node(&node.name, op, &[x, x0])?[0];
                patch.shunt_outside(model, id.into(), y)?;
                patch.apply(model)?;
                replaced += 1;
            }
            Err(why) => log::debug!("{}: left to tract's integer einsum: {why}", node.name),
        }
    }
    Ok(replaced)
}

/// The value of `outlet` when it is a constant, possibly behind axis changes and casts (the
/// broadcast `AddAxis` tract wires in front of a weight before constants are propagated).
fn const_value(model: &TypedModel, outlet: OutletId, depth: usize) -> Option<Arc<Tensor>> {
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
fn scalar(model: &TypedModel, node: &TypedNode, slot: usize) -> TractResult<f64> {
    let t = const_value(model, node.inputs[slot], 4)
        .with_context(|| format!("input {slot} is not a constant"))?;
    ensure!(t.len() == 1, "input {slot} is not a scalar");
    t.cast_to_scalar::<f64>()
}

fn plan(model: &TypedModel, node: &TypedNode) -> TractResult<QMatMul> {
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
    ensure!(k > 0 && n > 0 && k <= 1 << 16, "k = {k}, n = {n}");
    let w0t = const_value(model, node.inputs[5], 4).context("weight zero point not constant")?;
    let w0t = w0t.cast_to::<i32>()?;
    let w0s = w0t.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
    let w0 = match w0s.len() {
        1 => vec![w0s[0]; n],
        len if len == n => w0s,
        len => bail!("weight zero point of {len} values for {n} columns"),
    };
    Ok(QMatMul {
        w: Arc::new(pack(w.as_bytes(), wdt == i8::datum_type(), k, n, w0)),
    })
}

/// Transposes `[k][n]` weight bytes into the kernels' layout (see [`Packed`]).
fn pack(bytes: &[u8], signed: bool, k: usize, n: usize, w0: Vec<i32>) -> Packed {
    let kp = k.div_ceil(KPAD) * KPAD;
    let np = n.div_ceil(COLS) * COLS;
    let mut wt = vec![0i8; np * kp];
    let mut colsum = vec![0i32; n];
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
        }
    }
    Packed {
        k,
        n,
        kp,
        wt,
        colsum,
        w0,
        shift: if signed { 0 } else { 128 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    /// The packed kernels against the formula's definition, for u8 and i8 weights and
    /// activations, per-column zero points, k and n not multiples of the padding, 1 and 3 rows.
    #[test]
    fn equals_definition() {
        for (k, n, rows) in [
            (1, 1, 1),
            (17, 5, 1),
            (48, 24, 3),
            (100, 9, 2),
            (576, 13, 1),
        ] {
            for (w_signed, x_signed) in [(false, false), (true, false), (true, true), (false, true)]
            {
                let w = lcg(k * n, 3 + k as u64);
                let x = lcg(rows * k, 11 + n as u64);
                let w0: Vec<i32> = (0..n).map(|j| (j as i32 * 37) % 200 - 60).collect();
                let x0 = 77;
                let p = pack(&w, w_signed, k, n, w0.clone());
                let mut ys = vec![0; rows * n];
                matmul(&p, &x, x_signed, x0, rows, &mut ys);
                let val = |b: u8, s: bool| if s { b as i8 as i32 } else { b as i32 };
                for r in 0..rows {
                    for j in 0..n {
                        let want: i32 = (0..k)
                            .map(|kk| {
                                (val(x[r * k + kk], x_signed) - x0)
                                    * (val(w[kk * n + j], w_signed) - w0[j])
                            })
                            .sum();
                        assert_eq!(ys[r * n + j], want, "k {k} n {n} r {r} j {j}");
                    }
                }
            }
        }
    }
}

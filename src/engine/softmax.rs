//! A softmax over one axis that is not the innermost, for tract plans.
//!
//! tract 0.23.9's `Softmax` has a vectorised path only when the softmax axes are the trailing axes
//! of a contiguous tensor. Anything else falls to an ndarray walk that collapses a view per lane
//! and reduces it element by element, each `exp` computed twice: FastestDet's class scores
//! (`Transpose → Softmax(axis 3) → Transpose` over 80 × 22 × 22, which tract folds into one
//! `Softmax` over axis 1 of the NCHW tensor) took 5–9 ms of a 45 ms inference that way, more than
//! all 48 of its matrix products.
//!
//! [`AxisSoftmax`] sees the tensor as `[outer, n, inner]` (n the softmax axis): the running maximum
//! and the sum of exponentials of every lane are reduced row by row over the contiguous `inner`
//! axis, so each pass is a straight loop over memory, and the final `exp(x − max) / sum` is one
//! more pass over the output rows. The arithmetic per element is tract's slow path's (`exp` of
//! `x − max`, sum in axis order, then a division), so values agree to rounding of the sum only;
//! on AVX-512 16 lanes at a time with [`super::vmath::exp512`] (about one ulp from `expf`).
//! Both passes split over tract's thread pool (lanes in the first, rows in the second).

use tract_core::internal::*;
use tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::pass::{swap_ops, GraphPass};
#[cfg(target_arch = "x86_64")]
use super::vmath::exp512;

/// f32 softmax over `axis`, which is not the last axis of the input.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct AxisSoftmax {
    pub axis: usize,
}

impl Op for AxisSoftmax {
    fn name(&self) -> StaticName {
        "AxisSoftmax".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("axis: {}", self.axis)])
    }

    op_as_typed_op!();
}

/// `[outer, n, inner]` of `shape` around `axis`.
fn split_shape(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Most lanes per task unit of the reduction pass: enough contiguous floats per row to stream
/// well, few enough that a small tensor still splits over threads.
const LANES_PER_TASK: usize = 64;

impl EvalOp for AxisSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "AxisSoftmax: input is {:?}, expected f32",
            input.datum_type()
        );
        ensure!(
            self.axis < input.rank(),
            "AxisSoftmax: axis {} of a rank-{} input",
            self.axis,
            input.rank()
        );
        let (outer, n, inner) = split_shape(input.shape(), self.axis);
        let mut output = input.into_tensor();
        if output.len() == 0 || n == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        // Pass 1: per lane (outer, inner) the maximum and the sum of exp(x − max), reading only.
        let mut stats = vec![[f32::NEG_INFINITY, 0f32]; outer * inner];
        {
            let x = output.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let total = x.len();
            // Tasks take whole multiples of this many lanes, so it must divide their count.
            let lanes = stats.len();
            let per_task = (1..=LANES_PER_TASK)
                .rev()
                .find(|d| lanes % d == 0)
                .unwrap_or(1);
            tract_linalg::multithread::par_chunks_mut(
                &mut stats,
                per_task,
                total,
                // `first` counts units of `per_task` lanes.
                |first, chunk| {
                    reduce_lanes(x, n, inner, first * per_task, chunk);
                    Ok(())
                },
            )?;
        }
        // Pass 2: every row of the output, in place.
        {
            let mut y = output.try_as_plain_ram_mut()?;
            let y = y.as_slice_mut::<f32>()?;
            let total = y.len();
            tract_linalg::multithread::par_chunks_mut(y, inner, total, |first_row, rows| {
                for (r, row) in rows.chunks_mut(inner).enumerate() {
                    let o = (first_row + r) / n;
                    let lanes = &stats[o * inner..][..inner];
                    #[cfg(target_arch = "x86_64")]
                    if super::vmath::avx512f() {
                        // SAFETY: AVX-512F checked; `row` and `lanes` hold `inner` each.
                        unsafe { normalise_avx512(row, lanes) };
                        continue;
                    }
                    for (v, &[max, sum]) in row.iter_mut().zip(lanes) {
                        *v = (*v - max).exp() / sum;
                    }
                }
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

/// Max and sum of exponentials of the lanes `first..first + stats.len()` (lane = o · inner + i),
/// walking the softmax axis row by row so every inner loop reads contiguous memory. A chunk never
/// straddles two `outer` blocks when its length divides `inner`; it may otherwise, and is then
/// split at the block edge.
fn reduce_lanes(x: &[f32], n: usize, inner: usize, first: usize, stats: &mut [[f32; 2]]) {
    let mut lane = first;
    let mut rest = stats;
    while !rest.is_empty() {
        let (o, i) = (lane / inner, lane % inner);
        let len = rest.len().min(inner - i);
        let (now, later) = rest.split_at_mut(len);
        segment_stats(x, o * n * inner + i, n, inner, now);
        lane += len;
        rest = later;
    }
}

/// The max and sum of exponentials of `stats.len()` lanes of one `outer` block, the first at
/// `base`: on AVX-512 by [`block_stats`], else row by row.
fn segment_stats(x: &[f32], base: usize, n: usize, inner: usize, stats: &mut [[f32; 2]]) {
    let len = stats.len();
    #[cfg(target_arch = "x86_64")]
    if super::vmath::avx512f() {
        assert!(base + (n - 1) * inner + len <= x.len());
        for (b, block) in stats.chunks_mut(BLOCK).enumerate() {
            // SAFETY: AVX-512F checked; the block's lanes of every row lie within `x`
            // (asserted for the last row).
            unsafe { block_stats(x[base + b * BLOCK..].as_ptr(), n, inner, block) };
        }
        return;
    }
    for s in stats.iter_mut() {
        *s = [f32::NEG_INFINITY, 0.0];
    }
    for k in 0..n {
        for (s, &v) in stats.iter_mut().zip(&x[base + k * inner..][..len]) {
            // NaN-propagating like tract's `partial_cmp` fold is not: a NaN lane gives NaN
            // outputs either way, through exp(NaN − max).
            s[0] = if v > s[0] { v } else { s[0] };
        }
    }
    for k in 0..n {
        for (s, &v) in stats.iter_mut().zip(&x[base + k * inner..][..len]) {
            s[1] += (v - s[0]).exp();
        }
    }
}

/// Lanes [`block_stats`] takes at a time: four vectors of maxima and four of sums in registers.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 64;

/// [`reduce_lanes`] for `stats.len()` (at most [`BLOCK`]) lanes starting at `x`, on AVX-512: the
/// maxima as `vmaxps(v, max)` (a NaN element skipped, as the scalar loop skips it), then the sums
/// of [`super::vmath::exp512`]`(v − max)` in row order. The scalar loop's `expf` calls took most
/// of FastestDet's 0.13 ms softmax over 80 × 22 × 22.
///
/// # Safety
/// AVX-512F; `x + k·inner + l` readable for `k < n`, `l < stats.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_stats(x: *const f32, n: usize, inner: usize, stats: &mut [[f32; 2]]) {
    use std::arch::x86_64::*;
    const V: usize = BLOCK / 16;
    let len = stats.len();
    assert!(len <= BLOCK);
    let masks: [__mmask16; V] =
        std::array::from_fn(|v| ((1u32 << len.saturating_sub(16 * v).min(16)) - 1) as __mmask16);
    let mut max = [_mm512_set1_ps(f32::NEG_INFINITY); V];
    let mut sum = [_mm512_setzero_ps(); V];
    let vectors = len.div_ceil(16);
    for k in 0..n {
        let row = x.add(k * inner);
        for v in 0..vectors {
            let x = _mm512_maskz_loadu_ps(masks[v], row.add(16 * v));
            max[v] = _mm512_max_ps(x, max[v]);
        }
    }
    for k in 0..n {
        let row = x.add(k * inner);
        for v in 0..vectors {
            let x = _mm512_maskz_loadu_ps(masks[v], row.add(16 * v));
            sum[v] = _mm512_add_ps(sum[v], exp512(_mm512_sub_ps(x, max[v])));
        }
    }
    let (mut m, mut s) = ([0f32; BLOCK], [0f32; BLOCK]);
    for v in 0..V {
        _mm512_storeu_ps(m.as_mut_ptr().add(16 * v), max[v]);
        _mm512_storeu_ps(s.as_mut_ptr().add(16 * v), sum[v]);
    }
    for (l, st) in stats.iter_mut().enumerate() {
        *st = [m[l], s[l]];
    }
}

/// The second pass over one output row on AVX-512: `exp512(v − max) / sum`, each lane's max and
/// sum taken from the pairs of `lanes` by one permute each.
///
/// # Safety
/// AVX-512F; `lanes` holds at least `row.len()` pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn normalise_avx512(row: &mut [f32], lanes: &[[f32; 2]]) {
    use std::arch::x86_64::*;
    assert!(lanes.len() >= row.len());
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    let (y, st) = (row.as_mut_ptr(), lanes.as_ptr() as *const f32);
    let mut j = 0;
    while j < row.len() {
        let m = row.len() - j;
        let a = _mm512_maskz_loadu_ps(mask(2 * m), st.add(2 * j));
        // All its lanes may be masked off, past the pairs' end: a wrapping address.
        let b = _mm512_maskz_loadu_ps(
            mask((2 * m).saturating_sub(16)),
            st.wrapping_add(2 * j + 16),
        );
        let (max, sum) = (
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
        );
        let v = _mm512_maskz_loadu_ps(mask(m), y.add(j));
        let e = exp512(_mm512_sub_ps(v, max));
        _mm512_mask_storeu_ps(y.add(j), mask(m), _mm512_div_ps(e, sum));
        j += 16;
    }
}

impl TypedOp for AxisSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Swaps tract's `Softmax` for [`AxisSoftmax`] where it would take its slow path: f32, plain
/// softmax (not log), one axis that is not the last, concrete shape. Trailing-axis softmaxes keep
/// tract's vectorised row kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct AxisSoftmaxPass;

impl GraphPass for AxisSoftmaxPass {
    fn name(&self) -> &'static str {
        "AxisSoftmax"
    }
    fn replaces(&self) -> &'static str {
        "inner-axis Softmax"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if !super::fpdet_enabled() {
            return Ok(0);
        }
        Ok(swap_ops(model, |model, node| {
            let op = node.op_as::<Softmax>()?;
            if op.kind != SoftmaxKind::Softmax || op.quant_output_dt.is_some() || op.axes.len() != 1
            {
                return None;
            }
            let fact = model.outlet_fact(*node.inputs.first()?).ok()?;
            let axis = op.axes[0];
            if fact.datum_type != f32::datum_type()
                || fact.shape.as_concrete().is_none()
                || axis + 1 >= fact.rank()
            {
                return None;
            }
            Some(Box::new(AxisSoftmax { axis }) as Box<dyn TypedOp>)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax over `axis` written the obvious way, in f64.
    fn reference(shape: &[usize], x: &[f32], axis: usize) -> Vec<f32> {
        let (outer, n, inner) = split_shape(shape, axis);
        let mut y = vec![0f32; x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| o * n * inner + k * inner + i;
                let max = (0..n).map(|k| x[at(k)] as f64).fold(f64::MIN, f64::max);
                let sum: f64 = (0..n).map(|k| (x[at(k)] as f64 - max).exp()).sum();
                for k in 0..n {
                    y[at(k)] = ((x[at(k)] as f64 - max).exp() / sum) as f32;
                }
            }
        }
        y
    }

    #[test]
    fn matches_reference_on_odd_shapes() {
        for (shape, axis) in [
            (vec![1usize, 80, 22, 22], 1usize),
            (vec![2, 3, 5, 7], 1),
            (vec![3, 4, 130], 0),
            (vec![2, 5, 3, 1], 2),
        ] {
            let len: usize = shape.iter().product();
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1013) as f32 - 500.0) / 37.0)
                .collect();
            let t = Tensor::from_shape(&shape, &x).unwrap();
            let ctx = EvalContext::out_of_plan();
            let y = AxisSoftmax { axis }
                .eval(&ctx, tvec!(t.clone().into_tvalue()))
                .unwrap();
            let tract = Softmax::new(tvec![axis], None, SoftmaxKind::Softmax)
                .eval(&ctx, tvec!(t.into_tvalue()))
                .unwrap();
            let y = y[0].try_as_plain_ram().unwrap();
            let y = y.as_slice::<f32>().unwrap();
            let tract = tract[0].try_as_plain_ram().unwrap();
            let tract = tract.as_slice::<f32>().unwrap();
            let want = reference(&shape, &x, axis);
            for ((a, b), t) in y.iter().zip(&want).zip(tract) {
                assert!(
                    (a - b).abs() <= 1e-6,
                    "{shape:?} axis {axis}: {a} vs f64 {b}"
                );
                assert!(
                    (a - t).abs() <= 1e-6,
                    "{shape:?} axis {axis}: {a} vs tract {t}"
                );
            }
        }
    }

    /// Split over three threads (tensor above tract's element threshold): the same values as on
    /// one, lanes and rows handed out in chunks that straddle the `outer` blocks.
    #[test]
    fn threads_give_the_same_values() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let shape = [3usize, 7, 45, 50];
        let len: usize = shape.iter().product();
        let x: Vec<f32> = (0..len).map(|i| ((i * 31 % 977) as f32) / 50.0).collect();
        let t = Tensor::from_shape(&shape, &x).unwrap();
        let run = |t: Tensor| {
            AxisSoftmax { axis: 1 }
                .eval(&EvalContext::out_of_plan(), tvec!(t.into_tvalue()))
                .unwrap()
                .remove(0)
                .into_tensor()
        };
        let one = run(t.clone());
        let three = multithread_tract_scope(Executor::multithread(3), || run(t));
        assert_eq!(one, three);
    }
}

//! tract's `Resize` with a faster innermost-axis pass.
//!
//! tract 0.23.9 resamples one axis at a time (`resample_axis`), looping over output positions and,
//! for each, over a run of `inner` contiguous elements. Along the last axis of an NCHW map `inner`
//! is 1, so every output element pays for slicing, a fill and a loop set-up: the W pass of
//! nanodet-g's and CenterNet's bilinear x2 up-samplings was most of their Resize time (8–12 % of
//! inference). [`PlannedResize`] uses tract's own per-axis plan (same taps, same weights) and the
//! same arithmetic per element (`0 + w0·s0 + w1·s1 …`, zero weights skipped, in tap order), so its
//! output is bit-identical; it only runs the `inner == 1` case as a flat loop and skips the copy
//! of the input tract makes. With threads, each axis pass splits its planes (rows, for the last
//! axis) over tract's pool. Other element types go through tract's code.

use tract_core::internal::*;

use super::par::{for_each_chunk, per_task};
use super::pass::{swap_ops, GraphPass};
use tract_core::ops::nn::resize::{resample_axis, AxisPlan, Resize};

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct PlannedResize {
    pub inner: Resize,
}

impl Op for PlannedResize {
    fn name(&self) -> StaticName {
        "PlannedResize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PlannedResize {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if inputs[0].datum_type() != f32::datum_type() {
            return self.inner.eval(ctx, inputs);
        }
        let scales = self
            .inner
            .optional_scales_input
            .and_then(|ix| inputs.get(ix));
        let sizes = self
            .inner
            .optional_sizes_input
            .and_then(|ix| inputs.get(ix));
        let output_shape = self.inner.compute_output_shape(
            inputs[0].shape(),
            scales.map(|t| &**t),
            sizes.map(|t| &**t),
        )?;
        // Same scale choice as tract's Resize::eval.
        let scales: TVec<f32> = if let Some(scales) = scales.filter(|s| s.len() == inputs[0].rank())
        {
            scales.try_as_plain_ram()?.as_slice::<f32>()?.into()
        } else {
            output_shape
                .iter()
                .zip(inputs[0].shape())
                .map(|(o, i)| *o as f32 / *i as f32)
                .collect()
        };
        let input = &inputs[0];
        // The axes that change.
        let axes: Vec<(usize, f32)> = scales
            .iter()
            .copied()
            .enumerate()
            .filter(|&(axis, scale)| !(input.shape()[axis] == output_shape[axis] && scale == 1.0))
            .collect();
        if axes.is_empty() {
            return Ok(tvec!(input.clone()));
        }
        let src = input.try_as_plain_ram()?;
        let src = src.as_slice::<f32>()?;
        // The last pass writes straight into the output tensor (an `ArrayD` turned into a tensor
        // afterwards was copied element by element: 1.4 MB took longer than the resampling).
        // SAFETY: the last pass writes every element.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&output_shape)? };
        let mut shape: TVec<usize> = input.shape().into();
        let mut data: Option<Vec<f32>> = None;
        for (i, &(axis, scale)) in axes.iter().enumerate() {
            let (len_in, len_out) = (shape[axis], output_shape[axis]);
            let plan = self.inner.plan_axis(scale, len_in, len_out);
            let src: &[f32] = data.as_deref().unwrap_or(src);
            let len = src.len() / len_in.max(1) * len_out;
            let mut next = vec![];
            let mut plain;
            let dst: &mut [f32] = if i + 1 == axes.len() {
                plain = out.try_as_plain_ram_mut()?;
                plain.as_slice_mut::<f32>()?
            } else {
                next.resize(len, 0f32);
                &mut next
            };
            ensure!(
                dst.len() == len,
                "PlannedResize: {} outputs for {len}",
                dst.len()
            );
            let inner: usize = shape[axis + 1..].iter().product();
            // Blocks (one `len_in × inner` run of the input, the `len_out × inner` run it gives)
            // are independent.
            let (block_in, block_out) = (len_in * inner, len_out * inner);
            let per_run = per_task(len.checked_div(block_out).unwrap_or(0));
            // The axis's tap pairs and, for the last axis on AVX-512, their 16-output groups:
            // made once for all the pass's tasks.
            let pairs = tap_pairs(&plan, len_in);
            #[cfg(target_arch = "x86_64")]
            let groups = pairs
                .as_deref()
                .filter(|_| inner == 1)
                .and_then(|p| x512::Group::plan(p, len_in));
            for_each_chunk(
                dst,
                per_run * block_out,
                || (),
                |i, out, _| {
                    let src = &src[i * per_run * block_in..][..out.len() / len_out * len_in];
                    #[cfg(target_arch = "x86_64")]
                    if let Some(groups) = &groups {
                        return x512::rows(src, len_in, groups, out);
                    }
                    match &pairs {
                        _ if inner == 1 => {
                            resample_last_axis(src, len_in, &plan, pairs.as_deref(), 0.0, out)
                        }
                        Some(pairs) => resample_rows(src, len_in, inner, pairs, out),
                        None => resample_axis(src, &shape, axis, &plan, 0.0, out),
                    }
                },
            );
            if i + 1 < axes.len() {
                data = Some(next);
            }
            shape[axis] = len_out;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for PlannedResize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.inner.output_facts(inputs)
    }

    as_op!();
}

/// An output of one tap has no second: `(i0, w0, ONE_TAP, 0.0)`.
const ONE_TAP: usize = usize::MAX;

/// The non-zero-weight taps of output `x` of `plan`, in tap order.
fn taps(plan: &AxisPlan, x: usize) -> impl Iterator<Item = (&usize, &f32)> {
    let t = x * plan.window..(x + 1) * plan.window;
    plan.indices[t.clone()]
        .iter()
        .zip(&plan.weights[t])
        .filter(|(_, &w)| w != 0.0)
}

/// Per output of `plan`, its one or two non-zero taps as `(i0, w0, i1, w1)` (`i1` = [`ONE_TAP`]
/// for one), when every output has one or two (linear interpolation, up or down, any coordinate
/// mode) and none is extrapolated.
fn tap_pairs(plan: &AxisPlan, len_in: usize) -> Option<Vec<(usize, f32, usize, f32)>> {
    (0..plan.extrapolated.len())
        .map(|x| {
            if plan.extrapolated[x] {
                return None;
            }
            let mut t = taps(plan, x);
            match (t.next(), t.next(), t.next()) {
                (Some((&i0, &w0)), Some((&i1, &w1)), None) if i0 < len_in && i1 < len_in => {
                    Some((i0, w0, i1, w1))
                }
                (Some((&i0, &w0)), None, None) if i0 < len_in => Some((i0, w0, ONE_TAP, 0.0)),
                _ => None,
            }
        })
        .collect()
}

/// `resample_axis` for the last axis (`inner == 1`), element for element the same arithmetic:
/// `0 + w0·s0 + w1·s1 …` over the taps whose weight is not zero, in tap order. With `pairs`
/// ([`tap_pairs`]), a loop over them: tract's plan loop (window, zero tests, extrapolation test
/// per element) took 3.5 ns per output of nanodet-g's x2 up-sampling.
fn resample_last_axis(
    input: &[f32],
    len_in: usize,
    plan: &AxisPlan,
    pairs: Option<&[(usize, f32, usize, f32)]>,
    extrapolation_value: f32,
    output: &mut [f32],
) {
    let len_out = plan.extrapolated.len();
    if len_in == 0 || len_out == 0 {
        return;
    }
    let rows = input
        .chunks_exact(len_in)
        .zip(output.chunks_exact_mut(len_out));
    if let Some(pairs) = pairs {
        for (src, dst) in rows {
            for (d, &(i0, w0, i1, w1)) in dst.iter_mut().zip(pairs) {
                *d = if i1 == ONE_TAP {
                    0.0 + w0 * src[i0]
                } else {
                    0.0 + w0 * src[i0] + w1 * src[i1]
                };
            }
        }
        return;
    }
    for (src, dst) in rows {
        for (x, d) in dst.iter_mut().enumerate() {
            if plan.extrapolated[x] {
                *d = extrapolation_value;
                continue;
            }
            let mut acc = 0.0f32;
            for (&i, &w) in taps(plan, x) {
                acc += w * src[i];
            }
            *d = acc;
        }
    }
}

/// The last axis's pass on AVX-512: 16 outputs at a time, their two taps picked out of 32
/// consecutive inputs with one permute each.
///
/// Why: the scalar loop over tap pairs gathers two inputs per output; nanodet-g's four resizes
/// (x2 up, x0.5 down, bilinear) took about 1 ms per image at 1 thread (Zen 5, 2026-12-07), against
/// 0.26 ms in onnxruntime. Same arithmetic per element, in the same order (`0 + w0·s0`, then
/// `+ w1·s1` where there is a second tap, no fused multiply-add): bit-identical.
#[cfg(target_arch = "x86_64")]
mod x512 {
    use std::arch::x86_64::*;

    /// 16 consecutive outputs whose taps lie within 32 inputs from `base`.
    pub(super) struct Group {
        base: usize,
        idx0: [i32; 16],
        idx1: [i32; 16],
        w0: [f32; 16],
        w1: [f32; 16],
        /// Lanes with a second tap.
        two: u16,
        /// Outputs in the group (16 but in the last).
        lanes: usize,
    }

    impl Group {
        /// The groups of a row of `pairs` (`super::tap_pairs`) over `len_in` inputs, or `None`
        /// where the CPU lacks AVX-512 or some group's taps span more than 32 inputs.
        pub(super) fn plan(
            pairs: &[(usize, f32, usize, f32)],
            len_in: usize,
        ) -> Option<Vec<Group>> {
            if !std::arch::is_x86_feature_detected!("avx512f") || len_in > i32::MAX as usize {
                return None;
            }
            pairs
                .chunks(16)
                .map(|chunk| {
                    let second = |&(i0, _, i1, _): &(usize, f32, usize, f32)| {
                        if i1 == super::ONE_TAP {
                            i0
                        } else {
                            i1
                        }
                    };
                    let base = chunk.iter().map(|p| p.0.min(second(p))).min()?;
                    let top = chunk.iter().map(|p| p.0.max(second(p))).max()?;
                    if top - base >= 32 {
                        return None;
                    }
                    let mut g = Group {
                        base,
                        idx0: [0; 16],
                        idx1: [0; 16],
                        w0: [0.0; 16],
                        w1: [0.0; 16],
                        two: 0,
                        lanes: chunk.len(),
                    };
                    for (l, p) in chunk.iter().enumerate() {
                        g.idx0[l] = (p.0 - base) as i32;
                        g.idx1[l] = (second(p) - base) as i32;
                        g.w0[l] = p.1;
                        g.w1[l] = p.3;
                        if p.2 != super::ONE_TAP {
                            g.two |= 1 << l;
                        }
                    }
                    Some(g)
                })
                .collect()
        }
    }

    /// Every `len_in`-long row of `input` into its row of `output`, by [`Group::plan`]'s groups.
    pub(super) fn rows(input: &[f32], len_in: usize, groups: &[Group], output: &mut [f32]) {
        let len_out: usize = groups.iter().map(|g| g.lanes).sum();
        if len_in == 0 || len_out == 0 {
            return;
        }
        for (src, dst) in input
            .chunks_exact(len_in)
            .zip(output.chunks_exact_mut(len_out))
        {
            // SAFETY: `plan` returns groups only where the CPU has AVX-512F; each group's loads
            // are masked to the row and its stores to the group's outputs.
            unsafe { row(src, groups, dst) };
        }
    }

    /// One row: `dst[x] = 0 + w0·src[i0] (+ w1·src[i1])` for every output, group by group.
    ///
    /// # Safety
    /// AVX-512F; `groups` planned for `src.len()` inputs and `dst.len()` outputs.
    #[target_feature(enable = "avx512f")]
    unsafe fn row(src: &[f32], groups: &[Group], dst: &mut [f32]) {
        let len = src.len();
        let mut at = 0;
        for g in groups {
            assert!(g.base < len && at + g.lanes <= dst.len());
            // Loads masked to the row's end.
            let left = len - g.base;
            let mask = |from: usize| -> __mmask16 {
                let n = left.saturating_sub(from).min(16);
                ((1u32 << n) - 1) as __mmask16
            };
            let p = src.as_ptr().add(g.base);
            let lo = _mm512_maskz_loadu_ps(mask(0), p);
            let hi = if left > 16 {
                _mm512_maskz_loadu_ps(mask(16), p.add(16))
            } else {
                _mm512_setzero_ps()
            };
            let i0 = _mm512_loadu_si512(g.idx0.as_ptr().cast());
            let i1 = _mm512_loadu_si512(g.idx1.as_ptr().cast());
            let s0 = _mm512_permutex2var_ps(lo, i0, hi);
            let s1 = _mm512_permutex2var_ps(lo, i1, hi);
            let first = _mm512_add_ps(
                _mm512_setzero_ps(),
                _mm512_mul_ps(_mm512_loadu_ps(g.w0.as_ptr()), s0),
            );
            let both = _mm512_mask_add_ps(
                first,
                g.two,
                first,
                _mm512_mul_ps(_mm512_loadu_ps(g.w1.as_ptr()), s1),
            );
            let out = ((1u32 << g.lanes) - 1) as __mmask16;
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(at), out, both);
            at += g.lanes;
        }
    }
}

/// An axis with `inner > 1` contiguous elements per position (the H pass of an NCHW map) by its
/// tap pairs: each output run is `0 + w0·run(i0)` (`+ w1·run(i1)`), element by element as tract's
/// `resample_axis` computes it, but as one plain loop per run that vectorises (tract's loop set
/// itself up again for every output position: half of nanodet-g's resize time after the W pass
/// went to AVX-512).
fn resample_rows(
    input: &[f32],
    len_in: usize,
    inner: usize,
    pairs: &[(usize, f32, usize, f32)],
    output: &mut [f32],
) {
    let len_out = pairs.len();
    for (src, dst) in input
        .chunks_exact(len_in * inner)
        .zip(output.chunks_exact_mut(len_out * inner))
    {
        for (run, &(i0, w0, i1, w1)) in dst.chunks_exact_mut(inner).zip(pairs) {
            let a = &src[i0 * inner..][..inner];
            if i1 == ONE_TAP {
                for (o, a) in run.iter_mut().zip(a) {
                    *o = 0.0 + w0 * a;
                }
            } else {
                let b = &src[i1 * inner..][..inner];
                for ((o, a), b) in run.iter_mut().zip(a).zip(b) {
                    *o = 0.0 + w0 * a + w1 * b;
                }
            }
        }
    }
}

/// Swaps tract's `Resize` for [`PlannedResize`].
pub struct PlannedResizePass;

impl GraphPass for PlannedResizePass {
    fn name(&self) -> &'static str {
        "PlannedResize"
    }
    fn replaces(&self) -> &'static str {
        "Resize"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        Ok(swap_ops(model, |_, node| {
            let inner = node.op_as::<Resize>()?.clone();
            Some(Box::new(PlannedResize { inner }))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        crate::engine::testvals::states(seed)
            .take(n)
            .map(|s| ((s >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0)
            .collect()
    }

    /// Bit-identical to tract's Resize: linear/nearest/cubic, several coordinate modes, integer and
    /// fractional scales, scales given as a scales input or as sizes.
    #[test]
    fn same_as_tract_resize() {
        // The last: rows long enough for whole 16-output groups of the AVX-512 pass.
        let shapes: [&[usize]; 4] = [&[1, 3, 5, 7], &[2, 4, 6], &[1, 2, 9, 4], &[1, 2, 3, 45]];
        let mut checked = 0;
        for (si, shape) in shapes.iter().enumerate() {
            let rank = shape.len();
            let n: usize = shape.iter().product();
            let x = Tensor::from_shape(shape, &lcg(n, si as u64 + 1)).unwrap();
            for interpolator in [
                Interpolator::Linear,
                Interpolator::Nearest,
                Interpolator::Cubic,
            ] {
                for ct in [
                    CoordTransformer::HalfPixel,
                    CoordTransformer::AlignCorners,
                    CoordTransformer::Asymmetric,
                ] {
                    for factor in [2.0f32, 1.5, 0.5] {
                        let mut scales = vec![1f32; rank];
                        scales[rank - 1] = factor;
                        scales[rank - 2] = if factor == 0.5 { 2.0 } else { factor };
                        let op = Resize {
                            coord_transformer: ct.clone(),
                            interpolator: interpolator.clone(),
                            nearest: Nearest::Floor,
                            optional_scales_input: Some(1),
                            optional_sizes_input: None,
                        };
                        let inputs =
                            || tvec!(x.clone().into_tvalue(), tensor1(&scales).into_tvalue());
                        let ctx = EvalContext::out_of_plan();
                        let want = op.eval(&ctx, inputs()).unwrap();
                        let got = PlannedResize { inner: op.clone() }
                            .eval(&ctx, inputs())
                            .unwrap();
                        assert_eq!(want[0].shape(), got[0].shape());
                        let w = want[0].try_as_plain_ram().unwrap();
                        let g = got[0].try_as_plain_ram().unwrap();
                        let (w, g) = (w.as_slice::<f32>().unwrap(), g.as_slice::<f32>().unwrap());
                        assert!(
                            w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{shape:?} {interpolator:?} {ct:?} x{factor}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 108);
    }

    /// The AVX-512 pass takes the linear x2 and x0.5 rows (so that `same_as_tract_resize` runs
    /// it where the CPU has AVX-512).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_groups_cover_linear_rows() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("SKIP: no AVX-512 here");
            return;
        }
        for (scale, len_in, len_out) in [(2.0f32, 45, 90), (0.5, 52, 26), (1.5, 45, 67)] {
            let op = Resize {
                coord_transformer: CoordTransformer::HalfPixel,
                interpolator: Interpolator::Linear,
                nearest: Nearest::Floor,
                optional_scales_input: Some(1),
                optional_sizes_input: None,
            };
            let plan = op.plan_axis(scale, len_in, len_out);
            let pairs = tap_pairs(&plan, len_in).expect("linear taps come in pairs");
            let groups = x512::Group::plan(&pairs, len_in).expect("groups within 32 inputs");
            assert_eq!(groups.len(), len_out.div_ceil(16), "x{scale}");
        }
    }

    /// Split over three threads (planes for the H pass, rows for the W pass, with a last run
    /// shorter than the others): the same bits as on one.
    #[test]
    fn threads_give_the_same_values() {
        use tract_core::ops::nn::resize::{CoordTransformer, Interpolator, Nearest};
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let shape = [1usize, 7, 13, 11];
        let x = Tensor::from_shape(&shape, &lcg(shape.iter().product(), 9)).unwrap();
        let op = PlannedResize {
            inner: Resize {
                coord_transformer: CoordTransformer::HalfPixel,
                interpolator: Interpolator::Linear,
                nearest: Nearest::Floor,
                optional_scales_input: Some(1),
                optional_sizes_input: None,
            },
        };
        let inputs = || {
            tvec!(
                x.clone().into_tvalue(),
                tensor1(&[1f32, 1.0, 2.0, 2.0]).into_tvalue()
            )
        };
        let ctx = EvalContext::out_of_plan();
        let one = op.eval(&ctx, inputs()).unwrap().remove(0).into_tensor();
        let three = multithread_tract_scope(Executor::multithread(3), || {
            op.eval(&ctx, inputs()).unwrap().remove(0).into_tensor()
        });
        assert_eq!(one.shape(), &[1, 7, 26, 22]);
        assert_eq!(one, three);
    }
}

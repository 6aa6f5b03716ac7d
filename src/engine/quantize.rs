//! f32 → u8/i8 quantization (ONNX `QuantizeLinear`) in a loop that vectorizes.
//!
//! tract 0.23.9's `QuantizeLinearU8` calls `round_ties_to_even` per element, which without SSE4.1
//! at compile time is a libm call; on nanodet-g-int8 its 26 nodes took 12 % of inference.
//! [`FastQuantize`] computes the same value, `clamp(round_ties_even(x · scale) + zero_point)`, in
//! f32 arithmetic the compiler turns into SIMD. For every finite input with `|x · scale| < 2^31`
//! the result is identical to tract's; beyond that (and for ±inf) it saturates as ONNX specifies,
//! where tract's `i32` addition would wrap. NaN gives the zero point, as in tract.

use tract_core::internal::*;

use super::par::{for_each_chunk, threads};
use super::pass::{swap_ops, GraphPass};
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::quant::{QuantizeLinearI8, QuantizeLinearU8};

#[derive(Debug, Clone, PartialEq)]
pub struct FastQuantize {
    /// Multiplier (tract stores `1 / onnx_scale`).
    scale: f32,
    zero_point: i32,
    signed: bool,
    out_fact: TypedFact,
}

impl Eq for FastQuantize {}

impl Op for FastQuantize {
    fn name(&self) -> StaticName {
        "FastQuantize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "x·{} + {} → {}",
            self.scale,
            self.zero_point,
            if self.signed { "i8" } else { "u8" }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FastQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let plain = x.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        let mut out = unsafe { Tensor::uninitialized_dt(self.out_fact.datum_type, x.shape())? };
        // Element-wise: with threads, a few parts per thread, none under 32 KiB (below that the
        // hand-off costs more than the loop).
        let part = xs.len().div_ceil(4 * threads()).max(1 << 15);
        for_each_chunk(
            out.as_bytes_mut(),
            part,
            || (),
            |i, out, _| {
                let xs = &xs[i * part..][..out.len()];
                quantize(xs, self.scale, self.zero_point, self.signed, out)
            },
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for FastQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self
            .out_fact
            .datum_type
            .fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// `out[i] = clamp(round_ties_even(x[i] · scale) + zp)` as u8 (or i8 bytes). Compiled a second
/// time for AVX2 and picked at run time where the CPU has it, as `QConv`'s requantization (same
/// operations, so the same bytes).
pub fn quantize(xs: &[f32], scale: f32, zp: i32, signed: bool, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { quantize_avx2(xs, scale, zp, signed, out) };
        return;
    }
    quantize_any(xs, scale, zp, signed, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(xs: &[f32], scale: f32, zp: i32, signed: bool, out: &mut [u8]) {
    quantize_any(xs, scale, zp, signed, out)
}

#[inline(always)]
fn quantize_any(xs: &[f32], scale: f32, zp: i32, signed: bool, out: &mut [u8]) {
    let zp = zp as f32;
    store_8bit(xs, signed, out, |x| {
        let v = x * scale;
        let r = round_ties_even_nonneg(v.abs()).copysign(v);
        (if r.is_nan() { 0.0 } else { r }) + zp
    });
}

/// `out[i] = f(xs[i])` clamped to the u8 (or i8) range, as bytes, in a loop that vectorizes: the
/// store of [`quantize`] and of `QConv`'s requantization.
#[inline(always)]
pub(super) fn store_8bit<T: Copy>(xs: &[T], signed: bool, out: &mut [u8], f: impl Fn(T) -> f32) {
    let (lo, hi) = if signed {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    let q = |x: T| f(x).max(lo).min(hi);
    // SAFETY: `q` is finite and inside [lo, hi] ⊂ i32 (`max`/`min` return the non-NaN operand),
    // which is all `to_int_unchecked` asks; the checked `as i32` does not vectorize.
    if signed {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = unsafe { q(*x).to_int_unchecked::<i32>() } as i8 as u8;
        }
    } else {
        for (x, o) in xs.iter().zip(out.iter_mut()) {
            *o = unsafe { q(*x).to_int_unchecked::<i32>() } as u8;
        }
    }
}

/// `x.round_ties_even()` for `x >= 0` (NaN passes through) in plain float arithmetic: adding and
/// removing 2^23 rounds to the nearest integer, ties to even, under the default rounding mode, and
/// from 2^23 up every f32 is already an integer. `round_ties_even` itself is a libm call per
/// element on a baseline x86-64 build.
#[inline(always)]
pub fn round_ties_even_nonneg(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    if x < TWO_23 {
        (x + TWO_23) - TWO_23
    } else {
        x
    }
}

/// Replace tract's `QuantizeLinear` nodes that quantize f32; returns how many.
/// Swaps f32 `QuantizeLinear` (tract's element-wise op) for [`FastQuantize`].
pub struct FastQuantizePass;

impl GraphPass for FastQuantizePass {
    fn name(&self) -> &'static str {
        "FastQuantize"
    }
    fn replaces(&self) -> &'static str {
        "QuantizeLinear"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        Ok(swap_ops(model, |model, node| {
            Some(Box::new(fast_quantize(model, node)?))
        }))
    }
}

/// The [`FastQuantize`] for `node` when it is an f32 `QuantizeLinear` (to u8 or i8).
fn fast_quantize(model: &TypedModel, node: &TypedNode) -> Option<FastQuantize> {
    let ew = node.op_as::<ElementWiseOp>()?;
    let (scale, zero_point, signed) = if let Some(q) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        (q.scale, q.zero_point as i32, false)
    } else {
        let q = ew.0.downcast_ref::<QuantizeLinearI8>()?;
        (q.scale, q.zero_point as i32, true)
    };
    let input = model.outlet_fact(*node.inputs.first()?).ok()?;
    (input.datum_type == f32::datum_type()).then(|| FastQuantize {
        scale,
        zero_point,
        signed,
        out_fact: node.outputs[0].fact.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::quant::{quantize_linear_f32_i8, quantize_linear_f32_u8};

    /// Same bytes as tract's element function on ties (±0.5, ±1.5, ±2.5 …), range edges, large
    /// values up to |x·scale| < 2^31 (past which tract's own i32 addition overflows) and NaN, and
    /// on a sweep of ordinary values, for u8 and i8.
    #[test]
    fn equals_tract_quantize() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            127.5,
            128.5,
            -128.5,
            254.5,
            255.5,
            1e6,
            -1e6,
            8_388_607.5,
            8_388_608.0,
            -9e7,
            1.2e8,
            f32::NAN,
        ];
        xs.extend((0..20_000).map(|i| (i as f32 - 10_000.0) * 0.0371));
        for (scale, zp) in [(1.0f32, 0i32), (1.0, 37), (0.37, 128), (17.3, 3)] {
            let mut ours = vec![0u8; xs.len()];
            quantize(&xs, scale, zp, false, &mut ours);
            for (x, o) in xs.iter().zip(&ours) {
                assert_eq!(
                    *o,
                    quantize_linear_f32_u8(*x, scale, zp),
                    "u8 x {x} scale {scale} zp {zp}"
                );
            }
            let zp = zp - 128;
            quantize(&xs, scale, zp, true, &mut ours);
            for (x, o) in xs.iter().zip(&ours) {
                assert_eq!(
                    *o as i8,
                    quantize_linear_f32_i8(*x, scale, zp),
                    "i8 x {x} scale {scale} zp {zp}"
                );
            }
        }
    }
}

//! ONNX `DynamicQuantizeLinear` (f32 → u8 with a per-tensor scale and zero point computed from the
//! data) in loops that vectorise.
//!
//! Why it matters: onnxruntime's dynamic int8 files (the VLMs' `_int8`) quantise the activation in
//! front of every `MatMulInteger`. tract 0.23.9's `DynamicQuantizeLinearU8` finds the range with an
//! ndarray `fold` and rounds with `round_ties_even`, a libm call per element on a baseline x86-64
//! build: in SmolVLM-256M's int8 vision encoder its 50 nodes took 1.3 s of 7 s. [`FastDynQuantize`]
//! computes the same bytes, scale and zero point: the same range (NaN ignored, the interval widened
//! to hold 0), the same division `x / scale` (not a multiplication by its reciprocal, which rounds
//! some values to the other integer), ties rounded to even by the 2^23 trick of
//! [`super::quantize::round_ties_even_nonneg`].

use tract_core::internal::*;

use super::pass::{swap_ops, GraphPass};
use super::quantize::{round_ties_even_nonneg, store_8bit};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FastDynQuantize;

impl Op for FastDynQuantize {
    fn name(&self) -> StaticName {
        "FastDynQuantize".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastDynQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let xs = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let mut out = unsafe { Tensor::uninitialized_dt(u8::datum_type(), x.shape())? };
        let (scale, zero_point) = quantize_widest(xs, out.as_bytes_mut());
        Ok(tvec!(
            out.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }
}

impl TypedOp for FastDynQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(
            u8::datum_type().fact(inputs[0].shape.clone()),
            f32::fact([0usize; 0]),
            u8::fact([0usize; 0])
        ))
    }

    as_op!();
}

/// [`scale_and_zero_point`] then [`quantize_dynamic`] into `out`, compiled for AVX-512 where the
/// CPU has it: the baseline x86-64 build runs both loops four lanes wide (SSE), and the division
/// per element was most of the op (SmolVLM-256M's int8 vision encoder: 258 ms of its 73 nodes in a
/// profile of 2.0 s). The same operations on wider vectors: the same bytes, scale and zero point.
fn quantize_widest(xs: &[f32], out: &mut [u8]) -> (f32, u8) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: checked just above.
        return unsafe { quantize_avx512(xs, out) };
    }
    quantize_all(xs, out)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_avx512(xs: &[f32], out: &mut [u8]) -> (f32, u8) {
    quantize_all(xs, out)
}

#[inline(always)]
fn quantize_all(xs: &[f32], out: &mut [u8]) -> (f32, u8) {
    let (scale, zero_point) = scale_and_zero_point(xs);
    quantize_dynamic(xs, scale, zero_point, out);
    (scale, zero_point)
}

/// Range of `xs` widened to hold 0, NaN ignored: sixteen running minima and maxima (so the loop
/// vectorises, one AVX-512 vector or two of AVX2), each updated exactly as tract's fold updates
/// its one pair.
#[inline(always)]
fn min_max(xs: &[f32]) -> (f32, f32) {
    const L: usize = 16;
    let mut lo = [0f32; L];
    let mut hi = [0f32; L];
    let chunks = xs.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &v in lo.iter().chain(rest) {
        min = if v < min { v } else { min };
    }
    for &v in hi.iter().chain(rest) {
        max = if v > max { v } else { max };
    }
    (min, max)
}

/// ONNX's scale and zero point for `xs` (the arithmetic of tract's `scale_and_zero_point`).
#[inline(always)]
pub fn scale_and_zero_point(xs: &[f32]) -> (f32, u8) {
    let (min, max) = min_max(xs);
    let scale = (max - min) / u8::MAX as f32;
    let zero_point = (-min / scale)
        .round_ties_even()
        .max(0.0)
        .min(u8::MAX as f32);
    (scale, zero_point as u8)
}

/// `out[i] = clamp(round_ties_even(x[i] / scale) + zero_point, 0, 255)`; NaN gives the zero point.
#[inline(always)]
pub fn quantize_dynamic(xs: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    let zp = zero_point as f32;
    store_8bit(xs, false, out, |x| {
        let v = x / scale;
        let r = round_ties_even_nonneg(v.abs()).copysign(v);
        (if r.is_nan() { 0.0 } else { r }) + zp
    });
}

/// Swaps tract's f32 `DynamicQuantizeLinearU8` (tract-onnx's op) for [`FastDynQuantize`].
pub struct FastDynQuantizePass;

impl GraphPass for FastDynQuantizePass {
    fn name(&self) -> &'static str {
        "FastDynQuantize"
    }
    fn replaces(&self) -> &'static str {
        "DynamicQuantizeLinear"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        Ok(swap_ops(model, |model, node| {
            let f32_in = node.inputs.len() == 1
                && model
                    .outlet_fact(node.inputs[0])
                    .is_ok_and(|f| f.datum_type == f32::datum_type());
            (node.op.name() == "DynamicQuantizeLinearU8" && node.outputs.len() == 3 && f32_in)
                .then(|| Box::new(FastDynQuantize) as Box<dyn TypedOp>)
        }))
    }
}

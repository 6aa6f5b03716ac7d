//! `ConvInteger` as an exact float convolution: onnxruntime's dynamically quantised convolution
//! (`DynamicQuantizeLinear → ConvInteger(x_q, W_q, x0, w0) → Cast(f32)`) run by tract's f32
//! convolution on `x_q − x0` with the constant weight `W_q − w0` converted at load.
//!
//! Why: tract lowers every quantized convolution through its integer im2col and matrix product,
//! depthwise ones too (one matrix product of k = 9 per channel group). Florence-2's int8 vision
//! encoder (DaViT) has 48 depthwise 3×3 `ConvInteger`s, four of them over 192×192×128 maps, and ran
//! slower than its fp32 file (benches/RESULTS.md). tract's f32 depthwise and direct kernels are
//! vectorised.
//!
//! Why it is exact (bit-identical to tract's plan, tests/engine_convint.rs): every product
//! `(x − x0) · (W − w0)` is an integer, and so is every partial sum. An f32 holds every integer up
//! to 2^24 exactly, so a sum in any order, fused multiply-adds included, is exact as long as no
//! partial sum can exceed 2^24. The pass takes a convolution only when
//! `k · max|x − x0| · max|W − w0| ≤ 2^24`, with k the taps per output (input channels per group ×
//! kernel area), max|x − x0| ≤ 255 for any zero point, and max|W − w0| read off the weight at load.
//! Then the f32 result equals the i32 one, and the `Cast(f32)` tract would run after is the
//! identity. Padding: tract's quantized im2col pads with x0 (as onnxruntime does), which is 0 here
//! after the subtraction, as in tract's float padding.
//!
//! Where the bound fails (a 3×3 convolution over 512 channels with 7-bit weights: k = 4 608) the
//! convolution is split over input channels into float convolutions that each meet it; their
//! integer results are cast to i32 and added there (exact), then cast to f32 as the `Cast` after
//! the `ConvInteger` did. (It used to stay tract's integer convolution: on x86 without VNNI,
//! Florence-2's four DaViT downsampling convolutions then took 16 of its int8 vision encoder's 26
//! seconds.) Grouped convolutions whose sums may pass 2^24 stay integer. Skipped under `LOOKOUT_PLAIN_TRACT=1` or
//! `LOOKOUT_NO_CONVINT=1` (the A/B of this pass alone).

use tract_core::internal::*;
use tract_core::ops::array::Slice;
use tract_core::ops::cast::{cast, Cast};
use tract_core::ops::cnn::{Conv, KernelFormat};
use tract_core::ops::math;

use super::pass::{env_off, GraphPass, Stage};
use super::qmatmul::{const_value, scalar};

/// Set to `1` to leave every `ConvInteger` to tract's integer convolution.
pub const NO_CONVINT_ENV: &str = "LOOKOUT_NO_CONVINT";

/// The largest integer below which every integer is an f32.
const F32_EXACT: u64 = 1 << 24;

/// Swaps every `ConvInteger` whose sums are exact in f32 for tract's float convolution. Runs on the
/// typed graph before decluttering, while the convolution still has its nine inputs.
pub struct ConvIntegerPass;

impl GraphPass for ConvIntegerPass {
    fn name(&self) -> &'static str {
        "exact f32 Conv"
    }
    fn replaces(&self) -> &'static str {
        "ConvInteger"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeOptimise
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_CONVINT_ENV) {
            return Ok(0);
        }
        replace_conv_integer(model)
    }
}

/// Replaces every `ConvInteger` the float convolution computes exactly; returns how many.
pub fn replace_conv_integer(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Conv>()
                .is_some_and(|c| c.q_params == Some(i32::datum_type()))
        })
        .map(|n| n.id)
        .collect();
    let mut replaced = 0;
    for id in candidates {
        let node = model.node(id);
        match plan(model, node) {
            Ok(plan) => {
                let name = node.name.clone();
                let mut patch = TypedModelPatch::new(format!("exact f32 Conv {name}"));
                let x = patch.tap_model(model, node.inputs[0])?;
                let x0 = patch.tap_model(model, node.inputs[3])?;
                let xf = patch.wire_node(format!("{name}.x_f32"), cast(f32::datum_type()), &[x])?;
                let x0f =
                    patch.wire_node(format!("{name}.x0_f32"), cast(f32::datum_type()), &[x0])?;
                let centred = tract_core::ops::change_axes::wire_with_rank_broadcast(
                    format!("{name}.x_centred"),
                    &mut patch,
                    math::sub(),
                    &[xf[0], x0f[0]],
                )?;
                let bias = patch.add_const(format!("{name}.bias_f32"), tensor0(0f32))?;
                let y = if let [_] = plan.chunks[..] {
                    let kernel = patch.add_const(format!("{name}.kernel_f32"), plan.kernel)?;
                    patch.wire_node(&name, plan.conv, &[centred[0], kernel, bias])?[0]
                } else {
                    let mut sum: Option<OutletId> = None;
                    for (i, &(c0, c1)) in plan.chunks.iter().enumerate() {
                        let part = format!("{name}.part{i}");
                        let x = patch.wire_node(
                            format!("{part}.x"),
                            Slice::new(1, c0, c1),
                            &[centred[0]],
                        )?;
                        let kernel = plan.kernel.slice(1, c0, c1)?;
                        let kernel = patch.add_const(format!("{part}.kernel_f32"), kernel)?;
                        let mut conv = plan.conv.clone();
                        conv.pool_spec.input_channels = c1 - c0;
                        let y = patch.wire_node(&part, conv, &[x[0], kernel, bias])?;
                        let y =
                            patch.wire_node(format!("{part}.i32"), cast(i32::datum_type()), &y)?[0];
                        sum = Some(match sum {
                            None => y,
                            Some(s) => {
                                patch.wire_node(format!("{part}.sum"), math::add(), &[s, y])?[0]
                            }
                        });
                    }
                    let sum = sum.context("no chunk")?;
                    patch.wire_node(&name, cast(f32::datum_type()), &[sum])?[0]
                };
                for cast_node in plan.casts {
                    patch.shunt_outside(model, cast_node.into(), y)?;
                }
                patch.apply(model)?;
                replaced += 1;
            }
            Err(why) => log::debug!(
                "{}: left to tract's integer convolution: {why:#}",
                node.name
            ),
        }
    }
    Ok(replaced)
}

/// The replacement for one `ConvInteger`: the float convolution, its weight, and the `Cast(f32)`
/// nodes whose outputs it takes over.
struct Plan {
    conv: Conv,
    kernel: Tensor,
    casts: Vec<usize>,
    /// Input channel ranges, each a float convolution whose sums are exact; more than one when the
    /// whole convolution's sums could pass 2^24.
    chunks: Vec<(usize, usize)>,
}

fn plan(model: &TypedModel, node: &TypedNode) -> TractResult<Plan> {
    let conv = node.op_as::<Conv>().context("not a Conv")?;
    ensure!(
        node.inputs.len() == 9,
        "{} inputs, not 9",
        node.inputs.len()
    );
    ensure!(
        conv.kernel_fmt == KernelFormat::OIHW,
        "kernel is {:?}",
        conv.kernel_fmt
    );
    let x_fact = model.outlet_fact(node.inputs[0])?;
    let xdt = x_fact.datum_type;
    // Plain bytes only: a quantized type's Cast to f32 would dequantize.
    ensure!(
        xdt == u8::datum_type() || xdt == i8::datum_type(),
        "activation is {xdt:?}"
    );
    ensure!(
        model.outlet_fact(node.inputs[3])?.shape.volume().is_one(),
        "activation zero point is not one value"
    );
    // ConvInteger has no bias and unit scales (tract-onnx wires them as constants).
    for (slot, want) in [(4, 1.0), (6, 1.0), (7, 0.0), (8, 1.0)] {
        let v = scalar(model, node, slot)?;
        ensure!(v == want, "input {slot} is {v}, not {want}");
    }
    let bias = const_value(model, node.inputs[2], 4).context("bias is not a constant")?;
    let bias = bias.cast_to::<i32>()?;
    ensure!(
        bias.try_as_plain_ram()?
            .as_slice::<i32>()?
            .iter()
            .all(|&b| b == 0),
        "has a bias"
    );
    // Every consumer is a Cast to f32, which the float output replaces.
    let succs = &node.outputs[0].successors;
    ensure!(!succs.is_empty(), "no consumer");
    let mut casts = vec![];
    for s in succs {
        let succ = model.node(s.node);
        ensure!(
            succ.op_as::<Cast>()
                .is_some_and(|c| c.to == f32::datum_type()),
            "consumer {} is not a Cast to f32",
            succ.name
        );
        casts.push(succ.id);
    }
    // The weight minus its zero point (one per output channel, or one for all), as f32.
    let w = const_value(model, node.inputs[1], 4).context("the weight is not a constant")?;
    let wdt = w.datum_type().unquantized();
    ensure!(
        wdt == u8::datum_type() || wdt == i8::datum_type(),
        "weight is {wdt:?}"
    );
    let shape = w.shape().to_vec();
    let c_out = conv.output_channels();
    ensure!(
        shape.first() == Some(&c_out),
        "weight of shape {shape:?} for {c_out} output channels"
    );
    let w0 =
        const_value(model, node.inputs[5], 4).context("weight zero point is not a constant")?;
    let w0 = w0.cast_to::<i32>()?;
    let w0 = w0.try_as_plain_ram()?.as_slice::<i32>()?.to_vec();
    ensure!(
        w0.len() == 1 || w0.len() == c_out,
        "{} weight zero points for {c_out} output channels",
        w0.len()
    );
    let wi = w.cast_to::<i32>()?;
    let wi = wi.try_as_plain_ram()?;
    let wi = wi.as_slice::<i32>()?;
    let per_out = wi.len() / c_out;
    let mut kernel = Vec::with_capacity(wi.len());
    let mut wmax: u64 = 0;
    for (o, row) in wi.chunks_exact(per_out).enumerate() {
        let z = if w0.len() == 1 { w0[0] } else { w0[o] };
        for &v in row {
            let d = v - z;
            wmax = wmax.max(d.unsigned_abs() as u64);
            kernel.push(d as f32);
        }
    }
    // Taps per output value: input channels per group × kernel area = per_out.
    let bound = per_out as u64 * 255 * wmax;
    let c_in = shape[1] * conv.group;
    let area = (per_out / shape[1].max(1)) as u64;
    let chunks = if bound <= F32_EXACT {
        vec![(0, c_in)]
    } else {
        // Split over input channels into convolutions exact in f32; their integer results are
        // added in i32 (exact), and cast to f32 as the ConvInteger's were.
        ensure!(
            conv.group == 1,
            "sums up to {per_out} × 255 × {wmax} = {bound} may not be exact in f32 (group {})",
            conv.group
        );
        ensure!(
            conv.pool_spec.data_format == tract_core::ops::nn::DataFormat::NCHW,
            "sums may not be exact in f32, and the input is {:?}",
            conv.pool_spec.data_format
        );
        let per_chunk = (F32_EXACT / (255 * wmax.max(1) * area.max(1))) as usize;
        ensure!(
            per_chunk > 0,
            "one channel's sums ({area} taps × 255 × {wmax}) may not be exact in f32"
        );
        let n = c_in.div_ceil(per_chunk);
        let per = c_in.div_ceil(n);
        (0..n)
            .map(|i| (i * per, ((i + 1) * per).min(c_in)))
            .collect()
    };
    let kernel = Tensor::from_shape(&shape, &kernel)?;
    let float = Conv {
        q_params: None,
        ..conv.clone()
    };
    Ok(Plan {
        conv: float,
        kernel,
        casts,
        chunks,
    })
}

//! Quantized convolution (ONNX `QLinearConv`) as one op instead of tract's chain of twenty.
//!
//! tract 0.23.9 lowers a quantized `Conv` into an eager `Im2col` (packing u8 → i8 one element at a
//! time), a `QSumB` over the packed columns, the integer matmul, and then the zero-point
//! compensation and requantization as separate element-wise nodes (`Sub`, `Scale`, `Add`, `Max`,
//! `Min`, `Cast`) that its optimiser cannot fuse into the matmul because `Scale` is not a linalg
//! op. On nanodet-g-int8 the matmuls themselves (AMX/VNNI kernels) were 14 % of inference and the
//! rest of the chain over 70 %, which made int8 slower than fp32.
//!
//! [`QConv`] keeps tract's integer kernel and its choice of it (`MmmDispatch::pick`, same query as
//! tract's conv) — except where that choice is tract's AVX2 (or AVX) int8 kernel, on x86 without
//! VNNI or AMX: there it runs its own ([`super::i8gemm`], [`super::I8_KERNEL_ENV`]); and on x86 with
//! AVX-512 VNNI, where it runs lookout's direct int8 conv without im2col ([`super::qdirect`]) —
//! and replaces everything around it:
//! - the weights are shifted by their zero point once, at load, and packed for the kernel once;
//! - the input's zero point is folded into a per-output-channel constant (`x0 · Σw`), so the
//!   matmul needs no column sums: im2col writes raw values (u8 flipped to i8), and a padded tap
//!   holds the input zero point, which contributes exactly zero after the fold;
//! - requantization is one pass over the i32 accumulators with tract's own arithmetic: the scale
//!   `k_scale · x_scale / y_scale` in f32 (mul then div), `round_ties_even(|acc| · scale) · sign`,
//!   plus the output zero point, clamped to the output type.
//! - depthwise convolutions (group = channels) run as a direct integer loop: tract's path turns
//!   each channel into a matmul with one row.
//!
//! On every geometry of `tests/qconv.rs` the output is byte-identical to tract's own lowering and to
//! onnxruntime's, and on nanodet-g-int8 to tract's whole plan. tract lowers 1x1 convs through a
//! quantized einsum that rounds differently: there, where the two part, `QConv` agreed with
//! onnxruntime (see `tests/graph_rewrites.rs`). Anything else (weights whose shifted values leave
//! i8, other kernel layouts, batch > 1, other groupings, symbolic shapes) is left to tract, with the
//! reason in the debug log.

use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::cnn::conv::Conv;

use super::pass::{GraphPass, Stage};

use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_linalg::pack::PackedI8K4;
use tract_linalg::BinOp;

use super::i8gemm;
use super::im2col::{for_each_panel16, im2col, im2col_packed_k4, Geometry};
use super::par::for_each_chunk;
use super::qdirect;
use super::quantize::{round_ties_even_nonneg, store_8bit};

/// How the accumulators are computed.
#[derive(Debug, Clone)]
enum Kernel {
    /// im2col + tract's integer matmul; the weights packed for the kernel once.
    Matmul {
        mmm: Box<dyn MatMatMul>,
        packing: usize,
        packed_w: Box<dyn MMMInputValue>,
    },
    /// im2col panels × lookout's AVX2 kernel, requantized in the same pass ([`super::i8gemm`]:
    /// x86 without VNNI or AMX, where tract's int8 kernel stalls).
    Avx2 { w: i8gemm::Weights },
    /// One filter per channel, `kh·kw` taps each, zero-point shifted.
    Depthwise { w: Vec<i32> },
    /// lookout's direct kernels on AVX-512 VNNI, requantized in the same pass
    /// ([`super::qdirect`]: no im2col).
    Direct(Box<qdirect::Plan>),
}

#[derive(Debug)]
struct Params {
    geo: Geometry,
    kernel: Kernel,
    /// Input zero point.
    x0: i32,
    /// The input's raw bytes are i8 (else u8).
    x_signed: bool,
    /// Per output channel: bias, plus the input zero-point fold (see the module doc).
    row_bias: Tensor,
    /// Per output channel: `k_scale · x_scale / y_scale`.
    scale: Vec<f32>,
    y0: i32,
    out_fact: TypedFact,
}

/// Drop-in replacement for a quantized [`Conv`] node with constant weights and parameters. Its only
/// input is the activation.
#[derive(Debug, Clone)]
pub struct QConv {
    params: Arc<Params>,
}

impl PartialEq for QConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.params, &other.params)
    }
}
impl Eq for QConv {}

impl Op for QConv {
    fn name(&self) -> StaticName {
        "QConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.params.geo;
        let how = match &self.params.kernel {
            Kernel::Matmul { mmm, .. } => format!(
                "matmul m:{} k:{} n:{} with {}",
                g.c_out,
                g.k(),
                g.n(),
                mmm.name()
            ),
            Kernel::Avx2 { .. } => format!(
                "matmul m:{} k:{} n:{} with lookout's avx2 int8 kernel",
                g.c_out,
                g.k(),
                g.n()
            ),
            Kernel::Depthwise { .. } => "depthwise".to_string(),
            Kernel::Direct(_) => "lookout's direct avx512-vnni kernel".to_string(),
        };
        Ok(vec![format!(
            "{}x{} stride {:?} dilation {:?} pad {:?}, {}→{} channels, {how}",
            g.kh, g.kw, g.stride, g.dilation, g.pad, g.c_in, g.c_out
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &*self.params;
        let g = &p.geo;
        let x = &inputs[0];
        ensure!(
            x.len() == g.c_in * g.in_h * g.in_w,
            "QConv: input of shape {:?}, expected [1, {}, {}, {}]",
            x.shape(),
            g.c_in,
            g.in_h,
            g.in_w
        );
        let bytes = x.as_bytes();
        let mut out = unsafe { Tensor::uninitialized_dt(p.out_fact.datum_type, &g.out_shape())? };
        let acc = match &p.kernel {
            Kernel::Matmul {
                mmm,
                packing,
                packed_w,
            } => {
                let (_, pack_b) = &mmm.packings()[*packing];
                let packed_b = match pack_b.downcast_ref::<PackedI8K4>() {
                    Some(format) => im2col_packed_k4(g, bytes, p.x_signed, p.x0, format),
                    None => pack_b.prepare_one(&im2col(g, bytes, p.x_signed, p.x0)?, 0, 1)?,
                };
                let mut c = unsafe { Tensor::uninitialized::<i32>(&[g.c_out, g.n()])? };
                unsafe {
                    let store = mmm.c_view(Some(0), Some(1)).wrap(&c.view_mut());
                    mmm.run(
                        g.c_out,
                        g.n(),
                        &[
                            FusedSpec::AddMatMul {
                                a: AsInputValue::Borrowed(&**packed_w),
                                b: AsInputValue::Borrowed(&*packed_b),
                                packing: *packing,
                            },
                            FusedSpec::BinPerRow(p.row_bias.view(), BinOp::Add),
                            FusedSpec::Store(store),
                        ],
                    )?;
                }
                c
            }
            Kernel::Avx2 { w } => {
                let bias = p.row_bias.try_as_plain_ram()?;
                let rq = i8gemm::Requant {
                    bias: bias.as_slice::<i32>()?,
                    scale: &p.scale,
                    y0: p.y0,
                    signed: p.out_fact.datum_type.unquantized().is_signed(),
                };
                let dst = i8gemm::Output::new(out.as_bytes_mut(), g.n());
                for_each_panel16(g, bytes, p.x_signed, p.x0, |col0, lanes, panel| {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `Kernel::Avx2` is only planned where the CPU has AVX2; each panel
                    // writes its own columns.
                    unsafe {
                        i8gemm::panel(panel, w, &rq, col0, lanes, &dst)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        let _ = (w, &rq, &dst, col0, lanes, panel);
                        unreachable!("Kernel::Avx2 is only planned on x86");
                    }
                });
                return Ok(tvec!(out.into_tvalue()));
            }
            Kernel::Depthwise { w } => depthwise(g, bytes, p.x_signed, p.x0, w, &p.row_bias)?,
            Kernel::Direct(plan) => {
                qdirect::conv(plan, bytes, out.as_bytes_mut());
                return Ok(tvec!(out.into_tvalue()));
            }
        };
        let acc = acc.try_as_plain_ram()?;
        let acc = acc.as_slice::<i32>()?;
        requant(
            acc,
            g.n(),
            &p.scale,
            p.y0,
            p.out_fact.datum_type.unquantized().is_signed(),
            out.as_bytes_mut(),
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.params.out_fact.clone()))
    }

    as_op!();
}

/// Direct depthwise convolution in i32: `acc = bias + Σ w·(x − x0)` over in-image taps.
fn depthwise(
    g: &Geometry,
    x: &[u8],
    signed: bool,
    x0: i32,
    w: &[i32],
    bias: &Tensor,
) -> TractResult<Tensor> {
    let n = g.n();
    let bias = bias.try_as_plain_ram()?;
    let bias = bias.as_slice::<i32>()?;
    let mut acc = vec![0i32; g.c_out * n];
    // Channels are independent: with `threads > 1` they are shared out over tract's pool.
    for_each_chunk(
        &mut acc,
        n,
        || vec![0i32; g.in_h * g.in_w],
        |c, out, xs| depthwise_channel(g, x, signed, x0, w, bias[c], c, out, xs),
    );
    Ok(tract_ndarray::Array2::from_shape_vec((g.c_out, n), acc)?.into_tensor())
}

/// One output channel of [`depthwise`]; `xs` is scratch for the widened input plane.
#[allow(clippy::too_many_arguments)]
fn depthwise_channel(
    g: &Geometry,
    x: &[u8],
    signed: bool,
    x0: i32,
    w: &[i32],
    bias: i32,
    c: usize,
    out: &mut [i32],
    xs: &mut [i32],
) {
    let (sh, sw) = g.stride;
    let (dh, dw) = g.dilation;
    let (ph, pw) = g.pad;
    for (d, s) in xs
        .iter_mut()
        .zip(&x[c * g.in_h * g.in_w..][..g.in_h * g.in_w])
    {
        *d = if signed { *s as i8 as i32 } else { *s as i32 } - x0;
    }
    out.fill(bias);
    for ky in 0..g.kh {
        let (oy_lo, oy_hi) = Geometry::valid_range(g.out_h, g.in_h, sh, ph, ky, dh);
        for kx in 0..g.kw {
            let (ox_lo, ox_hi) = Geometry::valid_range(g.out_w, g.in_w, sw, pw, kx, dw);
            if ox_lo >= ox_hi {
                continue;
            }
            let wv = w[(c * g.kh + ky) * g.kw + kx];
            let ix0 = ox_lo * sw + kx * dw - pw;
            for oy in oy_lo..oy_hi {
                let iy = oy * sh + ky * dh - ph;
                let src = &xs[iy * g.in_w..][..g.in_w];
                let dst = &mut out[oy * g.out_w..][ox_lo..ox_hi];
                if sw == 1 {
                    for (d, s) in dst.iter_mut().zip(&src[ix0..]) {
                        *d += wv * s;
                    }
                } else {
                    for (d, s) in dst.iter_mut().zip(src[ix0..].iter().step_by(sw)) {
                        *d += wv * s;
                    }
                }
            }
        }
    }
}

/// tract's requantization (`ops::quant::scale_by`, then `+ y0`, clamp, cast), per output channel.
///
/// In f32 throughout so that it vectorizes: `r + y0` is exact below 2^24, and above that both
/// this and tract's integer addition clamp to the same bound. Scales are finite (checked at load).
fn requant(acc: &[i32], n: usize, scale: &[f32], y0: i32, signed: bool, out: &mut [u8]) {
    let y0 = y0 as f32;
    #[cfg(target_arch = "x86_64")]
    let avx2 = is_x86_feature_detected!("avx2");
    for_each_chunk(
        out,
        n,
        || (),
        |c, out, _| {
            let acc = &acc[c * n..][..n];
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked above).
                unsafe { requant_channel_avx2(acc, scale[c], y0, signed, out) };
                return;
            }
            requant_channel(acc, scale[c], y0, signed, out);
        },
    );
}

/// One channel of [`requant`].
#[inline(always)]
pub(super) fn requant_channel(acc: &[i32], s: f32, y0: f32, signed: bool, out: &mut [u8]) {
    store_8bit(acc, signed, out, |a| {
        let v = a as f32;
        round_ties_even_nonneg(v.abs() * s).copysign(v) + y0
    });
}

/// [`requant_channel`] compiled for AVX2: eight lanes, and the i32 → u8 narrowing in a few
/// instructions instead of SSE2's long way round (same operations, so the same bytes).
/// nanodet-g-int8-qdq's 31 requantizations at 1 thread: 6.3 % → 3.9 % of the samples of a `perf`
/// record of `lookout bench` (about 1.6 → 1.0 ms).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requant_channel_avx2(acc: &[i32], s: f32, y0: f32, signed: bool, out: &mut [u8]) {
    requant_channel(acc, s, y0, signed, out)
}

/// A constant input of `node` as a tensor, or why not.
fn konst(model: &TypedModel, node: &TypedNode, ix: usize) -> Result<Arc<Tensor>, String> {
    model
        .outlet_fact(node.inputs[ix])
        .ok()
        .and_then(|f| f.konst.clone())
        .ok_or_else(|| format!("input {ix} is not a constant"))
}

fn scalar_i32(t: &Tensor, what: &str) -> Result<i32, String> {
    if t.len() != 1 {
        return Err(format!("{what} is not a scalar ({:?})", t.shape()));
    }
    t.cast_to_scalar::<i32>()
        .map_err(|e| format!("{what}: {e}"))
}

/// Per-channel (or broadcast scalar) values as `len` f32 / i32.
fn per_channel<T: Datum + Copy>(t: &Tensor, len: usize, what: &str) -> Result<Vec<T>, String> {
    let t = t.cast_to::<T>().map_err(|e| format!("{what}: {e}"))?;
    let v = t.try_as_plain_ram().map_err(|e| format!("{what}: {e}"))?;
    let v = v.as_slice::<T>().map_err(|e| format!("{what}: {e}"))?;
    match v.len() {
        1 => Ok(vec![v[0]; len]),
        l if l == len => Ok(v.to_vec()),
        l => Err(format!("{what} has {l} values for {len} channels")),
    }
}

/// The integer parameters of one quantized convolution, however the file spelled them
/// (`QLinearConv` here, `DequantizeLinear → Conv → QuantizeLinear` in [`super::qdq`]).
#[derive(Debug, Clone)]
pub(super) struct QuantParts {
    /// Integer weights (i8 or u8), OIHW.
    pub kernel: Arc<Tensor>,
    /// Weight zero point and scale, per output channel.
    pub k0: Vec<i32>,
    pub k_scale: Vec<f32>,
    /// i32 bias, per output channel, in units of `x_scale · k_scale`.
    pub bias: Vec<i32>,
    pub x0: i32,
    pub x_scale: f32,
    /// Element type of the input's bytes (u8 or i8).
    pub x_dt: DatumType,
    pub y0: i32,
    pub y_scale: f32,
}

/// Build the replacement for one quantized conv node, or say why it stays with tract.
fn plan(model: &TypedModel, node: &TypedNode, conv: &Conv) -> Result<QConv, String> {
    if conv.q_params.is_none() {
        return Err("not quantized".into());
    }
    if node.inputs.len() != 9 {
        return Err(format!("{} inputs", node.inputs.len()));
    }
    let x_fact = model
        .outlet_fact(node.inputs[0])
        .map_err(|e| e.to_string())?;
    let c_out = conv.pool_spec.output_channels;
    let bias = konst(model, node, 2)?;
    let x_scale = konst(model, node, 4)?;
    let y_scale = konst(model, node, 8)?;
    let parts = QuantParts {
        kernel: konst(model, node, 1)?,
        k0: per_channel::<i32>(&*konst(model, node, 5)?, c_out, "weight zero point")?,
        k_scale: per_channel::<f32>(&*konst(model, node, 6)?, c_out, "weight scale")?,
        bias: per_channel::<i32>(&bias, c_out, "bias")?,
        x0: scalar_i32(&*konst(model, node, 3)?, "x zero point")?,
        x_scale: x_scale
            .cast_to_scalar::<f32>()
            .map_err(|e| format!("x scale: {e}"))?,
        x_dt: x_fact.datum_type.unquantized(),
        y0: scalar_i32(&*konst(model, node, 7)?, "y zero point")?,
        y_scale: y_scale
            .cast_to_scalar::<f32>()
            .map_err(|e| format!("y scale: {e}"))?,
    };
    plan_parts(model, node, conv, parts, node.outputs[0].fact.clone())
}

/// Build a [`QConv`] for the geometry of `conv` (its input 0 and output facts give the shapes)
/// from integer parameters; `out_fact` is what the op produces (u8 or i8).
pub(super) fn plan_parts(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    parts: QuantParts,
    out_fact: TypedFact,
) -> Result<QConv, String> {
    if !matches!(
        out_fact.datum_type.unquantized(),
        DatumType::U8 | DatumType::I8
    ) {
        return Err(format!("output type {:?}", out_fact.datum_type));
    }
    let x_fact = model
        .outlet_fact(node.inputs[0])
        .map_err(|e| e.to_string())?;
    let x_dt = parts.x_dt;
    if !matches!(x_dt, DatumType::U8 | DatumType::I8) {
        return Err(format!("input type {x_dt:?}"));
    }
    let shape = x_fact.shape.as_concrete().ok_or("symbolic input shape")?;
    let out_shape = out_fact
        .shape
        .as_concrete()
        .ok_or("symbolic output shape")?
        .to_vec();
    let geo = Geometry::of(conv, shape, &out_shape)?;
    let depthwise = conv.group > 1 && conv.group == geo.c_in && conv.group == geo.c_out;
    if conv.group != 1 && !depthwise {
        return Err(format!("group {}", conv.group));
    }
    let QuantParts {
        kernel,
        k0,
        k_scale,
        bias,
        x0,
        x_scale,
        y0,
        y_scale,
        ..
    } = parts;
    if k0.len() != geo.c_out || k_scale.len() != geo.c_out || bias.len() != geo.c_out {
        return Err(format!(
            "{} weight zero points, {} weight scales, {} biases for {} channels",
            k0.len(),
            k_scale.len(),
            bias.len(),
            geo.c_out
        ));
    }

    let per_out = kernel.len() / geo.c_out.max(1);
    let k = if depthwise { geo.kh * geo.kw } else { geo.k() };
    if kernel.shape()
        != [
            geo.c_out,
            if depthwise { 1 } else { geo.c_in },
            geo.kh,
            geo.kw,
        ]
        || per_out != k
    {
        return Err(format!("kernel shape {:?}", kernel.shape()));
    }
    let w_raw = kernel
        .cast_to::<i32>()
        .map_err(|e| format!("kernel: {e}"))?;
    let w_raw = w_raw.try_as_plain_ram().map_err(|e| e.to_string())?;
    let w_raw = w_raw.as_slice::<i32>().map_err(|e| e.to_string())?;
    // Weights minus their zero point, which must still be an i8 for the kernel.
    let w: Vec<i32> = w_raw
        .chunks_exact(k)
        .zip(&k0)
        .flat_map(|(row, k0)| row.iter().map(move |v| v - k0))
        .collect();
    if w.iter().any(|v| !(-128..=127).contains(v)) {
        return Err("weights minus their zero point leave the i8 range".into());
    }
    // Σ w·(x − x0) = Σ w·x' + (offset − x0)·Σw, with x' the value im2col writes.
    let offset = if depthwise || x_dt == DatumType::I8 {
        0
    } else {
        128
    };
    let row_bias: Vec<i32> = w
        .chunks_exact(k)
        .zip(&bias)
        .map(|(row, b)| {
            if depthwise {
                *b
            } else {
                b.wrapping_add((offset - x0).wrapping_mul(row.iter().sum::<i32>()))
            }
        })
        .collect();
    let scale: Vec<f32> = k_scale.iter().map(|ks| ks * x_scale / y_scale).collect();
    if scale.iter().any(|s| !s.is_finite()) {
        return Err(format!(
            "scale k_scale·x_scale/y_scale is not finite (y_scale {y_scale})"
        ));
    }

    let direct = if !depthwise && qdirect::chosen() {
        let q = qdirect::Quant {
            w: &w,
            bias: &bias,
            scale: &scale,
            x0,
            x_signed: x_dt == DatumType::I8,
            y0,
            y_signed: out_fact.datum_type.unquantized().is_signed(),
        };
        qdirect::Plan::new(&geo, q)
            .inspect_err(|why| log::debug!("{}: not on the direct int8 kernel: {why}", node.name))
            .ok()
    } else {
        None
    };
    let kernel = if depthwise {
        Kernel::Depthwise { w }
    } else if let Some(plan) = direct {
        Kernel::Direct(Box::new(plan))
    } else {
        let (mmm, packing) = i8gemm::tract_pick(Some(geo.c_out), geo.k(), Some(geo.n()))
            .ok_or("no i8 matmul kernel")?;
        if i8gemm::replaces(mmm.name()) {
            Kernel::Avx2 {
                w: i8gemm::Weights::pack(&w, geo.c_out, geo.k()),
            }
        } else {
            let w8: Vec<i8> = w.iter().map(|v| *v as i8).collect();
            let a = tract_ndarray::Array2::from_shape_vec((geo.c_out, geo.k()), w8)
                .map_err(|e| e.to_string())?
                .into_tensor();
            let packed_w = mmm.packings()[packing]
                .0
                .prepare_one(&a, 1, 0)
                .map_err(|e| format!("packing the weights: {e}"))?;
            Kernel::Matmul {
                mmm,
                packing,
                packed_w,
            }
        }
    };
    Ok(QConv {
        params: Arc::new(Params {
            geo,
            kernel,
            x0,
            x_signed: x_dt == DatumType::I8,
            row_bias: tensor1(&row_bias),
            scale,
            y0,
            out_fact,
        }),
    })
}

/// Replace every quantized conv that [`QConv`] can run; returns how many.
/// Swaps quantized `Conv`s for [`QConv`]. Runs before decluttering, which turns 1x1 convs into
/// einsums, and before codegen, which lowers them into tract's own chain; their parameters must be
/// constants by then (tract's constant propagation runs first).
pub struct QConvPass;

impl GraphPass for QConvPass {
    fn name(&self) -> &'static str {
        "QConv"
    }
    fn replaces(&self) -> &'static str {
        "quantized Conv"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeOptimise
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        replace_qconv(model)
    }
}

fn replace_qconv(model: &mut TypedModel) -> TractResult<usize> {
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_as::<Conv>().is_some_and(|c| c.q_params.is_some()))
        .map(|n| n.id)
        .collect();
    let mut replaced = 0;
    for id in candidates {
        let node = model.node(id);
        let conv = node.op_as::<Conv>().expect("filtered above");
        match plan(model, node, conv) {
            Ok(op) => {
                let mut patch = TypedModelPatch::new(format!("QConv {}", node.name));
                let x = patch.tap_model(model, node.inputs[0])?;
                let y = patch.wire_node(&node.name, op, &[x])?[0];
                patch.shunt_outside(model, id.into(), y)?;
                patch.apply(model)?;
                replaced += 1;
            }
            Err(why) => log::debug!("{}: left to tract's quantized conv: {why}", node.name),
        }
    }
    Ok(replaced)
}

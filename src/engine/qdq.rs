//! QDQ-format quantized convolutions (`DequantizeLinear → Conv → QuantizeLinear`, onnxruntime's
//! preferred int8 format) onto lookout's [`super::QConv`], as onnxruntime fuses them into `QLinearConv`.
//!
//! tract 0.23.9 runs such a file in float: the activation's `DequantizeLinear` becomes a
//! `DequantizeLinearF32`, the weights' and bias's `DequantizeLinear` (constants) are folded into
//! f32 weights and bias when the model is translated to a typed one, the `Conv` is
//! a float conv, and the `QuantizeLinear` after it an element-wise `QuantizeLinearU8/I8` (its
//! declutter only folds element-wise chains into lookup tables, never a conv). On
//! nanodet-g-int8-qdq that is twice the time of the same network as `QLinearConv`.
//!
//! tract's translation to a typed model already folds a constant's `DequantizeLinear` into an f32
//! constant and keeps `1 / y_scale` for `QuantizeLinear`, so [`annotate`] first records, on the
//! inference model, each such constant's integers, scales and zero points and each exact
//! `y_scale` (as model properties). [`QdqConvPass`] then runs on the typed model before constant
//! propagation (which would rename the constants), recognises the chain, checks that the recorded
//! integers dequantise to the folded weights bit for bit, and wires one `QConv` from the
//! `u8`/`i8` activation to the `QuantizeLinear`'s output, so the graph around it is unchanged.
//!
//! Results: the integer accumulation is exact and requantization is `QConv`'s (onnxruntime's
//! `QLinearConv` arithmetic: `round_ties_even(acc · x_scale·w_scale/y_scale) + y0`), so outputs
//! equal onnxruntime's on the committed fixture (`tests/engine_qdq.rs`). tract's float plan rounds
//! the real-valued sum instead (summed in f32 in its own order, times `1/y_scale`), which can land
//! on the other side of a rounding tie: there the two differ by one step (the test bounds it).
//!
//! Taken: scalar activation scale and zero point (u8 or i8), constant integer weights with a
//! scale per tensor or per output channel, an i32 bias (or none) whose scale is exactly
//! `x_scale · w_scale` (as `quantize_static` writes it), the conv's only consumer a scalar
//! `QuantizeLinear`. Anything else stays with tract, with the reason in the debug log.

use tract_core::internal::*;
use tract_core::ops::cast::Cast;
use tract_core::ops::cnn::conv::Conv;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::konst::Const;
use tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};
use tract_onnx::prelude::InferenceModel;
use tract_onnx::tract_hir::infer::Factoid;

use super::pass::{GraphPass, Stage};
use super::qconv::{plan_parts, QuantParts};

/// Swaps `DequantizeLinear → Conv → QuantizeLinear` for [`super::QConv`]. Runs on the typed
/// model before constant propagation, with what [`annotate`] recorded.
pub struct QdqConvPass;

impl GraphPass for QdqConvPass {
    fn name(&self) -> &'static str {
        "QdqConv"
    }
    fn replaces(&self) -> &'static str {
        "QDQ Conv"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeConstants
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        let candidates: Vec<usize> = model
            .nodes()
            .iter()
            .filter(|n| n.op_as::<Conv>().is_some_and(|c| c.q_params.is_none()))
            .map(|n| n.id)
            .collect();
        let mut replaced = 0;
        for id in candidates {
            let node = model.node(id);
            match plan(model, node) {
                Ok((op, x, q)) => {
                    let mut patch = TypedModelPatch::new(format!("QdqConv {}", node.name));
                    let x = patch.tap_model(model, x)?;
                    let name = format!("{}.qconv", node.name);
                    let y = patch.wire_node(name, op, &[x])?[0];
                    patch.shunt_outside(model, q.into(), y)?;
                    patch.apply(model)?;
                    replaced += 1;
                }
                Err(why) => log::debug!("{}: left to tract's float conv: {why}", node.name),
            }
        }
        // What [`annotate`] recorded is needed by this pass only.
        model.properties.retain(|k, _| !k.starts_with(PROP));
        Ok(replaced)
    }
}

/// A dequantised constant: integer values, with per-channel (or one) scale and zero point.
struct Dequantized {
    values: Arc<Tensor>,
    scale: Vec<f32>,
    zero_point: Vec<i32>,
}

/// The [`super::QConv`] for the conv `node`, the quantized activation it reads, and the node
/// whose output it replaces (the `QuantizeLinear`); or why not.
fn plan(model: &TypedModel, node: &TypedNode) -> Result<(super::QConv, OutletId, usize), String> {
    let conv = node.op_as::<Conv>().ok_or("not a conv")?;
    if node.inputs.len() != 3 {
        return Err(format!("{} inputs", node.inputs.len()));
    }
    let c_out = conv.pool_spec.output_channels;

    // The activation: DequantizeLinearF32 of u8 / i8.
    let dq = model.node(node.inputs[0].node);
    let dq_op = dq
        .op_as::<DequantizeLinearF32>()
        .ok_or_else(|| format!("input is {}, not a DequantizeLinear", dq.op.name()))?;
    let x = dq.inputs[0];
    let x_dt = model
        .outlet_fact(x)
        .map_err(|e| e.to_string())?
        .datum_type
        .unquantized();

    let w = dequantized(model, node.inputs[1]).map_err(|e| format!("weights: {e}"))?;
    let k_scale = broadcast(&w.scale, c_out, "weight scale")?;
    let k0 = broadcast(&w.zero_point, c_out, "weight zero point")?;
    if !matches!(w.values.datum_type(), DatumType::I8 | DatumType::U8) {
        return Err(format!("weights of type {:?}", w.values.datum_type()));
    }

    let bias = bias(model, node.inputs[2], c_out, dq_op.scale, &k_scale)?;

    // The only consumer: a scalar QuantizeLinear.
    let q = model
        .single_succ(node.id)
        .map_err(|e| e.to_string())?
        .ok_or("output has no single consumer")?;
    let (q_scale, y0) = quantize_params(q)?;
    let y_scale = match model.properties.get(&format!("{PROP}{}/y_scale", q.name)) {
        Some(t) => t
            .cast_to_scalar::<f32>()
            .map_err(|e| format!("y scale: {e}"))?,
        None => recover_scale(q_scale).ok_or("QuantizeLinear scale is not finite")?,
    };
    if y_scale.recip() != q_scale {
        return Err(format!(
            "y scale {y_scale} is not the QuantizeLinear's (1/{q_scale})"
        ));
    }

    let parts = QuantParts {
        kernel: w.values,
        k0,
        k_scale,
        bias,
        x0: dq_op.zero_point,
        x_scale: dq_op.scale,
        x_dt,
        y0,
        y_scale,
    };
    let op = plan_parts(model, node, conv, parts, q.outputs[0].fact.clone())?;
    Ok((op, x, q.id))
}

/// `QuantizeLinear`'s stored scale (tract keeps `1 / y_scale`) and zero point.
fn quantize_params(q: &TypedNode) -> Result<(f32, i32), String> {
    let ew = q
        .op_as::<ElementWiseOp>()
        .ok_or_else(|| format!("consumer is {}, not a QuantizeLinear", q.op.name()))?;
    if let Some(op) = ew.0.downcast_ref::<QuantizeLinearU8>() {
        Ok((op.scale, op.zero_point as i32))
    } else if let Some(op) = ew.0.downcast_ref::<QuantizeLinearI8>() {
        Ok((op.scale, op.zero_point as i32))
    } else {
        Err(format!("consumer is {}, not a QuantizeLinear", q.op.name()))
    }
}

/// `y_scale` from the `1 / y_scale` tract's QuantizeLinear keeps. Several f32 can have the same
/// reciprocal; of those, the one nearest the exact `1 / r` (almost always the file's value, and
/// otherwise one ulp from it: a 1e-7 relative change of the requantization scale).
pub(crate) fn recover_scale(r: f32) -> Option<f32> {
    if !r.is_finite() || r == 0.0 {
        return None;
    }
    let exact = 1.0 / r as f64;
    let guess = exact as f32;
    let step = |v: f32, up: bool| {
        let b = v.to_bits();
        // Positive and negative floats both move away from/towards zero with the bits.
        f32::from_bits(if up == (v > 0.0) { b + 1 } else { b - 1 })
    };
    let mut best = guess;
    let mut v = guess;
    for _ in 0..3 {
        v = step(v, false);
    }
    for _ in 0..7 {
        if v.recip() == r && (v as f64 - exact).abs() < (best as f64 - exact).abs() {
            best = v;
        }
        v = step(v, true);
    }
    best.is_finite().then_some(best)
}

/// The integer bias, in units of `x_scale · w_scale[c]` (as `quantize_static` writes it), from
/// the float constant tract folded its `DequantizeLinear` into: `b = round(f / (x_scale·w_scale))`,
/// kept only where `b as f32 · (x_scale·w_scale)` gives `f` back bit for bit (exact and unique for
/// |b| < 2^23). Zeros when the conv has no bias. Read from the folded value rather than from
/// [`annotate`]'s record because tract folds a small bias's cast eagerly under another name.
fn bias(
    model: &TypedModel,
    mut outlet: OutletId,
    c_out: usize,
    x_scale: f32,
    k_scale: &[f32],
) -> Result<Vec<i32>, String> {
    let folded = loop {
        let node = model.node(outlet.node);
        if let Some(k) = model.outlet_fact(outlet).ok().and_then(|f| f.konst.clone()) {
            break k;
        }
        let passthrough = node.op_as::<AxisOp>().is_some() || node.op_as::<Cast>().is_some();
        if !passthrough {
            return Err(format!(
                "bias: {} ({}) is not a constant",
                node.name,
                node.op.name()
            ));
        }
        outlet = node.inputs[0];
    };
    let f = folded.cast_to::<f32>().map_err(|e| format!("bias: {e}"))?;
    let f = f.try_as_plain_ram().map_err(|e| format!("bias: {e}"))?;
    let f = f.as_slice::<f32>().map_err(|e| format!("bias: {e}"))?;
    let f = broadcast(f, c_out, "bias")?;
    let mut b = Vec::with_capacity(c_out);
    for (c, (v, ks)) in f.iter().zip(k_scale).enumerate() {
        let s = x_scale * ks;
        let q = (*v as f64 / s as f64).round();
        if q.is_nan()
            || q.abs() >= (1 << 23) as f64
            || ((q as i32) as f32 * s).to_bits() != v.to_bits()
        {
            return Err(format!(
                "bias {v} of channel {c} is not an integer times x_scale·w_scale = {s}"
            ));
        }
        b.push(q as i32);
    }
    Ok(b)
}

/// Prefix of the model properties [`annotate`] writes and [`QdqConvPass`] reads, then removes.
const PROP: &str = "lookout.qdq.";

/// Records, as model properties, what tract's translation to a typed model loses: the integer
/// form of every constant `DequantizeLinear` (tract folds it into a float constant named
/// `<node>.0`) and the exact scale of every `QuantizeLinear` (tract keeps `1 / y_scale`). Runs
/// on the inference model, before `into_typed`.
pub fn annotate(model: &mut InferenceModel) {
    let value =
        |o: OutletId| -> Option<Arc<Tensor>> { model.outlet_fact(o).ok()?.value.concretize() };
    let mut props: Vec<(String, Arc<Tensor>)> = vec![];
    for node in model.nodes() {
        let kind = node.op.name();
        if kind == "DequantizeLinear" && (2..=3).contains(&node.inputs.len()) {
            let (Some(q), Some(scale)) = (value(node.inputs[0]), value(node.inputs[1])) else {
                continue;
            };
            let key = format!("{PROP}{}.0/", node.name);
            props.push((format!("{key}q"), q));
            props.push((format!("{key}scale"), scale));
            if let Some(zp) = node.inputs.get(2).and_then(|o| value(*o)) {
                props.push((format!("{key}zp"), zp));
            }
        } else if kind == "QuantizeLinear" && node.inputs.len() >= 2 {
            if let Some(scale) = value(node.inputs[1]) {
                props.push((format!("{PROP}{}/y_scale", node.name), scale));
            }
        }
    }
    model.properties.extend(props);
}

/// Walks back from `outlet` through same-type casts and axis changes (the conv's bias gets
/// both) to the constant tract folded a `DequantizeLinear` into, and returns the integer form
/// [`annotate`] recorded for it, checked: dequantised again along axis 0 (or with one scale), it
/// must give the folded constant bit for bit.
fn dequantized(model: &TypedModel, mut outlet: OutletId) -> Result<Dequantized, String> {
    loop {
        let node = model.node(outlet.node);
        let passthrough = node.op_as::<AxisOp>().is_some()
            || node.op_as::<Cast>().is_some_and(|c| {
                model
                    .outlet_fact(node.inputs[0])
                    .is_ok_and(|f| f.datum_type == c.to)
            });
        if !passthrough {
            break;
        }
        outlet = node.inputs[0];
    }
    let node = model.node(outlet.node);
    let folded = node
        .op_as::<Const>()
        .ok_or_else(|| format!("{} ({}) is not a constant", node.name, node.op.name()))?
        .val()
        .clone();
    let prop = |what: &str| model.properties.get(&format!("{PROP}{}/{what}", node.name));
    let values = prop("q")
        .ok_or_else(|| format!("{} is not a dequantised constant", node.name))?
        .clone();
    let flat = |t: &Tensor, what: &str| -> Result<Vec<f32>, String> {
        let t = t.cast_to::<f32>().map_err(|e| format!("{what}: {e}"))?;
        let v = t.try_as_plain_ram().map_err(|e| format!("{what}: {e}"))?;
        Ok(v.as_slice::<f32>().map_err(|e| e.to_string())?.to_vec())
    };
    let scale = flat(prop("scale").ok_or("no scale")?, "scale")?;
    let zero_point: Vec<i32> = match prop("zp") {
        Some(zp) => flat(zp, "zero point")?.iter().map(|z| *z as i32).collect(),
        None => vec![0],
    };
    // Dequantise again, as tract does ((q − zp) as f32 · scale), per slice of axis 0.
    let q = flat(&values, "values")?;
    let rows = values.shape().first().copied().unwrap_or(1).max(1);
    if (scale.len() != 1 && scale.len() != rows)
        || (zero_point.len() != 1 && zero_point.len() != rows)
    {
        return Err(format!(
            "{} scales and {} zero points for {rows} rows",
            scale.len(),
            zero_point.len()
        ));
    }
    let per_row = q.len() / rows;
    let pick = |v: &[f32], r: usize| if v.len() == 1 { v[0] } else { v[r] };
    let pick_i = |v: &[i32], r: usize| if v.len() == 1 { v[0] } else { v[r] };
    let again: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (*v as i32 - pick_i(&zero_point, i / per_row)) as f32 * pick(&scale, i / per_row)
        })
        .collect();
    let folded = flat(&folded, "folded constant")?;
    if folded.len() != again.len()
        || folded
            .iter()
            .zip(&again)
            .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        return Err(format!(
            "{}: the recorded integers do not dequantise to it along axis 0",
            node.name
        ));
    }
    Ok(Dequantized {
        values,
        scale,
        zero_point,
    })
}

/// One value per channel, or one for all.
fn broadcast<T: Copy>(v: &[T], len: usize, what: &str) -> Result<Vec<T>, String> {
    match v.len() {
        1 => Ok(vec![v[0]; len]),
        l if l == len => Ok(v.to_vec()),
        l => Err(format!("{what} has {l} values for {len} channels")),
    }
}

#[cfg(test)]
mod tests {
    use super::recover_scale;

    /// Scales as quantizers write them come back exactly from their reciprocal, wherever it is
    /// unique; where it is not, the value found has the same reciprocal.
    #[test]
    fn scale_from_reciprocal() {
        let mut s = 0x1234_5678u32;
        let mut exact = 0;
        for _ in 0..100_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let y = f32::from_bits(0x3a00_0000 + (s >> 8) % 0x0400_0000);
            let got = recover_scale(y.recip()).unwrap();
            assert_eq!(got.recip(), y.recip(), "{y}");
            exact += (got == y) as usize;
        }
        assert!(exact > 60_000, "{exact} of 100000 exact");
    }
}

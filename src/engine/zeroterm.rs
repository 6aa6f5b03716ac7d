//! Drops integer additions and subtractions of a term that is zero by construction: the weight
//! zero-point compensation tract wires behind every quantized matrix product, when the weight's zero
//! point is a constant 0 (onnxruntime's int8 weights are symmetric).
//!
//! Why: tract lowers a quantized einsum (`MatMulInteger`, tract-core `ops/einsum/einsum_matmul.rs`
//! `dequant`, `ops/matmul/quant.rs` `compensate_zero_points`) into the integer product followed by
//! `− b0 · Σ_k a` and `+ a0 · k · b0`, each an element-wise pass over the whole `[m, n]` i32 output,
//! plus the `Cast` and `Reduce<Sum>` over the activation that feed them. With b0 = 0 they add
//! nothing, but tract does not fold a product with a zero constant, so they run: in Florence-2's int8
//! vision encoder (577…36 864 rows per product) about a quarter of the time (benches/VLM_FLORENCE2.md).
//!
//! Exact: `x + 0` and `x − 0` on integers are `x`. A term counts as zero only when it is an integer
//! constant of zeros, a `Mul` with such a term, or a `Cast` / axis change of one; an operation is
//! dropped only where its kept input already has the output's type and shape (no broadcast is lost).
//! Floats are never touched (`x · 0` is not 0 for an infinite or NaN x). The nodes left without a
//! consumer are not planned. Skipped under `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_ZEROTERM=1`.

use tract_core::internal::*;
use tract_core::ops::binary::{OptBinByScalar, OptBinUnicast, TypedBinOp};
use tract_core::ops::cast::Cast;
use tract_core::ops::change_axes::AxisOp;

use super::pass::{env_off, GraphPass, Stage};

/// Removes `x + 0` and `x − 0` on integers where the 0 is known at load; after optimisation.
pub struct ZeroTermPass;

impl GraphPass for ZeroTermPass {
    fn name(&self) -> &'static str {
        "ZeroTerm"
    }
    fn replaces(&self) -> &'static str {
        "integer x+0 / x-0 (dropped)"
    }
    fn stage(&self) -> Stage {
        Stage::AfterOptimise
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        drop_zero_terms(model)
    }
}

/// The element-wise operation of a binary node, before or after tract's codegen.
fn bin_name(node: &TypedNode) -> Option<StaticName> {
    if let Some(op) = node.op_as::<TypedBinOp>() {
        return Some(op.0.name().into());
    }
    if let Some(op) = node.op_as::<OptBinByScalar>() {
        return Some(op.binop.name().into());
    }
    node.op_as::<OptBinUnicast>()
        .map(|op| op.binop.name().into())
}

/// Whether `outlet` is an integer tensor of zeros whatever the inputs (`depth` bounds the walk).
fn known_zero(model: &TypedModel, outlet: OutletId, depth: usize) -> bool {
    let Ok(fact) = model.outlet_fact(outlet) else {
        return false;
    };
    if !fact.datum_type.is_integer() {
        return false;
    }
    if let Some(k) = &fact.konst {
        return k
            .cast_to::<i64>()
            .ok()
            .and_then(|t| {
                t.try_as_plain_ram()
                    .ok()
                    .and_then(|r| r.as_slice::<i64>().ok().map(|s| s.iter().all(|&v| v == 0)))
            })
            .unwrap_or(false);
    }
    if depth == 0 {
        return false;
    }
    let node = model.node(outlet.node);
    if bin_name(node).as_deref() == Some("Mul") {
        return node.inputs.iter().any(|&i| known_zero(model, i, depth - 1));
    }
    if (node.op_is::<Cast>() || node.op_is::<AxisOp>()) && node.inputs.len() == 1 {
        return known_zero(model, node.inputs[0], depth - 1);
    }
    false
}

/// The input an `x + 0` / `x − 0` node can be replaced by, if it is one.
fn kept_input(model: &TypedModel, node: &TypedNode) -> Option<OutletId> {
    let name = bin_name(node)?;
    if node.inputs.len() != 2 || model.output_outlets().ok()?.contains(&node.id.into()) {
        return None;
    }
    let out = &node.outputs[0].fact;
    if !out.datum_type.is_integer() {
        return None;
    }
    let keep = match name.as_ref() {
        "Sub" if known_zero(model, node.inputs[1], 6) => node.inputs[0],
        "Add" if known_zero(model, node.inputs[1], 6) => node.inputs[0],
        "Add" if known_zero(model, node.inputs[0], 6) => node.inputs[1],
        _ => return None,
    };
    let kept = model.outlet_fact(keep).ok()?;
    (kept.datum_type == out.datum_type && kept.shape == out.shape).then_some(keep)
}

/// Set to `1` to keep every zero term (the A/B of this pass alone).
pub const NO_ZEROTERM_ENV: &str = "LOOKOUT_NO_ZEROTERM";

/// Drops every integer `x + 0` / `x − 0` whose zero is known at load; returns how many (none under
/// [`NO_ZEROTERM_ENV`]`=1`).
pub fn drop_zero_terms(model: &mut TypedModel) -> TractResult<usize> {
    if env_off(NO_ZEROTERM_ENV) {
        return Ok(0);
    }
    let candidates: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| kept_input(model, n).is_some())
        .map(|n| n.id)
        .collect();
    let mut dropped = 0;
    for id in candidates {
        // Decided again on the graph as patched so far: an earlier drop may have rewired this node.
        let node = model.node(id);
        let Some(keep) = kept_input(model, node) else {
            continue;
        };
        let mut patch = TypedModelPatch::new(format!("drop zero term {}", node.name));
        let kept = patch.tap_model(model, keep)?;
        patch.shunt_outside(model, id.into(), kept)?;
        patch.apply(model)?;
        dropped += 1;
    }
    Ok(dropped)
}

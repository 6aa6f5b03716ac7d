//! `StoreOrder`: an attention score product (`Q · Kᵀ` of two run-time f32 tensors) with its two
//! operands swapped, so that tract's matrix kernel writes its output tiles down the output's
//! contiguous axis.
//!
//! Why: tract lowers an einsum to a matrix product whose rows (`m`) come from its first input
//! and whose columns (`n`) from its second, and turns the product around only when `m < n`. Its
//! f32 kernels hold a tile of `mr` rows × `nr` columns (AVX-512: 32 × 6) and store it column by
//! column, `mr` values down each column in one vector store when the output's row axis is the
//! contiguous one, one value at a time otherwise. A self-attention's scores `[.., q, k]` have the
//! keys (`n`, from the second input) contiguous: each tile then goes out as 32 × 6 scattered
//! stores, 4 KiB apart for 1024 keys, which also alias in the cache. Measured on SmolVLM's int8
//! vision encoder (1 thread, AVX-512, 2026-12-07): the twelve `Q · Kᵀ` products took 995 ms, the
//! twelve `P · V` products (the same multiply-adds, output stored down its contiguous axis)
//! 205 ms. With the operands swapped the keys are the rows and the stores are whole vectors.
//!
//! Which products: a two-input f32 einsum of two run-time tensors (no constant: a weight's
//! product keeps tract's orientation, whose packing of the weight is done once at load) whose
//! output's innermost axis longer than 1 comes from the second input only, while the first input
//! has a row axis no longer than it, so that tract's own `m < n` rule does not turn the product
//! back. Decoder products with one query row are `RowMatMul`'s (that pass runs first).
//!
//! The same arithmetic: each output is the same k products added in the same order by the same
//! kernel (`a·b = b·a` in IEEE arithmetic), so the outputs are bit-identical to tract's plan
//! (tests/engine_storeorder.rs checks that, and onnxruntime). Skipped under
//! `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_STOREORDER=1` (the A/B of this pass alone).

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

use super::pass::{env_off, GraphPass, Stage};

/// Set to `1` to leave every einsum in tract's orientation.
pub const NO_STOREORDER_ENV: &str = "LOOKOUT_NO_STOREORDER";

/// Swaps the operands of every product that stores across its output's contiguous axis (see the
/// module doc). Runs on the decluttered model, before tract's codegen picks `m` and `n`.
pub struct StoreOrderPass;

impl GraphPass for StoreOrderPass {
    fn name(&self) -> &'static str {
        "StoreOrder"
    }
    fn replaces(&self) -> &'static str {
        "run-time product stored across its contiguous axis"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_STOREORDER_ENV) {
            return Ok(0);
        }
        swap_store_order(model)
    }
}

/// Swaps the operands of every einsum the pass takes; returns how many.
pub fn swap_store_order(model: &mut TypedModel) -> TractResult<usize> {
    let mut swaps = vec![];
    for node in model.nodes() {
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        if let Some(swapped) = plan(model, node, op)? {
            log::debug!(
                "{}: operands swapped ({} -> {})",
                node.name,
                op.axes,
                swapped.axes
            );
            swaps.push((node.id, swapped));
        }
    }
    let n = swaps.len();
    for (id, op) in swaps {
        let node = &model.nodes()[id];
        let inputs = [node.inputs[1], node.inputs[0]];
        let patch = TypedModelPatch::replace_single_op(model, node, &inputs, op)?;
        patch.apply(model)?;
    }
    Ok(n)
}

/// The einsum with its operands swapped, `None` when the product is not one the pass takes.
fn plan(model: &TypedModel, node: &TypedNode, op: &EinSum) -> TractResult<Option<EinSum>> {
    if node.inputs.len() != 2
        || op.q_params.is_some()
        || op.operating_dt != f32::datum_type()
        || op.axes.input_count() != 2
        || op.axes.output_count() != 1
    {
        return Ok(None);
    }
    let facts = [
        model.outlet_fact(node.inputs[0])?,
        model.outlet_fact(node.inputs[1])?,
    ];
    if facts
        .iter()
        .any(|f| f.konst.is_some() || f.datum_type != f32::datum_type())
    {
        return Ok(None);
    }
    let out = model.outlet_fact(node.id.into())?;
    // The output's contiguous axis: its last one longer than 1.
    let Some(inner) = (0..out.rank()).rev().find(|&i| !out.shape[i].is_one()) else {
        return Ok(None);
    };
    let Some(n_axis) = op
        .axes
        .iter_all_axes()
        .find(|a| a.outputs[0].contains(&inner))
    else {
        return Ok(None);
    };
    // Stored down its columns already, or not a column axis (in both inputs: a batch axis).
    if !n_axis.inputs[0].is_empty() || n_axis.inputs[1].len() != 1 {
        return Ok(None);
    }
    let n = &facts[1].shape[n_axis.inputs[1][0]];
    // The first input's row axes (in it and the output only): one, so it is the `m` tract picks.
    let rows: Vec<&TDim> = op
        .axes
        .iter_all_axes()
        .filter(|a| a.inputs[0].len() == 1 && a.inputs[1].is_empty() && a.outputs[0].len() == 1)
        .map(|a| &facts[0].shape[a.inputs[0][0]])
        .filter(|d| !d.is_one())
        .collect();
    let Some(m) = rows.first() else {
        return Ok(None);
    };
    // Swapped, tract would turn the product back where the new rows (n) are fewer than the new
    // columns (m); and a short n would waste the kernel's tall tiles.
    let keeps = match (m.to_i64(), n.to_i64()) {
        (Ok(m), Ok(n)) => n >= m,
        _ => (n.clone() - *m).prove_positive_or_zero(),
    };
    if rows.len() != 1 || !keeps {
        return Ok(None);
    }
    // Rebuilt through `AxesMapping::new`, which puts the axes back in the order tract keeps them.
    let axes: TVec<Axis> = op
        .axes
        .iter_all_axes()
        .map(|axis| {
            let mut axis = axis.clone();
            axis.inputs.swap(0, 1);
            axis
        })
        .collect();
    let mut swapped = op.clone();
    swapped.axes = AxesMapping::new(2, 1, axes)?;
    Ok(Some(swapped))
}

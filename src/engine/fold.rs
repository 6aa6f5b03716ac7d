//! Folds the constant work tract's optimiser leaves in the plan: chains of ops whose inputs are all
//! constants but which tract declines to fold because one input is a large weight with several
//! consumers (`PropConst` weighs such an input against a 4 MiB budget so a weight is not copied
//! once per consumer).
//!
//! Why it matters: an int8 `MatMulInteger` is lowered into an integer einsum plus zero-point
//! compensation, which needs the weight's column sums: `Cast(i32) → Reduce<Sum>` hung off the
//! weight. For a weight over 4 MiB (a VLM's `lm_head`: 49 280 × 576 = 28 M values) the weight then
//! has two consumers, so neither the sums nor the packing of the weight for the matrix kernels is
//! folded, and both run on **every** inference — for a decoder, on every token.
//!
//! A chain is folded at its last step whose output is no larger than its inputs (or the budget), so
//! a fold never grows the model: the column sums fold (a few KB from 28 MB), a dequantisation to
//! f32 (4× the int8 weight) does not.

use std::collections::HashSet;

use tract_core::internal::*;
use tract_core::ops::konst::Const;
use tract_core::ops::source::TypedSource;
use tract_core::optim::CONST_FOLD_MEM_BUDGET;

use super::pass::GraphPass;

/// The [`GraphPass`] wrapper of [`fold_const_chains`].
pub struct FoldConstPass;

impl GraphPass for FoldConstPass {
    fn name(&self) -> &'static str {
        "FoldedConst"
    }
    fn replaces(&self) -> &'static str {
        "constant chains run on every inference"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        fold_const_chains(model)
    }
}

/// Replaces every constant-input chain of an optimised model that can be folded without growing
/// it by its value. Returns how many chains were folded.
pub fn fold_const_chains(model: &mut TypedModel) -> TractResult<usize> {
    let mut tried = HashSet::new();
    let mut folded = 0;
    while let Some(patch) = next_fold(model, &mut tried)? {
        patch.apply(model)?;
        folded += 1;
    }
    if folded > 0 {
        // Drops the nodes the patches cut off, and with them the weights only they used.
        model.compact()?;
    }
    Ok(folded)
}

/// Bytes a value takes (an opaque packed tensor counts as one element, as in `PropConst`).
fn mem(values: &[TValue]) -> u64 {
    values
        .iter()
        .map(|t| (t.datum_type().size_of() * t.volume()) as u64)
        .sum()
}

fn next_fold(
    model: &TypedModel,
    tried: &mut HashSet<usize>,
) -> TractResult<Option<TypedModelPatch>> {
    // Only nodes the outputs need: the ones a previous patch cut off are still in `model.nodes`.
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.inputs.is_empty()
            || node.op_is::<Const>()
            || node.op_is::<TypedSource>()
            || !tried.insert(id)
        {
            continue;
        }
        let facts = model.node_input_facts(id)?;
        let Some(inputs) = facts
            .iter()
            .map(|f| f.konst.clone().map(|k| k.into_tvalue()))
            .collect::<Option<TVec<TValue>>>()
        else {
            continue;
        };
        let allowance = mem(&inputs).max(CONST_FOLD_MEM_BUDGET);
        // An op that cannot be evaluated outside a plan (stateful, or not yet) stays.
        let Ok(Some(mut value)) = node.op.eval_out_of_plan(inputs) else {
            continue;
        };
        let mut best = (mem(&value) <= allowance).then(|| (id, value.clone()));
        let mut end = node;
        while let Some(succ) = model.single_succ(end.id)? {
            if succ.inputs.len() != 1 {
                break;
            }
            let Ok(Some(next)) = succ.op.eval_out_of_plan(value.clone()) else {
                break;
            };
            value = next;
            end = succ;
            if mem(&value) <= allowance {
                best = Some((end.id, value.clone()));
            }
        }
        let Some((at, value)) = best else {
            continue;
        };
        let mut patch = TypedModelPatch::new("fold constant chain");
        let at_node = model.node(at);
        for (slot, tensor) in value.into_iter().enumerate() {
            let outlet = OutletId::new(at, slot);
            let exotic = model.outlet_fact(outlet)?.exotic_fact.clone();
            let name = if slot == 0 {
                format!("{}.folded", at_node.name)
            } else {
                format!("{}.folded.{slot}", at_node.name)
            };
            let wire = patch.wire_node(
                name,
                Const::new_with_opt_exotic_fact(tensor.into_arc_tensor(), exotic)?,
                &[],
            )?[0];
            patch.shunt_outside(model, outlet, wire)?;
        }
        return Ok(Some(patch));
    }
    Ok(None)
}

//! Pins the length of a `NonZero` selection over a single element to 1, so the graph after it has
//! concrete shapes instead of a run-time symbol.
//!
//! Why it matters: SmolVLM's vision encoder selects its "real" images with
//! `NonZero(Not(all pixels zero))` over the image axis, then `GatherND`s them. tract carries the
//! selection's length as a free symbol (`x`), and its einsum lowering (`einsum_matmul.rs`
//! `detect_rule`) ranks candidate matmul axes by `as_i64().unwrap_or(i64::MAX)`: the unknown `x`
//! outranks the 1 024 patch tokens, so each projection runs as 1 024 matrix-vector products with
//! n = x = 1 instead of one matrix product with n = 1 024 (28 s instead of a few for the int8
//! encoder). With one image in, the selection is that image or nothing, so its length is 0 or 1;
//! the pinned op ([`PinnedNonZero`]) computes the same coordinates and fails loudly on the 0 case
//! (a uniformly zero image, which normalised camera pixels cannot produce) instead of computing a
//! wrong shape.
//!
//! tract's own `TypedModel::set_symbols` cannot do this alone: its `NonZero` mints the symbol again
//! from the op when re-wired, and the `Reshape`s downstream (with the symbol substituted) then
//! disagree with their input. Here the `NonZero` itself is replaced while the symbol is substituted.

use std::collections::HashMap;

use tract_core::internal::*;
use tract_core::model::translator::Translate;

/// `NonZero` over an input of exactly one element, whose result is known to hold one coordinate
/// column: `[rank, 1]` of zeros when the element is non-zero (an error otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PinnedNonZero;

impl Op for PinnedNonZero {
    fn name(&self) -> StaticName {
        "PinnedNonZero".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PinnedNonZero {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.len() == 1,
            "PinnedNonZero: input of shape {:?}, expected a single element",
            input.shape()
        );
        let set = if input.datum_type() == bool::datum_type() {
            input.try_as_plain_ram()?.as_slice::<bool>()?[0]
        } else {
            let v = input.cast_to::<f64>()?;
            v.try_as_plain_ram()?.as_slice::<f64>()?[0] != 0.0
        };
        ensure!(
            set,
            "NonZero over the single image selected none (an all-zero image): \
             this graph was planned for exactly one selected image"
        );
        Ok(tvec!(Tensor::zero::<i64>(&[input.rank(), 1])?.into_tvalue()))
    }
}

impl TypedOp for PinnedNonZero {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(i64::fact([inputs[0].rank(), 1])))
    }

    as_op!();
}

/// The count symbol of a `NonZero` node whose input has one element, if `node` is one.
fn single_selection(model: &TypedModel, node: &TypedNode) -> Option<Symbol> {
    if node.op.name() != "NonZero" || node.inputs.len() != 1 || node.outputs.len() != 1 {
        return None;
    }
    let input = model.outlet_fact(node.inputs[0]).ok()?;
    if input.shape.volume().as_i64() != Some(1) {
        return None;
    }
    // tract's NonZero output is `[rank, count]` with `count` a symbol of its own.
    let out = &node.outputs[0].fact;
    match out.shape.dims().get(1) {
        Some(TDim::Sym(s)) if out.rank() == 2 => Some(s.clone()),
        _ => None,
    }
}

#[derive(Debug)]
struct Pin {
    nodes: Vec<usize>,
    subs: HashMap<Symbol, TDim>,
}

impl Translate<TypedFact, Box<dyn TypedOp>, TypedFact, Box<dyn TypedOp>> for Pin {
    fn translate_node(
        &self,
        source: &TypedModel,
        node: &TypedNode,
        target: &mut TypedModel,
        mapping: &HashMap<OutletId, OutletId>,
    ) -> TractResult<TVec<OutletId>> {
        if self.nodes.contains(&node.id) {
            target.wire_node(&node.name, PinnedNonZero, &[mapping[&node.inputs[0]]])
        } else {
            self.subs.translate_node(source, node, target, mapping)
        }
    }
}

/// Replaces every `NonZero` over a single element by [`PinnedNonZero`] and its count symbol by 1
/// throughout the (typed, not yet optimised) model. Returns the new model and how many were
/// pinned; the model is returned unchanged when there are none.
pub fn pin_single_selections(model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut nodes = Vec::new();
    let mut subs = HashMap::new();
    for node in model.nodes() {
        if let Some(sym) = single_selection(&model, node) {
            nodes.push(node.id);
            subs.insert(sym, TDim::Val(1));
        }
    }
    if nodes.is_empty() {
        return Ok((model, 0));
    }
    let n = nodes.len();
    let pinned = Pin { nodes, subs }.translate_model(&model)?;
    Ok((pinned, n))
}

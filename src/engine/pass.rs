//! The contract of lookout's graph passes (as tract's `TypedPass`): each swaps tract ops for
//! lookout's where they compute the same thing, and says when it must run. The op files implement
//! it; [`super::passes`] lists them and [`super::optimize`] applies them, so this leaf names none.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;

/// Where in tract's optimisation a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// On the typed model as translated, before constant propagation folds constant chains
    /// (a weight's `DequantizeLinear`) into plain tensors.
    BeforeConstants,
    /// On the typed model after constant propagation, before decluttering and codegen (which
    /// rewrite the ops a pass would look for).
    BeforeOptimise,
    /// On the decluttered model, before codegen: tract's own rewrites have run (a transpose folded
    /// into a matrix product's axes), its kernels are not chosen yet.
    BeforeCodegen,
    /// On the optimised model, swapping ops in place.
    AfterOptimise,
}

pub trait GraphPass {
    /// The lookout op it swaps in (`QConv`, `SelectTopk`, …), for logs and [`Rewrites`].
    fn name(&self) -> &'static str;
    /// What it replaces, for the log line: "quantized Conv", "TopK", ….
    fn replaces(&self) -> &'static str;
    /// Most passes swap one op for another on the final plan.
    fn stage(&self) -> Stage {
        Stage::AfterOptimise
    }
    /// Swaps every node it recognises; returns how many.
    fn run(&self, model: &mut TypedModel) -> TractResult<usize>;
}

/// tract's declutter without its `ConcatThenEinsum` pass, which splits a product reading a
/// `Concat` along its summed axis into one product per part and an add chain. For lookout's 1x1
/// convs (which read the concat in place) the parts ran slower than the whole, and tract's add
/// chain over the partial outputs took longer still: nanodet-g's PAN 1x1 conv over a concat of
/// 128x52x52 left a three-input add of 0.6 ms. Summed `lookout bench --profile` node times,
/// 1 thread, two runs each (Zen 5, 2026-12-07): nanodet-g 23.96 / 23.96 → 22.90 / 22.57 ms,
/// YOLOX-Nano 8.67 / 8.26 → 7.84 / 8.06, FastestDet 2.54 / 2.40 → 2.35 / 2.32, CenterNet 29.5 /
/// 28.5 → 29.3 / 29.0. The pass is private to tract, so it is told by its name; where this
/// tract has none by that name the whole declutter runs (logged).
pub fn declutter_keeping_concats(model: &mut TypedModel) -> TractResult<()> {
    let mut opt = tract_core::optim::Optimizer::declutter();
    let before = opt.passes.len();
    opt.passes
        .retain(|p| !format!("{p:?}").starts_with(CONCAT_THEN_EINSUM));
    if opt.passes.len() == before {
        log::warn!("tract's declutter has no {CONCAT_THEN_EINSUM} pass: products of concats split");
    }
    opt.session().optimize(model)
}

/// The name (its `Debug` form) of tract's pass [`declutter_keeping_concats`] leaves out.
const CONCAT_THEN_EINSUM: &str = "ConcatThenEinsum";

/// Whether the switch `var` (`LOOKOUT_NO_QMATMUL`, …) is set to `1`: the A/B of one pass, off.
pub fn env_off(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Replaces, in place, the op of every node for which `swap` gives a new one: same inputs, same
/// outputs, so nothing else in the graph changes. Returns how many nodes were swapped.
pub fn swap_ops(
    model: &mut TypedModel,
    swap: impl Fn(&TypedModel, &TypedNode) -> Option<Box<dyn TypedOp>>,
) -> usize {
    // Decided on the whole graph first: `swap` may look at other nodes' facts.
    let swaps: Vec<(usize, Box<dyn TypedOp>)> = model
        .nodes()
        .iter()
        .filter_map(|node| Some((node.id, swap(model, node)?)))
        .collect();
    let n = swaps.len();
    for (id, op) in swaps {
        model.node_mut(id).op = op;
    }
    n
}

/// What the passes swapped in: node counts per pass, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    counts: Vec<(&'static str, &'static str, usize)>,
}

impl Rewrites {
    pub(super) fn record(&mut self, pass: &dyn GraphPass, n: usize) {
        self.counts.push((pass.name(), pass.replaces(), n));
    }
    /// Nodes swapped by the pass named `name` (0 when it did not run).
    pub fn count(&self, name: &str) -> usize {
        self.counts
            .iter()
            .filter(|(n, _, _)| *n == name)
            .map(|(_, _, c)| c)
            .sum()
    }
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|(_, _, c)| *c == 0)
    }
}

impl std::fmt::Display for Rewrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(name, replaces, n)| format!("{n} {replaces} as {name}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// The binary op of `node` when it is `B`: its two inputs, and the single f32 value of the one
/// that is a constant (`None` when neither is).
pub(crate) fn bin_with_const<B: tract_core::ops::binary::BinMiniOp>(
    model: &TypedModel,
    node: &TypedNode,
) -> Option<(OutletId, Option<f32>, OutletId)> {
    let bin = node.op_as::<TypedBinOp>()?;
    bin.0.downcast_ref::<B>()?;
    let [a, b] = node.inputs[..] else {
        return None;
    };
    match (scalar_f32(model, a), scalar_f32(model, b)) {
        (None, Some(v)) => Some((a, Some(v), b)),
        (Some(v), None) => Some((b, Some(v), a)),
        _ => Some((a, None, b)),
    }
}

/// The single consumer of `o` (not a model output), if there is exactly one.
pub(crate) fn only_reader(model: &TypedModel, o: OutletId) -> bool {
    model.outlet_successors(o).len() == 1 && !model.outputs.contains(&o)
}

/// The value of `o` when it is a one-value f32 constant.
pub(crate) fn scalar_f32(model: &TypedModel, o: OutletId) -> Option<f32> {
    let k = model.outlet_fact(o).ok()?.konst.clone()?;
    (k.datum_type() == f32::datum_type() && k.len() == 1)
        .then(|| k.cast_to_scalar::<f32>().ok())
        .flatten()
}

/// Replaces each found region with one node: `(last, inputs, op)` wires `op` over `inputs` in
/// place of node `last`'s output, named after it; the nodes only the region read go at the
/// compaction after the last patch. Returns how many.
pub(crate) fn fuse_regions<O: TypedOp + Clone>(
    model: &mut TypedModel,
    found: &[(usize, TVec<OutletId>, O)],
) -> TractResult<usize> {
    for (last, inputs, op) in found {
        let name = model.node(*last).name.clone();
        let mut patch = TypedModelPatch::new(format!("{name} as {}", op.name()));
        let taps = inputs
            .iter()
            .map(|&i| patch.tap_model(model, i))
            .collect::<TractResult<TVec<_>>>()?;
        let y = patch.wire_node(name, op.clone(), &taps)?[0];
        patch.shunt_outside(model, OutletId::new(*last, 0), y)?;
        patch.apply(model)?;
    }
    if !found.is_empty() {
        model.compact()?;
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This tract's declutter has the pass by that name, so leaving it out is not a no-op.
    #[test]
    fn tracts_declutter_has_the_concat_pass() {
        let names: Vec<String> = tract_core::optim::Optimizer::declutter()
            .passes
            .iter()
            .map(|p| format!("{p:?}"))
            .collect();
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with(CONCAT_THEN_EINSUM))
                .count(),
            1,
            "{names:?}"
        );
    }
}

//! `BlockBinary`: an f32 `Add`, `Sub` or `Mul` that tract left on its generic broadcasting loop,
//! computed as straight loops over the contiguous blocks both inputs share.
//!
//! Why: tract's optimiser gives an element-wise op its unicast or by-scalar kernel only when one
//! input is the other's shape or a scalar per row. Anything else broadcasting runs ndarray's `Zip`
//! over the whole output, element by element with index arithmetic. A decoder's rotary embedding
//! multiplies `q [1, heads, S, 64]` by `cos [1, 1, S, 64]` and adds the attention mask
//! `[1, 1, S, P+S]` to `[1, heads, S, P+S]` scores: in SmolVLM's prefill (78 tokens) the 423 such
//! `Mul`s and 31 `Add`s took 29 of 115 ms (2026-12-07, AMD EPYC, 1 thread).
//!
//! Here the output is seen as `[outer…, block]`, `block` the trailing axes on which both inputs have
//! the output's lengths: for every outer index one loop over `block` contiguous values of each
//! input, an input's outer offset 0 along the axes it broadcasts. Where that block is short (fewer
//! than [`MIN_BLOCK`] values: a broadcast along the last axis) the op runs tract's own evaluation.
//!
//! The same arithmetic: one IEEE add, subtract or multiply per output element, as tract's loop does,
//! so the outputs are bit-identical (tests/engine_elementwise.rs on the tiny SmolVLM decoders; the unit
//! tests below against a naive broadcast). Skipped under `LOOKOUT_PLAIN_TRACT=1` or
//! `LOOKOUT_NO_BLOCKBINARY=1` (the A/B of this pass alone).

use tract_core::broadcast::multi_broadcast;
use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::math::{Add, Mul, Sub};

use super::pass::{env_off, swap_ops, GraphPass};

/// Set to `1` to leave broadcasting element-wise ops on tract's loop.
pub const NO_BLOCKBINARY_ENV: &str = "LOOKOUT_NO_BLOCKBINARY";

/// Contiguous values per inner loop below which tract's own evaluation runs instead.
const MIN_BLOCK: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Add,
    Sub,
    Mul,
}

impl Kind {
    fn apply(self, a: &[f32], b: &[f32], c: &mut [f32]) {
        // Three plain zips: the compiler vectorises each.
        match self {
            Kind::Add => c
                .iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(c, (a, b))| *c = a + b),
            Kind::Sub => c
                .iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(c, (a, b))| *c = a - b),
            Kind::Mul => c
                .iter_mut()
                .zip(a.iter().zip(b))
                .for_each(|(c, (a, b))| *c = a * b),
        }
    }
}

/// The f32 binary op, with tract's op kept for the shapes it does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockBinary {
    kind: Kind,
    tract: TypedBinOp,
}

impl Op for BlockBinary {
    fn name(&self) -> StaticName {
        "BlockBinary".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.kind)])
    }

    op_as_typed_op!();
}

/// `c = a ∘ b` by contiguous blocks, or `None` when the shapes leave a block shorter than
/// [`MIN_BLOCK`] (or do not broadcast, or differ in rank).
fn eval_blocks(kind: Kind, a: &Tensor, b: &Tensor) -> TractResult<Option<Tensor>> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.len() != sb.len() {
        return Ok(None);
    }
    let Ok(out) = multi_broadcast(&[sa, sb]) else {
        return Ok(None);
    };
    let r = out.len();
    // The trailing axes where both inputs have the output's length.
    let mut split = r;
    while split > 0 && sa[split - 1] == out[split - 1] && sb[split - 1] == out[split - 1] {
        split -= 1;
    }
    let block: usize = out[split..].iter().product();
    if block < MIN_BLOCK && out.iter().product::<usize>() > 0 {
        return Ok(None);
    }
    // Each input's stride, in blocks, along the outer axes; 0 where it broadcasts.
    let strides = |s: &[usize]| -> TVec<usize> {
        let mut st = tvec![0; split];
        let mut acc = 1;
        for i in (0..split).rev() {
            st[i] = if s[i] == 1 && out[i] != 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (ta, tb) = (strides(sa), strides(sb));
    let (pa, pb) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
    let (xa, xb) = (pa.as_slice::<f32>()?, pb.as_slice::<f32>()?);
    // SAFETY: f32 has no invalid bit patterns, and the loop below writes every value: `outer`
    // blocks of `block` values are the whole output.
    let mut c = unsafe { Tensor::uninitialized::<f32>(&out)? };
    let outer: usize = out[..split].iter().product();
    {
        let mut pc = c.try_as_plain_ram_mut()?;
        let xc = pc.as_slice_mut::<f32>()?;
        let mut idx: TVec<usize> = tvec![0; split];
        for o in 0..outer {
            let (oa, ob) = idx
                .iter()
                .enumerate()
                .fold((0, 0), |(oa, ob), (i, &x)| (oa + x * ta[i], ob + x * tb[i]));
            kind.apply(
                &xa[oa * block..][..block],
                &xb[ob * block..][..block],
                &mut xc[o * block..][..block],
            );
            // The next outer index, last axis fastest.
            for i in (0..split).rev() {
                idx[i] += 1;
                if idx[i] < out[i] {
                    break;
                }
                idx[i] = 0;
            }
        }
    }
    Ok(Some(c))
}

impl EvalOp for BlockBinary {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if inputs.len() == 2 && inputs.iter().all(|t| t.datum_type() == f32::datum_type()) {
            if let Some(c) = eval_blocks(self.kind, &inputs[0], &inputs[1])? {
                return Ok(tvec!(c.into_tvalue()));
            }
        }
        self.tract.eval(ctx, inputs)
    }
}

impl TypedOp for BlockBinary {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.tract.output_facts(inputs)
    }

    as_op!();
}

/// Swaps every f32 `Add`, `Sub` and `Mul` still on tract's generic loop after optimisation (tract's
/// kernels have become `OptBin*` ops by then) for [`BlockBinary`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockBinaryPass;

impl GraphPass for BlockBinaryPass {
    fn name(&self) -> &'static str {
        "BlockBinary"
    }
    fn replaces(&self) -> &'static str {
        "broadcasting f32 Add/Sub/Mul"
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_BLOCKBINARY_ENV) {
            return Ok(0);
        }
        Ok(swap_ops(model, |model, node| {
            let op = node.op_as::<TypedBinOp>()?;
            let kind = if op.0.is::<Add>() {
                Kind::Add
            } else if op.0.is::<Sub>() {
                Kind::Sub
            } else if op.0.is::<Mul>() {
                Kind::Mul
            } else {
                return None;
            };
            let facts = model.node_input_facts(node.id).ok()?;
            let out = model.outlet_fact(node.id.into()).ok()?;
            if op.1.is_some()
                || facts.len() != 2
                || facts[0].rank() != facts[1].rank()
                || facts
                    .iter()
                    .chain([&out])
                    .any(|f| f.datum_type != f32::datum_type())
            {
                return None;
            }
            Some(Box::new(BlockBinary {
                kind,
                tract: op.clone(),
            }) as Box<dyn TypedOp>)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `a ∘ b` broadcast the obvious way, index by index.
    fn naive(kind: Kind, sa: &[usize], a: &[f32], sb: &[usize], b: &[f32]) -> Vec<f32> {
        let out = multi_broadcast(&[sa, sb]).unwrap();
        let n: usize = out.iter().product();
        let offset = |s: &[usize], idx: &[usize]| -> usize {
            idx.iter()
                .zip(s)
                .fold(0, |o, (&i, &d)| o * d + if d == 1 { 0 } else { i })
        };
        (0..n)
            .map(|mut flat| {
                let mut idx = vec![0; out.len()];
                for i in (0..out.len()).rev() {
                    idx[i] = flat % out[i];
                    flat /= out[i];
                }
                let (x, y) = (a[offset(sa, &idx)], b[offset(sb, &idx)]);
                let mut c = [0f32];
                kind.apply(&[x], &[y], &mut c);
                c[0]
            })
            .collect()
    }

    fn tensor(shape: &[usize], seed: usize) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 + seed) % 101) as f32 / 7.0 - 6.0)
            .collect();
        Tensor::from_shape(shape, &v).unwrap()
    }

    #[test]
    fn blocks_match_a_naive_broadcast() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[1, 9, 5, 64], &[1, 1, 5, 64]), // rotary: heads broadcast
            (&[1, 1, 5, 64], &[1, 9, 5, 64]), // the same, operands swapped
            (&[1, 9, 5, 12], &[1, 1, 5, 12]), // a mask over scores
            (&[2, 3, 4, 16], &[2, 1, 4, 16]), // a middle axis
            (&[2, 3, 4, 16], &[1, 3, 1, 16]), // two of them
            (&[3, 40], &[3, 40]),             // same shapes
            (&[0, 9, 16], &[1, 9, 16]),       // empty
        ];
        for kind in [Kind::Add, Kind::Sub, Kind::Mul] {
            for (sa, sb) in cases {
                let (a, b) = (tensor(sa, 1), tensor(sb, 5));
                let got = eval_blocks(kind, &a, &b).unwrap().expect("taken");
                let (pa, pb) = (a.try_as_plain_ram().unwrap(), b.try_as_plain_ram().unwrap());
                let want = naive(
                    kind,
                    sa,
                    pa.as_slice::<f32>().unwrap(),
                    sb,
                    pb.as_slice::<f32>().unwrap(),
                );
                assert_eq!(got.shape(), &*multi_broadcast(&[*sa, *sb]).unwrap());
                let pg = got.try_as_plain_ram().unwrap();
                let got = pg.as_slice::<f32>().unwrap();
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{kind:?} {sa:?} {sb:?}"
                );
            }
        }
    }

    #[test]
    fn short_blocks_and_mismatches_are_left_to_tract() {
        // Broadcast along the last axis: a block of 1.
        let (a, b) = (tensor(&[4, 16], 0), tensor(&[4, 1], 0));
        assert!(eval_blocks(Kind::Mul, &a, &b).unwrap().is_none());
        // Shapes that do not broadcast, and unequal ranks.
        let (a, b) = (tensor(&[4, 16], 0), tensor(&[3, 16], 0));
        assert!(eval_blocks(Kind::Mul, &a, &b).unwrap().is_none());
        let (a, b) = (tensor(&[4, 16], 0), tensor(&[16], 0));
        assert!(eval_blocks(Kind::Mul, &a, &b).unwrap().is_none());
    }
}

//! `HardSwish`: MobileNetV3's hard-swish, `(x·a) · min(max(x + b, lo), hi)` (a = 1/6, b = 3,
//! lo = 0, hi = 6), five element-wise nodes in an ONNX export, as one pass over the tensor.
//!
//! Why: tract 0.23.9 fuses the add, max and min into one `OptBinChain` and the two products into
//! another, but runs each on its generic element loop on the calling thread: CenterNet-MBv3's 20
//! hard-swishes took 3.5 ms of its 40 ms per image at 1 thread (Zen 5, 2026-12-07), and none of
//! it went faster with a second thread. [`HardSwish`] reads `x` once, writes `y` once, with the
//! loop vectorised for the CPU's widest vectors, and splits the tensor over tract's pool.
//!
//! The same arithmetic: each element goes through the same five IEEE operations in the same
//! order (the product `x·a` first, then `x + b`, the clamp, the product of the two), so for inputs
//! without NaN the output is bit-identical to tract's plan (tract's f32 `max`/`min` are Rust's
//! `f32::max`/`f32::min`, used here too; `tests` below check the bits). Skipped under
//! `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_HARDSWISH=1` (the A/B of this pass alone).

use tract_core::internal::*;
use tract_core::ops::math::{Add, Max, Min, Mul};

use super::par::for_each_chunk;
use super::pass::{bin_with_const, env_off, fuse_regions, only_reader, GraphPass, Stage};

/// Set to `1` to leave hard-swish to tract's element-wise nodes.
pub const NO_HARDSWISH_ENV: &str = "LOOKOUT_NO_HARDSWISH";

/// Elements per task when the tensor is split over the pool.
const CHUNK: usize = 1 << 15;

/// `y = (x·a) · clamp(x + b)`, the clamp a max with `lo` then a min with `hi` (or the min first
/// when `min_first`), as the export ordered them.
#[derive(Debug, Clone, PartialEq)]
pub struct HardSwish {
    a: f32,
    b: f32,
    lo: f32,
    hi: f32,
    min_first: bool,
}

impl Eq for HardSwish {}

impl std::hash::Hash for HardSwish {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for v in [self.a, self.b, self.lo, self.hi] {
            v.to_bits().hash(state);
        }
        self.min_first.hash(state);
    }
}

impl Op for HardSwish {
    fn name(&self) -> StaticName {
        "HardSwish".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "(x·{}) · {}(x + {}, {}, {})",
            self.a,
            if self.min_first { "max(min" } else { "min(max" },
            self.b,
            if self.min_first { self.hi } else { self.lo },
            if self.min_first { self.lo } else { self.hi }
        )])
    }

    op_as_typed_op!();
}

impl HardSwish {
    /// One element, in the graph's order of operations.
    #[inline(always)]
    fn one(&self, x: f32) -> f32 {
        let m = x * self.a;
        let s = x + self.b;
        let c = if self.min_first {
            s.min(self.hi).max(self.lo)
        } else {
            s.max(self.lo).min(self.hi)
        };
        m * c
    }

    #[inline(always)]
    fn run(&self, x: &[f32], y: &mut [f32]) {
        for (y, x) in y.iter_mut().zip(x) {
            *y = self.one(*x);
        }
    }

    /// [`Self::run`] compiled for AVX-512, so that the loop is vectorised 16 wide.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, x: &[f32], y: &mut [f32]) {
        self.run(x, y)
    }

    /// [`Self::run`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, x: &[f32], y: &mut [f32]) {
        self.run(x, y)
    }

    fn run_best(&self, x: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: checked just above.
                return unsafe { self.run_avx512(x, y) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: checked just above.
                return unsafe { self.run_avx2(x, y) };
            }
        }
        self.run(x, y)
    }
}

impl EvalOp for HardSwish {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        ensure!(
            x.datum_type() == f32::datum_type(),
            "HardSwish: input of type {:?}, planned for f32",
            x.datum_type()
        );
        // SAFETY: every element is written below.
        let mut y = unsafe { Tensor::uninitialized::<f32>(x.shape())? };
        let xs = x.try_as_plain_ram()?;
        let xs = xs.as_slice::<f32>()?;
        let mut ys = y.try_as_plain_ram_mut()?;
        for_each_chunk(
            ys.as_slice_mut::<f32>()?,
            CHUNK,
            || (),
            |i, out, _| self.run_best(&xs[i * CHUNK..][..out.len()], out),
        );
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for HardSwish {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Swaps each hard-swish of the decluttered graph for one [`HardSwish`] node.
pub struct HardSwishPass;

impl GraphPass for HardSwishPass {
    fn name(&self) -> &'static str {
        "HardSwish"
    }
    fn replaces(&self) -> &'static str {
        "hard-swish (5 element-wise nodes)"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_HARDSWISH_ENV) {
            return Ok(0);
        }
        let found: Vec<(usize, TVec<OutletId>, HardSwish)> = model
            .nodes()
            .iter()
            .filter_map(|n| matched(model, n).map(|(x, op)| (n.id, tvec![x], op)))
            .collect();
        fuse_regions(model, &found)
    }
}

/// When `node` is the last product of a hard-swish: its input `x` and the fused op.
fn matched(model: &TypedModel, node: &TypedNode) -> Option<(OutletId, HardSwish)> {
    let (p, None, q) = bin_with_const::<Mul>(model, node)? else {
        return None;
    };
    // One side is x·a, the other the clamp of x + b; either order.
    for (prod, clamp) in [(p, q), (q, p)] {
        let Some((x, Some(a), _)) = bin_with_const::<Mul>(model, model.node(prod.node)) else {
            continue;
        };
        let outer = model.node(clamp.node);
        let (first, outer_v, min_first) =
            if let Some((i, Some(v), _)) = bin_with_const::<Min>(model, outer) {
                (i, v, false)
            } else if let Some((i, Some(v), _)) = bin_with_const::<Max>(model, outer) {
                (i, v, true)
            } else {
                continue;
            };
        let inner = model.node(first.node);
        let (add, inner_v) = if min_first {
            bin_with_const::<Min>(model, inner)
        } else {
            bin_with_const::<Max>(model, inner)
        }
        .and_then(|(i, v, _)| Some((i, v?)))?;
        let (x2, Some(b), _) = bin_with_const::<Add>(model, model.node(add.node))? else {
            continue;
        };
        let f32_like_x = |o: OutletId| {
            model
                .outlet_fact(o)
                .is_ok_and(|f| f.datum_type == f32::datum_type() && f.konst.is_none())
        };
        let same_shape = model
            .outlet_fact(x)
            .ok()
            .zip(model.outlet_fact(node.id.into()).ok())
            .is_some_and(|(a, b)| a.shape == b.shape);
        if x != x2
            || !f32_like_x(x)
            || !same_shape
            || ![prod, clamp, first, add]
                .into_iter()
                .all(|o| only_reader(model, o))
        {
            continue;
        }
        let (lo, hi) = if min_first {
            (outer_v, inner_v)
        } else {
            (inner_v, outer_v)
        };
        return Some((
            x,
            HardSwish {
                a,
                b,
                lo,
                hi,
                min_first,
            },
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::binary::TypedBinOp;
    use tract_core::ops::change_axes::wire_with_rank_broadcast;
    use tract_core::ops::math::{add, max, min, mul};

    /// The five nodes of an export's hard-swish (`mul`, `add`, `max`, `min`, `mul`), as tract's
    /// declutter leaves them, on a `shape` input.
    fn model(shape: &[usize], min_first: bool) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact(shape)).unwrap();
        let k = |m: &mut TypedModel, name: &str, v: f32| m.add_const(name, tensor0(v)).unwrap();
        let (a, b, lo, hi) = (
            k(&mut m, "a", 1.0 / 6.0),
            k(&mut m, "b", 3.0),
            k(&mut m, "lo", 0.0),
            k(&mut m, "hi", 6.0),
        );
        let prod = wire_with_rank_broadcast("mul", &mut m, mul(), &[x, a]).unwrap()[0];
        let s = wire_with_rank_broadcast("add", &mut m, add(), &[x, b]).unwrap()[0];
        let c = if min_first {
            let t = wire_with_rank_broadcast("min", &mut m, min(), &[s, hi]).unwrap()[0];
            wire_with_rank_broadcast("max", &mut m, max(), &[t, lo]).unwrap()[0]
        } else {
            let t = wire_with_rank_broadcast("max", &mut m, max(), &[s, lo]).unwrap()[0];
            wire_with_rank_broadcast("min", &mut m, min(), &[t, hi]).unwrap()[0]
        };
        let y = wire_with_rank_broadcast("mul_1", &mut m, mul(), &[prod, c]).unwrap()[0];
        m.select_output_outlets(&[y]).unwrap();
        m
    }

    /// Swapped in for the five nodes, and bit-identical to tract's plan: values on both sides of
    /// the clamp, at 1 and 3 threads, sizes below and above a task's chunk.
    #[test]
    fn bit_identical_to_tracts_plan() {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        for (shape, min_first) in [(&[3, 7, 5][..], false), (&[1, 16, 64, 80], true)] {
            let m = model(shape, min_first);
            let n: usize = shape.iter().product();
            let x: Vec<f32> = (0..n).map(|i| (i % 977) as f32 / 61.0 - 8.0).collect();
            let x = Tensor::from_shape(shape, &x).unwrap();
            let want = m
                .clone()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap()
                .run(tvec!(x.clone().into()))
                .unwrap();
            let mut ours = m.into_decluttered().unwrap();
            assert_eq!(HardSwishPass.run(&mut ours).unwrap(), 1);
            assert_eq!(
                ours.nodes()
                    .iter()
                    .filter(|n| n.op_is::<TypedBinOp>())
                    .count(),
                0
            );
            let plan = ours.into_optimized().unwrap().into_runnable().unwrap();
            for threads in [1, 3] {
                let got = multithread_tract_scope(Executor::multithread(threads), || {
                    plan.run(tvec!(x.clone().into())).unwrap()
                });
                let (a, b) = (
                    want[0].to_plain_array_view::<f32>().unwrap(),
                    got[0].to_plain_array_view::<f32>().unwrap(),
                );
                assert_eq!(a.shape(), b.shape());
                for (p, q) in a.iter().zip(b.iter()) {
                    assert_eq!(p.to_bits(), q.to_bits(), "{shape:?} {threads} threads");
                }
            }
        }
    }
}

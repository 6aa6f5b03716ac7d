//! `Gelu`: the tanh approximation of GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, which
//! exports write as nine element-wise nodes, as one vectorised pass over its input.
//!
//! Why: tract runs the nine nodes (`Square`, four `Mul`, two `Add`, `Tanh`, fused two by two into
//! `OptBinChain`s at codegen) as five or six passes over the tensor, each on one thread. SigLIP's
//! MLP applies it to `[1024, 3072]` f32 (12.6 MB) in each of SmolVLM's 12 vision layers: 96 ms of
//! its int8 vision encoder at 1 thread and still 76 ms at 2 (AMD EPYC Zen 5 VM, 2026-12-07,
//! `qmatmul_profile`), more than the encoder's attention products and packing at 2 threads.
//!
//! Here `0.5·(1 + tanh u) = 1 / (1 + e^(−2u))`, so the op computes `x / (1 + e^(−2u))` with
//! `u = x·(√(2/π) + √(2/π)·0.044715·x²)`, in place, one read and one write of each value, split over
//! tract's thread pool; the exponential is `vmath.rs`'s. Only where the CPU has AVX-512F;
//! elsewhere tract's nodes stay. Skipped under `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_GELU=1`.
//!
//! Which nodes: a region of element-wise f32 nodes (`Square`, `Tanh`, and `Add`, `Sub`, `Mul`,
//! `Div` whose other operand is the region's, its input or a one-value constant) with one input,
//! one `Tanh`, and no reader outside but of its last node. The region is taken when evaluating its
//! nodes in f64 on sample inputs gives the formula's values: exporters order the products and place
//! the constants as they like, and this check does not care how.
//!
//! Not bit-identical: tract's `tanh` is a rational approximation, this is another; the unit tests
//! hold the op to the formula in f64 and to tract's nodes, and the VLM tests hold the encoders'
//! features to transformers'.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::math::{Add, Div, Mul, Square, Sub, Tanh};

use super::pass::{env_off, fuse_regions, scalar_f32, GraphPass, Stage};

/// Set to `1` to leave GELU's nodes to tract.
pub const NO_GELU_ENV: &str = "LOOKOUT_NO_GELU";

/// √(2/π) and the cube's coefficient of the tanh approximation.
const K: f64 = 0.797_884_560_802_865_4;
const C: f64 = 0.044_715;

/// The formula in f64.
fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (K * (x + C * x * x * x)).tanh())
}

/// The fused op (see the module doc): one f32 input, the same shape out.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Gelu;

impl Op for Gelu {
    fn name(&self) -> StaticName {
        "Gelu".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Gelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        ensure!(
            x.datum_type() == f32::datum_type(),
            "Gelu: input of type {:?}, planned for f32",
            x.datum_type()
        );
        // In place: the input's only reader was the first of the nodes this op replaced.
        let mut y = x.into_tensor();
        {
            let mut plain = y.try_as_plain_ram_mut()?;
            let ys = plain.as_slice_mut::<f32>()?;
            super::par::for_each_chunk(ys, 1 << 14, || (), |_, chunk, _| kernel(chunk));
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Gelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Whether this machine runs the kernel.
fn available() -> bool {
    super::vmath::avx512f()
}

/// GELU of every value of `xs`, in place.
fn kernel(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the op is only planned where AVX-512F exists (`available`).
    unsafe {
        avx512(xs)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = xs;
        unreachable!("Gelu is only planned where AVX-512F exists");
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512(xs: &mut [f32]) {
    use std::arch::x86_64::*;
    let (a, b) = (
        _mm512_set1_ps((-2.0 * K) as f32),
        _mm512_set1_ps((-2.0 * K * C) as f32),
    );
    let one = _mm512_set1_ps(1.0);
    let n = xs.len();
    let p = xs.as_mut_ptr();
    let mut i = 0;
    while i < n {
        let lanes: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            ((1u32 << (n - i)) - 1) as __mmask16
        };
        let x = _mm512_maskz_loadu_ps(lanes, p.add(i));
        // −2u = x·(−2K − 2KC·x²)
        let m2u = _mm512_mul_ps(x, _mm512_fmadd_ps(b, _mm512_mul_ps(x, x), a));
        let e = super::vmath::exp512(m2u);
        let y = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_mask_storeu_ps(p.add(i), lanes, y);
        i += 16;
    }
}

/// Swaps every GELU region (see the module doc) for one [`Gelu`] node.
pub struct GeluPass;

impl GraphPass for GeluPass {
    fn name(&self) -> &'static str {
        "Gelu"
    }
    fn replaces(&self) -> &'static str {
        "tanh GELU (9 element-wise nodes)"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_GELU_ENV) || !available() {
            return Ok(0);
        }
        fuse_gelu(model)
    }
}

/// Replaces every GELU region with [`Gelu`], whatever the CPU (the tests' entry; the pass checks
/// for AVX-512F first). Returns how many.
pub fn fuse_gelu(model: &mut TypedModel) -> TractResult<usize> {
    let found: Vec<(usize, TVec<OutletId>, Gelu)> = model
        .nodes()
        .iter()
        .filter(|n| is_ew::<Tanh>(n))
        .filter_map(|t| region_around(model, t.id))
        .map(|(x, last)| (last, tvec![x], Gelu))
        .collect();
    fuse_regions(model, &found)
}

/// Whether `node` is the element-wise op `E` on f32.
fn is_ew<E: tract_core::ops::element_wise::ElementWiseMiniOp>(node: &TypedNode) -> bool {
    node.op_as::<ElementWiseOp>()
        .is_some_and(|op| op.0.downcast_ref::<E>().is_some())
}

/// The binary op of `node` when it is one a region may hold.
fn region_bin(node: &TypedNode) -> Option<fn(f64, f64) -> f64> {
    let op = node.op_as::<TypedBinOp>()?;
    let m = &op.0;
    if m.downcast_ref::<Add>().is_some() {
        Some(|a, b| a + b)
    } else if m.downcast_ref::<Sub>().is_some() {
        Some(|a, b| a - b)
    } else if m.downcast_ref::<Mul>().is_some() {
        Some(|a, b| a * b)
    } else if m.downcast_ref::<Div>().is_some() {
        Some(|a, b| a / b)
    } else {
        None
    }
}

/// Whether a region may hold `node`: one of its ops, on f32.
fn region_op(model: &TypedModel, node: &TypedNode) -> bool {
    let f32_out = model
        .outlet_fact(node.id.into())
        .is_ok_and(|f| f.datum_type == f32::datum_type() && f.konst.is_none());
    f32_out && (is_ew::<Square>(node) || is_ew::<Tanh>(node) || region_bin(node).is_some())
}

/// The one value of a one-value f32 constant, in f64.
fn scalar(model: &TypedModel, o: OutletId) -> Option<f64> {
    scalar_f32(model, o).map(f64::from)
}

/// The GELU region whose `Tanh` is `tanh`: its input and its last node, when there is one (see
/// the module doc).
fn region_around(model: &TypedModel, tanh: usize) -> Option<(OutletId, usize)> {
    // Candidates for the last node: the chain of single readers after the tanh, longest first.
    let mut chain = vec![tanh];
    loop {
        let last = OutletId::new(*chain.last()?, 0);
        let next = model.outlet_successors(last);
        if next.len() != 1 || model.outputs.contains(&last) || chain.len() > 8 {
            break;
        }
        let node = model.node(next[0].node);
        if !region_op(model, node) {
            break;
        }
        chain.push(node.id);
    }
    // The input: where the walk up from the last node stops (a node no region holds), or, when
    // the node before the GELU is a region op itself (a scalar bias), one of the outlets inside
    // read more than once, as GELU reads its input.
    chain.iter().rev().find_map(|&last| {
        let stops = reachable(model, last)
            .into_iter()
            .map(|n| OutletId::new(n, 0))
            .filter(|&o| model.outlet_successors(o).len() > 1);
        std::iter::once(None)
            .chain(stops.map(Some))
            .find_map(|stop| check_region(model, last, tanh, stop))
            .map(|x| (x, last))
    })
}

/// Every region op above `last` through region ops (itself included, at most 32).
fn reachable(model: &TypedModel, last: usize) -> Vec<usize> {
    let mut nodes = vec![];
    let mut todo = vec![last];
    while let Some(id) = todo.pop() {
        if nodes.contains(&id) || nodes.len() >= 32 {
            continue;
        }
        nodes.push(id);
        for i in &model.node(id).inputs {
            if region_op(model, model.node(i.node)) {
                todo.push(i.node);
            }
        }
    }
    nodes
}

/// The region ops above `last` (itself included) down to the first outlet that is not one, or
/// `stop`: the nodes and that one input, `None` when there are several.
fn closure(
    model: &TypedModel,
    last: usize,
    stop: Option<OutletId>,
) -> Option<(Vec<usize>, OutletId)> {
    let mut nodes: Vec<usize> = vec![];
    let mut input: Option<OutletId> = stop;
    let mut todo = vec![last];
    while let Some(id) = todo.pop() {
        if nodes.contains(&id) {
            continue;
        }
        nodes.push(id);
        if nodes.len() > 16 {
            return None;
        }
        for &i in &model.node(id).inputs {
            if scalar(model, i).is_some() {
                continue;
            }
            let producer = model.node(i.node);
            if region_op(model, producer) && Some(i) != input {
                todo.push(i.node);
            } else if input.is_none_or(|x| x == i) {
                input = Some(i);
            } else {
                return None;
            }
        }
    }
    Some((nodes, input?))
}

/// The region ending at `last` (every region op above it, down to one outside input or `stop`):
/// its input when it holds `tanh` alone as its tanh, has no reader outside but of `last`, and
/// computes GELU.
fn check_region(
    model: &TypedModel,
    last: usize,
    tanh: usize,
    stop: Option<OutletId>,
) -> Option<OutletId> {
    let (nodes, x) = closure(model, last, stop)?;
    // The region's input must not be one of its nodes, nor reached through them.
    if nodes.contains(&x.node) {
        return None;
    }
    let tanhs = nodes
        .iter()
        .filter(|&&n| is_ew::<Tanh>(model.node(n)))
        .count();
    if !nodes.contains(&tanh) || tanhs != 1 {
        return None;
    }
    for &n in nodes.iter().filter(|&&n| n != last) {
        let out = OutletId::new(n, 0);
        if model.outputs.contains(&out)
            || model
                .outlet_successors(out)
                .iter()
                .any(|s| !nodes.contains(&s.node))
        {
            return None;
        }
    }
    let samples = [-8.0, -3.1, -1.5, -0.7, -0.1, 0.0, 0.05, 0.3, 1.0, 2.5, 6.0];
    samples
        .iter()
        .all(|&v| {
            eval(model, OutletId::new(last, 0), x, v)
                .is_some_and(|y| (y - gelu_tanh(v)).abs() <= 1e-6 * (1.0 + v.abs()))
        })
        .then_some(x)
}

/// The region's value at `o` in f64 when its input `x` is `v`.
fn eval(model: &TypedModel, o: OutletId, x: OutletId, v: f64) -> Option<f64> {
    if o == x {
        return Some(v);
    }
    if let Some(c) = scalar(model, o) {
        return Some(c);
    }
    let node = model.node(o.node);
    let arg = |i: usize| eval(model, *node.inputs.get(i)?, x, v);
    if is_ew::<Square>(node) {
        arg(0).map(|a| a * a)
    } else if is_ew::<Tanh>(node) {
        arg(0).map(f64::tanh)
    } else {
        let f = region_bin(node)?;
        Some(f(arg(0)?, arg(1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::math::{add, mul, square, tanh};

    /// GELU as SigLIP's export writes it (the nine nodes of `gelu_pytorch_tanh`), or with the
    /// half and the input multiplied first, on an `[n]` input behind an Add (so the input is a
    /// node's output).
    fn model(n: usize, half_first: bool) -> TypedModel {
        model_with(n, half_first, 0.044715)
    }

    /// [`model`] with `c` for the cube's coefficient.
    fn model_with(n: usize, half_first: bool, c: f32) -> TypedModel {
        let mut m = TypedModel::default();
        let src = m.add_source("x", f32::fact([n])).unwrap();
        let k = |m: &mut TypedModel, name: &str, v: f32| m.add_const(name, tensor1(&[v])).unwrap();
        let zero = k(&mut m, "zero", 0.25);
        let x = m.wire_node("x_add", add(), &[src, zero]).unwrap()[0];
        let s = m.wire_node("sq", square(), &[x]).unwrap()[0];
        let cube = m.wire_node("cube", mul(), &[x, s]).unwrap()[0];
        let c = k(&mut m, "c", c);
        let cc = m.wire_node("cc", mul(), &[cube, c]).unwrap()[0];
        let inner = m.wire_node("inner", add(), &[x, cc]).unwrap()[0];
        let kk = k(&mut m, "k", 0.797_884_6);
        let u = m.wire_node("u", mul(), &[kk, inner]).unwrap()[0];
        let t = m.wire_node("t", tanh(), &[u]).unwrap()[0];
        let one = k(&mut m, "one", 1.0);
        let a1 = m.wire_node("a1", add(), &[t, one]).unwrap()[0];
        let half = k(&mut m, "half", 0.5);
        let y = if half_first {
            let hx = m.wire_node("hx", mul(), &[half, x]).unwrap()[0];
            m.wire_node("y", mul(), &[hx, a1]).unwrap()[0]
        } else {
            let xa = m.wire_node("xa", mul(), &[x, a1]).unwrap()[0];
            m.wire_node("y", mul(), &[xa, half]).unwrap()[0]
        };
        m.select_output_outlets(&[y]).unwrap();
        m
    }

    fn run(mut m: TypedModel, fuse: bool, threads: usize, x: &[f32]) -> Vec<f32> {
        if fuse {
            assert_eq!(fuse_gelu(&mut m).unwrap(), 1);
            assert_eq!(m.nodes().len(), 4, "source, constant, add, Gelu");
        }
        m.optimize().unwrap();
        let plan = m
            .into_runnable_with_options(&super::super::run_options(threads))
            .unwrap();
        let y = plan.run(tvec!(tensor1(x).into_tvalue())).unwrap();
        y[0].try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    /// Both orders of the products, lengths with a partial last vector and over the threading
    /// chunk, 1 and 3 threads: the op agrees with the formula in f64 and with tract's nodes.
    #[test]
    fn equals_the_formula_and_tracts_nodes() {
        if !available() {
            eprintln!("SKIP: this CPU has no AVX-512F");
            return;
        }
        for n in [1, 15, 17, 40_000] {
            let x: Vec<f32> = crate::engine::testvals::values(n, n as u64)
                .iter()
                .map(|v| v * 9.0)
                .collect();
            for half_first in [false, true] {
                let tract = run(model(n, half_first), false, 1, &x);
                for threads in [1, 3] {
                    let got = run(model(n, half_first), true, threads, &x);
                    for (i, ((&g, &t), &v)) in got.iter().zip(&tract).zip(&x).enumerate() {
                        let want = gelu_tanh(v as f64 + 0.25);
                        let what = format!("n {n} half_first {half_first} #{i} x {v}");
                        assert!(
                            (g as f64 - want).abs() <= 3e-7 * (1.0 + want.abs()),
                            "{what}: {g} vs f64 {want}"
                        );
                        // tract's tanh is off by up to ~3e-7 near ±1: scaled by x/2 there.
                        assert!(
                            (g - t).abs() <= 5e-7 * (1.0 + v.abs()),
                            "{what}: {g} vs tract {t}"
                        );
                    }
                }
            }
        }
    }

    /// A region that is not GELU (another coefficient), and one whose inner value is read
    /// outside: both left to tract.
    #[test]
    fn leaves_what_is_not_gelu() {
        assert_eq!(fuse_gelu(&mut model_with(8, false, 0.05)).unwrap(), 0);
        let mut m2 = model(8, false);
        let inner = m2.node_by_name("inner").unwrap().id;
        let mut outs = m2.output_outlets().unwrap().to_vec();
        outs.push(OutletId::new(inner, 0));
        m2.select_output_outlets(&outs).unwrap();
        assert_eq!(fuse_gelu(&mut m2).unwrap(), 0);
    }
}

//! `RowMatMul`: a decoder's attention products — one query row against a key or value tensor that
//! arrives at run time (`q · Kᵀ`, `p · V`) — computed straight from the tensors, without packing.
//!
//! Why: tract plans a product of two run-time f32 tensors as a matrix product whose operands are
//! both packed on every call. With one query row the product is a matrix-vector one, and packing
//! the key or value tensor costs as much as the product: a second pass over it. Florence-2's
//! decoder reads its cross-attention keys and values (12 heads × 577 encoder tokens × 64, 1.8 MB
//! each, six layers) every token; in tract's plan those products and their packing were 13 of the
//! 22 ms of a decode step (benches/VLM_FLORENCE2.md). Here each output is one pass: a dot product
//! over the contiguous head dimension (`q · Kᵀ`), or a sum of scaled value rows (`p · V`).
//!
//! Which products: an f32 einsum of two run-time inputs that is a batched matrix product (axes in
//! both inputs and the output, one summed axis, row axes from the first input only and one column
//! axis from the second only) with one row axis whose length is a symbol of its own, different
//! from the summed and column lengths: a decoder's query length against its past or the encoder's
//! length. Other row axes have known lengths (grouped-query attention's query heads per key head).
//! A product whose rows are known at load to be at most [`MAX_ROWS`] (a decoder loaded for one
//! token per step, as lookout's Florence-2 loader fixes it) is taken too. An encoder's
//! self-attention (query and key lengths the same symbol) and products known to have more rows
//! stay tract's, whose plan fuses the mask and scale behind. When the rows turn out to be more than
//! [`MAX_ROWS`] at run time (a prompt's prefill) the op runs tract's own plan of the same einsum,
//! built at load.
//!
//! Not bit-identical to tract: its kernels and these loops add the k products in different orders
//! (f32 rounding). tests/engine_rowmatmul.rs holds the outputs to tract's plan and onnxruntime
//! within 1e-5 of the largest output, and the VLM tests hold the generated tokens to onnxruntime's. Skipped
//! under `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_ROWMATMUL=1` (the A/B of this pass alone).

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

use super::pass::{env_off, GraphPass, Stage};
use super::qmatmul::fresh_symbols;

/// Set to `1` to leave every run-time × run-time product to tract.
pub const NO_ROWMATMUL_ENV: &str = "LOOKOUT_NO_ROWMATMUL";

/// Where each axis of the product comes from: for every output axis its position in the first
/// input (`a`) and in the second (`b`); and the summed axis's position in each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Axes {
    pub(super) out: TVec<(Option<usize>, Option<usize>)>,
    pub(super) k: (usize, usize),
    /// The output axes of `a`'s rows (in `a` only): a decoder's query tokens, and under grouped-
    /// query attention the query heads that share one key head.
    pub(super) m: TVec<usize>,
    /// The output axis of `b`'s columns (in `b` only).
    pub(super) n: usize,
}

impl Axes {
    /// The roles of `op`'s axes, when it is a batched matrix product of two inputs of `shapes`.
    /// An axis of length 1 wherever it appears (a batch of one that tract's decluttering has
    /// turned into a summed or one-sided axis) has no role: its only index is 0.
    pub(super) fn of(op: &EinSum, shapes: [&[TDim]; 2]) -> TractResult<Axes> {
        let map = &op.axes;
        ensure!(
            map.input_count() == 2 && map.output_count() == 1,
            "not a product of two inputs"
        );
        let one = |v: &[usize]| -> TractResult<Option<usize>> {
            ensure!(v.len() <= 1, "an axis repeated in one tensor");
            Ok(v.first().copied())
        };
        let mut out: TVec<(Option<usize>, Option<usize>)> =
            tvec![(None, None); map.rank(InOut::Out(0))];
        let (mut k, mut m, mut n) = (None, tvec![], None);
        for axis in map.iter_all_axes() {
            let (a, b, o) = (
                one(&axis.inputs[0])?,
                one(&axis.inputs[1])?,
                one(&axis.outputs[0])?,
            );
            let unit =
                a.is_none_or(|p| shapes[0][p].is_one()) && b.is_none_or(|p| shapes[1][p].is_one());
            match (a, b, o) {
                _ if unit => {}
                (Some(_), Some(_), Some(o)) => out[o] = (a, b),
                (Some(pa), Some(pb), None) => {
                    ensure!(k.is_none(), "more than one summed axis");
                    k = Some((pa, pb));
                }
                (Some(_), None, Some(o)) => {
                    m.push(o);
                    out[o] = (a, None);
                }
                (None, Some(_), Some(o)) => {
                    ensure!(n.is_none(), "more than one column axis");
                    n = Some(o);
                    out[o] = (None, b);
                }
                _ => bail!("an axis summed in one input, or only in the output"),
            }
        }
        Ok(Axes {
            out,
            k: k.context("no summed axis")?,
            m,
            n: n.context("no column axis")?,
        })
    }
}

/// Drop-in replacement for an f32 einsum of two run-time inputs (see the module doc). Inputs and
/// output are the einsum's.
#[derive(Clone)]
pub struct RowMatMul {
    einsum: EinSum,
    axes: Axes,
    /// tract's plan of the same einsum, for more than [`MAX_ROWS`] rows (`None` where the rows are
    /// known at load to be fewer).
    many_rows: Option<Arc<TypedRunnableModel>>,
}

impl std::fmt::Debug for RowMatMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowMatMul({})", self.einsum.axes)
    }
}

impl PartialEq for RowMatMul {
    fn eq(&self, other: &Self) -> bool {
        self.axes == other.axes
            && match (&self.many_rows, &other.many_rows) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none() && self.einsum == other.einsum,
            }
    }
}
impl Eq for RowMatMul {}

impl Op for RowMatMul {
    fn name(&self) -> StaticName {
        "RowMatMul".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{}", self.einsum.axes)])
    }

    op_as_typed_op!();
}

/// Row-major strides of `shape`, 0 on an axis of length 1 (so one index serves a broadcast).
pub(super) fn strides(shape: &[usize]) -> TVec<usize> {
    let mut s: TVec<usize> = tvec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = if shape[i] == 1 { 0 } else { acc };
        acc *= shape[i];
    }
    s
}

impl EvalOp for RowMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        ensure!(
            a.datum_type() == f32::datum_type() && b.datum_type() == f32::datum_type(),
            "RowMatMul: inputs of {:?} and {:?}, expected f32",
            a.datum_type(),
            b.datum_type()
        );
        let (sa, sb) = (a.shape(), b.shape());
        let ax = &self.axes;
        let map = &self.einsum.axes;
        ensure!(
            sa.len() == map.rank(InOut::In(0)) && sb.len() == map.rank(InOut::In(1)),
            "RowMatMul: inputs of shapes {sa:?} and {sb:?} for {map}"
        );
        let mut dims: TVec<usize> = tvec![];
        for (i, &(pa, pb)) in ax.out.iter().enumerate() {
            dims.push(match (pa.map(|p| sa[p]), pb.map(|p| sb[p])) {
                (Some(x), Some(y)) if x == y || y == 1 => x,
                (Some(1), Some(y)) => y,
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => 1,
                (x, y) => bail!("RowMatMul: output axis {i} from lengths {x:?} and {y:?}"),
            });
        }
        let kd = sa[ax.k.0];
        ensure!(
            sb[ax.k.1] == kd,
            "RowMatMul: summed axis of {kd} and {}",
            sb[ax.k.1]
        );
        let rows = ax.m.iter().map(|&m| dims[m]).product::<usize>();
        if rows > MAX_ROWS {
            let plan = self
                .many_rows
                .as_ref()
                .with_context(|| format!("RowMatMul: {rows} rows, planned for {MAX_ROWS}"))?;
            return plan.run(inputs);
        }
        let (ast, bst) = (strides(sa), strides(sb));
        let nd = dims[ax.n];
        let (ak, bk) = (ast[ax.k.0], bst[ax.k.1]);
        let bn = bst[ax.out[ax.n].1.expect("the column axis is b's")];
        // Every output axis but the columns, with each input's stride along it.
        let outer: TVec<(usize, usize, usize)> = ax
            .out
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != ax.n)
            .map(|(i, &(pa, pb))| (dims[i], pa.map_or(0, |p| ast[p]), pb.map_or(0, |p| bst[p])))
            .collect();
        let blocks: usize = outer.iter().map(|o| o.0).product();
        let a = a.try_as_plain_ram()?;
        let a = a.as_slice::<f32>()?;
        let b = b.try_as_plain_ram()?;
        let b = b.as_slice::<f32>()?;
        let mut y = unsafe { Tensor::uninitialized::<f32>(&dims)? };
        {
            let mut plain = y.try_as_plain_ram_mut()?;
            let ys = plain.as_slice_mut::<f32>()?;
            // The columns are the output's last axis, or one block's columns are strided: the
            // output, row-major, is `blocks` runs of `nd` values in `outer`'s order, or not.
            let n_last = ax.n == dims.len() - 1;
            let kernel = Kernel::detect();
            let geometry = |ostride| Block {
                ak,
                bk,
                bn,
                kd,
                nd,
                ostride,
            };
            let block = |blk: usize, out: &mut [f32], ostride: usize| {
                let (mut ao, mut bo, mut rest) = (0, 0, blk);
                for &(d, sa, sb) in outer.iter().rev() {
                    let i = rest % d;
                    rest /= d;
                    ao += i * sa;
                    bo += i * sb;
                }
                kernel.block(&geometry(ostride), &a[ao..], &b[bo..], out);
            };
            if n_last {
                let per = blocks_per_chunk(blocks, nd * kd);
                super::par::for_each_chunk(
                    ys,
                    per * nd,
                    || (),
                    |c, chunk, _| {
                        for (i, out) in chunk.chunks_mut(nd).enumerate() {
                            block(c * per + i, out, 1);
                        }
                    },
                );
            } else {
                // Columns strided in the output: write each block through its offsets.
                let ost = strides(&dims);
                let mut tmp = vec![0f32; nd];
                for blk in 0..blocks {
                    block(blk, &mut tmp, 1);
                    let (mut oo, mut rest) = (0, blk);
                    for (i, _) in ax.out.iter().enumerate().rev().filter(|(i, _)| *i != ax.n) {
                        oo += (rest % dims[i]) * ost[i];
                        rest /= dims[i];
                    }
                    let on = ost[ax.n].max(1);
                    for (j, v) in tmp.iter().enumerate() {
                        ys[oo + j * on] = *v;
                    }
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

/// The most rows (query tokens × query heads per key head) run by these loops, which read the key
/// or value tensor once per row; more go to tract's plan, which packs it once. Chosen to cover
/// grouped-query attention's groups (3 query heads per key head in SmolVLM) with one token; not
/// tuned.
const MAX_ROWS: usize = 8;

/// Blocks per task: everything on this thread below about a million products (the hand-off
/// costs more, as for `QMatMul`), else a few tasks per thread.
fn blocks_per_chunk(blocks: usize, macs_per_block: usize) -> usize {
    const MIN_MACS: usize = 1 << 20;
    let threads = super::par::threads();
    if threads == 1 || blocks * macs_per_block < MIN_MACS {
        blocks.max(1)
    } else {
        blocks.div_ceil(threads * 4).max(1)
    }
}

impl TypedOp for RowMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.einsum.output_facts(inputs)
    }

    as_op!();
}

/// The loops, compiled once plainly and once for AVX2 + FMA where the CPU has them.
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }

    fn block(self, g: &Block, a: &[f32], b: &[f32], out: &mut [f32]) {
        match self {
            Kernel::Portable => block(g, a, b, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and FMA (checked in `detect`).
            Kernel::Avx2Fma => unsafe { block_avx2(g, a, b, out) },
        }
    }
}

/// One block's `nd` outputs, `out[j · ostride] = Σ_k a[k · ak] · b[k · bk + j · bn]` for k below
/// `kd`: the strides of a row of `a`, of the `b` it meets, and of the output.
#[derive(Clone, Copy)]
struct Block {
    ak: usize,
    bk: usize,
    bn: usize,
    kd: usize,
    nd: usize,
    ostride: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(g: &Block, a: &[f32], b: &[f32], out: &mut [f32]) {
    block(g, a, b, out)
}

/// Lanes of partial sums in a dot product: two 256-bit registers' worth, so the loop vectorises.
const LANES: usize = 16;

#[inline(always)]
fn block(g: &Block, a: &[f32], b: &[f32], out: &mut [f32]) {
    let Block {
        ak,
        bk,
        bn,
        kd,
        nd,
        ostride,
    } = *g;
    if ak == 1 && bk == 1 {
        // q · Kᵀ: each output a dot product of two contiguous rows.
        let x = &a[..kd];
        for j in 0..nd {
            out[j * ostride] = dot(x, &b[j * bn..j * bn + kd]);
        }
    } else if bn == 1 && ostride == 1 {
        // p · V: the output row is a sum of scaled contiguous rows of b.
        let row = &mut out[..nd];
        row.fill(0.0);
        for kk in 0..kd {
            let s = a[kk * ak];
            for (o, &v) in row.iter_mut().zip(&b[kk * bk..kk * bk + nd]) {
                *o += s * v;
            }
        }
    } else {
        for j in 0..nd {
            let mut s = 0f32;
            for kk in 0..kd {
                s += a[kk * ak] * b[kk * bk + j * bn];
            }
            out[j * ostride] = s;
        }
    }
}

#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (p, q) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += p[l] * q[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (p, q) in xr.iter().zip(yr) {
        s += p * q;
    }
    s
}

/// Swaps every decoder-attention product (see the module doc) for [`RowMatMul`]. Runs on the
/// decluttered model, where transposes of the key have been folded into the einsum's axes.
pub struct RowMatMulPass;

impl GraphPass for RowMatMulPass {
    fn name(&self) -> &'static str {
        "RowMatMul"
    }
    fn replaces(&self) -> &'static str {
        "one-row attention product"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_ROWMATMUL_ENV) {
            return Ok(0);
        }
        replace_row_matmul(model)
    }
}

/// Replaces every einsum [`RowMatMul`] takes; returns how many.
pub fn replace_row_matmul(model: &mut TypedModel) -> TractResult<usize> {
    let mut swaps = vec![];
    for node in model.nodes() {
        let Some(op) = node.op_as::<EinSum>() else {
            continue;
        };
        match plan(model, node, op) {
            Ok(Some(op)) => swaps.push((node.id, op)),
            Ok(None) => {}
            Err(why) => log::debug!("{} ({}): left to tract: {why:#}", node.name, op.axes),
        }
    }
    let n = swaps.len();
    for (id, op) in swaps {
        model.node_mut(id).op = Box::new(op);
    }
    Ok(n)
}

/// The replacement for one einsum, `None` when it is not a product of two run-time f32 inputs.
fn plan(model: &TypedModel, node: &TypedNode, op: &EinSum) -> TractResult<Option<RowMatMul>> {
    if node.inputs.len() != 2 || op.q_params.is_some() || op.operating_dt != f32::datum_type() {
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
    let axes = Axes::of(op, [&facts[0].shape, &facts[1].shape])?;
    let out = model.outlet_fact(node.id.into())?;
    let nd = &out.shape[axes.n];
    let kd = &facts[0].shape[axes.k.0];
    let rows: TDim = axes.m.iter().map(|&m| out.shape[m].clone()).product();
    let many_rows = if let Ok(rows) = rows.to_i64() {
        // A decoder loaded for one token at a time.
        ensure!(
            rows as usize <= MAX_ROWS,
            "{rows} rows, known at load: tract's kernels"
        );
        None
    } else {
        // The query length: the one row axis whose length is a symbol.
        let md: TVec<&TDim> = axes
            .m
            .iter()
            .map(|&m| &out.shape[m])
            .filter(|d| d.to_i64().is_err())
            .collect();
        ensure!(md.len() == 1, "row lengths {md:?}: not one query length");
        ensure!(
            md[0] != nd && md[0] != kd,
            "rows {} against columns {nd} and sum {kd}: not a query against a past",
            md[0]
        );
        Some(many_rows_plan(model, node, op)?)
    };
    Ok(Some(RowMatMul {
        einsum: op.clone(),
        axes,
        many_rows,
    }))
}

/// tract's own plan of the einsum at `node` alone, with the inputs' symbolic lengths as fresh
/// symbols of its own (bound by each run's inputs).
fn many_rows_plan(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut sub = TypedModel::default();
    let mut wires = tvec![];
    for (slot, &input) in node.inputs.iter().enumerate() {
        let fact = model.outlet_fact(input)?;
        let shape = fresh_symbols(&sub, &fact.shape, &format!("rmm_{slot}"))?;
        wires.push(sub.add_source(format!("in{slot}"), f32::fact(shape))?);
    }
    let y = sub.wire_node("einsum", op.clone(), &wires)?;
    sub.select_output_outlets(&y)?;
    sub.into_optimized()?.into_runnable()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], kd: usize, nd: usize) -> Vec<f64> {
        (0..nd)
            .map(|j| (0..kd).map(|k| a[k] as f64 * b[k * nd + j] as f64).sum())
            .collect()
    }

    #[test]
    fn the_three_loops_agree_with_f64() {
        let kd = 70;
        let nd = 37;
        let a: Vec<f32> = (0..kd).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
        // b as [k][n]; bt as [n][k].
        let b: Vec<f32> = (0..kd * nd)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 3.0)
            .collect();
        let mut bt = vec![0f32; kd * nd];
        for k in 0..kd {
            for j in 0..nd {
                bt[j * kd + k] = b[k * nd + j];
            }
        }
        let want = naive(&a, &b, kd, nd);
        for kernel in [Kernel::Portable, Kernel::detect()] {
            let mut dot_out = vec![0f32; nd];
            let g = |ak, bk, bn, ostride| Block {
                ak,
                bk,
                bn,
                kd,
                nd,
                ostride,
            };
            kernel.block(&g(1, 1, kd, 1), &a, &bt, &mut dot_out);
            let mut axpy_out = vec![0f32; nd];
            kernel.block(&g(1, nd, 1, 1), &a, &b, &mut axpy_out);
            // a strided along k: every other value of a doubled-up copy.
            let a2: Vec<f32> = a.iter().flat_map(|&v| [v, f32::NAN]).collect();
            let mut strided = vec![0f32; 2 * nd];
            kernel.block(&g(2, 1, kd, 2), &a2, &bt, &mut strided);
            for j in 0..nd {
                for (got, what) in [
                    (dot_out[j], "dot"),
                    (axpy_out[j], "axpy"),
                    (strided[2 * j], "strided"),
                ] {
                    assert!(
                        (got as f64 - want[j]).abs() <= 1e-4 * (1.0 + want[j].abs()),
                        "{what} column {j}: {got} vs {}",
                        want[j]
                    );
                }
            }
        }
    }

    /// `q · Kᵀ` over 8 heads and 2 100 keys of 64: over the threading threshold, so the heads are
    /// split over tract's pool at 2 and 3 threads. Each block is computed alone, so every thread
    /// count gives the same bits; and they agree with tract's plan to float rounding.
    #[test]
    fn threads_split_the_heads_and_change_no_bit() {
        let (heads, past, d) = (8, 2100, 64);
        let build = |pass: bool, threads: usize| -> Arc<TypedRunnableModel> {
            let mut model = TypedModel::default();
            let (m, n) = (model.symbols.sym("m"), model.symbols.sym("past"));
            let q = model
                .add_source(
                    "q",
                    f32::fact(tvec!(TDim::from(1), heads.into(), m.into(), d.into())),
                )
                .unwrap();
            let k = model
                .add_source(
                    "k",
                    f32::fact(tvec!(TDim::from(1), heads.into(), n.into(), d.into())),
                )
                .unwrap();
            let op = EinSum::new("bhmk,bhnk->bhmn".parse().unwrap(), f32::datum_type());
            let y = model.wire_node("q_kt", op, &[q, k]).unwrap();
            model.select_output_outlets(&y).unwrap();
            if pass {
                assert_eq!(replace_row_matmul(&mut model).unwrap(), 1);
            }
            model.optimize().unwrap();
            model
                .into_runnable_with_options(&super::super::run_options(threads))
                .unwrap()
        };
        let val = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 2654435761 + seed) % 1000) as f32 - 500.0) / 250.0)
                .collect()
        };
        let q = Tensor::from_shape(&[1, heads, 1, d], &val(heads * d, 1)).unwrap();
        let k = Tensor::from_shape(&[1, heads, past, d], &val(heads * past * d, 2)).unwrap();
        let run = |plan: Arc<TypedRunnableModel>| -> Vec<f32> {
            let out = plan.run(tvec!(q.clone().into(), k.clone().into())).unwrap();
            out[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        let tract = run(build(false, 1));
        let one = run(build(true, 1));
        assert_eq!(one.len(), heads * past);
        for threads in [2, 3] {
            let many = run(build(true, threads));
            assert!(
                one.iter()
                    .zip(&many)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads"
            );
        }
        for (i, (a, b)) in one.iter().zip(&tract).enumerate() {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "#{i}: {a} vs {b}");
        }
    }

    #[test]
    fn strides_skip_broadcast_axes() {
        assert_eq!(strides(&[1, 12, 1, 64]).as_slice(), &[0, 64, 0, 1]);
        assert_eq!(strides(&[2, 3, 4]).as_slice(), &[12, 4, 1]);
    }
}

//! `FusedAttention`: an encoder's self-attention, `softmax(scale · Q·Kᵀ + mask) · V`, as one op that
//! never writes the score matrix out.
//!
//! Why: tract runs the chain as five ops over a `[heads, queries, keys]` score tensor. For SmolVLM's
//! vision encoder (12 heads, 1024 patches of 64) that tensor is 50 MB per layer: the `Q·Kᵀ`
//! product writes it, the mask's add, the softmax and the packing of `P · V`'s left operand each
//! read and write it again, and `P · V` reads it once more. Per layer, 1 thread (AMD EPYC Zen 5
//! VM, AVX-512, 2026-12-07, `qmatmul_profile` on the int8 encoder): `Q·Kᵀ` 30.1 ms, its packing
//! 0.8, the add 3.6, the softmax 3.9, `P · V`'s packing 11.4 and product 9.3 — 59 ms, of which
//! the multiply-adds (2 × 0.8 G) need about 17 at the speed tract's kernel reaches on `P · V`.
//! onnxruntime ran the same products in 8.8 + 7.8 ms.
//!
//! Here each head's keys are transposed once into a `[d, keys]` panel, then every block of six
//! query rows makes its six score rows in a small buffer that stays in the first-level cache:
//! scaled products against the panel, the mask added, the softmax's exponentials (unnormalised),
//! then the six rows of `P · V` summed straight from the value rows and divided by each row's
//! sum at the store. Nothing is packed but the key panel; the scores never leave the cache.
//!
//! Which chains: on the decluttered graph, an f32 einsum of two run-time tensors (`Q·Kᵀ`: rows
//! from the first input, columns from the second, one summed axis, the output's last two axes
//! rows then keys), then optionally a multiplication by a constant scalar and an addition of an
//! f32 tensor of the scores' rank (the mask, broadcast over any axis), then a softmax over the
//! last axis, then an einsum with the values (`P · V`, summed over the keys); each link read by
//! the next alone. The head dimension must be the innermost axis of `Q`, `K`, `V` and the output
//! (as reshaped projections give it). Only where the CPU has AVX-512F (the kernels,
//! `attention/avx512.rs`); elsewhere tract's plan stays. Skipped under `LOOKOUT_PLAIN_TRACT=1` or
//! `LOOKOUT_NO_ATTENTION=1` (the A/B of this pass alone). It runs before `RowMatMul` and
//! `StoreOrder`, which take what it leaves.
//!
//! Not bit-identical to tract: the products add in another order, and the exponential is this
//! file's polynomial, not tract's. The unit tests hold the kernels to f64 arithmetic;
//! tests/engine_encoder_ops.rs holds the tiny VLM encoders to tract's plan, and the VLM tests
//! hold generated tokens to onnxruntime's.

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{Add, Mul};
use tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::par::{self, SharedOut};
use super::pass::{bin_with_const, env_off, fuse_regions, only_reader, GraphPass, Stage};
use super::rowmatmul::{strides, Axes};

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Set to `1` to leave every attention chain to tract.
pub const NO_ATTENTION_ENV: &str = "LOOKOUT_NO_ATTENTION";

/// Query rows per block: six rows of scores (24 KiB for 1024 keys) stay in the first-level cache,
/// and six rows × four vectors of accumulators fill 24 of AVX-512's 32 registers.
const ROWS: usize = 6;

/// Where one batch axis of the scores (a head, an image) sits in each tensor: `None` where the
/// tensor does not have it (or it has length 1 everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BatchAxis {
    q: Option<usize>,
    k: Option<usize>,
    v: Option<usize>,
    out: Option<usize>,
}

/// The axes of the chain's four tensors (the mask's are the scores', by rank).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Roles {
    /// The scores' axes before the last two, in order.
    batch: TVec<BatchAxis>,
    /// `Q`'s query axis; its head dimension is its last axis.
    q_rows: usize,
    /// `K`'s key axis; its head dimension is its last axis.
    k_rows: usize,
    /// `V`'s key axis; its head dimension is its last axis.
    v_rows: usize,
    /// The output's query axis; its head dimension is its last axis.
    out_rows: usize,
}

/// The fused chain (see the module doc). Inputs: `Q`, `K`, `V`, then the mask when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FusedAttention {
    /// The two products as the graph had them, for the output's shape.
    qk: EinSum,
    pv: EinSum,
    /// The scalar the scores are multiplied by, as bits (1.0 where the graph has no multiplication).
    scale: u32,
    roles: Roles,
    masked: bool,
}

impl Op for FusedAttention {
    fn name(&self) -> StaticName {
        "FusedAttention".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} then {}, scale {}, {}",
            self.qk.axes,
            self.pv.axes,
            f32::from_bits(self.scale),
            if self.masked { "masked" } else { "no mask" }
        )])
    }

    op_as_typed_op!();
}

impl TypedOp for FusedAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let scores = self.qk.output_facts(&[inputs[0], inputs[1]])?;
        self.pv.output_facts(&[&scores[0], inputs[2]])
    }

    as_op!();
}

/// One head of one image: where its rows start in each tensor and how far apart they are. Row
/// `i` of `Q` is `q[q + i·q_row ..][..d]`, and so on; the mask's keys are `mask_key` apart (0 when
/// one value serves a row).
#[derive(Debug, Clone, Copy)]
struct Slice {
    q: usize,
    k: usize,
    v: usize,
    out: usize,
    mask: usize,
}

/// The sizes and strides every slice shares.
#[derive(Debug, Clone, Copy)]
// Read by the x86 kernels alone.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Geometry {
    keys: usize,
    /// The head dimension of `Q` and `K` (summed), and of `V` and the output.
    d: usize,
    dv: usize,
    q_row: usize,
    k_row: usize,
    v_row: usize,
    out_row: usize,
    mask_row: usize,
    mask_key: usize,
    scale: f32,
}

impl Geometry {
    /// The key panel's row length: the keys rounded up to whole vectors.
    fn keys_padded(&self) -> usize {
        self.keys.div_ceil(16) * 16
    }
}

/// What one worker keeps between the items it runs: the key panel of the slice it last packed.
struct Scratch {
    panel: Vec<f32>,
    packed: Option<usize>,
    scores: Vec<f32>,
}

impl EvalOp for FusedAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 3 + self.masked as usize,
            "FusedAttention: {} inputs",
            inputs.len()
        );
        for (i, t) in inputs.iter().enumerate() {
            ensure!(
                t.datum_type() == f32::datum_type(),
                "FusedAttention: input {i} is {:?}, expected f32",
                t.datum_type()
            );
        }
        let r = &self.roles;
        let (sq, sk, sv) = (inputs[0].shape(), inputs[1].shape(), inputs[2].shape());
        let (d, dv) = (sq[sq.len() - 1], sv[sv.len() - 1]);
        let (queries, keys) = (sq[r.q_rows], sk[r.k_rows]);
        ensure!(
            sk[sk.len() - 1] == d && sv[r.v_rows] == keys,
            "FusedAttention: Q {sq:?}, K {sk:?}, V {sv:?} do not fit"
        );
        // Each batch axis's length, from whichever tensor has it longer than 1.
        let lens: TVec<usize> = r
            .batch
            .iter()
            .map(|b| {
                let of = |t: &[usize], p: Option<usize>| p.map_or(1, |p| t[p]);
                let l = of(sq, b.q).max(of(sk, b.k)).max(of(sv, b.v));
                for (t, p) in [(sq, b.q), (sk, b.k), (sv, b.v)] {
                    ensure!(
                        [1, l].contains(&of(t, p)),
                        "FusedAttention: batch lengths of Q {sq:?}, K {sk:?}, V {sv:?} differ"
                    );
                }
                Ok(l)
            })
            .collect::<TractResult<_>>()?;
        let rank_out = self.pv.axes.rank(InOut::Out(0));
        let mut dims: TVec<usize> = tvec![1; rank_out];
        dims[r.out_rows] = queries;
        dims[rank_out - 1] = dv;
        for (b, &l) in r.batch.iter().zip(&lens) {
            if let Some(o) = b.out {
                dims[o] = l;
            } else {
                ensure!(
                    l == 1,
                    "FusedAttention: a batch axis of {l} not in the output"
                );
            }
        }
        let (tq, tk, tv, to) = (strides(sq), strides(sk), strides(sv), strides(&dims));
        // The mask, broadcast to the scores' shape `lens ++ [queries, keys]`.
        let (tm, mask_row, mask_key) = if self.masked {
            let sm = inputs[3].shape();
            let rank = r.batch.len() + 2;
            let want: TVec<usize> = lens.iter().copied().chain([queries, keys]).collect();
            ensure!(
                sm.len() == rank && sm.iter().zip(&want).all(|(&m, &w)| m == 1 || m == w),
                "FusedAttention: mask {sm:?} for scores {want:?}"
            );
            let tm = strides(sm);
            let (row, key) = (tm[rank - 2], tm[rank - 1]);
            (tm, row, key)
        } else {
            (tvec![], 0, 0)
        };
        let g = Geometry {
            keys,
            d,
            dv,
            q_row: tq[r.q_rows],
            k_row: tk[r.k_rows],
            v_row: tv[r.v_rows],
            out_row: to[r.out_rows],
            mask_row,
            mask_key,
            scale: f32::from_bits(self.scale),
        };
        let slices: usize = lens.iter().product();
        let slice = |mut i: usize| {
            let mut s = Slice {
                q: 0,
                k: 0,
                v: 0,
                out: 0,
                mask: 0,
            };
            for (a, (b, &l)) in r.batch.iter().zip(&lens).enumerate().rev() {
                let j = i % l;
                i /= l;
                s.q += b.q.map_or(0, |p| j * tq[p]);
                s.k += b.k.map_or(0, |p| j * tk[p]);
                s.v += b.v.map_or(0, |p| j * tv[p]);
                s.out += b.out.map_or(0, |p| j * to[p]);
                s.mask += tm.get(a).map_or(0, |t| j * t);
            }
            s
        };
        let mut y = unsafe { Tensor::uninitialized::<f32>(&dims)? };
        if y.len() == 0 {
            return Ok(tvec!(y.into_tvalue()));
        }
        let q = inputs[0].try_as_plain_ram()?;
        let k = inputs[1].try_as_plain_ram()?;
        let v = inputs[2].try_as_plain_ram()?;
        let m = inputs.get(3).map(|m| m.try_as_plain_ram()).transpose()?;
        let (q, k, v) = (
            q.as_slice::<f32>()?,
            k.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
        );
        let mask = m.as_ref().map(|m| m.as_slice::<f32>()).transpose()?;
        {
            let mut plain = y.try_as_plain_ram_mut()?;
            let out = SharedOut::new(plain.as_slice_mut::<f32>()?);
            // Work items: a slice's query blocks in a few runs each, so that one head also fills
            // the pool's threads; each run re-packs its slice's keys only when its slice changes.
            let blocks = queries.div_ceil(ROWS);
            let runs = (par::threads() * 4).div_ceil(slices).clamp(1, blocks);
            let per_run = blocks.div_ceil(runs);
            par::for_each_range(
                slices * runs,
                || Scratch {
                    panel: vec![],
                    packed: None,
                    scores: vec![],
                },
                |items, scratch| {
                    for item in items {
                        let (si, run) = (item / runs, item % runs);
                        let first = run * per_run * ROWS;
                        let last = ((run + 1) * per_run * ROWS).min(queries);
                        if first < last {
                            let s = slice(si);
                            if scratch.packed != Some(si) {
                                kernels::pack_keys(&g, &k[s.k..], &mut scratch.panel);
                                scratch.packed = Some(si);
                            }
                            // SAFETY: this item writes rows first..last of slice si alone.
                            unsafe {
                                kernels::rows(
                                    &g,
                                    first..last,
                                    (&q[s.q..], &v[s.v..], mask.map(|m| &m[s.mask..])),
                                    &scratch.panel,
                                    &mut scratch.scores,
                                    out.at(s.out),
                                )
                            };
                        }
                    }
                },
            );
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

/// Whether this machine runs the fused kernels.
pub(super) fn available() -> bool {
    super::vmath::avx512f()
}

/// The kernels behind a safe front: only built where [`available`] can be true.
mod kernels {
    use super::Geometry;

    /// `K`'s rows from `k` as the `[d, keys]` panel the score kernel reads, keys padded with zeros
    /// to whole vectors.
    pub(super) fn pack_keys(g: &Geometry, k: &[f32], panel: &mut Vec<f32>) {
        let kp = g.keys_padded();
        panel.clear();
        panel.resize(g.d * kp, 0.0);
        for j in 0..g.keys {
            let row = &k[j * g.k_row..][..g.d];
            for (dd, &x) in row.iter().enumerate() {
                panel[dd * kp + j] = x;
            }
        }
    }

    /// Output rows `rows` of one slice (see [`super::avx512::rows`]).
    ///
    /// # Safety
    /// The CPU has AVX-512F ([`super::available`]); `out` is the slice's first output value in a
    /// buffer that holds every row of `rows` at `g.out_row` apart, which no one else writes now.
    pub(super) unsafe fn rows(
        g: &Geometry,
        rows: std::ops::Range<usize>,
        inputs: (&[f32], &[f32], Option<&[f32]>),
        panel: &[f32],
        scores: &mut Vec<f32>,
        out: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        super::avx512::rows(g, rows, inputs, panel, scores, out);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (g, rows, inputs, panel, scores, out);
            unreachable!("FusedAttention is only planned where AVX-512F exists");
        }
    }
}

/// Swaps every attention chain (see the module doc) for one [`FusedAttention`] node.
pub struct FusedAttentionPass;

impl GraphPass for FusedAttentionPass {
    fn name(&self) -> &'static str {
        "FusedAttention"
    }
    fn replaces(&self) -> &'static str {
        "self-attention (Q·Kᵀ, scale, mask, softmax, ·V)"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_ATTENTION_ENV) || !available() {
            return Ok(0);
        }
        fuse_attention(model)
    }
}

/// Replaces every attention chain with [`FusedAttention`], whatever the CPU (the tests' entry;
/// the pass checks for AVX-512F first). Returns how many.
pub fn fuse_attention(model: &mut TypedModel) -> TractResult<usize> {
    let mut found = vec![];
    for node in model.nodes() {
        match matched(model, node) {
            Ok(Some(m)) => found.push(m),
            Ok(None) => {}
            Err(why) => log::debug!("{}: attention left to tract: {why:#}", node.name),
        }
    }
    fuse_regions(model, &found)
}

/// When `node` is a chain's `P · V` einsum: its id, the fused op's inputs and the op. `Ok(None)`
/// when it is not the end of a softmax chain at all, an error saying why when it is one this op
/// does not take.
type Found = (usize, TVec<OutletId>, FusedAttention);

fn matched(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Found>> {
    let Some(pv) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if node.inputs.len() != 2 {
        return Ok(None);
    }
    let sm_node = model.node(node.inputs[0].node);
    let Some(sm) = sm_node.op_as::<Softmax>() else {
        return Ok(None);
    };
    let f32_ = f32::datum_type();
    let facts = |n: &TypedNode| -> TractResult<TVec<TypedFact>> {
        n.inputs
            .iter()
            .map(|&i| model.outlet_fact(i).cloned())
            .collect()
    };
    let rank = model.outlet_fact(node.inputs[0])?.rank();
    ensure!(
        sm.axes.as_slice() == [rank - 1] && sm.kind == SoftmaxKind::Softmax,
        "softmax over {:?}, not the last axis alone",
        sm.axes
    );
    ensure!(sm.quant_output_dt.is_none(), "a quantised softmax");
    ensure!(
        pv.q_params.is_none() && pv.operating_dt == f32_,
        "P·V is not an f32 product"
    );
    ensure!(
        only_reader(model, node.inputs[0]),
        "the softmax has other readers"
    );
    // Walk back from the softmax: an optional mask addition, an optional scalar multiplication,
    // then the score product.
    let mut wire = sm_node.inputs[0];
    let mut mask = None;
    let mut scale = 1f32;
    loop {
        ensure!(
            only_reader(model, wire),
            "{} has other readers",
            model.node(wire.node).name
        );
        let n = model.node(wire.node);
        if n.op_as::<EinSum>().is_some() {
            break;
        }
        let bin = n
            .op_as::<TypedBinOp>()
            .context("not a product before the softmax")?;
        // In graph order the scale comes first, then the mask: `scale · s + mask`.
        if bin.0.is::<Mul>() && scale == 1.0 {
            let (x, Some(c), _) = bin_with_const::<Mul>(model, n).context("no Mul")? else {
                bail!("a multiplication by a tensor");
            };
            ensure!(c != 1.0, "a multiplication by 1");
            scale = c;
            wire = x;
        } else if bin.0.is::<Add>() && mask.is_none() && scale == 1.0 {
            let (a, b) = (n.inputs[0], n.inputs[1]);
            // The scores are the operand that leads back to the product (through the scale),
            // whichever side of the addition it is on.
            let (x, m) = if leads_to_product(model, a) {
                (a, b)
            } else {
                (b, a)
            };
            let mf = model.outlet_fact(m)?;
            ensure!(
                mf.datum_type == f32_ && mf.rank() == rank,
                "a mask of {mf:?}"
            );
            mask = Some(m);
            wire = x;
        } else {
            bail!("{} between the product and the softmax", n.op.name());
        }
    }
    let qk_node = model.node(wire.node);
    let qk = qk_node.op_as::<EinSum>().context("no score product")?;
    ensure!(
        qk.q_params.is_none() && qk.operating_dt == f32_ && qk_node.inputs.len() == 2,
        "Q·Kᵀ is not an f32 product of two tensors"
    );
    let (qk_in, pv_in) = (facts(qk_node)?, facts(node)?);
    for f in qk_in.iter().chain(&pv_in) {
        ensure!(
            f.datum_type == f32_ && f.konst.is_none(),
            "an operand that is a constant or not f32"
        );
    }
    let roles = roles(
        qk,
        pv,
        [&*qk_in[0].shape, &*qk_in[1].shape, &*pv_in[1].shape],
        rank,
    )?;
    let mut inputs: TVec<OutletId> = tvec![qk_node.inputs[0], qk_node.inputs[1], node.inputs[1]];
    inputs.extend(mask);
    Ok(Some((
        node.id,
        inputs,
        FusedAttention {
            qk: qk.clone(),
            pv: pv.clone(),
            scale: scale.to_bits(),
            roles,
            masked: mask.is_some(),
        },
    )))
}

/// Whether `o` is an einsum's output, or a multiplication of one by a constant scalar.
fn leads_to_product(model: &TypedModel, o: OutletId) -> bool {
    let n = model.node(o.node);
    n.op_is::<EinSum>()
        || matches!(bin_with_const::<Mul>(model, n), Some((x, Some(_), _))
            if model.node(x.node).op_is::<EinSum>())
}

/// The axes of `Q`, `K`, `V` and the output, when the two products are an attention's (see the
/// module doc): scores of `rank` axes, queries then keys last.
fn roles(qk: &EinSum, pv: &EinSum, shapes: [&[TDim]; 3], rank: usize) -> TractResult<Roles> {
    let s = Axes::of(qk, [shapes[0], shapes[1]])?;
    ensure!(
        s.m.as_slice() == [rank - 2] && s.n == rank - 1,
        "scores are not [.., queries, keys]"
    );
    let (q_rows, k_rows) = (
        s.out[rank - 2].0.context("no query axis")?,
        s.out[rank - 1].1.context("no key axis")?,
    );
    let last = |sh: &[TDim]| sh.len() - 1;
    ensure!(
        s.k == (last(shapes[0]), last(shapes[1])),
        "the head dimension is not Q's and K's last axis"
    );
    let scores = qk.output_facts(&[&f32::fact(shapes[0]), &f32::fact(shapes[1])])?;
    let p = Axes::of(pv, [&scores[0].shape, shapes[2]])?;
    ensure!(p.k.0 == rank - 1, "P·V does not sum over the keys");
    ensure!(p.m.len() == 1, "P·V has not one query axis");
    let out_rows = p.m[0];
    ensure!(
        p.out[out_rows].0 == Some(rank - 2),
        "P·V's rows are not the queries"
    );
    let rank_out = pv.axes.rank(InOut::Out(0));
    ensure!(
        p.n == rank_out - 1 && p.out[p.n].1 == Some(last(shapes[2])),
        "the head dimension is not V's and the output's last axis"
    );
    let mut batch: TVec<BatchAxis> = (0..rank - 2)
        .map(|a| BatchAxis {
            q: s.out[a].0,
            k: s.out[a].1,
            v: None,
            out: None,
        })
        .collect();
    for (o, &(pa, vb)) in p.out.iter().enumerate() {
        if o == out_rows || o == p.n {
            continue;
        }
        match pa {
            Some(a) if a < rank - 2 => {
                batch[a].v = vb;
                batch[a].out = Some(o);
            }
            None if vb.is_none() => {}
            _ => bail!("P·V's output axis {o} is not a batch axis of the scores"),
        }
    }
    ensure!(
        batch
            .iter()
            .all(|b| (b.q.is_none() && b.k.is_none()) || b.out.is_some()),
        "a batch axis of the scores is summed by P·V"
    );
    Ok(Roles {
        batch,
        q_rows,
        k_rows,
        v_rows: p.k.1,
        out_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_core::ops::math::{add, mul};

    /// A chain as a reshaped projection gives it: `Q [1, nq, h, d]`, `K [1, nk, h, d]`,
    /// `V [1, nk, h, dv]`, scores `[1, h, nq, nk]`, output `[1, nq, h, dv]`; the mask's shape
    /// (of rank 4) or none, the scale or none.
    struct Case {
        nq: usize,
        nk: usize,
        h: usize,
        d: usize,
        dv: usize,
        mask: Option<[usize; 4]>,
        scale: Option<f32>,
        /// The mask as a node's output, the source times this (1: the source itself).
        mask_times: f32,
    }

    impl Case {
        fn shapes(&self) -> [Vec<usize>; 4] {
            [
                vec![1, self.nq, self.h, self.d],
                vec![1, self.nk, self.h, self.d],
                vec![1, self.nk, self.h, self.dv],
                self.mask.map_or(vec![], |m| m.to_vec()),
            ]
        }

        fn model(&self) -> TypedModel {
            let mut model = TypedModel::default();
            let shapes = self.shapes();
            let mut src =
                |name: &str, shape: &[usize]| model.add_source(name, f32::fact(shape)).unwrap();
            let (q, k, v) = (
                src("q", &shapes[0]),
                src("k", &shapes[1]),
                src("v", &shapes[2]),
            );
            let m = self.mask.map(|_| src("mask", &shapes[3]));
            let qk = EinSum::new("ambk,anbk->abmn".parse().unwrap(), f32::datum_type());
            let mut s = model.wire_node("qk", qk, &[q, k]).unwrap()[0];
            if let Some(c) = self.scale {
                let c = model.add_const("scale", tensor4(&[[[[c]]]])).unwrap();
                s = model.wire_node("scale_mul", mul(), &[s, c]).unwrap()[0];
            }
            if let Some(mut m) = m {
                if self.mask_times != 1.0 {
                    let c = model
                        .add_const("mask_times", tensor4(&[[[[self.mask_times]]]]))
                        .unwrap();
                    m = model.wire_node("mask_mul", mul(), &[m, c]).unwrap()[0];
                }
                s = model.wire_node("mask_add", add(), &[m, s]).unwrap()[0];
            }
            let sm = Softmax::new(tvec![3], None, SoftmaxKind::Softmax);
            let p = model.wire_node("softmax", sm, &[s]).unwrap();
            let pv = EinSum::new("abmk,akbn->ambn".parse().unwrap(), f32::datum_type());
            let y = model.wire_node("pv", pv, &[p[0], v]).unwrap();
            model.select_output_outlets(&y).unwrap();
            model
        }

        fn inputs(&self) -> TVec<TValue> {
            let shapes = self.shapes();
            let n = if self.mask.is_some() { 4 } else { 3 };
            (0..n)
                .map(|i| {
                    let len: usize = shapes[i].iter().product();
                    let vals: Vec<f32> = crate::engine::testvals::values(len, i as u64 + 7)
                        .into_iter()
                        .map(|x| if i == 3 { x * 4.0 } else { x })
                        .collect();
                    Tensor::from_shape(&shapes[i], &vals).unwrap().into_tvalue()
                })
                .collect()
        }

        /// The chain in f64, straight from its definition.
        fn naive(&self, inputs: &[TValue]) -> Vec<f64> {
            let get = |i: usize| floats(&inputs[i]);
            let (q, k, v) = (get(0), get(1), get(2));
            let (nq, nk, h, d, dv) = (self.nq, self.nk, self.h, self.d, self.dv);
            let mut out = vec![0f64; nq * h * dv];
            for hh in 0..h {
                for i in 0..nq {
                    let mut s: Vec<f64> = (0..nk)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|t| {
                                    q[(i * h + hh) * d + t] as f64 * k[(j * h + hh) * d + t] as f64
                                })
                                .sum();
                            let mut x = dot * self.scale.unwrap_or(1.0) as f64;
                            if let Some(ms) = self.mask {
                                let st = strides(&ms);
                                x += get(3)[hh * st[1] + i * st[2] + j * st[3]] as f64
                                    * self.mask_times as f64;
                            }
                            x
                        })
                        .collect();
                    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    s.iter_mut().for_each(|x| *x = (*x - mx).exp());
                    let sum: f64 = s.iter().sum();
                    for c in 0..dv {
                        out[(i * h + hh) * dv + c] = (0..nk)
                            .map(|j| s[j] / sum * v[(j * h + hh) * dv + c] as f64)
                            .sum();
                    }
                }
            }
            out
        }
    }

    fn floats(t: &TValue) -> Vec<f32> {
        t.try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    fn run(mut model: TypedModel, fuse: bool, threads: usize, inputs: TVec<TValue>) -> Vec<f32> {
        if fuse {
            assert_eq!(fuse_attention(&mut model).unwrap(), 1);
        }
        model.optimize().unwrap();
        let plan = model
            .into_runnable_with_options(&super::super::run_options(threads))
            .unwrap();
        let y = plan.run(inputs).unwrap();
        floats(&y[0])
    }

    /// Row blocks of six and fewer, key counts around whole vectors, head widths that leave a
    /// partial vector, a value width over one tile, masks per key, per head and per row, with and
    /// without a scale, 1 and 3 threads: the fused op agrees with f64 arithmetic, and with
    /// tract's plan of the same chain, to float rounding.
    #[test]
    fn equals_the_chain_in_f64_and_tracts_plan() {
        if !available() {
            eprintln!("SKIP: this CPU has no AVX-512F");
            return;
        }
        let mut checked = 0;
        for (nq, nk, h, d, dv) in [
            (2, 3, 1, 8, 8),
            (5, 15, 2, 33, 17),
            (7, 16, 3, 64, 64),
            (13, 17, 2, 16, 80),
            (6, 70, 1, 64, 48),
            (20, 130, 3, 40, 32),
        ] {
            for mask in [
                None,
                Some([1, 1, nq, nk]),
                Some([1, h, 1, nk]),
                Some([1, 1, nq, 1]),
            ] {
                for scale in [None, Some(0.125)] {
                    let case = Case {
                        nq,
                        nk,
                        h,
                        d,
                        dv,
                        mask,
                        scale,
                        mask_times: 1.0,
                    };
                    let inputs = case.inputs();
                    let want = case.naive(&inputs);
                    let tract = run(case.model(), false, 1, inputs.clone());
                    for threads in [1, 3] {
                        let got = run(case.model(), true, threads, inputs.clone());
                        assert_eq!(got.len(), want.len());
                        for (i, ((&g, &w), &t)) in got.iter().zip(&want).zip(&tract).enumerate() {
                            let what = format!(
                                "nq {nq} nk {nk} h {h} d {d} dv {dv} mask {mask:?} scale {scale:?} #{i}"
                            );
                            assert!(
                                (g as f64 - w).abs() <= 2e-6 * (1.0 + w.abs()),
                                "{what}: {g} vs f64 {w}"
                            );
                            assert!(
                                (g - t).abs() <= 4e-6 * (1.0 + t.abs()),
                                "{what}: {g} vs tract {t}"
                            );
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 4 * 2 * 2);
    }

    /// A mask that is itself a multiplication's output, the addition's first operand: the scores
    /// are still found on the side that leads back to the product.
    #[test]
    fn finds_the_scores_beside_a_computed_mask() {
        if !available() {
            eprintln!("SKIP: this CPU has no AVX-512F");
            return;
        }
        let case = Case {
            nq: 7,
            nk: 19,
            h: 2,
            d: 16,
            dv: 16,
            mask: Some([1, 1, 7, 19]),
            scale: Some(0.125),
            mask_times: 2.0,
        };
        let inputs = case.inputs();
        let want = case.naive(&inputs);
        let got = run(case.model(), true, 1, inputs);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 2e-6 * (1.0 + w.abs()),
                "#{i}: {g} vs f64 {w}"
            );
        }
    }

    /// Chains the op must leave to tract: a softmax over another axis, and scores read elsewhere
    /// too (a model output).
    #[test]
    fn leaves_other_chains() {
        let case = Case {
            nq: 4,
            nk: 5,
            h: 2,
            d: 8,
            dv: 8,
            mask: None,
            scale: Some(0.5),
            mask_times: 1.0,
        };
        let mut model = case.model();
        let sm = model.node_by_name("softmax").unwrap().id;
        model.node_mut(sm).op = Box::new(Softmax::new(tvec![2], None, SoftmaxKind::Softmax));
        assert_eq!(fuse_attention(&mut model).unwrap(), 0);
        let mut model = case.model();
        let scores = model.node_by_name("scale_mul").unwrap().id;
        let mut outputs = model.output_outlets().unwrap().to_vec();
        outputs.push(OutletId::new(scores, 0));
        model.select_output_outlets(&outputs).unwrap();
        assert_eq!(fuse_attention(&mut model).unwrap(), 0);
    }
}

//! A quantized concatenation (`DequantizeLinear [→ element-wise ops] → Concat → QuantizeLinear`,
//! how both int8 formats spell a concat of tensors with different scales) as one byte-table pass.
//!
//! tract 0.23.9 runs it in f32: each input dequantised into a new f32 tensor, the element-wise ops
//! (nanodet's LeakyRelu), the concatenation copying the f32s, then the quantization. tract folds
//! such chains into a 256-entry lookup table when they are element-wise from end to end, but a
//! `Concat` in the middle stops it. On nanodet-g-int8(-qdq) these concats' quantizations alone
//! were about a quarter of inference.
//!
//! [`QConcat`] maps every input byte through its own table and writes the concatenation in bytes.
//! Each table is computed by tract itself at load time, running the input's `DequantizeLinear`, its
//! element-wise ops and the `QuantizeLinear` on all 256 byte values (as tract's own
//! `DequantizeLinearF32::declutter` builds its tables); every element goes through the same f32
//! operations as in tract's plan, so outputs are bit-identical (`tests/engine_qdq.rs`).

use tract_core::internal::*;
use tract_core::ops::array::TypedConcat;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};

use super::par::{for_each_chunk, threads};
use super::pass::{GraphPass, Stage};
use super::quantize::quantize;

/// How one input's elements become output bytes.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    /// A u8/i8 input, each byte through this table.
    Table(Box<[u8; 256]>),
    /// An f32 input (not dequantised: a float conv's output), quantized as the `QuantizeLinear`
    /// does ([`super::quantize::quantize`], identical to tract's).
    Quantize {
        scale: f32,
        zero_point: i32,
        signed: bool,
    },
}

/// Concatenation along `axis` of byte inputs mapped through tables and f32 inputs quantized.
#[derive(Debug, Clone, PartialEq)]
pub struct QConcat {
    axis: usize,
    tables: Vec<Input>,
    out_fact: TypedFact,
}

impl Eq for QConcat {}

impl Op for QConcat {
    fn name(&self) -> StaticName {
        "QConcat".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axis {}, {} inputs through byte tables",
            self.axis,
            self.tables.len()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for QConcat {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == self.tables.len(),
            "QConcat: {} inputs, {} tables",
            inputs.len(),
            self.tables.len()
        );
        let shape = self
            .out_fact
            .shape
            .as_concrete()
            .context("QConcat: symbolic output shape")?
            .to_vec();
        let outer: usize = shape[..self.axis].iter().product();
        // Per input, the bytes it contributes to each outer slice.
        let blocks: Vec<usize> = inputs
            .iter()
            .map(|x| x.shape()[self.axis..].iter().product())
            .collect();
        let slice: usize = blocks.iter().sum();
        ensure!(
            outer * slice == shape.iter().product::<usize>(),
            "QConcat: inputs {:?} do not make {shape:?}",
            inputs
                .iter()
                .map(|x| x.shape().to_vec())
                .collect::<Vec<_>>()
        );
        let bytes: Vec<&[u8]> = inputs.iter().map(|x| x.as_bytes()).collect();
        let plain = inputs
            .iter()
            .map(|x| x.try_as_plain_ram())
            .collect::<TractResult<Vec<_>>>()?;
        let floats: Vec<Option<&[f32]>> = plain.iter().map(|x| x.as_slice::<f32>().ok()).collect();
        for (b, t) in self.tables.iter().enumerate() {
            ensure!(
                matches!(t, Input::Table(_)) || floats[b].is_some(),
                "QConcat: input {b} is {:?}, expected f32",
                inputs[b].datum_type()
            );
        }
        let mut out = unsafe { Tensor::uninitialized_dt(self.out_fact.datum_type, &shape)? };
        // Output parts of equal size, each filled from whatever inputs it overlaps.
        let total = outer * slice;
        let part = total.div_ceil(4 * threads()).max(1 << 15);
        for_each_chunk(
            out.as_bytes_mut(),
            part,
            || (),
            |i, dst, _| {
                let start = i * part;
                let end = start + dst.len();
                // Walk the (outer slice, input) blocks that meet [start, end).
                let mut pos = start - start % slice.max(1);
                let mut o = pos / slice.max(1);
                while pos < end && o < outer {
                    for (b, (block, table)) in blocks.iter().zip(&self.tables).enumerate() {
                        let (lo, hi) = (pos.max(start), (pos + block).min(end));
                        if lo < hi {
                            let at = o * block + (lo - pos);
                            let dst = &mut dst[lo - start..hi - start];
                            match table {
                                Input::Table(table) => {
                                    lookup(table, &bytes[b][at..][..hi - lo], dst);
                                }
                                Input::Quantize {
                                    scale,
                                    zero_point,
                                    signed,
                                } => {
                                    // Checked f32 at planning; eval checks it again below.
                                    if let Some(xs) = floats[b] {
                                        quantize(
                                            &xs[at..][..hi - lo],
                                            *scale,
                                            *zero_point,
                                            *signed,
                                            dst,
                                        );
                                    }
                                }
                            }
                        }
                        pos += block;
                    }
                    o += 1;
                }
            },
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for QConcat {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.out_fact.clone()))
    }

    as_op!();
}

/// Swaps `DequantizeLinear [→ element-wise] → Concat → QuantizeLinear` for [`QConcat`]. Runs
/// before decluttering, on the ops as translated.
pub struct QConcatPass;

impl GraphPass for QConcatPass {
    fn name(&self) -> &'static str {
        "QConcat"
    }
    fn replaces(&self) -> &'static str {
        "quantized Concat"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeOptimise
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        let candidates: Vec<usize> = model
            .nodes()
            .iter()
            .filter(|n| n.op_is::<TypedConcat>())
            .map(|n| n.id)
            .collect();
        let mut replaced = 0;
        for id in candidates {
            let node = model.node(id);
            match plan(model, node) {
                Ok((op, sources, q)) => {
                    let mut patch = TypedModelPatch::new(format!("QConcat {}", node.name));
                    let taps = sources
                        .iter()
                        .map(|s| patch.tap_model(model, *s))
                        .collect::<TractResult<TVec<_>>>()?;
                    let y = patch.wire_node(format!("{}.qconcat", node.name), op, &taps)?[0];
                    patch.shunt_outside(model, q.into(), y)?;
                    patch.apply(model)?;
                    replaced += 1;
                }
                Err(why) => log::debug!("{}: left to tract's f32 concat: {why}", node.name),
            }
        }
        Ok(replaced)
    }
}

/// The op, the byte inputs it reads and the `QuantizeLinear` whose output it replaces; or why not.
fn plan(model: &TypedModel, node: &TypedNode) -> Result<(QConcat, Vec<OutletId>, usize), String> {
    let axis = node.op_as::<TypedConcat>().ok_or("not a concat")?.axis;
    let q = model
        .single_succ(node.id)
        .map_err(|e| e.to_string())?
        .ok_or("output has no single consumer")?;
    let q_params = |n: &TypedNode| {
        let ew = n.op_as::<ElementWiseOp>()?;
        if let Some(op) = ew.0.downcast_ref::<QuantizeLinearU8>() {
            Some((op.scale, op.zero_point as i32, false))
        } else {
            let op = ew.0.downcast_ref::<QuantizeLinearI8>()?;
            Some((op.scale, op.zero_point as i32, true))
        }
    };
    let is_q = |n: &TypedNode| q_params(n).is_some();
    let (scale, zero_point, signed) =
        q_params(q).ok_or_else(|| format!("consumer is {}, not a QuantizeLinear", q.op.name()))?;
    let out_fact = q.outputs[0].fact.clone();
    if out_fact.shape.as_concrete().is_none() {
        return Err("symbolic output shape".into());
    }
    let mut sources = vec![];
    let mut tables = vec![];
    for input in &node.inputs {
        // Back through element-wise f32 ops to a DequantizeLinear of bytes.
        let mut chain: Vec<&TypedNode> = vec![];
        let mut cur = model.node(input.node);
        while cur.op_is::<ElementWiseOp>() && !is_q(cur) && cur.inputs.len() == 1 {
            chain.push(cur);
            cur = model.node(cur.inputs[0].node);
        }
        if !cur.op_is::<DequantizeLinearF32>() {
            // Not dequantised bytes: quantize the f32 input itself, as the QuantizeLinear would.
            let dt = model
                .outlet_fact(*input)
                .map_err(|e| e.to_string())?
                .datum_type;
            if dt != f32::datum_type() {
                return Err(format!("input of type {dt:?}"));
            }
            tables.push(Input::Quantize {
                scale,
                zero_point,
                signed,
            });
            sources.push(*input);
            continue;
        }
        let src = cur.inputs[0];
        let dt = model
            .outlet_fact(src)
            .map_err(|e| e.to_string())?
            .datum_type;
        if !matches!(dt.unquantized(), DatumType::U8 | DatumType::I8) {
            return Err(format!("DequantizeLinear of {dt:?}"));
        }
        chain.push(cur);
        chain.reverse();
        tables.push(Input::Table(Box::new(
            table(dt, &chain, q).map_err(|e| format!("{}: {e}", cur.name))?,
        )));

        sources.push(src);
    }
    if tables.iter().all(|t| matches!(t, Input::Quantize { .. })) {
        return Err("no dequantised input".into());
    }
    Ok((
        QConcat {
            axis,
            tables,
            out_fact,
        },
        sources,
        q.id,
    ))
}

/// The 256 output bytes of `chain` (a DequantizeLinear and element-wise ops) and then `q`, for
/// every input byte, computed by tract running those same ops.
fn table(dt: DatumType, chain: &[&TypedNode], q: &TypedNode) -> TractResult<[u8; 256]> {
    let mut adhoc = TypedModel::default();
    let mut wire = adhoc.add_source("bytes", dt.fact([256]))?;
    for n in chain.iter().chain(std::iter::once(&q)) {
        wire = adhoc.wire_node(&*n.name, n.op.clone(), &[wire])?[0];
    }
    adhoc.select_output_outlets(&[wire])?;
    let mut input = tensor1(&(0u8..=255).collect::<Vec<u8>>());
    unsafe { input.set_datum_type(dt) };
    let out = SimplePlan::new(adhoc)?
        .run(tvec!(input.into_tvalue()))?
        .remove(0);
    let mut t = [0u8; 256];
    t.copy_from_slice(out.as_bytes());
    Ok(t)
}

/// `dst[i] = table[src[i]]`. With AVX-512 VBMI (checked at run time) 64 bytes at a time, each a
/// two-table byte permute over the table's halves; on aarch64 four 64-entry `TBL` lookups whose
/// out-of-range lanes give 0; else one byte at a time.
fn lookup(table: &[u8; 256], src: &[u8], dst: &mut [u8]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    #[allow(unused_mut, unused_assignments)] // assigned on x86-64 (maybe) or aarch64 only
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has both features (checked just above).
        done = unsafe { lookup_vbmi(table, src, dst) };
    }
    #[cfg(target_arch = "aarch64")]
    {
        done = lookup_neon(table, src, dst);
    }
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = table[*s as usize];
    }
}

/// The whole 64-byte blocks of [`lookup`]; returns how many bytes it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512vbmi,avx512bw,avx512f")]
unsafe fn lookup_vbmi(table: &[u8; 256], src: &[u8], dst: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let t = table.as_ptr() as *const __m512i;
    let blocks = src.len().min(dst.len()) / 64;
    // The table's four 64-byte quarters; every load and store below is inside `src`/`dst`
    // (`blocks` whole blocks).
    unsafe {
        let (t0, t1, t2, t3) = (
            _mm512_loadu_si512(t),
            _mm512_loadu_si512(t.add(1)),
            _mm512_loadu_si512(t.add(2)),
            _mm512_loadu_si512(t.add(3)),
        );
        for i in 0..blocks {
            let idx = _mm512_loadu_si512(src.as_ptr().add(64 * i) as *const __m512i);
            // Bits 0..6 pick one of 128 bytes; bit 7 picks the half.
            let lo = _mm512_permutex2var_epi8(t0, idx, t1);
            let hi = _mm512_permutex2var_epi8(t2, idx, t3);
            let v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
            _mm512_storeu_si512(dst.as_mut_ptr().add(64 * i) as *mut __m512i, v);
        }
    }
    blocks * 64
}

/// The whole 16-byte blocks of [`lookup`]; returns how many bytes it wrote.
#[cfg(target_arch = "aarch64")]
fn lookup_neon(table: &[u8; 256], src: &[u8], dst: &mut [u8]) -> usize {
    use std::arch::aarch64::*;
    let blocks = src.len().min(dst.len()) / 16;
    // NEON is part of aarch64; every load and store is inside `table`, `src`, `dst`.
    unsafe {
        let q = |k: usize| vld1q_u8_x4(table.as_ptr().add(64 * k));
        let (t0, t1, t2, t3) = (q(0), q(1), q(2), q(3));
        for i in 0..blocks {
            let idx = vld1q_u8(src.as_ptr().add(16 * i));
            // TBL gives 0 for an index past its 64 bytes; the wrapped differences put each index
            // in exactly one quarter's range.
            let v = vorrq_u8(
                vorrq_u8(
                    vqtbl4q_u8(t0, idx),
                    vqtbl4q_u8(t1, vsubq_u8(idx, vdupq_n_u8(64))),
                ),
                vorrq_u8(
                    vqtbl4q_u8(t2, vsubq_u8(idx, vdupq_n_u8(128))),
                    vqtbl4q_u8(t3, vsubq_u8(idx, vdupq_n_u8(192))),
                ),
            );
            vst1q_u8(dst.as_mut_ptr().add(16 * i), v);
        }
    }
    blocks * 16
}

#[cfg(test)]
mod tests {
    /// The vector lookups equal the byte-at-a-time one for every length up to 300 (whole blocks
    /// and tails) and every byte value.
    #[test]
    fn lookup_equals_the_table() {
        let table: [u8; 256] = std::array::from_fn(|i| ((i * 167 + 13) % 256) as u8);
        let src: Vec<u8> = (0..300).map(|i| ((i * 89 + 7) % 256) as u8).collect();
        for n in 0..=src.len() {
            let mut dst = vec![0u8; n];
            super::lookup(&table, &src[..n], &mut dst);
            let want: Vec<u8> = src[..n].iter().map(|&s| table[s as usize]).collect();
            assert_eq!(dst, want, "length {n}");
        }
    }
}

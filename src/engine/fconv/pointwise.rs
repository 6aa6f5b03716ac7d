//! [`super::PanelConv`] for the 1x1 convs tract's declutter turns into matrix products: which
//! `EinSum`s are such convs, and the bias add behind them that the kernel folds in.

use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::Add;

use super::{fdirect, Act, Geometry, Kernel, PanelConv, Params};

/// The [`PanelConv`] on lookout's [`fdirect::pointwise`] for an f32 matrix product that is a 1x1
/// conv (tract's `declutter_as_einsum` turns every 1x1 stride-1 unpadded conv into one): weights
/// `[c_out, c_in]` (or transposed) times an activation `[1, c_in, h, w]` or `[c_in, h, w]` into
/// the same layout with `c_out` channels; and the node of the bias add that alone reads it, when
/// there is one (folded in). Or why not.
pub(super) fn plan_pointwise(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
    isa: fdirect::Isa,
) -> Result<(PanelConv, Option<usize>), String> {
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return Err("not a plain f32 product of two inputs".into());
    }
    let facts: Vec<&TypedFact> = node
        .inputs
        .iter()
        .map(|i| model.outlet_fact(*i))
        .collect::<TractResult<_>>()
        .map_err(|e| e.to_string())?;
    let w_slot = facts
        .iter()
        .position(|f| f.konst.is_some())
        .ok_or("no constant operand")?;
    let x_slot = 1 - w_slot;
    let (x, w) = (facts[x_slot], facts[w_slot]);
    if x.datum_type != f32::datum_type() || w.datum_type != f32::datum_type() || w.rank() != 2 {
        return Err("not f32 weights of rank 2 times an f32 input".into());
    }
    let shape = x.shape.as_concrete().ok_or("symbolic input shape")?;
    let out_shape = node.outputs[0]
        .fact
        .shape
        .as_concrete()
        .ok_or("symbolic output shape")?;
    // The mapping's axes: the summed one (input channels) in x and w, the output channels in w
    // and the output, every other one in x and the output, or of size 1 anywhere. Without the
    // axes of size 1, x must read (input channels, positions…) and the output (output channels,
    // the same positions…): then both are `[channels][n]` in memory.
    let w_shape = w.shape.as_concrete().ok_or("symbolic weight shape")?;
    let size = |a: &tract_core::axes::Axis| {
        let at = |io: &TVec<usize>, dims: &[usize]| io.first().map(|&p| dims[p]);
        at(&a.inputs[x_slot], shape)
            .or_else(|| at(&a.outputs[0], out_shape))
            .or_else(|| at(&a.inputs[w_slot], w_shape))
    };
    let (mut c_in, mut c_out, mut w_o) = (None, None, None);
    let mut x_order: Vec<(usize, char)> = vec![];
    let mut o_order: Vec<(usize, char)> = vec![];
    for axis in op.axes.iter_all_axes() {
        let (xi, wi, o) = (&axis.inputs[x_slot], &axis.inputs[w_slot], &axis.outputs[0]);
        let role = match (xi.as_slice(), wi.as_slice(), o.as_slice()) {
            ([xp], [_], []) => {
                c_in = size(axis);
                x_order.push((*xp, 'I'));
                continue;
            }
            ([], [wp], [op]) => {
                (c_out, w_o) = (size(axis), Some(*wp));
                o_order.push((*op, 'O'));
                continue;
            }
            _ if size(axis) == Some(1) => continue,
            ([xp], [], [op]) => (*xp, *op),
            _ => return Err(format!("axes {}", op.axes)),
        };
        x_order.push((role.0, axis.repr));
        o_order.push((role.1, axis.repr));
    }
    let (Some(c_in), Some(c_out), Some(w_o)) = (c_in, c_out, w_o) else {
        return Err(format!("axes {}", op.axes));
    };
    x_order.sort();
    o_order.sort();
    let x_axes: Vec<char> = x_order.iter().map(|a| a.1).collect();
    let o_axes: Vec<char> = o_order.iter().map(|a| a.1).collect();
    // Channels first in and out; or, on AVX-512, channels last out (the kernel then stores each
    // position's channels one by one).
    let first = x_axes.first() == Some(&'I') && o_axes.first() == Some(&'O');
    let channels_last = !first
        && isa == fdirect::Isa::Avx512
        && x_axes.first() == Some(&'I')
        && o_axes.last() == Some(&'O');
    let positions_match = if channels_last {
        x_axes[1..] == o_axes[..o_axes.len() - 1]
    } else {
        x_axes[1..] == o_axes[1..]
    };
    if !(first || channels_last) || !positions_match {
        return Err(format!("axes {} (not channels first)", op.axes));
    }
    let o_at = if channels_last {
        o_order[o_order.len() - 1].0
    } else {
        o_order[0].0
    };
    let n = x_order[1..]
        .iter()
        .map(|&(p, _)| shape[p])
        .product::<usize>();
    let geo = Geometry {
        c_in,
        c_out,
        in_h: 1,
        in_w: n,
        out_h: 1,
        out_w: n,
        kh: 1,
        kw: 1,
        stride: (1, 1),
        dilation: (1, 1),
        pad: (0, 0),
        batched: false,
    };
    if shape.iter().product::<usize>() != c_in * n
        || out_shape.iter().product::<usize>() != c_out * n
    {
        return Err(format!(
            "shapes {shape:?} → {out_shape:?} for {c_in}→{c_out} channels"
        ));
    }
    let kernel = w.konst.as_ref().ok_or("no constant operand")?;
    let kernel = kernel.try_as_plain_ram().map_err(|e| e.to_string())?;
    let kernel = kernel.as_slice::<f32>().map_err(|e| e.to_string())?;
    // As `[c_out][c_in]`.
    let kernel: Vec<f32> = if w_o == 0 {
        kernel.to_vec()
    } else {
        (0..c_out * c_in)
            .map(|i| kernel[(i % c_in) * c_out + i / c_in])
            .collect()
    };
    let (bias, bias_add) = match pointwise_bias(model, node, o_at, c_out) {
        Some((add, bias)) => (bias, Some(add)),
        None => (vec![0.0; c_out], None),
    };
    let op = PanelConv {
        params: Arc::new(Params {
            kernel: Kernel::Pointwise(
                fdirect::Weights::pack(&kernel, &bias, c_out, c_in, isa),
                channels_last,
            ),
            geo,
            out_shape: out_shape.into(),
            act: Act::Linear,
        }),
    };
    Ok((op, bias_add))
}

/// The node adding a per-channel constant to `node`'s output, when that add alone reads it, and
/// the constant as one value per channel: how tract's `declutter_as_einsum` wires a 1x1 conv's
/// bias (`[1, c_out, 1, 1]`).
fn pointwise_bias(
    model: &TypedModel,
    node: &TypedNode,
    c_ax: usize,
    c_out: usize,
) -> Option<(usize, Vec<f32>)> {
    let wire = OutletId::new(node.id, 0);
    let [only] = model.outlet_successors(wire) else {
        return None;
    };
    if model.outputs.contains(&wire) {
        return None;
    }
    let add = model.node(only.node);
    let bin = add.op_as::<TypedBinOp>()?;
    if !bin.0.is::<Add>() || add.inputs.len() != 2 || add.outputs[0].fact != node.outputs[0].fact {
        return None;
    }
    let other = add.inputs[1 - only.slot];
    let b = model.outlet_fact(other).ok()?.konst.clone()?;
    let b = b.cast_to::<f32>().ok()?.into_owned();
    let per_channel = b.rank() == node.outputs[0].fact.rank()
        && b.shape()
            .iter()
            .enumerate()
            .all(|(i, &d)| d == if i == c_ax { c_out } else { 1 });
    let v = b.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
    match v.len() {
        1 => Some((add.id, vec![v[0]; c_out])),
        _ if per_channel => Some((add.id, v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::super::{fdirect, swap_convs};
    use crate::engine::testvals::values;
    use tract_core::internal::*;
    use tract_core::ops::einsum::EinSum;
    use tract_core::ops::math::add;

    /// 1x1 convs as tract's declutter leaves them: matrix products whose axes dropped or added a
    /// batch axis, or read positions through a 1x1 map (squeeze-excite's global products), run on
    /// lookout's kernel within 1e-5 of tract's plan, the bias add folded in; products that write
    /// channels last are taken on AVX-512 only (its kernel stores them position by position), and
    /// products that read channels last stay with tract.
    #[test]
    fn pointwise_products_as_declutter_leaves_them() {
        let Some(&isa) = fdirect::Isa::all().last() else {
            return;
        };
        let last_out = isa == fdirect::Isa::Avx512;
        #[rustfmt::skip]
        let cases: &[(&str, &[usize], usize, bool)] = &[
            ("IHW,OI->NOHW", &[12, 9, 11], 7, true),
            ("NIHW,OI->NOHW", &[1, 40, 6, 6], 20, true),
            ("IHW,OI->O", &[33, 1, 1], 17, true),
            ("I,OI->NOHW", &[64], 6, true),
            ("NIHW,IO->NOHW", &[1, 5, 4, 9], 9, true),
            ("NIHW,OI->NHWO", &[1, 8, 5, 5], 6, last_out),
            ("NIHW,OI->NHWO", &[1, 40, 9, 7], 80, last_out),
            ("IHW,OI->HWO", &[20, 6, 11], 4, last_out),
            ("NHWI,OI->OHW", &[1, 5, 5, 8], 6, false),
        ];
        for &(expr, x_shape, c_out, taken) in cases {
            let axes: AxesMapping = expr.parse().unwrap();
            let c_in = x_shape[axes.axis('I').unwrap().inputs[0][0]];
            let w_shape = if expr.contains(",OI") {
                [c_out, c_in]
            } else {
                [c_in, c_out]
            };
            let mut m = TypedModel::default();
            let x = m.add_source("x", f32::fact(x_shape)).unwrap();
            let w = Tensor::from_shape(&w_shape, &values(c_in * c_out, 5)).unwrap();
            let w = m.add_const("w", w).unwrap();
            let einsum = EinSum {
                axes: axes.clone(),
                operating_dt: f32::datum_type(),
                q_params: None,
            };
            let y = m.wire_node("conv", einsum, &[x, w]).unwrap()[0];
            let out_rank = m.outlet_fact(y).unwrap().rank();
            let o_at = axes.axis('O').unwrap().outputs[0][0];
            let mut b_shape = vec![1; out_rank];
            b_shape[o_at] = c_out;
            let b = Tensor::from_shape(&b_shape, &values(c_out, 9)).unwrap();
            let b = m.add_const("b", b).unwrap();
            let y = m.wire_node("bias", add(), &[y, b]).unwrap()[0];
            m.select_output_outlets(&[y]).unwrap();
            let mut ours = m.clone();
            assert_eq!(
                swap_convs(&mut ours, Some(isa), true),
                usize::from(taken),
                "{expr}"
            );
            if !taken {
                continue;
            }
            let ours = ours.into_optimized().unwrap();
            assert!(
                !ours.nodes().iter().any(|n| n.op().name().contains("Add")),
                "{expr}: bias add left"
            );
            let tract = m.into_optimized().unwrap();
            let xv = Tensor::from_shape(x_shape, &values(x_shape.iter().product(), 3)).unwrap();
            let (want, got) = (run(&tract, 1, &xv), run(&ours, 3, &xv));
            assert_eq!(want[0].shape(), got[0].shape(), "{expr}");
            let a = want[0].to_plain_array_view::<f32>().unwrap();
            let b = got[0].to_plain_array_view::<f32>().unwrap();
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                    "{expr}: tract {x}, ours {y}"
                );
            }
        }
    }
}

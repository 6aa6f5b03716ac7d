//! `ChannelsFirst`: f32 convolutions that tract's decluttering made channels-last (NHWC) put back
//! channels-first (NCHW), where lookout's conv kernels take them.
//!
//! Why: tract 0.23.9 asks for a depthwise conv of 16 channels or more to read its input
//! channels-last (its `depthwise_c_f32` routine), and its `ChangeAxes` pass then carries that
//! layout as far as the graph lets it: in CenterNet-MBv3 from the model's NHWC input through the
//! stem conv, its hard-swish, the first depthwise conv, the 1x1 products and the residual add,
//! up to the first 1x1 product that writes channels first. Those ops, at 256x256, then ran on
//! tract's own kernels, outside lookout's (`fconv.rs`, whose planes and 1x1 blocks are
//! channels-first), and took 13.8 ms of the model's 51 at 1 thread (Zen 5, 2026-12-07), against
//! about 3.8 ms for the same layers in onnxruntime (a transpose of the 3-channel input, then
//! NCHWc convs).
//!
//! How: every channels-last f32 conv with a batch axis becomes the same conv channels-first,
//! between a transpose to NCHW and one back. Then each transpose back is carried downstream by
//! tract's own `change_axes` (the machinery of its `ChangeAxes` pass: element-wise ops and
//! products take the layout change, constants are rewired) until it meets the transpose in front
//! of the next conv and both vanish. A change that would reach a conv (which would answer it by
//! turning channels-last again), a model input or output is not made: that pair of transposes
//! stays, correct and only slower. What is left is the transpose of the input image, as in
//! onnxruntime's plan.
//!
//! The same arithmetic: only layouts change; each conv computes what it did (lookout's kernels
//! are held to tract's plan by `fconv`'s tests), so the outputs are tract's within rounding.
//! Runs only where lookout's conv kernels will take the convs ([`super::fdirect::chosen`]):
//! elsewhere tract's channels-last kernels are the better home. Skipped under
//! `LOOKOUT_PLAIN_TRACT=1` or `LOOKOUT_NO_CHANNELS_FIRST=1` (the A/B of this pass alone).

use std::collections::HashSet;

use tract_core::internal::*;
use tract_core::ops::change_axes::AxisChange;
use tract_core::ops::cnn::conv::Conv;
use tract_core::ops::nn::DataFormat;
use tract_core::optim::change_axes::change_axes;

use super::fdirect;
use super::pass::{env_off, GraphPass, Stage};

/// Set to `1` to leave tract's channels-last convs as they are.
pub const NO_CHANNELS_FIRST_ENV: &str = "LOOKOUT_NO_CHANNELS_FIRST";

/// NHWC → NCHW, and back (also what `maxpool.rs`'s `PoolChannelsLastPass` looks for).
pub(super) const TO_NCHW: AxisOp = AxisOp::Move(3, 1);
pub(super) const TO_NHWC: AxisOp = AxisOp::Move(1, 3);

/// Turns tract's channels-last f32 convs channels-first (see the module doc). Runs on the
/// decluttered model, before [`super::fconv::PanelConvPass`] looks for channels-first convs.
pub struct ChannelsFirstPass;

impl GraphPass for ChannelsFirstPass {
    fn name(&self) -> &'static str {
        "ChannelsFirst"
    }
    fn replaces(&self) -> &'static str {
        "channels-last f32 Conv"
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_CHANNELS_FIRST_ENV) || fdirect::chosen().is_none() {
            return Ok(0);
        }
        channels_first(model)
    }
}

/// Rewrites every channels-last f32 conv with a batch axis channels-first, then cancels the
/// transposes between them; returns how many convs it rewrote.
pub fn channels_first(model: &mut TypedModel) -> TractResult<usize> {
    let convs: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Conv>().is_some_and(|c| {
                c.pool_spec.data_format == DataFormat::NHWC
                    && c.q_params.is_none()
                    && c.pool_spec.rank() == 2
            }) && model
                .outlet_fact(n.inputs[0])
                .is_ok_and(|f| f.datum_type == f32::datum_type())
        })
        .map(|n| n.id)
        .collect();
    let mut backs = vec![];
    for id in &convs {
        let node = model.node(*id);
        let mut conv = node.op_as::<Conv>().context("a conv")?.clone();
        conv.pool_spec.data_format = DataFormat::NCHW;
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new(format!("{name} channels first"));
        let mut inputs = patch.taps(model, &node.inputs)?;
        inputs[0] = patch.wire_node(format!("{name}.nchw"), TO_NCHW, &[inputs[0]])?[0];
        let y = patch.wire_node(&name, conv, &inputs)?[0];
        let back = patch.wire_node(format!("{name}.nhwc"), TO_NHWC, &[y])?[0];
        patch.shunt_outside(model, OutletId::new(*id, 0), back)?;
        patch.apply(model)?;
        backs.push(format!("{name}.nhwc"));
    }
    // Each transpose back carried down to the next transposes to NCHW. Node ids change with every
    // patch: transposes are found by name each time.
    for back in backs {
        let Some(node) = model.nodes().iter().find(|n| n.name == back) else {
            continue;
        };
        let mut locked: Vec<OutletId> = model.input_outlets()?.to_vec();
        locked.extend(model.output_outlets()?);
        for n in model.nodes().iter().filter(|n| n.op_is::<Conv>()) {
            locked.push(OutletId::new(n.id, 0));
            locked.extend(&n.inputs);
        }
        let change = AxisChange {
            outlet: OutletId::new(node.id, 0),
            op: TO_NCHW,
        };
        match change_axes(model, &change, &locked, &[], &mut HashSet::new())? {
            Some((patch, _)) => patch.apply(model)?,
            None => log::debug!("{back}: transpose kept (its layout change reaches a conv)"),
        }
    }
    model.compact()?;
    Ok(convs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testvals::values;
    use tract_core::ops::change_axes::wire_with_rank_broadcast;
    use tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_core::ops::math::{add, max};

    /// A conv of `x` (NCHW) to `c_out` channels, `k`x`k`, stride `s`, in `group` groups.
    fn conv(
        m: &mut TypedModel,
        name: &str,
        x: OutletId,
        c_out: usize,
        k: usize,
        s: usize,
        group: usize,
    ) -> OutletId {
        let c_in = m.outlet_fact(x).unwrap().shape[1].to_usize().unwrap();
        let w = Tensor::from_shape(
            &[c_out, c_in / group, k, k],
            &values(c_out * c_in / group * k * k, c_out as u64),
        )
        .unwrap();
        let w = m.add_const(format!("{name}.w"), w).unwrap();
        let b = m
            .add_const(format!("{name}.b"), tensor1(&values(c_out, 3)))
            .unwrap();
        let op = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![k, k],
                padding: PaddingSpec::Explicit(tvec![k / 2, k / 2], tvec![k / 2, k / 2]),
                dilations: None,
                strides: Some(tvec![s, s]),
                input_channels: c_in,
                output_channels: c_out,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        m.wire_node(name, op, &[x, w, b]).unwrap()[0]
    }

    /// CenterNet's first layers in small: an NHWC image transposed to NCHW, a strided conv, a
    /// Relu, a depthwise conv of 16 channels (which tract asks to read channels-last), a 1x1
    /// conv, a residual add, a 1x1 conv out. tract's decluttering makes them channels-last; the
    /// pass makes every conv channels-first again, leaves one transpose (the image's), and the
    /// plan with lookout's kernels gives tract's outputs within 1e-5.
    #[test]
    fn convs_made_channels_last_come_back() {
        let mut m = TypedModel::default();
        let x = m.add_source("image", f32::fact([1, 24, 40, 3])).unwrap();
        let x = m.wire_node("to_nchw", AxisOp::Move(3, 1), &[x]).unwrap()[0];
        let y = conv(&mut m, "stem", x, 16, 3, 2, 1);
        let zero = m.add_const("zero", tensor0(0f32)).unwrap();
        let y = wire_with_rank_broadcast("relu", &mut m, max(), &[y, zero]).unwrap()[0];
        let d = conv(&mut m, "dw", y, 16, 3, 1, 16);
        let p = conv(&mut m, "project", d, 16, 1, 1, 1);
        let r = wire_with_rank_broadcast("residual", &mut m, add(), &[p, y]).unwrap()[0];
        let out = conv(&mut m, "expand", r, 24, 1, 1, 1);
        m.select_output_outlets(&[out]).unwrap();

        let input = Tensor::from_shape(&[1, 24, 40, 3], &values(24 * 40 * 3, 5)).unwrap();
        let run = |m: TypedModel| {
            let out = m
                .into_runnable()
                .unwrap()
                .run(tvec!(input.clone().into()))
                .unwrap();
            out[0].clone().into_tensor()
        };
        let want = run(m.clone().into_optimized().unwrap());

        let mut ours = m.into_decluttered().unwrap();
        let nhwc = |m: &TypedModel| {
            m.nodes()
                .iter()
                .filter(|n| {
                    n.op_as::<Conv>()
                        .is_some_and(|c| c.pool_spec.data_format == DataFormat::NHWC)
                })
                .count()
        };
        let before = nhwc(&ours);
        if before == 0 || fdirect::chosen().is_none() {
            eprintln!(
                "SKIP: tract kept every conv channels-first here, or lookout's kernels do not run"
            );
            return;
        }
        let n = channels_first(&mut ours).unwrap();
        assert_eq!(n, before);
        assert_eq!(nhwc(&ours), 0);
        let transposes: Vec<&str> = ours
            .nodes()
            .iter()
            .filter(|n| n.op_is::<AxisOp>())
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(transposes.len(), 1, "{transposes:?}");
        assert_eq!(
            super::super::fconv::PanelConvPass::ALL
                .run(&mut ours)
                .unwrap(),
            4
        );
        let got = run(ours.into_optimized().unwrap());
        assert_eq!(want.shape(), got.shape());
        let a = want.to_plain_array_view::<f32>().unwrap();
        let b = got.to_plain_array_view::<f32>().unwrap();
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                "at {i}: tract {x}, ours {y}"
            );
        }
    }
}

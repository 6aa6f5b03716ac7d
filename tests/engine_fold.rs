//! `engine::fold_const_chains` on the graph onnxruntime's dynamic quantisation writes for a large
//! int8 MatMul (a VLM's `lm_head`): `DynamicQuantizeLinear → MatMulInteger(W int8) → Cast → Mul`.
//!
//! With a weight over tract's 4 MiB constant-folding budget, tract's optimised plan keeps the
//! weight's column sums (`Cast → Reduce<Sum>`) and its packing as nodes that run on every
//! inference. The fold must remove every node whose inputs are all constants, keep outputs
//! bit-identical to tract's untouched plan, and leave a small weight's plan (already folded by
//! tract) alone.

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Deterministic values without a random-number crate (64-bit LCG, top bits).
fn lcg(n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as u32
        })
        .collect()
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs[0]),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type,
        raw_data: raw,
        ..Default::default()
    }
}

const FLOAT: i32 = 1;
const INT8: i32 = 3;

/// `x [1, k] f32 → y [1, n] f32` through a dynamically quantised int8 MatMul.
fn qmatmul(k: usize, n: usize) -> InferenceModel {
    let w: Vec<u8> = lcg(k * n, 7).iter().map(|v| (v % 255) as u8).collect();
    let mut cast = node("Cast", &["acc"], &["accf"]);
    cast.attribute.push(pb::AttributeProto {
        name: "to".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: FLOAT as i64,
        ..Default::default()
    });
    let graph = pb::GraphProto {
        name: "qmatmul".into(),
        node: vec![
            node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xzp"]),
            node("MatMulInteger", &["xq", "w", "xzp", "wzp"], &["acc"]),
            cast,
            node("Mul", &["xs", "ws"], &["scale"]),
            node("Mul", &["accf", "scale"], &["y"]),
        ],
        initializer: vec![
            tensor("w", &[k as i64, n as i64], INT8, w),
            // A non-zero weight zero point: the compensation then needs the activation sums too.
            tensor("wzp", &[], INT8, vec![3]),
            tensor("ws", &[], FLOAT, 0.02f32.to_le_bytes().to_vec()),
        ],
        input: vec![pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: FLOAT,
                    shape: Some(pb::TensorShapeProto {
                        dim: [1, k as i64]
                            .iter()
                            .map(|d| pb::tensor_shape_proto::Dimension {
                                value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(*d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }],
        output: vec![pb::ValueInfoProto {
            name: "y".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    };
    tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .expect("parse")
}

fn optimised(k: usize, n: usize) -> TypedModel {
    qmatmul(k, n)
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .and_then(|m| m.into_optimized())
        .expect("optimise")
}

/// Names of the plan's nodes whose inputs are all constants (work that repeats every run).
fn constant_work(model: &TypedModel) -> Vec<String> {
    model
        .eval_order()
        .unwrap()
        .into_iter()
        .map(|id| model.node(id))
        .filter(|n| {
            !n.inputs.is_empty()
                && n.inputs
                    .iter()
                    .all(|i| model.outlet_fact(*i).unwrap().konst.is_some())
        })
        .map(|n| format!("{} ({})", n.name, n.op.name()))
        .collect()
}

fn run(model: TypedModel, x: &Tensor) -> Vec<f32> {
    let plan = model.into_runnable().expect("plan");
    let out = plan.run(tvec!(x.clone().into())).expect("run");
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn input(k: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = lcg(k, seed)
        .iter()
        .map(|u| (*u as f32 / (1u32 << 24) as f32) * 4.0 - 2.0)
        .collect();
    Tensor::from_shape(&[1, k], &v).unwrap()
}

#[test]
fn large_int8_weight_sums_and_packing_are_folded_with_identical_outputs() {
    // 96 × 48 000 int8 = 4.6 MB: over tract's 4 MiB budget, like lm_head (576 × 49 280).
    let (k, n) = (96, 48_000);
    let untouched = optimised(k, n);
    let before = constant_work(&untouched);
    assert!(
        !before.is_empty(),
        "tract's plan has no per-run constant work any more (tract changed?): the fold is moot"
    );
    eprintln!("tract's per-run constant work: {before:?}");
    let mut folded = untouched.clone();
    let count = lookout::engine::fold_const_chains(&mut folded).expect("fold");
    assert!(
        count > 0,
        "nothing folded; per-run constant work: {before:?}"
    );
    let after = constant_work(&folded);
    assert!(
        after.is_empty(),
        "still runs constant work every inference: {after:?}"
    );
    for seed in [1, 2, 3] {
        let x = input(k, seed);
        let a = run(untouched.clone(), &x);
        let b = run(folded.clone(), &x);
        assert_eq!(a.len(), n);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "outputs differ after folding (seed {seed})"
        );
    }
}

#[test]
fn small_weight_plan_is_left_as_tract_folded_it() {
    // 64 × 64: tract folds everything itself; the pass finds nothing to do.
    let mut model = optimised(64, 64);
    assert!(constant_work(&model).is_empty());
    let count = lookout::engine::fold_const_chains(&mut model).expect("fold");
    assert_eq!(count, 0);
}

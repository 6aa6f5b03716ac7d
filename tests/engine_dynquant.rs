//! `engine::FastDynQuantize` in place of tract's `DynamicQuantizeLinearU8` (the activation
//! quantisation in front of every int8 matmul of onnxruntime's dynamic int8 files).
//!
//! It must give tract's bytes, scale and zero point exactly: on a one-node ONNX graph fed ties
//! (±0.5, ±2.5 after scaling), NaN, ±0, all-zero, all-negative and all-positive tensors, infinities
//! and lengths around its 8-lane loop; and on SmolVLM's int8 vision encoder (the tiny fixture), whose
//! output must be bit-identical to tract's untouched plan.

use lookout::engine::pass::GraphPass;
use lookout::engine::FastDynQuantizePass;
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// `x [n] f32 → DynamicQuantizeLinear → (y u8, scale f32, zero point u8)`.
fn graph(n: usize) -> TypedModel {
    let dim = pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(n as i64)),
        ..Default::default()
    };
    let out = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "dq".into(),
        node: vec![pb::NodeProto {
            op_type: "DynamicQuantizeLinear".into(),
            name: "dq".into(),
            input: vec!["x".into()],
            output: vec!["y".into(), "s".into(), "zp".into()],
            ..Default::default()
        }],
        input: vec![pb::ValueInfoProto {
            name: "x".into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(pb::TensorShapeProto { dim: vec![dim] }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }],
        output: vec![out("y"), out("s"), out("zp")],
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
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_optimized())
        .expect("one-node graph")
}

fn run(model: TypedModel, x: &[f32]) -> TVec<TValue> {
    let x = Tensor::from_shape(&[x.len()], x).unwrap();
    model.into_runnable().unwrap().run(tvec!(x.into())).unwrap()
}

/// Outputs as bytes (bit-exact comparison; NaN-free here, but scale bits must match too).
fn bytes(outs: &TVec<TValue>) -> Vec<Vec<u8>> {
    outs.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn same_as_tract(x: &[f32]) {
    let untouched = graph(x.len());
    let mut ours = untouched.clone();
    assert_eq!(FastDynQuantizePass.run(&mut ours).unwrap(), 1);
    let ops: Vec<String> = ours
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    assert!(ops.iter().any(|o| o == "FastDynQuantize"), "{ops:?}");
    assert_eq!(
        bytes(&run(untouched, x)),
        bytes(&run(ours, x)),
        "input {:?}…",
        &x[..x.len().min(12)]
    );
}

#[test]
fn equals_tracts_dynamic_quantize_linear() {
    // Scale 1 (range [-127, 128]): x itself is x / scale, so .5 values are exact ties.
    let mut ties = vec![-127.0f32, 128.0];
    ties.extend((-20..20).map(|i| i as f32 + 0.5));
    same_as_tract(&ties);
    // The zero point on a tie (-min / scale = 126.5).
    same_as_tract(&[-253.0, 257.0, 1.0, -1.0, 0.5, 3.5]);
    same_as_tract(&[0.0; 17]);
    same_as_tract(&[-0.0, 0.0, -0.0, 1.0]);
    same_as_tract(&[-3.0, -1.5, -0.25, -7.0, -2.0, -1.0, -9.5, -4.0, -0.125]);
    same_as_tract(&[3.0, 1.5, 0.25, 7.0, 2.0, 1.0, 9.5, 4.0, 0.125, 6.0]);
    same_as_tract(&[f32::NAN, 1.0, -2.0, f32::NAN, 0.3, 4.0, -1.0, 2.0, f32::NAN]);
    same_as_tract(&[f32::INFINITY, 1.0, -2.0]);
    same_as_tract(&[f32::NEG_INFINITY, 1.0, -2.0, 5.0]);
    // Lengths around the 8-lane loop, values from an LCG.
    let mut s = 11u64;
    for n in [1, 7, 8, 9, 15, 16, 17, 1000, 4099] {
        let x: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 2.5
            })
            .collect();
        same_as_tract(&x);
    }
}

#[test]
fn int8_vision_encoder_is_bit_identical_to_tracts_plan() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vlm/smolvlm-tiny/onnx/vision_encoder_int8.onnx");
    let mut file = lookout::engine::onnx::OnnxFile::read(&path).unwrap();
    file.merge_duplicate_nonzero();
    let size = 512;
    let untouched = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(file.proto())
        .unwrap()
        .with_input_fact(0, f32::fact([1, 1, 3, size, size]).into())
        .unwrap()
        .with_input_fact(1, bool::fact([1, 1, size, size]).into())
        .unwrap()
        .into_typed()
        .and_then(|m| m.into_optimized())
        .unwrap();
    let mut ours = untouched.clone();
    let n = FastDynQuantizePass.run(&mut ours).unwrap();
    assert!(
        n > 0,
        "the int8 encoder quantises its activations dynamically"
    );
    let mut s = 3u64;
    let pixels: Vec<f32> = (0..3 * size * size)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let inputs = || {
        tvec!(
            Tensor::from_shape(&[1, 1, 3, size, size], &pixels)
                .unwrap()
                .into(),
            Tensor::from_shape(&[1, 1, size, size], &vec![true; size * size])
                .unwrap()
                .into()
        )
    };
    let a = untouched.into_runnable().unwrap().run(inputs()).unwrap();
    let b = ours.into_runnable().unwrap().run(inputs()).unwrap();
    println!("{n} DynamicQuantizeLinear swapped");
    assert_eq!(bytes(&a), bytes(&b));
}

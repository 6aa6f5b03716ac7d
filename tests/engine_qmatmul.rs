//! `engine::replace_qmatmul` (`QMatMul`, src/engine/qmatmul.rs) on the graphs onnxruntime's
//! `quantize_dynamic` writes for a MatMul: `DynamicQuantizeLinear → MatMulInteger → Cast → Mul`.
//!
//! Fixture: tests/fixtures/models/qmatmul, written by models/tools/make_qmatmul_fixture.py (int8 and
//! uint8 weights, per tensor and per column; two matmuls sharing one quantised activation, k and n
//! off the kernels' padding), with onnxruntime's outputs for one row (a decoder step) and five (a
//! prefill). Every `MatMulInteger` must become a `QMatMul`; the outputs must be bit-identical to
//! tract's untouched plan (i32 accumulation is exact in both, and the Cast → Mul behind is tract's
//! in both) and agree with onnxruntime's to float rounding.

mod common;

use std::path::PathBuf;

use lookout::engine::replace_qmatmul;
use tract_onnx::prelude::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qmatmul")
}

fn f32s(name: &str) -> Vec<f32> {
    common::read_f32(&dir().join(name))
}

/// The file planned for `seq` rows (`None`: a symbol, as a decoder's sequence length), with or
/// without `QMatMul`; how many it swapped in.
fn plan(file: &str, seq: Option<usize>, qmatmul: bool) -> (Arc<TypedRunnableModel>, usize) {
    // The file's value_info names `seq` as its own symbol (as lookout's sessions, ignore it).
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(dir().join(file))
        .and_then(|m| {
            let rows = seq.map_or_else(|| m.symbols.sym("S").into(), TDim::from);
            let shape: TVec<TDim> = tvec![1.into(), rows, 72.into()];
            m.with_input_fact(0, f32::fact(shape).into())
        })
        .and_then(|m| m.into_typed())
        .expect("load");
    let mut model = model;
    let n = if qmatmul {
        replace_qmatmul(&mut model).expect("QMatMul pass")
    } else {
        0
    };
    let plan = model
        .into_decluttered()
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("optimise");
    (plan, n)
}

fn run(plan: &Arc<TypedRunnableModel>, x: &[f32], seq: usize) -> Vec<f32> {
    let input = Tensor::from_shape(&[1, seq, 72], x).expect("input");
    let out = plan.run(tvec!(input.into())).expect("run");
    common::f32_outputs(&out)
}

#[test]
fn qmatmul_equals_tract_and_onnxruntime() {
    for file in ["qmm-s8", "qmm-u8", "qmm-s8-pc"] {
        for seq in [1usize, 5] {
            let x = f32s(&format!("x-{seq}.bin"));
            // The row count a symbol: QMatMul's own kernel for one row, tract's plan inside it for 5.
            let (ours, n) = plan(&format!("{file}.onnx"), None, true);
            assert_eq!(n, 3, "{file}: every MatMulInteger becomes a QMatMul");
            let names: Vec<String> = ours
                .model()
                .nodes()
                .iter()
                .map(|n| n.op().name().to_string())
                .collect();
            assert_eq!(
                names.iter().filter(|n| *n == "QMatMul").count(),
                3,
                "{file}: plan {names:?}"
            );
            let (tract, _) = plan(&format!("{file}.onnx"), None, false);
            let got = run(&ours, &x, seq);
            let want = run(&tract, &x, seq);
            assert_eq!(got.len(), seq * (37 + 11));
            let what = format!("{file} seq {seq}");
            common::assert_bits_eq(&got, &want, &what);
            let ort = f32s(&format!("{file}-{seq}.bin"));
            common::assert_near_onnxruntime(&got, &ort, 1e-5, &what);
        }
    }
}

/// Rows known at load to be several (a vision encoder's patch tokens) stay tract's, except where
/// lookout's own int8 kernels run them (AVX2 on x86 without VNNI, AVX-512 VNNI): there they are
/// taken, and give tract's bits. One known row is always taken.
#[test]
fn leaves_products_known_to_have_several_rows() {
    let (five, n5) = plan("qmm-s8.onnx", Some(5), true);
    if lookout::engine::own_int8_gemm() {
        assert_eq!(n5, 3);
        let x = f32s("x-5.bin");
        let (tract, _) = plan("qmm-s8.onnx", Some(5), false);
        common::assert_bits_eq(&run(&five, &x, 5), &run(&tract, &x, 5), "5 rows");
    } else {
        assert_eq!(n5, 0);
    }
    let (one, n) = plan("qmm-s8.onnx", Some(1), true);
    assert_eq!(n, 3);
    let x = f32s("x-1.bin");
    let (tract, _) = plan("qmm-s8.onnx", Some(1), false);
    let (got, want) = (run(&one, &x, 1), run(&tract, &x, 1));
    assert!(got
        .iter()
        .zip(&want)
        .all(|(g, w)| g.to_bits() == w.to_bits()));
}

/// A MatMulInteger whose weight is not a constant (an activation × activation product) stays
/// tract's: the pass needs the weight at load.
#[test]
fn leaves_non_constant_weights() {
    use tract_onnx::pb;
    let node = |op: &str, i: &[&str], o: &[&str]| pb::NodeProto {
        op_type: op.into(),
        name: o[0].into(),
        input: i.iter().map(|s| s.to_string()).collect(),
        output: o.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let input = |name: &str, dims: &[i64]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 2, // uint8
                shape: Some(pb::TensorShapeProto {
                    dim: dims
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
    };
    let graph = pb::GraphProto {
        name: "aa".into(),
        node: vec![node("MatMulInteger", &["a", "b"], &["c"])],
        input: vec![input("a", &[2, 8]), input("b", &[8, 3])],
        output: vec![pb::ValueInfoProto {
            name: "c".into(),
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
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(&proto)
        .and_then(|m| m.into_typed())
        .expect("load");
    assert_eq!(replace_qmatmul(&mut model).expect("pass"), 0);
}

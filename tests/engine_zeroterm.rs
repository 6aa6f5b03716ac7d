//! `engine::drop_zero_terms` (src/engine/zeroterm.rs): the weight zero-point compensation tract
//! wires behind a quantized matrix product (`− b0 · Σ a`, `+ a0 · k · b0`) dropped where b0 is a
//! constant 0, on the optimised plan of onnxruntime's `quantize_dynamic` MatMul files
//! (tests/fixtures/models/qmatmul, models/tools/make_qmatmul_fixture.py) with five rows known at
//! load (a prefill or a vision encoder: tract's own integer product, not QMatMul's).
//!
//! int8 weights are symmetric (b0 = 0): with one zero point per column (the VLMs' files), both terms
//! of each of the three products go; with one per tensor tract folds the scalar 0 itself. uint8
//! weights have a zero point: nothing goes. Outputs must be bit-identical to tract's plan (integer `x ± 0`)
//! and agree with onnxruntime's to float rounding.

mod common;

use std::path::PathBuf;

use lookout::engine::drop_zero_terms;
use tract_onnx::prelude::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/qmatmul")
}

fn f32s(name: &str) -> Vec<f32> {
    common::read_f32(&dir().join(name))
}

/// tract's optimised plan for 5 rows, with or without the pass; how many terms it dropped and how
/// many nodes the plan runs.
fn plan(file: &str, pass: bool) -> (Arc<TypedRunnableModel>, usize, usize) {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(dir().join(file))
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 5, 72]).into()))
        .and_then(|m| m.into_optimized())
        .expect("load");
    let n = if pass {
        drop_zero_terms(&mut model).expect("pass")
    } else {
        0
    };
    let plan = model.into_runnable().expect("plan");
    let planned = plan.order_without_consts().len();
    (plan, n, planned)
}

fn run(plan: &Arc<TypedRunnableModel>, x: &[f32]) -> Vec<f32> {
    let input = Tensor::from_shape(&[1, 5, 72], x).expect("input");
    let out = plan.run(tvec!(input.into())).expect("run");
    common::f32_outputs(&out)
}

#[test]
fn zero_point_terms_dropped_exactly() {
    let x = f32s("x-5.bin");
    // Per-column int8 weights (as the VLMs' files): b0 is a vector of zeros, which tract keeps.
    // Per-tensor: a scalar 0, whose terms tract already folds. uint8: b0 is not 0.
    for (file, want_dropped) in [("qmm-s8-pc", 6), ("qmm-s8", 0), ("qmm-u8", 0)] {
        let (ours, n, ours_nodes) = plan(&format!("{file}.onnx"), true);
        let (tract, _, tract_nodes) = plan(&format!("{file}.onnx"), false);
        assert_eq!(n, want_dropped, "{file}: terms dropped");
        if n > 0 {
            // The dropped terms' producers (Σ a and its Cast, b0 · Σ a) are no longer run.
            assert!(
                ours_nodes + n < tract_nodes,
                "{file}: {ours_nodes} nodes planned vs tract's {tract_nodes}"
            );
        }
        let got = run(&ours, &x);
        let want = run(&tract, &x);
        assert_eq!(got.len(), 5 * (37 + 11));
        common::assert_bits_eq(&got, &want, file);
        let ort = f32s(&format!("{file}-5.bin"));
        common::assert_near_onnxruntime(&got, &ort, 1e-5, file);
    }
}

/// Float additions of a zero are kept (`x + 0` is not `x` for −0), and so is everything in a float
/// model: the pass finds nothing in an fp32 detector.
#[test]
fn float_models_are_untouched() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/nanodet-g/nanodet-g.onnx");
    let mut model = tract_onnx::onnx()
        .model_for_path(&path)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, 416, 416]).into()))
        .and_then(|m| m.into_optimized())
        .expect("load nanodet-g");
    assert_eq!(drop_zero_terms(&mut model).expect("pass"), 0);
}

//! `engine::replace_conv_integer` (src/engine/convint.rs) on the graphs onnxruntime's
//! `quantize_dynamic` writes for a Conv: `DynamicQuantizeLinear → ConvInteger → Cast → Mul`.
//!
//! Fixture: tests/fixtures/models/convint, written by models/tools/make_convint_fixture.py (int8
//! weights per channel with reduced range, as Florence-2's `_int8` files; uint8 weights per tensor),
//! a depthwise 3x3, a 7x7 stride-4 stem and a 1x1 the pass takes whole, and a 3x3 over 128 channels
//! whose sums f32 cannot hold exactly, which it splits over input channels (exact parts added in
//! i32). `expect.json` names the convolutions exact as a whole, computed by the script from the
//! quantised weights. Outputs must be bit-identical to tract's untouched plan (the f32 sums are
//! exact integers) and agree with onnxruntime's to float rounding.

mod common;

use std::path::PathBuf;

use lookout::engine::replace_conv_integer;
use tract_onnx::prelude::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/convint")
}

fn f32s(name: &str) -> Vec<f32> {
    common::read_f32(&dir().join(name))
}

/// The file planned with or without the pass, and how many convolutions it swapped.
fn plan(file: &str, pass: bool) -> (Arc<TypedRunnableModel>, usize) {
    let mut model = tract_onnx::onnx()
        .model_for_path(dir().join(file))
        .and_then(|m| m.into_typed())
        .expect("load");
    let n = if pass {
        replace_conv_integer(&mut model).expect("pass")
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

fn run(plan: &Arc<TypedRunnableModel>, x: &[f32]) -> Vec<f32> {
    let input = Tensor::from_shape(&[1, 8, 20, 20], x).expect("input");
    let out = plan.run(tvec!(input.into())).expect("run");
    common::f32_outputs(&out)
}

#[test]
fn exact_float_convs_equal_tract_and_onnxruntime() {
    let expect: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("expect.json")).expect("expect.json"))
            .expect("json");
    let x = f32s("x.bin");
    for file in ["convint-s8rr", "convint-u8"] {
        let want_taken = expect[file].as_array().expect("list").len();
        let (ours, n) = plan(&format!("{file}.onnx"), true);
        assert_eq!(
            want_taken, 3,
            "{file}: the fixture is made so that three are exact"
        );
        assert_eq!(n, 4, "{file}: every convolution taken (the fourth split)");
        let (tract, _) = plan(&format!("{file}.onnx"), false);
        let got = run(&ours, &x);
        let want = run(&tract, &x);
        assert_eq!(got.len(), 8 * 400 + 16 * 25 + 8 * 100);
        common::assert_bits_eq(&got, &want, file);
        let ort = f32s(&format!("{file}.bin"));
        common::assert_near_onnxruntime(&got, &ort, 1e-5, file);
    }
}

/// No integer convolution is left: the three exact ones are one float convolution each, the
/// inexact one (128 channels × 9 taps × 255 × up to 127 > 2^24) several over input channels.
#[test]
fn the_inexact_convolution_is_split_over_input_channels() {
    let mut model = tract_onnx::onnx()
        .model_for_path(dir().join("convint-s8rr.onnx"))
        .and_then(|m| m.into_typed())
        .expect("load");
    replace_conv_integer(&mut model).expect("pass");
    let convs: Vec<bool> = model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<tract_core::ops::cnn::Conv>())
        .map(|c| c.q_params.is_some())
        .collect();
    assert_eq!(convs.iter().filter(|q| **q).count(), 0, "{convs:?}");
    assert!(convs.len() >= 3 + 2, "{convs:?}");
}

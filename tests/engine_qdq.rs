//! lookout's QDQ pass (`QdqConvPass`, src/engine/qdq.rs): `DequantizeLinear → Conv →
//! QuantizeLinear` onto `QConv`, and `QConcat` (src/engine/qconcat.rs) for `DequantizeLinear
//! [→ LeakyRelu] → Concat → QuantizeLinear`, against tract's untouched plan (`LOOKOUT_PLAIN_TRACT`'s: a float
//! conv between the two) and onnxruntime (which fuses each chain into `QLinearConv`), on small
//! random graphs (`models/tools/make_qdq_fixture.py`), and on the shipped nanodet-g-int8-qdq.

mod common;

use tract_onnx::prelude::*;

/// Bytes of `a` and `b` (u8 or i8 outputs) that differ, and the largest difference.
fn differences(a: &Tensor, b: &Tensor) -> (usize, i32) {
    let signed = a.datum_type().unquantized() == DatumType::I8;
    let v = |x: u8| if signed { x as i8 as i32 } else { x as i32 };
    a.as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(p, q)| (v(*p) - v(*q)).abs())
        .filter(|d| *d > 0)
        .fold((0, 0), |(n, m), d| (n + 1, m.max(d)))
}

/// Every geometry the pass takes (3x3, strided with one weight scale, 1x1, depthwise 3x3 and
/// 5x5/2, dilated with asymmetric padding, 1x1/2 without bias) on u8 and i8 activations, and two
/// it leaves to tract (grouped; no QuantizeLinear after the conv), plus a quantized concat
/// (`QConcat`, bit-identical to tract, within one step of onnxruntime): every conv output equals
/// onnxruntime's byte for byte, and tract's plain plan (which rounds the float sum instead of the
/// integer one) within one step; the float output is tract's own.
#[test]
fn qdq_conv_equals_onnxruntime_and_tract() {
    let _ = env_logger::builder().is_test(true).try_init();
    for (tag, dt) in [("u8", u8::datum_type()), ("i8", i8::datum_type())] {
        let path = common::fixture(&format!("models/qdq/qdq-{tag}.onnx"));
        let shape = [1usize, 8, 13, 11];
        let bytes = std::fs::read(common::fixture(&format!("models/qdq/input-{tag}.bin"))).unwrap();
        let ort = std::fs::read(common::fixture(&format!("models/qdq/ort-{tag}.bin"))).unwrap();
        let mut input = Tensor::from_shape(&shape, &bytes).unwrap();
        unsafe { input.set_datum_type(dt) };
        let load = || {
            tract_onnx::onnx()
                .model_for_path(&path)
                .unwrap()
                .with_input_fact(0, InferenceFact::dt_shape(dt, shape))
                .unwrap()
        };
        let (ours, rewrites) = lookout::engine::optimize(load()).unwrap();
        assert_eq!(rewrites.count("QdqConv"), 7, "{tag}: {rewrites}");
        let qconvs = ours
            .nodes()
            .iter()
            .filter(|n| n.op.name() == "QConv")
            .count();
        assert_eq!(qconvs, 7, "{tag}: QConv nodes in the plan");
        let ours = ours
            .into_runnable()
            .unwrap()
            .run(tvec!(input.clone().into()))
            .unwrap();
        let plain = load()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
            .run(tvec!(input.into()))
            .unwrap();
        assert_eq!(rewrites.count("QConcat"), 2, "{tag}: {rewrites}");
        assert_eq!(ours.len(), 11);
        let mut ort_offset = 0;
        for (i, (a, b)) in ours.iter().zip(&plain).enumerate() {
            assert_eq!(a.shape(), b.shape(), "{tag} output {i}");
            if i == 8 {
                // The float conv, left to tract: the same plan on both sides.
                assert_eq!(a.as_bytes(), b.as_bytes(), "{tag}: float output");
                continue;
            }
            let (n, max) = differences(a, b);
            eprintln!(
                "{tag} output {i}: {n} of {} differ from tract's plain plan, by at most {max}",
                a.len()
            );
            assert!(
                max <= 1,
                "{tag} output {i}: {n} differ from tract's, up to {max}"
            );
            if i >= 9 {
                // The concats (9: two dequantised inputs; 10: one f32 input): their tables and
                // quantization are tract's own arithmetic, so tract's bytes exactly;
                // onnxruntime (QLinearConcat / its own LeakyRelu tables) within one step.
                assert_eq!(n, 0, "{tag}: QConcat differs from tract's");
                let mut reference =
                    Tensor::from_shape(a.shape(), &ort[ort_offset..][..a.len()]).unwrap();
                unsafe { reference.set_datum_type(dt) };
                ort_offset += a.len();
                let (n, max) = differences(a, &reference);
                eprintln!(
                    "{tag} concat: {n} of {} differ from onnxruntime's, by at most {max}",
                    a.len()
                );
                assert!(
                    max <= 1,
                    "{tag}: concat {n} values from onnxruntime's, up to {max}"
                );
            }
            if i < 7 {
                // The grouped conv (7) stays with tract's float conv; onnxruntime fuses it.
                let mut reference =
                    Tensor::from_shape(a.shape(), &ort[ort_offset..][..a.len()]).unwrap();
                unsafe { reference.set_datum_type(dt) };
                ort_offset += a.len();
                assert_eq!(
                    differences(a, &reference),
                    (0, 0),
                    "{tag} output {i}: differs from onnxruntime's"
                );
            }
            let distinct: std::collections::BTreeSet<u8> = a.as_bytes().iter().copied().collect();
            assert!(
                distinct.len() > 16,
                "{tag} output {i}: degenerate ({} distinct)",
                distinct.len()
            );
        }
        assert_eq!(
            ort_offset,
            ort.len(),
            "{tag}: onnxruntime outputs left over"
        );
    }
}

/// `(k − 128) / 32` with `k` an integer pattern: exact in f32, the same in
/// `models/tools/make_qdq_model_fixture.py`.
fn synthetic_input(shape: &[usize]) -> Vec<f32> {
    let w = shape[shape.len() - 1] as i64;
    let n: usize = shape.iter().product();
    (0..n as i64)
        .map(|i| {
            let k = ((i % w) * 3 + (i / w) * 5 + (i * 7919) % 61) % 256;
            (k - 128) as f32 / 32.0
        })
        .collect()
}

/// lookout's first output for `model_dir` at `threads` on `x`, and its plan's operator kinds.
fn engine_output(model_dir: &str, threads: usize, x: &[f32]) -> (Vec<f32>, Vec<String>) {
    use lookout::engine::{Engine, EngineOptions};
    let manifest = lookout::detect::Manifest::load(
        common::repo().join(format!("models/{model_dir}/model.toml")),
    )
    .unwrap();
    let shape = manifest.input.shape.clone();
    let engine = Engine::load(
        &manifest.model_path,
        &EngineOptions {
            threads,
            input_shape: Some(shape.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let kinds = engine
        .profile(&shape, x, 1)
        .unwrap()
        .into_iter()
        .map(|p| p.op)
        .collect();
    let out = engine.run_slice(&shape, x).unwrap();
    (out.get(0).unwrap().data.to_vec(), kinds)
}

/// tract's untouched plan (what `LOOKOUT_PLAIN_TRACT=1` runs) on `x`.
fn untouched_output(model_dir: &str, x: &[f32]) -> Vec<f32> {
    let manifest = lookout::detect::Manifest::load(
        common::repo().join(format!("models/{model_dir}/model.toml")),
    )
    .unwrap();
    let shape = manifest.input.shape.clone();
    let plan = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(&manifest.model_path)
        .unwrap()
        .with_input_fact(0, f32::fact(&shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan
        .run(tvec!(Tensor::from_shape(&shape, x).unwrap().into()))
        .unwrap();
    let out = out[0].cast_to::<f32>().unwrap();
    let out = out.try_as_plain_ram().unwrap();
    out.as_slice::<f32>().unwrap().to_vec()
}

/// Values of `ours` at every `step`-th index that differ from `want`, and the largest difference.
fn sampled_diff(ours: &[f32], want: &[f32], step: usize) -> (usize, f32) {
    ours.iter()
        .step_by(step)
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .filter(|d| *d > 1e-5)
        .fold((0, 0f32), |(n, m), d| (n + 1, m.max(d)))
}

/// nanodet-g-int8-qdq with its 31 quantized convs as `QConv`, on an input Rust and Python compute
/// alike, against onnxruntime's default plan (which fuses the same chains into QLinearConv) and
/// tract's untouched plan. Not bit-exact, and not expected to be: the network starts with three
/// float convs, a LeakyRelu and a MaxPool whose f32 results differ between tract and onnxruntime
/// in the last bits, and the first QuantizeLinear turns some of those into one-step differences
/// that travel on; tract's untouched plan against onnxruntime's *unfused* plan (the same float
/// arithmetic) parts the same way (measured 2026-12-05: ~half the sampled values, max 0.008). So
/// the bound is that noise floor: lookout within 0.02 of onnxruntime's fused output and of tract's
/// untouched output everywhere; and bit-identical at 1 and 2 threads. (Bit-exactness of the
/// rewrite itself is `qdq_conv_equals_onnxruntime_and_tract`, on integer inputs.)
#[test]
fn shipped_nanodet_qdq_within_noise_of_onnxruntime_and_tract() {
    let model_dir = "nanodet-g-int8-qdq";
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixture(&format!(
            "models/qdq/shipped-{model_dir}.json"
        )))
        .unwrap(),
    )
    .unwrap();
    let shape: Vec<usize> = fixture["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let step = fixture["step"].as_u64().unwrap() as usize;
    let values = |key: &str| -> Vec<f32> {
        fixture[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let (fused, unfused) = (values("fused"), values("unfused"));
    let x = synthetic_input(&shape);

    let (ours, kinds) = engine_output(model_dir, 1, &x);
    assert!(kinds.iter().any(|k| k == "QConv"), "no QConv in {kinds:?}");
    assert_eq!(ours.len(), fixture["len"].as_u64().unwrap() as usize);
    let plain = untouched_output(model_dir, &x);
    let (n_ort, max_ort) = sampled_diff(&ours, &fused, step);
    let (n_plain_unfused, max_plain_unfused) = sampled_diff(&plain, &unfused, step);
    let (n_plain, max_plain) = sampled_diff(&plain, &fused, step);
    let whole = ours
        .iter()
        .zip(&plain)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    eprintln!(
        "{model_dir}, {} sampled values: lookout vs onnxruntime fused {n_ort} differ (max {max_ort}); \
         tract plain vs onnxruntime unfused {n_plain_unfused} (max {max_plain_unfused}); tract plain vs \
         fused {n_plain} (max {max_plain}); lookout vs tract plain: {whole} of {} differ",
        fused.len(),
        ours.len()
    );
    assert!(
        max_ort <= 0.02,
        "lookout {n_ort} values from onnxruntime's, up to {max_ort}"
    );
    let max_whole = ours
        .iter()
        .zip(&plain)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        max_whole <= 0.02,
        "lookout {whole} values from tract's plan, up to {max_whole}"
    );
    let (two, _) = engine_output(model_dir, 2, &x);
    let moved = ours
        .iter()
        .zip(&two)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(moved, 0, "2 threads changed {moved} values");
}

//! `engine::pin_single_selections` on SmolVLM's vision encoder (the tiny fixture made by
//! `models/tools/make_vlm_smolvlm.py --tiny`, fp32 and onnxruntime's dynamic int8).
//!
//! The graph selects its real images with `NonZero` over the one-image axis; tract carries the
//! selection's length as a symbol and, not knowing it is 1, lowers every projection to one
//! matrix-vector product per patch token. Pinning the length must keep the outputs those of
//! tract's untouched plan, leave no symbolic dimension in the plan, and turn the impossible case (an
//! all-zero image, which selects nothing) into an error instead of a wrong shape.

use std::path::{Path, PathBuf};

use lookout::engine::onnx::OnnxFile;
use lookout::engine::pin_single_selections;
use tract_onnx::prelude::*;

/// Patch grid of the fixture: 512 px images, 16 px patches.
const SIZE: usize = 512;

fn encoder(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "tests/fixtures/vlm/smolvlm-tiny/onnx/vision_encoder{variant}.onnx"
    ))
}

/// The typed graph with lookout's input facts (one image, as `vlm::smolvlm` loads it).
fn typed(path: &Path) -> TypedModel {
    let mut file = OnnxFile::read(path).unwrap();
    file.merge_duplicate_nonzero();
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(file.proto())
        .unwrap();
    model = model
        .with_input_fact(0, f32::fact([1, 1, 3, SIZE, SIZE]).into())
        .unwrap()
        .with_input_fact(1, bool::fact([1, 1, SIZE, SIZE]).into())
        .unwrap();
    model.into_typed().unwrap()
}

/// Deterministic pixel values in [-1, 1) (64-bit LCG), as the pre-processing produces.
fn pixels(seed: u64) -> Tensor {
    let mut s = seed;
    let v: Vec<f32> = (0..3 * SIZE * SIZE)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_shape(&[1, 1, 3, SIZE, SIZE], &v).unwrap()
}

fn mask() -> Tensor {
    Tensor::from_shape(&[1, 1, SIZE, SIZE], &vec![true; SIZE * SIZE]).unwrap()
}

fn run(plan: &Arc<TypedRunnableModel>, pixels: Tensor) -> TractResult<TVec<TValue>> {
    plan.run(tvec!(pixels.into(), mask().into()))
}

/// Whether any outlet of the plan has a symbolic dimension.
fn has_symbols(model: &TypedModel) -> bool {
    model.nodes().iter().any(|n| {
        n.outputs
            .iter()
            .any(|o| o.fact.shape.iter().any(|d| d.to_i64().is_err()))
    })
}

fn check(variant: &str) {
    let path = encoder(variant);
    let model = typed(&path);
    let untouched = model.clone().into_optimized().unwrap();
    assert!(
        has_symbols(&untouched),
        "{variant}: tract's own plan has no symbolic dimension any more: the pin is moot"
    );
    let (pinned, n) = pin_single_selections(model).unwrap();
    assert_eq!(n, 1, "{variant}: one (merged) image selection");
    let pinned = pinned.into_optimized().unwrap();
    assert!(
        !has_symbols(&pinned),
        "{variant}: the pinned plan still has a symbolic dimension"
    );
    let untouched = untouched.into_runnable().unwrap();
    let pinned = pinned.into_runnable().unwrap();
    for seed in [1, 2] {
        let a = run(&untouched, pixels(seed)).unwrap();
        let b = run(&pinned, pixels(seed)).unwrap();
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.shape(), b.shape(), "{variant}");
            let a = a.to_plain_array_view::<f32>().unwrap();
            let b = b.to_plain_array_view::<f32>().unwrap();
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(b.iter())
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            println!("{variant} seed {seed}: max |diff| {diff:e} (max |value| {scale})");
            // The same arithmetic in another order (one matrix product instead of many
            // matrix-vector products): float rounding only.
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{variant}: pinned plan differs from tract's by {diff} (values up to {scale})"
            );
        }
    }
    // An all-zero image is not "real": the graph selects nothing. The pinned plan refuses it
    // rather than returning features of the wrong shape.
    let zero = Tensor::zero::<f32>(&[1, 1, 3, SIZE, SIZE]).unwrap();
    let err = run(&pinned, zero).expect_err("an all-zero image must be refused");
    let msg = format!("{err:?}");
    assert!(msg.contains("all-zero image"), "{variant}: {msg}");
}

#[test]
fn pinned_fp32_vision_encoder_matches_tracts_plan() {
    check("");
}

#[test]
fn pinned_int8_vision_encoder_matches_tracts_plan() {
    check("_int8");
}

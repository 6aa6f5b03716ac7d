//! lookout's fp32 detector ops, `engine::AxisSoftmax` (a softmax over an axis that is not the last)
//! and `engine::SeparableMaxPool` (max pool as row then column maxima), against tract's untouched
//! plan and against onnxruntime.
//!
//! * The fixture `tests/fixtures/models/fpdet/fpdet.onnx` (written with onnxruntime's outputs by
//!   `models/tools/make_fpdet_fixture.py`) has FastestDet's `Transpose → Softmax → Transpose`, a
//!   softmax over axis 1 and axis 0, and max pools 3x3/2 (pad 1), 5/9/13 stride 1 (YOLOX's SPP),
//!   2x2/2, 3x2/(3,2) with asymmetric pads and ceil mode: every output is compared with tract's
//!   untouched plan (max pools bit-identical, softmax within 1e-6 absolute: the same `exp` per
//!   element, the sum in another order) and with onnxruntime's recorded output (1e-5 absolute:
//!   another `exp`).
//! * FastestDet and YOLOX-Nano (in `../shared/models`, skipped when absent): every output of the
//!   plan with the passes against tract's plan, within 1e-4 of the largest output value (float
//!   rounding of the softmax only; the max pools change nothing), at 1 and 2 threads.

#[path = "support/skip.rs"]
mod skip_switch;

use std::path::{Path, PathBuf};

use lookout::engine::pass::GraphPass;
use lookout::engine::{AxisSoftmaxPass, SeparableMaxPoolPass};
use tract_onnx::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// tract's untouched plan of `path` with its first input pinned to `shape`, and the same plan with
/// the two passes run on it; how many nodes each pass swapped.
fn plans(path: &Path, shape: &[usize]) -> (TypedModel, TypedModel, usize, usize) {
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap();
    let mut ours = model.clone();
    let softmax = AxisSoftmaxPass.run(&mut ours).unwrap();
    let pools = SeparableMaxPoolPass.run(&mut ours).unwrap();
    (model, ours, softmax, pools)
}

fn run(model: &TypedModel, threads: usize, input: &Tensor) -> TVec<Tensor> {
    let executor = if threads > 1 {
        tract_linalg::multithread::Executor::multithread(threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    };
    let opts = RunOptions {
        executor: Some(executor),
        ..Default::default()
    };
    let plan = model.clone().into_runnable_with_options(&opts).unwrap();
    plan.run(tvec!(input.clone().into()))
        .unwrap()
        .into_iter()
        .map(|t| t.into_tensor())
        .collect()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// Deterministic values in [0, 1) (64-bit LCG).
fn input(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed;
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_shape(shape, &v).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// A whole detector: the plan with the passes against tract's at 1 and 2 threads.
fn detector(path: &Path, shape: &[usize], want_softmax: usize, want_pools: usize) {
    if !path.exists() {
        skip_switch::skip(&format!(
            "{} absent (../shared/models is not committed)",
            path.display()
        ));
        return;
    }
    let (tract, ours, softmax, pools) = plans(path, shape);
    assert_eq!(
        (softmax, pools),
        (want_softmax, want_pools),
        "{}: nodes swapped (softmax, max pool)",
        path.display()
    );
    let x = input(shape, 3);
    let want = run(&tract, 1, &x);
    for threads in [1, 2] {
        let got = run(&ours, threads, &x);
        assert_eq!(want.len(), got.len());
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            assert_eq!(a.shape(), b.shape(), "output {i}");
            let (a, b) = (floats(a), floats(b));
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max_diff(&a, &b);
            println!(
                "{} output {i}, {threads} thread(s): max |diff| {d:e} (max |value| {scale})",
                path.display()
            );
            assert!(
                d <= 1e-4 * scale.max(1.0),
                "{}: output {i} at {threads} thread(s) differs from tract's plan by {d}",
                path.display()
            );
        }
    }
}

#[test]
fn fastestdet_matches_tracts_plan() {
    detector(
        &root().join("../shared/models/fastestdet/FastestDet.onnx"),
        &[1, 3, 352, 352],
        1,
        1,
    );
}

#[test]
fn yolox_nano_matches_tracts_plan() {
    detector(
        &root().join("../shared/models/yolox-nano/yolox_nano.onnx"),
        &[1, 3, 416, 416],
        0,
        3,
    );
}

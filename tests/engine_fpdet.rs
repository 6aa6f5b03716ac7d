//! lookout's fp32 detector ops, `engine::AxisSoftmax` (a softmax over an axis that is not the last)
//! and `engine::SeparableMaxPool` (max pool as row then column maxima), against tract's untouched
//! plan and against onnxruntime.
//!
//! * The fixture `tests/fixtures/models/fpdet/fpdet.onnx` (written with onnxruntime's outputs by
//!   `models/tools/make_fpdet_fixture.py`) has FastestDet's `Transpose → Softmax → Transpose`, a
//!   softmax over axis 1 and axis 0, and max pools 3x3/2 (pad 1), 5/9/13 stride 1 (YOLOX's SPP),
//!   2x2/2, 3x2/(3,2) with asymmetric pads and ceil mode (the pass takes the 5/9/13 ones; the op's
//!   unit tests hold it to tract's on the strided ones): every output is compared with tract's
//!   untouched plan (max pools bit-identical, softmax within 1e-6 absolute: the same `exp` per
//!   element, the sum in another order) and with onnxruntime's recorded output (1e-5 absolute:
//!   another `exp`).
//! * FastestDet and YOLOX-Nano (in `../shared/models`, skipped when absent): every output of the
//!   plan with the passes against tract's plan, within 1e-4 of the largest output value (float
//!   rounding of the softmax only; the max pools change nothing), at 1 and 2 threads.

mod common;

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
    let plan = model
        .clone()
        .into_runnable_with_options(&lookout::engine::run_options(threads))
        .unwrap();
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
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// A whole detector: the plan with the passes against tract's at 1 and 2 threads.
fn detector(path: &Path, shape: &[usize], want_softmax: usize, want_pools: usize) {
    if !path.exists() {
        common::skip(&format!(
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

/// The fixture's outputs, in graph order, and the tolerance against onnxruntime for each: the
/// four softmaxes (tract's `exp` against onnxruntime's), then the max pools (exact).
const FIXTURE_OUTPUTS: [(&str, f32); 10] = [
    ("sm_fastestdet", 1e-5),
    ("sm_axis1", 1e-5),
    ("sm_axis2", 1e-5),
    ("sm_axis3", 1e-5),
    ("mp3s2", 0.0),
    ("mp5", 0.0),
    ("mp9", 0.0),
    ("mp13", 0.0),
    ("mp2s2", 0.0),
    ("mp3x2_ceil", 0.0),
];

#[test]
fn fixture_matches_tracts_plan_and_onnxruntime() {
    let dir = root().join("tests/fixtures/models/fpdet");
    let shape = [1, 8, 24, 30];
    let (tract, ours, softmax, pools) = plans(&dir.join("fpdet.onnx"), &shape);
    // The last-axis softmax stays tract's (its vectorised path); whether the FastestDet pattern's
    // transposes fold into its softmax is tract's choice (in FastestDet itself they do), so the
    // softmaxes over axes 1 and 2 at least. Of the pools, all six (`maxpool::worth_it`: the
    // 5/9/13 ones, and the three whose rows are strided by 2).
    println!("swapped: {softmax} softmax, {pools} max pool");
    assert!(
        softmax >= 2 && pools == 6,
        "nodes swapped: {softmax} softmax, {pools} max pool"
    );
    let x = Tensor::from_shape(&shape, &common::read_f32(&dir.join("input.bin"))).unwrap();
    let ort = common::read_f32(&dir.join("ort.bin"));
    let want = run(&tract, 1, &x);
    assert_eq!(want.len(), FIXTURE_OUTPUTS.len());
    for threads in [1, 2, 3] {
        let got = run(&ours, threads, &x);
        let mut at = 0;
        for (i, (a, b)) in want.iter().zip(&got).enumerate() {
            let (name, ort_tol) = FIXTURE_OUTPUTS[i];
            assert_eq!(a.shape(), b.shape(), "{name}");
            let (a, b) = (floats(a), floats(b));
            let r = &ort[at..at + b.len()];
            at += b.len();
            let vs_tract = max_diff(&a, &b);
            let vs_ort = max_diff(r, &b);
            println!("{name}, {threads} thread(s): max |diff| {vs_tract:e} vs tract, {vs_ort:e} vs onnxruntime");
            if name.starts_with("mp") {
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{name}: not bit-identical to tract's plan"
                );
            } else {
                assert!(vs_tract <= 1e-6, "{name}: {vs_tract} from tract's plan");
            }
            assert!(vs_ort <= ort_tol, "{name}: {vs_ort} from onnxruntime");
        }
        assert_eq!(at, ort.len(), "ort.bin holds every output");
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

//! `precision = "f16"` (src/engine/precision.rs): tract's `FloatPrecisionTranslator` runs a float
//! detector's arithmetic in f16, inputs and outputs still f32, `Resize` left on f32.
//!
//! Where the CPU has FP16 arithmetic (aarch64 with `asimdhp`; under qemu-user, whose
//! `/proc/cpuinfo` is the host's, `QEMU_CPU=max TRACT_CPU_ISA=+fp16`) this runs tract's `arm64fp16`
//! kernels. Elsewhere (x86, or aarch64 without the override) lookout refuses f16 — checked here —
//! and the same f16 graph runs through tract's portable f16 code (`LOOKOUT_F16_EMULATED=1`, set
//! here around each load): the rewrite, the f32 boundary and the f32 sections are checked on every
//! target, tract's FP16 kernels only on the first.
//!
//! The bundled fp32 detectors (nanodet-g, centernet-mbv3) must find in f16 what they find in f32
//! (lookout's plan) on the real photos of `tests/fixtures/images`, and what onnxruntime found in
//! fp32 (`tests/fixtures/reference/{nanodet,centernet}`, `tests/fixtures/make_reference.py`):
//! same classes, IoU ≥ 0.9, |Δscore| ≤ 0.03. A detection within 0.03 of the score threshold on
//! one side may be missing on the other (rounding moves it across the threshold, not a bug).

mod common;

use std::path::Path;
use std::sync::Mutex;

use lookout::detect::{Detector, DetectorOptions, Manifest, ModelDetector, Precision};
use lookout::engine::{f16_native, F16_EMULATED_ENV};
use lookout::BBox;

const MIN_IOU: f32 = 0.9;
const MAX_DSCORE: f32 = 0.03;

/// Tests change `LOOKOUT_F16_EMULATED` around a load; one at a time.
static ENV: Mutex<()> = Mutex::new(());

/// The bundled photos f16 is compared with f32 on (`tests/fixtures/images`).
const PHOTOS: [&str; 3] = ["messi5.jpg", "fruits.jpg", "basketball1.png"];

/// (class, score, box) of one detection, whichever side it comes from.
type Det = (usize, f32, BBox);

fn load(dir: &str, precision: Precision, conf: Option<f32>) -> lookout::Result<ModelDetector> {
    let manifest = Manifest::load(common::repo().join("models").join(dir).join("model.toml"))?;
    let opts = DetectorOptions {
        threads: 1,
        conf,
        precision,
        ..Default::default()
    };
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let emulate = precision == Precision::F16 && !f16_native();
    if emulate {
        std::env::set_var(F16_EMULATED_ENV, "1");
    }
    let det = ModelDetector::load(manifest, &opts);
    if emulate {
        std::env::remove_var(F16_EMULATED_ENV);
    }
    det
}

/// Every detection clear of the threshold on either side has a partner on the other: same class,
/// IoU ≥ [`MIN_IOU`], |Δscore| ≤ [`MAX_DSCORE`]. Returns (matched, worst IoU, worst Δscore).
fn compare(what: &str, want: &[Det], got: &[Det], conf: f32) -> (usize, f32, f32) {
    let mut used = vec![false; got.len()];
    let (mut matched, mut worst_iou, mut worst_ds) = (0, 1.0f32, 0.0f32);
    let mut problems = Vec::new();
    for (c, s, b) in want {
        let best = got
            .iter()
            .enumerate()
            .filter(|(i, g)| !used[*i] && g.0 == *c)
            .map(|(i, g)| (i, g.2.iou(b), (g.1 - s).abs()))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        match best {
            Some((i, iou, ds)) if iou >= MIN_IOU && ds <= MAX_DSCORE => {
                used[i] = true;
                matched += 1;
                worst_iou = worst_iou.min(iou);
                worst_ds = worst_ds.max(ds);
            }
            _ if *s < conf + MAX_DSCORE => {}
            other => problems.push(format!(
                "class {c} {s:.3} {b:?} has no f16 partner (best: {other:?})"
            )),
        }
    }
    for (g, _) in got
        .iter()
        .zip(&used)
        .filter(|(g, u)| !**u && g.1 >= conf + MAX_DSCORE)
    {
        problems.push(format!(
            "extra f16 detection class {} {:.3} {:?}",
            g.0, g.1, g.2
        ));
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
    println!(
        "{what}: {matched}/{} matched, worst IoU {worst_iou:.4}, worst |Δscore| {worst_ds:.4}",
        want.len()
    );
    (matched, worst_iou, worst_ds)
}

fn dets(v: &[lookout::detect::Detection]) -> Vec<Det> {
    v.iter().map(|d| (d.class_id, d.score, d.bbox)).collect()
}

/// f16 against lookout's f32 plan on the bundled photos, and against onnxruntime's fp32 reference.
fn check_model(dir: &str, reference: &str, names: &[&str]) {
    let photos = common::fixture("images");
    let mut f32_det = load(dir, Precision::F32, None).expect("f32 load");
    let mut f16_det = load(dir, Precision::F16, None).unwrap_or_else(|e| panic!("f16 load: {e}"));
    println!("{dir}: FP16 arithmetic native: {}", f16_native());
    // The session boundary stays f32: nothing above engine/ sees f16.
    let e = f16_det.engine();
    for t in e.inputs().iter().chain(e.outputs()) {
        assert_eq!(
            t.dtype, "F32",
            "{dir}: f16 plan's {} is {}",
            t.name, t.dtype
        );
    }
    let conf = f32_det.manifest().thresholds.conf;
    let mut matched = 0;
    for name in names {
        let img = image::open(photos.join(name)).expect(name).to_rgb8();
        let a = f32_det.detect(&img).expect("f32 detect");
        let b = f16_det.detect(&img).expect("f16 detect");
        matched += compare(
            &format!("{dir} {name} f16 vs f32"),
            &dets(&a),
            &dets(&b),
            conf,
        )
        .0;
    }
    assert!(matched >= 3, "{dir}: only {matched} detections compared");

    // onnxruntime's fp32 detections on the reference case's pre-processed input.
    let case_dir = common::fixture("reference").join(reference);
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(case_dir.join("case.json")).expect("case.json"),
    )
    .expect("case.json parses");
    let ref_conf = case["conf"].as_f64().unwrap() as f32;
    let mut det = load(dir, Precision::F16, Some(ref_conf)).expect("f16 load");
    let input = image::open(case_dir.join("input.png")).unwrap().to_rgb8();
    let ours: Vec<Det> = det
        .detect_fitted(&input)
        .expect("f16 detect_fitted")
        .iter()
        .map(|d| (d.class_id, d.score, d.bbox))
        .collect();
    let want: Vec<Det> = case["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let b: Vec<f32> = d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (
                d["class_id"].as_u64().unwrap() as usize,
                d["score"].as_f64().unwrap() as f32,
                BBox::from([b[0], b[1], b[2], b[3]]),
            )
        })
        .collect();
    let (n, _, _) = compare(
        &format!("{dir} f16 vs onnxruntime fp32 ({reference})"),
        &want,
        &ours,
        ref_conf,
    );
    assert!(n >= 1, "{dir}: no reference detection compared");
}

/// Run where the CPU has FP16 arithmetic (a Pi 5, an Orin, qemu-aarch64 with `QEMU_CPU=max`:
/// docs/precision.md). Elsewhere tract's portable f16 path (`LOOKOUT_F16_EMULATED=1`) makes
/// nanodet-g 170× slower than f32 (benches/F16.md): in a debug build this one test took 31 minutes
/// of a CI run (which runs the suite twice). CenterNet (12×) checks the emulated path here; run this one with
/// `cargo test --test engine_f16 -- --ignored` where its minutes are wanted.
#[test]
#[cfg_attr(
    not(target_arch = "aarch64"),
    ignore = "minutes under x86's emulated f16; checked under qemu-aarch64 with FP16 kernels"
)]
fn nanodet_g_f16_matches_f32_and_onnxruntime() {
    check_model("nanodet-g", "nanodet", &PHOTOS);
}

/// One photo (11 detections) besides onnxruntime's case on x86: each f16 detection there takes
/// ~50 s in a test build (tract's portable f16 code; measured on a Xeon that even reports FP16
/// arithmetic), and CI runs this on every push. All three photos on aarch64 with FP16 arithmetic,
/// and with `-- --ignored` below.
#[test]
fn centernet_f16_matches_f32_and_onnxruntime() {
    let photos: &[&str] = if f16_native() && cfg!(target_arch = "aarch64") {
        &PHOTOS
    } else {
        &PHOTOS[..1]
    };
    check_model("centernet-mbv3", "centernet", photos);
}

/// CenterNet on all three photos wherever the test above takes one.
#[test]
#[ignore = "minutes under emulated f16: cargo test --test engine_f16 -- --ignored"]
fn centernet_f16_matches_f32_on_every_photo() {
    check_model("centernet-mbv3", "centernet", &PHOTOS);
}

#[test]
fn precision_values_are_checked_naming_the_key() {
    assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
    assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
    let e = "fp16".parse::<Precision>().unwrap_err();
    assert!(
        e.contains("\"fp16\"") && e.contains("\"f32\", \"f16\""),
        "{e}"
    );

    let cfg = lookout::config::Config::parse("[detector]\nprecision = \"f16\"\n").unwrap();
    assert_eq!(cfg.detector.precision, Precision::F16);
    let cfg = lookout::config::Config::parse("[detector]\n").unwrap();
    assert_eq!(cfg.detector.precision, Precision::F32, "f32 is the default");
    let e = lookout::config::Config::parse("[detector]\nprecision = \"half\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("detector.precision") && e.contains("f32") && e.contains("f16"),
        "{e}"
    );
}

#[test]
fn f16_is_refused_without_fp16_arithmetic_and_for_int8_models() {
    if f16_native() {
        println!("this CPU has FP16 arithmetic: f16 is not refused here");
    } else {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::remove_var(F16_EMULATED_ENV);
        let manifest = Manifest::load(common::repo().join("models/nanodet-g/model.toml")).unwrap();
        let opts = DetectorOptions {
            precision: Precision::F16,
            ..Default::default()
        };
        let e = ModelDetector::load(manifest, &opts)
            .unwrap_err()
            .to_string();
        for want in ["nanodet-g.onnx", "[detector] precision", "FP16", "\"f32\""] {
            assert!(e.contains(want), "{want:?} not in: {e}");
        }
    }
    // A quantized model: f16 is for float models.
    let int8 = Path::new("nanodet-g-int8");
    if !common::repo().join("models").join(int8).is_dir() {
        common::skip("models/nanodet-g-int8 absent");
        return;
    }
    let e = load("nanodet-g-int8", Precision::F16, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nanodet-g-int8") && e.contains("quantized") && e.contains("\"f32\""),
        "{e}"
    );
}

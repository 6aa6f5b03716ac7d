//! Every family's decode against onnxruntime: `tests/fixtures/make_reference.py` ran each model with
//! onnxruntime on a fixed pre-processed image and decoded with an independent Python decoder. Here
//! tract runs the same ONNX on the same pixels and lookout's decoder must find the same objects:
//! same labels, IoU ≥ 0.95, |Δscore| ≤ 0.02.

mod common;

use std::path::PathBuf;

use lookout::detect::{DetectorOptions, Manifest, ModelDetector, RawDetection};
use lookout::BBox;
use serde::Deserialize;

#[derive(Deserialize)]
struct RefDet {
    class_id: usize,
    label: String,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

#[derive(Deserialize)]
struct Case {
    family: String,
    manifest: String,
    model: String,
    conf: f32,
    iou: f32,
    max_detections: usize,
    detections: Vec<RefDet>,
}

const MIN_IOU: f32 = 0.95;
const MAX_DSCORE: f32 = 0.02;

fn cases() -> Vec<PathBuf> {
    let dir = common::fixture("reference");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("case.json"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    // LOOKOUT_REFERENCE_CASES=nanodet,ssd runs only those (the emulated aarch64 run, where each
    // full-size model costs minutes); the default is every case.
    if let Ok(only) = std::env::var("LOOKOUT_REFERENCE_CASES") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        v.retain(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| only.iter().any(|o| n == *o))
        });
        println!("LOOKOUT_REFERENCE_CASES: running {} case(s)", v.len());
    }
    v
}

/// Returns Err with a report when the detections disagree.
fn check_case(case_path: &std::path::Path) -> Result<Option<String>, String> {
    let dir = case_path.parent().unwrap();
    let case: Case = serde_json::from_str(&std::fs::read_to_string(case_path).unwrap())
        .map_err(|e| e.to_string())?;
    let model = common::repo().join(&case.model);
    if !model.is_file() {
        if case.model.starts_with("../shared") {
            common::skip(&format!(
                "{}: {} absent (../shared)",
                dir.display(),
                case.model
            ));
            return Ok(Some(format!(
                "SKIP {}: {} absent",
                dir.display(),
                case.model
            )));
        }
        return Err(format!("{}: model {} missing", dir.display(), case.model));
    }
    let mut manifest =
        Manifest::load(common::repo().join(&case.manifest)).map_err(|e| e.to_string())?;
    manifest.model_path = model;
    manifest.thresholds.max_detections = case.max_detections;
    assert_eq!(manifest.model.family.as_str(), case.family);
    let opts = DetectorOptions {
        threads: 1,
        conf: Some(case.conf),
        iou: Some(case.iou),
        ..Default::default()
    };
    let mut det = ModelDetector::load(manifest, &opts).map_err(|e| e.to_string())?;
    let input = image::open(dir.join("input.png"))
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let ours = det.detect_fitted(&input).map_err(|e| e.to_string())?;
    compare(&case, &ours).map(|summary| Some(format!("{}: {summary}", dir.display())))
}

fn compare(case: &Case, ours: &[RawDetection]) -> Result<String, String> {
    let mut used = vec![false; ours.len()];
    let mut problems = Vec::new();
    let mut matched = 0;
    for r in &case.detections {
        let rb = BBox::from(r.bbox);
        let best = ours
            .iter()
            .enumerate()
            .filter(|(i, o)| !used[*i] && o.class_id == r.class_id)
            .map(|(i, o)| (i, o.bbox.iou(&rb), (o.score - r.score).abs()))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, iou, ds)) if iou >= MIN_IOU && ds <= MAX_DSCORE => {
                used[i] = true;
                matched += 1;
            }
            // A reference box just above the threshold may fall just below it in tract: not a decode bug.
            _ if r.score < case.conf + MAX_DSCORE => {}
            other => problems.push(format!(
                "reference {} {:.3} {:?} has no match (best: {:?})",
                r.label,
                r.score,
                r.bbox,
                other.map(|(i, iou, ds)| (ours[i].score, iou, ds))
            )),
        }
    }
    for (o, _) in ours
        .iter()
        .zip(&used)
        .filter(|(o, u)| !**u && o.score >= case.conf + MAX_DSCORE)
    {
        problems.push(format!(
            "extra detection class {} score {:.3} {:?}",
            o.class_id, o.score, o.bbox
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "{matched}/{} reference detections matched",
            case.detections.len()
        ))
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn every_family_matches_onnxruntime() {
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "no reference fixtures under tests/fixtures/reference"
    );
    // The cases are independent (each loads its own model, one tract thread): shared over the
    // cores, in order of their folders in the report.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results: Vec<(usize, Result<Option<String>, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(cases.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(c) = cases.get(i) else { break done };
                        done.push((i, check_case(c)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    let mut families = std::collections::BTreeSet::new();
    for (i, result) in results {
        let c = &cases[i];
        match result {
            Ok(Some(msg)) => {
                println!("{msg}");
                if !msg.starts_with("SKIP") {
                    let case: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(c).unwrap()).unwrap();
                    families.insert(case["family"].as_str().unwrap_or("").to_string());
                }
            }
            Ok(None) => {}
            Err(e) => failures.push(format!("{}:\n{e}", c.display())),
        }
    }
    println!("families checked: {families:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

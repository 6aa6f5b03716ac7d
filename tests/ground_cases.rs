//! The grounding test set (tests/fixtures/ground/cases.toml): real photos, the real detector
//! (nanodet-g) and embedding model, hand-checked answers. Reports accuracy overall and per tag
//! and asserts a floor of 90 %.
#[path = "support/skip.rs"]
mod skip_switch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use lookout::detect::{Detector, DetectorOptions, ModelDetector};
use lookout::geometry::BBox;
use lookout::ground::{Grounder, Object, Status, DETECTOR_CONF};
use lookout::{imageio, models};
use serde::Deserialize;

/// Share of cases that must come out right.
const ACCURACY_FLOOR: f64 = 0.90;
const MIN_CASES: usize = 40;

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    image: String,
    instruction: String,
    status: Status,
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    boxes: Option<Vec<[f32; 4]>>,
    #[serde(default)]
    tags: Vec<String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn resolve(image: &str) -> PathBuf {
    match image.strip_prefix("shared:") {
        Some(rest) => root().join("../shared").join(rest),
        None => root().join("tests/fixtures").join(image),
    }
}

fn load_cases() -> Vec<Case> {
    let p = root().join("tests/fixtures/ground/cases.toml");
    let text = std::fs::read_to_string(&p).expect("cases.toml");
    toml::from_str::<Cases>(&text)
        .expect("cases.toml parses")
        .case
}

#[test]
fn the_test_set_is_well_formed() {
    let cases = load_cases();
    assert!(cases.len() >= MIN_CASES, "{} cases", cases.len());
    for c in &cases {
        match c.status {
            Status::Found => assert!(c.bbox.is_some(), "{}: found needs box", c.instruction),
            Status::Ambiguous => assert!(
                c.boxes.as_ref().is_some_and(|b| b.len() >= 2),
                "{}: ambiguous needs ≥ 2 boxes",
                c.instruction
            ),
            Status::NotFound => {}
        }
    }
    for tag in [
        "colour",
        "relation",
        "synonym",
        "ordinal",
        "not_found",
        "ambiguous",
    ] {
        assert!(
            cases.iter().any(|c| c.tags.iter().any(|t| t == tag)),
            "no case tagged {tag}"
        );
    }
}

#[test]
fn grounding_accuracy_on_real_images() {
    let cases = load_cases();
    let manifest = models::find(models::DEFAULT_MODEL).expect("default detector");
    let mut det = ModelDetector::load(
        manifest,
        &DetectorOptions {
            threads: 1,
            conf: Some(DETECTOR_CONF),
            iou: None,
        },
    )
    .expect("load detector");
    let mut grounder = Grounder::with_default_embedder(det.labels()).expect("grounder");
    let mut frames: HashMap<String, (image::RgbImage, Vec<Object>)> = HashMap::new();
    let (mut run, mut right, mut skipped) = (0usize, 0usize, 0usize);
    let mut per_tag: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in &cases {
        let path = resolve(&c.image);
        if !path.is_file() {
            skipped += 1;
            skip_switch::skip(&format!(
                "{} is absent ({:?})",
                path.display(),
                c.instruction
            ));
            continue;
        }
        let (img, objects) = frames.entry(c.image.clone()).or_insert_with(|| {
            let img = imageio::load_rgb(&path).expect("image");
            let objects = det
                .detect(&img)
                .expect("detect")
                .iter()
                .map(Object::from)
                .collect();
            (img, objects)
        });
        let r = grounder
            .ground(img, objects, &c.instruction)
            .expect("ground");
        let iou = |a: &BBox, b: &[f32; 4]| a.iou(&BBox::from(*b));
        let ok = r.status == c.status
            && match c.status {
                Status::Found => r
                    .target
                    .as_ref()
                    .is_some_and(|t| iou(&t.bbox, c.bbox.as_ref().unwrap()) >= 0.5),
                Status::Ambiguous => c
                    .boxes
                    .as_ref()
                    .unwrap()
                    .iter()
                    .all(|want| r.candidates.iter().any(|cand| iou(&cand.bbox, want) >= 0.5)),
                Status::NotFound => true,
            };
        run += 1;
        right += usize::from(ok);
        for t in &c.tags {
            let e = per_tag.entry(t.clone()).or_default();
            e.0 += usize::from(ok);
            e.1 += 1;
        }
        if !ok {
            failures.push(format!(
                "  {} {:?}: expected {:?}, got {}",
                c.image,
                c.instruction,
                c.status,
                serde_json::to_string(&r).unwrap()
            ));
        }
    }
    let acc = right as f64 / run.max(1) as f64;
    eprintln!(
        "grounding: {right}/{run} right ({:.1} %), {skipped} skipped; floor {:.0} %",
        100.0 * acc,
        100.0 * ACCURACY_FLOOR
    );
    for (t, (ok, n)) in &per_tag {
        eprintln!("  {t:<10} {ok}/{n}");
    }
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(run > 0, "no case could run");
    assert!(
        acc >= ACCURACY_FLOOR,
        "accuracy {:.1} % below the floor",
        100.0 * acc
    );
}

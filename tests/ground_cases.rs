//! The grounding test sets: real photos, the real detector (nanodet-g) and embedding model,
//! hand-checked answers. Two sets, reported on their own:
//! - tests/fixtures/ground/cases.toml: the cases the grounding was tuned on;
//! - tests/fixtures/ground/untuned.toml: free phrasings written before the issue-18 tuning, on
//!   photos the grounding had never been run on (README.md there has the before/after figures).
//!
//! Each set prints its accuracy overall and per tag and its failures.
#[path = "support/skip.rs"]
mod skip_switch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use lookout::detect::{Detector, DetectorOptions, ModelDetector};
use lookout::geometry::BBox;
use lookout::ground::{Grounder, Object, Status, DETECTOR_CONF};
use lookout::{imageio, models};
use serde::Deserialize;

/// Share of cases that must come out right (issue 18: ≥ 90 % on all cases).
const ACCURACY_FLOOR: f64 = 0.90;
const MIN_CASES: usize = 40;
const MIN_UNTUNED_CASES: usize = 25;

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

/// The file an `image` names; "VIDEO@SECONDS" names a video (the frame is cut by [`frame_of`]).
fn resolve(image: &str) -> PathBuf {
    let file = image.split('@').next().unwrap_or(image);
    match file.strip_prefix("shared:") {
        Some(rest) => root().join("../shared").join(rest),
        None => root().join("tests/fixtures").join(file),
    }
}

/// The image to run on: the file itself, or for "VIDEO@SECONDS" the frame at that time, cut with
/// ffmpeg into `tmp` (the cases on video frames need ffmpeg, as the capture tests do).
fn frame_of(image: &str, tmp: &std::path::Path) -> Result<PathBuf, String> {
    let path = resolve(image);
    if !path.is_file() {
        return Err(format!("{} is absent", path.display()));
    }
    let Some((_, at)) = image.split_once('@') else {
        return Ok(path);
    };
    let out = tmp.join(format!(
        "{}_{at}.png",
        path.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let ok = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-ss", at, "-i"])
        .arg(&path)
        .args(["-frames:v", "1"])
        .arg(&out)
        .status()
        .map_err(|e| format!("ffmpeg (apt-get install ffmpeg) for {image}: {e}"))?;
    if !ok.success() || !out.is_file() {
        return Err(format!("ffmpeg could not cut the frame {image}"));
    }
    Ok(out)
}

fn load_cases(file: &str) -> Vec<Case> {
    let p = root().join("tests/fixtures/ground").join(file);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    toml::from_str::<Cases>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .case
}

fn check_well_formed(cases: &[Case], min: usize, tags: &[&str]) {
    assert!(cases.len() >= min, "{} cases", cases.len());
    for c in cases {
        match c.status {
            Status::Found => assert!(c.bbox.is_some(), "{}: found needs box", c.instruction),
            Status::Ambiguous => assert!(
                c.boxes.as_ref().is_some_and(|b| b.len() >= 2),
                "{}: ambiguous needs ≥ 2 boxes",
                c.instruction
            ),
            Status::NotFound => {}
        }
        assert!(
            resolve(&c.image).is_file() || c.image.starts_with("shared:"),
            "{}: committed image missing",
            c.image
        );
    }
    for tag in tags {
        assert!(
            cases.iter().any(|c| c.tags.iter().any(|t| t == tag)),
            "no case tagged {tag}"
        );
    }
}

#[test]
fn the_test_sets_are_well_formed() {
    check_well_formed(
        &load_cases("cases.toml"),
        MIN_CASES,
        &[
            "colour",
            "relation",
            "synonym",
            "ordinal",
            "not_found",
            "ambiguous",
        ],
    );
    check_well_formed(
        &load_cases("untuned.toml"),
        MIN_UNTUNED_CASES,
        &[
            "vocabulary",
            "distance",
            "near_miss",
            "ordinal",
            "ambiguous",
            "not_found",
            "vehicle",
            "container",
        ],
    );
    check_well_formed(&load_cases("heldout.toml"), 8, &["ambiguous", "not_found"]);
}

/// What one run over a set gave.
struct Outcome {
    run: usize,
    right: usize,
    /// "image: instruction" of the cases that came out wrong.
    failed: Vec<String>,
    /// Cases not run (their photo is in ../shared, absent here).
    skipped: usize,
}

impl Outcome {
    fn accuracy(&self) -> f64 {
        self.right as f64 / self.run.max(1) as f64
    }
}

fn evaluate(name: &str, cases: &[Case]) -> Outcome {
    let manifest = models::find(models::GROUND_MODEL).expect("grounding's default detector");
    let mut det = ModelDetector::load(
        manifest,
        &DetectorOptions {
            threads: 1,
            conf: Some(DETECTOR_CONF),
            iou: None,
            ..Default::default()
        },
    )
    .expect("load detector");
    let mut grounder = Grounder::with_default_embedder(det.labels()).expect("grounder");
    let mut frames: HashMap<String, (image::RgbImage, Vec<Object>)> = HashMap::new();
    let (mut run, mut right, mut skipped) = (0usize, 0usize, 0usize);
    let mut per_tag: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut failed = Vec::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    for c in cases {
        let path = match frame_of(&c.image, tmp.path()) {
            Ok(p) => p,
            Err(why) => {
                skipped += 1;
                skip_switch::skip(&format!("{why} ({:?})", c.instruction));
                continue;
            }
        };
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
            failed.push(format!("{}: {}", c.image, c.instruction));
            failures.push(format!(
                "  {} {:?}: expected {:?}, got {}",
                c.image,
                c.instruction,
                c.status,
                serde_json::to_string(&r).unwrap()
            ));
        }
    }
    let out = Outcome {
        run,
        right,
        failed,
        skipped,
    };
    eprintln!(
        "grounding [{name}]: {right}/{run} right ({:.1} %), {skipped} skipped",
        100.0 * out.accuracy()
    );
    for (t, (ok, n)) in &per_tag {
        eprintln!("  {t:<11} {ok}/{n}");
    }
    for f in &failures {
        eprintln!("{f}");
    }
    assert!(run > 0, "[{name}] no case could run");
    out
}

/// Asserts a set's bar, and that nothing outside `known_misses` failed (a case that passed once
/// and fails now is a regression even when the share stays above the bar).
fn assert_bar(name: &str, out: &Outcome, bar: f64, known_misses: &[&str]) {
    let new: Vec<&String> = out
        .failed
        .iter()
        .filter(|f| !known_misses.contains(&f.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "[{name}] cases that used to pass fail: {new:?}"
    );
    // The bar is a share of the whole set: with cases skipped (../shared absent) the share of
    // the rest says nothing about it, and the regression check above is what still holds.
    if out.skipped > 0 {
        eprintln!("[{name}] bar not checked: {} cases skipped", out.skipped);
        return;
    }
    assert!(
        out.accuracy() >= bar,
        "[{name}] accuracy {:.1} % below the bar {:.0} %",
        100.0 * out.accuracy(),
        100.0 * bar
    );
}

/// Tuned cases that fail today (none).
const TUNED_MISSES: &[&str] = &[];
/// Untuned cases that fail after the tuning: "on the left" cannot tell the white horse (the one
/// a person sees on the left) from the brown one behind it further left; the answer should be
/// `ambiguous`, the code picks the leftmost centre.
const UNTUNED_MISSES: &[&str] = &["ground/horses.jpg: the horse on the left"];

#[test]
fn grounding_accuracy_on_the_tuned_cases() {
    let out = evaluate("tuned", &load_cases("cases.toml"));
    assert_bar("tuned", &out, ACCURACY_FLOOR, TUNED_MISSES);
}

#[test]
fn grounding_accuracy_on_the_untuned_cases() {
    // 12/30 before the tuning, 29/30 after (README.md); no longer blind since the tuning looked
    // at its failures
    let out = evaluate("untuned", &load_cases("untuned.toml"));
    assert_bar("untuned", &out, ACCURACY_FLOOR, UNTUNED_MISSES);
}

#[test]
fn grounding_accuracy_on_all_cases() {
    let mut all = load_cases("cases.toml");
    all.extend(load_cases("untuned.toml"));
    all.extend(load_cases("heldout.toml"));
    let out = evaluate("all", &all);
    let known: Vec<&str> = [TUNED_MISSES, UNTUNED_MISSES, HELD_OUT_MISSES].concat();
    assert_bar("all", &out, ACCURACY_FLOOR, &known);
}

/// Held-out cases that fail: an ambulance's white is only a preference, so the white van passes
/// for one.
const HELD_OUT_MISSES: &[&str] = &["ground/vtest_70s.jpg: follow the ambulance"];

#[test]
fn grounding_accuracy_on_the_held_out_cases() {
    // written after the tuning; 9/14 in its one blind run, 13/14 after fixes made looking at its
    // failures (README.md)
    let out = evaluate("held-out", &load_cases("heldout.toml"));
    assert_bar("held-out", &out, ACCURACY_FLOOR, HELD_OUT_MISSES);
}

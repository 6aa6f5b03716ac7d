//! Bad input gets one clear error naming the file and the problem, and never a panic.

mod common;

use std::path::Path;

use lookout::detect::{DetectorOptions, Manifest, ModelDetector};
use lookout::models;

fn default_manifest() -> Manifest {
    models::find(models::DEFAULT_MODEL).expect("the default model ships with the repository")
}

/// A copy of the default model folder in a temp dir, so tests can break it.
fn model_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let m = default_manifest();
    let src = m.path.parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).unwrap();
        }
    }
    let toml = tmp.path().join("model.toml");
    (tmp, toml)
}

fn load_err(toml: &Path) -> String {
    let m = match Manifest::load(toml) {
        Ok(m) => m,
        Err(e) => return e.to_string(),
    };
    match ModelDetector::load(m, &DetectorOptions::default()) {
        Ok(_) => panic!("{} loaded but should not have", toml.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_onnx_is_named() {
    let (_tmp, toml) = model_copy();
    let m = Manifest::load(&toml).unwrap();
    let bytes = std::fs::read(&m.model_path).unwrap();
    std::fs::write(&m.model_path, &bytes[..bytes.len() / 3]).unwrap();
    let e = load_err(&toml);
    println!("{e}");
    assert!(
        e.contains(m.model_path.file_name().unwrap().to_str().unwrap()),
        "{e}"
    );
    assert!(
        e.contains("not a valid ONNX") || e.contains("cannot load"),
        "{e}"
    );
}

#[test]
fn empty_and_missing_onnx_are_named() {
    let (_tmp, toml) = model_copy();
    let m = Manifest::load(&toml).unwrap();
    std::fs::write(&m.model_path, b"").unwrap();
    let e = load_err(&toml);
    assert!(e.contains("empty"), "{e}");
    std::fs::remove_file(&m.model_path).unwrap();
    let e = load_err(&toml);
    assert!(
        e.contains(m.model_path.file_name().unwrap().to_str().unwrap()),
        "{e}"
    );
}

#[test]
fn not_onnx_at_all() {
    let (_tmp, toml) = model_copy();
    let m = Manifest::load(&toml).unwrap();
    std::fs::write(
        &m.model_path,
        b"this is a text file, not a protobuf \xff\xfe\x00\x01",
    )
    .unwrap();
    let e = load_err(&toml);
    assert!(e.contains(m.model_path.to_str().unwrap()), "{e}");
}

fn edit_manifest(toml: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(toml).unwrap();
    assert!(text.contains(from), "manifest has no `{from}`");
    std::fs::write(toml, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn manifest_input_shape_that_disagrees_with_the_model() {
    let (_tmp, toml) = model_copy();
    let m = Manifest::load(&toml).unwrap();
    let s = &m.input.shape;
    let wrong: Vec<usize> = s.iter().map(|d| if *d > 3 { d + 32 } else { *d }).collect();
    edit_manifest(&toml, &format!("{s:?}"), &format!("{wrong:?}"));
    let e = load_err(&toml);
    println!("{e}");
    assert!(
        e.contains("input shape mismatch") || e.contains("disagrees"),
        "{e}"
    );
}

#[test]
fn manifest_labels_that_disagree_with_the_model_outputs() {
    let (_tmp, toml) = model_copy();
    let text = std::fs::read_to_string(&toml).unwrap();
    // Replace the labels table with three names: the model has 80 classes.
    let start = text.find("[labels]").unwrap();
    let end = text[start + 1..]
        .find("\n[")
        .map(|i| start + 1 + i)
        .unwrap_or(text.len());
    let patched = format!(
        "{}[labels]\nnames = [\"a\", \"b\", \"c\"]\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(&toml, patched).unwrap();
    let m = Manifest::load(&toml).unwrap();
    if m.model.family.as_str() == "centernet" {
        return; // in-graph decode: class count is not visible in the output shape
    }
    let e = load_err(&toml);
    println!("{e}");
    assert!(e.contains("disagrees"), "{e}");
}

#[test]
fn manifest_errors_name_the_key() {
    let (_tmp, toml) = model_copy();
    edit_manifest(&toml, "[input]", "[input]\ncolour_order = \"rgb\"");
    let e = load_err(&toml);
    println!("{e}");
    assert!(
        e.contains("model.toml") && e.contains("colour_order"),
        "{e}"
    );

    let (_tmp, toml) = model_copy();
    let m = Manifest::load(&toml).unwrap();
    edit_manifest(
        &toml,
        &format!("family = \"{}\"", m.model.family.as_str()),
        "family = \"retinanet\"",
    );
    let e = load_err(&toml);
    println!("{e}");
    assert!(e.contains("retinanet"), "{e}");
}

#[test]
fn corrupt_image_in_a_folder_is_reported_and_the_run_continues() {
    let dir = tempfile::tempdir().unwrap();
    let good = common::fixture("images/messi5.jpg");
    std::fs::copy(&good, dir.path().join("a_good.jpg")).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.path().join("b_truncated.jpg"), &bytes[..600]).unwrap();
    std::fs::write(dir.path().join("c_not_an_image.png"), b"hello").unwrap();
    std::fs::copy(&good, dir.path().join("d_good.jpg")).unwrap();
    let out = common::lookout()
        .args(["detect", "--json"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "partial failure exits 1");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["detections"].is_array());
    assert!(lines[1]["error"].as_str().unwrap().len() > 5);
    assert!(lines[2]["error"]
        .as_str()
        .unwrap()
        .contains("c_not_an_image.png"));
    assert!(lines[3]["detections"].is_array());
    assert!(stderr.contains("b_truncated.jpg") && stderr.contains("c_not_an_image.png"));
}

#[test]
fn missing_input_and_unknown_model_exit_cleanly() {
    let out = common::lookout()
        .args(["detect", "/nonexistent/x.jpg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.jpg"));
    let out = common::lookout()
        .args(["detect", "--model", "no-such-model", "x.jpg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-model"));
}

#[test]
fn wrong_size_fitted_input_is_an_error_not_a_panic() {
    let m = default_manifest();
    let mut det = ModelDetector::load(m, &DetectorOptions::default()).unwrap();
    let img = image::RgbImage::new(17, 5);
    assert!(det.detect_fitted(&img).is_err());
    use lookout::Detector;
    assert!(det.detect(&image::RgbImage::new(0, 0)).is_err());
    // Extreme aspect ratios still work.
    det.detect(&image::RgbImage::new(4000, 1)).unwrap();
    det.detect(&image::RgbImage::new(1, 3000)).unwrap();
}

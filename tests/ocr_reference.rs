//! lookout's OCR (tract, src/ocr/) against the reference, rapidocr 3.10.0 on onnxruntime with the same
//! models (tests/fixtures/ocr/reference.json, made by tests/fixtures/ocr/make_reference.py), on 11
//! real photos with text from the Debian package opencv-doc (installed by .ci/install-deps); the
//! JPEG ones as PIL decodes them (PNG copies in tests/fixtures/ocr/photos/).
//!
//! Each reference line is matched to the lookout line whose box (the polygon's bounds) overlaps it
//! most. The bar: the recognised strings equal on ≥ 95 % of the reference's lines, and the
//! boxes of matched lines at IoU ≥ 0.9 — here on ≥ 95 % of lines too, with lookout reading no more
//! than 5 % extra lines.
#[path = "support/skip.rs"]
mod skip_switch;

use std::path::{Path, PathBuf};

use lookout::ocr::{OcrManifest, Reader, ReaderOptions, TextLine};
use lookout::BBox;
use serde_json::Value;

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn iou(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let area = |r: &BBox| (r.x2 - r.x1).max(0.0) * (r.y2 - r.y1).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn reference_lines(img: &Value) -> Vec<TextLine> {
    img["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| serde_json::from_value(l.clone()).expect("a line"))
        .collect()
}

fn sha256(p: &Path) -> String {
    lookout::models::sha256_file(p).expect("sha256")
}

#[test]
fn reads_the_photos_as_rapidocr_does() {
    let fixture = root().join("tests/fixtures/ocr/reference.json");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).expect("reference.json"))
            .expect("json");
    let images = r["images"].as_array().expect("images");
    let missing: Vec<&str> = images
        .iter()
        .map(|i| i["file"].as_str().unwrap())
        .filter(|f| !Path::new(DATA).join(f).is_file())
        .collect();
    if !missing.is_empty() {
        skip_switch::skip(&format!(
            "{missing:?} absent from {DATA} (apt-get install opencv-doc)"
        ));
        return;
    }
    let m = OcrManifest::load(&root().join("models/ppocr-v6")).expect("models/ppocr-v6");
    let mut reader = Reader::load(&m, &ReaderOptions::default()).expect("load the OCR models");

    let (mut total, mut same_text, mut good_box, mut extra) = (0usize, 0usize, 0usize, 0usize);
    let mut ious = Vec::new();
    let mut diffs = Vec::new();
    for img in images {
        let file = img["file"].as_str().unwrap();
        let source = Path::new(DATA).join(file);
        assert_eq!(
            sha256(&source),
            img["sha256"].as_str().unwrap(),
            "{}: not the photo the reference was made from",
            source.display()
        );
        // JPEG photos are read as PIL decoded them (the reference's lossless PNG copy): JPEG
        // decoders differ by a few levels, which is not what this test measures
        let path = match img["decoded_png"].as_str() {
            Some(png) => {
                let p = root().join(png);
                assert_eq!(
                    sha256(&p),
                    img["decoded_png_sha256"].as_str().unwrap(),
                    "{png}"
                );
                p
            }
            None => source,
        };
        let rgb = lookout::imageio::load_rgb(&path).expect("photo");
        let ours = reader.read(&rgb).expect("read");
        let theirs = reference_lines(img);
        let mut used = vec![false; ours.len()];
        for t in &theirs {
            total += 1;
            let best = ours
                .iter()
                .enumerate()
                .filter(|(i, _)| !used[*i])
                .map(|(i, o)| (i, iou(&o.bbox(), &t.bbox())))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let Some((i, v)) = best else {
                diffs.push(format!("{file}: missing {:?}", t.text));
                continue;
            };
            used[i] = true;
            ious.push(v);
            if v >= 0.9 {
                good_box += 1;
            }
            if ours[i].text == t.text {
                same_text += 1;
            } else {
                diffs.push(format!(
                    "{file}: {:?} (rapidocr {:.3}) read as {:?} ({:.3}), box IoU {v:.3}",
                    t.text, t.score, ours[i].text, ours[i].score
                ));
            }
        }
        for (i, o) in ours.iter().enumerate() {
            if !used[i] {
                extra += 1;
                diffs.push(format!("{file}: extra {:?} ({:.3})", o.text, o.score));
            }
        }
    }
    ious.sort_by(f32::total_cmp);
    let mean = ious.iter().sum::<f32>() / ious.len().max(1) as f32;
    eprintln!(
        "OCR vs rapidocr: {total} lines, text equal on {same_text} ({:.1} %), box IoU ≥ 0.9 on {good_box} ({:.1} %), \
         IoU min {:.3} mean {mean:.3}, {extra} extra",
        100.0 * same_text as f32 / total as f32,
        100.0 * good_box as f32 / total as f32,
        ious.first().copied().unwrap_or(0.0),
    );
    for d in &diffs {
        eprintln!("  {d}");
    }
    assert!(
        total >= 50,
        "the fixture should hold ≥ 50 lines, has {total}"
    );
    assert!(
        same_text as f32 >= 0.95 * total as f32,
        "text equal on {same_text} of {total} lines (< 95 %)"
    );
    assert!(
        good_box as f32 >= 0.95 * total as f32,
        "box IoU ≥ 0.9 on {good_box} of {total} lines (< 95 %)"
    );
    assert!(
        extra as f32 <= 0.05 * total as f32,
        "{extra} lines rapidocr did not read"
    );
}

#[test]
fn reads_inside_a_box_in_source_pixels() {
    let path = Path::new(DATA).join("sudoku.png");
    if !path.is_file() {
        skip_switch::skip(&format!(
            "{} absent (apt-get install opencv-doc)",
            path.display()
        ));
        return;
    }
    let m = OcrManifest::load(&root().join("models/ppocr-v6")).expect("models/ppocr-v6");
    let mut reader = Reader::load(&m, &ReaderOptions::default()).expect("load the OCR models");
    let rgb = lookout::imageio::load_rgb(&path).expect("photo");
    let whole = reader.read(&rgb).expect("read");
    // the newspaper's "SUDOKU" heading, read again from a box a little larger than its line
    let target = whole
        .iter()
        .find(|l| l.text == "SUDOKU")
        .unwrap_or_else(|| panic!("no SUDOKU heading in {whole:?}"));
    let b = target.bbox();
    let region = BBox {
        x1: b.x1 - 15.0,
        y1: b.y1 - 15.0,
        x2: b.x2 + 15.0,
        y2: b.y2 + 15.0,
    };
    let inside = reader.read_in_box(&rgb, &region).expect("read in box");
    let same = inside
        .iter()
        .find(|l| l.text == "SUDOKU")
        .unwrap_or_else(|| panic!("no SUDOKU inside {region:?}: {inside:?}"));
    assert!(
        iou(&same.bbox(), &b) > 0.8,
        "{:?} vs {b:?}: polygons not in the photo's pixels",
        same.bbox()
    );
    for l in &inside {
        let lb = l.bbox();
        assert!(
            lb.x1 >= region.x1 - 1.0
                && lb.x2 <= region.x2 + 1.0
                && lb.y1 >= region.y1 - 1.0
                && lb.y2 <= region.y2 + 1.0,
            "{l:?} outside {region:?}"
        );
    }
    // a box off the image reads nothing rather than failing
    let off = BBox {
        x1: -50.0,
        y1: -50.0,
        x2: -1.0,
        y2: -1.0,
    };
    assert!(reader
        .read_in_box(&rgb, &off)
        .expect("off-image box")
        .is_empty());
}

#[test]
fn model_files_are_the_ones_the_manifest_names() {
    // provenance: the sha256s in models/ppocr-v6/model.toml (equal to rapidocr 3.10.0's
    // MODEL_LICENSES.md for the ONNX files; models/tools/fetch_ocr.py --check does the same)
    let dir = root().join("models/ppocr-v6");
    let text = std::fs::read_to_string(dir.join("model.toml")).expect("model.toml");
    let t: toml::Table = toml::from_str(&text).expect("toml");
    let sums = t["sha256"].as_table().expect("[sha256]");
    assert_eq!(sums.len(), 4);
    for (file, want) in sums {
        assert_eq!(&sha256(&dir.join(file)), want.as_str().unwrap(), "{file}");
    }
}

#[test]
fn odd_images_read_nothing_or_fail_cleanly() {
    let m = OcrManifest::load(&root().join("models/ppocr-v6")).expect("models/ppocr-v6");
    let mut reader = Reader::load(&m, &ReaderOptions::default()).expect("load the OCR models");
    for (w, h) in [(1, 1), (1, 40), (300, 8), (0, 0)] {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 200, 200]));
        assert!(
            reader.read(&img).expect("a plain image").is_empty(),
            "{w}×{h}"
        );
    }
    // a 4096×1 strip would grow to gigabytes in rapidocr's bounds and padding steps: refused
    let strip = image::RgbImage::new(4096, 1);
    let e = reader.read(&strip).unwrap_err().to_string();
    assert!(e.contains("4096×1"), "{e}");
}

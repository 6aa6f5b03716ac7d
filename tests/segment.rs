//! Person masks by tract against the reference (onnxruntime on the same ONNX through
//! `models/tools/ref/segment.py`, `tests/fixtures/make_segment.py`) on real photos with people:
//! every mask's IoU with the reference is at least 0.95 (the acceptance line).

use std::path::Path;

use lookout::geometry::BBox;
use lookout::segment::{Mask, PersonSegmenter};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    image: String,
    #[serde(rename = "box")]
    bbox: Option<[f32; 4]>,
    area: u64,
    mask: Mask,
}

const MIN_IOU: f64 = 0.95;

#[test]
fn masks_equal_the_onnxruntime_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/fixtures/segment/reference.json")).unwrap();
    let r: Reference = serde_json::from_str(&text).unwrap();
    let seg = PersonSegmenter::find(root.join("models/selfie-seg").to_str().unwrap(), 1).unwrap();
    let mut photos = std::collections::BTreeSet::new();
    let mut worst = 1.0f64;
    for c in &r.cases {
        let img = lookout::imageio::load_rgb(&root.join(&c.image)).unwrap();
        let b = c.bbox.map(BBox::from);
        let got = seg.mask(&img, b.as_ref()).unwrap();
        assert_eq!(c.mask.area(), c.area, "{}: fixture RLE", c.image);
        let iou = got.iou(&c.mask);
        println!(
            "{} {:?}: area {} (reference {}), IoU {iou:.4}",
            c.image,
            c.bbox,
            got.area(),
            c.area
        );
        assert!(
            iou >= MIN_IOU,
            "{} {:?}: IoU {iou:.4} < {MIN_IOU}",
            c.image,
            c.bbox
        );
        // a box's mask stays inside the box
        if let (Some(b), Some(mb)) = (b, got.bbox()) {
            assert!(mb.x1 >= b.x1.floor() && mb.x2 <= b.x2.ceil(), "{}", c.image);
            assert!(mb.y1 >= b.y1.floor() && mb.y2 <= b.y2.ceil(), "{}", c.image);
        }
        worst = worst.min(iou);
        photos.insert(c.image.clone());
    }
    println!(
        "{} masks on {} photos, lowest IoU {worst:.4}",
        r.cases.len(),
        photos.len()
    );
    assert!(photos.len() >= 5);
}

#[test]
fn a_mask_round_trips_through_its_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seg = PersonSegmenter::find(root.join("models/selfie-seg").to_str().unwrap(), 1).unwrap();
    let img = lookout::imageio::load_rgb(&root.join("tests/fixtures/images/messi5.jpg")).unwrap();
    let m = seg
        .mask(&img, Some(&BBox::from([59.0, 65.0, 459.0, 338.0])))
        .unwrap();
    assert!(m.area() > 10_000, "messi is a big person: {}", m.area());
    let j = serde_json::to_value(&m).unwrap();
    assert_eq!(j["size"], serde_json::json!([342, 548]));
    let back: Mask = serde_json::from_value(j).unwrap();
    assert_eq!(back, m);
}

mod common;

fn ground(args: &[&str]) -> serde_json::Value {
    let out = common::lookout()
        .arg("ground")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn ground_returns_a_person_mask_in_source_pixels() {
    let img = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/basketball1.png");
    let v = ground(&[img.to_str().unwrap(), "the person on the left"]);
    let t = &v["target"];
    assert_eq!(t["label"], "person", "{v}");
    let m: Mask = serde_json::from_value(t["mask"].clone()).expect("target.mask");
    assert_eq!((m.width(), m.height()), (640, 480));
    let b: [f32; 4] = serde_json::from_value(t["box"].clone()).unwrap();
    let mb = m.bbox().expect("a non-empty mask");
    assert!(
        mb.x1 >= b[0].floor()
            && mb.x2 <= b[2].ceil()
            && mb.y1 >= b[1].floor()
            && mb.y2 <= b[3].ceil()
    );
    // the man fills about half of his box
    let fill = m.area() as f32 / ((b[2] - b[0]) * (b[3] - b[1]));
    assert!(
        (0.3..0.9).contains(&fill),
        "mask fills {fill:.2} of the box"
    );

    let none = ground(&[
        img.to_str().unwrap(),
        "the person on the left",
        "--segmenter",
        "none",
    ]);
    assert_eq!(none["target"]["label"], "person");
    assert!(none["target"].get("mask").is_none(), "{none}");
}

//! The person segmenter by tract, 1 thread: the model alone (`probabilities`) and a whole person
//! mask (cut, resize, model, sampling back). Prints one line per measurement (median of 20 after 3
//! warm-ups); `benches/segment_ort.py` times onnxruntime on the same ONNX and input, and
//! `benches/SEGMENT.md` holds both.
//!
//!     cargo bench --profile dev --bench segment        (the dev profile: see benches/SEGMENT.md)

use std::path::Path;
use std::time::Instant;

use lookout::geometry::BBox;
use lookout::segment::{Cut, PersonSegmenter};

fn median_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut v: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seg = PersonSegmenter::find(root.join("models/selfie-seg").to_str().unwrap(), 1)
        .expect("models/selfie-seg");
    let img = lookout::imageio::load_rgb(&root.join("tests/fixtures/images/basketball1.png"))
        .expect("bundled photo");
    let b = BBox::from([35.0, 84.0, 170.0, 475.0]);
    let cut = Cut::around(Some(&b), img.dimensions());
    let model = median_ms(|| {
        seg.probabilities(&img, cut).unwrap();
    });
    let mask = median_ms(|| {
        seg.mask(&img, Some(&b)).unwrap();
    });
    println!("selfie-seg tract 1 thread: probabilities {model:.2} ms, person mask {mask:.2} ms");
}

//! Criterion benches: every installed model end to end on a real photo, plus the pre-processing
//! and NMS stages alone. The onnxruntime comparison lives in `benches/compare_ort.py`, which
//! writes `benches/RESULTS.md`.

use criterion::{criterion_group, criterion_main, Criterion};
use lookout::detect::preprocess::Preprocessor;
use lookout::detect::{Detector, DetectorOptions, ModelDetector};

fn photo() -> image::RgbImage {
    lookout::imageio::load_rgb(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/images/messi5.jpg"
    )))
    .expect("bundled photo")
}

fn models(c: &mut Criterion) {
    let img = photo();
    let mut g = c.benchmark_group("detect");
    g.sample_size(10);
    for m in lookout::models::list().into_iter().flatten() {
        let name = format!("{}/{}", m.model.name, m.model.variant);
        let Ok(mut det) = ModelDetector::load(
            m,
            &DetectorOptions {
                threads: 1,
                ..Default::default()
            },
        ) else {
            continue;
        };
        g.bench_function(&name, |b| b.iter(|| det.detect(&img).unwrap()));
    }
    g.finish();
}

fn stages(c: &mut Criterion) {
    let img = photo();
    let Ok(m) = lookout::models::find(lookout::models::DEFAULT_MODEL) else {
        return;
    };
    let mut pre = Preprocessor::new(&m);
    c.bench_function("preprocess/messi5-to-input", |b| b.iter(|| pre.run(&img)));
}

criterion_group!(benches, models, stages);
criterion_main!(benches);

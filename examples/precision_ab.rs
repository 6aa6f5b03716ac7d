//! f32 against f16 inference time of one detector, interleaved in one process (the two plans
//! alternate run by run, so both see the same load): what `precision = "f16"` buys on a board with
//! FP16 arithmetic (Pi 5, Orin). On a CPU without it f16 is refused unless `LOOKOUT_F16_EMULATED=1`,
//! and its time is then tract's emulation, not a board's.
//!
//!     cargo run --release --example precision_ab -- [MODEL] [THREADS] [ROUNDS] [IMAGE]
//!
//! Defaults: nanodet-g, 1 thread, 20 rounds, tests/fixtures/images/messi5.jpg. Prints one JSON
//! object: the CPU as tract sees it, the load average before and after, and per precision the
//! median and minimum inference ms and the detections found.

use lookout::detect::{Detector, DetectorOptions, ModelDetector, Precision};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("nanodet-g", |s| s.as_str());
    let threads: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let image = args
        .get(4)
        .map_or("tests/fixtures/images/messi5.jpg", |s| s.as_str());
    let img = lookout::imageio::load_rgb(std::path::Path::new(image))?;
    let load_before = loadavg();
    let mut dets: Vec<(Precision, ModelDetector, Vec<f64>, usize)> = Vec::new();
    for precision in [Precision::F32, Precision::F16] {
        let opts = DetectorOptions {
            threads,
            precision,
            ..Default::default()
        };
        let mut d = ModelDetector::load(lookout::models::find(model)?, &opts)?;
        let n = d.detect(&img)?.len(); // warm-up
        dets.push((precision, d, Vec::new(), n));
    }
    for _ in 0..rounds.max(1) {
        for (_, d, times, _) in dets.iter_mut() {
            d.detect(&img)?;
            times.push(d.last_timings().inference_ms);
        }
    }
    let per: Vec<serde_json::Value> = dets
        .into_iter()
        .map(|(p, _, times, n)| {
            let min = times.iter().copied().fold(f64::INFINITY, f64::min);
            serde_json::json!({"precision": p.as_str(), "median_inference_ms": median(times),
                "min_inference_ms": min, "detections": n})
        })
        .collect();
    let report = serde_json::json!({
        "model": model, "threads": threads, "rounds": rounds, "image": image,
        "fp16_native": lookout::engine::f16_native(),
        "build": lookout::BUILD_PROFILE,
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "results": per,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

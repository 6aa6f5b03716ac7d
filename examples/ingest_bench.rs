//! Does the event store keep up with 4 cameras at 10 fps, and what does it cost the frame loop?
//! (benches/STORE.md, "Ingest and the frame loop".)
//!
//! `cargo run --example ingest_bench -- [SECONDS] [ROUNDS] [DETECT_MS]` (default 30 s, 2 rounds,
//! 20 ms). Four real frame loops (`pipeline::run`, the demo's rules, tracker, events and scene
//! descriptions) run at once, each on a paced 10 fps source of the bundled clip's 768×576
//! frames and a scripted detector that burns DETECT_MS of CPU per frame (standing in for
//! inference, so the store's threads compete for the cores as they would on a device) and
//! reports people walking across the demo's path zone and lamp-post line. Rounds alternate
//! without the store and with one `Ingest` shared by the four (`StoreSink::shared`, crops,
//! MiniLM embeddings, 2 s + 2 s clips), and report per round: the loops' latency (capture to
//! end of analysis, the 1 s stats windows' means), the store's lag (how long `Ingest::sync`
//! waits for everything queued to be committed, asked every 0.5 s) and what it dropped.
//! `INGEST_BENCH=noclips` and/or `nocrops` leave those parts of the store out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use lookout::capture::{CaptureError, Frame, FrameSource};
use lookout::config::{Config, StoreConfig};
use lookout::detect::{Detection, Detector};
use lookout::geometry::BBox;
use lookout::pipeline::{Handle, Output, RunOptions, Sink, StoreSink};
use lookout::store::Ingest;

const CAMERAS: usize = 4;
const FPS: f64 = 10.0;

/// The bundled clip's frames at `FPS`, paced like a camera.
struct Paced {
    frames: Arc<Vec<RgbImage>>,
    next: u64,
    start: Instant,
}

impl FrameSource for Paced {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let due = self.start + Duration::from_secs_f64(self.next as f64 / FPS);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = self.next;
        self.next += 1;
        Ok(Some(Frame {
            id,
            ts: lookout::util::unix_now(),
            image: self.frames[id as usize % self.frames.len()].clone(),
            source: "paced".into(),
        }))
    }
    fn describe(&self) -> String {
        "paced bundled frames".into()
    }
}

/// People entering at the left every 1.5 s and walking right over 6 s (about four at a time),
/// after `burn` of CPU.
struct Scripted {
    n: u64,
    burn: Duration,
    labels: Vec<Arc<str>>,
}

impl Detector for Scripted {
    fn detect(&mut self, img: &RgbImage) -> lookout::Result<Vec<Detection>> {
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < self.burn {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (w, h) = (img.width() as f32, img.height() as f32);
        let mut out = Vec::new();
        let first = self.n.saturating_sub(60) / 15;
        for p in first..=self.n / 15 {
            let age = self.n as f32 - (p * 15) as f32;
            if !(0.0..60.0).contains(&age) {
                continue;
            }
            let cx = 0.05 * w + age / 60.0 * 0.9 * w;
            let cy = (0.45 + 0.05 * (p % 3) as f32) * h;
            out.push(Detection {
                label: self.labels[0].clone(),
                class_id: 0,
                score: 0.6 + 0.1 * (p % 3) as f32,
                bbox: BBox::from_cxcywh(cx, cy, 50.0, 140.0),
            });
        }
        self.n += 1;
        Ok(out)
    }
    fn name(&self) -> &str {
        "scripted"
    }
    fn labels(&self) -> &[Arc<str>] {
        &self.labels
    }
}

/// Keeps the stats windows' latencies (a collector of every output would also keep the frames
/// shared with the store, and hold the store's in-flight frame slots for ever).
#[derive(Clone, Default)]
struct Latencies(Arc<Mutex<Vec<f64>>>);

impl Sink for Latencies {
    fn send(&mut self, out: &Output) -> lookout::Result<()> {
        if let Output::Stats(s) = out {
            if s.frames_processed > 0 {
                self.0.lock().unwrap().push(s.latency_ms);
            }
        }
        Ok(())
    }
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95), v[v.len() - 1])
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn round(frames: &Arc<Vec<RgbImage>>, secs: u64, burn: Duration, with_store: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut store_cfg = StoreConfig::at(tmp.path().join("store"));
    // INGEST_BENCH=noclips / nocrops: leave that part out, to see what each costs.
    let knobs = std::env::var("INGEST_BENCH").unwrap_or_default();
    if !knobs.contains("noclips") {
        store_cfg.clip_pre_s = 2.0;
        store_cfg.clip_post_s = 2.0;
    }
    store_cfg.crops = !knobs.contains("nocrops");
    let ingest = with_store.then(|| Arc::new(Ingest::start(&store_cfg).unwrap()));
    // The store's lag, asked every half second.
    let stop = Arc::new(AtomicBool::new(false));
    let lags = Arc::new(Mutex::new(Vec::new()));
    let monitor = ingest.clone().map(|ing| {
        let (stop, lags) = (stop.clone(), lags.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let t = Instant::now();
                let ok = ing.sync(Duration::from_secs(20));
                let ms = t.elapsed().as_secs_f64() * 1e3;
                lags.lock()
                    .unwrap()
                    .push(if ok { ms } else { f64::INFINITY });
            }
        })
    });
    let load_before = load();
    let started = Instant::now();
    let mut loops = Vec::new();
    let mut collected = Vec::new();
    for cam in 0..CAMERAS {
        let mut cfg = Config::load(Some(std::path::Path::new("samples/demo.toml")), None).unwrap();
        cfg.camera.name = format!("cam{cam}");
        cfg.pipeline.stats_interval = 1.0;
        cfg.store = with_store.then(|| store_cfg.clone());
        let collect = Latencies::default();
        collected.push(collect.clone());
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(collect)];
        let mut handle = Handle::default();
        if let Some(ing) = &ingest {
            sinks.push(Box::new(StoreSink::shared(ing.clone(), &cfg.camera.name)));
            handle.clips = ing.clips();
        }
        let source = Box::new(Paced {
            frames: frames.clone(),
            next: 0,
            start: Instant::now(),
        });
        let det: Box<dyn Detector> = Box::new(Scripted {
            n: 0,
            burn,
            labels: vec!["person".into()],
        });
        let opts = RunOptions {
            max_frames: Some(secs * FPS as u64),
            drop_oldest: true,
            vlm: None,
        };
        loops.push(std::thread::spawn(move || {
            lookout::pipeline::run(&cfg, source, vec![det], sinks, opts, handle).unwrap()
        }));
    }
    let summaries: Vec<_> = loops.into_iter().map(|l| l.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    if let Some(m) = monitor {
        m.join().unwrap();
    }
    let wall = started.elapsed().as_secs_f64();
    // The first two windows are warm-up (the embedding model loads, tracks start).
    let mut latency = Vec::new();
    for c in &collected {
        latency.extend(c.0.lock().unwrap().iter().skip(2));
    }
    let mean = latency.iter().sum::<f64>() / latency.len().max(1) as f64;
    let (p50, p95, max) = quantiles(latency);
    let (processed, dropped, events, alerts) = summaries.iter().fold((0, 0, 0, 0), |a, s| {
        (
            a.0 + s.frames_processed,
            a.1 + s.frames_dropped,
            a.2 + s.events,
            a.3 + s.alerts,
        )
    });
    println!(
        "{:<8} wall {wall:.1} s, {processed} frames ({dropped} dropped), {events} events, {alerts} alerts; \
         latency mean {mean:.1} ms, window p50 {p50:.1} / p95 {p95:.1} / max {max:.1} ms; load {load_before} → {}",
        if with_store { "store" } else { "no store" },
        load()
    );
    if let Some(ing) = ingest {
        let (l50, l95, lmax) = quantiles(lags.lock().unwrap().clone());
        println!(
            "         store lag (sync) p50 {l50:.0} / p95 {l95:.0} / max {lmax:.0} ms; {:?}",
            ing.stats()
        );
        drop(ing);
        let st = lookout::store::Store::open_read(tmp.path().join("store"))
            .and_then(|s| s.stats())
            .unwrap();
        let clips = std::fs::read_dir(tmp.path().join("store/media"))
            .map(|d| {
                d.flatten()
                    .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
                    .filter(|f| f.file_name().to_string_lossy().contains("-clip-"))
                    .count()
            })
            .unwrap_or(0);
        println!(
            "         stored: {} objects, {} alerts, {} scenes, {} events, {clips} clips, {} bytes charged",
            st.objects, st.alerts, st.scenes, st.events, st.bytes
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (secs, rounds, burn) = (arg(1, 30), arg(2, 2), arg(3, 20));
    let mut paths: Vec<_> = std::fs::read_dir("samples/vtest")
        .expect("run from the repository root")
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    let frames: Arc<Vec<RgbImage>> = Arc::new(
        paths
            .iter()
            .take(40)
            .map(|p| image::open(p).unwrap().to_rgb8())
            .collect(),
    );
    println!(
        "{CAMERAS} cameras × {FPS} fps, {secs} s a round, detector burning {burn} ms a frame, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // What one clip frame costs the recorder thread (the same encoder and quality).
    let t = Instant::now();
    for _ in 0..10 {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75)
            .encode_image(&frames[0])
            .unwrap();
    }
    println!(
        "one {}×{} JPEG (quality 75): {:.1} ms",
        frames[0].width(),
        frames[0].height(),
        t.elapsed().as_secs_f64() * 100.0
    );
    for _ in 0..rounds {
        round(&frames, secs, Duration::from_millis(burn), false);
        round(&frames, secs, Duration::from_millis(burn), true);
    }
}

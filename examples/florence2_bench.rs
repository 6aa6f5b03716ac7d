//! Times Florence-2 stages under tract on one model folder; `benches/vlm_florence2.py` runs it next
//! to onnxruntime on the same files.
//!
//! ```text
//! cargo run --release --example florence2_bench -- DIR [--variant _int8] [--threads 1] [--iters 3] [--tokens 16]
//! ```
//! Prints one JSON object: load_s, vision_ms, encoder_ms, first_step_ms (decoder_model),
//! decode_ms_per_token (decoder_with_past_model), tokens, token_ids, peak_rss_mb.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lookout::vlm::florence2;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    // As the lookout binary runs (src/engine/heap.rs); LOOKOUT_DEFAULT_HEAP=1 for glibc's defaults.
    lookout::engine::keep_freed_memory();
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let (mut variant, mut threads, mut iters, mut tokens) =
        (String::new(), 1usize, 3usize, 16usize);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--variant" => variant = val("--variant")?,
            "--threads" => threads = val("--threads")?.parse()?,
            "--iters" => iters = val("--iters")?.parse()?,
            "--tokens" => tokens = val("--tokens")?.parse()?,
            _ if a.starts_with("--") => bail!("unknown option {a}"),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let dir = dir.context(
        "usage: florence2_bench DIR [--variant V] [--threads N] [--iters K] [--tokens T]",
    )?;
    let iters = iters.max(1);

    let t = Instant::now();
    let m = florence2::load(&dir, &variant, threads)?;
    let load_s = t.elapsed().as_secs_f64();

    // The fixture script's test image when present (same input as the onnxruntime side).
    let img_path = dir.join("reference/image.png");
    let img = if img_path.exists() {
        image::open(&img_path)?.to_rgb8()
    } else {
        image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        })
    };
    let pix = m.pixel_values(&img);
    let ids = m.prompt_ids("<CAPTION>")?;

    let (mut vision, mut encoder, mut first, mut per_token) = (vec![], vec![], vec![], vec![]);
    let mut generated = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        let feats = m.vision(pix.clone())?;
        vision.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let enc = m.encode(&feats, &ids)?;
        encoder.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let mut first_ms = None;
        let opts = lookout::vlm::GenerateOptions {
            max_new_tokens: tokens,
            time_budget: None,
        };
        let (trace, decode, steps) = m.decode_greedy(&enc, &opts, t, false, &mut |_| {
            first_ms.get_or_insert(t.elapsed().as_secs_f64() * 1e3);
            Ok(())
        })?;
        first.push(first_ms.unwrap_or(f64::NAN));
        if steps > 0 {
            per_token.push(decode.as_secs_f64() * 1e3 / steps as f64);
        }
        generated = trace.tokens;
    }
    let out = serde_json::json!({
        "runtime": "tract",
        "variant": variant,
        "threads": threads,
        "load_s": load_s,
        "vision_ms": median(vision),
        "encoder_ms": median(encoder),
        "first_step_ms": median(first),
        "decode_ms_per_token": if per_token.is_empty() { f64::NAN } else { median(per_token) },
        "tokens": generated.len(),
        "token_ids": generated,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{out}");
    Ok(())
}

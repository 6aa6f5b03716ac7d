//! `lookout describe` and `lookout ask`: one answer from a vision-language model about one image.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use lookout::vlm::{self, GenerateOptions, Variant};

/// The prompt `describe` uses when none is given.
pub const DEFAULT_PROMPT: &str = "Describe this image.";

#[derive(clap::Args)]
pub struct VlmArgs {
    /// Model folder (transformers.js layout: config.json, tokenizer.json, onnx/) or the name of a
    /// pulled model (`lookout models pull smolvlm-256m`).
    #[arg(long, value_name = "DIR")]
    pub vlm: String,
    /// Stop after this many new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Stop generating after this many seconds (checked between tokens).
    #[arg(long, value_name = "SECS")]
    pub time_budget: Option<f64>,
    /// Which files to load: fp32, int8, uint8 or quantized (onnx/<graph>_<variant>.onnx).
    #[arg(long, default_value = "fp32")]
    pub variant: String,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print one JSON object (text, token ids, prompt tokens, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub vlm: VlmArgs,
    /// The instruction.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    pub prompt: String,
    /// Image file.
    pub image: PathBuf,
}

#[derive(clap::Args)]
pub struct AskArgs {
    #[command(flatten)]
    pub vlm: VlmArgs,
    /// Image file.
    pub image: PathBuf,
    /// The question about the image.
    pub question: String,
}

/// A folder as given, else a pulled model of that name in the model folders.
pub fn resolve_model_dir(name_or_dir: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(name_or_dir);
    if p.join("config.json").is_file() {
        return Ok(p.to_path_buf());
    }
    for dir in lookout::models::search_dirs() {
        let candidate = dir.join(name_or_dir);
        if candidate.join("config.json").is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "{name_or_dir}: not a model folder (no config.json) and no pulled model of that name \
         (try `lookout models pull smolvlm-256m`)"
    )
}

pub fn describe(a: DescribeArgs) -> anyhow::Result<ExitCode> {
    answer(&a.vlm, &a.image, &a.prompt)
}

pub fn ask(a: AskArgs) -> anyhow::Result<ExitCode> {
    answer(&a.vlm, &a.image, &a.question)
}

fn answer(a: &VlmArgs, image: &Path, prompt: &str) -> anyhow::Result<ExitCode> {
    let dir = resolve_model_dir(&a.vlm)?;
    let variant: Variant = a.variant.parse()?;
    let img = lookout::imageio::load_rgb(image)?;
    let t0 = Instant::now();
    let mut model = vlm::load(&dir, variant, a.threads.max(1))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        time_budget: a.time_budget.map(Duration::from_secs_f64),
    };
    let mut out = std::io::stdout().lock();
    let json = a.json;
    let mut write_err = None;
    let g = model
        .generate(&img, prompt, &opts, &mut |piece| {
            if !json && write_err.is_none() {
                if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                    write_err = Some(e);
                }
            }
        })
        .with_context(|| format!("{} on {}", dir.display(), image.display()))?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    if json {
        writeln!(out, "{}", serde_json::to_string(&g)?)?;
    } else {
        writeln!(out)?;
        eprintln!(
            "{} ({}): load {load_ms:.0} ms, vision {:.0} ms, prefill {:.0} ms ({} prompt tokens), {} new tokens at {:.1} ms/token, stop: {:?}",
            model.name(),
            a.variant,
            g.timings.vision_ms,
            g.timings.prefill_ms,
            g.prompt_tokens,
            g.token_ids.len(),
            g.timings.decode_ms_per_token,
            g.stop
        );
    }
    Ok(ExitCode::SUCCESS)
}

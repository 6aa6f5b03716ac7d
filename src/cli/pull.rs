//! `lookout models pull`: fetch a published VLM folder with sha256 checks.

use std::path::PathBuf;
use std::process::ExitCode;

use lookout::vlm::pull::{self, FileOutcome, PullOptions, RemoteModel};
use lookout::vlm::Variant;

#[derive(clap::Subcommand)]
pub enum ModelsCmd {
    /// Download a model folder (smolvlm-256m, florence-2-base) from Hugging Face or a mirror.
    Pull(PullArgs),
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// Model name: smolvlm-256m or florence-2-base (not needed with --manifest).
    pub name: Option<String>,
    /// Folder to fill (default: models/<name>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Graph files to fetch: fp32, int8, uint8 or quantized.
    #[arg(long, default_value = "fp32")]
    pub variant: String,
    /// Server with Hugging Face's paths ({mirror}/{repo}/resolve/{revision}/{file}); default
    /// $LOOKOUT_MODEL_MIRROR or https://huggingface.co.
    #[arg(long)]
    pub mirror: Option<String>,
    /// A JSON model manifest (name, repo, revision, common, variants) instead of a built-in name.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// One JSON object per file on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ModelsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCmd::Pull(a) => pull_cmd(a),
    }
}

fn pull_cmd(a: PullArgs) -> anyhow::Result<ExitCode> {
    let model: RemoteModel = match (&a.manifest, &a.name) {
        (Some(p), _) => RemoteModel::from_json_file(p)?,
        (None, Some(n)) => pull::catalog()
            .into_iter()
            .find(|m| &m.name == n)
            .ok_or_else(|| pull::PullError::UnknownModel(n.clone()))?,
        (None, None) => {
            anyhow::bail!("name a model (smolvlm-256m, florence-2-base) or give --manifest FILE")
        }
    };
    let variant: Variant = a.variant.parse()?;
    let opts = PullOptions {
        dir: a
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("models").join(&model.name)),
        base_url: a.mirror.clone().unwrap_or_else(pull::base_url_from_env),
        suffix: variant.suffix(),
        progress: !a.json,
    };
    eprintln!(
        "pulling {} ({}, variant {}) from {} into {}",
        model.name,
        model.repo,
        a.variant,
        opts.base_url,
        opts.dir.display()
    );
    let reports = pull::pull(&model, &opts)?;
    for r in &reports {
        if a.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            let check = match (&r.outcome, r.verified_against_published) {
                (FileOutcome::Skipped, _) => "not on the server (optional)",
                (_, true) => "sha256 matches the published hash",
                (_, false) => "sha256 recorded on first use (no published hash)",
            };
            eprintln!(
                "  {:<40} {:>12} bytes  {:?}: {check}",
                r.path, r.bytes, r.outcome
            );
        }
    }
    eprintln!("done: {}", opts.dir.display());
    Ok(ExitCode::SUCCESS)
}

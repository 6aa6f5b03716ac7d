//! `lookout models`: list the installed detector models, or pull a VLM (`models pull`, in pull.rs).

use std::io::Write;
use std::process::ExitCode;

use lookout::models;

use super::pull::{self, ModelsCmd};

#[derive(clap::Args)]
pub struct ModelsArgs {
    /// One JSON object per model.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<ModelsCmd>,
}

pub fn run(a: ModelsArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        Some(cmd) => pull::run(cmd),
        None => list(a.json),
    }
}

fn list(json: bool) -> anyhow::Result<ExitCode> {
    let mut so = std::io::stdout().lock();
    if !json {
        writeln!(
            so,
            "{:<22} {:<11} {:<14} {:<18} {:>8}  description",
            "name", "family", "variant", "input", "MB"
        )?;
    }
    for m in models::list() {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        let size = std::fs::metadata(&m.model_path)
            .map(|md| md.len() as f64 / 1e6)
            .ok();
        if json {
            let v = serde_json::json!({
                "name": m.model.name, "family": m.model.family, "variant": m.model.variant,
                "input": m.input.shape, "file": m.model_path, "size_mb": size,
                "labels": m.labels.len(), "description": m.model.description,
                "source": m.source.package, "licence": m.source.licence,
            });
            writeln!(so, "{v}")?;
        } else {
            writeln!(
                so,
                "{:<22} {:<11} {:<14} {:<18} {:>8}  {}",
                m.model.name,
                m.model.family.as_str(),
                m.model.variant,
                format!("{:?}", m.input.shape),
                size.map_or("missing".into(), |s| format!("{s:.2}")),
                m.model.description
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

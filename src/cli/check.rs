//! `lookout check`: everything a run would read — the board profile merged under the config, the
//! `[mqtt]` table, the model manifests, zone and line geometry, the source URI — checked at once.
//! Prints the resolved config, then every problem (each naming its key); exits 1 if there is any.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Config file (TOML). Default: the embedded demo (samples/demo.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Board profile (boards/<NAME>.toml) under the config.
    #[arg(long)]
    pub board: Option<String>,
    /// Print the result as one JSON object (resolved config and problems).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let demo;
    let path = match &a.config {
        Some(p) => p.clone(),
        None => {
            demo = super::demo_config_file()?;
            demo.1.clone()
        }
    };
    let checked = lookout::config::check(Some(&path), a.board.as_deref(), true)?;
    let shown = a.config.clone().unwrap_or_else(|| "(embedded demo)".into());
    // The resolved config is printed: a camera password in the source URL is not.
    let mut resolved = checked.merged.clone();
    if let Some(toml::Value::Table(cam)) = resolved.get_mut("camera") {
        if let Some(toml::Value::String(src)) = cam.get_mut("source") {
            *src = lookout::capture::redact(src);
        }
    }
    if a.json {
        let v = serde_json::json!({
            "config": shown,
            "board_file": checked.board_file,
            "resolved": resolved,
            "ok": checked.issues.is_empty(),
            "errors": checked.issues.iter().map(|i| serde_json::json!({"key": i.key, "reason": i.reason})).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!("# resolved config: {}", shown.display());
        if let Some(b) = &checked.board_file {
            println!("# board profile underneath: {}", b.display());
        }
        print!("{}", toml::to_string(&resolved)?);
    }
    if checked.issues.is_empty() {
        eprintln!("{}: ok", shown.display());
        return Ok(ExitCode::SUCCESS);
    }
    for i in checked.issues.iter() {
        eprintln!("error: {}: {i}", shown.display());
    }
    eprintln!(
        "{}: {} problem(s) found",
        shown.display(),
        checked.issues.len()
    );
    Ok(ExitCode::from(1))
}

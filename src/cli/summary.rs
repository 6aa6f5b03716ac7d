//! `lookout summary`: a short narrative of a time window with timestamps ("14:02:10–14:05:03
//! plaza: 2 people; 2 people entered the path zone, one stayed 3 min 10 s"), from the store.

use std::process::ExitCode;

use lookout::store::summarise;

use super::events::{open, since, StoreArgs};

#[derive(clap::Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub at: StoreArgs,
    /// The window: the last 90s, 15m, 2h, 3d, 1w.
    #[arg(long, default_value = "1h")]
    pub since: String,
    #[arg(long)]
    pub camera: Option<String>,
    /// One JSON object: the text and the counts behind it.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SummaryArgs) -> anyhow::Result<ExitCode> {
    let store = open(&a.at)?;
    let now = lookout::util::unix_now();
    let from = since(Some(&a.since))?.unwrap_or(now);
    let s = summarise(&store, from, now, a.camera.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("{}", s.text);
    }
    Ok(ExitCode::SUCCESS)
}

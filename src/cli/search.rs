//! `lookout search "red car at the gate"`: stored objects, alerts and scene descriptions ranked
//! by the query's exact filters and the meaning of its words (MiniLM), each with its time,
//! camera, crop or snapshot and why it matched.

use std::process::ExitCode;

use lookout::embed::{Embedder, EmbeddingManifest};
use lookout::store::{hits_json, search, Kind, SearchOptions};

use super::events::{line, open, since, StoreArgs};

#[derive(clap::Args)]
pub struct SearchArgs {
    /// What to look for, in words ("a person at the door this morning").
    pub query: String,
    #[command(flatten)]
    pub at: StoreArgs,
    /// Only the last stretch of time: 90s, 15m, 2h, 3d, 1w.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub camera: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Kinds to rank, comma-separated: object, alert, scene.
    #[arg(long, default_value = "object,alert,scene", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Embedding model (name in the model folders or a path); `none` for filters only.
    #[arg(long, default_value = lookout::embed::DEFAULT_EMBEDDING_MODEL)]
    pub model: String,
    /// One JSON object: the parsed query and the hits.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SearchArgs) -> anyhow::Result<ExitCode> {
    let store = open(&a.at)?;
    let mut embedder = if a.model == "none" {
        None
    } else {
        match EmbeddingManifest::find(&a.model)
            .map_err(lookout::Error::from)
            .and_then(|m| Embedder::load(&m))
        {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("warning: {e}; ranking by filters and time only");
                None
            }
        }
    };
    let kinds = a
        .kind
        .iter()
        .map(|k| k.parse::<Kind>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = SearchOptions {
        since: since(a.since.as_deref())?,
        camera: a.camera.clone(),
        kinds,
        limit: a.limit.clamp(1, 1000),
        ..Default::default()
    };
    let (parsed, hits) = search(&store, &a.query, embedder.as_mut(), &opts)?;
    if a.json {
        println!("{}", hits_json(&store, &a.query, &parsed, &hits));
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        eprintln!("nothing stored matches");
    }
    for (i, h) in hits.iter().enumerate() {
        println!("{:>2}. {}", i + 1, line(&h.record));
        println!("    why: {}", h.why.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

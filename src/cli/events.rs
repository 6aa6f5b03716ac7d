//! `lookout events`: what the event store holds — tracked objects and alerts (or any kind) in a
//! time window, filtered by camera, label and zone; `--stats` for counts and sizes. Also where
//! `search` and `summary` find their store (`--store`, `--config`'s `[store] path`, or
//! `./lookout-store`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use lookout::store::{clock, datetime, parse_since, Kind, Record, Store};

/// Where the store is: shared by `events`, `search` and `summary`.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Event store folder (what `lookout run --store` or `[store] path` wrote).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Read the store folder from this config's `[store] path`.
    #[arg(long, conflicts_with = "store")]
    pub config: Option<PathBuf>,
}

/// The store folder per `--store`, `--config`, or `./lookout-store`.
pub fn store_dir(a: &StoreArgs) -> anyhow::Result<PathBuf> {
    if let Some(s) = &a.store {
        return Ok(s.clone());
    }
    if let Some(c) = &a.config {
        let cfg = lookout::config::Config::load(Some(c), None)?;
        return cfg
            .store
            .map(|s| s.path)
            .with_context(|| format!("{}: no [store] table", c.display()));
    }
    Ok(Path::new("lookout-store").to_path_buf())
}

pub fn open(a: &StoreArgs) -> anyhow::Result<Store> {
    Ok(Store::open_read(store_dir(a)?)?)
}

/// `--since` as a Unix time (`None`: everything).
pub fn since(s: Option<&str>) -> anyhow::Result<Option<f64>> {
    Ok(match s {
        Some(s) => Some(lookout::util::unix_now() - parse_since(s)?),
        None => None,
    })
}

#[derive(clap::Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub at: StoreArgs,
    /// Only the last stretch of time: 90s, 15m, 2h, 3d, 1w.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub camera: Option<String>,
    /// Object label (or one of an alert's labels).
    #[arg(long)]
    pub label: Option<String>,
    /// Zone the object entered (or the alert's zone or rule).
    #[arg(long)]
    pub zone: Option<String>,
    /// Kinds to list, comma-separated: object, alert, scene, event.
    #[arg(long, default_value = "object,alert", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// At most this many (the newest).
    #[arg(long)]
    pub limit: Option<usize>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Counts and sizes instead of records.
    #[arg(long)]
    pub stats: bool,
}

/// One readable line for a record.
pub fn line(r: &Record) -> String {
    let when = if r.end_ts - r.ts >= 1.0 {
        format!("{}–{}", datetime(r.ts), clock(r.end_ts))
    } else {
        datetime(r.ts)
    };
    let what = match r.kind {
        Kind::Object => {
            let mut s = format!("{} #{}", r.label, r.track_id.unwrap_or(0));
            if let Some(c) = &r.colour {
                s = format!("{c} {s}");
            }
            for z in r.zone_names() {
                s.push_str(&format!(" [{z}]"));
            }
            if let Some(d) = &r.direction {
                s.push_str(&format!(", {d}"));
            }
            s
        }
        Kind::Alert => format!(
            "ALERT {} ({})",
            r.message.as_deref().unwrap_or(&r.text),
            r.rule.as_deref().unwrap_or("")
        ),
        Kind::Scene | Kind::Event => r.message.clone().unwrap_or_else(|| r.text.clone()),
    };
    let media = r
        .crop
        .as_deref()
        .or(r.snapshot.as_deref())
        .map(|p| format!("  {p}"))
        .unwrap_or_default();
    format!("{when}  {:<8} {:<6} {what}{media}", r.camera, r.kind.name())
}

pub fn run(a: EventsArgs) -> anyhow::Result<ExitCode> {
    let store = open(&a.at)?;
    if a.stats {
        let s = store.stats()?;
        if a.json {
            println!("{}", serde_json::to_string(&s)?);
        } else {
            println!(
                "{}: {} objects, {} alerts, {} scene descriptions, {} events; {} bytes held ({} in the file, {} in JPEGs)",
                store.dir().display(),
                s.objects,
                s.alerts,
                s.scenes,
                s.events,
                s.bytes,
                s.file_bytes,
                s.media_bytes
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let kinds: Vec<Kind> = a
        .kind
        .iter()
        .map(|k| k.parse::<Kind>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()
        .context("--kind")?;
    let since = since(a.since.as_deref())?.unwrap_or(f64::NEG_INFINITY);
    let mut recs: Vec<Record> = store
        .records(&kinds, since, f64::INFINITY)?
        .into_iter()
        .filter(|r| a.camera.as_deref().is_none_or(|c| r.camera == c))
        .filter(|r| a.label.as_deref().is_none_or(|l| r.labels().contains(&l)))
        .filter(|r| {
            a.zone
                .as_deref()
                .is_none_or(|z| r.zone_names().contains(&z) || r.rule.as_deref() == Some(z))
        })
        .collect();
    if let Some(n) = a.limit {
        let skip = recs.len().saturating_sub(n);
        recs.drain(..skip);
    }
    for r in &recs {
        if a.json {
            let mut v = serde_json::to_value(r)?;
            if let Some(m) = v.as_object_mut() {
                m.remove("raw");
                for k in ["crop", "snapshot"] {
                    if let Some(p) = r
                        .crop
                        .as_ref()
                        .filter(|_| k == "crop")
                        .or(r.snapshot.as_ref().filter(|_| k == "snapshot"))
                    {
                        m.insert(
                            format!("{k}_path"),
                            store.dir().join(p).display().to_string().into(),
                        );
                    }
                }
            }
            println!("{v}");
        } else {
            println!("{}", line(r));
        }
    }
    if !a.json && recs.is_empty() {
        eprintln!("nothing stored matches");
    }
    Ok(ExitCode::SUCCESS)
}

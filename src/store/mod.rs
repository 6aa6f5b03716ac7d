//! The on-device event store ("recall"): every event, alert, scene description and VLM text a run
//! produces, with the best crop and a snapshot of each tracked object, kept on disk within an age
//! and a size bound, so that `lookout events`, `lookout search` and `lookout summary` can answer
//! after the fact what MQTT subscribers only saw go by.
//!
//! - [`db`]: the redb file (records, a search index, a ledger for retention) and its retention;
//! - [`record`]: what one stored item is, and its compact search-index entry;
//! - [`ingest`]: the store's own thread, fed through a bounded channel: it batches commits,
//!   cuts crops, names colours and embeds text, so none of it runs in the frame loop;
//! - [`query`]: a query's exact filters (colours, labels, zones, cameras, time words);
//! - [`search`]: ranking stored items by the meaning of a query plus its filters;
//! - [`summary`]: a short narrative with timestamps over a time window;
//! - [`recall`]: the JSON of searches and summaries, for the CLI, MQTT, HTTP and the
//!   `summary` topic;
//! - [`clip`]: pre/post-roll video clips around alerts (MP4 through ffmpeg, else MJPEG).
//!
//! ## Why redb and not SQLite
//! redb is already a dependency (the MQTT spool), pure Rust (no C library to cross-compile for
//! the boards), crash-safe by construction (copy-on-write B-trees, a commit is one fsync'd
//! root swap: a `kill -9` loses at most the transaction in flight and the next open repairs
//! nothing by hand), and since 4.3 lets several processes share a file (`MultiWriter`): one
//! `lookout run` per camera writes while `lookout search` reads. What SQLite would add (SQL,
//! FTS5) we do not need: the queries are a time-ordered scan with exact filters and a vector
//! dot product, which a key-value table ordered by insertion does directly.
//!
//! ## Media
//! JPEG crops and snapshots are files in `media/<camera>/` beside `store.redb`, written before
//! the record naming them is committed (a crash leaves at worst an unreferenced file, removed on
//! the next open), so the database stays small and a crop can be opened by path.

pub mod clip;
pub mod db;
pub mod ingest;
pub mod query;
pub mod recall;
pub mod record;
pub mod search;
pub mod summary;

use std::path::PathBuf;

pub use clip::{ClipDone, ClipFormat, Clips};
pub use db::{Store, StoreStats};
pub use ingest::{Incoming, Ingest, IngestStats};
pub use query::{parse_since, ParsedQuery};
pub use recall::{hits_json, Recall, SearchRequest};
pub use record::{Kind, Record, ZoneVisit};
pub use search::{search, Hit, SearchOptions};
pub use summary::{summarise, Summary};

/// The database file inside a store folder.
pub const DB_FILE: &str = "store.redb";
/// The folder of crops and snapshots inside a store folder.
pub const MEDIA_DIR: &str = "media";

/// What can go wrong with a store, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("{}: {reason}", path.display())]
    Db { path: PathBuf, reason: String },
    /// A file beside it (a crop, a snapshot, the folder) could not be written or removed.
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    /// There is no store in that folder (reading never creates one).
    #[error("{}: no event store here (run `lookout run` with [store] or --store first)", path.display())]
    Missing { path: PathBuf },
    /// A `--since` value or query that cannot be read.
    #[error("{0}")]
    Query(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::Other(e.to_string())
    }
}

/// Local time of day of a Unix time as `HH:MM:SS` (the device's time zone, as people read it).
pub fn clock(ts: f64) -> String {
    let (h, m, s) = local_hms(ts);
    format!("{h:02}:{m:02}:{s:02}")
}

/// Local date and time as `YYYY-MM-DD HH:MM:SS`.
pub fn datetime(ts: f64) -> String {
    let tm = local_tm(ts);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn local_hms(ts: f64) -> (i32, i32, i32) {
    let tm = local_tm(ts);
    (tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// The C library's broken-down local time (honours `TZ` and /etc/localtime).
pub(crate) fn local_tm(ts: f64) -> libc::tm {
    let t = ts.floor() as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack frame; an all-zero tm
    // is a valid value of the plain C struct.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    }
}

/// Unix time of local midnight starting the day `ts` falls in.
pub(crate) fn local_midnight(ts: f64) -> f64 {
    let tm = local_tm(ts);
    ts.floor() - (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) as f64
}

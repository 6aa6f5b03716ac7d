//! Answering questions about a store from a running process: the one place the JSON of a search
//! and of a summary is made, so `lookout search --json`, `cmd/search` over MQTT, `/api/search`
//! and the periodic `summary` topic say the same thing.
//!
//! A [`Recall`] shares the running store (the writer's own [`Store`]: redb lets one process open
//! a file once) and loads the embedding model at the first search, so a device that is never
//! asked pays nothing. Requests are bounded: the query's length ([`MAX_QUERY_BYTES`]) and the
//! number of hits ([`MAX_LIMIT`]).

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::db::Store;
use super::query::{parse_since, ParsedQuery};
use super::search::{search, Hit, SearchOptions};
use super::summary::summarise;
use super::{Result, StoreError};
use crate::embed::{Embedder, EmbeddingManifest};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// Most hits one search returns.
pub const MAX_LIMIT: usize = 100;

/// A search asked for from outside (MQTT, HTTP).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchRequest {
    pub query: String,
    /// `90s`, `15m`, `2h`, `3d`, `1w`.
    pub since: Option<String>,
    pub camera: Option<String>,
    /// 0 = the default (10); above [`MAX_LIMIT`] is cut to it.
    pub limit: usize,
}

/// The JSON `lookout search --json` prints: the query, how it was parsed, and each hit with its
/// record (without the raw payload), crop, snapshot and clip paths (absolute) and why it matched.
pub fn hits_json(store: &Store, query: &str, parsed: &ParsedQuery, hits: &[Hit]) -> Value {
    let abs = |p: &Option<String>| p.as_ref().map(|p| store.dir().join(p));
    let hits: Vec<Value> = hits
        .iter()
        .map(|h| {
            let mut r = h.record.clone();
            r.raw = None;
            json!({
                "score": h.score,
                "similarity": h.similarity,
                "why": h.why,
                "crop_path": abs(&r.crop),
                "snapshot_path": abs(&r.snapshot),
                "clip_path": abs(&r.clip),
                "record": r,
            })
        })
        .collect();
    json!({ "query": query, "parsed": parsed, "hits": hits })
}

/// Searches and summarises one store for callers inside the running process.
pub struct Recall {
    store: Arc<Store>,
    model: String,
    /// Loaded at the first search; an error is kept (and said in every answer's `note`).
    embedder: Mutex<Option<std::result::Result<Embedder, String>>>,
}

impl std::fmt::Debug for Recall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recall")
            .field("store", &self.store.dir())
            .finish()
    }
}

impl Recall {
    /// Over `store`, embedding queries with `embedding_model` (`""`: filters and time only).
    pub fn new(store: Arc<Store>, embedding_model: &str) -> Recall {
        Recall {
            store,
            model: embedding_model.to_string(),
            embedder: Mutex::new(None),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The same JSON as `lookout search --json`.
    pub fn search(&self, r: &SearchRequest) -> Result<Value> {
        if r.query.trim().is_empty() {
            return Err(StoreError::Query("query must not be empty".into()));
        }
        if r.query.len() > MAX_QUERY_BYTES {
            return Err(StoreError::Query(format!(
                "query is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let now = crate::util::unix_now();
        let opts = SearchOptions {
            since: since(r.since.as_deref(), now)?,
            camera: r.camera.clone(),
            limit: match r.limit {
                0 => 10,
                n => n.min(MAX_LIMIT),
            },
            now,
            ..Default::default()
        };
        let mut guard = self
            .embedder
            .lock()
            .map_err(|_| StoreError::Query("search is shutting down".into()))?;
        if self.model.is_empty() {
            *guard = Some(Err("no embedding model configured".into()));
        }
        let state = guard.get_or_insert_with(|| {
            EmbeddingManifest::find(&self.model)
                .map_err(crate::error::Error::from)
                .and_then(|m| Embedder::load(&m))
                .map_err(|e| e.to_string())
        });
        let (embedder, note) = match state {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(format!("{e}; ranked by filters and time only"))),
        };
        let (parsed, hits) = search(&self.store, &r.query, embedder, &opts)?;
        let mut v = hits_json(&self.store, &r.query, &parsed, &hits);
        if let (Some(n), Value::Object(m)) = (note, &mut v) {
            m.insert("note".into(), n.into());
        }
        Ok(v)
    }

    /// The same JSON as `lookout summary --json` over the last `since` (default 1h).
    pub fn summary(&self, since_: Option<&str>, camera: Option<&str>) -> Result<Value> {
        let now = crate::util::unix_now();
        let from = since(Some(since_.unwrap_or("1h")), now)?.unwrap_or(now);
        let s = summarise(&self.store, from, now, camera)?;
        serde_json::to_value(&s).map_err(|e| StoreError::Query(format!("serialise: {e}")))
    }
}

fn since(s: Option<&str>, now: f64) -> Result<Option<f64>> {
    Ok(match s {
        Some(s) if s.len() > 32 => {
            return Err(StoreError::Query("since is longer than 32 bytes".into()))
        }
        Some(s) => Some(now - parse_since(s)?),
        None => None,
    })
}

//! Ranking stored items for a query: one pass over the packed search index (no record is decoded
//! until it is a hit), keeping the items inside the time window and camera asked for, ordered by
//! how many of the query's exact filters they meet (colour, label, zone or rule, camera) and then
//! by the cosine similarity of their embedded text to the query's. An item missing a filter is
//! ranked lower rather than dropped, so "red car" still finds a car whose crop read as orange.
//!
//! The top of the list is then diversified: items with the same kind, camera and text (fifteen
//! "person entered zone path" alerts, a description repeated all afternoon) count once, and the
//! first results take the best item of each (kind, camera) before any second one, so one chatty
//! source (scene descriptions every two seconds) cannot fill the first page. (This step was added
//! after the first run of the labelled query set; see docs/recall.md.)

use serde::Serialize;

use super::db::Store;
use super::query::{parse, ParsedQuery};
use super::record::{IndexView, Kind, Quantised, Record};
use super::Result;
use crate::embed::Embedder;

/// How a search is bounded beyond its query.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// Only items that end at or after this time (Unix seconds).
    pub since: Option<f64>,
    pub until: Option<f64>,
    pub camera: Option<String>,
    /// Kinds ranked (default: objects, alerts, scene descriptions).
    pub kinds: Vec<Kind>,
    pub limit: usize,
    /// "Now", for time words.
    pub now: f64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            since: None,
            until: None,
            camera: None,
            kinds: vec![Kind::Object, Kind::Alert, Kind::Scene],
            limit: 10,
            now: crate::util::unix_now(),
        }
    }
}

/// One result: the record and why it ranked where it did.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Filters met plus similarity: what the order follows.
    pub score: f32,
    /// Cosine similarity of the embedded texts (0 without embeddings).
    pub similarity: f32,
    /// Why it matched, in words ("label car", "zone right-lane", "text 0.71").
    pub why: Vec<String>,
    pub record: Record,
}

/// Which of the query's filter groups an index entry meets, as reasons.
fn matches(q: &ParsedQuery, v: &IndexView<'_>) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(c) = q.colours.iter().find(|c| v.colour() == c.as_str()) {
        why.push(format!("colour {c}"));
    }
    if let Some(l) = q
        .labels
        .iter()
        .find(|l| v.labels().any(|x| x == l.as_str()))
    {
        why.push(format!("label {l}"));
    }
    let zone = q
        .zones
        .iter()
        .chain(&q.rules)
        .find(|z| v.zones().any(|x| x == z.as_str()) || v.rule() == z.as_str());
    if let Some(z) = zone {
        why.push(format!("zone {z}"));
    }
    if let Some(c) = q.cameras.iter().find(|c| v.camera() == c.as_str()) {
        why.push(format!("camera {c}"));
    }
    why
}

/// Searches `store` for `query`. Without an embedder the order is filters met, then newest.
pub fn search(
    store: &Store,
    query: &str,
    embedder: Option<&mut Embedder>,
    opts: &SearchOptions,
) -> Result<(ParsedQuery, Vec<Hit>)> {
    let vocab = store.vocabulary()?;
    let q = parse(query, &vocab, opts.now);
    let qv = match embedder {
        Some(e) if !q.text.is_empty() => match e.embed(&q.text) {
            Ok(v) => Some(Quantised::from_f32(&v)),
            Err(err) => {
                log::warn!("search: cannot embed the query: {err}");
                None
            }
        },
        _ => None,
    };
    let since = max_opt(opts.since, q.since);
    let until = min_opt(opts.until, q.until);
    // (filters met, similarity, time, key): small, so 100 000 of them sort in a few ms.
    let mut cands: Vec<(usize, f32, f64, u64)> = Vec::new();
    store.scan_index(|key, v| {
        if !opts.kinds.contains(&v.kind)
            || since.is_some_and(|s| v.end_ts < s)
            || until.is_some_and(|u| v.ts > u)
            || opts.camera.as_deref().is_some_and(|c| v.camera() != c)
        {
            return;
        }
        let met = if q.groups() == 0 {
            0
        } else {
            matches(&q, &v).len()
        };
        let sim = qv.as_ref().map_or(0.0, |qv| v.similarity(qv));
        cands.push((met, sim, v.end_ts, key));
    })?;
    let by_rank = |a: &(usize, f32, f64, u64), b: &(usize, f32, f64, u64)| {
        b.0.cmp(&a.0)
            .then(b.1.total_cmp(&a.1))
            .then(b.2.total_cmp(&a.2))
    };
    // Enough candidates for the duplicates and the diversity below to choose from.
    let keep = (opts.limit * 20).max(200).min(cands.len());
    if keep < cands.len() {
        cands.select_nth_unstable_by(keep, by_rank);
        cands.truncate(keep);
    }
    cands.sort_by(by_rank);
    let keys: Vec<u64> = cands.iter().map(|c| c.3).collect();
    let by_key: std::collections::HashMap<u64, Record> = store
        .get_many(&keys)?
        .into_iter()
        .map(|r| (r.key, r))
        .collect();
    let mut ranked: Vec<(usize, f32, Record)> = Vec::with_capacity(cands.len());
    let mut seen = std::collections::HashSet::new();
    for (met, sim, _, key) in cands {
        let Some(record) = by_key.get(&key).cloned() else {
            continue;
        };
        if seen.insert((record.kind, record.camera.clone(), record.text.clone())) {
            ranked.push((met, sim, record));
        }
    }
    let mut groups_taken = std::collections::HashSet::new();
    let (mut first, mut rest): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for r in ranked {
        if groups_taken.insert((r.2.kind, r.2.camera.clone())) {
            first.push(r);
        } else {
            rest.push(r);
        }
    }
    first.extend(rest);
    first.truncate(opts.limit);
    let groups = q.groups().max(1) as f32;
    let mut hits = Vec::with_capacity(first.len());
    for (met, sim, record) in first {
        let entry = record.index_entry(None).encode();
        let mut why = IndexView::parse(&entry)
            .map(|v| matches(&q, &v))
            .unwrap_or_default();
        if qv.is_some() {
            why.push(format!("text {sim:.2}: \"{}\"", record.text));
        }
        if let Some(t) = &q.time {
            why.push(format!("time: {t}"));
        }
        hits.push(Hit {
            score: met as f32 / groups + sim,
            similarity: sim,
            why,
            record,
        });
    }
    Ok((q, hits))
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Put;
    use crate::store::record::ZoneVisit;

    #[test]
    fn filters_rank_first_and_the_window_bounds_without_embeddings() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), u64::MAX, 0.0).unwrap();
        let now = 1_700_000_000.0;
        let mut puts = Vec::new();
        for (i, (label, colour, zone)) in [
            ("car", "red", "gate"),
            ("car", "white", "gate"),
            ("person", "red", "path"),
            ("car", "red", "drive"),
        ]
        .iter()
        .enumerate()
        {
            let mut r = Record::new(Kind::Object, "front", now - 100.0 + i as f64);
            r.label = label.to_string();
            r.colour = Some(colour.to_string());
            r.text = format!("{colour} {label} at {zone}");
            r.zones.push(ZoneVisit {
                zone: zone.to_string(),
                enter: r.ts,
                exit: r.ts,
            });
            puts.push(Put {
                index: Some(r.index_entry(None).encode()),
                record: r,
                media_bytes: 0,
            });
        }
        s.put(&mut puts).unwrap();
        let opts = SearchOptions {
            now,
            ..Default::default()
        };
        let (q, hits) = search(&s, "red car at the gate", None, &opts).unwrap();
        assert_eq!(q.groups(), 3);
        assert_eq!(hits.len(), 4);
        assert_eq!(hits[0].record.key, puts[0].record.key, "{:?}", hits[0]);
        assert_eq!(
            hits[0].why,
            ["colour red", "label car", "zone gate"],
            "the reasons name the filters met"
        );
        let (_, hits) = search(
            &s,
            "car",
            None,
            &SearchOptions {
                since: Some(now - 98.5),
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(hits.len(), 2, "only items ending inside the window");
    }
}

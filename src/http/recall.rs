//! `/api/search?q=…&since=…&limit=…&camera=…` and `/api/summary?since=…&camera=…`: questions to
//! the event store, answered by a callback the pipeline installs ([`super::WebState::set_recall`]),
//! since this room never reaches up to the store. The arguments are bounded here (the query's
//! length, the number of hits); a run without a store answers 404 saying so.

use std::sync::Arc;

use serde_json::{json, Value};

/// Longest `q`, in bytes (the store's own bound is the same).
pub const MAX_QUERY_BYTES: usize = 512;
/// Most hits one search returns.
pub const MAX_LIMIT: usize = 100;
const MAX_SHORT: usize = 64;

/// A question for the store, already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecallQuery {
    Search {
        query: String,
        since: Option<String>,
        camera: Option<String>,
        /// 1..=[`MAX_LIMIT`], or 0 for the default.
        limit: usize,
    },
    Summary {
        since: Option<String>,
        camera: Option<String>,
    },
}

/// Answers a [`RecallQuery`] with the JSON of `lookout search --json` / `summary --json`, or why not.
pub type RecallFn = Arc<dyn Fn(RecallQuery) -> Result<Value, String> + Send + Sync>;

/// The question a request asks (`get` reads a decoded query-string value), or a 400's reason.
pub(super) fn parse(
    path: &str,
    get: impl Fn(&str) -> Option<String>,
) -> Result<RecallQuery, String> {
    let short = |k: &str| -> Result<Option<String>, String> {
        match get(k).filter(|v| !v.is_empty()) {
            Some(v) if v.len() > MAX_SHORT => Err(format!("{k} is longer than {MAX_SHORT} bytes")),
            v => Ok(v),
        }
    };
    let (since, camera) = (short("since")?, short("camera")?);
    if path == "/api/summary" {
        return Ok(RecallQuery::Summary { since, camera });
    }
    let query = get("q").unwrap_or_default();
    if query.trim().is_empty() {
        return Err("q (what to look for) is required".into());
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!("q is longer than {MAX_QUERY_BYTES} bytes"));
    }
    let limit = match get("limit").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(format!("limit must be 1..{MAX_LIMIT}")),
        },
    };
    Ok(RecallQuery::Search {
        query,
        since,
        camera,
        limit,
    })
}

/// The status and JSON body of a `/api/search` or `/api/summary` request.
pub(super) fn answer(
    path: &str,
    get: impl Fn(&str) -> Option<String>,
    recall: Option<RecallFn>,
) -> (u16, Value) {
    let Some(recall) = recall else {
        let why = "this run keeps no event store (start it with [store] or --store)";
        return (404, json!({ "error": why }));
    };
    match parse(path, get).and_then(|q| recall(q)) {
        Ok(v) => (200, v),
        Err(e) => (400, json!({ "error": e })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn searches_are_bounded_and_need_a_query() {
        assert_eq!(
            parse("/api/search", q(&[("q", "red car"), ("limit", "5")])),
            Ok(RecallQuery::Search {
                query: "red car".into(),
                since: None,
                camera: None,
                limit: 5
            })
        );
        assert!(parse("/api/search", q(&[])).unwrap_err().contains("q "));
        assert!(parse("/api/search", q(&[("q", "x"), ("limit", "101")])).is_err());
        assert!(parse("/api/search", q(&[("q", "x"), ("limit", "-1")])).is_err());
        let long = "x".repeat(MAX_QUERY_BYTES + 1);
        assert!(parse("/api/search", q(&[("q", &long)])).is_err());
        assert_eq!(
            parse("/api/summary", q(&[("since", "2h")])),
            Ok(RecallQuery::Summary {
                since: Some("2h".into()),
                camera: None
            })
        );
        let (code, body) = answer("/api/search", q(&[("q", "x")]), None);
        assert_eq!(code, 404);
        assert!(body["error"].as_str().unwrap().contains("no event store"));
    }
}

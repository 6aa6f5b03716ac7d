//! The arguments of `cmd/search` and `cmd/summary` (questions to the event store), parsed and
//! bounded like every command: known fields only, the query at most [`MAX_QUERY_BYTES`], at
//! most [`MAX_LIMIT`] hits. What `since` means (`90s`, `2h`, `3d`) is the store's to check; the
//! transport only bounds its length.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::commands::Command;
use super::topics::validate_segment;

/// Longest `query`, in bytes (the store's own bound is the same).
pub const MAX_QUERY_BYTES: usize = 512;
/// Most hits one `cmd/search` may ask for.
pub const MAX_LIMIT: usize = 100;
/// Longest `since`, in bytes.
const MAX_SINCE_BYTES: usize = 32;

/// `cmd/search {"query": "red car at the gate", "since"?: "2h", "limit"?: 10, "camera"?: "gate"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    pub query: String,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub camera: Option<String>,
}

/// `cmd/summary {"since"?: "1h", "camera"?: "gate"}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryArgs {
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub camera: Option<String>,
}

fn of<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("bad arguments: {e}"))
}

fn check_common(since: &Option<String>, camera: &Option<String>) -> Result<(), String> {
    if since.as_ref().is_some_and(|s| s.len() > MAX_SINCE_BYTES) {
        return Err(format!("since is longer than {MAX_SINCE_BYTES} bytes"));
    }
    if let Some(c) = camera {
        validate_segment("camera", c)
            .map_err(|e| e.to_string().trim_start_matches("mqtt: ").to_string())?;
    }
    Ok(())
}

/// `cmd/search`'s payload (without `request_id` and `v`) as a command.
pub(super) fn search(args: Value) -> Result<Command, String> {
    if let Some(v) = args.get("query").filter(|v| !v.is_string()) {
        return Err(format!("query must be a string, got {v}"));
    }
    let a: SearchArgs = of(args)?;
    if a.query.trim().is_empty() {
        return Err("query must not be empty".into());
    }
    if a.query.len() > MAX_QUERY_BYTES {
        return Err(format!("query is longer than {MAX_QUERY_BYTES} bytes"));
    }
    if a.limit.is_some_and(|l| l == 0 || l > MAX_LIMIT) {
        return Err(format!("limit must be 1..{MAX_LIMIT}"));
    }
    check_common(&a.since, &a.camera)?;
    Ok(Command::Search(a))
}

/// `cmd/summary`'s payload as a command.
pub(super) fn summary(args: Value) -> Result<Command, String> {
    let a: SummaryArgs = of(args)?;
    check_common(&a.since, &a.camera)?;
    Ok(Command::Summary(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn search_arguments_are_bounded() {
        let ok = search(json!({"query": "red car", "since": "2h", "limit": 5})).unwrap();
        assert_eq!(
            ok,
            Command::Search(SearchArgs {
                query: "red car".into(),
                since: Some("2h".into()),
                limit: Some(5),
                camera: None,
            })
        );
        let err = |v| search(v).unwrap_err();
        assert!(err(json!({})).contains("query"));
        assert!(err(json!({"query": 3})).contains("query must be a string"));
        assert!(err(json!({"query": " "})).contains("empty"));
        assert!(err(json!({"query": "x".repeat(513)})).contains("512"));
        assert!(err(json!({"query": "x", "limit": 1000})).contains("limit"));
        assert!(err(json!({"query": "x", "limit": -1})).contains("bad arguments"));
        assert!(err(json!({"query": "x", "since": "1".repeat(40)})).contains("since"));
        assert!(err(json!({"query": "x", "camera": "a/b"})).contains("camera"));
        assert!(err(json!({"query": "x", "extra": 1})).contains("unknown field"));
        assert!(summary(json!({"since": "1h"})).is_ok());
        assert!(summary(json!({"q": 1})).is_err());
    }
}

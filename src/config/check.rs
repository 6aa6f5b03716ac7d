//! Checking a configuration as a whole: every problem found, each naming its key, rather than the
//! first one serde stops at. `Config::load` uses it (and fails on any problem); `lookout check`
//! uses it with the deeper checks too (models, zone geometry, source URI) and prints them all.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::Config;

/// One problem in a config: the key path (`detector.threads`, `rules[1].polygon`, `mqtt.broker`)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every problem found, in the order of the keys.
#[derive(Debug, Default, Clone)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    pub fn push(&mut self, key: impl Into<String>, reason: impl fmt::Display) {
        self.0.push(Issue {
            key: key.into(),
            reason: reason.to_string(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Issue> {
        self.0.iter()
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// A config checked as far as it could be: the merged table (board under file), the typed
/// config when every section deserialised, and every problem found.
#[derive(Debug)]
pub struct Checked {
    /// The file the problems are in (`(defaults)` for the embedded default).
    pub source: PathBuf,
    /// The board profile layered under the file, when there is one.
    pub board_file: Option<PathBuf>,
    pub merged: toml::Table,
    pub config: Option<Config>,
    pub issues: Issues,
}

/// `key` + a serde path (`[2].polygon`, `threads`) as one key path.
fn join(key: &str, path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." || p.is_empty() {
        key.to_string()
    } else if p.starts_with('[') {
        format!("{key}{p}")
    } else {
        format!("{key}.{p}")
    }
}

/// Deserialise one section, recording a failure under its full key path.
pub(crate) fn section<T: DeserializeOwned>(
    key: &str,
    value: &toml::Value,
    issues: &mut Issues,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let key = join(key, e.path());
            issues.push(key, e.inner().message());
            None
        }
    }
}

/// Deserialise the merged table section by section so one bad section does not hide the others,
/// then validate the values. `None` when some section did not deserialise.
pub(crate) fn typed(merged: &toml::Table, issues: &mut Issues) -> Option<Config> {
    use super::{CameraConfig, DetectorConfig, OutputConfig, PipelineConfig, VlmConfig};
    use crate::scene::{DescribeConfig, EventConfig, RuleConfig};
    use crate::track::TrackerConfig;
    let before = issues.len();
    for (k, v) in merged {
        match k.as_str() {
            "board" | "device" => {
                section::<String>(k, v, issues);
            }
            "camera" => drop(section::<CameraConfig>(k, v, issues)),
            "detector" => drop(section::<DetectorConfig>(k, v, issues)),
            "pipeline" => drop(section::<PipelineConfig>(k, v, issues)),
            "tracker" => drop(section::<TrackerConfig>(k, v, issues)),
            "events" => drop(section::<EventConfig>(k, v, issues)),
            "describe" => drop(section::<DescribeConfig>(k, v, issues)),
            "rules" => drop(section::<Vec<RuleConfig>>(k, v, issues)),
            "output" => drop(section::<OutputConfig>(k, v, issues)),
            "vlm" => drop(section::<VlmConfig>(k, v, issues)),
            "mqtt" => drop(section::<crate::mqtt::MqttConfig>(k, v, issues)),
            "http" => drop(section::<super::HttpConfig>(k, v, issues)),
            "hardware" => drop(section::<toml::Table>(k, v, issues)),
            "store" => drop(section::<super::StoreConfig>(k, v, issues)),
            "cameras" => drop(section::<Vec<super::CameraEntry>>(k, v, issues)),
            "privacy" => drop(section::<super::PrivacyConfig>(k, v, issues)),
            "ocr" => drop(section::<super::OcrConfig>(k, v, issues)),
            other => issues.push(
                other,
                "unknown key (known: board, device, camera, detector, pipeline, tracker, events, \
                 describe, rules, output, mqtt, hardware, vlm, http, store, cameras, privacy, ocr)",
            ),
        }
    }
    if issues.len() > before {
        return None;
    }
    let cfg = section::<Config>("", &toml::Value::Table(merged.clone()), issues)?;
    cfg.validate(issues);
    Some(cfg)
}

/// What `lookout check` adds to loading: the things a run reads that loading does not open —
/// the model manifest, the VLM folder, the zone and line geometry, the source URI. Works on the
/// merged table, so a section that failed elsewhere does not hide these.
pub fn deep(merged: &toml::Table, issues: &mut Issues) {
    let get = |section: &str, key: &str| -> Option<&toml::Value> {
        merged.get(section)?.as_table()?.get(key)
    };
    let model = get("detector", "model")
        .and_then(|v| v.as_str())
        .unwrap_or(crate::models::DEFAULT_MODEL);
    if let Err(e) = crate::models::find(model) {
        issues.push("detector.model", e);
    }
    if let Some(dir) = get("vlm", "model").and_then(|v| v.as_str()) {
        if !Path::new(dir).join("config.json").is_file() {
            issues.push(
                "vlm.model",
                format!("{dir}: no config.json (a folder from `lookout models pull`)"),
            );
        }
    }
    if let Some(rules) = merged.get("rules") {
        let mut ignore = Issues::default();
        if let Some(rules) = section::<Vec<crate::scene::RuleConfig>>("rules", rules, &mut ignore) {
            if let Err(e) = crate::scene::RuleEngine::new(rules, 1, 1) {
                // The engine's message names `rules[i].key (rule 'name')`.
                issues.push("rules", e);
            }
        }
    }
    let blur = get("privacy", "blur_people").and_then(|v| v.as_bool()) == Some(true);
    let by_mask = get("privacy", "shape").and_then(|v| v.as_str()) != Some("box");
    if blur && by_mask {
        let seg = get("privacy", "segmenter")
            .and_then(|v| v.as_str())
            .unwrap_or(crate::segment::DEFAULT_SEGMENTER);
        if let Err(e) = crate::segment::SegmentManifest::find(seg) {
            issues.push(
                "privacy.segmenter",
                format!("{e}; without it `lookout run` blurs people box-shaped (or set privacy.shape = \"box\")"),
            );
        }
    }
    if merged.get("ocr").is_some() {
        let model = get("ocr", "model")
            .and_then(|v| v.as_str())
            .unwrap_or(crate::ocr::DEFAULT_OCR_MODEL);
        if let Err(e) = crate::ocr::OcrManifest::find(model) {
            issues.push("ocr.model", e);
        }
    }
    let source = get("camera", "source")
        .and_then(|v| v.as_str())
        .unwrap_or(super::DEFAULT_SOURCE);
    if let Err(e) = crate::capture::check_uri(source) {
        issues.push("camera.source", e);
    }
    deep_cameras(merged, issues);
}

/// `[[cameras]]` as `lookout run` would open them: each camera's source URI (its own or
/// `[camera]`'s) and each camera's rules (the top-level ones and its own) compiled together.
fn deep_cameras(merged: &toml::Table, issues: &mut Issues) {
    let Some(cameras) = merged.get("cameras").and_then(|c| c.as_array()) else {
        return;
    };
    let mut ignore = Issues::default();
    let top: Vec<crate::scene::RuleConfig> = merged
        .get("rules")
        .and_then(|r| section("rules", r, &mut ignore))
        .unwrap_or_default();
    let base_source = merged
        .get("camera")
        .and_then(|c| c.get("source"))
        .and_then(|v| v.as_str());
    for (i, cam) in cameras.iter().enumerate() {
        let key = format!("cameras[{i}]");
        let source = cam.get("source").and_then(|v| v.as_str());
        match source.or(base_source) {
            Some(s) => {
                if let Err(e) = crate::capture::check_uri(s) {
                    issues.push(format!("{key}.source"), e);
                }
            }
            None => issues.push(
                format!("{key}.source"),
                "no source (set it here or in [camera])",
            ),
        }
        let own: Vec<crate::scene::RuleConfig> = cam
            .get("rules")
            .and_then(|r| section("rules", r, &mut ignore))
            .unwrap_or_default();
        if own.is_empty() {
            continue;
        }
        let all = top.iter().cloned().chain(own).collect();
        if let Err(e) = crate::scene::RuleEngine::new(all, 1, 1) {
            issues.push(format!("{key}.rules"), e);
        }
    }
}

/// Read, merge and check a config the way `lookout run` would, and (with `deep`) the files it
/// names. Only an unreadable file, a TOML syntax error or a missing board profile stop the check
/// early; everything else is collected.
pub fn check(path: Option<&Path>, board: Option<&str>, deep_check: bool) -> crate::Result<Checked> {
    let (merged, board_file) = super::merged_table(path, board)?;
    let mut issues = Issues::default();
    let config = typed(&merged, &mut issues);
    if deep_check {
        deep(&merged, &mut issues);
    }
    Ok(Checked {
        source: super::source_name(path),
        board_file,
        merged,
        config,
        issues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(text: &str) -> Issues {
        let merged: toml::Table = toml::from_str(text).unwrap();
        let mut issues = Issues::default();
        typed(&merged, &mut issues);
        deep(&merged, &mut issues);
        issues
    }

    fn keys(i: &Issues) -> Vec<&str> {
        let mut k: Vec<&str> = i.iter().map(|i| i.key.as_str()).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn type_errors_name_the_key_path() {
        let i = issues("[pipeline]\nqueue = \"two\"\n[mqtt]\nkeep_alive_s = -3\n");
        assert_eq!(keys(&i), ["mqtt.keep_alive_s", "pipeline.queue"], "{i}");
        assert!(i.to_string().contains("invalid type"), "{i}");
    }

    #[test]
    fn several_sections_report_together() {
        let i =
            issues("[detector]\nmodle = \"x\"\n[camera]\nsource = \"nope://x\"\n[colour]\na = 1\n");
        assert_eq!(i.len(), 3, "{i}");
        assert!(i.iter().any(|x| x.key == "camera.source"), "{i}");
        assert!(i.iter().any(|x| x.key == "colour"), "{i}");
        assert!(i.iter().any(|x| x.reason.contains("modle")), "{i}");
    }

    #[test]
    fn value_checks_report_every_bad_value() {
        let i = issues("[detector]\nworkers = 0\nthreads = 0\n[pipeline]\nqueue = 0\n");
        assert_eq!(
            keys(&i),
            ["detector.threads", "detector.workers", "pipeline.queue"],
            "{i}"
        );
    }

    #[test]
    fn camera_keys_and_rtsp_uris_are_checked_without_connecting() {
        let i = issues(
            "[camera]\nsource = \"rtsp://u:s3cret@cam/s?transport=sctp\"\nhwdecode = \"v4l2m2m\"\nstall_timeout_s = -1\n",
        );
        assert_eq!(keys(&i), ["camera.source", "camera.stall_timeout_s"], "{i}");
        assert!(!i.to_string().contains("s3cret"), "{i}");
        assert!(issues("[camera]\nsource = \"rtsps://cam:322/s?fps=5\"\n").is_empty());
        let i = issues("[camera]\nhwdecode = \"vaapi\"\n");
        assert_eq!(keys(&i), ["camera.hwdecode"], "{i}");
    }

    #[test]
    fn deep_checks_name_each_camera() {
        let i = issues(
            r#"
[[cameras]]
name = "front"
source = "file:samples/vtest?fps=10"
[[cameras.rules]]
name = "door"
kind = "zone"
polygon = [[0.1, 0.1], [0.2, 0.2]]
[[cameras]]
name = "rear"
source = "nope://x"
"#,
        );
        assert_eq!(keys(&i), ["cameras[0].rules", "cameras[1].source"], "{i}");
    }

    #[test]
    fn deep_checks_cover_model_zone_uri_and_mqtt() {
        let i = issues(
            r#"
[camera]
source = "v4l:///dev/video0?fps=abc"
[detector]
model = "no-such-model"
[mqtt]
broker = "ftp://x"
[[rules]]
name = "door"
kind = "zone"
polygon = [[0.1, 0.1], [0.2, 0.2]]
"#,
        );
        let k = keys(&i);
        for want in ["camera.source", "detector.model", "rules", "mqtt"] {
            assert!(
                k.iter().any(|x| x.starts_with(want)),
                "{want} missing in {i}"
            );
        }
    }

    #[test]
    fn privacy_keys_and_the_segmenter_are_checked() {
        assert!(issues("[privacy]\nblur_people = true\n").is_empty());
        assert!(
            issues("[privacy]\nblur_people = true\nshape = \"box\"\nsegmenter = \"gone\"\n")
                .is_empty()
        );
        let i = issues("[privacy]\nblur_people = true\nsegmenter = \"no-such-segmenter\"\n");
        assert_eq!(keys(&i), ["privacy.segmenter"], "{i}");
        let i = issues("[privacy]\nblur = true\n");
        assert_eq!(keys(&i), ["privacy.blur"], "{i}");
        let i = issues("[privacy]\nshape = \"blob\"\n");
        assert_eq!(keys(&i), ["privacy.shape"], "{i}");
    }
}

//! `[[cameras]]`: several cameras in one process. Each entry names a camera, its source, its own
//! rules (zones, lines, counts) and any `[camera]` key it sets differently; whatever it leaves out
//! comes from `[camera]`. Without `[[cameras]]` the single `[camera]` is the one camera, as before.
//!
//! [`Config::per_camera`] turns either form into one whole [`Config`] per camera, so the frame
//! loop — which reads `cfg.camera` and `cfg.rules` — runs unchanged once per camera.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{CameraConfig, Config, Issues};
use crate::capture::HwDecode;
use crate::scene::RuleConfig;

/// Most cameras one process serves: each has its own capture, scene and detect threads.
pub const MAX_CAMERAS: usize = 16;

/// One `[[cameras]]` entry. Every key but `name` is optional; an unset key is `[camera]`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraEntry {
    /// Unique among the cameras; a single MQTT topic level (`snapshot/<name>/…`).
    pub name: String,
    pub source: Option<String>,
    pub hwdecode: Option<HwDecode>,
    pub heal: Option<bool>,
    pub stall_timeout_s: Option<f64>,
    pub backoff_initial_s: Option<f64>,
    pub backoff_max_s: Option<f64>,
    pub give_up_after_s: Option<f64>,
    pub track_gap_s: Option<f64>,
    /// Most frames per second this camera sends to the shared detector pool.
    pub detect_fps: Option<f64>,
    /// This camera's own rules, in addition to the top-level `[[rules]]` (which every camera has).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl CameraEntry {
    /// `[camera]` with this entry's keys over it.
    pub fn over(&self, base: &CameraConfig) -> CameraConfig {
        let mut c = base.clone();
        c.name = self.name.clone();
        if self.source.is_some() {
            c.source = self.source.clone();
        }
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        take!(
            hwdecode,
            heal,
            stall_timeout_s,
            backoff_initial_s,
            backoff_max_s,
            give_up_after_s,
            track_gap_s
        );
        if self.detect_fps.is_some() {
            c.detect_fps = self.detect_fps;
        }
        c
    }
}

impl Config {
    /// One whole config per camera, in order: `[[cameras]]` entries over `[camera]`, each with the
    /// top-level rules followed by its own; without `[[cameras]]`, this config as it is.
    pub fn per_camera(&self) -> Vec<Config> {
        if self.cameras.is_empty() {
            return vec![self.clone()];
        }
        self.cameras
            .iter()
            .map(|e| {
                let mut c = self.clone();
                c.camera = e.over(&self.camera);
                c.rules.extend(e.rules.iter().cloned());
                c.cameras = Vec::new();
                c
            })
            .collect()
    }

    /// The camera names, in order (the single `[camera]`'s name without `[[cameras]]`).
    pub fn camera_names(&self) -> Vec<String> {
        if self.cameras.is_empty() {
            vec![self.camera.name.clone()]
        } else {
            self.cameras.iter().map(|e| e.name.clone()).collect()
        }
    }
}

/// Value checks of `[[cameras]]`, each failure naming `cameras[i].key`: names unique and usable as
/// a topic level, each camera's merged keys valid, its rule names not clashing with the top-level
/// rules.
pub(super) fn validate(cfg: &Config, issues: &mut Issues) {
    if cfg.cameras.is_empty() {
        // The single camera's name is a topic level too; with `[[cameras]]` it is not used.
        if let Err(why) = topic_safe(&cfg.camera.name) {
            issues.push("camera.name", format!("'{}' {why}", cfg.camera.name));
        }
        return;
    }
    if cfg.cameras.len() > MAX_CAMERAS {
        issues.push(
            "cameras",
            format!("{} cameras; at most {MAX_CAMERAS}", cfg.cameras.len()),
        );
    }
    let top: BTreeSet<&str> = cfg.rules.iter().map(|r| r.name.as_str()).collect();
    let mut seen = BTreeSet::new();
    for (i, e) in cfg.cameras.iter().enumerate() {
        let key = format!("cameras[{i}]");
        if let Err(why) = topic_safe(&e.name) {
            issues.push(format!("{key}.name"), format!("'{}' {why}", e.name));
        } else if !seen.insert(e.name.as_str()) {
            issues.push(
                format!("{key}.name"),
                format!("'{}' is the name of an earlier camera", e.name),
            );
        }
        e.over(&cfg.camera).validate_as(&key, issues);
        let mut own = BTreeSet::new();
        for (j, r) in e.rules.iter().enumerate() {
            if top.contains(r.name.as_str()) || !own.insert(r.name.as_str()) {
                issues.push(
                    format!("{key}.rules[{j}].name"),
                    format!(
                        "'{}' is already a rule of this camera (top-level [[rules]] apply to \
                         every camera)",
                        r.name
                    ),
                );
            }
        }
    }
}

/// Whether a camera name can be one MQTT topic level (`snapshot/<camera>`).
pub(super) fn topic_safe(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 64 {
        return Err("is longer than 64 bytes");
    }
    if name
        .chars()
        .any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err("must not contain '/', '+', '#' or control characters (it is a topic level)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[camera]
stall_timeout_s = 4
[[rules]]
name = "anyone"
kind = "count"
min_count = 1
[[cameras]]
name = "front"
source = "file:samples/vtest?fps=10"
detect_fps = 5
[[cameras.rules]]
name = "door"
kind = "zone"
polygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
[[cameras]]
name = "rear"
source = "video:rear.mp4"
stall_timeout_s = 9
"#;

    #[test]
    fn each_camera_is_camera_with_its_own_keys_and_rules() {
        let c = Config::parse(TWO).unwrap();
        let per = c.per_camera();
        assert_eq!(per.len(), 2);
        assert_eq!(c.camera_names(), ["front", "rear"]);
        assert_eq!(per[0].camera.name, "front");
        assert_eq!(per[0].camera.stall_timeout_s, 4.0, "from [camera]");
        assert_eq!(per[0].camera.detect_fps, Some(5.0));
        assert_eq!(per[1].camera.stall_timeout_s, 9.0);
        assert_eq!(per[1].camera.detect_fps, None);
        let names = |c: &Config| c.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&per[0]), ["anyone", "door"]);
        assert_eq!(names(&per[1]), ["anyone"]);
        assert!(per.iter().all(|p| p.cameras.is_empty()));
    }

    #[test]
    fn the_single_camera_form_is_one_camera() {
        let c = Config::parse("[camera]\nname = \"plaza\"\n").unwrap();
        assert_eq!(c.camera_names(), ["plaza"]);
        assert_eq!(c.per_camera()[0].camera.name, "plaza");
    }

    #[test]
    fn bad_camera_keys_are_named_with_their_camera() {
        let e = |t: &str| Config::parse(t).unwrap_err().to_string();
        let msg = e("[[cameras]]\nname = \"a\"\n[[cameras]]\nname = \"b\"\nsoruce = \"x\"\n");
        assert!(
            msg.contains("cameras[1]") && msg.contains("soruce"),
            "{msg}"
        );
        let msg = e("[[cameras]]\nname = \"a\"\n[[cameras]]\nname = \"a\"\n");
        assert!(msg.contains("cameras[1].name"), "{msg}");
        let msg = e("[[cameras]]\nname = \"a/b\"\n");
        assert!(msg.contains("cameras[0].name"), "{msg}");
        let msg = e("[camera]\nname = \"front/door\"\n");
        assert!(msg.contains("camera.name"), "{msg}");
        let msg = e("[[cameras]]\nname = \"a\"\n[[cameras]]\nname = \"b\"\ntrack_gap_s = -1\n");
        assert!(msg.contains("cameras[1].track_gap_s"), "{msg}");
        let msg = e("[[cameras]]\nname = \"a\"\ndetect_fps = 0\n");
        assert!(msg.contains("cameras[0].detect_fps"), "{msg}");
        let msg = e("[[cameras]]\nsource = \"file:x\"\n");
        assert!(msg.contains("cameras[0]") && msg.contains("name"), "{msg}");
        let msg = e("[[rules]]\nname = \"r\"\nkind = \"count\"\nmin_count = 1\n[[cameras]]\n\
                     name = \"a\"\n[[cameras.rules]]\nname = \"r\"\nkind = \"count\"\nmin_count = 2\n");
        assert!(msg.contains("cameras[0].rules[0].name"), "{msg}");
    }
}

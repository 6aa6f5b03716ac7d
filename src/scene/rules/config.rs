//! The rule file as written: the `[[rules]]` tables' types, and reading them from TOML. Syntax and
//! key names only; whether the values can work is [`super::compile`]'s job.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::RuleError;

/// Rule files are small; a larger one is a mistake (or hostile) and is refused before parsing.
const MAX_RULE_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Zone,
    Line,
    Proximity,
    Count,
    Presence,
    Absence,
}

impl RuleKind {
    /// The name as written in the file, for error messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            RuleKind::Zone => "zone",
            RuleKind::Line => "line",
            RuleKind::Proximity => "proximity",
            RuleKind::Count => "count",
            RuleKind::Presence => "presence",
            RuleKind::Absence => "absence",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneTrigger {
    Entry,
    Exit,
    Dwell,
}

/// Which way across a line counts. For a line drawn from its first point to its second, side `a`
/// is on the left of that direction as seen on screen and side `b` on the right: for a line drawn
/// left to right, `a` is above it and `b` below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Direction {
    #[serde(rename = "a_to_b")]
    AToB,
    #[serde(rename = "b_to_a")]
    BToA,
    #[default]
    #[serde(rename = "any")]
    Any,
}

/// Proximity thresholds; either may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearThresholds {
    /// Near when the box bottom is at or below this fraction of the frame height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_y: Option<f32>,
    /// Near when the box is at least this fraction of the frame height tall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_height: Option<f32>,
}

/// One `[[rules]]` table. Which keys apply depends on `kind`; see the module docs and
/// [`parse_rules`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; also the zone's name for `kind = "zone"`.
    pub name: String,
    pub kind: RuleKind,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Severity,
    /// Consecutive frames a condition must hold before it counts as changed (0 and 1: at once).
    #[serde(default)]
    pub debounce_frames: u32,
    /// Seconds during which a repeat of the same alert is suppressed.
    #[serde(default)]
    pub cooldown: f64,
    /// Labels the rule applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,

    /// zone: `[[x, y], ...]`, at least 3 points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polygon: Option<Vec<[f32; 2]>>,
    /// zone: which alerts to raise; empty only defines the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<ZoneTrigger>,
    /// zone: seconds in the zone before a `dwell` alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell: Option<f64>,

    /// line: `[[x1, y1], [x2, y2]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<[[f32; 2]; 2]>,
    /// line: default `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,

    /// proximity: see [`NearThresholds`]; `per_class` overrides them for some labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_y: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_height: Option<f32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_class: BTreeMap<String, NearThresholds>,

    /// proximity, count, presence, absence: only look inside this zone (a `kind = "zone"` rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// count (required), presence (default 1): at least this many objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    /// count, presence, absence: seconds the condition must hold (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

fn default_true() -> bool {
    true
}

impl RuleConfig {
    /// A rule with every optional key unset, for building rules in code.
    pub fn new(name: impl Into<String>, kind: RuleKind) -> Self {
        RuleConfig {
            name: name.into(),
            kind,
            enabled: true,
            severity: Severity::Info,
            debounce_frames: 0,
            cooldown: 0.0,
            classes: Vec::new(),
            polygon: None,
            triggers: Vec::new(),
            dwell: None,
            line: None,
            direction: None,
            near_y: None,
            near_height: None,
            per_class: BTreeMap::new(),
            zone: None,
            min_count: None,
            duration: None,
        }
    }

    /// Whether the rule looks at objects with this label (`classes` empty: all of them).
    pub(super) fn accepts(&self, label: &str) -> bool {
        self.classes.is_empty() || self.classes.iter().any(|c| c.eq_ignore_ascii_case(label))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

/// Parse a rules document: any number of `[[rules]]` tables.
///
/// ```toml
/// [[rules]]
/// name = "crossing"
/// kind = "zone"
/// polygon = [[0.1, 0.6], [0.9, 0.6], [0.9, 1.0], [0.1, 1.0]]
/// triggers = ["entry", "exit", "dwell"]
/// dwell = 20          # seconds
/// classes = ["person"]
/// severity = "warning"
/// debounce_frames = 2
/// cooldown = 10
/// ```
///
/// This checks syntax and key names only; [`super::RuleEngine::new`] checks values.
pub fn parse_rules(text: &str) -> Result<Vec<RuleConfig>, RuleError> {
    toml::from_str::<RulesFile>(text)
        .map(|f| f.rules)
        .map_err(|e| RuleError::Syntax(e.to_string().trim_end().to_string()))
}

/// [`parse_rules`] on a file, at most 1 MiB; errors name the file.
pub fn load_rules(path: &Path) -> Result<Vec<RuleConfig>, RuleError> {
    use std::io::Read;
    let io = |source| RuleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    f.take(MAX_RULE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(RuleError::TooLarge {
            path: path.to_path_buf(),
            max_bytes: MAX_RULE_FILE_BYTES,
        });
    }
    parse_rules(&text).map_err(|e| RuleError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

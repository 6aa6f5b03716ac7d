//! Rules over tracks: zones (entry, exit, dwell), line crossings, proximity to the camera, counts,
//! presence and absence, each raising [`Alert`]s.
//!
//! Geometry is in normalised frame coordinates (0..1, origin top-left, y down) so a rule file
//! survives a change of camera resolution. A track's position is its *reference point*, the
//! bottom-centre of its box: where the object touches the ground, which is what a zone painted on
//! the ground or a line across a path is about.
//!
//! Rules are written in TOML as an array of `[[rules]]` tables (see [`parse_rules`]); a
//! `kind = "zone"` rule also defines a named zone that other rules can refer to with
//! `zone = "<name>"`, and fills [`Track::zones`]. Every key that does not apply to a rule's kind is
//! an error, so a typo or a misplaced key is reported rather than silently ignored.
//!
//! Edge-like alerts (entry, exit, crossing) fire at the moment of the change. Level-like ones
//! (dwell, proximity, count, presence, absence) fire once when their condition has held long
//! enough and re-arm when it stops holding. `debounce_frames` makes every condition hold for that
//! many consecutive frames before it counts as changed; `cooldown` suppresses repeats of the same
//! alert (per track for per-track rules) for that many seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::describe::{counted, plural};
use crate::error::{Error, Result};
use crate::geometry::BBox;
use crate::track::Track;

/// Upper bounds on what a rule file may ask for, so a broken or hostile file cannot make every
/// frame expensive.
const MAX_RULES: usize = 1000;
const MAX_POLYGON_POINTS: usize = 256;
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
    fn name(self) -> &'static str {
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
/// This checks syntax and key names only; [`RuleEngine::new`] checks values.
pub fn parse_rules(text: &str) -> Result<Vec<RuleConfig>> {
    toml::from_str::<RulesFile>(text)
        .map(|f| f.rules)
        .map_err(|e| Error::Other(format!("rules: {}", e.to_string().trim_end())))
}

/// [`parse_rules`] on a file, at most 1 MiB.
pub fn load_rules(path: &Path) -> Result<Vec<RuleConfig>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    f.take(MAX_RULE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(Error::Config {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_RULE_FILE_BYTES} bytes"),
        });
    }
    parse_rules(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Entry,
    Exit,
    Dwell,
    Crossing,
    Proximity,
    Count,
    Presence,
    Absence,
}

impl AlertKind {
    fn name(self) -> &'static str {
        match self {
            AlertKind::Entry => "entry",
            AlertKind::Exit => "exit",
            AlertKind::Dwell => "dwell",
            AlertKind::Crossing => "crossing",
            AlertKind::Proximity => "proximity",
            AlertKind::Count => "count",
            AlertKind::Presence => "presence",
            AlertKind::Absence => "absence",
        }
    }
}

/// Kind-specific facts about an alert; absent fields do not apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// For a crossing, the way it went (`a_to_b` or `b_to_a`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Seconds the condition had held (dwell, presence, absence, count with a duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// The track's box, in pixels (per-track alerts).
    #[serde(default, rename = "box", skip_serializing_if = "Option::is_none")]
    pub bbox: Option<BBox>,
    /// The track's reference point, normalised (per-track alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<[f32; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<rule>-<kind>-<frame_id>-<track_id>`, or `<rule>-<kind>-<frame_id>` for alerts about the
    /// whole frame (count, presence, absence).
    pub id: String,
    pub rule: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub camera: String,
    pub ts: f64,
    pub frame_id: u64,
    pub track_ids: Vec<u64>,
    pub labels: Vec<String>,
    pub message: String,
    pub details: AlertDetails,
    /// The VLM's verdict, when alerts are verified (`[vlm] verify_alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// What the VLM made of an alert it was asked to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    /// The model answered yes.
    Confirmed,
    /// The model answered no.
    Rejected,
    /// The model answered, but neither yes nor no.
    Unclear,
    /// No answer in time (busy, timed out, failed or shutting down): see `answer`.
    Unverified,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub status: VerificationStatus,
    pub question: String,
    /// The model's answer, or why there is none.
    pub answer: String,
    pub model: String,
    /// How long the alert was held, milliseconds.
    pub held_ms: f64,
}

type Pt = (f32, f32);

#[derive(Debug, Clone, Copy)]
struct Near {
    y: Option<f32>,
    height: Option<f32>,
}

#[derive(Debug, Clone)]
enum Geometry {
    Zone {
        poly: Vec<Pt>,
        entry: bool,
        exit: bool,
        dwell: Option<f64>,
    },
    Line {
        a: Pt,
        b: Pt,
        direction: Direction,
    },
    Proximity {
        default: Near,
        per_class: Vec<(String, Near)>,
        zone: Option<usize>,
    },
    /// count, presence and absence: how many matching objects are in the zone (or frame).
    Count {
        zone: Option<usize>,
        min: u32,
        duration: f64,
        absence: bool,
    },
}

#[derive(Debug, Clone)]
struct Rule {
    cfg: RuleConfig,
    geo: Geometry,
    frame: FrameState,
}

impl Rule {
    fn accepts(&self, label: &str) -> bool {
        self.cfg.classes.is_empty()
            || self
                .cfg
                .classes
                .iter()
                .any(|c| c.eq_ignore_ascii_case(label))
    }

    fn debounce(&self) -> u32 {
        self.cfg.debounce_frames.max(1)
    }
}

/// A boolean that only changes after the new value has been seen in `n` consecutive frames.
#[derive(Debug, Clone, Copy, Default)]
struct Debounce {
    value: bool,
    pending: u32,
    pending_since: f64,
    /// When the current value started to be seen (the first frame of the run that set it).
    since: f64,
}

impl Debounce {
    /// Returns true when the value changed.
    fn step(&mut self, raw: bool, n: u32, ts: f64) -> bool {
        if raw == self.value {
            self.pending = 0;
            return false;
        }
        if self.pending == 0 {
            self.pending_since = ts;
        }
        self.pending += 1;
        if self.pending >= n {
            self.value = raw;
            self.since = self.pending_since;
            self.pending = 0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[derive(Debug, Clone, Copy)]
struct PendingCross {
    side: Side,
    frames: u32,
    /// Whether the move onto `side` went through the line segment (not around its end).
    through: bool,
}

/// Per track and rule.
#[derive(Debug, Clone, Default)]
struct TrackRuleState {
    deb: Debounce,
    /// A level-like alert was raised for the current run of the condition.
    fired: bool,
    /// line: the debounced side, the latest side and point off the line, a pending crossing.
    side: Option<Side>,
    last_strict: Option<(Side, Pt)>,
    pending: Option<PendingCross>,
    /// Cooldown clocks, by [`AlertKind`] (only the kinds a per-track rule raises).
    last_fire: [Option<f64>; 5],
}

#[derive(Debug, Clone, Default)]
struct FrameState {
    deb: Debounce,
    fired: bool,
    last_fire: Option<f64>,
}

/// Evaluates rules on each frame's tracks; keeps per-track state between frames.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    camera: String,
    frame_w: f32,
    frame_h: f32,
    rules: Vec<Rule>,
    per_track: HashMap<u64, Vec<TrackRuleState>>,
    last_ts: f64,
}

impl RuleEngine {
    /// Checks every rule; the error names the rule and the key, e.g.
    /// `rules[2].polygon (rule 'door'): needs at least 3 points, got 2`.
    pub fn new(rules: Vec<RuleConfig>, frame_w: u32, frame_h: u32) -> Result<Self> {
        if frame_w == 0 || frame_h == 0 {
            return Err(Error::Other(format!(
                "rules: frame size {frame_w}x{frame_h} is empty"
            )));
        }
        if rules.len() > MAX_RULES {
            return Err(Error::Other(format!(
                "rules: {} rules, at most {MAX_RULES} are allowed",
                rules.len()
            )));
        }
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let geo = compile(i, r, &rules).map_err(|(key, reason)| {
                Error::Other(format!("rules[{i}].{key} (rule '{}'): {reason}", r.name))
            })?;
            compiled.push(Rule {
                cfg: r.clone(),
                geo,
                frame: FrameState::default(),
            });
        }
        Ok(RuleEngine {
            camera: "camera".into(),
            frame_w: frame_w as f32,
            frame_h: frame_h as f32,
            rules: compiled,
            per_track: HashMap::new(),
            last_ts: 0.0,
        })
    }

    /// The camera name put in alerts.
    pub fn with_camera(mut self, camera: impl Into<String>) -> Self {
        self.camera = camera.into();
        self
    }

    pub fn set_frame_size(&mut self, frame_w: u32, frame_h: u32) -> Result<()> {
        if frame_w == 0 || frame_h == 0 {
            return Err(Error::Other(format!(
                "rules: frame size {frame_w}x{frame_h} is empty"
            )));
        }
        self.frame_w = frame_w as f32;
        self.frame_h = frame_h as f32;
        Ok(())
    }

    /// The rules, with `enabled` as it is now.
    pub fn rules(&self) -> impl Iterator<Item = &RuleConfig> {
        self.rules.iter().map(|r| &r.cfg)
    }

    /// Turn a rule's alerts on or off. A disabled rule keeps following the tracks (and a disabled
    /// zone still fills [`Track::zones`]), so enabling it again does not replay entries of
    /// objects that were already inside.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<()> {
        match self.rules.iter_mut().find(|r| r.cfg.name == name) {
            Some(r) => {
                r.cfg.enabled = enabled;
                Ok(())
            }
            None => Err(Error::Other(format!("rules: no rule named '{name}'"))),
        }
    }

    /// Evaluate one frame. Looks at confirmed and lost tracks (a lost track stays where it was
    /// last seen, so it triggers nothing new but still counts as present); sets each one's
    /// `zones` and clears tentative ones'. Per-track state of tracks that are gone is dropped.
    pub fn evaluate(&mut self, frame_id: u64, ts: f64, tracks: &mut [Track]) -> Vec<Alert> {
        let ts = if ts.is_finite() { ts } else { self.last_ts };
        self.last_ts = ts;
        let live: HashSet<u64> = tracks
            .iter()
            .filter(|t| t.is_established())
            .map(|t| t.id)
            .collect();
        self.per_track.retain(|id, _| live.contains(id));

        let ctx = Ctx {
            camera: &self.camera,
            frame_id,
            ts,
        };
        let mut alerts = Vec::new();
        let n_rules = self.rules.len();
        for t in tracks.iter_mut() {
            t.zones.clear();
            if !t.is_established() {
                continue;
            }
            let Some(p) = ref_point(&t.bbox, self.frame_w, self.frame_h) else {
                continue;
            };
            let states = self
                .per_track
                .entry(t.id)
                .or_insert_with(|| vec![TrackRuleState::default(); n_rules]);
            for (rule, st) in self.rules.iter().zip(states.iter_mut()) {
                if !rule.accepts(&t.label) {
                    continue;
                }
                track_rule(&ctx, rule, &self.rules, st, t, p, self.frame_h, &mut alerts);
            }
        }

        for i in 0..self.rules.len() {
            let Geometry::Count {
                zone,
                min,
                duration,
                absence,
            } = self.rules[i].geo
            else {
                continue;
            };
            let rule = &self.rules[i];
            let (w, h) = (self.frame_w, self.frame_h);
            let mut ids = Vec::new();
            let mut labels = Vec::new();
            for t in tracks.iter().filter(|t| t.is_established()) {
                let counted = rule.accepts(&t.label)
                    && ref_point(&t.bbox, w, h)
                        .is_some_and(|p| zone.is_none_or(|z| in_zone(&self.rules, z, p)));
                if counted {
                    ids.push(t.id);
                    labels.push(t.label.to_string());
                }
            }
            ids.sort_unstable();
            labels.sort_unstable();
            labels.dedup();
            let n = ids.len();
            let raw = if absence { n == 0 } else { n >= min as usize };
            let zone_name = zone.map(|z| self.rules[z].cfg.name.clone());
            let cond = FrameCondition {
                raw,
                n,
                ids,
                labels,
                zone: zone_name,
                min,
                duration,
                absence,
            };
            frame_rule(&ctx, &mut self.rules[i], cond, &mut alerts);
        }
        alerts
    }
}

struct FrameCondition {
    raw: bool,
    n: usize,
    ids: Vec<u64>,
    labels: Vec<String>,
    zone: Option<String>,
    min: u32,
    duration: f64,
    absence: bool,
}

fn frame_rule(ctx: &Ctx, rule: &mut Rule, c: FrameCondition, alerts: &mut Vec<Alert>) {
    let debounce = rule.debounce();
    let st = &mut rule.frame;
    st.deb.step(c.raw, debounce, ctx.ts);
    if !st.deb.value {
        st.fired = false;
        return;
    }
    let held = ctx.ts - st.deb.since;
    if st.fired || held < c.duration || !rule.cfg.enabled {
        return;
    }
    if !cooled(&mut st.last_fire, rule.cfg.cooldown, ctx.ts) {
        return;
    }
    st.fired = true;
    let place = match &c.zone {
        Some(z) => format!("in zone '{z}'"),
        None => "in view".to_string(),
    };
    // One label is named; a mix, or none, is "objects".
    let label = match c.labels.as_slice() {
        [one] => one.clone(),
        _ => "object".to_string(),
    };
    let (kind, message) = if c.absence {
        let what = if rule.cfg.classes.is_empty() {
            "objects".to_string()
        } else {
            let p: Vec<String> = rule.cfg.classes.iter().map(|c| plural(c)).collect();
            p.join(" or ")
        };
        (
            AlertKind::Absence,
            format!("no {what} {place} for {}", secs(held)),
        )
    } else if rule.cfg.kind == RuleKind::Presence {
        let mut m = format!("{} present {place}", counted(c.n, &label));
        if c.duration > 0.0 {
            m.push_str(&format!(" for {}", secs(held)));
        }
        (AlertKind::Presence, m)
    } else {
        (
            AlertKind::Count,
            format!("{} {place} (threshold {})", counted(c.n, &label), c.min),
        )
    };
    let labels = if c.absence {
        rule.cfg.classes.clone()
    } else {
        c.labels
    };
    let details = AlertDetails {
        zone: c.zone,
        duration_s: (c.duration > 0.0).then_some(round3(held)),
        count: Some(c.n),
        threshold: (!c.absence).then_some(c.min),
        ..Default::default()
    };
    alerts.push(ctx.alert(rule, kind, c.ids, labels, message, details));
}

struct Ctx<'a> {
    camera: &'a str,
    frame_id: u64,
    ts: f64,
}

impl Ctx<'_> {
    fn alert(
        &self,
        rule: &Rule,
        kind: AlertKind,
        track_ids: Vec<u64>,
        labels: Vec<String>,
        message: String,
        details: AlertDetails,
    ) -> Alert {
        let id = match track_ids.as_slice() {
            [one] if is_per_track(kind) => {
                format!("{}-{}-{}-{one}", rule.cfg.name, kind.name(), self.frame_id)
            }
            _ => format!("{}-{}-{}", rule.cfg.name, kind.name(), self.frame_id),
        };
        Alert {
            id,
            rule: rule.cfg.name.clone(),
            kind,
            severity: rule.cfg.severity,
            camera: self.camera.to_string(),
            ts: self.ts,
            frame_id: self.frame_id,
            track_ids,
            labels,
            message,
            details,
            verification: None,
        }
    }
}

fn is_per_track(kind: AlertKind) -> bool {
    !matches!(
        kind,
        AlertKind::Count | AlertKind::Presence | AlertKind::Absence
    )
}

/// Whether an alert may fire now, given when it last fired; records the firing.
fn cooled(last: &mut Option<f64>, cooldown: f64, ts: f64) -> bool {
    if last.is_some_and(|l| ts - l < cooldown) {
        return false;
    }
    *last = Some(ts);
    true
}

#[allow(clippy::too_many_arguments)]
fn track_rule(
    ctx: &Ctx,
    rule: &Rule,
    all: &[Rule],
    st: &mut TrackRuleState,
    t: &mut Track,
    p: Pt,
    frame_h: f32,
    alerts: &mut Vec<Alert>,
) {
    let name = &rule.cfg.name;
    let details = || AlertDetails {
        bbox: Some(t.bbox.rounded()),
        point: Some([round4(p.0), round4(p.1)]),
        ..Default::default()
    };
    let mut out: Vec<(AlertKind, String, AlertDetails)> = Vec::new();
    match &rule.geo {
        Geometry::Zone {
            poly,
            entry,
            exit,
            dwell,
        } => {
            let zone_details = || AlertDetails {
                zone: Some(name.clone()),
                ..details()
            };
            if st.deb.step(inside(poly, p), rule.debounce(), ctx.ts) {
                if st.deb.value && *entry {
                    out.push((
                        AlertKind::Entry,
                        format!("{} entered zone '{name}'", t.label),
                        zone_details(),
                    ));
                } else if !st.deb.value {
                    st.fired = false;
                    if *exit {
                        out.push((
                            AlertKind::Exit,
                            format!("{} left zone '{name}'", t.label),
                            zone_details(),
                        ));
                    }
                }
            }
            if st.deb.value {
                t.zones.push(name.clone());
                let stayed = ctx.ts - st.deb.since;
                if let Some(dwell) = dwell {
                    if !st.fired && stayed >= *dwell {
                        out.push((
                            AlertKind::Dwell,
                            format!(
                                "{} has stayed in zone '{name}' for {}",
                                t.label,
                                secs(stayed)
                            ),
                            AlertDetails {
                                duration_s: Some(round3(stayed)),
                                ..zone_details()
                            },
                        ));
                    }
                }
            }
        }
        Geometry::Line { a, b, direction } => {
            if let Some((from, to)) = line_step(st, *a, *b, p, rule.debounce()) {
                let went = if from == Side::A && to == Side::B {
                    Direction::AToB
                } else {
                    Direction::BToA
                };
                if *direction == Direction::Any || *direction == went {
                    let arrow = if went == Direction::AToB {
                        "a→b"
                    } else {
                        "b→a"
                    };
                    out.push((
                        AlertKind::Crossing,
                        format!("{} crossed line '{name}' ({arrow})", t.label),
                        AlertDetails {
                            direction: Some(went),
                            ..details()
                        },
                    ));
                }
            }
        }
        Geometry::Proximity {
            default,
            per_class,
            zone,
        } => {
            let th = per_class
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(&t.label))
                .map_or(*default, |(_, n)| *n);
            let near = th.y.is_some_and(|y| t.bbox.y2 / frame_h >= y)
                || th.height.is_some_and(|h| t.bbox.height() / frame_h >= h);
            let raw = near && zone.is_none_or(|z| in_zone(all, z, p));
            st.deb.step(raw, rule.debounce(), ctx.ts);
            if !st.deb.value {
                st.fired = false;
            } else if !st.fired {
                let place =
                    zone.map_or(String::new(), |z| format!(" in zone '{}'", all[z].cfg.name));
                out.push((
                    AlertKind::Proximity,
                    format!("{} is near the camera{place}", t.label),
                    AlertDetails {
                        zone: zone.map(|z| all[z].cfg.name.clone()),
                        ..details()
                    },
                ));
            }
        }
        Geometry::Count { .. } => {}
    }
    for (kind, message, details) in out {
        // Level-like alerts suppressed by the cooldown or a disabled rule stay armed and fire
        // once allowed; edge-like ones are simply dropped.
        let level = matches!(kind, AlertKind::Dwell | AlertKind::Proximity);
        if !rule.cfg.enabled {
            continue;
        }
        if !cooled(&mut st.last_fire[kind as usize], rule.cfg.cooldown, ctx.ts) {
            continue;
        }
        if level {
            st.fired = true;
        }
        alerts.push(ctx.alert(
            rule,
            kind,
            vec![t.id],
            vec![t.label.to_string()],
            message,
            details,
        ));
    }
}

/// Advance a track's line state to point `p`; returns `(from, to)` when a debounced crossing
/// through the segment completes.
fn line_step(st: &mut TrackRuleState, a: Pt, b: Pt, p: Pt, debounce: u32) -> Option<(Side, Side)> {
    // A point on the line is on neither side: touching the line changes nothing.
    let s = side(a, b, p)?;
    let mut crossed = None;
    match st.last_strict {
        None => st.side = Some(s),
        Some((prev_s, prev_p)) if prev_s != s => {
            st.pending = (st.side != Some(s)).then(|| PendingCross {
                side: s,
                frames: 0,
                through: segments_cross(prev_p, p, a, b),
            });
        }
        Some(_) => {}
    }
    if let Some(pc) = &mut st.pending {
        if pc.side == s {
            pc.frames += 1;
            if pc.frames >= debounce {
                let from = st.side;
                let through = pc.through;
                st.side = Some(s);
                st.pending = None;
                if through {
                    crossed = from.map(|f| (f, s));
                }
            }
        } else {
            st.pending = None;
        }
    }
    st.last_strict = Some((s, p));
    crossed
}

fn in_zone(all: &[Rule], z: usize, p: Pt) -> bool {
    match &all[z].geo {
        Geometry::Zone { poly, .. } => inside(poly, p),
        _ => false,
    }
}

/// Bottom-centre of the box, normalised; `None` for a box that is not finite.
fn ref_point(b: &BBox, w: f32, h: f32) -> Option<Pt> {
    let p = ((b.x1 + b.x2) / 2.0 / w, b.y2 / h);
    (p.0.is_finite() && p.1.is_finite()).then_some(p)
}

fn cross(o: Pt, a: Pt, b: Pt) -> f32 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

fn side(a: Pt, b: Pt, p: Pt) -> Option<Side> {
    let c = cross(a, b, p);
    if c.abs() < 1e-9 {
        None
    } else if c < 0.0 {
        Some(Side::A)
    } else {
        Some(Side::B)
    }
}

/// Whether the move p→q passes through segment a–b. The caller knows p and q are on opposite
/// sides of the line through a and b; this checks a and b are not both on one side of p→q.
fn segments_cross(p: Pt, q: Pt, a: Pt, b: Pt) -> bool {
    let d1 = cross(p, q, a);
    let d2 = cross(p, q, b);
    d1 * d2 <= 0.0
}

/// Even-odd ray casting; a point exactly on an edge may land either way, which the debounce and
/// the reference point's frame-to-frame motion make harmless.
fn inside(poly: &[Pt], p: Pt) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > p.1) != (yj > p.1) && p.0 < (xj - xi) * (p.1 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round4(v: f32) -> f32 {
    (v * 10000.0).round() / 10000.0
}

/// "12 s", "2.5 s".
fn secs(s: f64) -> String {
    if (s - s.round()).abs() < 0.05 {
        format!("{:.0} s", s.round())
    } else {
        format!("{s:.1} s")
    }
}

type KeyError = (String, String);

fn key_err<T>(key: &str, reason: impl Into<String>) -> std::result::Result<T, KeyError> {
    Err((key.to_string(), reason.into()))
}

fn compile(
    i: usize,
    r: &RuleConfig,
    all: &[RuleConfig],
) -> std::result::Result<Geometry, KeyError> {
    if r.name.trim().is_empty() {
        return key_err("name", "is empty");
    }
    if r.name.chars().any(char::is_control) || r.name.len() > 100 {
        return key_err(
            "name",
            "must be at most 100 characters, without control characters",
        );
    }
    if let Some(j) = all[..i].iter().position(|o| o.name == r.name) {
        return key_err("name", format!("rules[{j}] has the same name"));
    }
    if !(r.cooldown.is_finite() && r.cooldown >= 0.0) {
        return key_err(
            "cooldown",
            format!("{} is not a number of seconds ≥ 0", r.cooldown),
        );
    }
    if let Some(c) = r.classes.iter().find(|c| c.trim().is_empty()) {
        return key_err("classes", format!("{c:?} is not a label"));
    }
    let kind = r.kind;
    // Keys that only some kinds use; any other kind rejects them.
    let specific: [(&str, bool, &[RuleKind]); 11] = [
        ("polygon", r.polygon.is_some(), &[RuleKind::Zone]),
        ("triggers", !r.triggers.is_empty(), &[RuleKind::Zone]),
        ("dwell", r.dwell.is_some(), &[RuleKind::Zone]),
        ("line", r.line.is_some(), &[RuleKind::Line]),
        ("direction", r.direction.is_some(), &[RuleKind::Line]),
        ("near_y", r.near_y.is_some(), &[RuleKind::Proximity]),
        (
            "near_height",
            r.near_height.is_some(),
            &[RuleKind::Proximity],
        ),
        ("per_class", !r.per_class.is_empty(), &[RuleKind::Proximity]),
        (
            "zone",
            r.zone.is_some(),
            &[
                RuleKind::Proximity,
                RuleKind::Count,
                RuleKind::Presence,
                RuleKind::Absence,
            ],
        ),
        (
            "min_count",
            r.min_count.is_some(),
            &[RuleKind::Count, RuleKind::Presence],
        ),
        (
            "duration",
            r.duration.is_some(),
            &[RuleKind::Count, RuleKind::Presence, RuleKind::Absence],
        ),
    ];
    for (key, set, kinds) in specific {
        if set && !kinds.contains(&kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return key_err(
                key,
                format!(
                    "does not apply to kind '{}' (only to {})",
                    kind.name(),
                    names.join(", ")
                ),
            );
        }
    }
    let zone_ref = |key: &str| -> std::result::Result<Option<usize>, KeyError> {
        let Some(z) = &r.zone else { return Ok(None) };
        match all
            .iter()
            .position(|o| &o.name == z && o.kind == RuleKind::Zone)
        {
            Some(j) => Ok(Some(j)),
            None => {
                let zones: Vec<&str> = all
                    .iter()
                    .filter(|o| o.kind == RuleKind::Zone)
                    .map(|o| o.name.as_str())
                    .collect();
                key_err(
                    key,
                    format!(
                        "no zone rule named '{z}' (zones: {})",
                        if zones.is_empty() {
                            "none".to_string()
                        } else {
                            zones.join(", ")
                        }
                    ),
                )
            }
        }
    };
    let duration = || -> std::result::Result<f64, KeyError> {
        let d = r.duration.unwrap_or(0.0);
        if !(d.is_finite() && d >= 0.0) {
            return key_err("duration", format!("{d} is not a number of seconds ≥ 0"));
        }
        Ok(d)
    };
    Ok(match kind {
        RuleKind::Zone => {
            let Some(poly) = &r.polygon else {
                return key_err("polygon", "is required for kind 'zone'");
            };
            let poly = polygon(poly)?;
            let has = |t| r.triggers.contains(&t);
            let dwell = match (has(ZoneTrigger::Dwell), r.dwell) {
                (true, None) => return key_err("dwell", "is required when triggers has \"dwell\""),
                (false, Some(_)) => {
                    return key_err("dwell", "is set but triggers does not include \"dwell\"")
                }
                (true, Some(d)) if !(d.is_finite() && d >= 0.0) => {
                    return key_err("dwell", format!("{d} is not a number of seconds ≥ 0"))
                }
                (_, d) => d,
            };
            Geometry::Zone {
                poly,
                entry: has(ZoneTrigger::Entry),
                exit: has(ZoneTrigger::Exit),
                dwell,
            }
        }
        RuleKind::Line => {
            let Some([a, b]) = r.line else {
                return key_err("line", "is required for kind 'line'");
            };
            let (a, b) = (point("line", a)?, point("line", b)?);
            if (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6 {
                return key_err("line", "its two points are the same");
            }
            Geometry::Line {
                a,
                b,
                direction: r.direction.unwrap_or_default(),
            }
        }
        RuleKind::Proximity => {
            let default = near("", r.near_y, r.near_height)?;
            if default.y.is_none() && default.height.is_none() && r.per_class.is_empty() {
                return key_err("near_y", "proximity needs near_y, near_height or per_class");
            }
            let mut per_class = Vec::new();
            for (class, th) in &r.per_class {
                let key = format!("per_class.{class}");
                if !r.classes.is_empty() && !r.classes.iter().any(|c| c.eq_ignore_ascii_case(class))
                {
                    return key_err(&key, format!("'{class}' is not in classes"));
                }
                let n = near(&key, th.near_y, th.near_height)?;
                // A key left out in the override falls back to the rule's own.
                per_class.push((
                    class.clone(),
                    Near {
                        y: n.y.or(default.y),
                        height: n.height.or(default.height),
                    },
                ));
            }
            Geometry::Proximity {
                default,
                per_class,
                zone: zone_ref("zone")?,
            }
        }
        RuleKind::Count | RuleKind::Presence => {
            let min = match (kind, r.min_count) {
                (RuleKind::Count, None) => {
                    return key_err("min_count", "is required for kind 'count'")
                }
                (_, Some(0)) => return key_err("min_count", "must be at least 1"),
                (_, m) => m.unwrap_or(1),
            };
            Geometry::Count {
                zone: zone_ref("zone")?,
                min,
                duration: duration()?,
                absence: false,
            }
        }
        RuleKind::Absence => Geometry::Count {
            zone: zone_ref("zone")?,
            min: 1,
            duration: duration()?,
            absence: true,
        },
    })
}

fn point(key: &str, p: [f32; 2]) -> std::result::Result<Pt, KeyError> {
    if p.iter().all(|v| (0.0..=1.0).contains(v)) {
        Ok((p[0], p[1]))
    } else {
        key_err(
            key,
            format!("point [{}, {}] is outside the frame (0..1)", p[0], p[1]),
        )
    }
}

fn polygon(pts: &[[f32; 2]]) -> std::result::Result<Vec<Pt>, KeyError> {
    if pts.len() < 3 {
        return key_err(
            "polygon",
            format!("needs at least 3 points, got {}", pts.len()),
        );
    }
    if pts.len() > MAX_POLYGON_POINTS {
        return key_err(
            "polygon",
            format!("{} points, at most {MAX_POLYGON_POINTS}", pts.len()),
        );
    }
    let poly = pts
        .iter()
        .map(|&p| point("polygon", p))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Shoelace: a zero area (all points on a line) could never contain anything.
    let area2: f32 = (0..poly.len())
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
            a.0 * b.1 - b.0 * a.1
        })
        .sum();
    if area2.abs() < 1e-9 {
        return key_err("polygon", "has no area");
    }
    Ok(poly)
}

fn near(prefix: &str, y: Option<f32>, h: Option<f32>) -> std::result::Result<Near, KeyError> {
    for (key, v) in [("near_y", y), ("near_height", h)] {
        if let Some(v) = v {
            if !(v > 0.0 && v <= 1.0) {
                let key = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                return key_err(&key, format!("{v} is outside (0, 1]"));
            }
        }
    }
    Ok(Near { y, height: h })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::track::{TrackState, Velocity};

    /// Frames are 1000×1000 so normalised coordinates read as thousandths.
    const W: u32 = 1000;

    /// A 40×100 px box whose bottom-centre is at (x, y), normalised.
    fn tr(id: u64, label: &str, x: f32, y: f32) -> Track {
        let (px, py) = (x * W as f32, y * W as f32);
        Track {
            id,
            label: Arc::from(label),
            class_id: 0,
            score: 0.9,
            bbox: BBox::from([px - 20.0, py - 100.0, px + 20.0, py]),
            velocity: Velocity::default(),
            age_frames: 10,
            hits: 10,
            missed_frames: 0,
            first_seen: 0.0,
            last_seen: 0.0,
            last_frame: 0,
            state: TrackState::Confirmed,
            zones: Vec::new(),
        }
    }

    fn engine(toml: &str) -> RuleEngine {
        RuleEngine::new(parse_rules(toml).unwrap(), W, W)
            .unwrap()
            .with_camera("cam")
    }

    fn err(toml: &str) -> String {
        match parse_rules(toml).and_then(|r| RuleEngine::new(r, W, W)) {
            Ok(_) => panic!("accepted: {toml}"),
            Err(e) => e.to_string(),
        }
    }

    /// Run a single track along `path` (one point per frame, 10 fps); returns (frame, alert).
    fn run_path(e: &mut RuleEngine, label: &str, path: &[(f32, f32)]) -> Vec<(u64, Alert)> {
        let mut out = Vec::new();
        for (f, &(x, y)) in path.iter().enumerate() {
            let mut t = [tr(1, label, x, y)];
            for a in e.evaluate(f as u64, f as f64 * 0.1, &mut t) {
                out.push((f as u64, a));
            }
        }
        out
    }

    fn kinds(alerts: &[(u64, Alert)]) -> Vec<(u64, AlertKind)> {
        alerts.iter().map(|(f, a)| (*f, a.kind)).collect()
    }

    const SQUARE: &str = r#"
        [[rules]]
        name = "crossing"
        kind = "zone"
        polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
        triggers = ["entry", "exit", "dwell"]
        dwell = 0.5
        classes = ["person"]
        severity = "warning"
    "#;

    #[test]
    fn zone_entry_dwell_exit_and_zones_field() {
        let mut e = engine(SQUARE);
        // Walking right along y=0.5, 0.02 a frame: inside for frames 5..=14.
        let path: Vec<(f32, f32)> = (0..30).map(|f| (0.301 + 0.02 * f as f32, 0.5)).collect();
        let alerts = run_path(&mut e, "person", &path);
        assert_eq!(
            kinds(&alerts),
            [
                (5, AlertKind::Entry),
                (10, AlertKind::Dwell),
                (15, AlertKind::Exit)
            ]
        );
        let (_, entry) = &alerts[0];
        assert_eq!(entry.message, "person entered zone 'crossing'");
        assert_eq!(entry.id, "crossing-entry-5-1");
        assert_eq!(entry.severity, Severity::Warning);
        assert_eq!(entry.camera, "cam");
        assert_eq!(entry.track_ids, [1]);
        assert_eq!(entry.details.zone.as_deref(), Some("crossing"));
        assert_eq!(
            alerts[1].1.message,
            "person has stayed in zone 'crossing' for 0.5 s"
        );
        assert_eq!(alerts[2].1.message, "person left zone 'crossing'");

        // `zones` follows the debounced state; tentative tracks get none.
        let mut t = [tr(1, "person", 0.5, 0.5), tr(2, "person", 0.5, 0.5)];
        t[1].state = TrackState::Tentative;
        t[1].id = 0;
        t[1].zones = vec!["stale".into()];
        e.evaluate(30, 3.0, &mut t);
        assert_eq!(t[0].zones, ["crossing"]);
        assert!(t[1].zones.is_empty());
        // A car is not in a person-only zone.
        let mut t = [tr(3, "car", 0.5, 0.5)];
        assert!(e.evaluate(31, 3.1, &mut t).is_empty());
        assert!(t[0].zones.is_empty());
    }

    #[test]
    fn appearing_inside_a_zone_is_an_entry_and_vanishing_is_not_an_exit() {
        let mut e = engine(SQUARE);
        let mut t = [tr(7, "person", 0.5, 0.5)];
        let a = e.evaluate(0, 0.0, &mut t);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::Entry);
        assert!(e.evaluate(1, 0.1, &mut []).is_empty());
        // Its state was dropped: the same id coming back is a fresh entry.
        assert_eq!(e.evaluate(2, 0.2, &mut t).len(), 1);
    }

    #[test]
    fn lost_tracks_trigger_nothing_but_keep_their_zones() {
        let mut e = engine(SQUARE);
        let mut t = [tr(1, "person", 0.5, 0.5)];
        e.evaluate(0, 0.0, &mut t);
        t[0].state = TrackState::Lost;
        // A lost track keeps its last box, so stays inside; it dwells.
        let a = e.evaluate(10, 1.0, &mut t);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::Dwell);
        assert_eq!(t[0].zones, ["crossing"]);
    }

    const LINES: &str = r#"
        [[rules]]
        name = "down"
        kind = "line"
        line = [[0.0, 0.5], [1.0, 0.5]]
        direction = "a_to_b"

        [[rules]]
        name = "up"
        kind = "line"
        line = [[0.0, 0.5], [1.0, 0.5]]
        direction = "b_to_a"

        [[rules]]
        name = "either"
        kind = "line"
        line = [[0.0, 0.5], [1.0, 0.5]]
    "#;

    fn fired(alerts: &[(u64, Alert)]) -> Vec<(u64, &str)> {
        alerts.iter().map(|(f, a)| (*f, a.rule.as_str())).collect()
    }

    #[test]
    fn line_crossing_each_direction() {
        let down: Vec<(f32, f32)> = (0..10).map(|f| (0.5, 0.41 + 0.02 * f as f32)).collect();
        let mut e = engine(LINES);
        let a = run_path(&mut e, "person", &down);
        // y goes 0.49 (frame 4) → 0.51 (frame 5): from above (a) to below (b).
        assert_eq!(fired(&a), [(5, "down"), (5, "either")]);
        assert_eq!(a[0].1.details.direction, Some(Direction::AToB));
        assert_eq!(a[0].1.message, "person crossed line 'down' (a→b)");
        assert_eq!(a[0].1.kind, AlertKind::Crossing);

        let up: Vec<(f32, f32)> = down.iter().rev().copied().collect();
        let mut e = engine(LINES);
        let a = run_path(&mut e, "person", &up);
        assert_eq!(fired(&a), [(5, "up"), (5, "either")]);
        assert_eq!(a[1].1.details.direction, Some(Direction::BToA));

        // Back and forth: each crossing counts.
        let mut e = engine(LINES);
        let path = [(0.5, 0.4), (0.5, 0.6), (0.5, 0.4), (0.5, 0.6)];
        let a = run_path(&mut e, "person", &path);
        assert_eq!(
            fired(&a),
            [
                (1, "down"),
                (1, "either"),
                (2, "up"),
                (2, "either"),
                (3, "down"),
                (3, "either")
            ]
        );
    }

    #[test]
    fn touching_a_line_is_not_crossing_it() {
        let mut e = engine(LINES);
        // Comes down onto the line, stays on it, goes back up.
        let path = [(0.5, 0.45), (0.5, 0.5), (0.5, 0.5), (0.5, 0.45), (0.5, 0.4)];
        assert!(run_path(&mut e, "person", &path).is_empty());
        // Through a point exactly on the line and out the other side is one crossing.
        let mut e = engine(LINES);
        let path = [(0.5, 0.45), (0.5, 0.5), (0.5, 0.55)];
        assert_eq!(
            fired(&run_path(&mut e, "person", &path)),
            [(2, "down"), (2, "either")]
        );
    }

    #[test]
    fn passing_beside_a_line_segment_is_not_crossing_it() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "gate"
            kind = "line"
            line = [[0.2, 0.5], [0.4, 0.5]]
            "#,
        );
        // Straight down at x=0.8, beyond the end of the gate.
        let path: Vec<(f32, f32)> = (0..10).map(|f| (0.8, 0.41 + 0.02 * f as f32)).collect();
        assert!(run_path(&mut e, "person", &path).is_empty());
        // Then walk left under it and back up through it.
        let back = [(0.3, 0.6), (0.3, 0.45)];
        let a = run_path(&mut e, "person", &[path.as_slice(), &back].concat());
        assert_eq!(fired(&a), [(11, "gate")]);
        assert_eq!(a[0].1.details.direction, Some(Direction::BToA));
    }

    #[test]
    fn debounce_ignores_jitter_across_a_line() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "gate"
            kind = "line"
            line = [[0.0, 0.5], [1.0, 0.5]]
            debounce_frames = 3
            "#,
        );
        // One frame below the line, then back: jitter, no crossing.
        let jitter = [(0.5, 0.49), (0.5, 0.51), (0.5, 0.49), (0.5, 0.49)];
        assert!(run_path(&mut e, "person", &jitter).is_empty());
        // Two frames below is still not enough; three is.
        let mut e2 = e.clone();
        let two = [(0.5, 0.49), (0.5, 0.51), (0.5, 0.52), (0.5, 0.49)];
        assert!(run_path(&mut e2, "person", &two).is_empty());
        let three = [
            (0.5, 0.49),
            (0.5, 0.51),
            (0.5, 0.52),
            (0.5, 0.53),
            (0.5, 0.54),
        ];
        assert_eq!(fired(&run_path(&mut e, "person", &three)), [(3, "gate")]);
    }

    #[test]
    fn debounce_delays_zone_entry() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "z"
            kind = "zone"
            polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
            triggers = ["entry", "dwell"]
            dwell = 0.3
            debounce_frames = 3
            "#,
        );
        // In for two frames, out, then in for good.
        let path = [
            (0.5, 0.5),
            (0.5, 0.5),
            (0.3, 0.5),
            (0.5, 0.5),
            (0.5, 0.5),
            (0.5, 0.5),
            (0.5, 0.5),
        ];
        let a = run_path(&mut e, "dog", &path);
        // Entered at frame 5 (third frame inside); dwell counts from frame 3, the first of them.
        assert_eq!(kinds(&a), [(5, AlertKind::Entry), (6, AlertKind::Dwell)]);
        assert_eq!(a[1].1.details.duration_s, Some(0.3));
    }

    #[test]
    fn cooldown_suppresses_repeats() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "z"
            kind = "zone"
            polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
            triggers = ["entry"]
            cooldown = 2.0
            "#,
        );
        // In and out every other frame for 3 s: with a 2 s cooldown, entries at 0 s and 2 s only.
        let mut at = Vec::new();
        for f in 0..30u64 {
            let x = if f % 2 == 0 { 0.5 } else { 0.3 };
            let mut t = [tr(1, "person", x, 0.5)];
            at.extend(e.evaluate(f, f as f64 * 0.1, &mut t).iter().map(|_| f));
        }
        assert_eq!(at, [0, 20]);
        // The cooldown is per track: another person entering meanwhile is reported.
        let mut t = [tr(1, "person", 0.5, 0.5), tr(2, "person", 0.5, 0.5)];
        let a = e.evaluate(30, 3.0, &mut t);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].track_ids, [2]);
    }

    #[test]
    fn proximity_with_per_class_thresholds() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "close"
            kind = "proximity"
            near_y = 0.9
            classes = ["person", "car"]
            severity = "critical"

            [rules.per_class.car]
            near_height = 0.3
            "#,
        );
        // A person walking towards the camera: bottom 0.8 → 0.95 → back to 0.8 → 0.95.
        let path = [
            (0.5, 0.8),
            (0.5, 0.95),
            (0.5, 0.96),
            (0.5, 0.8),
            (0.5, 0.95),
        ];
        let a = run_path(&mut e, "person", &path);
        assert_eq!(
            kinds(&a),
            [(1, AlertKind::Proximity), (4, AlertKind::Proximity)]
        );
        assert_eq!(a[0].1.message, "person is near the camera");
        assert_eq!(a[0].1.severity, Severity::Critical);
        // A car low in the frame but short is not near (its own near_height only is not met, but
        // near_y is inherited); a tall car is.
        let mut e = engine(
            r#"
            [[rules]]
            name = "close"
            kind = "proximity"
            near_y = 0.99
            [rules.per_class.car]
            near_height = 0.3
            "#,
        );
        let mut t = [tr(1, "car", 0.5, 0.95)];
        assert!(e.evaluate(0, 0.0, &mut t).is_empty());
        t[0].bbox.y1 = 600.0;
        assert_eq!(e.evaluate(1, 0.1, &mut t).len(), 1);
        // A dog uses the rule's own threshold only.
        let mut t = [tr(2, "dog", 0.5, 0.995)];
        assert_eq!(e.evaluate(2, 0.2, &mut t).len(), 1);
    }

    #[test]
    fn count_threshold_in_a_zone() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "queue"
            kind = "zone"
            polygon = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]

            [[rules]]
            name = "crowd"
            kind = "count"
            zone = "queue"
            classes = ["person"]
            min_count = 3
            "#,
        );
        let inside = |id| tr(id, "person", 0.25, 0.75);
        let outside = |id| tr(id, "person", 0.75, 0.75);
        let mut t = vec![inside(1), inside(2), outside(3), tr(4, "car", 0.25, 0.75)];
        assert!(e.evaluate(0, 0.0, &mut t).is_empty());
        t[2] = inside(3);
        let a = e.evaluate(1, 0.1, &mut t);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::Count);
        assert_eq!(a[0].id, "crowd-count-1");
        assert_eq!(a[0].track_ids, [1, 2, 3]);
        assert_eq!(a[0].message, "3 people in zone 'queue' (threshold 3)");
        assert_eq!(a[0].details.count, Some(3));
        // Still crowded: no repeat; a fourth makes no difference either.
        t.push(inside(5));
        assert!(e.evaluate(2, 0.2, &mut t).is_empty());
        // Drops below, then crowded again: fires again.
        let mut fewer = vec![inside(1)];
        assert!(e.evaluate(3, 0.3, &mut fewer).is_empty());
        assert_eq!(e.evaluate(4, 0.4, &mut t).len(), 1);
        // The zone rule itself raises nothing (no triggers) but fills zones.
        assert_eq!(t[0].zones, ["queue"]);
        assert!(t[2].zones.contains(&"queue".to_string()));
    }

    #[test]
    fn presence_and_absence_for_a_duration() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "someone"
            kind = "presence"
            classes = ["person"]
            duration = 1.0

            [[rules]]
            name = "unattended"
            kind = "absence"
            classes = ["person"]
            duration = 2.0
            severity = "warning"
            "#,
        );
        let mut log = Vec::new();
        // Person present 0.0..1.5 s, gone 1.5..4.0 s, back at 4.0 s.
        for f in 0..45u64 {
            let ts = f as f64 * 0.1;
            let mut t = if (15..40).contains(&f) {
                vec![tr(9, "cat", 0.5, 0.5)]
            } else {
                vec![tr(1, "person", 0.5, 0.5)]
            };
            for a in e.evaluate(f, ts, &mut t) {
                log.push((f, a.kind, a.message));
            }
        }
        assert_eq!(
            log,
            [
                (
                    10,
                    AlertKind::Presence,
                    "a person present in view for 1 s".to_string()
                ),
                (
                    35,
                    AlertKind::Absence,
                    "no people in view for 2 s".to_string()
                ),
            ]
        );
    }

    #[test]
    fn absence_from_the_start() {
        let mut e = engine(
            r#"
            [[rules]]
            name = "empty"
            kind = "absence"
            duration = 0.5
            "#,
        );
        let fired: Vec<u64> = (0..20u64)
            .filter(|&f| !e.evaluate(f, f as f64 * 0.1, &mut []).is_empty())
            .collect();
        assert_eq!(fired, [5]);
    }

    #[test]
    fn rules_can_be_disabled_at_run_time() {
        let mut e = engine(SQUARE);
        e.set_enabled("crossing", false).unwrap();
        let mut t = [tr(1, "person", 0.5, 0.5)];
        assert!(e.evaluate(0, 0.0, &mut t).is_empty());
        // Still follows the track: zones filled, and enabling does not replay the entry.
        assert_eq!(t[0].zones, ["crossing"]);
        e.set_enabled("crossing", true).unwrap();
        assert!(e.rules().next().unwrap().enabled);
        // The dwell, a level, fires once enabled and long enough.
        let a = e.evaluate(1, 0.6, &mut t);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::Dwell);
        let msg = e.set_enabled("nope", true).unwrap_err().to_string();
        assert!(msg.contains("'nope'"), "{msg}");
    }

    #[test]
    fn full_example_parses() {
        let text = r#"
            [[rules]]
            name = "crossing"
            kind = "zone"
            polygon = [[0.1, 0.6], [0.9, 0.6], [0.9, 1.0], [0.1, 1.0]]
            triggers = ["entry", "exit", "dwell"]
            dwell = 20
            classes = ["person"]
            severity = "warning"
            debounce_frames = 2
            cooldown = 10

            [[rules]]
            name = "gate"
            kind = "line"
            line = [[0.3, 0.5], [0.7, 0.5]]
            direction = "a_to_b"
            classes = ["person", "bicycle"]

            [[rules]]
            name = "too-close"
            kind = "proximity"
            near_y = 0.95
            near_height = 0.5
            per_class = { car = { near_height = 0.35 } }
            severity = "critical"

            [[rules]]
            name = "crowd"
            kind = "count"
            zone = "crossing"
            classes = ["person"]
            min_count = 5
            duration = 3

            [[rules]]
            name = "dog-about"
            kind = "presence"
            classes = ["dog"]
            duration = 5
            enabled = false

            [[rules]]
            name = "guard-away"
            kind = "absence"
            zone = "crossing"
            classes = ["person"]
            duration = 60
        "#;
        let rules = parse_rules(text).unwrap();
        assert_eq!(rules.len(), 6);
        assert_eq!(rules[0].dwell, Some(20.0));
        assert!(!rules[4].enabled);
        let e = RuleEngine::new(rules.clone(), 1280, 720).unwrap();
        assert_eq!(e.rules().count(), 6);
        // Round trip through TOML.
        #[derive(Serialize)]
        struct F<'a> {
            rules: &'a [RuleConfig],
        }
        let again = toml::to_string(&F { rules: &rules }).unwrap();
        assert_eq!(parse_rules(&again).unwrap(), rules);
        assert!(parse_rules("").unwrap().is_empty());
    }

    #[test]
    fn bad_rules_are_reported_with_their_key() {
        let base = "[[rules]]\nname = \"z\"\nkind = \"zone\"\n";
        let cases: &[(&str, &str)] = &[
            (
                "polygon = [[0.1, 0.1], [0.2, 0.2]]",
                "rules[0].polygon (rule 'z'): needs at least 3",
            ),
            (
                "polygon = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]",
                "rules[0].polygon (rule 'z'): has no area",
            ),
            (
                "polygon = [[0.1, 0.1], [0.2, 1.2], [0.3, 0.1]]",
                "rules[0].polygon (rule 'z'): point [0.2, 1.2] is outside",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\ntriggers = [\"dwell\"]",
                "rules[0].dwell (rule 'z'): is required",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\ndwell = 3",
                "rules[0].dwell (rule 'z'): is set but",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\ncooldown = -1",
                "rules[0].cooldown",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\nline = [[0, 0], [1, 1]]",
                "rules[0].line (rule 'z'): does not apply to kind 'zone'",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\nmin_count = 2",
                "rules[0].min_count",
            ),
            ("", "rules[0].polygon (rule 'z'): is required"),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\npolgon = 1",
                "unknown field `polgon`",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\ntriggers = [\"enter\"]",
                "unknown variant `enter`",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\ncooldown = \"5s\"",
                "cooldown",
            ),
            (
                "polygon = [[0, 0], [1, 0], [1, 1]]\nseverity = \"high\"",
                "unknown variant `high`",
            ),
        ];
        for (extra, want) in cases {
            let msg = err(&format!("{base}{extra}\n"));
            assert!(msg.contains(want), "for {extra:?}: {msg}");
        }
        let msg =
            err("[[rules]]\nname = \"c\"\nkind = \"count\"\nmin_count = 2\nzone = \"nowhere\"\n");
        assert!(
            msg.contains("rules[0].zone (rule 'c'): no zone rule named 'nowhere' (zones: none)"),
            "{msg}"
        );
        let msg = err("[[rules]]\nname = \"c\"\nkind = \"count\"\n");
        assert!(
            msg.contains("rules[0].min_count (rule 'c'): is required"),
            "{msg}"
        );
        let msg =
            err("[[rules]]\nname = \"l\"\nkind = \"line\"\nline = [[0.5, 0.5], [0.5, 0.5]]\n");
        assert!(msg.contains("rules[0].line"), "{msg}");
        let msg = err("[[rules]]\nname = \"p\"\nkind = \"proximity\"\nclasses = [\"person\"]\nper_class.car.near_y = 0.5\n");
        assert!(
            msg.contains("rules[0].per_class.car (rule 'p'): 'car' is not in classes"),
            "{msg}"
        );
        let msg = err("[[rules]]\nname = \"p\"\nkind = \"proximity\"\nnear_y = 1.5\n");
        assert!(msg.contains("rules[0].near_y"), "{msg}");
        let msg = err("[[rules]]\nname = \"a\"\nkind = \"absence\"\n[[rules]]\nname = \"a\"\nkind = \"absence\"\n");
        assert!(
            msg.contains("rules[1].name (rule 'a'): rules[0] has the same name"),
            "{msg}"
        );
        let msg = err("[[rules]]\nname = \"a\"\nkind = \"zonez\"\n");
        assert!(msg.contains("unknown variant `zonez`"), "{msg}");
        let msg = err("[[rule]]\nname = \"a\"\n");
        assert!(msg.contains("unknown field `rule`"), "{msg}");
        assert!(RuleEngine::new(Vec::new(), 0, 10).is_err());
    }

    #[test]
    fn load_rules_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules.toml");
        std::fs::write(&p, "[[rules]]\nname = 3\n").unwrap();
        let msg = load_rules(&p).unwrap_err().to_string();
        assert!(msg.contains("rules.toml") && msg.contains("name"), "{msg}");
        std::fs::write(&p, SQUARE).unwrap();
        assert_eq!(load_rules(&p).unwrap().len(), 1);
        assert!(load_rules(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn alerts_serialise() {
        let mut e = engine(SQUARE);
        let mut t = [tr(4, "person", 0.5, 0.5)];
        let a = e.evaluate(3, 0.3, &mut t);
        let v = serde_json::to_value(&a[0]).unwrap();
        assert_eq!(v["kind"], "entry");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["labels"], serde_json::json!(["person"]));
        assert_eq!(v["details"]["zone"], "crossing");
        assert_eq!(v["details"]["point"], serde_json::json!([0.5, 0.5]));
        assert!(v["details"].get("count").is_none());
    }
}

//! The per-frame evaluation: [`RuleEngine::evaluate`] runs every compiled rule over one frame's
//! tracks, keeps the per-track and per-rule state that debounce, dwell, cooldown and line sides
//! need between frames, and returns the alerts raised plus which zones each track is in.

use std::collections::{HashMap, HashSet};

use super::alert::{Alert, AlertDetails, AlertKind, AlertType};
use super::compile::{compile_all, Check};
use super::config::{Direction, RuleConfig, RuleKind};
use super::error::RuleError;
use super::geometry::{inside, ref_point, segments_cross, side, Pt, Side};
use crate::scene::text::{counted, plural};
use crate::scene::ZoneMembership;
use crate::track::Track;

/// What one frame's evaluation produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// In rule order per track, then the frame-wide rules (count, presence, absence).
    pub alerts: Vec<Alert>,
    /// The zones each confirmed or lost track is in, after debouncing.
    pub zones: ZoneMembership,
}

#[derive(Debug, Clone)]
struct Rule {
    cfg: RuleConfig,
    check: Check,
    frame: FrameState,
}

impl Rule {
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

fn frame_size(frame_w: u32, frame_h: u32) -> Result<(f32, f32), RuleError> {
    if frame_w == 0 || frame_h == 0 {
        return Err(RuleError::EmptyFrame {
            width: frame_w,
            height: frame_h,
        });
    }
    Ok((frame_w as f32, frame_h as f32))
}

impl RuleEngine {
    /// Checks every rule; the error names the rule and the key, e.g.
    /// `rules[2].polygon (rule 'door'): needs at least 3 points, got 2`.
    pub fn new(rules: Vec<RuleConfig>, frame_w: u32, frame_h: u32) -> Result<Self, RuleError> {
        let (frame_w, frame_h) = frame_size(frame_w, frame_h)?;
        let checks = compile_all(&rules)?;
        let rules = rules
            .into_iter()
            .zip(checks)
            .map(|(cfg, check)| Rule {
                cfg,
                check,
                frame: FrameState::default(),
            })
            .collect();
        Ok(RuleEngine {
            camera: "camera".into(),
            frame_w,
            frame_h,
            rules,
            per_track: HashMap::new(),
            last_ts: 0.0,
        })
    }

    /// The camera name put in alerts.
    pub fn with_camera(mut self, camera: impl Into<String>) -> Self {
        self.camera = camera.into();
        self
    }

    pub fn set_frame_size(&mut self, frame_w: u32, frame_h: u32) -> Result<(), RuleError> {
        (self.frame_w, self.frame_h) = frame_size(frame_w, frame_h)?;
        Ok(())
    }

    /// The rules, with `enabled` as it is now.
    pub fn rules(&self) -> impl Iterator<Item = &RuleConfig> {
        self.rules.iter().map(|r| &r.cfg)
    }

    /// Turn a rule's alerts on or off. A disabled rule keeps following the tracks (and a disabled
    /// zone still counts in [`Evaluation::zones`]), so enabling it again does not replay entries
    /// of objects that were already inside.
    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<(), RuleError> {
        match self.rules.iter_mut().find(|r| r.cfg.name == name) {
            Some(r) => {
                r.cfg.enabled = enabled;
                Ok(())
            }
            None => Err(RuleError::UnknownRule(name.to_string())),
        }
    }

    /// Evaluate one frame. Looks at confirmed and lost tracks (a lost track stays where it was
    /// last seen, so it triggers nothing new but still counts as present); tentative ones are in
    /// no zone. Per-track state of tracks that are gone is dropped.
    pub fn evaluate(&mut self, frame_id: u64, ts: f64, tracks: &[Track]) -> Evaluation {
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
            frame_h: self.frame_h,
        };
        let mut out = Evaluation::default();
        let n_rules = self.rules.len();
        for t in tracks.iter().filter(|t| t.is_established()) {
            let Some(p) = ref_point(&t.bbox, self.frame_w, self.frame_h) else {
                continue;
            };
            let states = self
                .per_track
                .entry(t.id)
                .or_insert_with(|| vec![TrackRuleState::default(); n_rules]);
            for (rule, st) in self.rules.iter().zip(states.iter_mut()) {
                if !rule.cfg.accepts(&t.label) {
                    continue;
                }
                track_rule(&ctx, rule, &self.rules, st, t, p, &mut out.alerts);
                if matches!(rule.check, Check::Zone { .. }) && st.deb.value {
                    out.zones.add(t.id, rule.cfg.name.clone());
                }
            }
        }

        for i in 0..self.rules.len() {
            let Check::Count {
                zone,
                min,
                duration,
                absence,
            } = self.rules[i].check
            else {
                continue;
            };
            let rule = &self.rules[i];
            let (w, h) = (self.frame_w, self.frame_h);
            let mut ids = Vec::new();
            let mut labels = Vec::new();
            for t in tracks.iter().filter(|t| t.is_established()) {
                let counted = rule.cfg.accepts(&t.label)
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
            frame_rule(&ctx, &mut self.rules[i], cond, &mut out.alerts);
        }
        out
    }
}

/// A frame-wide rule's (count, presence, absence) view of the current frame.
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

/// What every alert of one frame shares.
struct Ctx<'a> {
    camera: &'a str,
    frame_id: u64,
    ts: f64,
    frame_h: f32,
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
            [one] if kind.is_per_track() => {
                format!("{}-{}-{}-{one}", rule.cfg.name, kind.name(), self.frame_id)
            }
            _ => format!("{}-{}-{}", rule.cfg.name, kind.name(), self.frame_id),
        };
        Alert {
            id,
            message_type: AlertType::New,
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
            snapshot: None,
            clip: None,
        }
    }
}

/// Whether an alert may fire now, given when it last fired; records the firing.
fn cooled(last: &mut Option<f64>, cooldown: f64, ts: f64) -> bool {
    if last.is_some_and(|l| ts - l < cooldown) {
        return false;
    }
    *last = Some(ts);
    true
}

/// One per-track rule (zone, line, proximity) on one track at reference point `p`.
fn track_rule(
    ctx: &Ctx,
    rule: &Rule,
    all: &[Rule],
    st: &mut TrackRuleState,
    t: &Track,
    p: Pt,
    alerts: &mut Vec<Alert>,
) {
    let name = &rule.cfg.name;
    let details = || AlertDetails {
        bbox: Some(t.bbox.rounded()),
        point: Some([round4(p.0), round4(p.1)]),
        ..Default::default()
    };
    let mut out: Vec<(AlertKind, String, AlertDetails)> = Vec::new();
    match &rule.check {
        Check::Zone {
            poly,
            entry,
            exit,
            dwell,
        } => {
            let zone_details = || AlertDetails {
                zone: Some(name.clone()),
                ..details()
            };
            // When the current stay began: an exit says how long it lasted.
            let stay_began = st.deb.since;
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
                        // From the first frame seen inside to the first seen outside again.
                        let stayed = st.deb.since - stay_began;
                        out.push((
                            AlertKind::Exit,
                            format!("{} left zone '{name}' after {}", t.label, secs(stayed)),
                            AlertDetails {
                                duration_s: Some(round3(stayed)),
                                ..zone_details()
                            },
                        ));
                    }
                }
            }
            if st.deb.value {
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
        Check::Line { a, b, direction } => {
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
        Check::Proximity {
            default,
            per_class,
            zone,
        } => {
            let th = per_class
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(&t.label))
                .map_or(*default, |(_, n)| *n);
            let near = th.y.is_some_and(|y| t.bbox.y2 / ctx.frame_h >= y)
                || th
                    .height
                    .is_some_and(|h| t.bbox.height() / ctx.frame_h >= h);
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
        Check::Count { .. } => {}
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
    match &all[z].check {
        Check::Zone { poly, .. } => inside(poly, p),
        _ => false,
    }
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

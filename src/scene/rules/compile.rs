//! Rule configs into the form the engine evaluates ([`Check`]): every value checked once, zone
//! references resolved to indices, points turned into geometry. A bad value is reported as a
//! [`RuleError::Key`] naming the rule and the key, so the message says which line to fix.

use super::config::{Direction, RuleConfig, RuleKind, ZoneTrigger};
use super::error::RuleError;
use super::geometry::{twice_area, Pt};

/// Upper bounds on what a rule file may ask for, so a broken or hostile file cannot make every
/// frame expensive.
const MAX_RULES: usize = 1000;
const MAX_POLYGON_POINTS: usize = 256;

/// Proximity thresholds as fractions of the frame height; `None` does not apply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Near {
    pub y: Option<f32>,
    pub height: Option<f32>,
}

/// What one rule checks each frame.
#[derive(Debug, Clone)]
pub(super) enum Check {
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
        /// Index of the zone rule it is limited to.
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

/// Compile every rule, in order; the first bad one is the error.
pub(super) fn compile_all(rules: &[RuleConfig]) -> Result<Vec<Check>, RuleError> {
    if rules.len() > MAX_RULES {
        return Err(RuleError::TooMany {
            count: rules.len(),
            max: MAX_RULES,
        });
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            compile(i, r, rules).map_err(|Bad { key, reason }| RuleError::Key {
                index: i,
                rule: r.name.clone(),
                key,
                reason,
            })
        })
        .collect()
}

/// A bad value in one rule, before the rule's index and name are added.
struct Bad {
    key: String,
    reason: String,
}

fn bad<T>(key: &str, reason: impl Into<String>) -> Result<T, Bad> {
    Err(Bad {
        key: key.to_string(),
        reason: reason.into(),
    })
}

fn seconds(key: &str, v: f64) -> Result<f64, Bad> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        bad(key, format!("{v} is not a number of seconds ≥ 0"))
    }
}

/// Keys that only some kinds use; any other kind rejects them, so a misplaced key is reported
/// rather than silently ignored.
fn check_kind_keys(r: &RuleConfig) -> Result<(), Bad> {
    use RuleKind::*;
    let specific: [(&str, bool, &[RuleKind]); 11] = [
        ("polygon", r.polygon.is_some(), &[Zone]),
        ("triggers", !r.triggers.is_empty(), &[Zone]),
        ("dwell", r.dwell.is_some(), &[Zone]),
        ("line", r.line.is_some(), &[Line]),
        ("direction", r.direction.is_some(), &[Line]),
        ("near_y", r.near_y.is_some(), &[Proximity]),
        ("near_height", r.near_height.is_some(), &[Proximity]),
        ("per_class", !r.per_class.is_empty(), &[Proximity]),
        (
            "zone",
            r.zone.is_some(),
            &[Proximity, Count, Presence, Absence],
        ),
        ("min_count", r.min_count.is_some(), &[Count, Presence]),
        (
            "duration",
            r.duration.is_some(),
            &[Count, Presence, Absence],
        ),
    ];
    for (key, set, kinds) in specific {
        if set && !kinds.contains(&r.kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return bad(
                key,
                format!(
                    "does not apply to kind '{}' (only to {})",
                    r.kind.name(),
                    names.join(", ")
                ),
            );
        }
    }
    Ok(())
}

/// Checks common to every kind: the name, the cooldown, the classes.
fn check_common(i: usize, r: &RuleConfig, all: &[RuleConfig]) -> Result<(), Bad> {
    if r.name.trim().is_empty() {
        return bad("name", "is empty");
    }
    if r.name.chars().any(char::is_control) || r.name.len() > 100 {
        return bad(
            "name",
            "must be at most 100 characters, without control characters",
        );
    }
    if let Some(j) = all[..i].iter().position(|o| o.name == r.name) {
        return bad("name", format!("rules[{j}] has the same name"));
    }
    seconds("cooldown", r.cooldown)?;
    if let Some(c) = r.classes.iter().find(|c| c.trim().is_empty()) {
        return bad("classes", format!("{c:?} is not a label"));
    }
    Ok(())
}

/// The index of the zone rule `r.zone` names, if it names one.
fn zone_ref(r: &RuleConfig, all: &[RuleConfig]) -> Result<Option<usize>, Bad> {
    let Some(z) = &r.zone else { return Ok(None) };
    if let Some(j) = all
        .iter()
        .position(|o| &o.name == z && o.kind == RuleKind::Zone)
    {
        return Ok(Some(j));
    }
    let zones: Vec<&str> = all
        .iter()
        .filter(|o| o.kind == RuleKind::Zone)
        .map(|o| o.name.as_str())
        .collect();
    let zones = if zones.is_empty() {
        "none".to_string()
    } else {
        zones.join(", ")
    };
    bad("zone", format!("no zone rule named '{z}' (zones: {zones})"))
}

fn compile(i: usize, r: &RuleConfig, all: &[RuleConfig]) -> Result<Check, Bad> {
    check_common(i, r, all)?;
    check_kind_keys(r)?;
    Ok(match r.kind {
        RuleKind::Zone => zone(r)?,
        RuleKind::Line => {
            let Some([a, b]) = r.line else {
                return bad("line", "is required for kind 'line'");
            };
            let (a, b) = (point("line", a)?, point("line", b)?);
            if (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6 {
                return bad("line", "its two points are the same");
            }
            Check::Line {
                a,
                b,
                direction: r.direction.unwrap_or_default(),
            }
        }
        RuleKind::Proximity => proximity(r, all)?,
        RuleKind::Count | RuleKind::Presence => {
            let min = match (r.kind, r.min_count) {
                (RuleKind::Count, None) => return bad("min_count", "is required for kind 'count'"),
                (_, Some(0)) => return bad("min_count", "must be at least 1"),
                (_, m) => m.unwrap_or(1),
            };
            Check::Count {
                zone: zone_ref(r, all)?,
                min,
                duration: seconds("duration", r.duration.unwrap_or(0.0))?,
                absence: false,
            }
        }
        RuleKind::Absence => Check::Count {
            zone: zone_ref(r, all)?,
            min: 1,
            duration: seconds("duration", r.duration.unwrap_or(0.0))?,
            absence: true,
        },
    })
}

fn zone(r: &RuleConfig) -> Result<Check, Bad> {
    let Some(poly) = &r.polygon else {
        return bad("polygon", "is required for kind 'zone'");
    };
    let poly = polygon(poly)?;
    let has = |t| r.triggers.contains(&t);
    let dwell = match (has(ZoneTrigger::Dwell), r.dwell) {
        (true, None) => return bad("dwell", "is required when triggers has \"dwell\""),
        (false, Some(_)) => return bad("dwell", "is set but triggers does not include \"dwell\""),
        (true, Some(d)) => Some(seconds("dwell", d)?),
        (false, None) => None,
    };
    Ok(Check::Zone {
        poly,
        entry: has(ZoneTrigger::Entry),
        exit: has(ZoneTrigger::Exit),
        dwell,
    })
}

fn proximity(r: &RuleConfig, all: &[RuleConfig]) -> Result<Check, Bad> {
    let default = near("", r.near_y, r.near_height)?;
    if default.y.is_none() && default.height.is_none() && r.per_class.is_empty() {
        return bad("near_y", "proximity needs near_y, near_height or per_class");
    }
    let mut per_class = Vec::new();
    for (class, th) in &r.per_class {
        let key = format!("per_class.{class}");
        if !r.classes.is_empty() && !r.accepts(class) {
            return bad(&key, format!("'{class}' is not in classes"));
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
    Ok(Check::Proximity {
        default,
        per_class,
        zone: zone_ref(r, all)?,
    })
}

fn point(key: &str, p: [f32; 2]) -> Result<Pt, Bad> {
    if p.iter().all(|v| (0.0..=1.0).contains(v)) {
        Ok((p[0], p[1]))
    } else {
        bad(
            key,
            format!("point [{}, {}] is outside the frame (0..1)", p[0], p[1]),
        )
    }
}

fn polygon(pts: &[[f32; 2]]) -> Result<Vec<Pt>, Bad> {
    if pts.len() < 3 {
        return bad(
            "polygon",
            format!("needs at least 3 points, got {}", pts.len()),
        );
    }
    if pts.len() > MAX_POLYGON_POINTS {
        return bad(
            "polygon",
            format!("{} points, at most {MAX_POLYGON_POINTS}", pts.len()),
        );
    }
    let poly = pts
        .iter()
        .map(|&p| point("polygon", p))
        .collect::<Result<Vec<_>, _>>()?;
    // A zero area (all points on a line) could never contain anything.
    if twice_area(&poly).abs() < 1e-9 {
        return bad("polygon", "has no area");
    }
    Ok(poly)
}

fn near(prefix: &str, y: Option<f32>, h: Option<f32>) -> Result<Near, Bad> {
    for (key, v) in [("near_y", y), ("near_height", h)] {
        if let Some(v) = v {
            if !(v > 0.0 && v <= 1.0) {
                let key = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                return bad(&key, format!("{v} is outside (0, 1]"));
            }
        }
    }
    Ok(Near { y, height: h })
}

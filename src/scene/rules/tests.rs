//! The rule engine driven by scripted tracks: a table of cases (rules, what the tracks do frame by
//! frame, the alerts and zones expected), then the API around it (parsing and its errors,
//! enabling at run time, serialisation).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use super::*;
use crate::geometry::BBox;
use crate::scene::ZoneMembership;
use crate::track::{Track, TrackState, Velocity};

/// Frames are 1000×1000 so normalised coordinates read as thousandths.
const W: u32 = 1000;

/// One object in a scripted frame: a 40 px wide box whose bottom-centre is at (x, y) and which is
/// `height` of the frame tall, all normalised.
#[derive(Clone, Copy)]
struct Obj {
    id: u64,
    label: &'static str,
    x: f32,
    y: f32,
    height: f32,
    state: TrackState,
}

/// A confirmed object 0.1 of the frame tall.
fn obj(id: u64, label: &'static str, x: f32, y: f32) -> Obj {
    Obj {
        id,
        label,
        x,
        y,
        height: 0.1,
        state: TrackState::Confirmed,
    }
}

impl Obj {
    fn lost(self) -> Self {
        Obj {
            state: TrackState::Lost,
            ..self
        }
    }

    /// Not yet confirmed, so without an id.
    fn tentative(self) -> Self {
        Obj {
            id: 0,
            state: TrackState::Tentative,
            ..self
        }
    }

    fn tall(self, height: f32) -> Self {
        Obj { height, ..self }
    }

    fn track(&self) -> Track {
        let (px, py, h) = (self.x * W as f32, self.y * W as f32, self.height * W as f32);
        Track {
            id: self.id,
            label: Arc::from(self.label),
            class_id: 0,
            score: 0.9,
            bbox: BBox::from([px - 20.0, py - h, px + 20.0, py]),
            velocity: Velocity::default(),
            age_frames: 10,
            hits: 10,
            missed_frames: 0,
            first_seen: 0.0,
            last_seen: 0.0,
            last_frame: 0,
            state: self.state,
        }
    }
}

/// `(frame id, objects)`; frame `f` is at `f × 0.1` s (10 fps).
type Script = Vec<(u64, Vec<Obj>)>;

/// Frames numbered from `first`.
fn frames_from(first: u64, frames: impl IntoIterator<Item = Vec<Obj>>) -> Script {
    (first..).zip(frames).collect()
}

/// One object, id 1, at one point of `path` per frame from frame 0.
fn walk(label: &'static str, path: impl IntoIterator<Item = (f32, f32)>) -> Script {
    frames_from(0, path.into_iter().map(|(x, y)| vec![obj(1, label, x, y)]))
}

/// `n` points from `(x, y0)` moving `dy` a frame.
fn vertical(x: f32, y0: f32, dy: f32, n: usize) -> Vec<(f32, f32)> {
    (0..n).map(|f| (x, y0 + dy * f as f32)).collect()
}

struct Case {
    name: &'static str,
    rules: &'static str,
    script: Script,
    /// Every alert raised, in order, as `<id>: <message>`; frame-wide alerts (count, presence,
    /// absence) have `[track ids]` after the id since their id does not name a track.
    alerts: &'static [&'static str],
    /// `(frame, track id, zones it is in at that frame)`.
    zones: &'static [(u64, u64, &'static [&'static str])],
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

/// Three rules on one horizontal line: side `a` is above it.
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

const GATE_DEBOUNCED: &str = r#"
    [[rules]]
    name = "gate"
    kind = "line"
    line = [[0.0, 0.5], [1.0, 0.5]]
    debounce_frames = 3
"#;

fn cases() -> Vec<Case> {
    let p = |x, y| (x, y);
    vec![
        Case {
            name: "zone entry, dwell and exit; zones follow the debounced state",
            rules: SQUARE,
            // Walking right along y=0.5, 0.02 a frame: inside for frames 5..=14. Then back inside
            // at once beside a tentative track, then only a car (the zone is for people).
            script: [
                walk("person", (0..30).map(|f| p(0.301 + 0.02 * f as f32, 0.5))),
                frames_from(
                    30,
                    [
                        vec![
                            obj(1, "person", 0.5, 0.5),
                            obj(2, "person", 0.5, 0.5).tentative(),
                        ],
                        vec![obj(3, "car", 0.5, 0.5)],
                    ],
                ),
            ]
            .concat(),
            alerts: &[
                "crossing-entry-5-1: person entered zone 'crossing'",
                "crossing-dwell-10-1: person has stayed in zone 'crossing' for 0.5 s",
                "crossing-exit-15-1: person left zone 'crossing' after 1 s",
                "crossing-entry-30-1: person entered zone 'crossing'",
            ],
            zones: &[
                (4, 1, &[]),
                (7, 1, &["crossing"]),
                (20, 1, &[]),
                (30, 1, &["crossing"]),
                (30, 0, &[]),
                (31, 3, &[]),
            ],
        },
        Case {
            name: "appearing inside a zone is an entry and vanishing is not an exit",
            rules: SQUARE,
            // Its state is dropped while gone: the same id coming back is a fresh entry.
            script: frames_from(
                0,
                [
                    vec![obj(7, "person", 0.5, 0.5)],
                    vec![],
                    vec![obj(7, "person", 0.5, 0.5)],
                ],
            ),
            alerts: &[
                "crossing-entry-0-7: person entered zone 'crossing'",
                "crossing-entry-2-7: person entered zone 'crossing'",
            ],
            zones: &[],
        },
        Case {
            name: "a lost track keeps its last box, so stays in its zone and dwells",
            rules: SQUARE,
            script: vec![
                (0, vec![obj(1, "person", 0.5, 0.5)]),
                (10, vec![obj(1, "person", 0.5, 0.5).lost()]),
            ],
            alerts: &[
                "crossing-entry-0-1: person entered zone 'crossing'",
                "crossing-dwell-10-1: person has stayed in zone 'crossing' for 1 s",
            ],
            zones: &[(10, 1, &["crossing"])],
        },
        Case {
            name: "crossing a line downwards",
            rules: LINES,
            // y goes 0.49 (frame 4) → 0.51 (frame 5): from above (a) to below (b).
            script: walk("person", vertical(0.5, 0.41, 0.02, 10)),
            alerts: &[
                "down-crossing-5-1: person crossed line 'down' (a→b)",
                "either-crossing-5-1: person crossed line 'either' (a→b)",
            ],
            zones: &[],
        },
        Case {
            name: "crossing a line upwards",
            rules: LINES,
            script: walk("person", vertical(0.5, 0.59, -0.02, 10)),
            alerts: &[
                "up-crossing-5-1: person crossed line 'up' (b→a)",
                "either-crossing-5-1: person crossed line 'either' (b→a)",
            ],
            zones: &[],
        },
        Case {
            name: "back and forth across a line: each crossing counts",
            rules: LINES,
            script: walk(
                "person",
                [p(0.5, 0.4), p(0.5, 0.6), p(0.5, 0.4), p(0.5, 0.6)],
            ),
            alerts: &[
                "down-crossing-1-1: person crossed line 'down' (a→b)",
                "either-crossing-1-1: person crossed line 'either' (a→b)",
                "up-crossing-2-1: person crossed line 'up' (b→a)",
                "either-crossing-2-1: person crossed line 'either' (b→a)",
                "down-crossing-3-1: person crossed line 'down' (a→b)",
                "either-crossing-3-1: person crossed line 'either' (a→b)",
            ],
            zones: &[],
        },
        Case {
            name: "touching a line and going back is not crossing it",
            rules: LINES,
            script: walk(
                "person",
                [
                    p(0.5, 0.45),
                    p(0.5, 0.5),
                    p(0.5, 0.5),
                    p(0.5, 0.45),
                    p(0.5, 0.4),
                ],
            ),
            alerts: &[],
            zones: &[],
        },
        Case {
            name: "through a point exactly on a line and out the other side is one crossing",
            rules: LINES,
            script: walk("person", [p(0.5, 0.45), p(0.5, 0.5), p(0.5, 0.55)]),
            alerts: &[
                "down-crossing-2-1: person crossed line 'down' (a→b)",
                "either-crossing-2-1: person crossed line 'either' (a→b)",
            ],
            zones: &[],
        },
        Case {
            name: "passing beside a line segment is not crossing it",
            rules: r#"
                [[rules]]
                name = "gate"
                kind = "line"
                line = [[0.2, 0.5], [0.4, 0.5]]
            "#,
            // Straight down at x=0.8, beyond the end of the gate; then left under it and back
            // up through it.
            script: walk(
                "person",
                [
                    vertical(0.8, 0.41, 0.02, 10),
                    vec![p(0.3, 0.6), p(0.3, 0.45)],
                ]
                .concat(),
            ),
            alerts: &["gate-crossing-11-1: person crossed line 'gate' (b→a)"],
            zones: &[],
        },
        Case {
            name: "debounce: one frame across a line and back is jitter",
            rules: GATE_DEBOUNCED,
            script: walk(
                "person",
                [p(0.5, 0.49), p(0.5, 0.51), p(0.5, 0.49), p(0.5, 0.49)],
            ),
            alerts: &[],
            zones: &[],
        },
        Case {
            name: "debounce: two frames across a line are not enough",
            rules: GATE_DEBOUNCED,
            script: walk(
                "person",
                [p(0.5, 0.49), p(0.5, 0.51), p(0.5, 0.52), p(0.5, 0.49)],
            ),
            alerts: &[],
            zones: &[],
        },
        Case {
            name: "debounce: three frames across a line are a crossing",
            rules: GATE_DEBOUNCED,
            script: walk(
                "person",
                [
                    p(0.5, 0.49),
                    p(0.5, 0.51),
                    p(0.5, 0.52),
                    p(0.5, 0.53),
                    p(0.5, 0.54),
                ],
            ),
            alerts: &["gate-crossing-3-1: person crossed line 'gate' (a→b)"],
            zones: &[],
        },
        Case {
            name: "debounce delays a zone entry; the dwell counts from its first frame",
            rules: r#"
                [[rules]]
                name = "z"
                kind = "zone"
                polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
                triggers = ["entry", "dwell"]
                dwell = 0.3
                debounce_frames = 3
            "#,
            // In for two frames, out, then in for good: entered at frame 5 (the third frame
            // inside), having been there since frame 3.
            script: walk(
                "dog",
                [
                    p(0.5, 0.5),
                    p(0.5, 0.5),
                    p(0.3, 0.5),
                    p(0.5, 0.5),
                    p(0.5, 0.5),
                    p(0.5, 0.5),
                    p(0.5, 0.5),
                ],
            ),
            alerts: &[
                "z-entry-5-1: dog entered zone 'z'",
                "z-dwell-6-1: dog has stayed in zone 'z' for 0.3 s",
            ],
            zones: &[(1, 1, &[]), (4, 1, &[]), (5, 1, &["z"])],
        },
        Case {
            name: "cooldown suppresses repeats, per track",
            rules: r#"
                [[rules]]
                name = "z"
                kind = "zone"
                polygon = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
                triggers = ["entry"]
                cooldown = 2.0
            "#,
            // In and out every other frame for 3 s: entries at 0 s and 2 s only; then another
            // person entering while the first one's cooldown runs is reported.
            script: [
                walk(
                    "person",
                    (0..30).map(|f| p(if f % 2 == 0 { 0.5 } else { 0.3 }, 0.5)),
                ),
                frames_from(
                    30,
                    [vec![obj(1, "person", 0.5, 0.5), obj(2, "person", 0.5, 0.5)]],
                ),
            ]
            .concat(),
            alerts: &[
                "z-entry-0-1: person entered zone 'z'",
                "z-entry-20-1: person entered zone 'z'",
                "z-entry-30-2: person entered zone 'z'",
            ],
            zones: &[],
        },
        Case {
            name: "proximity fires once per approach",
            rules: r#"
                [[rules]]
                name = "close"
                kind = "proximity"
                near_y = 0.9
                classes = ["person", "car"]
                severity = "critical"

                [rules.per_class.car]
                near_height = 0.3
            "#,
            // Walking towards the camera: bottom 0.8 → 0.95 → back to 0.8 → 0.95.
            script: walk(
                "person",
                [
                    p(0.5, 0.8),
                    p(0.5, 0.95),
                    p(0.5, 0.96),
                    p(0.5, 0.8),
                    p(0.5, 0.95),
                ],
            ),
            alerts: &[
                "close-proximity-1-1: person is near the camera",
                "close-proximity-4-1: person is near the camera",
            ],
            zones: &[],
        },
        Case {
            name: "proximity per class: an override adds to the rule's own thresholds",
            rules: r#"
                [[rules]]
                name = "close"
                kind = "proximity"
                near_y = 0.99
                [rules.per_class.car]
                near_height = 0.3
            "#,
            // A car low in the frame but short is not near (near_y is inherited, not met); a
            // tall car is; a dog uses the rule's own threshold only.
            script: frames_from(
                0,
                [
                    vec![obj(1, "car", 0.5, 0.95)],
                    vec![obj(1, "car", 0.5, 0.95).tall(0.35)],
                    vec![obj(2, "dog", 0.5, 0.995)],
                ],
            ),
            alerts: &[
                "close-proximity-1-1: car is near the camera",
                "close-proximity-2-2: dog is near the camera",
            ],
            zones: &[],
        },
        Case {
            name: "count threshold in a zone; the zone rule itself only fills zones",
            rules: r#"
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
            // Two people in the queue, one outside and a car in it; the third joins (fires);
            // a fourth makes no difference; down to one; back to four (fires again).
            script: {
                let inside = |id| obj(id, "person", 0.25, 0.75);
                let car = obj(4, "car", 0.25, 0.75);
                frames_from(
                    0,
                    [
                        vec![inside(1), inside(2), obj(3, "person", 0.75, 0.75), car],
                        vec![inside(1), inside(2), inside(3), car],
                        vec![inside(1), inside(2), inside(3), car, inside(5)],
                        vec![inside(1)],
                        vec![inside(1), inside(2), inside(3), car, inside(5)],
                    ],
                )
            },
            alerts: &[
                "crowd-count-1 [1, 2, 3]: 3 people in zone 'queue' (threshold 3)",
                "crowd-count-4 [1, 2, 3, 5]: 4 people in zone 'queue' (threshold 3)",
            ],
            zones: &[
                (0, 3, &[]),
                (4, 1, &["queue"]),
                (4, 3, &["queue"]),
                (4, 4, &["queue"]),
            ],
        },
        Case {
            name: "presence and absence, each for a duration",
            rules: r#"
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
            // A person 0.0..1.5 s, only a cat 1.5..4.0 s, the person back at 4.0 s.
            script: frames_from(
                0,
                (0..45).map(|f| match f {
                    15..40 => vec![obj(9, "cat", 0.5, 0.5)],
                    _ => vec![obj(1, "person", 0.5, 0.5)],
                }),
            ),
            alerts: &[
                "someone-presence-10 [1]: a person present in view for 1 s",
                "unattended-absence-35 []: no people in view for 2 s",
            ],
            zones: &[],
        },
        Case {
            name: "absence from the start",
            rules: r#"
                [[rules]]
                name = "empty"
                kind = "absence"
                duration = 0.5
            "#,
            script: frames_from(0, (0..20).map(|_| vec![])),
            alerts: &["empty-absence-5 []: no objects in view for 0.5 s"],
            zones: &[],
        },
    ]
}

fn engine(toml: &str) -> RuleEngine {
    RuleEngine::new(parse_rules(toml).unwrap(), W, W)
        .unwrap()
        .with_camera("cam")
}

/// Every alert of a script, and each frame's zones.
struct Run {
    alerts: Vec<Alert>,
    zones: BTreeMap<u64, ZoneMembership>,
}

fn run(rules: &str, script: &Script) -> Run {
    let mut e = engine(rules);
    let mut out = Run {
        alerts: Vec::new(),
        zones: BTreeMap::new(),
    };
    for (frame, objs) in script {
        let tracks: Vec<Track> = objs.iter().map(Obj::track).collect();
        let found = e.evaluate(*frame, *frame as f64 * 0.1, &tracks);
        out.alerts.extend(found.alerts);
        out.zones.insert(*frame, found.zones);
    }
    out
}

/// The one-line form the table's `alerts` use.
fn line(a: &Alert) -> String {
    if a.kind.is_per_track() {
        format!("{}: {}", a.id, a.message)
    } else {
        format!("{} {:?}: {}", a.id, a.track_ids, a.message)
    }
}

#[test]
fn scripted_cases() {
    for c in cases() {
        let got = run(c.rules, &c.script);
        let lines: Vec<String> = got.alerts.iter().map(line).collect();
        assert_eq!(lines, c.alerts, "case: {}", c.name);
        for &(frame, id, want) in c.zones {
            let zones = got.zones[&frame].of(id);
            assert_eq!(zones, want, "case: {}, frame {frame}, track {id}", c.name);
        }
    }
}

/// Facts in the alerts' JSON beyond the message: `(case, alert id, JSON pointer, value)`, where
/// null means the field is absent.
#[test]
fn alert_details() {
    let checks: &[(&str, &str, &str, Value)] = &[
        (
            "dwell and exit",
            "crossing-entry-5-1",
            "/severity",
            json!("warning"),
        ),
        (
            "dwell and exit",
            "crossing-entry-5-1",
            "/camera",
            json!("cam"),
        ),
        (
            "dwell and exit",
            "crossing-entry-5-1",
            "/track_ids",
            json!([1]),
        ),
        (
            "dwell and exit",
            "crossing-entry-5-1",
            "/labels",
            json!(["person"]),
        ),
        (
            "dwell and exit",
            "crossing-entry-5-1",
            "/details/zone",
            json!("crossing"),
        ),
        (
            "dwell and exit",
            "crossing-entry-5-1",
            "/details/count",
            Value::Null,
        ),
        (
            "dwell and exit",
            "crossing-dwell-10-1",
            "/details/duration_s",
            json!(0.5),
        ),
        (
            "dwell and exit",
            "crossing-exit-15-1",
            "/details/duration_s",
            json!(1.0),
        ),
        (
            "downwards",
            "down-crossing-5-1",
            "/details/direction",
            json!("a_to_b"),
        ),
        (
            "upwards",
            "either-crossing-5-1",
            "/details/direction",
            json!("b_to_a"),
        ),
        (
            "beside",
            "gate-crossing-11-1",
            "/details/direction",
            json!("b_to_a"),
        ),
        (
            "delays a zone",
            "z-dwell-6-1",
            "/details/duration_s",
            json!(0.3),
        ),
        (
            "once per approach",
            "close-proximity-1-1",
            "/severity",
            json!("critical"),
        ),
        (
            "once per approach",
            "close-proximity-1-1",
            "/details/zone",
            Value::Null,
        ),
        (
            "count threshold",
            "crowd-count-1",
            "/details/count",
            json!(3),
        ),
        (
            "count threshold",
            "crowd-count-1",
            "/details/threshold",
            json!(3),
        ),
        (
            "count threshold",
            "crowd-count-1",
            "/details/zone",
            json!("queue"),
        ),
        (
            "count threshold",
            "crowd-count-1",
            "/details/box",
            Value::Null,
        ),
        (
            "presence and",
            "someone-presence-10",
            "/details/duration_s",
            json!(1.0),
        ),
        (
            "presence and",
            "unattended-absence-35",
            "/labels",
            json!(["person"]),
        ),
        (
            "presence and",
            "unattended-absence-35",
            "/details/count",
            json!(0),
        ),
        (
            "presence and",
            "unattended-absence-35",
            "/details/threshold",
            Value::Null,
        ),
    ];
    let cases = cases();
    for (case, id, pointer, want) in checks {
        let c = cases.iter().find(|c| c.name.contains(case)).unwrap();
        let alerts = run(c.rules, &c.script).alerts;
        let a = alerts.iter().find(|a| a.id == *id).unwrap();
        let v = serde_json::to_value(a).unwrap();
        let got = v.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(&got, want, "{id} {pointer}");
    }
}

#[test]
fn alerts_serialise() {
    let mut e = engine(SQUARE);
    let found = e.evaluate(3, 0.3, &[obj(4, "person", 0.5, 0.5).track()]);
    let v = serde_json::to_value(&found.alerts[0]).unwrap();
    assert_eq!(v["alert_id"], "crossing-entry-3-4");
    assert_eq!(v["type"], "new");
    assert_eq!(v["kind"], "entry");
    assert_eq!(v["details"]["point"], json!([0.5, 0.5]));
    assert_eq!(v["details"]["box"], json!([480.0, 400.0, 520.0, 500.0]));
    assert!(v.get("verification").is_none());
}

#[test]
fn rules_can_be_disabled_at_run_time() {
    let mut e = engine(SQUARE);
    e.set_enabled("crossing", false).unwrap();
    let t = [obj(1, "person", 0.5, 0.5).track()];
    let found = e.evaluate(0, 0.0, &t);
    assert!(found.alerts.is_empty());
    // Still follows the track: in the zone, and enabling does not replay the entry.
    assert_eq!(found.zones.of(1), ["crossing"]);
    e.set_enabled("crossing", true).unwrap();
    assert!(e.rules().next().unwrap().enabled);
    // The dwell, a level, fires once enabled and long enough.
    let a = e.evaluate(1, 0.6, &t).alerts;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].kind, AlertKind::Dwell);
    let err = e.set_enabled("nope", true).unwrap_err();
    assert!(
        matches!(&err, RuleError::UnknownRule(n) if n == "nope"),
        "{err}"
    );
    assert_eq!(err.to_string(), "rules: no rule named 'nope'");
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

/// A rules document that is refused, and what the message must contain.
#[test]
fn bad_rules_are_reported_with_their_key() {
    const Z: &str = "[[rules]]\nname = \"z\"\nkind = \"zone\"\n";
    const ZONE: &str =
        "[[rules]]\nname = \"z\"\nkind = \"zone\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n";
    let cases: &[(String, &str)] = &[
        (
            format!("{Z}polygon = [[0.1, 0.1], [0.2, 0.2]]"),
            "rules[0].polygon (rule 'z'): needs at least 3",
        ),
        (
            format!("{Z}polygon = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]"),
            "rules[0].polygon (rule 'z'): has no area",
        ),
        (
            format!("{Z}polygon = [[0.1, 0.1], [0.2, 1.2], [0.3, 0.1]]"),
            "rules[0].polygon (rule 'z'): point [0.2, 1.2] is outside",
        ),
        (Z.to_string(), "rules[0].polygon (rule 'z'): is required"),
        (
            format!("{ZONE}triggers = [\"dwell\"]"),
            "rules[0].dwell (rule 'z'): is required",
        ),
        (format!("{ZONE}dwell = 3"), "rules[0].dwell (rule 'z'): is set but"),
        (
            format!("{ZONE}triggers = [\"dwell\"]\ndwell = -1"),
            "rules[0].dwell (rule 'z'): -1 is not a number of seconds",
        ),
        (format!("{ZONE}cooldown = -1"), "rules[0].cooldown"),
        (
            format!("{ZONE}line = [[0, 0], [1, 1]]"),
            "rules[0].line (rule 'z'): does not apply to kind 'zone'",
        ),
        (format!("{ZONE}min_count = 2"), "rules[0].min_count"),
        (format!("{ZONE}polgon = 1"), "unknown field `polgon`"),
        (format!("{ZONE}triggers = [\"enter\"]"), "unknown variant `enter`"),
        (format!("{ZONE}cooldown = \"5s\""), "cooldown"),
        (format!("{ZONE}severity = \"high\""), "unknown variant `high`"),
        (
            "[[rules]]\nname = \"c\"\nkind = \"count\"\nmin_count = 2\nzone = \"nowhere\"".into(),
            "rules[0].zone (rule 'c'): no zone rule named 'nowhere' (zones: none)",
        ),
        (
            format!("{ZONE}[[rules]]\nname = \"c\"\nkind = \"absence\"\nzone = \"y\""),
            "rules[1].zone (rule 'c'): no zone rule named 'y' (zones: z)",
        ),
        (
            "[[rules]]\nname = \"c\"\nkind = \"count\"".into(),
            "rules[0].min_count (rule 'c'): is required",
        ),
        (
            "[[rules]]\nname = \"c\"\nkind = \"presence\"\nmin_count = 0".into(),
            "rules[0].min_count (rule 'c'): must be at least 1",
        ),
        (
            "[[rules]]\nname = \"l\"\nkind = \"line\"\nline = [[0.5, 0.5], [0.5, 0.5]]".into(),
            "rules[0].line (rule 'l'): its two points are the same",
        ),
        (
            "[[rules]]\nname = \"p\"\nkind = \"proximity\"\nclasses = [\"person\"]\nper_class.car.near_y = 0.5".into(),
            "rules[0].per_class.car (rule 'p'): 'car' is not in classes",
        ),
        (
            "[[rules]]\nname = \"p\"\nkind = \"proximity\"\nper_class.car.near_y = 1.5".into(),
            "rules[0].per_class.car.near_y (rule 'p'): 1.5 is outside (0, 1]",
        ),
        (
            "[[rules]]\nname = \"p\"\nkind = \"proximity\"\nnear_y = 1.5".into(),
            "rules[0].near_y",
        ),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absence\"\n[[rules]]\nname = \"a\"\nkind = \"absence\"".into(),
            "rules[1].name (rule 'a'): rules[0] has the same name",
        ),
        (
            "[[rules]]\nname = \" \"\nkind = \"absence\"".into(),
            "rules[0].name (rule ' '): is empty",
        ),
        (
            "[[rules]]\nname = \"a\"\nkind = \"absence\"\nclasses = [\"\"]".into(),
            "rules[0].classes (rule 'a'): \"\" is not a label",
        ),
        (
            "[[rules]]\nname = \"a\"\nkind = \"zonez\"".into(),
            "unknown variant `zonez`",
        ),
        ("[[rule]]\nname = \"a\"".into(), "unknown field `rule`"),
    ];
    for (text, want) in cases {
        let msg = match parse_rules(text).and_then(|r| RuleEngine::new(r, W, W)) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains(want), "for {text:?}: {msg}");
    }
    let e = RuleEngine::new(Vec::new(), 0, 10).unwrap_err();
    assert_eq!(e.to_string(), "rules: frame size 0x10 is empty");
    let many = vec![RuleConfig::new("a", RuleKind::Absence); 1001];
    let e = RuleEngine::new(many, W, W).unwrap_err();
    assert_eq!(e.to_string(), "rules: 1001 rules, at most 1000 are allowed");
}

#[test]
fn load_rules_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rules.toml");
    std::fs::write(&p, "[[rules]]\nname = 3\n").unwrap();
    let err = load_rules(&p).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("rules.toml") && msg.contains("name"), "{msg}");
    // Into the library's error it stays a config error about that file.
    match crate::error::Error::from(err) {
        crate::error::Error::Config { path, .. } => assert_eq!(path, p),
        other => panic!("{other:?}"),
    }
    std::fs::write(&p, SQUARE).unwrap();
    assert_eq!(load_rules(&p).unwrap().len(), 1);
    let missing = load_rules(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(missing, RuleError::Io { .. }), "{missing}");
}

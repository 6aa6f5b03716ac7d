//! A scripted street scene driven through the public API: detections → tracker → rules → events
//! → descriptions, checking that the stages agree with each other.

use std::sync::Arc;

use lookout::scene::{
    parse_rules, AlertKind, DescribeConfig, Describer, Direction, EventBuilder, EventConfig,
    EventType, RuleEngine,
};
use lookout::track::{TrackState, Tracker, TrackerConfig};
use lookout::{BBox, Detection};

const W: u32 = 1280;
const H: u32 = 720;
const FPS: f64 = 10.0;

const RULES: &str = r#"
[[rules]]
name = "crossing"
kind = "zone"
polygon = [[0.4, 0.7], [0.6, 0.7], [0.6, 1.0], [0.4, 1.0]]
triggers = ["entry", "exit"]
classes = ["person"]
debounce_frames = 2

[[rules]]
name = "gate"
kind = "line"
line = [[0.5, 0.5], [0.5, 1.0]]
direction = "any"
debounce_frames = 2

[[rules]]
name = "car-near"
kind = "proximity"
classes = ["car"]
near_height = 0.5
"#;

fn det(label: &str, class_id: usize, score: f32, b: [f32; 4]) -> Detection {
    Detection {
        label: Arc::from(label),
        class_id,
        score,
        bbox: BBox::from(b),
    }
}

/// Deterministic ±2 px noise.
fn noise(f: u64, k: u64) -> f32 {
    (((f * 31 + k * 17) % 9) as f32 - 4.0) * 0.5
}

/// Frame `f`'s detections: a person walking left to right along the bottom of the frame (hidden
/// for frames 45..48, out of view from frame 90), a car parked far away on the right the whole
/// time, and a one-frame false positive at frame 20.
fn detections(f: u64) -> Vec<Detection> {
    let mut d = Vec::new();
    let cx = 100.0 + 13.0 * f as f32;
    if !(45..48).contains(&f) && f < 90 {
        let (x, y) = (cx + noise(f, 1), 680.0 + noise(f, 2));
        let score = 0.85 + noise(f, 3) * 0.01;
        d.push(det("person", 0, score, [x - 30.0, y - 160.0, x + 30.0, y]));
    }
    let (x, y) = (1100.0 + noise(f, 4), 400.0 + noise(f, 5));
    d.push(det("car", 2, 0.9, [x - 60.0, y - 50.0, x + 60.0, y]));
    if f == 20 {
        d.push(det("dog", 16, 0.95, [300.0, 300.0, 340.0, 330.0]));
    }
    d
}

#[test]
fn street_scene_end_to_end() {
    let mut tracker = Tracker::new(TrackerConfig::default());
    let mut rules = RuleEngine::new(parse_rules(RULES).unwrap(), W, H)
        .unwrap()
        .with_camera("street");
    let mut events = EventBuilder::new(EventConfig {
        camera: "street".into(),
        ..Default::default()
    });
    let mut describer = Describer::new(DescribeConfig::default(), W, H);

    let mut alerts = Vec::new();
    let mut evs = Vec::new();
    let mut descriptions = Vec::new();
    let mut person_ids = std::collections::BTreeSet::new();
    for f in 0..140u64 {
        let ts = f as f64 / FPS;
        let tracks = tracker.update(f, ts, &detections(f)).to_vec();
        for t in tracks.iter().filter(|t| t.is_established()) {
            if &*t.label == "person" {
                person_ids.insert(t.id);
            }
            assert_ne!(
                &*t.label, "dog",
                "frame {f}: a one-frame blip was confirmed"
            );
        }
        let found = rules.evaluate(f, ts, &tracks);
        alerts.extend(found.alerts);
        evs.extend(events.update(f, ts, &tracks, &found.zones));
        if f % 10 == 0 {
            descriptions.push(describer.describe(f, ts, &tracks, &found.zones));
        }
    }
    evs.extend(events.finish(140, 14.0));

    // One person, one car, whatever the noise and the occlusion.
    assert_eq!(person_ids.len(), 1, "person ids: {person_ids:?}");
    let person = *person_ids.iter().next().unwrap();

    // Entered the crossing, crossed the gate left to right, left the crossing; nothing about the
    // car, which is far.
    let seq: Vec<(AlertKind, &str)> = alerts.iter().map(|a| (a.kind, a.rule.as_str())).collect();
    assert_eq!(
        seq,
        [
            (AlertKind::Entry, "crossing"),
            (AlertKind::Crossing, "gate"),
            (AlertKind::Exit, "crossing"),
        ],
        "{alerts:#?}"
    );
    assert!(alerts.iter().all(|a| a.track_ids == [person]));
    assert_eq!(alerts[1].details.direction, Some(Direction::BToA));
    assert!(alerts[0].frame_id < alerts[1].frame_id && alerts[1].frame_id < alerts[2].frame_id);
    // The centre passes x = 0.5 of the frame at frame 40 (+ the debounce frame).
    assert!((40..=43).contains(&alerts[1].frame_id), "{:?}", alerts[1]);
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // Events: a `new` and an `end` for each of the two objects, updates in between, all in order.
    for id in [person, 2 - (person == 2) as u64] {
        let mine: Vec<_> = evs.iter().filter(|e| e.track_id == id).collect();
        assert_eq!(mine.first().unwrap().kind, EventType::New, "track {id}");
        assert_eq!(mine.last().unwrap().kind, EventType::End, "track {id}");
        assert_eq!(mine.iter().filter(|e| e.kind == EventType::New).count(), 1);
        for w in mine.windows(2) {
            assert!(w[0].ts <= w[1].ts);
            assert_eq!(w[1].before.as_ref(), Some(&w[0].after));
        }
    }
    let person_evs: Vec<_> = evs.iter().filter(|e| e.track_id == person).collect();
    // The zone change shows up in an update.
    assert!(person_evs
        .iter()
        .any(|e| e.kind == EventType::Update && e.after.current_zones == ["crossing"]));
    // The person ended once the tracker gave up: 30 missed frames after frame 89.
    let end = person_evs.last().unwrap();
    assert_eq!(end.after.frame_id, 89);
    assert_eq!(end.frame_id, 120);
    assert_eq!(end.after.state, TrackState::Lost);

    // Descriptions tell the same story.
    let texts: Vec<&str> = descriptions.iter().map(|d| d.text.as_str()).collect();
    let changes: Vec<String> = descriptions
        .iter()
        .flat_map(|d| d.changes.iter().map(|c| c.text.clone()))
        .collect();
    assert!(texts[0].starts_with("Nothing in view."), "{texts:#?}");
    assert!(
        changes.contains(&"a car appeared".to_string()),
        "{changes:#?}"
    );
    assert!(changes.contains(&"a person entered the crossing zone".to_string()));
    assert!(changes.contains(&"a person left the crossing zone".to_string()));
    assert!(changes.contains(&"a person left".to_string()));
    let mid = &descriptions[4];
    assert_eq!(mid.counts.get("person"), Some(&1), "{}", mid.text);
    assert!(mid.text.contains("a car on the right, far"), "{}", mid.text);
}

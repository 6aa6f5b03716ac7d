//! `lookout summary` of the bundled clip agrees with the events the same run published: the
//! number of people and cars, who entered the path zone, the alerts per rule, and the times of
//! the first and last sighting. The same store through `lookout events` and `lookout search`:
//! filters, crops that are real JPEG files, and reasons for each hit.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

#[test]
fn the_summary_of_the_bundled_clip_matches_its_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let events = tmp.path().join("events.jsonl");
    common::succeed(
        common::lookout()
            .args(["run", "--broker", "none", "--summary-json", "--store"])
            .arg(&store)
            .arg("--events-out")
            .arg(&events)
            .current_dir(common::repo()),
    );
    let recs: Vec<Value> = common::jsonl(&events);

    // What the events say.
    let mut tracks: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut in_path: BTreeSet<u64> = BTreeSet::new();
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for e in recs.iter().filter(|r| r["record"] == "event") {
        let id = e["track_id"].as_u64().unwrap();
        tracks
            .entry(e["label"].as_str().unwrap().to_string())
            .or_default()
            .insert(id);
        if e["after"]["current_zones"]
            .as_array()
            .unwrap()
            .iter()
            .any(|z| z == "path")
        {
            in_path.insert(id);
        }
        first = first.min(e["after"]["start_time"].as_f64().unwrap());
        last = last.max(e["after"]["frame_time"].as_f64().unwrap());
    }
    let mut alerts: BTreeMap<String, usize> = BTreeMap::new();
    for a in recs.iter().filter(|r| r["record"] == "alert") {
        *alerts
            .entry(a["rule"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        tracks.get("person").is_some_and(|t| t.len() >= 5),
        "{tracks:?}"
    );

    // What the summary says.
    let out = common::succeed(
        common::lookout()
            .args(["summary", "--since", "1h", "--json", "--store"])
            .arg(&store),
    );
    let sum: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{}", sum["text"].as_str().unwrap());
    for (label, ids) in &tracks {
        assert_eq!(
            sum["counts"][label].as_u64(),
            Some(ids.len() as u64),
            "{label}: {}",
            sum["text"]
        );
    }
    assert_eq!(
        sum["zones"]["path"]["person"].as_u64(),
        Some(in_path.len() as u64),
        "{}",
        sum["text"]
    );
    for (rule, n) in &alerts {
        assert_eq!(
            sum["alerts"][rule].as_u64(),
            Some(*n as u64),
            "alerts of {rule}"
        );
    }
    // One episode (the clip is 12 s), from the first sighting to the last.
    let lines = sum["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{}", sum["text"]);
    let text = lines[0]["text"].as_str().unwrap();
    let span = format!(
        "{}–{} plaza: ",
        lookout::store::clock(first),
        lookout::store::clock(last)
    );
    assert!(text.starts_with(&span), "{text} should start with {span}");
    let people = tracks["person"].len();
    assert!(
        text.contains(&format!("{people} people")),
        "{text} should count {people} people"
    );
    assert!(
        text.contains(&format!("{} people entered the path zone", in_path.len())),
        "{text}"
    );

    // `lookout events --label car`: the parked car, with a crop on disk.
    let out = common::succeed(
        common::lookout()
            .args(["events", "--label", "car", "--json", "--store"])
            .arg(&store),
    );
    let cars: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cars.len(), tracks["car"].len(), "{cars:?}");
    let crop = cars[0]["crop_path"].as_str().expect("a crop");
    let jpeg = std::fs::read(crop).unwrap();
    assert!(
        lookout::imageio::decode_rgb(&jpeg).is_ok(),
        "{crop} is a JPEG"
    );
    // `lookout search`: the top hit for people on the path is one, with its reasons.
    let out = common::succeed(
        common::lookout()
            .args([
                "search",
                "person on the path",
                "--limit",
                "3",
                "--json",
                "--store",
            ])
            .arg(&store)
            .current_dir(common::repo()),
    );
    let res: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(res["parsed"]["labels"][0], "person", "{res}");
    assert_eq!(res["parsed"]["zones"][0], "path", "{res}");
    let top = &res["hits"][0];
    assert_eq!(top["record"]["label"], "person", "{res}");
    let why: Vec<&str> = top["why"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        why.contains(&"label person") && why.contains(&"zone path"),
        "{why:?}"
    );
}

//! Search quality on the labelled query set (tests/fixtures/recall/queries.toml, committed before
//! the ranking was written): one store is filled by `lookout run --store` from the bundled clip
//! and, when ../shared is present, two of its clips; each query counts as a hit when one of its
//! top 3 results matches what the set expects. Prints every query with its top 3 and the hit
//! rate; fails under 80 %.

mod common;

use std::path::Path;

use lookout::embed::Embedder;
use lookout::store::{search, Kind, Record, SearchOptions, Store};

fn run_into(store: &Path, args: &[&str]) {
    common::succeed(
        common::lookout()
            .arg("run")
            .args(args)
            .args(["--broker", "none", "--summary-json", "--store"])
            .arg(store)
            .current_dir(common::repo()),
    );
}

/// Whether `r` is what `expect` (a TOML table of the query set) asks for.
fn matches(r: &Record, expect: &toml::Table) -> bool {
    expect.iter().all(|(k, v)| {
        let v = v.as_str().unwrap_or_default();
        match k.as_str() {
            "kind" => r.kind.name() == v,
            "camera" => r.camera == v,
            "label" => r.labels().contains(&v),
            "zone" if v.is_empty() => r.zones.is_empty(),
            "zone" => r.zone_names().contains(&v) || r.rule.as_deref() == Some(v),
            "rule" => r.rule.as_deref() == Some(v),
            "alert_kind" => r.alert_kind.as_deref() == Some(v),
            "text" => {
                let all = format!(
                    "{} {} {}",
                    r.text,
                    r.message.as_deref().unwrap_or(""),
                    r.vlm.as_deref().unwrap_or("")
                );
                all.to_lowercase().contains(&v.to_lowercase())
            }
            other => panic!("queries.toml: unknown expect key '{other}'"),
        }
    })
}

#[test]
fn top3_hit_rate_on_the_labelled_query_set() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let shared = common::shared();
    // The bundled clip with the demo config (zone `path`, line `lamp-post`, rule `crowd`).
    run_into(&store, &[]);
    if let Some(sh) = &shared {
        let hw = common::fixture("recall/highway.toml");
        let clip = sh.join("media/video_drive_udacity_test_video.mp4");
        run_into(
            &store,
            &[
                "--config",
                hw.to_str().unwrap(),
                "--source",
                &format!("video:{}", clip.display()),
            ],
        );
        let tb = common::fixture("recall/table.toml");
        let clip = sh.join("media/video_intel_bottle-detection.mp4");
        run_into(
            &store,
            &[
                "--config",
                tb.to_str().unwrap(),
                "--source",
                &format!("video:{}", clip.display()),
                "--max-frames",
                "400",
            ],
        );
    } else {
        common::skip("../shared is absent: only the bundled clip's queries run");
    }
    let text = std::fs::read_to_string(common::fixture("recall/queries.toml")).unwrap();
    let set: toml::Table = toml::from_str(&text).unwrap();
    let queries = set["query"].as_array().unwrap();
    assert!(queries.len() >= 30, "the set has {} queries", queries.len());

    let s = Store::open_read(&store).unwrap();
    println!("store: {:?}", s.stats().unwrap());
    let mut embedder = Embedder::load_default().unwrap();
    let opts = SearchOptions {
        kinds: vec![Kind::Object, Kind::Alert, Kind::Scene],
        limit: 3,
        ..Default::default()
    };
    let (mut asked, mut hits) = (0, 0);
    for q in queries {
        let q = q.as_table().unwrap();
        let needs_shared = q.get("shared").and_then(|v| v.as_bool()).unwrap_or(false);
        if needs_shared && shared.is_none() {
            continue;
        }
        let query = q["q"].as_str().unwrap();
        let expect = q["expect"].as_table().unwrap();
        let (_, top) = search(&s, query, Some(&mut embedder), &opts).unwrap();
        let hit = top.iter().any(|h| matches(&h.record, expect));
        asked += 1;
        hits += hit as usize;
        println!("{} {query:?}", if hit { "HIT " } else { "MISS" });
        for h in &top {
            println!(
                "       {:<6} {:<8} {:<40} {}",
                h.record.kind.name(),
                h.record.camera,
                h.record.text.chars().take(40).collect::<String>(),
                h.why.join("; ")
            );
        }
    }
    let rate = hits as f64 / asked.max(1) as f64;
    println!("top-3 hit rate: {hits}/{asked} = {:.1} %", 100.0 * rate);
    assert!(asked >= 20, "only {asked} queries ran");
    assert!(rate >= 0.8, "top-3 hit rate {:.1} % < 80 %", 100.0 * rate);
}

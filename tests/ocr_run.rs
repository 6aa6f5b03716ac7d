//! `lookout run` with `[ocr]`: the text on chosen tracked objects reaches their events as
//! `after.text`. The source is a real photo of a book cover (tests/fixtures/ocr/photos/right.png,
//! from Debian's opencv-doc) looped as a still camera; the int8 default sees the cover as a `tv`
//! at 0.47–0.48 and as a `book` on the same box at 0.30–0.39, so the tests read the `tv`: the
//! book's score sits at the tracker's thresholds and moves with the last bits of the float convs
//! (0.39 on tract's f32 kernel, 0.30 on lookout's, 0.32 in onnxruntime; fp32 nanodet-g 0.39).

mod common;

use serde_json::Value;

const SOURCE: &str = "file:tests/fixtures/ocr/photos/right.png?loop";

fn config(extra: &str) -> String {
    format!(
        r#"device = "ocr-test"
[camera]
name = "shelf"
source = "{SOURCE}"
[detector]
conf = 0.3
[tracker]
track_high = 0.35
new_track_score = 0.35
{extra}
"#
    )
}

/// Runs `lookout run` on `cfg` for 15 frames; the output records, or the exit status and stderr.
fn run(cfg: &str) -> Result<Vec<Value>, String> {
    run_with(cfg, &[])
}

fn run_with(cfg: &str, args: &[&std::ffi::OsStr]) -> Result<Vec<Value>, String> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ocr.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = tmp.path().join("events.jsonl");
    let res = common::lookout()
        .args(["run", "--broker", "none", "--max-frames", "15", "--config"])
        .arg(&path)
        .arg("--events-out")
        .arg(&out)
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr).to_string();
    if !res.status.success() {
        return Err(format!("{}: {stderr}", res.status));
    }
    Ok(common::jsonl(&out))
}

/// The `after.text` of each event, with the event's type and label.
fn texts(recs: &[Value]) -> Vec<(String, String, Option<String>)> {
    recs.iter()
        .filter(|r| r["record"] == "event")
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["label"].as_str().unwrap().to_string(),
                r["after"]["text"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn text_on_a_chosen_label_reaches_its_events() {
    let recs = run(&config("[ocr]\nlabels = [\"tv\"]\ninterval_s = 1.0\n")).unwrap();
    let evs = texts(&recs);
    let cover_end = evs
        .iter()
        .find(|(kind, label, _)| kind == "end" && label == "tv")
        .unwrap_or_else(|| panic!("no end event for the cover: {evs:?}"));
    let text = cover_end.2.as_deref().unwrap_or_default();
    assert!(
        text.contains("ELECTRONICS") && text.contains("BASIC"),
        "the cover says BASIC ELECTRONICS: {evs:?}"
    );
    // Only the chosen label is read (a book, when tracked, has the same box).
    for (kind, label, text) in &evs {
        if label != "tv" {
            assert_eq!(text, &None, "{kind} {label} was not chosen: {evs:?}");
        }
    }
    // Events without text have no `text` key at all.
    let first = recs.iter().find(|r| r["record"] == "event").unwrap();
    assert!(first["after"].get("text").is_none(), "{first}");
    // Scene descriptions that came after a read name it.
    for s in recs.iter().filter(|r| r["record"] == "scene") {
        let t = s["text"].as_str().unwrap();
        if t.contains("reading") {
            assert!(t.contains("A tv reading '"), "{t}");
        }
    }
}

#[test]
fn objects_inside_a_chosen_zone_are_read() {
    let zone = r#"[[rules]]
name = "cover"
kind = "zone"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
[ocr]
zones = ["cover"]
"#;
    let evs = texts(&run(&config(zone)).unwrap());
    let ends: Vec<_> = evs.iter().filter(|e| e.0 == "end").collect();
    assert!(!ends.is_empty(), "{evs:?}");
    assert!(
        ends.iter()
            .all(|e| e.2.as_deref().is_some_and(|t| t.contains("ELECTRONICS"))),
        "every object in the zone is read: {evs:?}"
    );
}

#[test]
fn bad_ocr_settings_are_named_and_nothing_runs() {
    for (ocr, key) in [
        ("lables = [\"book\"]", "ocr.lables"),
        ("labels = [\"book\"]\ninterval_s = -1", "ocr.interval_s"),
        (
            "labels = [\"book\"]\nmax_per_frame = 0",
            "ocr.max_per_frame",
        ),
        ("zones = [\"nowhere\"]", "ocr.zones[0]"),
        ("labels = [\"book\"]\nmodel = \"no-such-ocr\"", "ocr.model"),
    ] {
        let e = run(&config(&format!("[ocr]\n{ocr}\n"))).unwrap_err();
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn check_reports_a_missing_ocr_model() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ocr.toml");
    std::fs::write(
        &path,
        config("[ocr]\nlabels = [\"book\"]\nmodel = \"no-such-ocr\"\n"),
    )
    .unwrap();
    let out = common::lookout()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .current_dir(common::repo())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("ocr.model") && text.contains("no-such-ocr"),
        "{text}"
    );
    // the same config with the bundled model passes
    std::fs::write(&path, config("[ocr]\nlabels = [\"book\"]\n")).unwrap();
    let out = common::lookout()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_store_keeps_the_text_with_the_object() {
    use lookout::store::{Kind, Store};
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let cfg = config("[ocr]\nlabels = [\"tv\"]\n");
    run_with(&cfg, &["--store".as_ref(), store.as_os_str()]).unwrap();
    let s = Store::open_read(&store).unwrap();
    let objects = s.records(&[Kind::Object], 0.0, f64::MAX).unwrap();
    let cover = objects
        .iter()
        .find(|r| r.label == "tv")
        .unwrap_or_else(|| panic!("no tv object (the cover) stored: {objects:?}"));
    let reading = cover.reading.as_deref().unwrap_or_default();
    assert!(reading.contains("ELECTRONICS"), "{cover:?}");
    assert!(
        cover.text.contains(&format!("reading '{reading}'")),
        "{cover:?}"
    );
}

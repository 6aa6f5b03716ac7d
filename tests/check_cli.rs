//! `lookout check`: every class of config error is reported naming its key (unknown key, wrong
//! type, bad zone, bad source URI, bad `[mqtt]`, missing model), several in one run, exit 1; a
//! good config prints the resolved table (board underneath) and exits 0.

mod common;

use std::path::Path;

struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, text: &str, board: Option<&str>) -> Checked {
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    let mut cmd = common::lookout();
    cmd.arg("check").arg("--config").arg(&p);
    if let Some(b) = board {
        cmd.args(["--board", b]);
    }
    let out = cmd.output().unwrap();
    Checked {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// One class of error: exit 1 and an `error:` line naming the file and `key`.
fn rejects(text: &str, key: &str, also: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = check(dir.path(), text, None);
    assert_eq!(c.code, 1, "{text}\n{}", c.stderr);
    let line = c
        .stderr
        .lines()
        .find(|l| l.starts_with("error:") && l.contains(&format!(" {key}")))
        .unwrap_or_else(|| panic!("no error naming {key}:\n{}", c.stderr));
    assert!(line.contains("c.toml"), "names the file: {line}");
    assert!(line.contains(also), "{line} should say {also:?}");
}

#[test]
fn unknown_key() {
    rejects("[detector]\nmodle = \"nanodet-g\"\n", "detector", "modle");
    rejects("colour = 1\n", "colour", "unknown key");
}

#[test]
fn wrong_type() {
    rejects(
        "[pipeline]\nqueue = \"two\"\n",
        "pipeline.queue",
        "invalid type",
    );
    rejects(
        "[[rules]]\nname = \"a\"\nkind = \"zone\"\npolygon = \"left half\"\n",
        "rules[0].polygon",
        "invalid type",
    );
}

#[test]
fn bad_zone() {
    rejects(
        "[[rules]]\nname = \"door\"\nkind = \"zone\"\npolygon = [[0.1, 0.1], [0.2, 0.2]]\n",
        "rules",
        "rules[0].polygon",
    );
}

#[test]
fn bad_source_uri() {
    rejects(
        "[camera]\nsource = \"rtspx://cam/1\"\n",
        "camera.source",
        "rtspx",
    );
}

#[test]
fn bad_mqtt() {
    rejects(
        "[mqtt]\nkeep_alive_s = -3\n",
        "mqtt.keep_alive_s",
        "invalid value",
    );
    rejects("[mqtt]\nbroker = \"ftp://x\"\n", "mqtt", "ftp://x");
    rejects("[mqtt]\nbrokr = \"mqtt://x\"\n", "mqtt", "brokr");
}

#[test]
fn missing_model() {
    rejects(
        "[detector]\nmodel = \"no-such-model\"\n",
        "detector.model",
        "no-such-model",
    );
}

#[test]
fn several_errors_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
colour = "red"
[camera]
source = "rtspx://cam/1"
[detector]
model = "no-such-model"
[pipeline]
queue = "two"
[mqtt]
keep_alive_s = -3
[[rules]]
name = "door"
kind = "zone"
polygon = [[0.1, 0.1], [0.2, 0.2]]
"#;
    let c = check(dir.path(), text, None);
    assert_eq!(c.code, 1, "{}", c.stderr);
    let errors: Vec<&str> = c
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    for key in [
        "colour",
        "camera.source",
        "detector.model",
        "pipeline.queue",
        "mqtt.keep_alive_s",
        "rules",
    ] {
        assert!(
            errors.iter().any(|l| l.contains(&format!(" {key}"))),
            "{key} missing from:\n{}",
            c.stderr
        );
    }
    assert!(c.stderr.contains("6 problem(s)"), "{}", c.stderr);
}

#[test]
fn a_good_config_prints_the_resolved_table() {
    let dir = tempfile::tempdir().unwrap();
    let c = check(
        dir.path(),
        "[detector]\nthreads = 3\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\n",
        Some("rpi5"),
    );
    assert_eq!(c.code, 0, "{}", c.stderr);
    // The file's key over the board's, the board's untouched keys, and the board named.
    let resolved: toml::Table = toml::from_str(&c.stdout).expect("stdout is the resolved TOML");
    assert_eq!(resolved["detector"]["threads"].as_integer(), Some(3));
    assert_eq!(resolved["board"].as_str(), Some("rpi5"));
    assert!(resolved["camera"]["source"]
        .as_str()
        .unwrap()
        .starts_with("v4l://"));
    assert!(c.stderr.contains(": ok"), "{}", c.stderr);
}

#[test]
fn the_embedded_demo_checks_clean() {
    let out = common::lookout()
        .args(["check", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(out.status.success());
}

//! Several cameras in one process (`[[cameras]]`), end to end with the real binary and the
//! bundled clip: every camera's records carry its own name and follow its own rules, the model is
//! loaded once for all of them, a camera whose source dies leaves the others running, `cmd/ground`
//! grounds on the camera it names (real mosquitto), and `lookout check` names a bad camera key.

mod common;
#[path = "support/mjpeg_camera.rs"]
mod mjpeg_camera;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `[[cameras]]` over the bundled clip: `a` and `b` play it (b with its own zone rule), both have
/// the top-level line rule; `extra` is appended as is.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("cameras.toml");
    std::fs::write(
        &p,
        format!(
            r#"device = "multicam"
[pipeline]
stats_interval = 1.0
[[rules]]
name = "lamp-post"
kind = "line"
line = [[0.56, 0.25], [0.56, 0.85]]
direction = "any"
classes = ["person"]
[[cameras]]
name = "a"
source = "file:samples/vtest?fps=10&loop=false"
[[cameras]]
name = "b"
source = "file:samples/vtest?fps=10&loop=false"
[[cameras.rules]]
name = "path"
kind = "zone"
polygon = [[0.40, 0.33], [1.0, 0.33], [1.0, 0.80], [0.40, 0.62]]
triggers = ["entry"]
classes = ["person"]
{extra}"#
        ),
    )
    .unwrap();
    p
}

struct Run {
    records: Vec<Value>,
    summary: Value,
    stderr: String,
}

/// `lookout run` to the end (no MQTT), with info logging so the pool's load line shows.
fn run(cfg: &Path, frames: u64) -> Run {
    let out = cfg.with_file_name("events.jsonl");
    let res = common::succeed(
        common::lookout()
            .args(["run", "--broker", "none", "--summary-json", "--config"])
            .arg(cfg)
            .arg("--events-out")
            .arg(&out)
            .args(["--max-frames", &frames.to_string()])
            .env("RUST_LOG", "lookout=info")
            .current_dir(common::repo()),
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    Run {
        records: common::jsonl(&out),
        summary: serde_json::from_str(stdout.lines().last().unwrap()).unwrap(),
        stderr: String::from_utf8_lossy(&res.stderr).into(),
    }
}

fn cameras_of<'a>(r: &'a Run, record: &str) -> BTreeSet<&'a str> {
    r.records
        .iter()
        .filter(|x| x["record"] == record)
        .map(|x| x["camera"].as_str().unwrap_or("(none)"))
        .collect()
}

#[test]
fn every_camera_names_its_records_and_the_model_is_loaded_once() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(&config(tmp.path(), ""), 20);

    // One load for the process: one log line, one model, both cameras served by it.
    let loads: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("detector pool:"))
        .collect();
    assert_eq!(loads.len(), 1, "{}", r.stderr);
    assert!(
        loads[0].contains("loaded 1× for 2 camera(s)"),
        "{}",
        loads[0]
    );
    assert_eq!(r.summary["models_loaded"], 1, "{}", r.summary);
    let cams = r.summary["cameras"].as_array().unwrap();
    let names: Vec<&str> = cams.iter().map(|c| c["camera"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"]);
    for c in cams {
        assert_eq!(c["frames_processed"], 20, "{c}");
        assert_eq!(
            c["pool"]["frames"], 20,
            "every frame went through the pool: {c}"
        );
    }

    // Each camera's events, scene descriptions and stats carry its name, and nothing else's.
    for kind in ["event", "scene", "stats"] {
        assert_eq!(
            cameras_of(&r, kind),
            BTreeSet::from(["a", "b"]),
            "{kind} records"
        );
    }
    // The zone rule is b's own; the line rule is both cameras'.
    let alerts: Vec<(&str, &str)> = r
        .records
        .iter()
        .filter(|x| x["record"] == "alert")
        .map(|x| (x["camera"].as_str().unwrap(), x["rule"].as_str().unwrap()))
        .collect();
    assert!(alerts.contains(&("b", "path")), "{alerts:?}");
    assert!(!alerts.contains(&("a", "path")), "{alerts:?}");
    // The two cameras play the same clip: the same tracks, under each camera's own name.
    let new_events = |cam: &str| {
        r.records
            .iter()
            .filter(|x| x["record"] == "event" && x["type"] == "new" && x["camera"] == cam)
            .count()
    };
    assert!(new_events("a") > 0);
    assert_eq!(new_events("a"), new_events("b"));
}

#[test]
fn a_camera_whose_source_dies_leaves_the_others_running() {
    let tmp = tempfile::tempdir().unwrap();
    // Three frames, then its command exits; with healing off the camera is gone for good.
    let dies = r#"[[cameras]]
name = "dies"
source = "pipe:cat samples/vtest/frame_0001.jpg samples/vtest/frame_0002.jpg samples/vtest/frame_0003.jpg?format=mjpeg"
heal = false
"#;
    let r = run(&config(tmp.path(), dies), 25);
    let cams = r.summary["cameras"].as_array().unwrap();
    let by = |n: &str| cams.iter().find(|c| c["camera"] == n).unwrap();
    assert_eq!(by("dies")["frames_processed"], 3, "{}", r.summary);
    for n in ["a", "b"] {
        assert_eq!(by(n)["frames_processed"], 25, "{n} ran on: {}", r.summary);
    }
    // After the dead camera's last frame, the others still raised events.
    let last_of = |cam: &str| {
        r.records
            .iter()
            .rposition(|x| x["record"] == "event" && x["camera"] == cam)
            .unwrap_or_else(|| panic!("no event from {cam}"))
    };
    assert!(last_of("a") > last_of("dies") || last_of("b") > last_of("dies"));
}

#[test]
fn a_camera_that_never_answers_goes_down_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nobody listens on the port: every attempt is refused, and the camera gives up.
    let gone = format!(
        "[[cameras]]\nname = \"gone\"\nsource = \"mjpeg+http://127.0.0.1:{port}/\"\n\
         give_up_after_s = 1.5\nbackoff_initial_s = 0.1\nbackoff_max_s = 0.3\n"
    );
    let r = run(&config(tmp.path(), &gone), 20);
    let cams = r.summary["cameras"].as_array().unwrap();
    let by = |n: &str| cams.iter().find(|c| c["camera"] == n).unwrap();
    assert_eq!(by("gone")["frames_captured"], 0, "{}", r.summary);
    for n in ["a", "b"] {
        assert_eq!(by(n)["frames_processed"], 20, "{n}: {}", r.summary);
    }
    let down: Vec<&Value> = r
        .records
        .iter()
        .filter(|x| x["record"] == "alert" && x["kind"] == "camera_down")
        .collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0]["camera"], "gone");
    assert!(down[0]["message"].as_str().unwrap().contains("'gone'"));
}

/// A live MJPEG camera on loopback sending the bundled clip's frames, 50 ms apart, until the
/// client goes away.
fn live_camera() -> mjpeg_camera::Camera {
    use std::io::Write;
    let frames: Vec<Vec<u8>> = (1..=20)
        .map(|i| {
            std::fs::read(common::repo().join(format!("samples/vtest/frame_{i:04}.jpg"))).unwrap()
        })
        .collect();
    mjpeg_camera::Camera::start(vec![Box::new(move |s| {
        if s.write_all(mjpeg_camera::OK_HEAD.as_bytes()).is_err() {
            return;
        }
        for jpeg in frames.iter().cycle() {
            let head = format!(
                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.len()
            );
            let sent = s
                .write_all(head.as_bytes())
                .and_then(|_| s.write_all(jpeg))
                .and_then(|_| s.write_all(b"\r\n"));
            if sent.is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })])
}

/// Two live cameras sending faster than their `detect_fps`: each drops its own oldest frames
/// (its queue never grows) and each still gets frames detected.
#[test]
fn live_cameras_drop_their_own_oldest_frames_and_none_is_starved() {
    let (one, two) = (live_camera(), live_camera());
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("live.toml");
    std::fs::write(
        &p,
        format!(
            "[[cameras]]\nname = \"east\"\nsource = \"{}\"\ndetect_fps = 2\n\
             [[cameras]]\nname = \"west\"\nsource = \"{}\"\ndetect_fps = 2\n",
            one.uri("/"),
            two.uri("/")
        ),
    )
    .unwrap();
    let r = run(&p, 20);
    let cams = r.summary["cameras"].as_array().unwrap();
    assert_eq!(cams.len(), 2);
    let mut dropped = 0;
    for c in cams {
        assert_eq!(c["frames_captured"], 20, "{c}");
        let (done, gone) = (
            c["frames_processed"].as_u64().unwrap(),
            c["frames_dropped"].as_u64().unwrap(),
        );
        assert!(done >= 1, "a camera was starved: {c}");
        assert_eq!(done + gone, 20, "every frame detected or dropped: {c}");
        dropped += gone;
    }
    // 20 frames a second per camera, detected at most 2 a second each (`detect_fps`, whatever
    // the machine's speed): most frames were dropped, none piled up.
    assert!(dropped > 0, "{}", r.summary);
}

/// `cmd/ground` answers from the camera it names: the first without a name, an error naming an
/// unknown one.
#[test]
fn ground_names_a_camera() {
    if mosquitto::binary().is_none() || !mosquitto::clients_installed() {
        mosquitto::skip(
            "mosquitto / mosquitto-clients not installed (apt-get install mosquitto mosquitto-clients)",
        );
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let sweets = common::repo().join("tests/fixtures/ground/smarties.png");
    let cfg = tmp.path().join("ground.toml");
    std::fs::write(
        &cfg,
        format!(
            "device = \"groundcams\"\n[detector]\nconf = 0.25\n\
             [tracker]\ntrack_high = 0.3\nnew_track_score = 0.3\n\
             [[cameras]]\nname = \"plaza\"\nsource = \"file:samples/vtest?fps=5&loop=true\"\n\
             [[cameras]]\nname = \"table\"\nsource = \"file:{}?fps=5&loop=true\"\n",
            sweets.display()
        ),
    )
    .unwrap();
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-v",
            "-t",
        ])
        .arg("lookout/groundcams/reply/#")
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = sub.stdout.take().unwrap();
    let _sub = common::Kill(sub);
    let (tx, replies) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some((_, payload)) = line.split_once(' ') {
                if let Ok(v) = serde_json::from_str::<Value>(payload) {
                    let _ = tx.send(v);
                }
            }
        }
    });
    let _run = common::Kill(
        common::lookout()
            .args(["run", "--json", "--config"])
            .arg(&cfg)
            .args(["--broker", &broker.url(), "--spool"])
            .arg(tmp.path().join("spool.redb"))
            .current_dir(common::repo())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ask = |id: &str, body: Value| -> Option<Value> {
        let f = tmp.path().join("payload");
        std::fs::write(&f, body.to_string()).unwrap();
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
            .args(["-t", "lookout/groundcams/cmd/ground", "-f"])
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
        reply(&replies, id, 5)
    };

    // Until the table camera has confirmed tracks of the sweets, ask again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    let blue = loop {
        n += 1;
        let id = format!("warm-{n}");
        let body = serde_json::json!({"request_id": id, "camera": "table",
                                      "instruction": "pick up the blue ball"});
        if let Some(v) = ask(&id, body) {
            if v["ok"] == true && v["result"]["target"]["track_id"].is_u64() {
                break v;
            }
            assert!(Instant::now() < deadline, "no grounded reply: {v}");
        }
        assert!(Instant::now() < deadline, "no reply from camera table");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(blue["result"]["camera"], "table", "{blue}");
    assert_eq!(blue["result"]["target"]["label"], "sports ball", "{blue}");

    // A snapshot of the camera asked for goes to its own topic.
    let f = tmp.path().join("snap");
    std::fs::write(&f, r#"{"request_id":"snap","camera":"table"}"#).unwrap();
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1"])
        .args(["-t", "lookout/groundcams/cmd/snapshot", "-f"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let v = reply(&replies, "snap", 10).expect("a snapshot reply");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["result"]["topic"], "lookout/groundcams/snapshot/table",
        "{v}"
    );

    // No camera named: the first camera's frame.
    let v = ask(
        "plain",
        serde_json::json!({"request_id": "plain", "instruction": "the blue ball"}),
    )
    .expect("a reply without a camera");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["result"]["camera"], "plaza", "{v}");

    let v = ask(
        "garage",
        serde_json::json!({"request_id": "garage", "camera": "garage", "instruction": "the car"}),
    )
    .expect("a reply for an unknown camera");
    assert_eq!(v["ok"], false, "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("'garage'") && err.contains("'plaza'") && err.contains("'table'"),
        "{err}"
    );
}

fn reply(replies: &Receiver<Value>, id: &str, secs: u64) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match replies.recv_timeout(left) {
            Ok(v) if v["request_id"] == id => return Some(v),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[test]
fn check_names_the_bad_key_with_its_camera() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("c.toml");
    std::fs::write(
        &p,
        "[[cameras]]\nname = \"front\"\nsource = \"file:samples/vtest?fps=10\"\n\
         [[cameras]]\nname = \"rear\"\nsource = \"nope://x\"\n\
         [[cameras]]\nname = \"front\"\nstall_timeout_s = -2\n",
    )
    .unwrap();
    let out = common::lookout()
        .arg("check")
        .arg("--config")
        .arg(&p)
        .current_dir(common::repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for key in [
        "cameras[1].source",
        "cameras[2].name",
        "cameras[2].stall_timeout_s",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("error:") && l.contains(key)),
            "no error naming {key}:\n{err}"
        );
    }
    // A good two-camera config passes.
    std::fs::write(
        &p,
        "[[cameras]]\nname = \"front\"\nsource = \"file:samples/vtest?fps=10\"\n\
         [[cameras]]\nname = \"rear\"\nsource = \"file:samples/vtest?fps=5\"\n",
    )
    .unwrap();
    let out = common::lookout()
        .arg("check")
        .arg("--config")
        .arg(&p)
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

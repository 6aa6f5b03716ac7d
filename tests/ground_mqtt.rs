//! `cmd/ground` round trip on a real mosquitto: `lookout run` loops a photo of coloured sweets,
//! a controller (mosquitto_pub / mosquitto_sub) asks for objects by instruction and gets the box and
//! track id back; malformed instructions get an error naming the field, and the runtime keeps
//! answering afterwards.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use lookout::geometry::BBox;
use serde_json::Value;

const DEVICE: &str = "groundtest";

struct Controller {
    port: u16,
    replies: Receiver<(String, Value)>,
    _sub: common::Kill,
    tmp: tempfile::TempDir,
}

impl Controller {
    fn new(port: u16) -> Controller {
        let mut sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-t"])
            .arg(format!("lookout/{DEVICE}/reply/#"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub");
        let out = sub.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((topic, payload)) = line.split_once(' ') {
                    if let Ok(v) = serde_json::from_str::<Value>(payload) {
                        let _ = tx.send((topic.to_string(), v));
                    }
                }
            }
        });
        Controller {
            port,
            replies: rx,
            _sub: common::Kill(sub),
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// Publish raw bytes on `cmd/<cmd>` (through a file, so any bytes go).
    fn send(&self, cmd: &str, payload: &[u8]) {
        let f = self.tmp.path().join("payload");
        std::fs::write(&f, payload).unwrap();
        let st = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
            ])
            .arg(format!("lookout/{DEVICE}/cmd/{cmd}"))
            .arg("-f")
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The reply to `request_id`, waiting up to `secs`.
    fn reply(&self, request_id: &str, secs: u64) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.replies.recv_timeout(left) {
                Ok((topic, v)) if topic.ends_with(&format!("/reply/{request_id}")) => {
                    assert_eq!(v["request_id"], request_id);
                    return Some(v);
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    fn ground(&self, id: &str, instruction: &str) -> Value {
        let payload = serde_json::json!({"request_id": id, "instruction": instruction});
        self.send("ground", payload.to_string().as_bytes());
        self.reply(id, 30)
            .unwrap_or_else(|| panic!("no reply to {id} ({instruction:?})"))
    }
}

fn iou(v: &Value, want: [f32; 4]) -> f32 {
    let b: [f32; 4] = serde_json::from_value(v.clone()).expect("box");
    BBox::from(b).iou(&BBox::from(want))
}

#[test]
fn ground_over_mqtt_with_malformed_instructions() {
    if mosquitto::binary().is_none() || !mosquitto::clients_installed() {
        mosquitto::skip(
            "mosquitto / mosquitto-clients not installed (apt-get install mosquitto mosquitto-clients)",
        );
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("ground.toml");
    let image = common::repo().join("tests/fixtures/ground/smarties.png");
    std::fs::write(
        &cfg,
        format!(
            "device = \"{DEVICE}\"\n[camera]\nname = \"table\"\nsource = \"file:{}?fps=5&loop=true\"\n\
             [detector]\nconf = 0.25\n\
             # the sweets score 0.3-0.5: let them start tracks\n\
             [tracker]\ntrack_high = 0.3\nnew_track_score = 0.3\n",
            image.display()
        ),
    )
    .unwrap();
    let ctl = Controller::new(broker.port);
    let run = common::lookout()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--broker", &broker.url(), "--json"])
        .arg("--spool")
        .arg(tmp.path().join("spool.redb"))
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut run = common::Kill(run);

    // Until lookout is connected and has confirmed tracks of the sweets, ask again.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    let mut last = None;
    let blue = loop {
        n += 1;
        let id = format!("warm-{n}");
        let payload = serde_json::json!({"request_id": id, "instruction": "pick up the blue ball"});
        ctl.send("ground", payload.to_string().as_bytes());
        if let Some(v) = ctl.reply(&id, 3) {
            if v["ok"] == true && v["result"]["target"]["track_id"].is_u64() {
                break v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "no grounded reply with a track id; last reply: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("{blue}");
    let r = &blue["result"];
    assert_eq!(blue["command"], "ground");
    assert_eq!(r["status"], "found");
    assert_eq!(r["action"], "pick up");
    assert_eq!(r["target"]["label"], "sports ball");
    assert!(
        iou(&r["target"]["box"], [350.8, 55.3, 404.7, 110.1]) > 0.5,
        "{r}"
    );
    assert!(r["target"]["score"].as_f64().unwrap() > 0.3);
    assert!(r["target"]["reason"].as_str().unwrap().contains("blue"));
    assert!(r["frame_id"].is_u64() && r["candidates"].is_array());

    let v = ctl.ground("right-green", "the green ball on the right");
    assert_eq!(v["result"]["status"], "found", "{v}");
    assert!(
        iou(&v["result"]["target"]["box"], [359.4, 144.2, 412.5, 198.0]) > 0.5,
        "{v}"
    );

    let v = ctl.ground("green", "the green ball");
    assert_eq!(v["result"]["status"], "ambiguous", "{v}");
    assert!(v["result"]["target"].is_null());
    assert!(v["result"]["candidates"].as_array().unwrap().len() >= 2);

    let v = ctl.ground("unicorn", "the unicorn");
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"]["status"], "not_found", "{v}");
    assert!(v["result"]["reason"].as_str().unwrap().contains("unicorn"));

    // Malformed instructions: an error reply naming the field, nothing else.
    let long = "the red ball ".repeat(400);
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty",
            br#"{"request_id":"empty","instruction":"   "}"#.to_vec(),
            "instruction must not be empty",
        ),
        (
            "missing",
            br#"{"request_id":"missing"}"#.to_vec(),
            "missing field `instruction`",
        ),
        (
            "number",
            br#"{"request_id":"number","instruction":42}"#.to_vec(),
            "instruction must be a string, got a number",
        ),
        (
            "object",
            br#"{"request_id":"object","instruction":{"noun":"cup"}}"#.to_vec(),
            "instruction must be a string, got an object",
        ),
        (
            "utf8",
            b"{\"request_id\":\"utf8\",\"instruction\":\"the \xff\xfe cup\"}".to_vec(),
            "instruction is not valid UTF-8",
        ),
        (
            "long",
            serde_json::json!({"request_id": "long", "instruction": long})
                .to_string()
                .into_bytes(),
            "instruction is longer than",
        ),
        (
            "json",
            br#"{"request_id":"json","instruction":"the cup""#.to_vec(),
            "invalid JSON",
        ),
    ];
    for (id, payload, want) in &bad {
        ctl.send("ground", payload);
        let v = ctl
            .reply(id, 15)
            .unwrap_or_else(|| panic!("no error reply to {id}"));
        assert_eq!(v["ok"], false, "{id}: {v}");
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(want), "{id}: {err}");
        println!("{id}: {err}");
    }

    // The runtime kept running and still grounds.
    assert!(run.0.try_wait().unwrap().is_none(), "lookout exited");
    let v = ctl.ground("after", "the blue ball");
    assert_eq!(v["result"]["status"], "found", "{v}");
    assert_eq!(
        v["result"]["target"]["track_id"], r["target"]["track_id"],
        "the same sweet keeps its track id"
    );
}

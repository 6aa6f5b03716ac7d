//! `cmd/ground` on a real mosquitto returns a person target's `mask`, computed on the unblurred
//! frame even when `[privacy] blur_people` blurs what leaves the device: `lookout run` loops
//! basketball1.png with the blur on, and the reply's mask matches `lookout ground`'s on the photo.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use lookout::segment::Mask;
use serde_json::Value;

const DEVICE: &str = "masktest";
const PHOTO: &str = "tests/fixtures/images/basketball1.png";

#[test]
fn cmd_ground_returns_the_mask_of_a_person_from_the_unblurred_frame() {
    if mosquitto::binary().is_none() || !mosquitto::clients_installed() {
        mosquitto::skip(
            "mosquitto / mosquitto-clients not installed (apt-get install mosquitto mosquitto-clients)",
        );
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("mask.toml");
    let image = common::repo().join(PHOTO);
    // The CLI's answer on the photo itself, the reference below: it needs nothing of the run, so
    // it works beside it instead of after it.
    let cli = common::lookout()
        .args(["ground", "--json"])
        .arg(&image)
        .arg("the person on the left")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(
        &cfg,
        format!(
            "device = \"{DEVICE}\"\n[camera]\nname = \"court\"\nsource = \"file:{}?fps=5&loop=true\"\n\
             [privacy]\nblur_people = true\n",
            image.display()
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
        .arg(format!("lookout/{DEVICE}/reply/#"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let out = sub.stdout.take().unwrap();
    let _sub = common::Kill(sub);
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
    let _run = common::Kill(
        common::lookout()
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--broker", &broker.url(), "--json"])
            .arg("--spool")
            .arg(tmp.path().join("spool.redb"))
            .current_dir(common::repo())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Ask until lookout is connected and tracks the players (a hang guard, not a speed check).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut n = 0;
    let reply = 'ask: loop {
        assert!(Instant::now() < deadline, "no grounded reply with a mask");
        n += 1;
        let id = format!("m-{n}");
        let payload =
            serde_json::json!({"request_id": id, "instruction": "the person on the left"});
        let st = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-q",
                "1",
                "-t",
            ])
            .arg(format!("lookout/{DEVICE}/cmd/ground"))
            .arg("-m")
            .arg(payload.to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let wait = Instant::now() + Duration::from_secs(5);
        while let Some(left) = wait.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((topic, v)) if topic.ends_with(&format!("/reply/{id}")) => {
                    if v["ok"] == true && v["result"]["target"]["track_id"].is_u64() {
                        break 'ask v;
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let t = &reply["result"]["target"];
    assert_eq!(t["label"], "person", "{reply}");
    let got: Mask = serde_json::from_value(t["mask"].clone()).expect("target.mask");
    assert_eq!((got.width(), got.height()), (640, 480));

    // the CLI on the photo itself: the same person, the same mask
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success());
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Mask = serde_json::from_value(cli["target"]["mask"].clone()).unwrap();
    let iou = got.iou(&want);
    println!(
        "cmd/ground mask {} px, CLI {} px, IoU {iou:.4}",
        got.area(),
        want.area()
    );
    assert!(iou >= 0.95, "cmd/ground's mask vs the CLI's: IoU {iou:.4}");
}

//! The event store asked from outside a running `lookout run`: `cmd/search` and `cmd/summary`
//! over a real mosquitto, `/api/search` and `/api/summary` on the web view, and the retained
//! `summary` topic. One run fills a store from the bundled clip; a second run (a blank picture
//! on a loop, so it adds nothing) serves it, and every answer is checked against what
//! `lookout search --json` / `lookout summary --json` print for the same store.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const QUERY: &str = "person in the path zone";

/// Kills the serving run however the test ends.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_slice(&raw[split + 4..]).unwrap())
}

/// The record keys of a search answer, in order.
fn keys(v: &Value) -> Vec<u64> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits: {v}"))
        .iter()
        .map(|h| h["record"]["key"].as_u64().unwrap())
        .collect()
}

fn cli_json(args: &[&str], store: &Path) -> Value {
    let out = common::succeed(common::lookout().args(args).arg("--store").arg(store));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn search_and_summary_over_mqtt_and_http_match_the_cli() {
    require_mosquitto!();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    common::succeed(
        common::lookout()
            .args(["run", "--broker", "none", "--http", "off", "--store"])
            .arg(&store)
            .current_dir(common::repo()),
    );

    // A blank picture on a loop: detections none, descriptions off, so the store stays as it is.
    let blank = tmp.path().join("blank");
    std::fs::create_dir(&blank).unwrap();
    image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]))
        .save(blank.join("blank.png"))
        .unwrap();
    let cfg = tmp.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "device = \"recall\"\n[camera]\nname = \"plaza\"\nsource = \"file:{}?fps=2&loop=true\"\n\
             [pipeline]\ndescribe_interval = 0.0\n\
             [store]\npath = \"{}\"\nsummary_every_s = 1.0\nsummary_window_s = 3600.0\n",
            blank.display(),
            store.display()
        ),
    )
    .unwrap();
    let broker = mosquitto::Mosquitto::start();
    let sub = mosquitto::Sub::new(broker.port, "recall-sub", &["lookout/recall/#"], true);
    let mut child = common::lookout()
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--broker", &broker.url(), "--http", "127.0.0.1:0"])
        .arg("--spool")
        .arg(tmp.path().join("spool.redb"))
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The web view's address is in the start-up lines.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let run = Running(child);
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "run ended early");
        if let Some(rest) = line.trim().split("web view: http://").nth(1) {
            addr = rest.trim_end_matches('/').parse::<SocketAddr>().ok();
        }
    }
    let addr = addr.unwrap();
    // Keep draining stderr so the run never blocks on a full pipe.
    std::thread::spawn(move || for _ in err.lines() {});

    // The periodic summary, retained, tells the same as `lookout summary`.
    let s = sub.recv_on("lookout/recall/summary").json();
    // Retained: a subscriber arriving later gets the latest at once.
    let late = mosquitto::Sub::new(broker.port, "late-sub", &["lookout/recall/summary"], true);
    assert!(late.recv_on("lookout/recall/summary").retain);
    mosquitto::check_envelope(&s, "recall");
    let cli_summary = cli_json(&["summary", "--since", "1h", "--json"], &store);
    assert_eq!(s["counts"], cli_summary["counts"], "{s}");
    assert!(s["text"].as_str().unwrap().contains("path zone"), "{s}");

    // cmd/search: the same hits as `lookout search --json`.
    let ask = |id: &str, cmd: &str, body: Value| -> Value {
        let mut body = body;
        body["request_id"] = id.into();
        let deadline = Instant::now() + mosquitto::WAIT;
        loop {
            assert!(Instant::now() < deadline, "no reply to {id}");
            sub.publish(&format!("lookout/recall/cmd/{cmd}"), body.to_string());
            let until = Instant::now() + Duration::from_secs(5);
            while let Some(m) = sub.recv_within(until.saturating_duration_since(Instant::now())) {
                if m.topic == format!("lookout/recall/reply/{id}") {
                    return m.json();
                }
            }
        }
    };
    let reply = ask(
        "s1",
        "search",
        serde_json::json!({"query": QUERY, "since": "1h", "limit": 5}),
    );
    assert_eq!(reply["ok"], true, "{reply}");
    let cli = cli_json(
        &["search", QUERY, "--since", "1h", "--limit", "5", "--json"],
        &store,
    );
    assert!(!keys(&cli).is_empty());
    assert_eq!(keys(&reply["result"]), keys(&cli), "{reply}");
    assert_eq!(reply["result"]["hits"][0]["why"], cli["hits"][0]["why"]);

    let bad = ask(
        "s2",
        "search",
        serde_json::json!({"query": QUERY, "limit": 1000}),
    );
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().contains("limit"), "{bad}");
    let long = ask(
        "s3",
        "search",
        serde_json::json!({"query": "x".repeat(600)}),
    );
    assert!(long["error"].as_str().unwrap().contains("512"), "{long}");
    let sm = ask("m1", "summary", serde_json::json!({"since": "1h"}));
    assert_eq!(sm["ok"], true, "{sm}");
    assert_eq!(sm["result"]["counts"], cli_summary["counts"]);

    // /api/search and /api/summary: the same again.
    let path = format!("/api/search?q={}&since=1h&limit=5", QUERY.replace(' ', "+"));
    let (code, web) = http_get(addr, &path);
    assert_eq!(code, 200, "{web}");
    assert_eq!(keys(&web), keys(&cli));
    let (code, web) = http_get(addr, "/api/summary?since=1h");
    assert_eq!(code, 200, "{web}");
    assert_eq!(web["counts"], cli_summary["counts"]);
    let (code, web) = http_get(addr, "/api/search?limit=5");
    assert_eq!(code, 400);
    assert!(web["error"].as_str().unwrap().contains("q "), "{web}");
    drop(run);
}

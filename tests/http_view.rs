//! The live web view of `lookout run` on the bundled clip, over real sockets: `/api/status`,
//! `/api/events`, `/api/snapshot/<camera>.jpg`, `/stream.mjpg`, `/metrics` (read by a strict
//! Prometheus text parser), the bearer token, and the page in a real headless Chromium.

mod common;
#[path = "support/prom_text.rs"]
mod prom_text;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The clip looped at its real pace, so the server outlives every check.
const LOOPED_CLIP: &str = "file:samples/vtest?fps=10&loop=true";
/// How long any one wait may take before the test gives up (a hang guard, not a speed check).
const PATIENCE: Duration = Duration::from_secs(180);
const TOKEN: &str = "test-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A `lookout run` with its web view, killed on drop.
struct Run {
    child: Child,
    addr: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Run {
    /// `lookout run` with `--http 127.0.0.1:0`, the embedded broker on a free port and `args`;
    /// returns once it prints where the web view listens.
    fn start(args: &[&str], config_extra: Option<&str>) -> Run {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = common::lookout();
        cmd.args(["run", "--http", "127.0.0.1:0", "--source", LOOPED_CLIP])
            .args(["--broker", "embedded", "--embedded-port"])
            .arg(free_port().to_string())
            .arg("--spool")
            .arg(tmp.path().join("spool.redb"))
            .arg("--json")
            .args(args);
        if let Some(extra) = config_extra {
            let demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
            let p = tmp.path().join("web.toml");
            std::fs::write(&p, format!("{demo}\n{extra}\n")).unwrap();
            cmd.arg("--config").arg(p);
        }
        let mut child = cmd
            .current_dir(common::repo())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        // Keeps reading stderr to the end, so the run never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("web view: http://") {
                    let _ = tx.try_send(a.trim_end_matches('/').to_string());
                }
                eprintln!("lookout: {line}");
            }
        });
        let addr = rx
            .recv_timeout(PATIENCE)
            .expect("lookout run did not report its web view")
            .parse()
            .unwrap();
        Run {
            child,
            addr,
            _tmp: tmp,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`, read to the end.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let body = raw[split + 4..].to_vec();
    let r = Resp {
        status,
        headers,
        body,
    };
    assert!(
        r.header("transfer-encoding").is_none(),
        "short answers carry a Content-Length"
    );
    if let Some(n) = r.header("content-length") {
        assert_eq!(n.parse::<usize>().unwrap(), r.body.len());
    }
    r
}

/// Polls `/api/events` until `want` holds for its records (the clip fires the demo rules within
/// seconds), returning them.
fn wait_for_records(
    run: &Run,
    auth: &[(&str, &str)],
    want: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = get(run.addr, "/api/events?n=500", auth).json();
        let recs = v["records"].as_array().cloned().unwrap_or_default();
        if want(&recs) {
            return recs;
        }
        assert!(Instant::now() < deadline, "records never came: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn has_alert(recs: &[Value]) -> bool {
    recs.iter().any(|r| r["record"] == "alert")
}

fn is_jpeg(b: &[u8]) -> bool {
    b.len() > 4 && b[..3] == [0xFF, 0xD8, 0xFF] && b[b.len() - 2..] == [0xFF, 0xD9]
}

/// Reads `/stream.mjpg` until `parts` JPEG parts came, checking each part's head.
fn read_stream(addr: SocketAddr, parts: usize) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET /stream.mjpg HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let mut boundary = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(b) = line
            .to_ascii_lowercase()
            .strip_prefix("content-type: multipart/x-mixed-replace; boundary=")
        {
            boundary = Some(b.trim().to_string());
        }
    }
    let boundary = boundary.expect("a multipart/x-mixed-replace stream");
    let mut out = Vec::new();
    while out.len() < parts {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), format!("--{boundary}"));
        let mut len = None;
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let l = line.to_ascii_lowercase();
            if let Some(n) = l.strip_prefix("content-length:") {
                len = Some(n.trim().parse::<usize>().unwrap());
            }
            if let Some(t) = l.strip_prefix("content-type:") {
                assert_eq!(t.trim(), "image/jpeg");
            }
        }
        let mut jpeg = vec![0; len.expect("each part has a Content-Length")];
        r.read_exact(&mut jpeg).unwrap();
        let mut crlf = [0; 2];
        r.read_exact(&mut crlf).unwrap();
        assert_eq!(&crlf, b"\r\n");
        out.push(jpeg);
    }
    out
}

fn sample<'a>(fams: &'a [prom_text::Family], name: &str) -> Vec<&'a prom_text::Sample> {
    fams.iter()
        .flat_map(|f| &f.samples)
        .filter(|s| s.name == name)
        .collect()
}

#[test]
fn the_web_view_serves_status_events_snapshots_a_stream_and_metrics() {
    let run = Run::start(&[], None);
    let recs = wait_for_records(&run, &[], has_alert);
    assert!(recs.iter().any(|r| r["record"] == "event"), "events too");
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    // `since` returns only what is newer.
    let last = *seqs.last().unwrap();
    let newer = get(run.addr, &format!("/api/events?since={last}"), &[]).json();
    assert!(newer["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["seq"].as_u64().unwrap() > last));

    let st = get(run.addr, "/api/status", &[]).json();
    assert_eq!(st["camera"], "plaza");
    assert_eq!(st["device"], "lookout-demo");
    assert!(st["frame"]["frame_id"].as_u64().is_some());
    assert!(st["frame"]["width"].as_u64().unwrap() > 0);
    let names: Vec<&str> = st["overlay"]["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["path", "lamp-post"], "the demo's zone and line");
    assert!(st["tracks"].is_array());
    assert!(st["mqtt"]["spool_depth"].is_u64(), "{st}");

    let snap = get(run.addr, "/api/snapshot/plaza.jpg", &[]);
    assert_eq!(snap.status, 200);
    assert_eq!(snap.header("content-type"), Some("image/jpeg"));
    assert!(is_jpeg(&snap.body));
    let img = image::load_from_memory(&snap.body).unwrap();
    assert_eq!(
        u64::from(img.width()),
        st["frame"]["width"].as_u64().unwrap()
    );
    assert_eq!(get(run.addr, "/api/snapshot/other.jpg", &[]).status, 404);
    assert_eq!(get(run.addr, "/nothing", &[]).status, 404);

    let parts = read_stream(run.addr, 3);
    assert!(
        parts.iter().all(|p| is_jpeg(p)),
        "every part is a whole JPEG"
    );
    assert!(
        parts.windows(2).all(|w| w[0] != w[1]),
        "each part a new frame"
    );

    let page = get(run.addr, "/", &[]);
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("id=\"alerts\"") && html.contains("stream.mjpg"));

    let m = get(run.addr, "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(m.body).unwrap();
    std::fs::write(
        std::env::temp_dir().join("lookout-http-view-metrics.txt"),
        &text,
    )
    .unwrap();
    let fams = prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let one = |name: &str| -> f64 {
        let s = sample(&fams, name);
        assert_eq!(s.len(), 1, "{name}: {s:?}");
        assert_eq!(s[0].labels["camera"], "plaza");
        s[0].value
    };
    assert!(one("lookout_frames_processed_total") > 0.0);
    assert!(one("lookout_frames_captured_total") >= one("lookout_frames_processed_total"));
    one("lookout_frames_dropped_total");
    one("lookout_mqtt_spool_depth");
    one("lookout_mqtt_reconnects_total");
    assert_eq!(one("lookout_mqtt_connected"), 1.0);
    assert!(one("lookout_http_stream_frames_total") >= 3.0);
    let alerts = sample(&fams, "lookout_alerts_total");
    assert!(
        alerts
            .iter()
            .any(|s| s.labels["rule"] == "path" && s.value > 0.0),
        "{alerts:?}"
    );
    let stages: std::collections::BTreeSet<&str> =
        sample(&fams, "lookout_stage_duration_seconds_count")
            .iter()
            .map(|s| s.labels["stage"].as_str())
            .collect();
    for st in [
        "capture",
        "queue",
        "preprocess",
        "inference",
        "postprocess",
        "analyse",
        "publish",
    ] {
        assert!(stages.contains(st), "stage {st} in {stages:?}");
    }
    // OpenMetrics for scrapers that ask for it.
    let om = get(
        run.addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert!(om
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(String::from_utf8(om.body).unwrap().ends_with("# EOF\n"));
}

#[test]
fn with_a_token_every_request_needs_it() {
    let run = Run::start(&[], Some(&format!("[http]\ntoken = \"{TOKEN}\"")));
    for path in [
        "/",
        "/api/status",
        "/api/events",
        "/metrics",
        "/stream.mjpg",
        "/api/snapshot/plaza.jpg",
    ] {
        let r = get(run.addr, path, &[]);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"lookout\"")
        );
        let wrong = get(
            run.addr,
            path,
            &[("Authorization", "Bearer test-token-0123456788")],
        );
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
    }
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get(run.addr, "/api/status", &[("Authorization", &bearer)]).status,
        200
    );
    assert_eq!(
        get(run.addr, &format!("/api/status?token={TOKEN}"), &[]).status,
        200
    );
    let m = get(run.addr, &format!("/metrics?token={TOKEN}"), &[]);
    prom_text::parse(&String::from_utf8(m.body).unwrap()).unwrap();
}

/// The raw answer to `bytes` sent as a request.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // The server may answer and close before all of an oversized head is written.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn oversized_heads_and_streams_beyond_the_cap_are_refused() {
    let run = Run::start(&[], Some("[http]\nmax_streams = 1"));
    let mut big = b"GET /api/status HTTP/1.1\r\nX-Filler: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend(b"\r\n\r\n");
    assert!(raw(run.addr, &big).starts_with("HTTP/1.1 431 "));
    assert!(raw(run.addr, b"POST /api/status HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(raw(run.addr, b"\x16\x03\x01 not http\r\n\r\n").starts_with("HTTP/1.1 400 "));
    // One stream plays; a second is refused while it does; the server still answers.
    let mut first = TcpStream::connect(run.addr).unwrap();
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(first, "GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let second = get(run.addr, "/stream.mjpg", &[]);
    assert_eq!(second.status, 503);
    assert!(String::from_utf8_lossy(&second.body).contains("http.max_streams"));
    assert_eq!(get(run.addr, "/api/status", &[]).status, 200);
    drop(first);
}

#[test]
fn the_no_argument_demo_serves_the_web_view_and_a_config_file_does_not() {
    let run = |args: &[&str]| {
        let out = common::lookout()
            .args(["run", "--broker", "none", "--max-frames", "3"])
            .args(args)
            .current_dir(common::repo())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let demo = run(&[]);
    // On 127.0.0.1:8080, or (when another program holds that port) without, saying so.
    assert!(
        demo.contains("web view: http://127.0.0.1:8080/")
            || demo.contains("web view off: http.listen 127.0.0.1:8080"),
        "{demo}"
    );
    let file = run(&["--config", "samples/demo.toml"]);
    assert!(!file.contains("web view"), "{file}");
    let off = run(&["--http", "off"]);
    assert!(!off.contains("web view"), "{off}");
}

#[test]
fn a_listen_address_beyond_loopback_is_refused_without_a_token() {
    let out = common::lookout()
        .args([
            "run",
            "--broker",
            "none",
            "--max-frames",
            "1",
            "--http",
            "0.0.0.0:0",
        ])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("http.token"), "{err}");
}

/// Chromium's binary, when installed (Debian `chromium`, see .ci/install-deps).
fn chromium() -> Option<String> {
    ["chromium", "chromium-browser"].into_iter().find_map(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| c.to_string())
    })
}

#[test]
fn a_real_browser_shows_the_alerts_and_the_zones() {
    let Some(browser) = chromium() else {
        common::skip("chromium is not installed (apt-get install chromium; .ci/install-deps)");
        return;
    };
    let run = Run::start(&[], Some(&format!("[http]\ntoken = \"{TOKEN}\"")));
    let auth = format!("Bearer {TOKEN}");
    wait_for_records(&run, &[("Authorization", &auth)], has_alert);
    let profile = tempfile::tempdir().unwrap();
    // The page runs its scripts for 8 s of virtual time (it polls every 1–2 s), then the DOM is
    // printed; the token rides in the query string as a person would paste it.
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--window-size=1400,760",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(run.url(&format!("/?token={TOKEN}")))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts = dom
        .split_once("<ul id=\"alerts\">")
        .and_then(|(_, rest)| rest.split_once("</ul>"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no alerts list in the DOM:\n{dom}"));
    let items = alerts.matches("<li class=\"alert ").count();
    assert!(items >= 1, "the alerts list is empty:\n{alerts}");
    assert!(
        alerts.contains("[path]") || alerts.contains("[lamp-post]") || alerts.contains("[crowd]")
    );
    assert!(
        dom.contains("class=\"zone\"") && dom.contains("data-rule=\"path\""),
        "zone drawn"
    );
    assert!(
        dom.contains("class=\"line\"") && dom.contains("data-rule=\"lamp-post\""),
        "line drawn"
    );
    assert!(
        dom.contains(&format!("stream.mjpg?token={TOKEN}")),
        "the stream carries the token"
    );
}

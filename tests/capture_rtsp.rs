//! `rtsp://` against a real RTSP server (GStreamer's gst-rtsp-server serving an H.264 clip made
//! by ffmpeg): lookout plays it, the server is killed and started again twice mid-run, and the
//! source comes back each time; H.265 and UDP transport play too; a server that accepts and
//! then says nothing is detected as stalled and reopened; `lookout check` validates RTSP sources
//! and the camera keys; the password never shows.
//!
//! No timing is asserted: waits have generous deadlines only so that a broken build fails
//! rather than hangs. The seconds from "server back" to "first frame" are printed as figures.

mod common;
#[path = "support/rtsp.rs"]
mod rtsp;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use lookout::capture::{self, Backoff, CaptureError, FrameSource, HealPolicy, OpenOptions};

const DEADLINE: Duration = Duration::from_secs(120);

fn policy() -> HealPolicy {
    HealPolicy {
        stall_timeout: Some(Duration::from_secs(10)),
        backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            factor: 2.0,
        },
        jitter: 0.25,
        give_up_after: Duration::from_secs(120),
    }
}

fn ready() -> bool {
    match rtsp::missing() {
        Some(why) => {
            common::skip(&why);
            false
        }
        None => true,
    }
}

/// Next frame, passing over outages and bad frames; errors seen are collected.
fn next_frame(src: &mut dyn FrameSource, errors: &mut Vec<String>) -> capture::Frame {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < DEADLINE, "no frame: {errors:?}");
        match src.next_frame() {
            Ok(Some(f)) => return f,
            Ok(None) => panic!("the stream ended: {errors:?}"),
            Err(e) if e.is_recoverable() => errors.push(e.to_string()),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn rtsp_source_heals_through_two_server_restarts() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = rtsp::make_clip(dir.path(), "h264", 4);
    let mut server = rtsp::RtspServer::start(rtsp::free_port(), &clip, "h264");
    let uri = format!("{}?width=160", server.url("viewer:s3cret-pw@"));
    let mut src = capture::open_healing(&uri, OpenOptions::default(), policy()).unwrap();
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let f = next_frame(&mut src, &mut errors);
        assert_eq!(f.image.width(), 160);
        assert!(!f.source.contains("s3cret"), "{}", f.source);
        ids.push(f.id);
    }
    for round in 1..=2 {
        server.kill();
        // Frames already on their way may still come; then the outage is reported.
        let t0 = Instant::now();
        loop {
            assert!(t0.elapsed() < DEADLINE, "the outage was never reported");
            match src.next_frame() {
                Ok(Some(f)) => ids.push(f.id),
                Err(CaptureError::Disconnected { reason, .. }) => {
                    errors.push(reason);
                    break;
                }
                Err(e) if e.is_recoverable() => errors.push(e.to_string()),
                other => panic!("{other:?}"),
            }
        }
        server.restart();
        let back = Instant::now();
        let f = next_frame(&mut src, &mut errors);
        eprintln!(
            "figure: round {round}: first frame {:.2} s after the RTSP server was back",
            back.elapsed().as_secs_f64()
        );
        ids.push(f.id);
        for _ in 0..3 {
            ids.push(next_frame(&mut src, &mut errors).id);
        }
    }
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "ids go up: {ids:?}");
    let st = src.stats();
    assert!(st.reconnects >= 2, "{st:?}");
    for e in &errors {
        assert!(!e.contains("s3cret"), "password in an error: {e}");
    }
    assert!(!src.describe().contains("s3cret"));
}

#[test]
fn h265_and_udp_transport_play() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (codec, query) in [("h265", "?codec=h265"), ("h264", "?transport=udp")] {
        let clip = rtsp::make_clip(dir.path(), codec, 1);
        let server = rtsp::RtspServer::start(rtsp::free_port(), &clip, codec);
        let uri = format!("{}{query}", server.url(""));
        let mut src = capture::open_healing(&uri, OpenOptions::default(), policy()).unwrap();
        let mut errors = Vec::new();
        let f = next_frame(&mut src, &mut errors);
        assert_eq!(f.image.width(), 320, "{codec} {query}");
        next_frame(&mut src, &mut errors);
    }
}

#[test]
fn a_hardware_decoder_that_fails_falls_back_to_software() {
    if !ready() {
        return;
    }
    // This machine has no V4L2 decoder device, so h264_v4l2m2m fails at start as it would on a
    // board whose decoder is busy or missing; the frames must come anyway.
    let dir = tempfile::tempdir().unwrap();
    let clip = rtsp::make_clip(dir.path(), "h264", 1);
    let server = rtsp::RtspServer::start(rtsp::free_port(), &clip, "h264");
    let with = OpenOptions {
        hwdecode: capture::HwDecode::V4l2m2m,
    };
    let mut src = capture::open_healing(&server.url(""), with, policy()).unwrap();
    let mut errors = Vec::new();
    let f = next_frame(&mut src, &mut errors);
    assert_eq!(f.image.width(), 320);
    assert!(
        errors.is_empty(),
        "the fallback is not an outage: {errors:?}"
    );
    assert!(src.describe().contains("software"), "{}", src.describe());
}

#[test]
fn a_server_that_accepts_and_says_nothing_is_reopened() {
    if !ready() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (accepted, done) = (accepted.clone(), done.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        held.push(s); // never answered, never closed
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }
    let mut p = policy();
    p.stall_timeout = Some(Duration::from_millis(1500));
    let uri = format!("rtsp://127.0.0.1:{port}/cam");
    let mut src = capture::open_healing(&uri, OpenOptions::default(), p).unwrap();
    let t0 = Instant::now();
    let mut stalls = 0;
    while stalls < 2 {
        assert!(t0.elapsed() < DEADLINE, "no stall detected");
        match src.next_frame() {
            Err(CaptureError::Disconnected { reason, .. }) if reason.contains("stalled") => {
                stalls += 1
            }
            Err(e) if e.is_recoverable() => {}
            other => panic!("{other:?}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    // Each stall stopped ffmpeg and a new one connected.
    assert!(accepted.load(Ordering::Relaxed) >= 2);
}

/// `lookout run` on the stream: events flow, the server dies and comes back twice, each
/// outage is one `camera_down` and one `camera_recovered` alert, events go on after each, the
/// stats carry the camera's health, nothing panics and the password is never printed.
#[test]
fn lookout_run_rides_out_two_rtsp_server_restarts() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = rtsp::make_clip(dir.path(), "h264", 4);
    let mut server = rtsp::RtspServer::start(rtsp::free_port(), &clip, "h264");
    let cfg = dir.path().join("cam.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[camera]
name = "door"
source = "{}"
backoff_initial_s = 0.2
backoff_max_s = 1.0
[pipeline]
stats_interval = 1.0
describe_interval = 0
"#,
            server.url("viewer:s3cret-pw@")
        ),
    )
    .unwrap();
    let mut run = common::lookout()
        .args(["run", "--broker", "none", "--json", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = run.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let err = run.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            s += &l;
            s.push('\n');
        }
        s
    });
    let mut all: Vec<String> = Vec::new();
    // Wait for a record matching `want`, keeping everything seen.
    let mut wait_for = |what: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        let t0 = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(t0.elapsed()).unwrap_or_default();
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what}; seen: {all:#?}"));
            all.push(line.clone());
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
            if want(&v) {
                return v;
            }
        }
    };
    let is = |record: &'static str, kind: &'static str| {
        move |v: &serde_json::Value| v["record"] == record && (kind.is_empty() || v["kind"] == kind)
    };
    let rss_kb = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    wait_for("first event", &is("event", ""));
    let s = wait_for("stats", &is("stats", ""));
    assert_eq!(s["health"]["connected"], true, "{s}");
    let rss_start = rss_kb(run.id());
    for round in 1..=2 {
        server.kill();
        let down = wait_for("camera_down alert", &is("alert", "camera_down"));
        assert_eq!(down["camera"], "door");
        let s = wait_for("stats while down", &|v: &serde_json::Value| {
            v["record"] == "stats" && v["health"]["connected"] == false
        });
        assert!(s["health"]["last_frame_age_s"].as_f64().is_some(), "{s}");
        server.restart();
        let back = Instant::now();
        let up = wait_for("camera_recovered alert", &is("alert", "camera_recovered"));
        eprintln!(
            "figure: lookout run, round {round}: camera_recovered {:.2} s after the RTSP server \
             was back (outage {:.1} s)",
            back.elapsed().as_secs_f64(),
            up["details"]["duration_s"].as_f64().unwrap_or(-1.0)
        );
        wait_for("an event after the recovery", &is("event", ""));
        let s = wait_for("stats after the recovery", &|v: &serde_json::Value| {
            v["record"] == "stats" && v["health"]["connected"] == true
        });
        assert!(s["health"]["reconnects"].as_u64() >= Some(round), "{s}");
    }
    eprintln!(
        "figure: lookout run RSS {} MiB after the first stats, {} MiB after two outages",
        rss_start / 1024,
        rss_kb(run.id()) / 1024
    );
    // Ctrl-C: a clean stop.
    // SAFETY: signals the lookout process this test started, by its id.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGINT);
    }
    let status = run.wait().unwrap();
    let stderr = stderr.join().unwrap();
    all.extend(rx.try_iter());
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let everything = format!("{stderr}{}", all.join("\n"));
    assert!(
        !everything.contains("s3cret"),
        "password printed: {everything}"
    );
    let downs = all.iter().filter(|l| l.contains("\"camera_down\"")).count();
    let ups = all
        .iter()
        .filter(|l| l.contains("\"camera_recovered\""))
        .count();
    assert_eq!(
        (downs, ups),
        (2, 2),
        "one alert per outage and one recovery"
    );
}

#[test]
fn lookout_check_validates_rtsp_sources_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let check = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let out = common::lookout()
            .args(["check", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("s3cret"), "password printed: {all}");
        (out.status.code(), all)
    };
    let (code, all) = check(
        "[camera]\nsource = \"rtsp://viewer:s3cret@10.0.0.9:554/s1?transport=udp&channel=1\"\nhwdecode = \"v4l2m2m\"\n",
    );
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("viewer:***@"), "{all}");
    let (code, all) = check(
        "[camera]\nsource = \"rtsp://viewer:s3cret@cam/s?transport=quic\"\nhwdecode = \"vaapi\"\n",
    );
    assert_eq!(code, Some(1), "{all}");
    for key in ["camera.source", "camera.hwdecode"] {
        assert!(all.contains(key), "{key} not named: {all}");
    }
    let (code, all) = check("[camera]\nbackoff_max_s = 0\nstall_timeout_s = -1\n");
    assert_eq!(code, Some(1), "{all}");
    for key in ["camera.backoff_max_s", "camera.stall_timeout_s"] {
        assert!(all.contains(key), "{key} not named: {all}");
    }
}

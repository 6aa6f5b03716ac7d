//! Input made to hurt: an MJPEG camera whose part claims a 100 GB Content-Length, a camera that
//! goes silent while the pipeline shuts down, and JPEGs cut off half-way (a half-copied file, a
//! frame lost mid-transfer). Each costs one bad frame or a prompt stop, named and counted, and
//! the good input around it still comes through.

#[path = "support/mjpeg_camera.rs"]
mod mjpeg_camera;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use lookout::capture::mjpeg_http::MjpegHttpSource;
use lookout::capture::{self, CaptureError, FrameSource};
use mjpeg_camera::{part, Camera, OK_HEAD};

/// What `head -c 13119 samples/vtest/frame_0001.jpg` leaves: the top 37% of the picture.
const CUT: usize = 13119;

fn sample(n: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("samples/vtest/frame_{n:04}.jpg"))
}

fn jpeg(n: u32) -> Vec<u8> {
    std::fs::read(sample(n)).unwrap()
}

/// What `next_frame` gave, shortly: `frame <id>`, `bad <id>: <message>`, `lost: <reason>`,
/// `end`, or `fatal: <message>`.
fn outcome(r: Result<Option<capture::Frame>, CaptureError>) -> String {
    match r {
        Ok(Some(f)) => format!("frame {}", f.id),
        Ok(None) => "end".into(),
        Err(e) => match &e {
            CaptureError::BadFrame { frame, .. } => format!("bad {frame}: {e}"),
            CaptureError::Disconnected { reason, .. } => format!("lost: {reason}"),
            _ => format!("fatal: {e}"),
        },
    }
}

/// The first `n` outcomes of `src`, taken on a thread so that a source that hangs fails the test
/// after `limit` instead of hanging it.
fn outcomes(
    mut src: Box<dyn FrameSource>,
    n: usize,
    limit: Duration,
) -> (Vec<String>, capture::CaptureStats) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..n {
            let r = outcome(src.next_frame());
            if tx.send(Ok(r)).is_err() {
                return;
            }
        }
        let _ = tx.send(Err(src.stats()));
    });
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(r)) => got.push(r),
            Ok(Err(stats)) => return (got, stats),
            Err(_) => panic!("the source hung: {limit:?} and only {got:?}"),
        }
    }
}

#[test]
fn a_part_claiming_100_gb_is_one_bad_frame_and_the_stream_goes_on() {
    let cam_jpeg = jpeg(2);
    let cam = Camera::start(vec![Box::new(move |s: &mut TcpStream| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        // What the camera of issue #14 sent: a part header claiming ~100 GB, then a few bytes,
        // then ordinary parts.
        let _ = s.write_all(
            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 99999999999\r\n\r\n",
        );
        let _ = s.write_all(&[0x55; 3000]);
        let _ = s.write_all(b"\r\n");
        for _ in 0..3 {
            part(s, &cam_jpeg);
        }
        // Held open: the source must not need the end of the connection to go on.
        std::thread::sleep(Duration::from_secs(2));
    })]);
    let uri = cam.uri("/video?action=stream");
    let src = MjpegHttpSource::open(cam.options()).unwrap();
    let (got, stats) = outcomes(Box::new(src), 4, Duration::from_secs(10));
    assert!(
        got[0].starts_with("bad 0: ") && got[0].contains(&uri) && got[0].contains("99999999999"),
        "{got:?}"
    );
    assert_eq!(got[1..], ["frame 1", "frame 2", "frame 3"], "{got:?}");
    assert_eq!((stats.frames, stats.bad_frames), (3, 1));
}

#[test]
fn a_part_that_really_is_endless_costs_a_reconnect_promptly() {
    let cam = Camera::start(vec![Box::new(|s: &mut TcpStream| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        let _ = s.write_all(b"--frame\r\nContent-Length: 99999999999\r\n\r\n");
        // Junk without a boundary until the client hangs up (or 1 GB, far past any bound).
        let junk = vec![0x55u8; 64 * 1024];
        for _ in 0..16 * 1024 {
            if s.write_all(&junk).is_err() {
                break;
            }
        }
    })]);
    let mut opts = cam.options();
    opts.max_part_bytes = 256 * 1024;
    let src = MjpegHttpSource::open(opts).unwrap();
    let (got, _) = outcomes(Box::new(src), 2, Duration::from_secs(10));
    assert!(got[0].starts_with("bad 0: "), "{got:?}");
    assert!(got[1].contains("no multipart boundary"), "{got:?}");
}

#[test]
fn the_stop_flag_ends_a_wait_on_a_silent_camera() {
    let cam = Camera::start(vec![Box::new(|s: &mut TcpStream| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        // Headers, then silence longer than the test is willing to wait.
        std::thread::sleep(Duration::from_secs(4));
    })]);
    let mut opts = cam.options();
    opts.read_timeout = Duration::from_secs(30);
    let mut src = MjpegHttpSource::open(opts).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    src.watch_stop(stop.clone());
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let t0 = Instant::now();
    let (got, _) = outcomes(Box::new(src), 1, Duration::from_secs(3));
    let took = t0.elapsed();
    setter.join().unwrap();
    assert_eq!(got, ["end"]);
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}

#[test]
fn a_truncated_jpeg_over_mjpeg_is_a_bad_frame() {
    let whole = jpeg(1);
    let cam = Camera::start(vec![Box::new(move |s: &mut TcpStream| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        part(s, &whole);
        // Content-Length agrees with what is sent: only the JPEG itself says it is cut off.
        part(s, &whole[..CUT]);
        part(s, &whole);
        std::thread::sleep(Duration::from_millis(500));
    })]);
    let uri = cam.uri("/video?action=stream");
    let src = MjpegHttpSource::open(cam.options()).unwrap();
    let (got, stats) = outcomes(Box::new(src), 3, Duration::from_secs(10));
    assert_eq!(got[0], "frame 0");
    assert!(
        got[1].starts_with("bad 1: ") && got[1].contains(&uri) && got[1].contains("truncated"),
        "{got:?}"
    );
    assert_eq!(got[2], "frame 2");
    assert_eq!((stats.frames, stats.bad_frames), (2, 1));
}

/// A folder with a good frame, the cut-off one, and another good frame.
fn folder_with_a_truncated_jpeg() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(sample(1), dir.path().join("a.jpg")).unwrap();
    let cut = dir.path().join("b.jpg");
    std::fs::write(&cut, &jpeg(1)[..CUT]).unwrap();
    std::fs::copy(sample(2), dir.path().join("c.jpg")).unwrap();
    (dir, cut)
}

#[test]
fn a_truncated_jpeg_file_is_a_bad_frame() {
    let (dir, cut) = folder_with_a_truncated_jpeg();
    let e = match lookout::imageio::load_rgb(&cut) {
        Ok(img) => panic!("a cut-off JPEG decoded as {:?}", img.dimensions()),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("b.jpg") && e.contains("truncated"), "{e}");

    let src = capture::open(dir.path().to_str().unwrap()).unwrap();
    let (got, stats) = outcomes(src, 4, Duration::from_secs(10));
    assert_eq!(got[0], "frame 0");
    assert!(
        got[1].starts_with("bad 1: ") && got[1].contains("b.jpg") && got[1].contains("truncated"),
        "{got:?}"
    );
    assert_eq!(got[2..], ["frame 2", "end"]);
    assert_eq!((stats.frames, stats.bad_frames), (2, 1));
}

#[test]
fn detect_refuses_a_truncated_jpeg_and_names_it() {
    let (dir, cut) = folder_with_a_truncated_jpeg();
    let good = dir.path().join("a.jpg");
    let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["detect", "--json"])
        .arg(&good)
        .arg(&cut)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&cut.display().to_string()) && stderr.contains("truncated"),
        "{stderr}"
    );
    // The good image is still detected; the cut one only has an error record.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("\"detections\""), "{}", lines[0]);
    assert!(
        lines[1].contains("\"error\"") && !lines[1].contains("\"detections\""),
        "{}",
        lines[1]
    );
}

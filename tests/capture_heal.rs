//! Every source heals itself: an MJPEG camera that goes away and comes back twice, a `pipe:`
//! command killed twice, and stalled sources (an MJPEG server that sends its headers and then
//! nothing, a command that never writes) are all reopened, with frame ids still increasing; a
//! source that never delivers a frame still ends `lookout run` with a failure.
//!
//! No timing is asserted; deadlines only stop a broken build from hanging.

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout::capture::{self, Backoff, CaptureError, FrameSource, HealPolicy, OpenOptions};

const DEADLINE: Duration = Duration::from_secs(120);

fn policy(stall: Duration) -> HealPolicy {
    HealPolicy {
        stall_timeout: Some(stall),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(400),
            factor: 2.0,
        },
        jitter: 0.25,
        give_up_after: Duration::from_secs(120),
    }
}

fn jpeg() -> Vec<u8> {
    std::fs::read(common::fixture("capture/vtest_f100_320x240.mjpeg.jpg")).unwrap()
}

/// An MJPEG camera on a fixed port that can be switched off (listener and connections closed)
/// and on again; `silent` sends the response head and then nothing.
struct Camera {
    port: u16,
    silent: bool,
    on: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    accepted: Arc<AtomicUsize>,
}

impl Camera {
    fn new(silent: bool) -> Camera {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = Camera {
            port,
            silent,
            on: None,
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        c.start();
        c
    }

    fn start(&mut self) {
        let listener = (0..100)
            .find_map(|_| {
                TcpListener::bind(("127.0.0.1", self.port))
                    .map_err(|_| std::thread::sleep(Duration::from_millis(50)))
                    .ok()
            })
            .expect("port free again");
        listener.set_nonblocking(true).unwrap();
        let off = Arc::new(AtomicBool::new(false));
        let (stop, silent, accepted, jpeg) =
            (off.clone(), self.silent, self.accepted.clone(), jpeg());
        let t = std::thread::spawn(move || {
            let mut clients: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((mut s, _)) = listener.accept() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                        head.push(b[0]);
                    }
                    let _ = s.write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n",
                    );
                    clients.push(s);
                }
                if !silent {
                    clients.retain_mut(|s| {
                        let head = format!(
                            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                            jpeg.len()
                        );
                        s.write_all(head.as_bytes()).is_ok()
                            && s.write_all(&jpeg).is_ok()
                            && s.write_all(b"\r\n").is_ok()
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // Dropping the listener and the sockets: connection refused / reset from now on.
        });
        self.on = Some((off, t));
    }

    fn stop(&mut self) {
        if let Some((off, t)) = self.on.take() {
            off.store(true, Ordering::Relaxed);
            t.join().unwrap();
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Calls `next_frame` until a frame, counting outages; panics past the deadline.
fn next_frame(src: &mut dyn FrameSource, outages: &mut Vec<String>) -> capture::Frame {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < DEADLINE, "no frame; outages {outages:?}");
        match src.next_frame() {
            Ok(Some(f)) => return f,
            Ok(None) => panic!("ended; outages {outages:?}"),
            Err(CaptureError::Disconnected { reason, .. }) => outages.push(reason),
            Err(e) if e.is_recoverable() => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Calls `next_frame` until an outage is reported.
fn next_outage(src: &mut dyn FrameSource, ids: &mut Vec<u64>) -> String {
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < DEADLINE, "no outage reported");
        match src.next_frame() {
            Ok(Some(f)) => ids.push(f.id),
            Ok(None) => panic!("ended"),
            Err(CaptureError::Disconnected { reason, .. }) => return reason,
            Err(e) if e.is_recoverable() => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn mjpeg_camera_that_goes_away_twice_is_reconnected() {
    let mut cam = Camera::new(false);
    let uri = format!("mjpeg+http://127.0.0.1:{}/video", cam.port);
    let mut src = capture::open_healing(
        &uri,
        OpenOptions::default(),
        policy(Duration::from_secs(20)),
    )
    .unwrap();
    let (mut ids, mut outages) = (Vec::new(), Vec::new());
    ids.push(next_frame(&mut src, &mut outages).id);
    for round in 1..=2 {
        cam.stop();
        next_outage(&mut src, &mut ids);
        cam.start();
        let back = Instant::now();
        ids.push(next_frame(&mut src, &mut outages).id);
        eprintln!(
            "figure: mjpeg round {round}: first frame {:.2} s after the camera was back",
            back.elapsed().as_secs_f64()
        );
    }
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");
    assert!(src.stats().reconnects >= 2, "{:?}", src.stats());
}

#[test]
fn mjpeg_server_that_goes_silent_is_reopened() {
    let cam = Camera::new(true);
    let uri = format!("mjpeg+http://127.0.0.1:{}/video", cam.port);
    let mut src = capture::open_healing(
        &uri,
        OpenOptions::default(),
        policy(Duration::from_millis(800)),
    )
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let why = next_outage(&mut src, &mut ids);
        assert!(why.contains("stalled"), "{why}");
    }
    assert!(ids.is_empty());
    assert!(
        cam.accepted.load(Ordering::Relaxed) >= 2,
        "reconnected after each stall"
    );
}

#[test]
fn pipe_command_killed_twice_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("frame.jpg");
    std::fs::write(&frame, jpeg()).unwrap();
    let pid_file = dir.path().join("pid");
    let uri = format!(
        "pipe:echo $$ > {}; while :; do cat {}; sleep 0.05; done?format=mjpeg",
        pid_file.display(),
        frame.display()
    );
    let mut src = capture::open_healing(
        &uri,
        OpenOptions::default(),
        policy(Duration::from_secs(20)),
    )
    .unwrap();
    let (mut ids, mut outages) = (Vec::new(), Vec::new());
    let mut pids = Vec::new();
    ids.push(next_frame(&mut src, &mut outages).id);
    for _ in 1..=2 {
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        pids.push(pid);
        // SAFETY: a process this test's source started (its shell), by its id.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let why = next_outage(&mut src, &mut ids);
        assert!(why.contains("signal") || why.contains("exit"), "{why}");
        ids.push(next_frame(&mut src, &mut outages).id);
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !pids.contains(&pid),
        "a new command each time: {pids:?} {pid}"
    );
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "{ids:?}");
    assert!(src.stats().reconnects >= 2);

    // A command that finishes cleanly has simply ended its stream.
    let uri = format!("pipe:cat {}?format=mjpeg", frame.display());
    let mut src = capture::open_healing(
        &uri,
        OpenOptions::default(),
        policy(Duration::from_secs(20)),
    )
    .unwrap();
    assert!(src.next_frame().unwrap().is_some());
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn a_command_that_never_writes_is_stopped_and_restarted() {
    let mut src = capture::open_healing(
        "pipe:sleep 600?format=ppm",
        OpenOptions::default(),
        policy(Duration::from_millis(500)),
    )
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let why = next_outage(&mut src, &mut ids);
        assert!(why.contains("stalled"), "{why}");
    }
    // Ctrl-C while it waits: the source ends promptly.
    let stop = Arc::new(AtomicBool::new(true));
    src.watch_stop(stop);
    assert!(src.next_frame().unwrap().is_none());
}

/// A config (`head` first) whose camera is an MJPEG URL on a free port nobody listens on, with a
/// short give-up time and back-off, in `dir`.
fn unanswered_camera(dir: &std::path::Path, head: &str) -> std::path::PathBuf {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("cam.toml");
    std::fs::write(
        &cfg,
        format!(
            "{head}[camera]\nname = \"porch\"\nsource = \"mjpeg+http://127.0.0.1:{port}/\"\ngive_up_after_s = 1.5\nbackoff_initial_s = 0.1\nbackoff_max_s = 0.3\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn lookout_run_fails_when_the_camera_never_answers() {
    // Nothing listens on the port: every attempt is refused, and after give_up_after_s the run
    // fails so that systemd sees it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = unanswered_camera(dir.path(), "");
    let out = common::lookout()
        .args(["run", "--broker", "none", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("giving up"), "{err}");
    assert!(stdout.contains("\"camera_down\""), "{stdout}");
}

#[test]
fn the_camera_down_alert_goes_out_over_mqtt() {
    if mosquitto::binary().is_none() {
        mosquitto::skip("mosquitto is not installed (apt-get install mosquitto)");
        return;
    }
    let broker = mosquitto::Mosquitto::start();
    let topic = format!("{}/lookout/heal/alerts", broker.url());
    // A persistent QoS 1 session, subscribed (and acknowledged) before the run: the broker
    // keeps what is published meanwhile for the second connection below. No sleeps.
    let sub = |extra: &[&str]| {
        std::process::Command::new("mosquitto_sub")
            .args(["-L", &topic, "-q", "1", "-c", "-i", "heal-sub"])
            .args(extra)
            .output()
            .expect("mosquitto_sub")
    };
    assert!(sub(&["-E"]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let cfg = unanswered_camera(dir.path(), "device = \"heal\"\n");
    let out = common::lookout()
        .args(["run", "--json", "--broker", &broker.url(), "--config"])
        .arg(&cfg)
        .arg("--spool")
        .arg(dir.path().join("spool.redb"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sub(&["-C", "1", "-W", "60"]);
    let payload: serde_json::Value =
        serde_json::from_slice(&got.stdout).expect("one alert message");
    assert_eq!(payload["kind"], "camera_down", "{payload}");
    assert_eq!(payload["camera"], "porch", "{payload}");
    assert!(payload["alert_id"]
        .as_str()
        .unwrap()
        .starts_with("camera-down"));
}

/// Frames at the given times, all with the same picture.
struct Timed(std::collections::VecDeque<f64>, u64);

impl FrameSource for Timed {
    fn next_frame(&mut self) -> Result<Option<capture::Frame>, CaptureError> {
        let Some(ts) = self.0.pop_front() else {
            return Ok(None);
        };
        self.1 += 1;
        Ok(Some(capture::Frame {
            id: self.1 - 1,
            ts,
            image: image::RgbImage::new(64, 48),
            source: "timed".into(),
        }))
    }
    fn describe(&self) -> String {
        "timed".into()
    }
}

/// One person, standing still.
struct OnePerson(Vec<Arc<str>>);

impl lookout::detect::Detector for OnePerson {
    fn detect(
        &mut self,
        _: &image::RgbImage,
    ) -> lookout::error::Result<Vec<lookout::detect::Detection>> {
        Ok(vec![lookout::detect::Detection {
            label: self.0[0].clone(),
            class_id: 0,
            score: 0.9,
            bbox: lookout::geometry::BBox {
                x1: 10.0,
                y1: 10.0,
                x2: 30.0,
                y2: 40.0,
            },
        }])
    }
    fn name(&self) -> &str {
        "one-person"
    }
    fn labels(&self) -> &[Arc<str>] {
        &self.0
    }
}

#[test]
fn tracks_survive_a_short_gap_and_end_after_a_long_one() {
    use lookout::pipeline::{self, CollectSink, Handle, Output, RunOptions};
    use lookout::scene::EventType;
    // 10 frames, a 2 s gap, 10 frames, a 30 s gap, 10 frames; track_gap_s = 10.
    let mut times = Vec::new();
    let mut t = 1000.0;
    for gap in [0.0, 2.0, 30.0] {
        t += gap;
        for _ in 0..10 {
            times.push(t);
            t += 0.1;
        }
    }
    let cfg = lookout::config::Config::parse(
        "[camera]\ntrack_gap_s = 10\n[pipeline]\ndescribe_interval = 0\nstats_interval = 0\n",
    )
    .unwrap();
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    pipeline::run(
        &cfg,
        Box::new(Timed(times.into(), 0)),
        vec![Box::new(OnePerson(vec!["person".into()]))],
        vec![Box::new(CollectSink(out.clone()))],
        RunOptions::default(),
        Handle::default(),
    )
    .unwrap();
    let events: Vec<(EventType, u64, u64)> = out
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some((e.kind, e.track_id, e.frame_id)),
            _ => None,
        })
        .collect();
    let ids: std::collections::BTreeSet<u64> = events.iter().map(|e| e.1).collect();
    assert_eq!(
        ids.len(),
        2,
        "one track across the short gap, a new one after the long: {events:?}"
    );
    let first = *ids.iter().next().unwrap();
    let end = events
        .iter()
        .find(|e| e.1 == first && e.0 == EventType::End)
        .expect("the first track ended");
    assert!(
        end.2 < 20,
        "ended at the long gap (frames 0..19 before it): {events:?}"
    );
    let second_new = events.iter().find(|e| e.1 != first).unwrap();
    assert!(second_new.2 >= 20, "{events:?}");
}

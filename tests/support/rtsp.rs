//! A real RTSP server for the tests (GStreamer's gst-rtsp-server, driven by
//! `tests/support/rtsp_server.py`) that can be killed and started again on the same port, and
//! the H.264/H.265 clip it serves, made by ffmpeg from the bundled frames.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const PYTHON: &str = "/usr/bin/python3";

/// Why the RTSP tests cannot run here, if they cannot: what is missing and how to get it.
pub fn missing() -> Option<String> {
    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output();
    match ffmpeg {
        Ok(o)
            if ["libx264", "libx265"]
                .iter()
                .all(|e| String::from_utf8_lossy(&o.stdout).contains(e)) => {}
        _ => {
            return Some(
                "ffmpeg with libx264 and libx265 is not installed (apt-get install ffmpeg)".into(),
            )
        }
    }
    let gst = Command::new(PYTHON)
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); \
             from gi.repository import GstRtspServer",
        ])
        .output();
    match gst {
        Ok(o) if o.status.success() => None,
        _ => Some(
            "GStreamer's RTSP server is not installed (apt-get install python3-gi \
             gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)"
                .into(),
        ),
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An MP4 of the bundled frames (320 px wide, 10 fps, `loops` × 12 s) in `codec` (`h264` or
/// `h265`), with a key frame every second so a new client starts quickly.
pub fn make_clip(dir: &Path, codec: &str, loops: u32) -> PathBuf {
    let frames = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/vtest/frame_%04d.jpg");
    let out = dir.join(format!("clip-{codec}.mp4"));
    // gst's H.265 payloader takes `hvc1` MP4s, not ffmpeg's default `hev1`.
    let (encoder, extra): (&str, &[&str]) = if codec == "h265" {
        (
            "libx265",
            &["-tag:v", "hvc1", "-x265-params", "log-level=error"],
        )
    } else {
        ("libx264", &[])
    };
    let st = Command::new("ffmpeg")
        .args(["-y", "-hide_banner", "-loglevel", "error", "-stream_loop"])
        .arg((loops.max(1) - 1).to_string())
        .args(["-framerate", "10", "-i"])
        .arg(&frames)
        .args([
            "-vf",
            "scale=320:-2",
            "-c:v",
            encoder,
            "-preset",
            "ultrafast",
        ])
        .args(["-g", "10", "-pix_fmt", "yuv420p"])
        .args(extra)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg could not make {}", out.display());
    out
}

/// The server process; killed on drop.
pub struct RtspServer {
    child: Option<Child>,
    pub port: u16,
    clip: PathBuf,
    codec: String,
}

impl RtspServer {
    pub fn start(port: u16, clip: &Path, codec: &str) -> RtspServer {
        let mut s = RtspServer {
            child: None,
            port,
            clip: clip.to_path_buf(),
            codec: codec.to_string(),
        };
        s.restart();
        s
    }

    /// `rtsp://[userinfo@]127.0.0.1:PORT/cam`.
    pub fn url(&self, userinfo: &str) -> String {
        format!("rtsp://{userinfo}127.0.0.1:{}/cam", self.port)
    }

    /// Start (again) on the same port; returns once it listens.
    pub fn restart(&mut self) {
        self.kill();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_server.py");
        // The port may still be held for a moment by the previous server: try a few times.
        for _ in 0..50 {
            let mut child = Command::new(PYTHON)
                .arg(&script)
                .arg(self.port.to_string())
                .arg("cam")
                .arg(&self.clip)
                .arg(&self.codec)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
            if line.trim() == "ready" {
                self.child = Some(child);
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("the RTSP server did not start on port {}", self.port);
    }

    /// Kill it at once (SIGKILL: no goodbye to the clients, like a crashed camera).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

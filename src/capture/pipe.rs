//! Frames from another program's stdout: raw pixel buffers of a known size, a stream of PPM
//! images, or concatenated JPEGs. `video:` builds the ffmpeg command for a clip or stream.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::inbuf::InBuf;
use super::pixfmt::{self, ConvertError, PixelFormat};
use super::retry::{StopFlag, STOP_POLL};
use super::stamp::FrameStamper;
use super::uri::{self, Params};
use super::{CaptureError, CaptureStats, Frame, FrameSource, MAX_FRAME_BYTES, MAX_FRAME_PIXELS};
use crate::imageio::jpeg::{self, JpegScanner, Scan};
use crate::imageio::MAX_SIDE;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeCommand {
    /// A command line for `sh -c` (pipes, redirections and quoting allowed).
    Shell(String),
    /// A program and its arguments, run directly: nothing needs quoting.
    Argv(Vec<String>),
}

/// How frames are laid out on the command's stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// Back-to-back buffers of exactly [`PixelFormat::frame_len`] bytes (ffmpeg `-f rawvideo`).
    /// `format` must not be [`PixelFormat::Mjpeg`].
    Raw {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
    /// Binary PPM (P6) images, each with its own size in the header (ffmpeg
    /// `-f image2pipe -c:v ppm`). Sizes may change mid-stream.
    Ppm,
    /// Concatenated JPEGs (ffmpeg `-f mjpeg`, many camera tools), split at each image's end.
    Mjpeg,
}

/// A command and the format of what it writes.
///
/// URI form:
///
/// ```text
/// pipe:<command>?width=W&height=H&format=F
/// pipe:ffmpeg -nostdin -i clip.mp4 -f rawvideo -pix_fmt rgb24 -?width=1280&height=720
/// pipe:ffmpeg -nostdin -i clip.mp4 -f image2pipe -c:v ppm -pix_fmt rgb24 -?format=ppm
/// pipe:libcamera-vid -t 0 --codec mjpeg -o -?format=mjpeg
/// ```
///
/// The command is everything between `pipe:` and the first `?`; it is percent-decoded and run
/// by `sh -c`. Spaces may be written as they are; a `?`, `&`, `#` or `%` inside the command
/// must be written `%3F`, `%26`, `%23`, `%25`. Parameters:
///
/// - `format`: `rgb24` (default), `bgr24`, `yuyv422`, `nv12` (raw; need `width` and `height`),
///   `ppm` or `mjpeg` (self-delimiting; take no size).
/// - `width`, `height`: frame size in pixels for raw formats.
///
/// Programs that build the command themselves should fill a [`PipeSpec`] with
/// [`PipeCommand::Argv`] and skip the shell and its quoting altogether.
#[derive(Debug, Clone, PartialEq)]
pub struct PipeSpec {
    pub command: PipeCommand,
    pub format: StreamFormat,
    /// Name used in frames and messages; defaults to the command.
    pub label: Option<String>,
    /// Frames are a clip at this rate: stamp them with media time (start + n / fps) rather than
    /// the time they were read, so rules that count seconds see the clip's own time.
    pub media_fps: Option<f64>,
}

impl PipeSpec {
    pub fn parse(u: &str) -> Result<Self, CaptureError> {
        let rest = u
            .strip_prefix("pipe:")
            .or_else(|| u.get(5..).filter(|_| u[..5].eq_ignore_ascii_case("pipe:")))
            .ok_or_else(|| CaptureError::uri(u, "scheme", "expected pipe:<command>"))?;
        let (cmd, query) = uri::split_query(rest);
        let cmd = uri::percent_decode(u, "command", cmd)?;
        if cmd.trim().is_empty() {
            return Err(CaptureError::uri(u, "command", "is empty"));
        }
        let mut p = Params::parse(u, query)?;
        let format = stream_format(&mut p, "rgb24")?;
        p.finish(&["format", "width", "height"])?;
        Ok(PipeSpec {
            command: PipeCommand::Shell(cmd),
            format,
            label: None,
            media_fps: None,
        })
    }
}

/// `format`, `width` and `height` from a query.
fn stream_format(p: &mut Params, default: &str) -> Result<StreamFormat, CaptureError> {
    let name = p.take("format").unwrap_or_else(|| default.to_string());
    let width = p.u32("width", MAX_SIDE)?;
    let height = p.u32("height", MAX_SIDE)?;
    match name.to_ascii_lowercase().as_str() {
        "ppm" | "mjpeg" | "mjpg" => {
            if let Some(key) = [("width", width), ("height", height)]
                .iter()
                .find(|(_, v)| v.is_some())
                .map(|(k, _)| *k)
            {
                return Err(p.err(
                    key,
                    format!("not used with format={name}: each image carries its own size"),
                ));
            }
            Ok(if name.eq_ignore_ascii_case("ppm") {
                StreamFormat::Ppm
            } else {
                StreamFormat::Mjpeg
            })
        }
        _ => {
            let format = PixelFormat::from_name(&name)
                .filter(|f| *f != PixelFormat::Mjpeg)
                .ok_or_else(|| {
                    p.err(
                        "format",
                        format!("'{name}' is not one of rgb24, bgr24, yuyv422, nv12, ppm, mjpeg"),
                    )
                })?;
            let width =
                width.ok_or_else(|| p.err("width", format!("required for format={name}")))?;
            let height =
                height.ok_or_else(|| p.err("height", format!("required for format={name}")))?;
            Ok(StreamFormat::Raw {
                format,
                width,
                height,
            })
        }
    }
}

/// A clip, file or stream URL decoded by ffmpeg.
///
/// URI form:
///
/// ```text
/// video:<input>?fps=F&width=W&height=H&loop=true&realtime=true
/// video:/data/clips/yard.mp4?fps=5&width=640
/// video:rtsp://user:pw@10.0.0.9/stream1%3Fchannel=1?fps=10
/// ```
///
/// The input (a path or anything ffmpeg opens) is everything up to the first `?`,
/// percent-decoded. Parameters:
///
/// - `fps`: resample to this frame rate (ffmpeg `fps` filter); absent = every decoded frame.
/// - `width`, `height`: scale; with only one of them the other follows the aspect ratio.
/// - `loop`: restart the clip at its end (`-stream_loop -1`).
/// - `realtime`: read the input at its native rate (`-re`), so a file behaves like a camera.
///
/// ffmpeg writes PPM images, so the frame size is always known, even for a rotated phone clip.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    pub input: String,
    pub fps: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub looping: bool,
    pub realtime: bool,
    /// The ffmpeg executable (default `ffmpeg` on `PATH`).
    pub ffmpeg: String,
}

impl VideoOptions {
    pub fn new(input: impl Into<String>) -> Self {
        VideoOptions {
            input: input.into(),
            fps: None,
            width: None,
            height: None,
            looping: false,
            realtime: false,
            ffmpeg: "ffmpeg".into(),
        }
    }

    pub fn parse(u: &str) -> Result<Self, CaptureError> {
        let rest = u
            .get(6..)
            .filter(|_| u.len() >= 6 && u[..6].eq_ignore_ascii_case("video:"))
            .ok_or_else(|| CaptureError::uri(u, "scheme", "expected video:<path or URL>"))?;
        let (input, query) = uri::split_query(rest);
        let input = uri::percent_decode(u, "input", input)?;
        if input.trim().is_empty() {
            return Err(CaptureError::uri(u, "input", "is empty"));
        }
        let mut p = Params::parse(u, query)?;
        let fps = p.f64("fps", 1000.0)?;
        if fps == Some(0.0) {
            return Err(p.err("fps", "must be above 0 (leave it out to keep every frame)"));
        }
        let opts = VideoOptions {
            input,
            fps,
            width: p.u32("width", MAX_SIDE)?,
            height: p.u32("height", MAX_SIDE)?,
            looping: p.bool("loop")?.unwrap_or(false),
            realtime: p.bool("realtime")?.unwrap_or(false),
            ffmpeg: "ffmpeg".into(),
        };
        p.finish(&["fps", "width", "height", "loop", "realtime"])?;
        Ok(opts)
    }

    /// The ffmpeg invocation.
    pub fn to_spec(&self) -> PipeSpec {
        let mut a: Vec<String> = vec![
            self.ffmpeg.clone(),
            "-nostdin".into(),
            "-hide_banner".into(),
            "-loglevel".into(),
            "error".into(),
        ];
        if self.realtime {
            a.push("-re".into());
        }
        if self.looping {
            a.extend(["-stream_loop".into(), "-1".into()]);
        }
        a.extend(["-i".into(), self.input.clone(), "-an".into()]);
        ppm_output(&mut a, self.fps, self.width, self.height);
        PipeSpec {
            command: PipeCommand::Argv(a),
            format: StreamFormat::Ppm,
            label: Some(format!("video:{}", uri::redact_userinfo(&self.input))),
            // A file has a timeline; a network stream (rtsp://, http://) is live: wall clock.
            media_fps: self.fps.filter(|_| !self.input.contains("://")),
        }
    }
}

/// The output half of an ffmpeg command line that decodes to lookout: optional rate and size
/// filters, then RGB PPM frames on stdout (shared by `video:` and `rtsp://`).
pub(super) fn ppm_output(
    a: &mut Vec<String>,
    fps: Option<f64>,
    width: Option<u32>,
    height: Option<u32>,
) {
    let mut filters = Vec::new();
    if let Some(f) = fps {
        filters.push(format!("fps={f}"));
    }
    match (width, height) {
        (None, None) => {}
        (w, h) => filters.push(format!(
            "scale={}:{}",
            w.map_or("-2".to_string(), |w| w.to_string()),
            h.map_or("-2".to_string(), |h| h.to_string())
        )),
    }
    if !filters.is_empty() {
        a.extend(["-vf".into(), filters.join(",")]);
    }
    // Without -fps_mode passthrough ffmpeg duplicates frames to fill timestamp gaps.
    if fps.is_none() {
        a.extend(["-fps_mode".into(), "passthrough".into()]);
    }
    a.extend(["-pix_fmt", "rgb24", "-f", "image2pipe", "-c:v", "ppm", "-"].map(String::from));
}

/// Last bytes a child wrote to stderr, for error messages.
const STDERR_TAIL: usize = 2048;

/// Frames read from a child process. The child (and anything it started) is killed when the
/// source is dropped.
pub struct PipeSource {
    format: StreamFormat,
    child: Child,
    out: InBuf<StopRead>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Lines the child wrote to stderr (ffmpeg at `-loglevel error`: its decode errors).
    stderr_lines: Arc<AtomicU64>,
    stop: StopFlag,
    buf: Vec<u8>,
    stamp: FrameStamper,
    finished: bool,
    /// The child has been waited for (its pid may no longer be ours).
    reaped: bool,
}

impl PipeSource {
    pub fn spawn(spec: PipeSpec) -> Result<Self, CaptureError> {
        let (mut cmd, shown) = match &spec.command {
            PipeCommand::Shell(s) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(s);
                (c, s.clone())
            }
            PipeCommand::Argv(a) => {
                let Some((prog, args)) = a.split_first() else {
                    return Err(CaptureError::uri("pipe:", "command", "is empty"));
                };
                let mut c = Command::new(prog);
                c.args(args);
                (c, a.join(" "))
            }
        };
        let label: Arc<str> = spec
            .label
            .clone()
            .unwrap_or_else(|| format!("pipe:{}", uri::redact_all(&shown)))
            .into();
        if let StreamFormat::Raw {
            format,
            width,
            height,
        } = spec.format
        {
            if format == PixelFormat::Mjpeg {
                return Err(CaptureError::fatal(
                    &label,
                    "raw frames cannot be MJPEG; use StreamFormat::Mjpeg",
                ));
            }
            if width == 0 || height == 0 || width as u64 * height as u64 > MAX_FRAME_PIXELS {
                return Err(CaptureError::fatal(
                    &label,
                    format!("frame size {width}x{height} is outside 1..={MAX_FRAME_PIXELS} pixels"),
                ));
            }
        }
        // Its own process group, so that dropping the source also stops the programs a shell
        // pipeline started, not just the shell.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            let prog = match &spec.command {
                PipeCommand::Shell(_) => "sh".to_string(),
                PipeCommand::Argv(a) => a[0].clone(),
            };
            CaptureError::fatal(&label, format!("cannot run {prog}: {e}"))
        })?;
        let stdout = child.stdout.take();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = Arc::new(AtomicU64::new(0));
        if let Some(mut err) = child.stderr.take() {
            let (tail, lines) = (stderr.clone(), stderr_lines.clone());
            let started = std::thread::Builder::new()
                .name("pipe-stderr".into())
                .spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = err.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        let newlines = chunk[..n].iter().filter(|&&b| b == b'\n').count();
                        lines.fetch_add(newlines as u64, Ordering::Relaxed);
                        if let Ok(mut t) = tail.lock() {
                            t.extend_from_slice(&chunk[..n]);
                            let excess = t.len().saturating_sub(STDERR_TAIL);
                            t.drain(..excess);
                        }
                    }
                });
            if let Err(e) = started {
                kill_group(&mut child);
                return Err(CaptureError::fatal(
                    &label,
                    format!("cannot start thread: {e}"),
                ));
            }
        }
        let Some(stdout) = stdout else {
            kill_group(&mut child);
            return Err(CaptureError::fatal(&label, "child has no stdout"));
        };
        let stop = StopFlag::default();
        Ok(PipeSource {
            format: spec.format,
            child,
            out: InBuf::new(StopRead {
                out: stdout,
                stop: stop.clone(),
            }),
            stderr,
            stderr_lines,
            stop,
            buf: Vec::new(),
            stamp: FrameStamper::new(label, spec.media_fps),
            finished: false,
            reaped: false,
        })
    }

    /// The child's process id (also its process group id).
    pub fn child_id(&self) -> u32 {
        self.child.id()
    }

    /// Lines the child has written to stderr so far.
    pub fn stderr_lines(&self) -> u64 {
        self.stderr_lines.load(Ordering::Relaxed)
    }

    /// The child's last words, with any password in a URL it printed replaced by `***`.
    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().map(|t| t.clone()).unwrap_or_default();
        uri::redact_all(String::from_utf8_lossy(&t).trim())
    }

    /// Stdout is exhausted: reap the child and turn a failed command into an error, so a typo
    /// does not look like an empty clip and a crash is not mistaken for the end of a stream
    /// (the healing wrapper reopens a source whose command failed, but not one that finished).
    fn end(&mut self) -> Result<Option<Frame>, CaptureError> {
        self.finished = true;
        let status = wait_briefly(&mut self.child);
        self.reaped = true;
        let failed = status.map(|s| !s.success()).unwrap_or(true);
        if !failed {
            return Ok(None);
        }
        // Give the stderr thread a moment to collect the child's last words.
        std::thread::sleep(Duration::from_millis(50));
        let what = match status {
            Some(s) => format!("command {s}"),
            None => "command did not exit after closing its output".to_string(),
        };
        let tail = self.stderr_tail();
        let msg = if tail.is_empty() {
            what
        } else {
            format!("{what}: {tail}")
        };
        Err(CaptureError::fatal(self.stamp.label(), msg))
    }

    fn io_error(&mut self, e: std::io::Error) -> CaptureError {
        self.finished = true;
        CaptureError::fatal(self.stamp.label(), format!("reading output: {e}"))
    }

    fn truncated(
        &mut self,
        id: u64,
        got: usize,
        want: &str,
    ) -> Result<Option<Frame>, CaptureError> {
        // Nothing can follow a short read: the stream has ended.
        self.finished = true;
        let _ = wait_briefly(&mut self.child);
        self.reaped = true;
        Err(self.stamp.bad(
            id,
            format!("stream ended inside a frame: got {got} of {want} bytes"),
        ))
    }

    fn next_raw(
        &mut self,
        format: PixelFormat,
        w: u32,
        h: u32,
    ) -> Result<Option<Frame>, CaptureError> {
        let need = format.frame_len(w, h).unwrap_or(0);
        let mut buf = std::mem::take(&mut self.buf);
        let got = match self.out.take_into(need, &mut buf) {
            Ok(n) => n,
            Err(e) => return Err(self.io_error(e)),
        };
        if got == 0 {
            self.buf = buf;
            return self.end();
        }
        let id = self.stamp.take_id();
        if got < need {
            self.buf = buf;
            return self.truncated(id, got, &need.to_string());
        }
        let img = pixfmt::to_rgb(format, &buf, w, h, None);
        self.buf = buf;
        self.stamp.deliver(id, img)
    }

    fn next_ppm(&mut self) -> Result<Option<Frame>, CaptureError> {
        let header = loop {
            match parse_ppm_header(self.out.data()) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => {
                    self.finished = true;
                    return Err(CaptureError::fatal(
                        self.stamp.label(),
                        format!("not a PPM stream: {e}"),
                    ));
                }
            }
            let have = self.out.data().len();
            match self.out.fill() {
                Ok(0) if have == 0 => return self.end(),
                Ok(0) => {
                    let id = self.stamp.take_id();
                    return self.truncated(id, have, "a PPM header's");
                }
                Ok(_) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        };
        let (w, h, header_len) = header;
        self.out.consume(header_len);
        let id = self.stamp.take_id();
        let need = w as usize * h as usize * 3;
        let mut buf = std::mem::take(&mut self.buf);
        let got = match self.out.take_into(need, &mut buf) {
            Ok(n) => n,
            Err(e) => return Err(self.io_error(e)),
        };
        if got < need {
            self.buf = buf;
            return self.truncated(id, got, &need.to_string());
        }
        let img = RgbImage::from_raw(w, h, buf).ok_or("bad PPM size");
        self.stamp.deliver(id, img)
    }

    fn next_mjpeg(&mut self) -> Result<Option<Frame>, CaptureError> {
        // Find the start of the next image, dropping anything between images.
        loop {
            let d = self.out.data();
            if d.len() >= 3 {
                match jpeg::find_soi(d, 0) {
                    Some(i) => {
                        self.out.consume(i);
                        break;
                    }
                    None => {
                        let keep = 2;
                        self.out.consume(d.len() - keep);
                    }
                }
            }
            match self.out.fill() {
                Ok(0) => return self.end(),
                Ok(_) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        let id = self.stamp.take_id();
        let mut scanner = JpegScanner::default();
        loop {
            match scanner.scan(self.out.data()) {
                Scan::Complete(n) => {
                    let img = pixfmt::mjpeg_to_rgb(&self.out.data()[..n]);
                    self.out.consume(n);
                    return self.stamp.deliver(id, img);
                }
                Scan::Invalid(why) => {
                    // Skip past this SOI; the search above resynchronises on the next one.
                    self.out.consume(2);
                    return Err(self.stamp.bad(id, format!("corrupt JPEG: {why}")));
                }
                Scan::Incomplete => {
                    let have = self.out.data().len();
                    if have > MAX_FRAME_BYTES {
                        self.out.consume(2);
                        let why = format!("JPEG larger than {MAX_FRAME_BYTES} bytes");
                        return Err(self.stamp.bad(id, why));
                    }
                    match self.out.fill() {
                        Ok(0) => return self.truncated(id, have, "a JPEG's"),
                        Ok(_) => {}
                        Err(e) => return Err(self.io_error(e)),
                    }
                }
            }
        }
    }
}

/// `(width, height, header length)` of a binary PPM header at the start of `d`; `None` when
/// more bytes are needed.
fn parse_ppm_header(d: &[u8]) -> Result<Option<(u32, u32, usize)>, ConvertError> {
    let bad = |why: String| Err(ConvertError(why));
    const MAX_HEADER: usize = 1024;
    let mut fields = [0u32; 3];
    let mut pos = 0;
    if d.len() < 2 {
        return Ok(None);
    }
    if &d[..2] != b"P6" {
        return bad(format!(
            "bad magic {:?} (expected P6)",
            String::from_utf8_lossy(&d[..2])
        ));
    }
    pos += 2;
    for (i, field) in fields.iter_mut().enumerate() {
        // Whitespace and comments before each number.
        loop {
            match d.get(pos) {
                None => return more(d, MAX_HEADER),
                Some(b'#') => match d[pos..].iter().position(|&b| b == b'\n') {
                    Some(k) => pos += k + 1,
                    None => return more(d, MAX_HEADER),
                },
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                Some(_) => break,
            }
        }
        let start = pos;
        while d.get(pos).is_some_and(|b| b.is_ascii_digit()) {
            pos += 1;
        }
        if pos == d.len() {
            return more(d, MAX_HEADER);
        }
        if pos == start || pos - start > 9 {
            return bad(format!("bad number in header field {}", i + 1));
        }
        *field = match std::str::from_utf8(&d[start..pos]).map(str::parse) {
            Ok(Ok(n)) => n,
            _ => return bad("bad number".into()),
        };
    }
    // Exactly one whitespace byte separates the header from the pixels.
    match d.get(pos) {
        None => return more(d, MAX_HEADER),
        Some(b) if b.is_ascii_whitespace() => pos += 1,
        Some(_) => return bad("no whitespace after the header".into()),
    }
    let [w, h, maxval] = fields;
    if maxval != 255 {
        return bad(format!(
            "maxval {maxval} is not 8-bit (give ffmpeg -pix_fmt rgb24)"
        ));
    }
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_FRAME_PIXELS {
        return bad(format!(
            "size {w}x{h} is outside {MAX_SIDE} per side / {MAX_FRAME_PIXELS} pixels"
        ));
    }
    Ok(Some((w, h, pos)))
}

fn more<T>(d: &[u8], max: usize) -> Result<Option<T>, ConvertError> {
    if d.len() > max {
        Err(ConvertError(format!("header longer than {max} bytes")))
    } else {
        Ok(None)
    }
}

/// Wait up to a second for a child that has closed its output, then kill it. Either way the
/// child is reaped and any programs it left in its process group are killed.
fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => {
                signal_group(child, libc::SIGKILL);
                return Some(s);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                kill_group(child);
                return None;
            }
        }
    }
}

fn signal_group(child: &Child, signal: libc::c_int) {
    if let Ok(pgid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) has no memory effects; the negative pid addresses the process group
        // that `process_group(0)` created for this child and nothing else.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

fn kill_group(child: &mut Child) {
    signal_group(child, libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for PipeSource {
    fn drop(&mut self) {
        // Once the leader is reaped its pid (the group id) may in time be recycled, so the
        // group is signalled only while the leader is known to be ours.
        if !self.reaped {
            kill_group(&mut self.child);
        }
    }
}

impl FrameSource for PipeSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.finished || self.stop.is_set() {
            self.finished = true;
            return Ok(None);
        }
        let got = match self.format {
            StreamFormat::Raw {
                format,
                width,
                height,
            } => self.next_raw(format, width, height),
            StreamFormat::Ppm => self.next_ppm(),
            StreamFormat::Mjpeg => self.next_mjpeg(),
        };
        // A read cut short by the stop flag is a stop, not a failure of the command.
        if got.is_err() && self.stop.is_set() {
            self.finished = true;
            return Ok(None);
        }
        got
    }

    fn describe(&self) -> String {
        let fmt = match self.format {
            StreamFormat::Raw {
                format,
                width,
                height,
            } => format!("{width}x{height} {format}"),
            StreamFormat::Ppm => "ppm".into(),
            StreamFormat::Mjpeg => "mjpeg".into(),
        };
        format!("{} ({fmt}, pid {})", self.stamp.label(), self.child.id())
    }

    fn stats(&self) -> CaptureStats {
        self.stamp.stats()
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop.watch(stop);
    }
}

/// The child's stdout, read in [`STOP_POLL`] slices so that a set stop flag ends a read the
/// child never answers (a stalled stream, a shutdown) instead of blocking the capture thread.
struct StopRead {
    out: ChildStdout,
    stop: StopFlag,
}

impl Read for StopRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = STOP_POLL.as_millis() as libc::c_int;
        loop {
            if self.stop.is_set() {
                return Err(io::Error::other("stopped"));
            }
            let mut fds = libc::pollfd {
                fd: self.out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for a descriptor `self.out` owns, for the call's length.
            let n = unsafe { libc::poll(&mut fds, 1, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // Readable, closed (POLLHUP) or failed: the read itself says which.
            if n > 0 {
                return self.out.read(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipe_uris() {
        let s =
            PipeSpec::parse("pipe:ffmpeg -i a%3Fb.mp4 -f rawvideo -?width=4&height=2&format=nv12")
                .unwrap();
        assert_eq!(
            s.command,
            PipeCommand::Shell("ffmpeg -i a?b.mp4 -f rawvideo -".into())
        );
        assert_eq!(
            s.format,
            StreamFormat::Raw {
                format: PixelFormat::Nv12,
                width: 4,
                height: 2
            }
        );
        assert_eq!(
            PipeSpec::parse("pipe:cat x?format=ppm").unwrap().format,
            StreamFormat::Ppm
        );
        let e = PipeSpec::parse("pipe:cat x?width=4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("height") && e.contains("required"), "{e}");
        let e = PipeSpec::parse("pipe:cat x?format=i420&width=4&height=4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("format") && e.contains("i420"), "{e}");
        let e = PipeSpec::parse("pipe:cat x?format=ppm&width=4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("width") && e.contains("own size"), "{e}");
        assert!(PipeSpec::parse("pipe:?format=ppm").is_err());
        assert!(PipeSpec::parse("pipe:cat x?width=4&height=4&size=1").is_err());
    }

    #[test]
    fn builds_ffmpeg_commands() {
        let v = VideoOptions::parse("video:/clips/a b.mp4?fps=5&width=320&loop=true").unwrap();
        let PipeCommand::Argv(a) = v.to_spec().command else {
            panic!()
        };
        let line = a.join(" ");
        assert!(line.contains("-stream_loop -1 -i /clips/a b.mp4"), "{line}");
        assert!(line.contains("-vf fps=5,scale=320:-2"), "{line}");
        assert!(line.ends_with("-f image2pipe -c:v ppm -"), "{line}");
        assert!(!line.contains("-re"));
        let v = VideoOptions::parse("video:rtsp://u:secret@cam/s?realtime").unwrap();
        assert!(v.realtime);
        let spec = v.to_spec();
        assert_eq!(spec.label.as_deref(), Some("video:rtsp://u:***@cam/s"));
        assert!(VideoOptions::parse("video:x?fps=0").is_err());
        assert!(VideoOptions::parse("video:?fps=1").is_err());
    }

    #[test]
    fn ppm_headers() {
        assert_eq!(
            parse_ppm_header(b"P6\n320 240\n255\n").unwrap(),
            Some((320, 240, 15))
        );
        assert_eq!(
            parse_ppm_header(b"P6 # c\n2 1 255 ").unwrap(),
            Some((2, 1, 15))
        );
        assert_eq!(parse_ppm_header(b"P6\n320 24").unwrap(), None);
        assert_eq!(parse_ppm_header(b"P6\n320 240\n255").unwrap(), None);
        assert!(parse_ppm_header(b"P5\n1 1\n255\n").is_err());
        assert!(parse_ppm_header(b"P6\n1 1\n65535\n").is_err());
        assert!(parse_ppm_header(b"P6\n0 1\n255\n").is_err());
        assert!(parse_ppm_header(b"P6\n99999 1\n255\n").is_err());
        assert!(parse_ppm_header(b"P6\n16384 16384\n255\n").is_err());
        assert!(parse_ppm_header(&[b' '; 2000]).is_err());
    }
}

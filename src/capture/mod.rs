//! Frame sources: everything that turns a camera, a clip, a folder or a network stream into a
//! sequence of RGB [`Frame`]s for the detector.
//!
//! A source is opened from a URI ([`open`]) or built from its options struct when the caller
//! already has typed config. The scheme picks the source:
//!
//! | URI | source |
//! |---|---|
//! | `photo.jpg`, `frames/`, `file:frames?fps=10&loop=true` | [`file::FileSource`]: an image or a folder of images |
//! | `pipe:ffmpeg -i clip.mp4 -f rawvideo -pix_fmt rgb24 -?width=640&height=360` | [`pipe::PipeSource`]: raw frames from a command's stdout |
//! | `video:clip.mp4?fps=5&width=640&loop=true` | [`pipe::PipeSource`] running an ffmpeg command built for you |
//! | `mjpeg+http://user:pw@10.0.0.7:8080/video?action=stream` | [`mjpeg_http::MjpegHttpSource`]: an IP camera's MJPEG stream |
//! | `v4l:///dev/video0?width=640&height=480&fps=15&format=yuyv` | [`v4l::V4lSource`]: a V4L2 camera |
//! | `rtsp://user:pw@10.0.0.9:554/stream1?transport=udp`, `rtsps://…` | [`rtsp::RtspSource`]: an IP camera's H.264/H.265 stream |
//!
//! [`open_healing`] wraps any of them in [`heal::HealingSource`], which reopens a source that
//! ends, fails or stalls (with capped, jittered back-off) and keeps frame ids and times
//! increasing across the gap; `lookout run` always uses it.
//!
//! The grammar of each scheme is documented on its options type ([`file::FileOptions`],
//! [`pipe::PipeSpec`], [`pipe::VideoOptions`], [`mjpeg_http::MjpegOptions`],
//! [`v4l::V4lOptions`], [`rtsp::RtspOptions`]). Query parameters are `key=value` pairs joined by `&` and
//! percent-decoded; an unknown or repeated parameter is an error, so a typo is never ignored.
//!
//! Errors come in kinds that tell a capture loop what to do (see [`CaptureError`]):
//!
//! ```no_run
//! # fn main() -> Result<(), lookout::capture::CaptureError> {
//! let mut src = lookout::capture::open("video:clip.mp4?fps=5")?;
//! loop {
//!     match src.next_frame() {
//!         Ok(Some(frame)) => { /* detect on frame.image */ }
//!         Ok(None) => break,                           // end of stream
//!         Err(e) if e.is_recoverable() => log::warn!("{e}"), // skip a frame / wait out a reconnect
//!         Err(e) => return Err(e),
//!     }
//! }
//! # Ok(()) }
//! ```

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

pub mod file;
pub mod heal;
mod inbuf;
pub mod mjpeg_http;
pub mod pipe;
pub mod pixfmt;
mod retry;
pub mod rtsp;
mod stamp;
mod uri;
pub mod v4l;

pub use heal::{open_healing, HealPolicy, HealingSource};
pub use pixfmt::PixelFormat;
pub use retry::Backoff;
pub use rtsp::HwDecode;

/// Largest encoded frame (a JPEG part, a PPM, a raw buffer) accepted from outside. Far above any
/// real camera frame, and small enough that a hostile or broken peer cannot exhaust an edge
/// board's memory.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Largest frame accepted from a stream, in pixels (8K UHD, 100 MB as RGB). Sizes that a camera,
/// server or child process declares (JPEG and PPM headers, raw sizes, V4L2 formats) are checked
/// against it before anything is allocated or decoded.
pub const MAX_FRAME_PIXELS: u64 = 7680 * 4320;

/// One captured picture.
#[derive(Clone)]
pub struct Frame {
    /// Sequence number within its source, strictly increasing from 0 (across loops and
    /// reconnects). A frame reported as [`CaptureError::BadFrame`] uses up its number, so a gap
    /// in the ids of delivered frames means frames were lost.
    pub id: u64,
    /// When the frame was captured or received, in seconds since the Unix epoch. Clips with a
    /// frame rate (`file:…?fps=`, `video:…?fps=` on a file) carry media time instead: the time of
    /// their first frame plus the frame's position in the clip, so dwell and cooldown rules see
    /// the clip's seconds however fast or slow it is processed.
    pub ts: f64,
    pub image: RgbImage,
    /// Where it came from: the path or URI, with any password removed.
    pub source: Arc<str>,
}

impl std::fmt::Debug for Frame {
    // The pixels would drown everything else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("id", &self.id)
            .field("ts", &self.ts)
            .field("size", &self.image.dimensions())
            .field("source", &self.source)
            .finish()
    }
}

/// Something that yields frames until the end of its stream. Used from one capture thread.
pub trait FrameSource: Send {
    /// The next frame, `Ok(None)` at the end of the stream (a live camera never ends).
    ///
    /// After an error for which [`CaptureError::is_recoverable`] holds, calling again continues
    /// with the next frame (after a bad frame) or the next reconnection attempt (after a
    /// disconnect, the call first waits out the back-off delay). After any other error the
    /// source is finished.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;

    /// A one-line description for logs, e.g. `v4l:///dev/video0 640x480 YUYV @ 15 fps`.
    fn describe(&self) -> String;

    /// Counters since the source was opened.
    fn stats(&self) -> CaptureStats {
        CaptureStats::default()
    }

    /// Cut blocking waits short (a silent camera, the back-off before a reconnection) soon after
    /// `stop` is set, so that a shutdown is not held up by the source; `next_frame` then returns
    /// `Ok(None)`. Sources that never block for long ignore it.
    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        let _ = stop;
    }
}

/// Counters a source keeps so that losses are visible without parsing logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames delivered.
    pub frames: u64,
    /// Frames skipped as [`CaptureError::BadFrame`].
    pub bad_frames: u64,
    /// Successful reconnections after a lost connection or device.
    pub reconnects: u64,
    /// Errors the decoder reported and concealed, without losing the frame (ffmpeg's decode
    /// errors on an RTSP stream); frames that were lost are `bad_frames`.
    pub decode_errors: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The URI (or an options struct) is wrong; `param` names the part: `scheme`, `path`,
    /// `host`, or a query parameter such as `fps`.
    #[error("{uri}: {param}: {reason}")]
    Uri {
        uri: String,
        param: String,
        reason: String,
    },

    /// One frame could not be read or decoded; the stream goes on with the next one.
    #[error("{stream}: frame {frame}: {reason}")]
    BadFrame {
        stream: Arc<str>,
        frame: u64,
        reason: String,
    },

    /// The camera or server went away; the source keeps trying to get it back, waiting
    /// `retry_in` before the next attempt (done inside the next call to `next_frame`).
    #[error("{stream}: disconnected: {reason} (retrying in {:.1} s)", retry_in.as_secs_f64())]
    Disconnected {
        stream: Arc<str>,
        reason: String,
        retry_in: Duration,
    },

    /// The source cannot start or cannot go on.
    #[error("{stream}: {reason}")]
    Fatal { stream: Arc<str>, reason: String },
}

impl CaptureError {
    /// True when calling `next_frame` again makes sense.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            CaptureError::BadFrame { .. } | CaptureError::Disconnected { .. }
        )
    }

    /// `uri` is shown with any password replaced by `***`.
    pub(crate) fn uri(uri: &str, param: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        CaptureError::Uri {
            uri: uri::redact_all(uri),
            param: param.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn fatal(stream: &Arc<str>, reason: impl std::fmt::Display) -> Self {
        CaptureError::Fatal {
            stream: stream.clone(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn bad_frame(stream: &Arc<str>, frame: u64, reason: impl std::fmt::Display) -> Self {
        CaptureError::BadFrame {
            stream: stream.clone(),
            frame,
            reason: reason.to_string(),
        }
    }

    /// The same failure met while reconnecting: the source goes on trying after `retry_in`
    /// (a camera that cannot be opened at start-up is fatal, later it is only gone for now).
    pub(crate) fn into_disconnected(self, retry_in: Duration) -> Self {
        let (stream, reason) = match self {
            CaptureError::Uri { uri, param, reason } => (uri.into(), format!("{param}: {reason}")),
            CaptureError::BadFrame { stream, reason, .. }
            | CaptureError::Disconnected { stream, reason, .. }
            | CaptureError::Fatal { stream, reason } => (stream, reason),
        };
        CaptureError::Disconnected {
            stream,
            reason,
            retry_in,
        }
    }
}

impl From<CaptureError> for crate::Error {
    fn from(e: CaptureError) -> Self {
        crate::Error::Other(e.to_string())
    }
}

/// Settings for opening a source that come from the config rather than the URI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Hardware decoder for RTSP streams (`[camera] hwdecode`).
    pub hwdecode: HwDecode,
}

/// `uri` with any `user:password@` shown as `user:***@`, for logs and messages.
pub fn redact(uri: &str) -> String {
    uri::redact_all(uri)
}

/// Open a frame source from its URI (see the [module docs](self) for the schemes).
pub fn open(uri: &str) -> Result<Box<dyn FrameSource>, CaptureError> {
    open_with(uri, OpenOptions::default())
}

/// [`open`] with the settings a URI does not carry.
pub fn open_with(uri: &str, with: OpenOptions) -> Result<Box<dyn FrameSource>, CaptureError> {
    let (scheme, _) = uri::classify(uri)?;
    Ok(match scheme {
        uri::Scheme::File => Box::new(file::FileSource::open(file::FileOptions::parse(uri)?)?),
        uri::Scheme::Pipe => Box::new(pipe::PipeSource::spawn(pipe::PipeSpec::parse(uri)?)?),
        uri::Scheme::Video => Box::new(pipe::PipeSource::spawn(
            pipe::VideoOptions::parse(uri)?.to_spec(),
        )?),
        uri::Scheme::MjpegHttp => Box::new(mjpeg_http::MjpegHttpSource::open(
            mjpeg_http::MjpegOptions::parse(uri)?,
        )?),
        uri::Scheme::V4l => Box::new(v4l::V4lSource::open(v4l::V4lOptions::parse(uri)?)?),
        uri::Scheme::Rtsp => {
            let mut o = rtsp::RtspOptions::parse(uri)?;
            o.hwdecode = with.hwdecode;
            Box::new(rtsp::RtspSource::open(o)?)
        }
    })
}
/// Parse a source URI without opening anything (`lookout check`): the syntax errors `open` would
/// give, with no device, process or connection touched.
pub fn check_uri(uri: &str) -> Result<(), CaptureError> {
    let (scheme, _) = uri::classify(uri)?;
    match scheme {
        uri::Scheme::File => drop(file::FileOptions::parse(uri)?),
        uri::Scheme::Pipe => drop(pipe::PipeSpec::parse(uri)?),
        uri::Scheme::Video => drop(pipe::VideoOptions::parse(uri)?),
        uri::Scheme::MjpegHttp => drop(mjpeg_http::MjpegOptions::parse(uri)?),
        uri::Scheme::V4l => drop(v4l::V4lOptions::parse(uri)?),
        uri::Scheme::Rtsp => drop(rtsp::RtspOptions::parse(uri)?),
    }
    Ok(())
}

//! V4L2 cameras (USB webcams, CSI bridges that expose a single-planar capture node) through the
//! `v4l` crate: format negotiation, mmap streaming, conversion to RGB, and re-opening the device
//! with back-off when it disappears (a USB cable knocked loose, a camera reset by its driver).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use v4l::buffer::Type;
use v4l::capability::Flags as CapFlags;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::pixfmt::{self, ConvertError};
use super::retry::{Backoff, Retry};
use super::stamp::FrameStamper;
use super::uri::{self, Params};
use super::{CaptureError, CaptureStats, Frame, FrameSource, PixelFormat, MAX_FRAME_PIXELS};
use crate::imageio::MAX_SIDE;

/// Which device and what to ask it for.
///
/// URI forms:
///
/// ```text
/// v4l:///dev/video0?width=640&height=480&fps=15&format=mjpeg
/// v4l:/dev/v4l/by-id/usb-046d_C270_HD_WEBCAM-video-index0?format=yuyv
/// v4l:0                                  (= /dev/video0, current format)
/// ```
///
/// - `width`, `height`: requested size; the driver may pick the nearest it supports (logged).
///   Absent: keep the device's current size.
/// - `fps`: requested frame rate (whole frames per second); absent: the device's current rate.
/// - `format`: `mjpeg`, `yuyv`, `nv12`, `rgb24` or `bgr24`. Absent: the device's current format
///   if it is one of these, else the first of them it offers. A format the device does not
///   offer is an error that lists what it does offer.
///
/// The `/dev/v4l/by-id/...` names stay the same across reboots and replugging, unlike
/// `/dev/videoN`, which makes them the better choice on a board with more than one camera.
#[derive(Debug, Clone, PartialEq)]
pub struct V4lOptions {
    pub device: PathBuf,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    pub format: Option<PixelFormat>,
    /// mmap buffers shared with the driver.
    pub buffers: u32,
    /// No frame for this long counts as a lost device (at least three frame intervals are
    /// allowed whatever this says).
    pub frame_timeout: Duration,
    pub backoff: Backoff,
}

impl V4lOptions {
    pub fn new(device: impl Into<PathBuf>) -> Self {
        V4lOptions {
            device: device.into(),
            width: None,
            height: None,
            fps: None,
            format: None,
            buffers: 4,
            frame_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
        }
    }

    pub fn parse(u: &str) -> Result<Self, CaptureError> {
        let (scheme, rest) = uri::classify(u)?;
        if scheme != uri::Scheme::V4l {
            return Err(CaptureError::uri(u, "scheme", "expected v4l:///dev/videoN"));
        }
        let (body, query) = uri::split_query(rest);
        let body = match body.strip_prefix("//") {
            Some(after) => {
                let slash = after.find('/').unwrap_or(after.len());
                if slash != 0 {
                    return Err(CaptureError::uri(
                        u,
                        "host",
                        format!(
                            "'{}' given; write v4l:///dev/videoN (three slashes)",
                            &after[..slash]
                        ),
                    ));
                }
                after
            }
            None => body,
        };
        let path = uri::percent_decode(u, "device", body)?;
        let device = if !path.is_empty() && path.bytes().all(|b| b.is_ascii_digit()) {
            PathBuf::from(format!("/dev/video{path}"))
        } else if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            return Err(CaptureError::uri(
                u,
                "device",
                "expected an absolute device path such as /dev/video0, or a number",
            ));
        };
        let mut p = Params::parse(u, query)?;
        let mut o = V4lOptions::new(device);
        o.width = p.u32("width", MAX_SIDE)?;
        o.height = p.u32("height", MAX_SIDE)?;
        o.fps = p.u32("fps", 1000)?;
        if let Some(f) = p.take("format") {
            o.format = Some(PixelFormat::from_name(&f).ok_or_else(|| {
                p.err(
                    "format",
                    format!("'{f}' is not one of mjpeg, yuyv, nv12, rgb24, bgr24"),
                )
            })?);
        }
        p.finish(&["width", "height", "fps", "format"])?;
        Ok(o)
    }
}

fn fourcc_of(f: PixelFormat) -> FourCC {
    FourCC::new(match f {
        PixelFormat::Rgb24 => b"RGB3",
        PixelFormat::Bgr24 => b"BGR3",
        PixelFormat::Yuyv => b"YUYV",
        PixelFormat::Nv12 => b"NV12",
        PixelFormat::Mjpeg => b"MJPG",
    })
}

fn pixfmt_of(c: FourCC) -> Option<PixelFormat> {
    Some(match &c.repr {
        b"RGB3" => PixelFormat::Rgb24,
        b"BGR3" => PixelFormat::Bgr24,
        b"YUYV" => PixelFormat::Yuyv,
        b"NV12" => PixelFormat::Nv12,
        b"MJPG" | b"JPEG" => PixelFormat::Mjpeg,
        _ => return None,
    })
}

/// What the driver agreed to.
#[derive(Debug, Clone, PartialEq)]
struct Negotiated {
    format: PixelFormat,
    fourcc: FourCC,
    width: u32,
    height: u32,
    stride: usize,
    fps: Option<f64>,
}

/// An open, streaming device.
struct Live {
    stream: Option<Stream<'static>>,
    _device: Device,
    neg: Negotiated,
}

impl Drop for Live {
    fn drop(&mut self) {
        // The v4l crate panics in Drop when un-mapping or stopping fails with anything but
        // ENODEV; a half-gone USB device can do that. Losing a camera must not take the
        // pipeline down, so contain it.
        if let Some(s) = self.stream.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(s)));
        }
    }
}

fn open_device(o: &V4lOptions, label: &Arc<str>) -> Result<Live, CaptureError> {
    let fail = |reason: String| CaptureError::fatal(label, reason);
    let path = o.device.display().to_string();
    let device = Device::with_path(&o.device).map_err(|e| {
        fail(match e.kind() {
            io::ErrorKind::NotFound => {
                format!("{path} does not exist (is the camera plugged in? see ls /dev/video*)")
            }
            io::ErrorKind::PermissionDenied => {
                format!("permission denied opening {path} (add the user to the 'video' group)")
            }
            _ => format!("cannot open {path}: {e}"),
        })
    })?;
    let caps = device.query_caps().map_err(|e| {
        fail(if e.raw_os_error() == Some(libc::ENOTTY) {
            format!("{path} is not a V4L2 device")
        } else {
            format!("{path}: querying capabilities: {e}")
        })
    })?;
    if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
        return Err(fail(
            if caps.capabilities.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
                format!(
                    "{path} ({}) is a multi-planar capture device, which is not supported; \
                 read it through pipe: (libcamera-vid, gst-launch-1.0 or ffmpeg)",
                    caps.card
                )
            } else {
                format!(
                    "{path} ({}) is not a video capture node (cameras often expose a second, \
                 metadata-only /dev/videoN; try the other one)",
                    caps.card
                )
            },
        ));
    }
    if !caps.capabilities.contains(CapFlags::STREAMING) {
        return Err(fail(format!(
            "{path} ({}) does not support streaming I/O",
            caps.card
        )));
    }
    let offered: Vec<FourCC> = device
        .enum_formats()
        .map(|v| v.into_iter().map(|d| d.fourcc).collect())
        .unwrap_or_default();
    let offered_list = offered
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let current = device
        .format()
        .map_err(|e| fail(format!("{path}: reading the current format: {e}")))?;
    let format = match o.format {
        Some(f) => {
            if !offered.is_empty() && !offered.iter().any(|&c| pixfmt_of(c) == Some(f)) {
                return Err(fail(format!(
                    "format {f}: {path} ({}) offers only {offered_list}",
                    caps.card
                )));
            }
            f
        }
        None => pixfmt_of(current.fourcc)
            .or_else(|| offered.iter().find_map(|&c| pixfmt_of(c)))
            .ok_or_else(|| {
                fail(format!(
                    "{path} ({}) offers {offered_list}, none of which lookout converts \
                     (MJPG, YUYV, NV12, RGB3, BGR3)",
                    caps.card
                ))
            })?,
    };
    let (w, h) = (
        o.width.unwrap_or(current.width),
        o.height.unwrap_or(current.height),
    );
    let got = device
        .set_format(&Format::new(w, h, fourcc_of(format)))
        .map_err(|e| fail(format!("{path}: setting {w}x{h} {format}: {e}")))?;
    if pixfmt_of(got.fourcc) != Some(format) {
        return Err(fail(format!(
            "format {format}: {path} switched to {} instead",
            got.fourcc
        )));
    }
    if got.width == 0
        || got.height == 0
        || got.width > MAX_SIDE
        || got.height > MAX_SIDE
        || got.width as u64 * got.height as u64 > MAX_FRAME_PIXELS
    {
        return Err(fail(format!(
            "{path}: driver reports a frame size of {}x{}",
            got.width, got.height
        )));
    }
    if (got.width, got.height) != (w, h) {
        log::warn!(
            "{path}: asked for {w}x{h}, the driver gives {}x{}",
            got.width,
            got.height
        );
    }
    let interval = match o.fps {
        Some(fps) => match device.set_params(&Parameters::with_fps(fps)) {
            Ok(p) => Some(p.interval),
            Err(e) => {
                log::warn!("{path}: cannot set {fps} fps: {e}");
                device.params().ok().map(|p| p.interval)
            }
        },
        None => device.params().ok().map(|p| p.interval),
    };
    let fps = interval
        .filter(|i| i.numerator > 0 && i.denominator > 0)
        .map(|i| i.denominator as f64 / i.numerator as f64);
    if let (Some(want), Some(have)) = (o.fps, fps) {
        if (want as f64 - have).abs() > 0.5 {
            log::warn!("{path}: asked for {want} fps, the driver gives {have:.2}");
        }
    }
    let min_stride = format.min_stride(got.width).unwrap_or(0);
    let stride = (got.stride as usize).max(min_stride);
    let mut stream = Stream::with_buffers(&device, Type::VideoCapture, o.buffers.max(2))
        .map_err(|e| fail(format!("{path}: allocating mmap buffers: {e}")))?;
    let frame_interval = fps.map_or(Duration::ZERO, |f| Duration::from_secs_f64(3.0 / f));
    let timeout = o
        .frame_timeout
        .max(frame_interval)
        .min(Duration::from_secs(3600));
    stream.set_timeout(timeout);
    Ok(Live {
        stream: Some(stream),
        _device: device,
        neg: Negotiated {
            format,
            fourcc: got.fourcc,
            width: got.width,
            height: got.height,
            stride,
            fps,
        },
    })
}

/// One buffer from the driver: the outer error means the device is gone or stuck, the inner
/// one a bad frame.
fn grab(live: &mut Live) -> io::Result<Result<RgbImage, ConvertError>> {
    let Some(stream) = live.stream.as_mut() else {
        return Err(io::Error::other("stream closed"));
    };
    let (buf, meta) = CaptureStream::next(stream)?;
    if meta.flags.contains(v4l::buffer::Flags::ERROR) {
        return Ok(Err(ConvertError(
            "the driver marked the buffer as corrupt".into(),
        )));
    }
    let used = meta.bytesused as usize;
    // Some drivers leave bytesused at 0 for raw formats; the whole buffer is then the frame.
    let data = if used > 0 && used <= buf.len() {
        &buf[..used]
    } else {
        buf
    };
    let n = &live.neg;
    Ok(pixfmt::to_rgb(
        n.format,
        data,
        n.width,
        n.height,
        Some(n.stride),
    ))
}

/// Frames from a V4L2 camera.
pub struct V4lSource {
    opts: V4lOptions,
    live: Option<Live>,
    last: Negotiated,
    retry: Retry,
    stamp: FrameStamper,
}

impl V4lSource {
    /// Open and configure the device now, so that a wrong path or an unsupported format is an
    /// error at start-up rather than an endless reconnection loop.
    pub fn open(opts: V4lOptions) -> Result<Self, CaptureError> {
        let label: Arc<str> = format!("v4l:{}", opts.device.display()).into();
        let live = open_device(&opts, &label)?;
        log::info!("{label}: streaming {}", describe_neg(&live.neg));
        Ok(V4lSource {
            retry: Retry::new(opts.backoff),
            last: live.neg.clone(),
            opts,
            live: Some(live),
            stamp: FrameStamper::new(label, None),
        })
    }
}

fn describe_neg(n: &Negotiated) -> String {
    let mut s = format!("{}x{} {}", n.width, n.height, n.fourcc);
    if let Some(f) = n.fps {
        let f = format!("{f:.3}");
        s += &format!(" @ {} fps", f.trim_end_matches('0').trim_end_matches('.'));
    }
    s
}

impl FrameSource for V4lSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let live = match self.live.as_mut() {
            Some(l) => l,
            None => {
                let (opts, label) = (&self.opts, self.stamp.label());
                let Some(l) = self.retry.reconnect(|| open_device(opts, label))? else {
                    return Ok(None);
                };
                log::info!("{label}: re-opened, {}", describe_neg(&l.neg));
                self.stamp.reconnected();
                self.last = l.neg.clone();
                self.live.insert(l)
            }
        };
        match grab(live) {
            Ok(image) => self.stamp.next(image),
            Err(e) => {
                self.live = None;
                let reason = if e.kind() == io::ErrorKind::TimedOut {
                    "no frame within the timeout".to_string()
                } else {
                    e.to_string()
                };
                Err(self.retry.lost_link(self.stamp.label(), reason))
            }
        }
    }

    fn describe(&self) -> String {
        let state = if self.live.is_some() { "" } else { ", lost" };
        format!("{} {}{state}", self.stamp.label(), describe_neg(&self.last))
    }

    fn stats(&self) -> CaptureStats {
        self.stamp.stats()
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        self.retry.stop().watch(stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let o =
            V4lOptions::parse("v4l:///dev/video2?width=640&height=480&fps=15&format=MJPG").unwrap();
        assert_eq!(o.device, PathBuf::from("/dev/video2"));
        assert_eq!((o.width, o.height, o.fps), (Some(640), Some(480), Some(15)));
        assert_eq!(o.format, Some(PixelFormat::Mjpeg));
        assert_eq!(
            V4lOptions::parse("v4l:1").unwrap().device,
            PathBuf::from("/dev/video1")
        );
        assert_eq!(
            V4lOptions::parse("v4l2:/dev/v4l/by-id/usb-x%20y-video-index0")
                .unwrap()
                .device,
            PathBuf::from("/dev/v4l/by-id/usb-x y-video-index0")
        );
        for (bad, param) in [
            ("v4l://cam/dev/video0", "host"),
            ("v4l:video0", "device"),
            ("v4l:///dev/video0?format=h264", "format"),
            ("v4l:///dev/video0?fps=0", "fps"),
            ("v4l:///dev/video0?width=wide", "width"),
            ("v4l:///dev/video0?size=640x480", "size"),
        ] {
            let e = V4lOptions::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!(": {param}:")), "{bad}: {e}");
        }
    }

    #[test]
    fn fourccs_round_trip() {
        for f in PixelFormat::ALL {
            assert_eq!(pixfmt_of(fourcc_of(f)), Some(f));
        }
        assert_eq!(pixfmt_of(FourCC::new(b"H264")), None);
    }
}

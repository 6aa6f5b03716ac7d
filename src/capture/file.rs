//! Still images as a frame sequence: one image, or a folder of them in name order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stamp::FrameStamper;
use super::uri::{self, Params};
use super::{CaptureError, CaptureStats, Frame, FrameSource};
use crate::imageio;

/// Options of a [`FileSource`].
///
/// URI forms:
///
/// ```text
/// photo.jpg                          a plain path: taken literally, no parameters
/// frames/
/// file:frames?fps=10&loop=true       file: allows parameters; the path is percent-decoded
/// file:///var/lib/lookout/still.png?loop&fps=1
/// ```
///
/// - `fps` (number ≥ 0): deliver frames in real time at this rate; `0` or absent means as fast
///   as they are consumed.
/// - `loop` (`true`/`false`, bare `loop` = true): start again after the last image, so a folder
///   of stills can stand in for a live camera.
///
/// A folder yields its `.jpg`, `.jpeg`, `.png` and `.bmp` files (not sub-folders) sorted by
/// file name, so zero-padded names (`frame_00012.jpg`) come out in capture order.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    pub path: PathBuf,
    pub fps: Option<f64>,
    pub looping: bool,
}

impl FileOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileOptions {
            path: path.into(),
            fps: None,
            looping: false,
        }
    }

    /// Parse a `file:` URI or a plain path.
    pub fn parse(u: &str) -> Result<Self, CaptureError> {
        let (_, rest) = uri::classify(u)?;
        if rest.len() == u.len() {
            return Ok(FileOptions::new(u));
        }
        let (body, query) = uri::split_query(rest);
        let body = match body.strip_prefix("//") {
            // file://host/path: only the local host makes sense.
            Some(after) => {
                let slash = after.find('/').unwrap_or(after.len());
                let host = &after[..slash];
                if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
                    return Err(CaptureError::uri(
                        u,
                        "host",
                        format!("'{host}' is not this machine; file: reads local files only"),
                    ));
                }
                &after[slash..]
            }
            None => body,
        };
        let path = uri::percent_decode(u, "path", body)?;
        if path.is_empty() {
            return Err(CaptureError::uri(u, "path", "is empty"));
        }
        let mut p = Params::parse(u, query)?;
        let fps = p.f64("fps", 1000.0)?.filter(|&f| f > 0.0);
        let looping = p.bool("loop")?.unwrap_or(false);
        p.finish(&["fps", "loop"])?;
        Ok(FileOptions {
            path: PathBuf::from(path),
            fps,
            looping,
        })
    }
}

/// Frames read from image files.
pub struct FileSource {
    files: Vec<PathBuf>,
    next: usize,
    looping: bool,
    interval: Option<Duration>,
    due: Option<Instant>,
    stamp: FrameStamper,
    good_this_pass: bool,
}

const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mkv", "avi", "mov", "webm", "m4v", "ts", "h264"];

impl FileSource {
    pub fn open(opts: FileOptions) -> Result<Self, CaptureError> {
        let label: Arc<str> = opts.path.display().to_string().into();
        let files = list_images(&opts.path, &label)?;
        Ok(FileSource {
            files,
            next: 0,
            looping: opts.looping,
            interval: opts.fps.map(|f| Duration::from_secs_f64(1.0 / f)),
            due: None,
            stamp: FrameStamper::new(label, opts.fps),
            good_this_pass: false,
        })
    }

    /// Sleep until the next frame is due. When the consumer falls behind the schedule restarts
    /// from now rather than bursting to catch up, as a real camera would drop frames.
    fn pace(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        match self.due {
            Some(due) if due > now => {
                std::thread::sleep(due - now);
                self.due = Some(due + interval);
            }
            _ => self.due = Some(now + interval),
        }
    }
}

fn list_images(path: &Path, label: &Arc<str>) -> Result<Vec<PathBuf>, CaptureError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let mut msg = format!("cannot open: {e}");
        if path.to_string_lossy().contains('?') {
            msg.push_str(" (parameters need the file: scheme, e.g. file:frames?fps=5)");
        }
        CaptureError::fatal(label, msg)
    })?;
    if meta.is_file() {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
            return Err(CaptureError::fatal(
                label,
                format!("is a video; open it as video:{} instead", path.display()),
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path)
        .map_err(|e| CaptureError::fatal(label, format!("cannot list folder: {e}")))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && imageio::is_image_path(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CaptureError::fatal(
            label,
            format!(
                "folder has no images ({})",
                imageio::IMAGE_EXTENSIONS.join(", ")
            ),
        ));
    }
    Ok(files)
}

impl FrameSource for FileSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.next == self.files.len() {
            if !self.looping {
                return Ok(None);
            }
            if !self.good_this_pass {
                // Looping over files that all fail would report bad frames forever.
                return Err(CaptureError::fatal(
                    self.stamp.label(),
                    "no image could be read in a whole pass; giving up",
                ));
            }
            self.next = 0;
            self.good_this_pass = false;
        }
        let image = imageio::load_rgb(&self.files[self.next]);
        self.next += 1;
        if image.is_ok() {
            self.good_this_pass = true;
            self.pace();
        }
        self.stamp.next(image)
    }

    fn describe(&self) -> String {
        let mut s = format!("file:{} ({} images", self.stamp.label(), self.files.len());
        if let Some(i) = self.interval {
            s += &format!(", {:.3} fps", 1.0 / i.as_secs_f64());
        }
        if self.looping {
            s += ", looping";
        }
        s + ")"
    }

    fn stats(&self) -> CaptureStats {
        self.stamp.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            FileOptions::parse("a b.jpg").unwrap(),
            FileOptions::new("a b.jpg")
        );
        let o = FileOptions::parse("file:dir%20x?fps=2&loop=true").unwrap();
        assert_eq!(o.path, PathBuf::from("dir x"));
        assert_eq!(o.fps, Some(2.0));
        assert!(o.looping);
        assert_eq!(
            FileOptions::parse("file:///tmp/x?fps=0").unwrap(),
            FileOptions::new("/tmp/x")
        );
        assert_eq!(
            FileOptions::parse("file://localhost/tmp/x").unwrap().path,
            PathBuf::from("/tmp/x")
        );
        let e = FileOptions::parse("file://cam/x").unwrap_err().to_string();
        assert!(e.contains("host"), "{e}");
        let e = FileOptions::parse("file:x?fps=-1").unwrap_err().to_string();
        assert!(e.contains("fps"), "{e}");
        let e = FileOptions::parse("file:x?lop=1").unwrap_err().to_string();
        assert!(e.contains("lop") && e.contains("loop"), "{e}");
        assert!(FileOptions::parse("file:").is_err());
    }
}

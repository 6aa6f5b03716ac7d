//! Numbering, timestamping and counting the frames of one source, so that every source turns a
//! decoded picture (or the reason it has none) into a [`Frame`] or a
//! [`CaptureError::BadFrame`] the same way.

use crate::util::unix_now;
use std::sync::Arc;

use image::RgbImage;

use super::{CaptureError, CaptureStats, Frame};

/// The bookkeeping every source repeats per frame: ids from 0 that a bad frame uses up too,
/// the timestamp (media time for clips with a rate, wall clock otherwise), and the counters of
/// [`CaptureStats`].
#[derive(Debug)]
pub(crate) struct FrameStamper {
    label: Arc<str>,
    next_id: u64,
    clock: MediaClock,
    stats: CaptureStats,
}

impl FrameStamper {
    /// `media_fps`: the clip's frame rate when its frames should carry media time (see
    /// [`Frame::ts`]); `None` for live sources, stamped with the wall clock.
    pub(crate) fn new(label: Arc<str>, media_fps: Option<f64>) -> Self {
        FrameStamper {
            label,
            next_id: 0,
            clock: MediaClock::new(media_fps),
            stats: CaptureStats::default(),
        }
    }

    /// The source's name in frames and errors (path or URI, without a password).
    pub(crate) fn label(&self) -> &Arc<str> {
        &self.label
    }

    pub(crate) fn stats(&self) -> CaptureStats {
        self.stats
    }

    pub(crate) fn reconnected(&mut self) {
        self.stats.reconnects += 1;
    }

    /// Reserve the next id before reading a frame whose read may fail half-way, so that the
    /// lost frame still uses up its number.
    pub(crate) fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Frame `id` (from [`take_id`](Self::take_id)) as delivered: a stamped [`Frame`], or a
    /// counted [`CaptureError::BadFrame`] carrying `why`.
    pub(crate) fn deliver<E: std::fmt::Display>(
        &mut self,
        id: u64,
        image: Result<RgbImage, E>,
    ) -> Result<Option<Frame>, CaptureError> {
        match image {
            Ok(image) => {
                self.stats.frames += 1;
                Ok(Some(Frame {
                    id,
                    ts: self.clock.stamp(id),
                    image,
                    source: self.label.clone(),
                }))
            }
            Err(why) => Err(self.bad(id, why)),
        }
    }

    /// The next frame is lost for `why`: numbered, counted, and the error that reports it.
    pub(crate) fn skip(&mut self, why: impl std::fmt::Display) -> CaptureError {
        let id = self.take_id();
        self.bad(id, why)
    }

    /// Frame `id` is lost for `why`: counted, and the error that reports it.
    pub(crate) fn bad(&mut self, id: u64, why: impl std::fmt::Display) -> CaptureError {
        self.stats.bad_frames += 1;
        CaptureError::bad_frame(&self.label, id, why)
    }

    /// The next frame, numbered now: [`take_id`](Self::take_id) then
    /// [`deliver`](Self::deliver).
    pub(crate) fn next<E: std::fmt::Display>(
        &mut self,
        image: Result<RgbImage, E>,
    ) -> Result<Option<Frame>, CaptureError> {
        let id = self.take_id();
        self.deliver(id, image)
    }
}

/// Stamps frames: with a clip rate, media time from the first frame; otherwise wall clock.
#[derive(Debug, Clone, Copy)]
struct MediaClock {
    fps: Option<f64>,
    start: Option<f64>,
}

impl MediaClock {
    fn new(fps: Option<f64>) -> Self {
        MediaClock {
            fps: fps.filter(|f| f.is_finite() && *f > 0.0),
            start: None,
        }
    }

    /// The timestamp of frame `id` (ids count from 0 across loops and bad frames).
    fn stamp(&mut self, id: u64) -> f64 {
        match self.fps {
            Some(fps) => {
                let start = *self
                    .start
                    .get_or_insert_with(|| unix_now() - id as f64 / fps);
                start + id as f64 / fps
            }
            None => unix_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stamps_and_counts() {
        let mut s = FrameStamper::new("clip".into(), Some(10.0));
        let a = s
            .next(Ok::<_, String>(RgbImage::new(2, 2)))
            .unwrap()
            .unwrap();
        let lost = s.take_id();
        let e = s.bad(lost, "short read");
        assert_eq!(e.to_string(), "clip: frame 1: short read");
        let c = s
            .next(Ok::<_, String>(RgbImage::new(2, 2)))
            .unwrap()
            .unwrap();
        assert_eq!((a.id, c.id), (0, 2));
        assert!(
            (c.ts - a.ts - 0.2).abs() < 1e-6,
            "media time: {} {}",
            a.ts,
            c.ts
        );
        s.reconnected();
        let st = s.stats();
        assert_eq!((st.frames, st.bad_frames, st.reconnects), (2, 1, 1));
        assert_eq!(&**s.label(), "clip");
    }
}

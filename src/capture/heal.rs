//! Sources that heal themselves: one wrapper around any [`FrameSource`] that reopens it when it
//! ends, fails or stalls, so a camera that drops off the network, a crashed ffmpeg or a
//! rebooting RTSP server costs a gap in the frames rather than the run.
//!
//! The policy, the same for every scheme:
//!
//! - **Ends or fails**: a live source (`rtsp://`, `mjpeg+http://`, `v4l://`, `video:` of a URL
//!   or with `loop=true`) is reopened whatever happened. A `pipe:` command that exits cleanly
//!   has finished its stream (the run ends); one that fails, crashes or is killed is restarted.
//!   A finite clip (`file:`, `video:` of a local file) ends the run as before.
//! - **Stalls**: a source that delivers nothing (no frame, no error) for `stall_timeout` is
//!   stopped through its stop flag and reopened; this catches a server that accepts the
//!   connection and then says nothing.
//! - **Pacing**: the first attempt after a loss comes after `backoff.initial`, each failed one
//!   multiplies the wait by `backoff.factor` up to `backoff.max`, and every wait is shortened by
//!   a random part of up to `jitter`, so cameras that fail together do not retry in lockstep.
//! - **Giving up**: until the first frame has ever arrived, attempts stop after
//!   `give_up_after` and the source fails for good (a wrong address, a camera that is not
//!   there: `lookout run` exits non-zero and systemd's restart takes over). Once frames have
//!   flowed the source heals forever. A malformed URI is never retried.
//!
//! Frame ids keep increasing across reopenings (each new source counts from 0 again), and so do
//! timestamps: a clip stamped with media time that restarts is shifted to continue after the
//! last frame, by at least the length of the gap.
//!
//! Outages are reported to the caller as [`CaptureError::Disconnected`] (recoverable), so the
//! frame loop can count them, raise an alert and keep calling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::retry::{Backoff, STOP_POLL};
use super::{uri, CaptureError, CaptureStats, Frame, FrameSource, OpenOptions};

/// How a healing source paces and bounds its attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealPolicy {
    /// A source that delivers nothing for this long is stopped and reopened (`None`: never).
    pub stall_timeout: Option<Duration>,
    pub backoff: Backoff,
    /// Each wait is shortened by a random fraction of up to this (0 to 1).
    pub jitter: f64,
    /// Before the first frame ever: stop trying after this long.
    pub give_up_after: Duration,
}

impl Default for HealPolicy {
    fn default() -> Self {
        HealPolicy {
            stall_timeout: Some(Duration::from_secs(10)),
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(10),
                factor: 2.0,
            },
            jitter: 0.25,
            give_up_after: Duration::from_secs(30),
        }
    }
}

/// What the end of a source's stream means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A finite clip: its end, or a failure, ends the run; nothing is reopened.
    Final,
    /// A command: a clean exit ends the run, a failure or a stall reopens it.
    CleanExit,
    /// A live source: every end, failure or stall reopens it.
    Never,
}

impl Ending {
    /// What an end of `uri`'s stream means (see the [module docs](self)).
    pub fn of(uri: &str) -> Ending {
        match uri::classify(uri) {
            Ok((uri::Scheme::File, _)) | Err(_) => Ending::Final,
            Ok((uri::Scheme::Pipe, _)) => Ending::CleanExit,
            Ok((uri::Scheme::Video, _)) => match super::pipe::VideoOptions::parse(uri) {
                Ok(v) if v.looping || v.input.contains("://") => Ending::Never,
                _ => Ending::Final,
            },
            Ok((uri::Scheme::MjpegHttp | uri::Scheme::V4l | uri::Scheme::Rtsp, _)) => Ending::Never,
        }
    }
}

/// Opens a fresh inner source.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// Open `uri` wrapped in a [`HealingSource`]. A malformed URI, or a finite clip that cannot be
/// opened, fails now; a live source that cannot be opened yet starts out disconnected and is
/// retried by `next_frame`.
pub fn open_healing(
    uri: &str,
    with: OpenOptions,
    policy: HealPolicy,
) -> Result<HealingSource, CaptureError> {
    let owned = uri.to_string();
    let opener: Opener = Box::new(move || super::open_with(&owned, with));
    HealingSource::new(&uri::redact_all(uri), Ending::of(uri), policy, opener)
}

/// What the watchdog thread and the capture thread share.
#[derive(Default)]
struct Watch {
    /// The running inner source's stop flag.
    attempt: Mutex<Arc<AtomicBool>>,
    /// Since when the capture thread has been waiting inside the inner source.
    busy_since: Mutex<Option<Instant>>,
    /// The watchdog stopped the inner source because it stalled.
    stalled: AtomicBool,
    /// The caller's stop flag.
    outer: OnceLock<Arc<AtomicBool>>,
    /// The healing source is gone: the watchdog ends.
    done: AtomicBool,
}

impl Watch {
    fn outer_set(&self) -> bool {
        self.outer.get().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn stop_attempt(&self) {
        if let Ok(a) = self.attempt.lock() {
            a.store(true, Ordering::Relaxed);
        }
    }
}

/// A source that reopens itself; see the [module docs](self).
pub struct HealingSource {
    label: Arc<str>,
    ending: Ending,
    policy: HealPolicy,
    opener: Opener,
    inner: Option<Box<dyn FrameSource>>,
    /// The current inner source has been told to stop because it stalled.
    inner_stalled: bool,
    /// An outage to report before the first attempt (the first open failed).
    pending: Option<CaptureError>,
    finished: bool,
    watch: Arc<Watch>,
    watchdog_started: bool,
    // Pacing.
    delay: Duration,
    next_at: Option<Instant>,
    rng: u64,
    started: Instant,
    attempts: u64,
    ever_framed: bool,
    /// An outage has been reported since the last frame.
    down: bool,
    // Renumbering.
    base: u64,
    next_id: u64,
    fresh: bool,
    ts_offset: f64,
    last_ts: f64,
    last_frame_at: Option<Instant>,
    // Counters.
    stats: CaptureStats,
    /// Decode errors of inner sources already replaced.
    decode_errors_before: u64,
}

impl HealingSource {
    /// Wrap the sources `opener` makes; `label` names it in errors (without a password). The
    /// first source is opened now.
    pub fn new(
        label: &str,
        ending: Ending,
        policy: HealPolicy,
        opener: Opener,
    ) -> Result<Self, CaptureError> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        let mut s = HealingSource {
            label: label.into(),
            ending,
            policy,
            opener,
            inner: None,
            inner_stalled: false,
            pending: None,
            finished: false,
            watch: Arc::new(Watch::default()),
            watchdog_started: false,
            delay: policy.backoff.initial,
            next_at: None,
            rng: seed | 1,
            started: Instant::now(),
            attempts: 0,
            ever_framed: false,
            down: false,
            base: 0,
            next_id: 0,
            fresh: true,
            ts_offset: 0.0,
            last_ts: f64::NEG_INFINITY,
            last_frame_at: None,
            stats: CaptureStats::default(),
            decode_errors_before: 0,
        };
        match s.open_inner() {
            Ok(()) => {}
            Err(e @ CaptureError::Uri { .. }) => return Err(e),
            Err(e) if ending == Ending::Final => return Err(e),
            Err(e) => {
                log::warn!("{e}");
                let reason = reason_of(&e);
                let retry_in = s.lost();
                s.pending = Some(CaptureError::Disconnected {
                    stream: s.label.clone(),
                    reason,
                    retry_in,
                });
            }
        }
        Ok(s)
    }

    /// The inner source is open and has delivered a frame since it was opened.
    pub fn is_connected(&self) -> bool {
        self.inner.is_some() && !self.down && self.ever_framed
    }

    fn open_inner(&mut self) -> Result<(), CaptureError> {
        self.attempts += 1;
        let mut src = (self.opener)()?;
        let flag = Arc::new(AtomicBool::new(self.watch.outer_set()));
        src.watch_stop(flag.clone());
        if let Ok(mut a) = self.watch.attempt.lock() {
            *a = flag;
        }
        self.watch.stalled.store(false, Ordering::Relaxed);
        self.inner = Some(src);
        self.inner_stalled = false;
        self.base = self.next_id;
        self.fresh = true;
        Ok(())
    }

    /// Drop the inner source, keeping its counters.
    fn close_inner(&mut self) {
        if let Some(src) = self.inner.take() {
            self.decode_errors_before += src.stats().decode_errors;
        }
    }

    fn jittered(&mut self, d: Duration) -> Duration {
        // xorshift64: enough randomness to spread retries, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let u = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(1.0 - self.policy.jitter.clamp(0.0, 1.0) * u)
    }

    /// The link was just lost: the first attempt comes after the initial delay.
    fn lost(&mut self) -> Duration {
        self.delay = self.policy.backoff.initial;
        let wait = self.jittered(self.delay);
        self.next_at = Some(Instant::now() + wait);
        wait
    }

    /// An attempt failed: wait longer.
    fn failed(&mut self) -> Duration {
        let b = self.policy.backoff;
        let grown = self.delay.as_secs_f64() * b.factor.max(1.0);
        self.delay = Duration::from_secs_f64(grown.min(b.max.as_secs_f64()));
        let wait = self.jittered(self.delay);
        self.next_at = Some(Instant::now() + wait);
        wait
    }

    /// Before any frame, past `give_up_after`: the error that ends the source.
    fn give_up(&mut self, why: &str) -> Option<CaptureError> {
        if self.ever_framed || self.started.elapsed() < self.policy.give_up_after {
            return None;
        }
        self.finished = true;
        self.close_inner();
        Some(CaptureError::Fatal {
            stream: self.label.clone(),
            reason: format!(
                "no frame in {:.0} s ({} attempt{}); giving up: {why}",
                self.started.elapsed().as_secs_f64(),
                self.attempts,
                if self.attempts == 1 { "" } else { "s" }
            ),
        })
    }

    /// Sleep until the next attempt is due or the caller stops.
    fn wait(&self) {
        let Some(at) = self.next_at else { return };
        loop {
            let now = Instant::now();
            if at <= now || self.watch.outer_set() {
                return;
            }
            std::thread::sleep((at - now).min(STOP_POLL));
        }
    }

    fn start_watchdog(&mut self) {
        if self.watchdog_started {
            return;
        }
        self.watchdog_started = true;
        // A finite clip is never reopened, so it is never declared stalled either: the
        // watchdog only hands it the caller's stop.
        let stall = self
            .policy
            .stall_timeout
            .filter(|_| self.ending != Ending::Final);
        let watch = self.watch.clone();
        let started = std::thread::Builder::new()
            .name("capture-watchdog".into())
            .spawn(move || {
                while !watch.done.load(Ordering::Relaxed) {
                    std::thread::sleep(STOP_POLL);
                    if watch.outer_set() {
                        watch.stop_attempt();
                        continue;
                    }
                    let Some(stall) = stall else { continue };
                    let Ok(busy) = watch.busy_since.lock() else {
                        return;
                    };
                    if busy.is_some_and(|t| t.elapsed() >= stall)
                        && !watch.stalled.swap(true, Ordering::Relaxed)
                    {
                        watch.stop_attempt();
                    }
                }
            });
        if let Err(e) = started {
            log::warn!(
                "{}: no watchdog thread ({e}); stalls go undetected",
                self.label
            );
        }
    }

    fn deliver(&mut self, mut f: Frame) -> Frame {
        f.id += self.base;
        self.next_id = self.next_id.max(f.id + 1);
        if self.fresh {
            self.fresh = false;
            // A source that restarted its media clock would go back in time: continue after
            // the last frame by at least the gap.
            let gap = self
                .last_frame_at
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            self.ts_offset = if f.ts < self.last_ts + gap {
                self.last_ts + gap - f.ts
            } else {
                0.0
            };
        }
        f.ts += self.ts_offset;
        self.last_ts = f.ts;
        if self.down {
            self.stats.reconnects += 1;
            log::info!(
                "{}: frames again after {:.1} s",
                self.label,
                self.last_frame_at
                    .map_or(0.0, |t| t.elapsed().as_secs_f64())
            );
        }
        self.last_frame_at = Some(Instant::now());
        self.down = false;
        self.ever_framed = true;
        self.delay = self.policy.backoff.initial;
        self.stats.frames += 1;
        f
    }

    /// The inner source ended (`None`) or failed (`Some(e)`): end, or schedule a reopening.
    fn ended(&mut self, err: Option<CaptureError>) -> Result<Option<Frame>, CaptureError> {
        let stalled = self.inner_stalled;
        self.close_inner();
        if self.watch.outer_set() {
            self.finished = true;
            return Ok(None);
        }
        match (self.ending, &err, stalled) {
            (Ending::Final, None, _) | (Ending::CleanExit, None, false) => {
                self.finished = true;
                return Ok(None);
            }
            (Ending::Final, Some(_), _) => {
                self.finished = true;
                return Err(err.unwrap_or_else(|| CaptureError::fatal(&self.label, "ended")));
            }
            _ => {}
        }
        let why = if stalled {
            let secs = self.policy.stall_timeout.unwrap_or_default().as_secs_f64();
            format!("no frame for {secs:.1} s (stalled)")
        } else {
            match &err {
                None => "the stream ended".to_string(),
                Some(e) => reason_of(e),
            }
        };
        if let Some(e) = self.give_up(&why) {
            return Err(e);
        }
        self.down = true;
        let retry_in = self.lost();
        Err(CaptureError::Disconnected {
            stream: self.label.clone(),
            reason: why,
            retry_in,
        })
    }
}

/// An error's reason without the stream name in front (the healing source adds its own).
fn reason_of(e: &CaptureError) -> String {
    match e {
        CaptureError::Uri { param, reason, .. } => format!("{param}: {reason}"),
        CaptureError::BadFrame { reason, .. }
        | CaptureError::Disconnected { reason, .. }
        | CaptureError::Fatal { reason, .. } => reason.clone(),
    }
}

impl Drop for HealingSource {
    fn drop(&mut self) {
        self.watch.done.store(true, Ordering::Relaxed);
    }
}

impl FrameSource for HealingSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        self.start_watchdog();
        if let Some(e) = self.pending.take() {
            self.down = true;
            return Err(e);
        }
        loop {
            if self.finished {
                return Ok(None);
            }
            if self.watch.outer_set() {
                self.close_inner();
                self.finished = true;
                return Ok(None);
            }
            if self.inner.is_none() {
                self.wait();
                if self.watch.outer_set() {
                    continue;
                }
                if let Err(e) = self.open_inner() {
                    if matches!(e, CaptureError::Uri { .. }) {
                        self.finished = true;
                        return Err(e);
                    }
                    let why = reason_of(&e);
                    if let Some(e) = self.give_up(&why) {
                        return Err(e);
                    }
                    self.down = true;
                    let retry_in = self.failed();
                    return Err(CaptureError::Disconnected {
                        stream: self.label.clone(),
                        reason: why,
                        retry_in,
                    });
                }
            }
            let Some(inner) = self.inner.as_mut() else {
                continue;
            };
            if let Ok(mut b) = self.watch.busy_since.lock() {
                *b = Some(Instant::now());
            }
            let got = inner.next_frame();
            if let Ok(mut b) = self.watch.busy_since.lock() {
                *b = None;
            }
            if self.watch.stalled.swap(false, Ordering::Relaxed) {
                self.inner_stalled = true;
            }
            return match got {
                Ok(Some(f)) => Ok(Some(self.deliver(f))),
                Err(CaptureError::BadFrame { reason, frame, .. }) => {
                    let frame = frame + self.base;
                    self.next_id = self.next_id.max(frame + 1);
                    self.stats.bad_frames += 1;
                    Err(CaptureError::BadFrame {
                        stream: self.label.clone(),
                        frame,
                        reason,
                    })
                }
                // The inner source is reconnecting by itself (mjpeg+http, v4l): pass it on.
                Err(e @ CaptureError::Disconnected { .. }) if !self.inner_stalled => {
                    self.down = true;
                    Err(e)
                }
                Ok(None) => self.ended(None),
                Err(e) => self.ended(Some(e)),
            };
        }
    }

    fn describe(&self) -> String {
        match &self.inner {
            Some(i) => format!("{} (healing)", i.describe()),
            None => format!("{} (reconnecting)", self.label),
        }
    }

    fn stats(&self) -> CaptureStats {
        let mut s = self.stats;
        s.decode_errors =
            self.decode_errors_before + self.inner.as_ref().map_or(0, |i| i.stats().decode_errors);
        s
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        let _ = self.watch.outer.set(stop);
        self.start_watchdog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use std::collections::VecDeque;

    /// A scripted inner source: each open takes the next script; a script is a list of steps.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Frame(f64),
        Bad,
        End,
        Fail,
        /// Block until stopped.
        Hang,
    }

    struct Scripted {
        steps: VecDeque<Step>,
        id: u64,
        stop: Option<Arc<AtomicBool>>,
    }

    impl FrameSource for Scripted {
        fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
            let label: Arc<str> = "scripted".into();
            match self.steps.pop_front().unwrap_or(Step::End) {
                Step::Frame(ts) => {
                    self.id += 1;
                    Ok(Some(Frame {
                        id: self.id - 1,
                        ts,
                        image: RgbImage::new(1, 1),
                        source: label,
                    }))
                }
                Step::Bad => {
                    self.id += 1;
                    Err(CaptureError::bad_frame(&label, self.id - 1, "bad"))
                }
                Step::End => Ok(None),
                Step::Fail => Err(CaptureError::fatal(&label, "crashed")),
                Step::Hang => {
                    while !self
                        .stop
                        .as_ref()
                        .is_some_and(|s| s.load(Ordering::Relaxed))
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(None)
                }
            }
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
            self.stop = Some(stop);
        }
    }

    fn fast() -> HealPolicy {
        HealPolicy {
            stall_timeout: Some(Duration::from_millis(300)),
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(4),
                factor: 2.0,
            },
            jitter: 0.5,
            give_up_after: Duration::from_secs(60),
        }
    }

    fn healing(
        ending: Ending,
        policy: HealPolicy,
        scripts: Vec<Option<Vec<Step>>>,
    ) -> HealingSource {
        let mut scripts: VecDeque<_> = scripts.into();
        let opener: Opener = Box::new(move || match scripts.pop_front().flatten() {
            Some(steps) => Ok(Box::new(Scripted {
                steps: steps.into(),
                id: 0,
                stop: None,
            }) as Box<dyn FrameSource>),
            None => Err(CaptureError::fatal(&"scripted".into(), "refused")),
        });
        HealingSource::new("scripted", ending, policy, opener).unwrap()
    }

    /// Drain until the end: delivered (id, ts), and the outage reasons seen.
    fn drain(s: &mut HealingSource, max: usize) -> (Vec<(u64, f64)>, Vec<String>, Option<String>) {
        let (mut frames, mut outages) = (Vec::new(), Vec::new());
        for _ in 0..max {
            match s.next_frame() {
                Ok(Some(f)) => frames.push((f.id, f.ts)),
                Ok(None) => return (frames, outages, None),
                Err(CaptureError::Disconnected { reason, .. }) => outages.push(reason),
                Err(e) if e.is_recoverable() => {}
                Err(e) => return (frames, outages, Some(e.to_string())),
            }
        }
        panic!("did not end: {frames:?} {outages:?}");
    }

    #[test]
    fn a_live_source_is_reopened_and_ids_and_times_keep_increasing() {
        use Step::*;
        let mut s = healing(
            Ending::Never,
            fast(),
            vec![
                Some(vec![Frame(100.0), Bad, Frame(100.1), End]),
                None,
                Some(vec![Frame(5.0), Fail]),
                Some(vec![Frame(200.0), Hang]),
                None,
                None,
            ],
        );
        // The last script hangs and is stopped as a stall; the refusals after it would go on
        // forever, so give up by stopping.
        let stop = Arc::new(AtomicBool::new(false));
        s.watch_stop(stop.clone());
        let mut frames = Vec::new();
        let mut outages = Vec::new();
        while outages.len() < 5 {
            match s.next_frame() {
                Ok(Some(f)) => frames.push((f.id, f.ts)),
                Err(CaptureError::Disconnected { reason, .. }) => outages.push(reason),
                Err(e) => assert!(e.is_recoverable(), "{e}"),
                Ok(None) => panic!("ended"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(s.next_frame().unwrap().is_none());
        let ids: Vec<u64> = frames.iter().map(|f| f.0).collect();
        assert_eq!(ids, [0, 2, 3, 4], "{frames:?}");
        assert!(
            frames.windows(2).all(|w| w[1].1 > w[0].1),
            "times go forward: {frames:?}"
        );
        assert_eq!(frames[3].1, 200.0, "a later clock is kept as it is");
        assert_eq!(outages[0], "the stream ended");
        assert_eq!(outages[1], "refused");
        assert_eq!(outages[2], "crashed");
        assert!(outages[3].contains("stalled"), "{outages:?}");
        let st = s.stats();
        assert_eq!((st.frames, st.bad_frames, st.reconnects), (4, 1, 2));
    }

    #[test]
    fn finite_clips_and_clean_exits_end_the_stream() {
        use Step::*;
        let mut s = healing(Ending::Final, fast(), vec![Some(vec![Frame(1.0), End])]);
        let (f, o, err) = drain(&mut s, 10);
        assert_eq!((f.len(), o.len(), err), (1, 0, None));

        let mut s = healing(Ending::Final, fast(), vec![Some(vec![Frame(1.0), Fail])]);
        let (f, _, err) = drain(&mut s, 10);
        assert_eq!(f.len(), 1);
        assert!(err.unwrap().contains("crashed"));

        // A command: a crash is healed, a clean exit ends it.
        let mut s = healing(
            Ending::CleanExit,
            fast(),
            vec![Some(vec![Frame(1.0), Fail]), Some(vec![Frame(2.0), End])],
        );
        let (f, o, err) = drain(&mut s, 10);
        assert_eq!((f.len(), o.len(), err), (2, 1, None));
    }

    #[test]
    fn a_source_that_never_works_gives_up() {
        let mut p = fast();
        p.give_up_after = Duration::from_millis(50);
        let opener: Opener = Box::new(|| Err(CaptureError::fatal(&"x".into(), "refused")));
        let mut s = HealingSource::new("cam", Ending::Never, p, opener).unwrap();
        let (f, o, err) = drain(&mut s, 100_000);
        assert!(f.is_empty() && !o.is_empty());
        let err = err.unwrap();
        assert!(
            err.contains("giving up") && err.contains("refused"),
            "{err}"
        );

        // A malformed URI is not retried at all.
        let e = open_healing("rtsp://cam:0/s", OpenOptions::default(), fast())
            .err()
            .unwrap();
        assert!(matches!(e, CaptureError::Uri { .. }), "{e}");
    }

    #[test]
    fn endings_by_scheme() {
        assert_eq!(Ending::of("file:frames?fps=5"), Ending::Final);
        assert_eq!(Ending::of("video:clip.mp4"), Ending::Final);
        assert_eq!(Ending::of("video:clip.mp4?loop=true"), Ending::Never);
        assert_eq!(Ending::of("video:http://cam/x.m3u8"), Ending::Never);
        assert_eq!(Ending::of("pipe:cat x?format=ppm"), Ending::CleanExit);
        assert_eq!(Ending::of("rtsp://cam/s"), Ending::Never);
        assert_eq!(Ending::of("mjpeg+http://cam/s"), Ending::Never);
        assert_eq!(Ending::of("v4l:///dev/video0"), Ending::Never);
    }

    #[test]
    fn jitter_stays_within_the_cap() {
        let mut s = healing(Ending::Never, fast(), vec![Some(vec![])]);
        s.policy.backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            factor: 2.0,
        };
        let first = s.lost();
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(50));
        let waits: Vec<Duration> = (0..6).map(|_| s.failed()).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w <= Duration::from_millis(400) && *w >= Duration::from_millis(100)),
            "{waits:?}"
        );
        assert!(waits[5] >= Duration::from_millis(200), "{waits:?}");
    }
}

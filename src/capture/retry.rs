//! Reconnection pacing shared by the live sources (network cameras, V4L2 devices), and the
//! caller's stop flag that cuts their waits short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::CaptureError;

/// Exponential back-off between reconnection attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the first attempt after a loss.
    pub initial: Duration,
    /// The wait never grows past this, so a camera that comes back is picked up soon.
    pub max: Duration,
    /// Growth per failed attempt (≥ 1).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

/// How often a blocked wait or read looks at the stop flag: the longest a shutdown waits for a
/// capture thread that is idle in a source.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(100);

/// The caller's stop flag as seen from inside a source (see
/// [`FrameSource::watch_stop`](super::FrameSource::watch_stop)). Clones share it, so a reader
/// made before the caller hands the flag over still sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopFlag(Arc<OnceLock<Arc<AtomicBool>>>);

impl StopFlag {
    /// Watch `flag` from now on; only the first flag handed over counts.
    pub(crate) fn watch(&self, flag: Arc<AtomicBool>) {
        let _ = self.0.set(flag);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.get().is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

/// Where a live source stands between losing its link and getting it back.
#[derive(Debug)]
pub(crate) struct Retry {
    backoff: Backoff,
    delay: Duration,
    next_at: Option<Instant>,
    stop: StopFlag,
}

impl Retry {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Retry {
            backoff,
            delay: backoff.initial,
            next_at: None,
            stop: StopFlag::default(),
        }
    }

    /// The stop flag this source's waits (and the readers it hands this to) give up on.
    pub(crate) fn stop(&self) -> &StopFlag {
        &self.stop
    }

    /// The link was just lost: the first attempt comes after the initial delay.
    pub(crate) fn lost(&mut self) -> Duration {
        self.delay = self.backoff.initial;
        self.next_at = Some(Instant::now() + self.delay);
        self.delay
    }

    /// An attempt failed: wait longer before the next one.
    pub(crate) fn failed(&mut self) -> Duration {
        let grown = self.delay.as_secs_f64() * self.backoff.factor.max(1.0);
        self.delay = Duration::from_secs_f64(grown.min(self.backoff.max.as_secs_f64()));
        self.next_at = Some(Instant::now() + self.delay);
        self.delay
    }

    pub(crate) fn connected(&mut self) {
        self.delay = self.backoff.initial;
        self.next_at = None;
    }

    /// Sleep until the next attempt is due or the stop flag is set.
    fn wait(&self) {
        let Some(at) = self.next_at else { return };
        loop {
            let now = Instant::now();
            if at <= now || self.stop.is_set() {
                return;
            }
            std::thread::sleep((at - now).min(STOP_POLL));
        }
    }

    /// The link to `stream` was just lost for `reason`: the error that tells the caller when the
    /// next attempt comes.
    pub(crate) fn lost_link(&mut self, stream: &Arc<str>, reason: String) -> CaptureError {
        CaptureError::Disconnected {
            stream: stream.clone(),
            reason,
            retry_in: self.lost(),
        }
    }

    /// One reconnection attempt, after waiting out the back-off: what `connect` opened (`None`
    /// when the stop flag was set meanwhile), or its error turned into
    /// [`CaptureError::Disconnected`] with the longer delay before the next.
    pub(crate) fn reconnect<T>(
        &mut self,
        connect: impl FnOnce() -> Result<T, CaptureError>,
    ) -> Result<Option<T>, CaptureError> {
        self.wait();
        if self.stop.is_set() {
            return Ok(None);
        }
        match connect() {
            Ok(link) => {
                self.connected();
                Ok(Some(link))
            }
            // Stopped half-way through: not a failure to report.
            Err(_) if self.stop.is_set() => Ok(None),
            Err(e) => Err(e.into_disconnected(self.failed())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut r = Retry::new(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            factor: 2.0,
        });
        assert_eq!(r.lost(), Duration::from_millis(100));
        assert_eq!(r.failed(), Duration::from_millis(200));
        assert_eq!(r.failed(), Duration::from_millis(400));
        assert_eq!(r.failed(), Duration::from_millis(500));
        assert_eq!(r.failed(), Duration::from_millis(500));
        r.connected();
        assert_eq!(r.lost(), Duration::from_millis(100));
    }

    #[test]
    fn stop_cuts_the_wait_short() {
        let mut r = Retry::new(Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(30),
            factor: 1.0,
        });
        r.lost();
        let flag = Arc::new(AtomicBool::new(false));
        r.stop().clone().watch(flag.clone());
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::Relaxed);
        });
        let t0 = Instant::now();
        let got = r.reconnect(|| -> Result<(), CaptureError> { panic!("must not connect") });
        assert!(matches!(got, Ok(None)));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        t.join().unwrap();
    }
}
